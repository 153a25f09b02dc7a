"""Train a decoder (merge or attention) on Flickr8k end to end, resumably.

    features (cached) -> vocabulary
    -> cross-entropy epochs (teacher forcing)      ┐ checkpoint every epoch; the epoch kept
    -> self-critical epochs (CIDEr-D reward)       ┘ is the one with the best val CIDEr
    -> length penalty chosen on val -> test metrics -> the model directory, written atomically.

This module is the loop: which phase runs, which epoch is kept, when to stop. The parts it
drives each have their own module in `captioner.training`: `run` (the data, features and
vocabulary a run loads once), `caption_set` (captions as word ids, batches), `step` (the
weighted log-likelihood step both phases share), `cross_entropy` and `self_critical` (one
epoch of each), `checkpoint` (saving, resuming, what a resume may change) and `scores`
(length penalty and test metrics).

A self-critical epoch is kept only while enough val captions stay distinct (at beam
`scst_distinct_beam`): CIDEr alone rewards safe, generic captions that many photos share.

A killed run restarts from its last checkpoint: `checkpoint_dir`, by default `.<name>.checkpoint/`
beside the model directory (train.py keeps it outside trained/, `.trained.checkpoint-<name>/`).
"""
from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import numpy as np

from captioner.model_dirs import artifacts
from captioner.training.checkpoint import (Checkpoint, TrainingError, averaged_weights,
                                           averages_weights, load_decoder_only, new_model, rate_after,
                                           seed_epoch, to_tuned, tuned_file)
from captioner.decoders.registry import decoder_part, is_tuned
from captioner.training.finetune import head_maps, split_layer, trains_exit_flow, tunes_at
from captioner.decoders.config import Config
from captioner.training.cross_entropy import xe_epoch
from captioner.decoders.registry import numpy_decoder
from captioner.training.distillation import check_same_teacher
from captioner.vision.encoder import Encoder
from captioner.evaluation.metrics import caption_statistics
from captioner.evaluation.report import write_model_card
from captioner.training.scores import choose_length_alpha, evaluate_split, float16_cost
from captioner.vision.exit_flow import round_to_float16
from captioner.training.progress import ProgressReporter, log
from captioner.training.run import Run
from captioner.training.self_critical import reward_scorer, scst_epoch
from captioner.training.step import make_train_step

__all__ = ["TrainingError", "train"]


def load_teacher(config: Config, run: Run, encoder, out_dir: Path):
    """The distillation teacher, checked when the run starts rather than when self-critical
    training does, bound to the training photos in the form its members read."""
    from captioner.training.distillation import Teacher
    teacher = Teacher.load(config.scst_teacher, run.vocab, encoder.checksum)
    if Path(os.path.abspath(out_dir)) in teacher.directories:
        raise TrainingError(f"{out_dir}: is the teacher {config.scst_teacher} or one of its members; "
                            "write the student elsewhere (the teacher must stay as it was).")
    log(f"Teacher: {config.scst_teacher} (weight {config.scst_teacher_weight} per sampled word)")
    return teacher.bind(run.teacher_features(teacher.needs_maps, teacher.flows))


def refuse_other_model(out_dir: Path, decoder: str) -> None:
    """A run must not write over an ensemble or a model of another decoder (train.py --decoder
    attention --name merge would replace trained/merge); a damaged directory it replaces."""
    from captioner.model_dirs.ensemble_dir import is_ensemble
    if is_ensemble(out_dir):
        raise TrainingError(f"{out_dir}: holds an ensemble; choose another --name.")
    try:
        held = (artifacts.read_json(out_dir / "config.json").get("decoder")
                if (out_dir / "config.json").is_file() else None)
    except artifacts.ArtifactError:
        held = None
    if held is not None and held != decoder:
        raise TrainingError(f"{out_dir}: holds a {held} model, not {decoder}; choose another --name.")


def check_exit_flow_source(config: Config, out_dir: Path, checkpoint: Checkpoint, encoder_checksum: str) -> None:
    """A run reading another model's exit flow (--exit-flow-from) must not write over that
    model, and a resumed one must find the exit flow it began with."""
    from captioner.training.run import shared_exit_flow
    if Path(os.path.abspath(out_dir)) == Path(os.path.abspath(config.exit_flow_from)):
        raise TrainingError(f"{out_dir}: is the model whose exit flow this run reads; write it elsewhere.")
    flow = shared_exit_flow(config.exit_flow_from, encoder_checksum)
    began_with = (artifacts.read_json(checkpoint.state_path).get("shared_exit_flow_sha256")
                  if checkpoint.exists() else None)
    if began_with not in (None, flow.sha256):
        raise other_exit_flow(config)


