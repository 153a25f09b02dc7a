"""Train the merge decoder on Flickr8k end to end, resumably.

    features (cached) -> vocabulary -> epochs of teacher forcing -> val loss + val BLEU-4
    -> checkpoint every epoch -> early stop -> choose length penalty on val -> test metrics
    -> trained/ written atomically.

A killed run restarts from its last checkpoint (`<out>.checkpoint/`, outside trained/).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

from . import artifacts
from .config import Config
from .dataset import Flickr8k, load_flickr8k
from .decoding import beam_search, greedy_search
from .evaluate import coco_scores, distinct_fraction, human_ceiling, mean_length, quick_bleu4
from .features import FeatureCache, extract_features
from .model import DecoderWeights, build_decoder
from .text import Vocabulary

EVAL_BEAMS = (1, 3, 5)


class TrainingError(RuntimeError):
    """A training run cannot start or resume as asked."""
ALPHA_CHOICES = (0.0, 0.5, 0.7, 1.0)


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def caption_sequences(dataset: Flickr8k, names: list[str], vocab: Vocabulary, max_words: int):
    """(image row, input ids, target ids) for every caption: input <start> w.., target w.. <end>."""
    rows, inputs, targets = [], [], []
    width = max_words + 1
    for row, name in enumerate(names):
        for caption in dataset.captions[name]:
            ids = vocab.encode(caption)[:max_words]
            if not ids:
                continue
            inp = np.zeros(width, dtype=np.int32)
            tgt = np.zeros(width, dtype=np.int32)
            inp[:len(ids) + 1] = [Vocabulary.start_id] + ids
            tgt[:len(ids) + 1] = ids + [Vocabulary.end_id]
            rows.append(row)
            inputs.append(inp)
            targets.append(tgt)
    return np.array(rows), np.stack(inputs), np.stack(targets)


def _default_encoder():
    from .encoder import Encoder
    return Encoder()


def split_features(dataset: Flickr8k, splits: dict[str, list[str]], encoder, progress: bool) -> dict:
    """Xception vectors of each split's photos, through the on-disk cache."""
    cache = FeatureCache(encoder.checksum)
    return {s: extract_features([dataset.image_path(n) for n in names], encoder, cache,
                                progress=progress, desc=f"Features ({s})")
            for s, names in splits.items() if names}


class Checkpoint:
    """Model + optimiser (.keras, loaded in safe mode), best weights, and a JSON state.

    Each epoch's model goes to its own file and state.json, written last and atomically,
    names it: a kill at any moment leaves a state that matches the model it points to.
    """

    OUR_FILES = re.compile(r"^(epoch-\d+\.keras|best-\d+\.weights\.h5|state\.json)$")

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.state_path = self.dir / "state.json"
        if self.dir.is_dir() and not self.exists() and any(self.dir.iterdir()):
            raise TrainingError(f"{self.dir}: checkpoint directory is not empty and holds no "
                                "state.json; choose an empty or new directory.")

    def exists(self) -> bool:
        return self.state_path.is_file()

    def remove(self) -> None:
        """Delete the checkpoint files (only ours) and the directory if that empties it."""
        if self.dir.is_dir():
            for path in self.dir.iterdir():
                if self.OUR_FILES.match(path.name):
                    path.unlink(missing_ok=True)
            try:
                self.dir.rmdir()
            except OSError:
                pass

    def best_path(self, state: dict) -> Path:
        return self.dir / state["best_weights"]

    def save(self, model, state: dict, is_best: bool) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        epoch = state["epoch"]
        model.save(str(self.dir / f"epoch-{epoch}.keras"))
        state["model"] = f"epoch-{epoch}.keras"
        if is_best:
            model.save_weights(str(self.dir / f"best-{epoch}.weights.h5"))
            state["best_weights"] = f"best-{epoch}.weights.h5"
        artifacts.write_json_atomic(self.state_path, state)
        for path in self.dir.iterdir():  # our files that no state points to any more
            if self.OUR_FILES.match(path.name) and path.name not in (
                    state["model"], state["best_weights"], self.state_path.name):
                path.unlink(missing_ok=True)

    def load(self):
        import keras
        state = artifacts.read_json(self.state_path)
        model = keras.models.load_model(str(self.dir / state["model"]), safe_mode=True)
        return model, state


def compile_model(model, learning_rate: float) -> None:
    import keras
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=5.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  weighted_metrics=[])


