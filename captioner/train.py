"""Train a decoder (merge or attention) on Flickr8k end to end, resumably.

    features (cached) -> vocabulary
    -> cross-entropy epochs (teacher forcing)      ┐ checkpoint every epoch; the epoch kept
    -> self-critical epochs (CIDEr-D reward)       ┘ is the one with the best val CIDEr
    -> length penalty chosen on val -> test metrics -> the model directory, written atomically.

Both phases run the same training step: a weighted sum of the word log-likelihoods. For
cross-entropy the weights are 1 on every real word; for self-critical training they are the
sample's advantage, reward minus the mean reward of the photo's other samples (Rennie et al.
2017, with the "new self-critical" baseline), so the one step raises the probability of
captions better than their siblings and lowers the others'. Optionally the photo's reference
captions stay in the self-critical loss with weight `scst_xe_weight` (a mixed objective), and
a self-critical epoch is kept only while enough val captions stay distinct: CIDEr alone
rewards safe, generic captions that many photos share. Against the same failure, the reward
may also be contrastive (`scst_contrast_weight`): the sample's CIDEr-D against its own
photo's references minus a share of its CIDEr-D against those of a similar training photo,
so a caption earns only what tells its photo apart.

A killed run restarts from its last checkpoint (`<out>.checkpoint/`, outside trained/).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import os
import platform
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import artifacts
from .cider import CiderD
from .config import Config
from .dataset import Flickr8k, load_flickr8k
from .decoders import build_decoder, keras_inputs, numpy_decoder, training_features
from .decoding import beam_search, greedy_search, sample_captions
from .evaluate import caption_statistics, coco_scores, human_ceiling, quick_scores
from .features import FeatureCache, extract_feature_maps
from .progress import PROGRESS_FILE, ProgressReporter
from .similar import similar_photos
from .text import Vocabulary, clean_caption

EVAL_BEAMS = (1, 3, 5)
ALPHA_CHOICES = (0.0, 0.5, 0.7, 1.0)
# metrics.json key of each caption statistic, per beam width
STATISTICS = {"distinct": "distinct_captions", "mean_words": "mean_words",
              "vocabulary_used": "vocabulary_used", "bigram_repeats": "bigram_repeat_rate",
              "bad_endings": "bad_ending_rate"}
SCST_SAMPLE_PHOTOS = 96     # photos sampled with one copy of the weights (then 6-8 updates)
SIMILAR_PHOTOS = 5          # contrastive reward: each sample's negative is one of these nearest photos
END_WORD = "<end>"          # kept in the reward, so stopping mid-phrase costs CIDEr


# Settings a resumed run may change: they decide how long each phase goes on, not what the
# model is or how it learns. Anything else must match the checkpoint.
SCHEDULE_SETTINGS = frozenset({"max_epochs", "patience", "scst_max_epochs", "scst_patience"})
# ...and, while self-critical training has not begun, how it will learn.
SCST_SETTINGS = frozenset({"scst_samples", "scst_learning_rate", "scst_xe_weight", "scst_min_distinct",
                           "scst_distinct_beam", "scst_contrast_weight", "scst_ema", "scst_select"})


class TrainingError(RuntimeError):
    """A training run cannot start or resume as asked."""


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


@dataclasses.dataclass
class CaptionSet:
    """Every caption of a split as word ids, and which photo (row of the split) it describes."""
    photos: np.ndarray            # (C,)
    ids: list                     # C arrays of word ids, without start/end
    by_photo: list                # per photo, the indices of its captions

    @classmethod
    def build(cls, dataset: Flickr8k, names: list[str], vocab: Vocabulary, max_words: int):
        photos, ids, by_photo = [], [], [[] for _ in names]
        for row, name in enumerate(names):
            for caption in dataset.captions[name]:
                words = vocab.encode(caption)[:max_words]
                if words:
                    by_photo[row].append(len(ids))
                    photos.append(row)
                    ids.append(np.array(words, dtype=np.int32))
        return cls(np.array(photos, dtype=np.int64), ids, by_photo)

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Teacher forcing: inputs <start> w1..wn, targets w1..wn <end>, padded to the batch."""
        width = max(len(self.ids[i]) for i in indices) + 1
        inputs = np.zeros((len(indices), width), dtype=np.int32)
        targets = np.zeros((len(indices), width), dtype=np.int32)
        for j, i in enumerate(indices):
            words = self.ids[i]
            inputs[j, 0] = Vocabulary.start_id
            inputs[j, 1:len(words) + 1] = words
            targets[j, :len(words)] = words
            targets[j, len(words)] = Vocabulary.end_id
        return self.photos[indices], inputs, targets