def other_exit_flow(config: Config) -> TrainingError:
    return TrainingError(f"{config.exit_flow_from}: its exit flow is not the one this run began "
                         "with (retrained since?); restore it, or start over.")


def train(data_dir: str | os.PathLike, out_dir: str | os.PathLike, config: Config | None = None,
          checkpoint_dir: str | os.PathLike | None = None, encoder=None,
          evaluate_test: bool = True, progress: bool = True, stop_after_epochs: int | None = None,
          max_images: int | None = None, keep_checkpoint: bool = False,
          extend: str | os.PathLike | None = None, trunk_encoder=None) -> dict:
    """Run (or resume) a whole training run and write `out_dir`. Returns the test metrics.

    With `keep_checkpoint` the checkpoint outlives the finished run, so running again with a
    larger `scst_max_epochs` (or `scst_patience`) extends it by more self-critical epochs
    instead of starting over; the same settings only re-write `out_dir`. `extend` (a finished
    model directory) does the same for a run whose checkpoint was not kept: with no
    checkpoint yet, the model's run is written into it first."""
    import keras

    config = config or Config()
    out_dir = Path(out_dir)
    checkpoint = Checkpoint(Path(checkpoint_dir) if checkpoint_dir
                            else out_dir.with_name(f".{out_dir.name}.checkpoint"))
    started = time.time()
    encoder = encoder or Encoder()
    reporter = ProgressReporter(checkpoint.dir, config.decoder, model=out_dir.name)
    if config.exit_flow_from:   # checked before thousands of photos are encoded for it
        check_exit_flow_source(config, out_dir, checkpoint, encoder.checksum)
    refuse_other_model(out_dir, config.decoder)   # after: writing over the source says so first
    run = Run(data_dir, config, encoder, progress, max_images, reporter, trunk_encoder)
    config = run.config

    if extend and checkpoint.exists():
        log(f"{checkpoint.dir} already holds a run: resuming it ({extend} was read when it began)")
    elif extend:
        seeded = checkpoint.seed_from_model(extend, config, run.vocab, encoder.checksum)
        log(f"Extending {extend}: its run ({seeded['epoch']} epochs, kept epoch {seeded['best_epoch']}) "
            f"written to {checkpoint.dir}; the optimiser starts afresh")
    if checkpoint.exists():
        model, state = checkpoint.load(config)
        if state.get("encoder_checksum", encoder.checksum) != encoder.checksum:
            raise TrainingError(f"{checkpoint.dir}: checkpoint was trained on features of other "
                                "encoder weights; delete it to start over.")
        log(f"Resuming from {checkpoint.dir} after epoch {state['epoch']} ({state['phase']})")
        if state.pop("finished", False):  # kept by --keep-checkpoint
            log("That run had finished: it goes on only if --scst-max-epochs (or --scst-patience) "
                f"now allows more epochs (it ran {state['phase_epoch']} {state['phase']} epochs, "
                f"{state['stale_epochs']} of them without a better val CIDEr)")
    else:
        keras.utils.set_random_seed(config.seed)
        model = new_model(config, config.learning_rate)
        state = {"phase": "xe", "epoch": 0, "phase_epoch": 0, "best_cider": -1.0, "best_epoch": 0,
                 "stale_epochs": 0, "learning_rate": config.learning_rate, "history": [],
                 "config": config.to_json(), "encoder_checksum": encoder.checksum}
    if run.shared_flow is not None:   # recorded, and for --extend compared with the model's copy
        if state.setdefault("shared_exit_flow_sha256", run.shared_flow.sha256) != run.shared_flow.sha256:
            raise other_exit_flow(config)
    run.tune(model, fixed=not trains_exit_flow(config, state["phase"]))
    train_step, nll_sum = phase_step(model, config, state["phase"])
    cider = None
    teacher = load_teacher(config, run, encoder, out_dir) if config.scst_teacher_weight else None
    epochs_this_call = 0

    while state["phase"] != "done":
        if state["phase"] == "xe" and (state["phase_epoch"] >= config.max_epochs
                                       or state["stale_epochs"] >= config.patience):
            model, train_step, nll_sum = begin_self_critical(model, state, config, run, checkpoint)
            continue
        if state["phase"] == "scst" and (state["phase_epoch"] >= config.scst_max_epochs
                                         or state["stale_epochs"] >= config.scst_patience):
            state["phase"] = "done"
            continue

        epoch = state["epoch"] + 1
        if tunes_at(config, epoch) and not is_tuned(model) and trains_exit_flow(config, state["phase"]):
            model, train_step, nll_sum = begin_tuning(model, state, config, run, epoch)
        reporter.report(phase=state["phase"], epoch=epoch, phase_epoch=state["phase_epoch"] + 1,
                        max_phase_epochs=config.max_epochs if state["phase"] == "xe" else config.scst_max_epochs,
                        epoch_started=time.time(), step="training", done=0, total=0, force=True)
        model.optimizer.learning_rate.assign(state["learning_rate"])
        rng = np.random.default_rng(config.seed + epoch)
        seed_epoch(model, config.seed + epoch)
        t0 = time.time()
        if state["phase"] == "xe":
            row = xe_epoch(run, train_step, nll_sum, rng, epoch)
        else:
            if cider is None:
                cider = reward_scorer(run)
            if teacher is not None:
                check_same_teacher(state, teacher, config.scst_teacher)
            row = scst_epoch(run, model, train_step, cider, rng, epoch, teacher)
        if trains_exit_flow(config, state["phase"]):
            run.refresh_maps()  # a tuned exit flow has changed: val reads its new maps
        val, selection, improved, example = judge_epoch(run, model, config, state["phase"], epoch,
                                                        state["best_cider"])
        if improved:
            state.update(best_cider=selection, best_epoch=epoch, stale_epochs=0)
        else:
            state["stale_epochs"] += 1
            state["learning_rate"] = rate_after(state["learning_rate"], state["phase"], state["stale_epochs"], config)
        row.update({"phase": state["phase"], "epoch": epoch, **val,
                    "learning_rate": float(model.optimizer.learning_rate.numpy()),
                    "seconds": round(time.time() - t0, 1)})
        state["history"].append(row)
        state["epoch"], state["phase_epoch"] = epoch, state["phase_epoch"] + 1
        checkpoint.save(model, state, improved)
        extra = "".join(f" {k} {row[k]}" for k in ("loss", "val_loss", "mean_reward") if k in row)
        log(f"epoch {epoch} ({state['phase']}):{extra} val BLEU-4 {row['val_bleu4']:.4f} "
            f"CIDEr {row['val_cider']:.4f}{' (best)' if improved else ''}  e.g. {example!r}")
        epochs_this_call += 1
        if stop_after_epochs and epochs_this_call >= stop_after_epochs:
            log("Stopping early on request (resume by running again).")
            return {}

    # with --scst-select beam, the cross-entropy weights were scored at beam search too
    measure = f"beam {config.scst_distinct_beam}" if "xe_val_cider_beam" in state else "greedy"
    log(f"Training done: best val CIDEr {state['best_cider']:.4f} ({measure}) at epoch {state['best_epoch']}")
    reporter.report(phase="evaluation", force=True)
    metrics = write_model(out_dir, state, config, run, checkpoint, encoder.checksum, evaluate_test)
    card = write_model_card(out_dir)
    log(f"Model written to {out_dir} ({time.time() - started:.0f} s in all)"
        + (f"; its card in {card.name} (`python -m captioner report` refreshes the README's tables)" if card else ""))
    reporter.remove()
    if keep_checkpoint:  # marked finished, so the Training page does not show it as a killed run
        # (from disk: in memory the phase is now "done", which would leave nothing to extend)
        saved = artifacts.read_json(checkpoint.state_path)
        artifacts.write_json_atomic(checkpoint.state_path, {**saved, "finished": True})
        log(f"Checkpoint kept in {checkpoint.dir}: the next run there reopens it")
    else:
        checkpoint.remove()
    return metrics or {}