def train(data_dir: str | os.PathLike, out_dir: str | os.PathLike, config: Config | None = None,
          checkpoint_dir: str | os.PathLike | None = None, encoder=None,
          evaluate_test: bool = True, progress: bool = True, stop_after_epochs: int | None = None,
          max_images: int | None = None) -> dict:
    """Run (or resume) a whole training run and write `out_dir`. Returns the metrics."""
    import keras
    import tensorflow as tf

    config = config or Config()
    out_dir = Path(out_dir)
    checkpoint = Checkpoint(Path(checkpoint_dir) if checkpoint_dir
                            else out_dir.with_name(f".{out_dir.name}.checkpoint"))
    started = time.time()

    dataset = load_flickr8k(data_dir)
    splits = {s: dataset.images(s)[:max_images] if max_images else dataset.images(s)
              for s in ("train", "val", "test")}
    log(f"Dataset {dataset.root} ({dataset.layout} layout): "
        + ", ".join(f"{s} {len(n)}" for s, n in splits.items()))

    encoder = encoder or _default_encoder()
    features = split_features(dataset, splits, encoder, progress)

    train_captions = [c for n in splits["train"] for c in dataset.captions[n]]
    vocab = Vocabulary.build(train_captions, config.min_word_count)
    config = dataclasses.replace(config, vocab_size=len(vocab))
    log(f"Vocabulary: {len(vocab)} tokens (words seen >= {config.min_word_count} times in train)")

    rows, inputs, targets = caption_sequences(dataset, splits["train"], vocab, config.max_caption_words)
    v_rows, v_inputs, v_targets = caption_sequences(dataset, splits["val"], vocab, config.max_caption_words)
    val_refs = {n: dataset.captions[n] for n in splits["val"]}

    if checkpoint.exists():
        model, state = checkpoint.load()
        if state["config"] != config.to_json():
            raise TrainingError(f"{checkpoint.dir}: checkpoint was made with other settings; "
                                "delete it to start over, or resume with the same flags.")
        if state.get("encoder_checksum", encoder.checksum) != encoder.checksum:
            raise TrainingError(f"{checkpoint.dir}: checkpoint was trained on features of other "
                                "encoder weights; delete it to start over.")
        log(f"Resuming from {checkpoint.dir} after epoch {state['epoch']}")
    else:
        keras.utils.set_random_seed(config.seed)
        model = build_decoder(config)
        compile_model(model, config.learning_rate)
        state = {"epoch": 0, "best_bleu4": -1.0, "best_epoch": 0, "stale_epochs": 0,
                 "learning_rate": config.learning_rate, "history": [],
                 "config": config.to_json(), "encoder_checksum": encoder.checksum}

    def batches(epoch: int):
        order = np.random.default_rng(config.seed + epoch).permutation(len(rows))
        sample_weight = (targets[order] > 0).astype(np.float32)
        return tf.data.Dataset.from_tensor_slices(
            ({"image": features["train"][rows[order]], "tokens": inputs[order]},
             targets[order], sample_weight)).batch(config.batch_size).prefetch(2)

    val_data = tf.data.Dataset.from_tensor_slices(
        ({"image": features["val"][v_rows], "tokens": v_inputs}, v_targets,
         (v_targets > 0).astype(np.float32))).batch(256)

    epochs_this_call = 0
    while state["epoch"] < config.max_epochs and state["stale_epochs"] < config.patience:
        epoch = state["epoch"] + 1
        model.optimizer.learning_rate.assign(state["learning_rate"])
        t0 = time.time()
        fit = model.fit(batches(epoch), epochs=1, verbose=1 if progress else 0)
        loss = float(fit.history["loss"][-1])
        val_loss = float(model.evaluate(val_data, verbose=0))
        weights = DecoderWeights.from_keras(model)
        greedy = greedy_search(weights, vocab, features["val"], config.max_decode_length,
                               config.length_alpha)
        hyps = {n: cap.text for n, cap in zip(splits["val"], greedy)}
        bleu4 = quick_bleu4(hyps, val_refs)
        improved = bleu4 > state["best_bleu4"]
        if improved:
            state.update(best_bleu4=bleu4, best_epoch=epoch, stale_epochs=0)
        else:
            state["stale_epochs"] += 1
            if state["stale_epochs"] % config.lr_decay_patience == 0:
                state["learning_rate"] /= 2
        row = {"epoch": epoch, "loss": round(loss, 4), "val_loss": round(val_loss, 4),
               "val_bleu4": round(bleu4, 4), "learning_rate": model.optimizer.learning_rate.numpy().item(),
               "seconds": round(time.time() - t0, 1),
               "val_distinct": distinct_fraction(list(hyps.values()))}
        state["history"].append(row)
        state["epoch"] = epoch
        checkpoint.save(model, state, improved)
        log(f"epoch {epoch}: loss {loss:.4f} val_loss {val_loss:.4f} val BLEU-4 {bleu4:.4f}"
            f"{' (best)' if improved else ''}  e.g. {greedy[0].text!r}")
        epochs_this_call += 1
        if stop_after_epochs and epochs_this_call >= stop_after_epochs:
            log("Stopping early on request (resume by running again).")
            return {}

    log(f"Training done: best val BLEU-4 {state['best_bleu4']:.4f} at epoch {state['best_epoch']}")
    model.load_weights(str(checkpoint.best_path(state)))
    weights = DecoderWeights.from_keras(model)

    config = choose_length_alpha(weights, vocab, config, features["val"], splits["val"], val_refs)

    metrics = None
    if evaluate_test and splits["test"]:
        metrics = evaluate_split(weights, vocab, config, features["test"], splits["test"],
                                 {n: dataset.captions[n] for n in splits["test"]}, encoder.checksum)
    info = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"path": str(dataset.root), "layout": dataset.layout,
                    "images": {s: len(n) for s, n in splits.items()},
                    "train_captions": int(len(rows))},
        "best_epoch": state["best_epoch"], "epochs_run": state["epoch"],
        "parameters": int(model.count_params()),
        "training_seconds": round(sum(h["seconds"] for h in state["history"]), 1),
        "encoder": {"name": "xception", "weights_checksum": encoder.checksum},
        "versions": _versions(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    artifacts.save_trained(out_dir, model, vocab, config, state["history"], metrics, info)
    log(f"Model written to {out_dir} ({time.time() - started:.0f} s in all)")
    checkpoint.remove()
    return metrics or {}


def choose_length_alpha(weights, vocab, config: Config, features, names, references) -> Config:
    """The length penalty, chosen on the validation split (CIDEr at beam 3), never on test."""
    alpha_scores = {}
    for alpha in ALPHA_CHOICES:
        caps = beam_search(weights, vocab, features, beam=3, max_length=config.max_decode_length,
                           alpha=alpha)
        hyps = {n: c[0].text for n, c in zip(names, caps)}
        alpha_scores[alpha] = coco_scores(hyps, references, meteor=False)
        log(f"val beam 3, alpha {alpha}: BLEU-4 {alpha_scores[alpha]['BLEU-4']:.4f} "
            f"CIDEr {alpha_scores[alpha]['CIDEr']:.4f}")
    best_alpha = max(ALPHA_CHOICES, key=lambda a: (alpha_scores[a]["CIDEr"], a))
    log(f"Chosen length penalty alpha = {best_alpha}")
    return dataclasses.replace(config, length_alpha=best_alpha,
                               extra={"val_alpha_search": {str(a): s for a, s in alpha_scores.items()}})


def rescore(data_dir: str | os.PathLike, model_dir: str | os.PathLike, encoder=None,
            progress: bool = True) -> dict:
    """Re-choose the length penalty and re-score the test split of an existing trained/,
    keeping its weights: for when decoding improves. Writes the directory atomically."""
    from .artifacts import load_trained
    trained = load_trained(model_dir)
    dataset = load_flickr8k(data_dir)
    encoder = encoder or _default_encoder()
    names = {s: dataset.images(s) for s in ("val", "test")}
    features = split_features(dataset, names, encoder, progress)
    weights = DecoderWeights.from_keras(trained.model)
    config = choose_length_alpha(weights, trained.vocab, trained.config, features["val"], names["val"],
                                 {n: dataset.captions[n] for n in names["val"]})
    metrics = evaluate_split(weights, trained.vocab, config, features["test"], names["test"],
                             {n: dataset.captions[n] for n in names["test"]}, encoder.checksum)
    info = {k: v for k, v in trained.manifest.items() if k != "files"}
    info["rescored"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    artifacts.save_trained(Path(model_dir), trained.model, trained.vocab, config, trained.history,
                           metrics, info)
    log(f"Re-scored {model_dir}")
    return metrics


def evaluate_split(weights, vocab, config, features, names, references, encoder_checksum,
                   beams=EVAL_BEAMS, split="test") -> dict:
    metrics = {"split": split, "n_images": len(names), "beam": {}, "length_alpha": config.length_alpha,
               "distinct_captions": {}, "mean_words": {},
               "encoder": {"name": "xception", "weights_checksum": encoder_checksum}}
    # The same toolkit scoring each photo's first reference against the other four.
    metrics["human_first_reference"] = human_ceiling(references)
    for beam in beams:
        t0 = time.time()
        caps = beam_search(weights, vocab, features, beam=beam, max_length=config.max_decode_length,
                           alpha=config.length_alpha)
        texts = [c[0].text for c in caps]
        scores = coco_scores(dict(zip(names, texts)), references)
        metrics["beam"][str(beam)] = scores
        metrics["distinct_captions"][str(beam)] = distinct_fraction(texts)
        metrics["mean_words"][str(beam)] = mean_length(texts)
        log(f"{split} beam {beam}: " + " ".join(f"{k} {v}" for k, v in scores.items())
            + f" distinct {metrics['distinct_captions'][str(beam)]} ({time.time() - t0:.0f} s)")
    return metrics


def _versions() -> dict:
    import keras
    import tensorflow as tf
    return {"python": sys.version.split()[0], "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}