def photo_batches(captions: "CaptionSet", photos_per_batch: int, rng: np.random.Generator):
    """Batches of photos (all their captions), of similar caption lengths, in random order.

    A batch is padded to its longest caption and the LSTM's cost grows with that length;
    grouping photos by their longest caption (with noise, so batches differ every epoch)
    cut the mean padded length on Flickr8k from 22.8 to 17.1 tokens."""
    longest = np.array([max((len(captions.ids[i]) for i in idx), default=0) for idx in captions.by_photo])
    order = np.argsort(longest + rng.uniform(0, 3, len(longest)), kind="stable")
    batches = [order[i:i + photos_per_batch] for i in range(0, len(order), photos_per_batch)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _default_encoder():
    from .encoder import Encoder
    return Encoder()


def split_features(dataset: Flickr8k, splits: dict[str, list[str]], encoder, progress: bool,
                   config: Config | None = None, reporter: ProgressReporter | None = None) -> dict:
    """Each split's features through the on-disk cache, in the form `config.decoder` reads
    (pooled vectors for merge, 100 regions for attention)."""
    config = config or Config()
    cache = FeatureCache(encoder.checksum)
    pooled = config.decoder == "merge"
    out = {}
    for split, names in splits.items():
        if names:
            on_progress = reporter and (lambda done, total, split=split: reporter.report(
                split=split, done=done, total=total, unit="photos"))
            maps = extract_feature_maps([dataset.image_path(n) for n in names], encoder, cache,
                                        progress=progress, pooled=pooled, desc=f"Features ({split})",
                                        on_progress=on_progress)
            out[split] = maps if pooled else training_features(config, maps)
    return out


class Checkpoint:
    """Weights with the optimiser's moments (one .weights.h5 per epoch), the best weights,
    and a JSON state. state.json, written last and atomically, names the files: a kill at
    any moment leaves a state that matches the weights it points to."""

    OUR_FILES = re.compile(r"^(epoch-\d+\.weights\.h5|best-\d+\.weights\.h5|state\.json|progress\.json)$")

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.state_path = self.dir / "state.json"
        if self.dir.is_dir() and not self.exists() and any(
                not self.OUR_FILES.match(p.name) for p in self.dir.iterdir()):
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
        model.save_weights(str(self.dir / f"epoch-{epoch}.weights.h5"))  # with optimiser state
        state["model"] = f"epoch-{epoch}.weights.h5"
        if is_best:
            with averaged_weights(model):  # the kept copy is the one validation scored
                model.save_weights(str(self.dir / f"best-{epoch}.weights.h5"))
            state["best_weights"] = f"best-{epoch}.weights.h5"
        artifacts.write_json_atomic(self.state_path, state)
        for path in self.dir.iterdir():  # our files that no state points to any more
            if self.OUR_FILES.match(path.name) and path.name not in (
                    state["model"], state["best_weights"], self.state_path.name, PROGRESS_FILE):
                path.unlink(missing_ok=True)

    def load(self, config: Config):
        state = artifacts.read_json(self.state_path)
        saved = dict(state.get("config") or {})
        defaults = Config().to_json()  # a setting added since the checkpoint had its default
        changed = {k for k in set(saved) | set(config.to_json())
                   if saved.get(k, defaults.get(k)) != config.to_json().get(k)}
        allowed = SCHEDULE_SETTINGS | (SCST_SETTINGS if state.get("phase") == "xe" else frozenset())
        if changed - allowed:
            raise TrainingError(f"{self.dir}: checkpoint was made with other settings "
                                f"({', '.join(sorted(changed - allowed))}); delete it to "
                                "start over, or resume with the same flags.")
        state["config"] = config.to_json()  # a schedule setting may change: it only says when to stop
        model = new_model(config, state["learning_rate"], averaging=averages_weights(config, state.get("phase")))
        model.load_weights(str(self.dir / state["model"]))  # with the moving average, if kept
        return model, state


def new_model(config: Config, learning_rate: float, averaging: bool = False):
    """A decoder with its optimiser built, so saved weights include (and restore) its moments
    and, with `averaging`, Keras's moving average of the weights (momentum `scst_ema`)."""
    import keras
    model = build_decoder(config)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=5.0, use_ema=averaging,
                                                  ema_momentum=config.scst_ema))
    model.optimizer.build(model.trainable_variables)
    return model


