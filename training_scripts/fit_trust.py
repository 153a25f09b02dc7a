#!/usr/bin/env python
"""Fit the trust estimate of every model in trained/ and measure it on photos it never saw.

    python training_scripts/fit_trust.py --data ../shared/flickr8k --everyday ../shared/coco-dev

For each model (merge, attention, ensemble), at the app's beam width:
  1. caption the Flickr8k validation and test photos and the everyday photos, and read each
     caption's signals (captioner/trust/signals.py) and its per-photo CIDEr-D;
  2. fit on Flickr8k validation and one fixed half of the everyday photos (by a hash of the
     file name), each source weighing the same, two estimates: one from the signals every
     install has, and a sharper one that also reads consensus, the caption's agreement with
     the captions of the most similar training photos (captioner/trust/consensus.py), which
     serving reads where Flickr8k and its nearest-photo index are at hand;
  3. measure on the Flickr8k test split and the other, held-out half, and on synthetic images
     (blank, black, one colour, noise, one pixel), which must come out "likely wrong";
  4. write trained/trust.json atomically: the estimates, what "right" means, every held-out
     figure, and the sha256 of the weights and centroids they were fitted for; and the figure
     docs/trust.png (risk-coverage curves and a reliability diagram).

"Right" is a per-photo CIDEr-D at least that of a typical person's caption: the median, over
the Flickr8k validation photos, of each photo's first reference scored against the other four.
Decoded evidence is cached (~/.cache/captioner/trust/), so a refit after changing only the
fit's settings takes about a minute (consensus is recomputed for every photo). Nothing here
trains a decoder.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCH = 50


def synthetic_images() -> dict:
    """Images that are no photo at all: the estimate must call every caption of them a guess."""
    from PIL import Image
    rng = np.random.default_rng(0)
    return {"blank white": Image.new("RGB", (299, 299), "white"), "black": Image.new("RGB", (299, 299), "black"),
            "one colour": Image.new("RGB", (299, 299), (40, 120, 200)),
            "noise": Image.fromarray(rng.integers(0, 256, (299, 299, 3), dtype=np.uint8)),
            "one pixel": Image.new("RGB", (1, 1), (200, 30, 30))}


def cache_key(captioner, names: list[str], familiarity_sha: str, references: dict | None) -> str:
    """What the cached evidence depends on: the model, encoder, centroids and photos, and for
    its CIDEr the references and the tokenizer (PTB's with Java, ours without)."""
    from captioner.evaluation.metrics import java_available
    from captioner.trust.estimate import model_weights
    blob = json.dumps([captioner.name, model_weights(captioner.trained), familiarity_sha,
                       captioner.encoder.checksum, captioner.config.length_alpha, names,
                       references and {n: references[n] for n in names}, java_available()])
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def collect(captioner, maps: np.ndarray, names: list[str], references: dict | None, group: str,
            familiarity_sha: str, cache_dir: Path):
    """Every photo's signals, centroid similarities and CIDEr-D (0 without references)."""
    from tqdm import tqdm

    from captioner.evaluation.metrics import coco_scores
    from captioner.trust.fit import Photos
    from captioner.trust.signals import signals
    from captioner.model_dirs.artifacts import ArtifactError, read_json, write_json_atomic
    path = cache_dir / f"{captioner.name}-{group}-{cache_key(captioner, names, familiarity_sha, references)}.json"
    if path.is_file():
        try:
            saved = read_json(path)
            return Photos(saved["names"], saved["values"], np.array(saved["similarity"], dtype=np.float32),
                          np.array(saved["cider"]), group), saved["captions"]
        except (ArtifactError, KeyError, TypeError) as exc:  # damaged or of an older layout: made anew
            print(f"warning: {path}: unreadable cache ({exc}); collecting again.", file=sys.stderr)
    captions, values, similarity = [], [], []
    for start in tqdm(range(0, len(names), BATCH), desc=f"{captioner.name}: {group}", unit="batch", leave=False):
        batch = maps[start:start + BATCH]
        shown = captioner.caption_batch(batch, beam=captioner.config.default_beam, top=1, trust=False)
        for found in captioner.evidence(batch, shown):
            captions.append(found[0].caption.text)
            values.append(signals(found[0]))
            similarity.append(found[0].centroid_similarity)
    cider = np.zeros(len(names))
    if references:
        per_photo = {}
        coco_scores(dict(zip(names, captions)), references, meteor=False, per_image=per_photo)
        cider = np.array([per_photo[n]["cider"] for n in names])
    photos = Photos(list(names), values, np.array(similarity, dtype=np.float32), cider, group)
    cache_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"names": photos.names, "values": values, "similarity": photos.similarity.tolist(),
                             "cider": cider.tolist(), "captions": captions})
    return photos, captions