def write_model(out_dir: Path, state: dict, config: Config, run: Run, checkpoint: Checkpoint,
                encoder_checksum: str, evaluate_test: bool) -> dict | None:
    """The kept epoch's weights as a model directory, written atomically: the length penalty
    chosen on val, the test split scored (with `evaluate_test`). Returns the test metrics."""
    best_tuned = tuned_file(state, state["best_epoch"])
    model = new_model(config, config.learning_rate, tuned=best_tuned, imagenet_head=False)
    load_decoder_only(model, checkpoint.best_path(state), config, best_tuned)
    float16 = None
    if best_tuned:  # the model directory stores it in float16: what is scored is what is written
        maps_float32 = head_maps(model, run.trunk["val"])
        round_to_float16(model.exit_flow)
    run.tune(model, splits=("val", "test"))
    decoder = numpy_decoder(model, config)
    config = choose_length_alpha(decoder, run.vocab, config, run.features["val"], run.splits["val"],
                                 run.references["val"])
    if best_tuned:   # and what float16 storage cost, recorded beside it
        float16 = float16_cost(decoder, run.vocab, config, maps_float32, run.features["val"],
                               run.splits["val"], run.references["val"])
        log(f"Exit flow in float16: val CIDEr at beam 3 {float16['val_cider_beam3_float16']:.4f} against "
            f"{float16['val_cider_beam3_float32']:.4f} in float32, {float16['same_caption']:.1%} of captions the same")
    metrics, photo_scores = None, []
    if evaluate_test and run.splits["test"]:
        metrics = evaluate_split(decoder, run.vocab, config, run.features["test"], run.splits["test"],
                                 run.references["test"], encoder_checksum, photo_scores=photo_scores)
    info = model_info(state, config, run, model, encoder_checksum, float16)
    artifacts.save_trained(out_dir, model, run.vocab, config, state["history"], metrics, info,
                           photo_scores or None, exit_flow=run.shared_flow)
    return metrics


