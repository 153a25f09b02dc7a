#!/usr/bin/env python
"""Encoder and decoder speed on this machine, against the seed tutorials' way of decoding, and
Xception on LiteRT (what serving runs) against TensorFlow in the same run.

    python benchmarks/bench_decode.py --data ../shared/flickr8k [--photos 20] [--json]

The merge decoder is compared with the tutorials' way; the attention decoder and the ensemble
(when trained/ has them) are timed on the same photos and features, reported as attention_*
and ensemble_*.

"Naive" decoding is what the tutorials do: `model.predict` on the growing prefix for every
word, and for beam search one such call per beam per word. Both run in the same process on
the same photos, so the ratio is meaningful on a noisy shared machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import captioner  # noqa: E402,F401  (sets thread and logging defaults before NumPy loads)
import numpy as np  # noqa: E402


def timed(fn, repeat: int = 1):
    """Median milliseconds of `repeat` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def naive_greedy(model, vocab, feature, max_length):
    """Tutorial greedy: one model.predict on the whole prefix per word."""
    from captioner.data.text import Vocabulary
    prefix = [Vocabulary.start_id]
    for _ in range(max_length):
        logits = model.predict([feature[None], np.array([prefix], np.int32)], verbose=0)[0, -1]
        logits[[0, 1, 2]] = -np.inf
        word = int(logits.argmax())
        if word == Vocabulary.end_id:
            break
        prefix.append(word)
    return vocab.decode(prefix[1:])