def averages_weights(config: Config, phase: str | None) -> bool:
    """Whether the optimiser of this phase keeps a moving average of the weights."""
    return phase == "scst" and config.scst_ema > 0


@contextlib.contextmanager
def averaged_weights(model):
    """Inside, the model holds its optimiser's moving average of the weights (if it keeps
    one and has made an update); after, the live weights, which go on training, come back."""
    optimizer = model.optimizer
    if not getattr(optimizer, "use_ema", False) or int(optimizer.iterations.numpy()) == 0:
        yield model
        return
    live = [v.numpy() for v in model.trainable_variables]
    optimizer.finalize_variable_values(model.trainable_variables)
    try:
        yield model
    finally:
        for variable, value in zip(model.trainable_variables, live):
            variable.assign(value)


def make_train_step(model, label_smoothing: float = 0.0):
    """One update on sum(weights * loss per word) / normaliser, the loss per word being
    -log p(target), or with `label_smoothing` e its smoothed form (1 - e) (-log p(target)) +
    e x the mean of -log p over the vocabulary: cross-entropy or SCST (never smoothed)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def train_step(inputs, targets, weights, normaliser):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
            if label_smoothing:
                uniform = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
                nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform
            loss = tf.reduce_sum(nll * weights) / normaliser
        grads = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function(reduce_retracing=True)
    def nll_sum(inputs, targets, weights):
        logits = model(inputs, training=False)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        return tf.reduce_sum(nll * weights)

    return train_step, nll_sum


class Run:
    """Everything one training run needs, loaded once: data, features, vocabulary, model."""

    def __init__(self, data_dir, config: Config, encoder, progress: bool, max_images: int | None,
                 reporter: ProgressReporter):
        self.progress = progress
        self.reporter = reporter
        reporter.report(phase="features", force=True)
        self.dataset = load_flickr8k(data_dir)
        self.splits = {s: self.dataset.images(s)[:max_images] if max_images else self.dataset.images(s)
                       for s in ("train", "val", "test")}
        log(f"Dataset {self.dataset.root} ({self.dataset.layout} layout): "
            + ", ".join(f"{s} {len(n)}" for s, n in self.splits.items()))
        self.features = split_features(self.dataset, self.splits, encoder, progress, config, reporter)
        train_captions = [c for n in self.splits["train"] for c in self.dataset.captions[n]]
        self.vocab = Vocabulary.build(train_captions, config.min_word_count)
        self.config = dataclasses.replace(config, vocab_size=len(self.vocab))
        log(f"Vocabulary: {len(self.vocab)} tokens (words seen >= {config.min_word_count} times in train)")
        self.captions = {s: CaptionSet.build(self.dataset, self.splits[s], self.vocab,
                                             config.max_caption_words) for s in ("train", "val")}
        self.references = {s: {n: self.dataset.captions[n] for n in names}
                           for s, names in self.splits.items()}
        per_photo = len(self.captions["train"]) / max(len(self.splits["train"]), 1)
        self.photos_per_batch = max(1, round(config.batch_size / max(per_photo, 1)))

    def inputs(self, split: str, photos, tokens) -> dict:
        return keras_inputs(self.config, self.features[split], photos, tokens)

    def val_scores(self, decoder) -> tuple[dict, list]:
        """Greedy captions of the val photos and their BLEU-4 and CIDEr (our tokens, no Java)."""
        captions = greedy_search(decoder, self.vocab, self.features["val"],
                                 self.config.max_decode_length, self.config.length_alpha)
        hyps = {n: c.text for n, c in zip(self.splits["val"], captions)}
        return quick_scores(hyps, self.references["val"]), captions

    def val_at_beam(self, decoder) -> dict:
        """Val captions at beam width `scst_distinct_beam` with the length penalty that scores
        best, as the finished model will choose it: their CIDEr, share of distinct captions
        (a longer caption is more often distinct, so the penalty matters) and the penalty."""
        texts, cider = {}, {}
        for alpha in ALPHA_CHOICES:
            captions = beam_search(decoder, self.vocab, self.features["val"], beam=self.config.scst_distinct_beam,
                                   max_length=self.config.max_decode_length, alpha=alpha)
            texts[alpha] = [c[0].text for c in captions]
            cider[alpha] = quick_scores(dict(zip(self.splits["val"], texts[alpha])), self.references["val"])["CIDEr"]
        alpha = best_alpha(cider)
        return {"val_cider_beam": cider[alpha], "val_distinct_beam": caption_statistics(texts[alpha])["distinct"],
                "val_distinct_alpha": alpha}

    @functools.cached_property
    def similar_train_photos(self) -> np.ndarray:
        """Each training photo's nearest others (the contrastive reward's negatives), once a run:
        the features do not change between epochs."""
        return similar_photos(self.features["train"], SIMILAR_PHOTOS)


def train(data_dir: str | os.PathLike, out_dir: str | os.PathLike, config: Config | None = None,
          checkpoint_dir: str | os.PathLike | None = None, encoder=None,
          evaluate_test: bool = True, progress: bool = True, stop_after_epochs: int | None = None,
          max_images: int | None = None) -> dict:
    """Run (or resume) a whole training run and write `out_dir`. Returns the test metrics."""
    import keras

    config = config or Config()
    out_dir = Path(out_dir)
    checkpoint = Checkpoint(Path(checkpoint_dir) if checkpoint_dir
                            else out_dir.with_name(f".{out_dir.name}.checkpoint"))
    started = time.time()
    encoder = encoder or _default_encoder()
    reporter = ProgressReporter(checkpoint.dir, config.decoder)
    run = Run(data_dir, config, encoder, progress, max_images, reporter)
    config = run.config

    if checkpoint.exists():
        model, state = checkpoint.load(config)
        if state.get("encoder_checksum", encoder.checksum) != encoder.checksum:
            raise TrainingError(f"{checkpoint.dir}: checkpoint was trained on features of other "
                                "encoder weights; delete it to start over.")
        log(f"Resuming from {checkpoint.dir} after epoch {state['epoch']} ({state['phase']})")
    else:
        keras.utils.set_random_seed(config.seed)
        model = new_model(config, config.learning_rate)
        state = {"phase": "xe", "epoch": 0, "phase_epoch": 0, "best_cider": -1.0, "best_epoch": 0,
                 "stale_epochs": 0, "learning_rate": config.learning_rate, "history": [],
                 "config": config.to_json(), "encoder_checksum": encoder.checksum}
    train_step, nll_sum = make_train_step(model, config.label_smoothing if state["phase"] == "xe" else 0.0)
    cider = None
    epochs_this_call = 0

    while state["phase"] != "done":
        if state["phase"] == "xe" and (state["phase_epoch"] >= config.max_epochs
                                       or state["stale_epochs"] >= config.patience):
            # Self-critical training starts from the best cross-entropy weights, with a
            # fresh optimiser at its own (much smaller) learning rate.
            log(f"Cross-entropy done: best val CIDEr {state['best_cider']:.4f} at epoch {state['best_epoch']}")
            best = checkpoint.best_path(state)
            model = new_model(config, config.scst_learning_rate, averaging=averages_weights(config, "scst"))
            _load_decoder_only(model, best, config)
            train_step, nll_sum = make_train_step(model)
            state.update(phase="scst" if config.scst_max_epochs else "done", phase_epoch=0,
                         stale_epochs=0, learning_rate=config.scst_learning_rate)
            if config.scst_select == "beam" and config.scst_max_epochs:  # the score to beat, measured alike
                state["best_cider"] = state["xe_val_cider_beam"] = run.val_at_beam(
                    numpy_decoder(model, config))["val_cider_beam"]
                log(f"Cross-entropy weights: val CIDEr {state['best_cider']:.4f} at beam {config.scst_distinct_beam}")
            continue
        if state["phase"] == "scst" and (state["phase_epoch"] >= config.scst_max_epochs
                                         or state["stale_epochs"] >= config.scst_patience):
            state["phase"] = "done"
            continue

        epoch = state["epoch"] + 1
        reporter.report(phase=state["phase"], epoch=epoch, phase_epoch=state["phase_epoch"] + 1,
                        max_phase_epochs=config.max_epochs if state["phase"] == "xe" else config.scst_max_epochs,
                        epoch_started=time.time(), step="training", done=0, total=0, force=True)
        model.optimizer.learning_rate.assign(state["learning_rate"])
        rng = np.random.default_rng(config.seed + epoch)
        t0 = time.time()
        if state["phase"] == "xe":
            row = xe_epoch(run, train_step, nll_sum, rng, epoch)
        else:
            if cider is None:
                cider = reward_scorer(run)
            row = scst_epoch(run, model, train_step, cider, rng, epoch)
        with averaged_weights(model):  # this epoch's weights (or their average), for every val pass
            decoder = numpy_decoder(model, config)
        scores, greedy = run.val_scores(decoder)
        texts = [c.text for c in greedy]
        stats = caption_statistics(texts)
        guarded = {}
        select_at_beam = state["phase"] == "scst" and config.scst_select == "beam"
        if state["phase"] == "scst" and (config.scst_distinct_beam > 1 or select_at_beam):
            guarded = run.val_at_beam(decoder)
        selection = guarded["val_cider_beam"] if select_at_beam else scores["CIDEr"]
        improved = selection > state["best_cider"]
        distinct = guarded.get("val_distinct_beam", stats["distinct"])
        if state["phase"] == "scst" and distinct < config.scst_min_distinct:
            improved = False  # a higher CIDEr bought with generic captions is not kept
            log(f"epoch {epoch}: only {distinct:.1%} of val captions distinct at beam "
                f"{config.scst_distinct_beam} (< {config.scst_min_distinct:.0%}); not kept")
        elif guarded:
            log(f"epoch {epoch}: {distinct:.1%} of val captions distinct at beam {config.scst_distinct_beam}, "
                f"alpha {guarded['val_distinct_alpha']}, CIDEr {guarded['val_cider_beam']:.4f}")
        if improved:
            state.update(best_cider=selection, best_epoch=epoch, stale_epochs=0)
        else:
            state["stale_epochs"] += 1
            if state["phase"] == "xe" and state["stale_epochs"] % config.lr_decay_patience == 0:
                state["learning_rate"] /= 2
        row.update({"phase": state["phase"], "epoch": epoch, "val_bleu4": scores["BLEU-4"],
                    "val_cider": scores["CIDEr"], "learning_rate": float(model.optimizer.learning_rate.numpy()),
                    "seconds": round(time.time() - t0, 1), "val_distinct": stats["distinct"],
                    "val_bad_endings": stats["bad_endings"], **guarded})
        state["history"].append(row)
        state["epoch"], state["phase_epoch"] = epoch, state["phase_epoch"] + 1
        checkpoint.save(model, state, improved)
        extra = "".join(f" {k} {row[k]}" for k in ("loss", "val_loss", "mean_reward") if k in row)
        log(f"epoch {epoch} ({state['phase']}):{extra} val BLEU-4 {scores['BLEU-4']:.4f} "
            f"CIDEr {scores['CIDEr']:.4f}{' (best)' if improved else ''}  e.g. {texts[0]!r}")
        epochs_this_call += 1
        if stop_after_epochs and epochs_this_call >= stop_after_epochs:
            log("Stopping early on request (resume by running again).")
            return {}

    best_row = next(h for h in state["history"] if h["epoch"] == state["best_epoch"])
    measure = (f"beam {config.scst_distinct_beam}" if config.scst_select == "beam" and best_row["phase"] == "scst"
               else "greedy")
    log(f"Training done: best val CIDEr {state['best_cider']:.4f} ({measure}) at epoch {state['best_epoch']}")
    reporter.report(phase="evaluation", force=True)
    model = build_decoder(config)
    _load_decoder_only(model, checkpoint.best_path(state), config)
    decoder = numpy_decoder(model, config)
    config = choose_length_alpha(decoder, run.vocab, config, run.features["val"], run.splits["val"],
                                 run.references["val"])
    metrics, photo_scores = None, []
    if evaluate_test and run.splits["test"]:
        metrics = evaluate_split(decoder, run.vocab, config, run.features["test"], run.splits["test"],
                                 run.references["test"], encoder.checksum, photo_scores=photo_scores)
    info = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "decoder": config.decoder,
        "dataset": {"path": str(run.dataset.root), "layout": run.dataset.layout,
                    "images": {s: len(n) for s, n in run.splits.items()},
                    "train_captions": len(run.captions["train"])},
        "best_epoch": state["best_epoch"], "best_phase": best_row["phase"], "epochs_run": state["epoch"],
        **({"xe_val_cider_beam": state["xe_val_cider_beam"]} if "xe_val_cider_beam" in state else {}),
        "parameters": int(model.count_params()),
        "training_seconds": round(sum(h["seconds"] for h in state["history"]), 1),
        "phase_seconds": {p: round(sum(h["seconds"] for h in state["history"] if h["phase"] == p), 1)
                          for p in ("xe", "scst")},
        "encoder": {"name": "xception", "weights_checksum": encoder.checksum},
        "versions": _versions(), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    artifacts.save_trained(out_dir, model, run.vocab, config, state["history"], metrics, info,
                           photo_scores or None)
    log(f"Model written to {out_dir} ({time.time() - started:.0f} s in all)")
    reporter.remove()
    checkpoint.remove()
    return metrics or {}


def _load_decoder_only(model, path: Path, config: Config) -> None:
    """Load a checkpoint's decoder weights into `model`, leaving its optimiser as it is."""
    donor = new_model(config, config.learning_rate)
    with warnings.catch_warnings():  # its optimiser may differ (a moving average); only layers are taken
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        donor.load_weights(str(path))
    model.set_weights(donor.get_weights())