def model_info(state: dict, config: Config, run: Run, model, encoder_checksum: str, float16: dict | None) -> dict:
    """What the manifest records of the run beside the weights: data, kept epoch, exit flow,
    time, encoder and environment."""
    best_row = next(h for h in state["history"] if h["epoch"] == state["best_epoch"])
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "decoder": config.decoder,
        "dataset": {"path": str(run.dataset.root), "layout": run.dataset.layout,
                    "images": {s: len(n) for s, n in run.splits.items()},
                    "train_captions": len(run.captions["train"])},
        "best_epoch": state["best_epoch"], "best_phase": best_row["phase"], "epochs_run": state["epoch"],
        **({"xe_val_cider_beam": state["xe_val_cider_beam"]} if "xe_val_cider_beam" in state else {}),
        **({"extended_from": state["extended_from"]} if "extended_from" in state else {}),
        **({"scst_teacher": {"directory": config.scst_teacher, "manifest_sha256": state["teacher_manifest_sha256"]}}
           if "teacher_manifest_sha256" in state else {}),
        "parameters": int(decoder_part(model).count_params()),
        **({"exit_flow": {"layer": split_layer(config), "tuned_from_epoch": state["finetune_from"],
                          "parameters": int(model.exit_flow.count_params()), "float16": float16}}
           if tuned_file(state, state["best_epoch"]) else {}),
        **({"exit_flow": {"layer": run.shared_flow.layer, "read_from": config.exit_flow_from}}
           if run.shared_flow is not None else {}),
        "training_seconds": round(sum(h["seconds"] for h in state["history"]), 1),
        "phase_seconds": {p: round(sum(h["seconds"] for h in state["history"] if h["phase"] == p), 1)
                          for p in ("xe", "scst")},
        "encoder": {"name": "xception", "weights_checksum": encoder_checksum},
        **artifacts.environment(),
    }


def begin_tuning(model, state: dict, config: Config, run: Run, epoch: int):
    """From `epoch` on, Xception's exit flow trains with the decoder. Returns the tuned model
    and its training step."""
    model = to_tuned(model, config, state["learning_rate"])
    state["finetune_from"] = epoch
    run.tune(model)
    log(f"Epoch {epoch}: fine-tuning Xception's {config.finetune_encoder} from here on, at learning "
        f"rate {config.encoder_learning_rate} (the decoder's optimiser starts afresh)")
    return (model, *phase_step(model, config, state["phase"]))