def with_consensus(photos, captions: list[str], maps: np.ndarray, consensus):
    """`photos` with each caption's consensus among its signals (a few seconds a split)."""
    from captioner.trust.fit import Photos
    agreement = [a[0] for a in consensus.scores(maps, [[c] for c in captions])]
    values = [dict(v, consensus=a) for v, a in zip(photos.values, agreement)]
    return Photos(photos.names, values, photos.similarity, photos.cider, photos.group)


def held_out(name: str) -> bool:
    """The fixed half of the everyday photos that no estimate is fitted on."""
    return hashlib.sha256(name.encode()).digest()[0] % 2 == 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Flickr8k directory (either layout); default $CAPTIONER_DATA_DIR")
    parser.add_argument("--everyday", default="../shared/coco-dev", help="photos unlike Flickr8k's, with captions")
    parser.add_argument("--models", default="trained", help="the trained/ directory (default: trained)")
    parser.add_argument("--figure", default="docs/trust.png", help="where to draw the curves ('' for none)")
    parser.add_argument("--likely-right", type=float, default=0.5, help="trust at or above which a caption "
                        "is 'likely right' (default 0.5)")
    parser.add_argument("--unsure", type=float, default=0.15, help="trust at or above which a caption is "
                        "'unsure' rather than 'likely wrong' (default 0.15)")
    parser.add_argument("--xception-weights", help="Xception .weights.h5 (default: the cache)")
    args = parser.parse_args(argv)

    from captioner.vision.tf_setup import import_tensorflow_quietly
    import_tensorflow_quietly()
    from captioner.cli_errors import run_reporting_errors

    def job():
        from captioner.api import Captioner
        from captioner.data.dataset import data_dir_from_env, load_caption_folder, load_flickr8k
        from captioner.data.images import prepare_for_encoder
        from captioner.evaluation.metrics import coco_scores
        from captioner.explain.familiarity import find
        from captioner.explain.index import neighbour_index
        from captioner.trust.consensus import Consensus
        from captioner.data.files import sha256_file
        from captioner.model_dirs.catalog import available_models
        from captioner.training.progress import log
        from captioner.trust import fit
        from captioner.trust.estimate import (LIKELY_RIGHT, UNSURE, model_weights,
                                              save_estimates)
        from captioner.vision.encoder import Encoder
        from captioner.vision.encoder import cache_dir
        from captioner.vision.features import FeatureCache, extract_feature_maps

        root = Path(args.models)
        familiarity = find(root)
        if familiarity is None:
            raise SystemExit(f"error: {root}: no training_photos.h5; run `make index` first.")
        familiarity_sha = sha256_file(familiarity)
        data = load_flickr8k(data_dir_from_env(args.data))
        everyday = load_caption_folder(args.everyday)
        encoder = Encoder(args.xception_weights)
        features = FeatureCache(encoder.checksum)
        sets = {"val": data.splits["val"], "test": data.splits["test"]}
        maps = {split: extract_feature_maps([data.image_path(n) for n in names], encoder, features,
                                            desc=f"Features ({split})") for split, names in sets.items()}
        coco_names = everyday.images()
        maps["coco"] = extract_feature_maps([everyday.image_path(n) for n in coco_names], encoder, features,
                                            desc=f"Features ({everyday.name})")
        synthetic = synthetic_images()
        maps["synthetic"] = encoder.feature_maps(np.stack([prepare_for_encoder(i) for i in synthetic.values()]))
        names = {**sets, "coco": coco_names, "synthetic": list(synthetic)}
        consensus = Consensus(neighbour_index(data, encoder), data.captions)
        references = {"val": {n: data.captions[n] for n in sets["val"]},
                      "test": {n: data.captions[n] for n in sets["test"]},
                      "coco": {n: everyday.captions[n] for n in coco_names}, "synthetic": None}

        human = {}
        val_refs = references["val"]
        coco_scores({n: r[0] for n, r in val_refs.items()}, {n: r[1:] for n, r in val_refs.items()},
                    meteor=False, per_image=human)
        threshold = round(float(np.median([h["cider"] for h in human.values()])), 4)
        why = (f"the median per-photo CIDEr-D of people's captions on the {len(human):,} Flickr8k validation "
               "photos (each photo's first reference against the other four): a caption counts as right "
               "when it scores at least what a typical person's does")
        log(f"right: per-photo CIDEr-D >= {threshold} ({why})")

        cutoffs = {LIKELY_RIGHT: args.likely_right, UNSURE: args.unsure}
        estimates, sharper, report = {}, {}, {}
        evidence_dir = cache_dir() / "trust"
        views = {}

        def maps_for(flows: list) -> dict:
            """The features a model reading `flows` decodes: the frozen maps, or views (issue 24)."""
            if not flows:
                return maps
            key = tuple(flow.sha256 for flow in flows)
            if key not in views:
                from captioner.training.features import views_maps
                from captioner.vision.tuned_encoder import open_views_encoder
                paths = {**{split: [data.image_path(n) for n in sets[split]] for split in sets},
                         "coco": [everyday.image_path(n) for n in coco_names]}
                views[key] = {split: views_maps(p, flows, desc=f"Views ({split})") for split, p in paths.items()}
                views[key]["synthetic"] = open_views_encoder("litert", flows).feature_maps(
                    np.stack([prepare_for_encoder(i) for i in synthetic.values()]))
            return views[key]

        for name in available_models(root):
            captioner = Captioner.load(root, name, encoder=encoder, data_dir="")
            model_maps = maps_for(captioner.flows)
            found = {}
            for split in names:
                photos, captions = collect(captioner, model_maps[split], names[split], references[split], split,
                                           familiarity_sha, evidence_dir)
                # consensus, like familiarity, reads the photo's ImageNet map
                found[split] = with_consensus(photos, captions, captioner.imagenet_maps(model_maps[split]), consensus)
            coco_held = np.array([held_out(n) for n in found["coco"].names])
            fit_on, row_weights = fit.join(found["val"], found["coco"].take(~coco_held))
            chosen = ["log_prob", "weakest_word", "beam_agreement", "familiarity", "photo_kind"]
            if captioner.members:
                chosen.insert(3, "member_agreement")
            for variant, signals, into in (("without", chosen, estimates), ("with consensus", chosen + ["consensus"], sharper)):
                estimate = fit.fit(captioner.name, model_weights(captioner.trained), familiarity_sha, fit_on,
                                   row_weights, signals, threshold, why, cutoffs)
                if "consensus" in signals:
                    estimate.consensus = dict(consensus.fingerprint)
                figures = {"flickr8k_test": fit.measure(estimate, found["test"]),
                           "everyday_held_out": fit.measure(estimate, found["coco"].take(coco_held))}
                trust, _ = fit.scores_of(estimate, found["synthetic"])
                figures["synthetic"] = {n: {"trust": round(float(t), 3), "verdict": estimate.verdict(t)}
                                        for n, t in zip(names["synthetic"], trust)}
                estimate.fitted.update({"fitted_on": {"flickr8k_val": len(found["val"]),
                                                      "everyday_fit_half": int((~coco_held).sum())},
                                        "everyday_folder": str(args.everyday), "beam": captioner.config.default_beam,
                                        "held_out": figures})
                # keyed as the Captioner looks it up: by its name in trained/ (its directory's)
                into[captioner.name] = estimate
                for where, f in figures.items():
                    if where != "synthetic":
                        e = f["estimate"]
                        log(f"{name} ({variant}) {where}: Spearman {e['spearman']:.3f}, top 30% CIDEr "
                            f"{e['top30_cider']:.3f}, bottom 40% {e['bottom40_cider']:.3f}; verdicts {f['verdicts']}")
                log(f"{name} ({variant}) synthetic: {figures['synthetic']}")
            report[captioner.name] = (found, coco_held)
        path = save_estimates(root, estimates, {"right": {"metric": "per-photo CIDEr-D at or above",
                                                          "threshold": threshold, "why": why}}, sharper)
        log(f"wrote {path}")
        if args.figure:
            from captioner.trust.figures import trust_figure
            default = Captioner.load(root, encoder=encoder).name
            found, coco_held = report[default]
            out = trust_figure(sharper[default], {"Flickr8k test": found["test"],
                                                    f"{everyday.name}, held-out half": found["coco"].take(coco_held)},
                               args.figure)
            log(f"wrote {out}")
        return 0

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