def xe_epoch(run: Run, train_step, nll_sum, rng, epoch: int) -> dict:
    from tqdm import tqdm
    captions, losses = run.captions["train"], []
    batches = photo_batches(captions, run.photos_per_batch, rng)
    bar = tqdm(batches, desc=f"Epoch {epoch} cross-entropy", unit="batch", disable=not run.progress,
               file=sys.stderr, dynamic_ncols=True)
    for done, photos in enumerate(bar, 1):
        indices = [i for p in photos for i in captions.by_photo[p]]
        rows, inputs, targets = captions.batch(indices)
        mask = (targets > 0).astype(np.float32)
        loss = train_step(run.inputs("train", rows, inputs), targets, mask, np.float32(mask.sum()))
        losses.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", refresh=False)
        run.reporter.report(done=done, total=len(batches), unit="batches",
                            loss=round(float(np.mean(losses[-50:])), 4))
    run.reporter.report(step="validation", force=True)
    return {"loss": round(float(np.mean(losses)), 4), "val_loss": round(val_loss(run, nll_sum), 4)}


def val_loss(run: Run, nll_sum) -> float:
    captions = run.captions["val"]
    total, count = 0.0, 0.0
    for start in range(0, len(run.splits["val"]), 50):
        indices = [i for p in range(start, min(start + 50, len(run.splits["val"])))
                   for i in captions.by_photo[p]]
        rows, inputs, targets = captions.batch(indices)
        mask = (targets > 0).astype(np.float32)
        total += float(nll_sum(run.inputs("val", rows, inputs), targets, mask))
        count += float(mask.sum())
    return total / max(count, 1.0)