def judge_epoch(run: Run, model, config: Config, phase: str, epoch: int, best: float):
    """Score an epoch's weights (or their moving average) on val and decide whether it beats
    `best`. Returns the history row's val fields, the score that chooses the epoch, whether
    it is kept, and one greedy caption to show in the log."""
    with averaged_weights(model):  # this epoch's weights (or their average), for every val pass
        decoder = numpy_decoder(model, config)
    scores, greedy = run.val_scores(decoder)
    texts = [c.text for c in greedy]
    stats = caption_statistics(texts)
    guarded = {}
    select_at_beam = phase == "scst" and config.scst_select == "beam"
    if phase == "scst" and (config.scst_distinct_beam > 1 or select_at_beam):
        guarded = run.val_at_beam(decoder)
    selection = guarded["val_cider_beam"] if select_at_beam else scores["CIDEr"]
    improved = selection > best
    distinct = guarded.get("val_distinct_beam", stats["distinct"])
    if phase == "scst" and distinct < config.scst_min_distinct:
        improved = False  # a higher CIDEr bought with generic captions is not kept
        log(f"epoch {epoch}: only {distinct:.1%} of val captions distinct at beam "
            f"{config.scst_distinct_beam} (< {config.scst_min_distinct:.0%}); not kept")
    elif guarded:
        log(f"epoch {epoch}: {distinct:.1%} of val captions distinct at beam {config.scst_distinct_beam}, "
            f"alpha {guarded['val_distinct_alpha']}, CIDEr {guarded['val_cider_beam']:.4f}")
    val = {"val_bleu4": scores["BLEU-4"], "val_cider": scores["CIDEr"], "val_distinct": stats["distinct"],
           "val_bad_endings": stats["bad_endings"], **guarded}
    return val, selection, improved, texts[0]


def begin_self_critical(model, state: dict, config: Config, run: Run, checkpoint: Checkpoint):
    """End cross-entropy: self-critical training starts from the best cross-entropy weights,
    with a fresh optimiser at its own (much smaller) learning rate. Returns the new model and
    its training step; `state` moves to the next phase."""
    log(f"Cross-entropy done: best val CIDEr {state['best_cider']:.4f} at epoch {state['best_epoch']}")
    best = checkpoint.best_path(state)
    best_tuned = tuned_file(state, state["best_epoch"])
    tuned = is_tuned(model) and (best_tuned or trains_exit_flow(config, "scst"))
    if is_tuned(model) and not tuned:  # nothing tuned to keep, nothing to tune: frozen again
        log(f"The kept epoch {state['best_epoch']} came before fine-tuning began and "
            "--scst-exit-flow fixed keeps Xception as it is: self-critical training reads the frozen maps")
        state.pop("finetune_from")
    elif config.finetune_encoder and not tuned and not trains_exit_flow(config, "scst"):
        log(f"--scst-exit-flow fixed: Xception's {config.finetune_encoder} is not tuned (fine-tuning "
            f"was to begin at epoch {config.finetune_start_epoch}, after cross-entropy)")
    model = new_model(config, config.scst_learning_rate, averaging=averages_weights(config, "scst"),
                      tuned=tuned)
    load_decoder_only(model, best, config, best_tuned)
    run.tune(model, fixed=not trains_exit_flow(config, "scst"))
    train_step, nll_sum = phase_step(model, config, "scst")
    state.update(phase="scst" if config.scst_max_epochs else "done", phase_epoch=0,
                 stale_epochs=0, learning_rate=config.scst_learning_rate)
    if config.scst_select == "beam" and config.scst_max_epochs:  # the score to beat, measured alike
        state["best_cider"] = state["xe_val_cider_beam"] = run.val_at_beam(
            numpy_decoder(model, config))["val_cider_beam"]
        log(f"Cross-entropy weights: val CIDEr {state['best_cider']:.4f} at beam {config.scst_distinct_beam}")
    return model, train_step, nll_sum


def phase_step(model, config: Config, phase: str):
    """The compiled training step of `phase`: cross-entropy smoothed as configured, and a
    tuned exit flow learning in the phases it is set to."""
    return make_train_step(model, config.label_smoothing if phase == "xe" else 0.0,
                           trains_exit_flow(config, phase))
