"""A trained decoder's scores: the length penalty chosen on val, then every beam width on
test (COCO toolkit), as metrics.json records them; and re-scoring an existing model."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
from pathlib import Path
from typing import NamedTuple

from captioner.model_dirs import artifacts
from captioner.decoders.config import Config
from captioner.data.dataset import load_caption_folder, load_flickr8k
from captioner.decoding.search import beam_search
from captioner.vision.encoder import Encoder, EncoderWeightsError
from captioner.evaluation.metrics import caption_statistics, coco_scores, human_ceiling
from captioner.evaluation.report import write_model_card
from captioner.model_dirs.views import exit_flows, views_decoder
from captioner.training.features import split_features, split_views, views_maps
from captioner.training.progress import log
from captioner.vision.features import FeatureCache, extract_feature_maps

EVAL_BEAMS = (1, 3, 5)
ALPHA_CHOICES = (0.0, 0.5, 0.7, 1.0)
# metrics.json key of each caption statistic, per beam width
STATISTICS = {"distinct": "distinct_captions", "mean_words": "mean_words",
              "vocabulary_used": "vocabulary_used", "bigram_repeats": "bigram_repeat_rate",
              "bad_endings": "bad_ending_rate"}


def best_alpha(cider_by_alpha: dict[float, float]) -> float:
    """The length penalty with the best val CIDEr; a tie goes to the larger one."""
    return max(cider_by_alpha, key=lambda a: (cider_by_alpha[a], a))


def choose_length_alpha(decoder, vocab, config: Config, features, names, references) -> Config:
    """The length penalty, chosen on the validation split (CIDEr at beam 3), never on test."""
    alpha_scores = {}
    for alpha in ALPHA_CHOICES:
        caps = beam_search(decoder, vocab, features, beam=3, max_length=config.max_decode_length,
                           alpha=alpha)
        hyps = {n: c[0].text for n, c in zip(names, caps)}
        alpha_scores[alpha] = coco_scores(hyps, references, meteor=False)
        log(f"val beam 3, alpha {alpha}: BLEU-4 {alpha_scores[alpha]['BLEU-4']:.4f} "
            f"CIDEr {alpha_scores[alpha]['CIDEr']:.4f}")
    chosen = best_alpha({a: s["CIDEr"] for a, s in alpha_scores.items()})
    log(f"Chosen length penalty alpha = {chosen}")
    return dataclasses.replace(config, length_alpha=chosen,
                               extra={"val_alpha_search": {str(a): s for a, s in alpha_scores.items()}})


def float16_cost(decoder, vocab, config: Config, maps_float32, maps_float16, names, references) -> dict:
    """What storing a tuned exit flow in float16 changes, on the validation photos: the beam-3
    CIDEr of the maps its float32 weights give and of those its float16 weights give, and the
    share of photos given the same caption (issue 24: float16 if validation CIDEr does not move)."""
    texts = {}
    for kind, maps in (("float32", maps_float32), ("float16", maps_float16)):
        captions = beam_search(decoder, vocab, maps, beam=3, max_length=config.max_decode_length,
                               alpha=config.length_alpha)
        texts[kind] = [c[0].text for c in captions]
    cider = {kind: coco_scores(dict(zip(names, t)), references, meteor=False)["CIDEr"] for kind, t in texts.items()}
    same = sum(a == b for a, b in zip(texts["float32"], texts["float16"])) / max(len(names), 1)
    return {"val_cider_beam3_float32": round(cider["float32"], 4),
            "val_cider_beam3_float16": round(cider["float16"], 4), "same_caption": round(same, 4)}


def evaluate_split(decoder, vocab, config, features, names, references, encoder_checksum,
                   beams=EVAL_BEAMS, split="test", photo_scores: list | None = None) -> dict:
    """Scores at each beam width; `photo_scores`, if given, receives each photo's caption and
    scores at the default width (what the app shows)."""
    metrics = {"split": split, "n_images": len(names), "decoder": config.decoder, "beam": {},
               "length_alpha": config.length_alpha, **{key: {} for key in STATISTICS.values()},
               "encoder": {"name": "xception", "weights_checksum": encoder_checksum}}
    # The same toolkit scoring each photo's first reference against the other four.
    metrics["human_first_reference"] = human_ceiling(references)
    for beam in beams:
        t0 = time.time()
        caps = beam_search(decoder, vocab, features, beam=beam, max_length=config.max_decode_length,
                           alpha=config.length_alpha)
        texts = [c[0].text for c in caps]
        per_image = {} if beam == config.default_beam else None
        scores = coco_scores(dict(zip(names, texts)), references, per_image=per_image)
        if per_image is not None and photo_scores is not None:
            photo_scores.extend({"image": n, "caption": t, "beam": beam, **per_image[n]}
                                for n, t in zip(names, texts))
        metrics["beam"][str(beam)] = scores
        stats = caption_statistics(texts)
        for name, key in STATISTICS.items():
            metrics[key][str(beam)] = stats[name]
        log(f"{split} beam {beam}: " + " ".join(f"{k} {v}" for k, v in scores.items())
            + f" {stats} ({time.time() - t0:.0f} s)")
    return metrics


def require_trained_encoder(trained, encoder_checksum: str) -> None:
    """Refuse to score a model (or an ensemble's members) on features of other Xception
    weights than it was trained on: its recorded scores would silently change meaning."""
    for model in getattr(trained, "members", None) or [trained]:
        expected = (model.manifest.get("encoder") or {}).get("weights_checksum")
        if expected and expected != encoder_checksum:
            raise EncoderWeightsError(
                f"{model.directory}: was trained on features of Xception weights {expected[:12]}, not "
                f"these ({encoder_checksum[:12]}); score it with the weights it was trained with.")


def rescore(data_dir: str | os.PathLike, model_dir: str | os.PathLike, encoder=None,
            progress: bool = True) -> dict:
    """Re-choose the length penalty and re-score the test split of an existing model
    directory, keeping its weights: for when decoding improves. Writes it atomically."""
    trained = artifacts.load_trained(model_dir)
    dataset = load_flickr8k(data_dir)
    encoder = encoder or Encoder()
    require_trained_encoder(trained, encoder.checksum)
    names = {s: dataset.images(s) for s in ("val", "test")}
    flows = exit_flows(trained)   # a model with its own exit flow is scored on its own maps
    if flows:
        features = split_views(dataset, names, flows, progress)
    else:
        features = split_features(dataset, names, encoder, progress, trained.config)
    decoder = views_decoder(trained, flows)
    config = choose_length_alpha(decoder, trained.vocab, trained.config, features["val"], names["val"],
                                 {n: dataset.captions[n] for n in names["val"]})
    photo_scores = []
    metrics = evaluate_split(decoder, trained.vocab, config, features["test"], names["test"],
                             {n: dataset.captions[n] for n in names["test"]}, encoder.checksum,
                             photo_scores=photo_scores)
    info = {k: v for k, v in trained.manifest.items() if k != "files"}
    info["rescored"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    artifacts.save_trained(Path(model_dir), trained.model, trained.vocab, config, trained.history,
                           metrics, info, photo_scores, exit_flow=trained.exit_flow)
    write_model_card(model_dir)
    log(f"Re-scored {model_dir}")
    return metrics


class EnsembleInputs(NamedTuple):
    members: list       # the trained models
    decoders: list      # their NumPy decoders, each reading its own view of the features
    features: dict      # split -> what the decoders read
    names: dict         # split -> photo names
    references: dict    # split -> {photo: its captions}
    encoder: object


def ensemble_inputs(data_dir: str | os.PathLike, model_dirs: list, splits: tuple[str, ...], encoder=None,
                    progress: bool = True) -> EnsembleInputs:
    """What scoring an ensemble of `model_dirs` reads: the members (checked to share one
    vocabulary and the encoder's weights; default encoder: the Keras one), their NumPy
    decoders, and each split's features, photo names and references. Each member decodes the
    maps of its own exit flow (model_dirs/views.py); without tuned exit flows, the frozen maps."""
    members = [artifacts.load_trained(d) for d in model_dirs]
    for member, directory in zip(members[1:], model_dirs[1:]):
        if member.vocab.itos != members[0].vocab.itos:
            raise ValueError(f"{directory}: its vocabulary differs from {model_dirs[0]}'s")
    encoder = encoder or Encoder()
    checksums = {(m.manifest.get("encoder") or {}).get("weights_checksum") for m in members}
    if checksums != {encoder.checksum}:
        raise ValueError("the models were trained on features of other encoder weights than these")
    dataset = load_flickr8k(data_dir)
    names = {s: dataset.images(s) for s in splits}
    references = {s: {n: dataset.captions[n] for n in names[s]} for s in names}
    flows = exit_flows(members)
    if flows:
        features = split_views(dataset, names, flows, progress)
    else:
        # the 100 regions if a member attends (a merge member pools them), else pooled vectors
        feature_config = next((m.config for m in members if m.config.decoder == "attention"), members[0].config)
        features = split_features(dataset, names, encoder, progress, feature_config)
    return EnsembleInputs(members, [views_decoder(m, flows) for m in members], features, names, references,
                          encoder)


def score_ensemble(data_dir: str | os.PathLike, model_dirs: list, mixes: list, encoder=None,
                   progress: bool = True) -> dict:
    """An ensemble of two or more models (decoders.ensemble.EnsembleDecoder) scored as training
    scores a model: the mix (one weight per member, from `mixes`) and the length penalty chosen
    on val (CIDEr at beam 3), never on test, then the test split at every beam width. Returns
    what model_dirs.ensemble_dir.save_ensemble writes: {"weights", "length_alpha", "val_search",
    "metrics", "photo_scores", "vocab", "members_weights_sha256"}."""
    from captioner.decoders.ensemble import mixed
    from captioner.model_dirs.ensemble_dir import mix_key
    if len(model_dirs) < 2:
        raise ValueError(f"an ensemble is two or more models, got {len(model_dirs)}")
    mixes = [tuple(float(w) for w in mix) for mix in mixes]
    if any(len(mix) != len(model_dirs) for mix in mixes):
        raise ValueError(f"each mix needs one weight per model ({len(model_dirs)}), got {mixes}")
    if len({mix_key(mix) for mix in mixes}) != len(mixes):
        raise ValueError(f"a mix is listed twice: {[mix_key(mix) for mix in mixes]}")
    members, decoders, features, names, references, encoder = ensemble_inputs(
        data_dir, model_dirs, ("val", "test"), encoder, progress)
    config = members[0].config
    searches = {}
    for mix in mixes:
        log("ensemble weights " + ", ".join(f"{w:g} for {d}" for w, d in zip(mix, model_dirs)))
        searches[mix] = choose_length_alpha(mixed(decoders, mix), members[0].vocab,
                                            config, features["val"], names["val"], references["val"])
    cider = lambda c: c.extra["val_alpha_search"][str(c.length_alpha)]["CIDEr"]
    weights = max(searches, key=lambda mix: (cider(searches[mix]), mix))
    config = searches[weights]
    log(f"Chosen: weights {mix_key(weights)}, length penalty {config.length_alpha} (val CIDEr {cider(config):.4f})")
    photo_scores = []
    metrics = evaluate_split(mixed(decoders, weights), members[0].vocab, config,
                             features["test"], names["test"], references["test"], encoder.checksum,
                             photo_scores=photo_scores)
    metrics["decoder"] = "ensemble"
    return {"weights": list(weights), "length_alpha": config.length_alpha, "metrics": metrics,
            "photo_scores": photo_scores, "vocab": members[0].vocab,
            # the weights scored: a member replaced while this ran must leave the ensemble stale
            "members_weights_sha256": [artifacts.weights_fingerprint(m.manifest["files"]) for m in members],
            "val_search": {mix_key(mix): c.extra["val_alpha_search"] for mix, c in searches.items()}}


def score_folder(model_dirs: list, folder_dir: str | os.PathLike, encoder=None, beam: int = 3,
                 progress: bool = True) -> dict[str, dict]:
    """Each model's scores on photos from outside Flickr8k (../shared/coco-dev), at the app's
    beam width, decoded as the app decodes them (Xception maps, the model's length penalty),
    written atomically to <model>/everyday_metrics.json. Nothing is chosen on these photos."""
    from captioner.model_dirs.catalog import load_model
    from captioner.model_dirs.ensemble_dir import TrainedEnsemble
    folder = load_caption_folder(folder_dir)
    names = folder.images()
    encoder = encoder or Encoder()
    paths = [folder.image_path(n) for n in names]
    frozen = extract_feature_maps(paths, encoder, FeatureCache(encoder.checksum),
                                  progress=progress, desc=f"Features ({folder.name})")
    references = {n: folder.captions[n] for n in names}
    scored = {}
    for directory in map(Path, model_dirs):
        trained = load_model(directory)
        require_trained_encoder(trained, encoder.checksum)
        flows = exit_flows(trained)   # a model with its own exit flow reads its own maps
        maps = views_maps(paths, flows, progress, f"Features ({folder.name}, {directory.name})") if flows else frozen
        decoder = views_decoder(trained, flows)
        log(f"{directory}: {len(names)} photos of {folder.root}")
        metrics = evaluate_split(decoder, trained.vocab, trained.config, maps, names, references, encoder.checksum,
                                 beams=(beam,), split=folder.name)
        metrics["decoder"] = "ensemble" if isinstance(trained, TrainedEnsemble) else trained.config.decoder
        metrics["folder"] = str(folder_dir)
        artifacts.write_json_atomic(directory / artifacts.EVERYDAY_METRICS, metrics)
        scored[str(directory)] = metrics
    return scored