def reward_scorer(run: Run) -> CiderD:
    """CIDEr-D over the training references, each ending in the end word (computed once)."""
    refs = {n: [" ".join(clean_caption(c) + [END_WORD]) for c in run.references["train"][n]]
            for n in run.splits["train"]}
    return CiderD(refs)


def scst_epoch(run: Run, model, train_step, cider: CiderD, rng, epoch: int) -> dict:
    """One pass of self-critical training over the training photos."""
    from tqdm import tqdm
    config, vocab, samples = run.config, run.vocab, run.config.scst_samples
    names = run.splits["train"]
    order = rng.permutation(len(names))
    chunks = [order[i:i + SCST_SAMPLE_PHOTOS] for i in range(0, len(order), SCST_SAMPLE_PHOTOS)]
    per_update = max(1, run.photos_per_batch)
    rewards_all, contrasts_all, losses = [], [], []
    similar = run.similar_train_photos if config.scst_contrast_weight else None
    bar = tqdm(total=len(order), desc=f"Epoch {epoch} self-critical", unit="photo",
               disable=not run.progress, file=sys.stderr, dynamic_ncols=True)
    for chunk in chunks:
        decoder = numpy_decoder(model, config)  # the current weights, for this chunk's samples
        ids, ended = sample_captions(decoder, run.features["train"][chunk], samples,
                                     config.max_decode_length, rng)
        texts = [(vocab.decode(row) + (f" {END_WORD}" if done else "")).strip() for row, done in zip(ids, ended)]
        keys = [names[p] for p in np.repeat(chunk, samples)]
        similar_keys = None
        if similar is not None:
            # one similar photo per photo, so its samples are compared on the same footing
            negatives = np.repeat(similar[chunk, rng.integers(0, SIMILAR_PHOTOS, len(chunk))], samples)
            similar_keys = [names[i] for i in negatives]
        own, against, rewards = sample_rewards(cider, keys, texts, similar_keys, config.scst_contrast_weight)
        own, rewards = own.reshape(len(chunk), samples), rewards.reshape(len(chunk), samples)
        rewards_all.append(own.mean(axis=1))  # reported as plain CIDEr-D, comparable across runs
        if against is not None:
            contrasts_all.append(against.reshape(len(chunk), samples).mean(axis=1))
        baseline = (rewards.sum(axis=1, keepdims=True) - rewards) / (samples - 1)
        advantage = (rewards - baseline).reshape(-1).astype(np.float32)
        lengths = np.where(ended, (ids != Vocabulary.end_id).argmin(axis=1) + 1, (ids > 0).sum(axis=1))
        for start in range(0, len(chunk), per_update):
            rows = np.arange(start * samples, min(start + per_update, len(chunk)) * samples)
            width = int(lengths[rows].max())
            targets = ids[rows, :width]
            inputs = np.concatenate([np.full((len(rows), 1), Vocabulary.start_id, np.int32),
                                     targets[:, :-1]], axis=1)
            inputs[inputs == Vocabulary.end_id] = 0  # after the end a row is padding
            mask = (np.arange(width)[None, :] < lengths[rows, None]).astype(np.float32)
            photos = np.repeat(chunk[start:start + per_update], samples)
            weights = mask * advantage[rows, None]
            if config.scst_xe_weight:
                photos, inputs, targets, weights = with_references(
                    run.captions["train"], chunk[start:start + per_update], photos, inputs,
                    targets, weights, config.scst_xe_weight * mask.sum())
            loss = train_step(run.inputs("train", photos, inputs), targets, weights,
                              np.float32(mask.sum()))
            losses.append(float(loss))
        bar.update(len(chunk))
        mean_reward = float(np.concatenate(rewards_all).mean())
        bar.set_postfix(reward=f"{mean_reward:.3f}", refresh=False)
        run.reporter.report(done=bar.n, total=len(order), unit="photos", mean_reward=round(mean_reward, 4),
                            loss=round(float(np.mean(losses[-20:])), 4))
    bar.close()
    run.reporter.report(step="validation", force=True)
    row = {"loss": round(float(np.mean(losses)), 4),
           "mean_reward": round(float(np.concatenate(rewards_all).mean()), 4)}
    if contrasts_all:  # how well the samples fit their similar photos' references
        row["mean_similar_photo_reward"] = round(float(np.concatenate(contrasts_all).mean()), 4)
    return row