def naive_beam(model, vocab, feature, beam, max_length):
    """Tutorial beam search: one model.predict per beam per word, ranked by total log-prob."""
    from captioner.data.text import Vocabulary
    beams = [([Vocabulary.start_id], 0.0, False)]
    for _ in range(max_length):
        candidates = []
        for seq, score, done in beams:
            if done:
                candidates.append((seq, score, True))
                continue
            logits = model.predict([feature[None], np.array([seq], np.int32)], verbose=0)[0, -1]
            logp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
            logp[[0, 1, 2]] = -np.inf
            for word in np.argsort(logp)[-beam:]:
                candidates.append((seq + [int(word)], score + float(logp[word]),
                                   int(word) == Vocabulary.end_id))
        beams = sorted(candidates, key=lambda b: -b[1])[:beam]
        if all(done for _, _, done in beams):
            break
    return vocab.decode(beams[0][0][1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CAPTIONER_DATA_DIR", "../shared/flickr8k"))
    parser.add_argument("--model", default=None, help="directory of the trained models (default: trained/)")
    parser.add_argument("--photos", type=int, default=20, help="test photos to decode (default 20)")
    parser.add_argument("--naive-photos", type=int, default=5, help="photos for the slow baseline")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from captioner import Captioner
    from captioner.model_dirs.artifacts import ArtifactError
    from captioner.model_dirs.catalog import available_models
    from captioner.data.dataset import load_flickr8k
    from captioner.vision.encoder import pool
    from captioner.data.images import load_image, prepare_for_encoder

    from captioner.vision.encoder import Encoder
    from captioner.vision.litert import LiteEncoder

    dataset = load_flickr8k(args.data)
    names = dataset.images("test")[: max(args.photos, 32)]
    # Both runtimes of the same Xception, timed in turns within this run; serving uses LiteRT.
    encoders = {"litert": LiteEncoder(), "tf": Encoder()}
    encoder = encoders["litert"]
    captioner = Captioner.load(args.model, name="merge", encoder=encoder, flows=[])
    arrays = np.stack([prepare_for_encoder(load_image(dataset.image_path(n))) for n in names])
    prepare_ms, _ = timed(lambda: prepare_for_encoder(load_image(dataset.image_path(names[0]))), 10)

    for each in encoders.values():       # warm-up: TF builds its graph for each batch size
        each.feature_maps(arrays[:1])
        each.feature_maps(arrays[:32])
    batch1 = {kind: [] for kind in encoders}
    batch32 = {kind: [] for kind in encoders}
    for rep in range(10):
        for kind, each in encoders.items():
            batch1[kind].append(timed(lambda e=each: e.feature_maps(arrays[:1]))[0])
            if rep < 3:
                batch32[kind].append(timed(lambda e=each: e.feature_maps(arrays[:32]))[0])
    # A model with its own exit flow (issue 24) runs the trunk, then ImageNet's exit flow (the
    # map familiarity and consensus read) and its own, three LiteRT calls: timed with the ImageNet
    # head twice, which does the same work, against the whole encoder in turns; with the default
    # model's own encoder when it has one.
    from captioner.vision.tuned_encoder import imagenet_split_encoder
    split = {"whole": encoders["litert"], "split": imagenet_split_encoder()}
    default_model = Captioner.load(args.model)
    if default_model.flows:   # the trunk, ImageNet's exit flow and each model's own
        split["split"] = default_model.encoder
    split["split"].feature_maps(arrays[:1])
    split_ms = {kind: [] for kind in split}
    for _ in range(15):
        for kind, each in split.items():
            split_ms[kind].append(timed(lambda e=each: e.feature_maps(arrays[:1]))[0])
    features = encoder.feature_maps(arrays[: args.photos])   # one pass serves both decoders

    results = {"photos": args.photos, "naive_photos": args.naive_photos,
               "prepare_ms": round(prepare_ms, 2)}
    for kind in encoders:
        results[f"{kind}_encoder_ms_batch1"] = round(statistics.median(batch1[kind]), 1)
        results[f"{kind}_encoder_ms_per_photo_batch32"] = round(statistics.median(batch32[kind]) / 32, 1)
        results[f"{kind}_encoder_images_per_s_batch32"] = round(32000 / statistics.median(batch32[kind]), 2)
    results["encoder_ms_batch1"] = results["litert_encoder_ms_batch1"]   # the shares below: serving's
    results["split_encoder_ms_batch1"] = round(statistics.median(split_ms["split"]), 1)
    results["split_encoder_head"] = (f"ImageNet's and the default model's own ({len(default_model.flows)} tuned)" if default_model.flows
                                     else "ImageNet's, twice")
    results["split_vs_whole_encoder_batch1"] = round(statistics.median(split_ms["split"])
                                                     / statistics.median(split_ms["whole"]), 3)
    results["litert_vs_tf_encoder_batch1"] = round(results["litert_encoder_ms_batch1"]
                                                   / results["tf_encoder_ms_batch1"], 3)
    # One photo end to end as the app and `caption` serve it: read and decode the file, encode,
    # the default model's beam-3 caption with its trust estimate; each runtime in turn.
    kinds = {"litert": "litert", "tf": "tensorflow"}
    default = {kind: (Captioner.load(args.model, encoder_kind=kinds[kind]) if default_model.flows   # its own views
                      else Captioner.load(args.model, encoder=each)) for kind, each in encoders.items()}
    end_to_end = {kind: [] for kind in encoders}
    for kind, each in default.items():
        each.caption_image(dataset.image_path(names[0]), beam=3)   # warm-up: the trust estimate loads
    for name in names[: args.photos]:
        for kind, each in default.items():
            each.forget_recent_photos()
            end_to_end[kind].append(timed(lambda c=each: c.caption_image(dataset.image_path(name), beam=3))[0])
    results["end_to_end_model"] = default["litert"].name
    for kind in encoders:
        results[f"{kind}_end_to_end_ms"] = round(statistics.median(end_to_end[kind]), 1)
    results["litert_vs_tf_end_to_end"] = round(results["litert_end_to_end_ms"] / results["tf_end_to_end_ms"], 3)
    ours = {}
    for label, beam in (("greedy", 1), ("beam3", 3), ("beam5", 5)):
        per_photo = [timed(lambda f=f: captioner.caption(f, beam=beam, trust=False), 3)[0] for f in features]
        results[f"{label}_ms"] = round(statistics.median(per_photo), 2)
        ours[label] = [captioner.caption(f, beam=beam, trust=False)[0].text for f in features]
    batch_ms, _ = timed(lambda: captioner.caption_batch(features, beam=3, trust=False), 3)
    results["beam3_batched_ms_per_photo"] = round(batch_ms / len(features), 2)
    for name in ("attention", "ensemble"):  # the same photos and features, when trained/ has them
        if name not in available_models(args.model):
            continue
        try:
            other = Captioner.load(args.model, name=name, encoder=encoder, flows=[])
        except ArtifactError as exc:  # a stale ensemble: time the rest
            print(f"skipped {name}: {exc}", file=sys.stderr)
            continue
        for label, beam in (("greedy", 1), ("beam3", 3), ("beam5", 5)):
            per_photo = [timed(lambda f=f: other.caption(f, beam=beam, trust=False), 3)[0] for f in features]
            results[f"{name}_{label}_ms"] = round(statistics.median(per_photo), 2)
        batch_ms, _ = timed(lambda: other.caption_batch(features, beam=3, trust=False), 3)
        results[f"{name}_beam3_batched_ms_per_photo"] = round(batch_ms / len(features), 2)
        results[f"{name}_beam3_share_of_encoder_batch1"] = round(
            results[f"{name}_beam3_ms"] / results["encoder_ms_batch1"], 4)
    # What the trust estimate adds to one beam-3 caption (its evidence: another beam-3 search,
    # an ensemble's members' own captions), timed in the same calls as the caption without it.
    # Both estimates: with Flickr8k at --data (and its nearest-photo index) the one that reads
    # consensus, and the one every install has ("_without_consensus").
    for name in ("merge", "attention", "ensemble"):
        if name not in available_models(args.model):
            continue
        for suffix, data_dir in (("", args.data), ("_without_consensus", "")):
            judged = Captioner.load(args.model, name=name, encoder=encoder, data_dir=data_dir, flows=[])
            if judged.trust_model is None:
                print(f"no trust timing for {name}: {judged.trust_problem}", file=sys.stderr)
                continue
            if suffix == "":
                results[f"{name}_trust_reads_consensus"] = "consensus" in judged.trust_model.signals
            def first_caption(f, judged=judged):  # as for a photo not seen before: no kept evidence searches
                judged.forget_recent_photos()
                return judged.caption(f, beam=3)
            judged.caption(features[0], beam=3)   # warm-up: the estimate (and consensus) load
            pairs = [(timed(lambda f=f: judged.caption(f, beam=3, trust=False), 3)[0],
                      timed(lambda f=f: first_caption(f), 3)[0]) for f in features]
            results[f"{name}_beam3_with_trust{suffix}_ms"] = round(statistics.median(b for _, b in pairs), 2)
            results[f"{name}_trust{suffix}_ms"] = round(statistics.median(b - a for a, b in pairs), 2)
            results[f"{name}_trust{suffix}_share_of_encoder_batch1"] = round(
                results[f"{name}_trust{suffix}_ms"] / results["encoder_ms_batch1"], 4)

    model, vocab, max_len = captioner.trained.model, captioner.vocab, captioner.config.max_decode_length
    naive_features = pool(features[: args.naive_photos])  # the merge model's Keras input
    naive_greedy(model, vocab, naive_features[0], 2)  # warm-up
    greedy_times, greedy_same = [], 0
    for i, f in enumerate(naive_features):
        ms, text = timed(lambda f=f: naive_greedy(model, vocab, f, max_len))
        greedy_times.append(ms)
        greedy_same += text == ours["greedy"][i]
    beam_times = [timed(lambda f=f: naive_beam(model, vocab, f, 3, max_len))[0] for f in naive_features]
    results.update(
        naive_greedy_ms=round(statistics.median(greedy_times), 1),
        naive_beam3_ms=round(statistics.median(beam_times), 1),
        naive_greedy_same_captions=f"{greedy_same}/{len(naive_features)}")
    results["speedup_greedy"] = round(results["naive_greedy_ms"] / results["greedy_ms"], 1)
    results["speedup_beam3"] = round(results["naive_beam3_ms"] / results["beam3_ms"], 1)
    results["beam3_share_of_encoder_batch1"] = round(results["beam3_ms"] / results["encoder_ms_batch1"], 4)
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    results["targets_met"] = {"litert_end_to_end_at_most_0.75x_tf": results["litert_vs_tf_end_to_end"] <= 0.75,
                              "beam3_10x_faster_than_naive": results["speedup_beam3"] >= 10,
                              "beam3_under_15pct_of_encoder": results["beam3_share_of_encoder_batch1"] < 0.15,
                              "split_encoder_at_most_1.35x": results["split_vs_whole_encoder_batch1"] <= 1.35}
    if "attention_beam3_ms" in results:
        results["targets_met"]["attention_beam3_under_25pct_of_encoder"] = \
            results["attention_beam3_share_of_encoder_batch1"] < 0.25

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    rows = [("Xception on LiteRT, batch 1", f"{results['litert_encoder_ms_batch1']} ms/photo",
             f"TensorFlow {results['tf_encoder_ms_batch1']} ms ({results['litert_vs_tf_encoder_batch1']}x)"),
            (f"Trunk + exit flow ({results['split_encoder_head']})", f"{results['split_encoder_ms_batch1']} ms/photo",
             f"{results['split_vs_whole_encoder_batch1']}x the whole encoder (bar 1.35x)"),
            ("Xception on LiteRT, batch 32", f"{results['litert_encoder_images_per_s_batch32']} photos/s",
             f"TensorFlow {results['tf_encoder_images_per_s_batch32']} photos/s"),
            (f"One photo end to end ({results['end_to_end_model']})", f"{results['litert_end_to_end_ms']} ms",
             f"TensorFlow {results['tf_end_to_end_ms']} ms ({results['litert_vs_tf_end_to_end']}x)"),
            ("Decode greedy", f"{results['greedy_ms']} ms", f"naive {results['naive_greedy_ms']} ms "
             f"({results['speedup_greedy']}x)"),
            ("Decode beam 3", f"{results['beam3_ms']} ms", f"naive {results['naive_beam3_ms']} ms "
             f"({results['speedup_beam3']}x)"),
            ("Decode beam 5", f"{results['beam5_ms']} ms", ""),
            ("Beam 3, 20 photos batched", f"{results['beam3_batched_ms_per_photo']} ms/photo", "")]
    for name in ("merge", "attention", "ensemble"):
        for suffix, label in (("", " (with consensus)" if results.get(f"{name}_trust_reads_consensus") else ""),
                              ("_without_consensus", " (without consensus)")):
            if f"{name}_trust{suffix}_ms" in results:
                rows.append((f"{name.capitalize()} trust estimate{label}, beam 3", f"+{results[f'{name}_trust{suffix}_ms']} ms",
                             f"{100 * results[f'{name}_trust{suffix}_share_of_encoder_batch1']:.1f}% of one encoder call"))
    for name in ("attention", "ensemble"):  # the same rows for each model timed beside merge
        if f"{name}_beam3_ms" in results:
            label = name.capitalize()
            rows += [(f"{label} greedy", f"{results[f'{name}_greedy_ms']} ms", ""),
                     (f"{label} beam 3", f"{results[f'{name}_beam3_ms']} ms",
                      f"{100 * results[f'{name}_beam3_share_of_encoder_batch1']:.1f}% of one encoder call"),
                     (f"{label} beam 5", f"{results[f'{name}_beam5_ms']} ms", ""),
                     (f"{label} beam 3, batched", f"{results[f'{name}_beam3_batched_ms_per_photo']} ms/photo", "")]
    print(f"{'what':<30} {'ours':<22} baseline / note")
    for row in rows:
        print(f"{row[0]:<30} {row[1]:<22} {row[2]}")
    print(f"beam 3 = {100 * results['beam3_share_of_encoder_batch1']:.1f}% of one encoder call; "
          f"naive greedy gave the same caption for {results['naive_greedy_same_captions']} photos; "
          f"peak RSS {results['peak_rss_mb']} MB")
    print("targets met:", results["targets_met"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