def sample_rewards(cider: CiderD, keys: list[str], texts: list[str], similar_keys: list[str] | None,
                   contrast_weight: float):
    """(own CIDEr-D, CIDEr-D against the similar photos or None, reward) of each sample: the
    reward is the first minus `contrast_weight` x the second, so a caption that fits a similar
    photo as well as its own earns less than one that tells them apart."""
    own = cider.score_many(keys, texts)
    if similar_keys is None or not contrast_weight:
        return own, None, own
    against = cider.score_many(similar_keys, texts)
    return own, against, own - contrast_weight * against


def with_references(captions: CaptionSet, chunk_photos, photos, inputs, targets, weights,
                    reference_weight: float):
    """Append the photos' reference captions (teacher forced) to an SCST batch, their words
    weighted so that they add `reference_weight` x their mean -log p to the loss: the
    cross-entropy part of the mixed objective, which anchors the model to human captions."""
    indices = [i for p in chunk_photos for i in captions.by_photo[p]]
    ref_photos, ref_inputs, ref_targets = captions.batch(indices)
    ref_mask = (ref_targets > 0).astype(np.float32)
    width = max(inputs.shape[1], ref_inputs.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])))
    return (np.concatenate([photos, ref_photos]),
            np.concatenate([pad(inputs), pad(ref_inputs)]),
            np.concatenate([pad(targets), pad(ref_targets)]),
            np.concatenate([pad(weights), pad(ref_mask * (reference_weight / ref_mask.sum()))]).astype(np.float32))


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


def rescore(data_dir: str | os.PathLike, model_dir: str | os.PathLike, encoder=None,
            progress: bool = True) -> dict:
    """Re-choose the length penalty and re-score the test split of an existing model
    directory, keeping its weights: for when decoding improves. Writes it atomically."""
    from .artifacts import load_trained
    trained = load_trained(model_dir)
    dataset = load_flickr8k(data_dir)
    encoder = encoder or _default_encoder()
    names = {s: dataset.images(s) for s in ("val", "test")}
    features = split_features(dataset, names, encoder, progress, trained.config)
    decoder = numpy_decoder(trained.model, trained.config)
    config = choose_length_alpha(decoder, trained.vocab, trained.config, features["val"], names["val"],
                                 {n: dataset.captions[n] for n in names["val"]})
    photo_scores = []
    metrics = evaluate_split(decoder, trained.vocab, config, features["test"], names["test"],
                             {n: dataset.captions[n] for n in names["test"]}, encoder.checksum,
                             photo_scores=photo_scores)
    info = {k: v for k, v in trained.manifest.items() if k != "files"}
    info["rescored"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    artifacts.save_trained(Path(model_dir), trained.model, trained.vocab, config, trained.history,
                           metrics, info, photo_scores)
    log(f"Re-scored {model_dir}")
    return metrics


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


def _versions() -> dict:
    import keras
    import tensorflow as tf
    return {"python": sys.version.split()[0], "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__}
