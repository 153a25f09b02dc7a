"""A training run's checkpoint, and the decoders it saves and restores with their optimiser.

What a resumed run may change is decided here: schedule settings always, self-critical
settings until that phase begins, anything else never (the weights would not match them).
A finished model directory can also stand in for the checkpoint its run did not keep
(`seed_from_model`), so that training it further needs no second copy of its run.
"""
from __future__ import annotations

import contextlib
import re
import warnings
from pathlib import Path

from captioner.model_dirs import artifacts
from captioner.decoders.config import Config
from captioner.decoders.registry import build_decoder, decoder_part, is_tuned
from captioner.training.progress import PROGRESS_FILE

# Settings a resumed run may change: they decide how long each phase goes on, not what the
# model is or how it learns. Anything else must match the checkpoint.
SCHEDULE_SETTINGS = frozenset({"max_epochs", "patience", "scst_max_epochs", "scst_patience"})
# ...and, while self-critical training has not begun, how it will learn.
SCST_SETTINGS = frozenset({"scst_samples", "scst_learning_rate", "scst_xe_weight", "scst_min_distinct",
                           "scst_distinct_beam", "scst_contrast_weight", "scst_ema", "scst_select",
                           "scst_teacher", "scst_teacher_weight", "scst_exit_flow"})


class TrainingError(RuntimeError):
    """A training run cannot start or resume as asked."""


class Checkpoint:
    """Weights with the optimiser's moments (one .weights.h5 per epoch), the best weights,
    and a JSON state. state.json, written last and atomically, names the files: a kill at
    any moment leaves a state that matches the weights it points to."""

    # with the temporary files a write killed halfway leaves (artifacts.write_text_atomic)
    OUR_FILES = re.compile(r"^(epoch-\d+\.weights\.h5|best-\d+\.weights\.h5|state\.json|progress\.json"
                           r"|\.(state|progress)\.json\.\w+\.tmp)$")

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
        changed = changed_settings(state.get("config") or {}, config) - resumable_settings(
            state.get("phase"), bool(state.get("finetune_from")))
        if changed:
            raise TrainingError(f"{self.dir}: checkpoint was made with other settings "
                                f"({', '.join(sorted(changed))}); delete it to "
                                "start over, or resume with the same flags.")
        state["config"] = config.to_json()  # a schedule setting may change: it only says when to stop
        model = new_model(config, state["learning_rate"], averaging=averages_weights(config, state.get("phase")),
                          tuned=tuned_file(state, state["epoch"]), imagenet_head=False)
        model.load_weights(str(self.dir / state["model"]))  # with the moving average, if kept
        return model, state

    def seed_from_model(self, directory, config: Config, vocab, encoder_checksum: str) -> dict:
        """Write, in this (empty) checkpoint, the finished run that made the model in
        `directory`, as `--keep-checkpoint` would have kept it: its history, epoch counts,
        best val score and the model's weights, so that resuming extends that run.

        Two things a kept checkpoint has are not in a model directory: the optimiser's
        moments, which start afresh, and the last epoch's weights, if it was not the kept
        one: training goes on from the kept epoch's."""
        directory = Path(directory)
        try:
            trained = artifacts.load_trained(directory)
        except artifacts.ArtifactError as exc:
            raise TrainingError(str(exc)) from None
        # rows written before self-critical training existed have no phase: cross-entropy
        manifest, history = trained.manifest, [{"phase": "xe", **row} for row in trained.history]
        # Its own exit flow goes on training with its decoder (one read from another model,
        # --exit-flow-from, stays that model's: the run reads it again).
        tuned = trained.exit_flow is not None and bool(trained.config.finetune_encoder)
        if trained.config.decoder != config.decoder:
            raise TrainingError(f"{directory}: is a {trained.config.decoder} model, not {config.decoder}.")
        if manifest.get("encoder", {}).get("weights_checksum") != encoder_checksum:
            raise TrainingError(f"{directory}: was trained on features of other encoder weights.")
        if trained.vocab.itos != vocab.itos:
            raise TrainingError(f"{directory}: its vocabulary differs from this run's (another "
                                "dataset or --min-word-count).")
        # The length penalty is chosen after training, on val: not a training setting.
        trained_with = {**trained.config.to_json(), "length_alpha": config.length_alpha, "extra": config.extra}
        if not history:
            raise TrainingError(f"{directory}: history.json lists no epochs to go on from.")
        best_epoch = manifest.get("best_epoch")
        best = next((h for h in history if h.get("epoch") == best_epoch), None)
        if best is None:
            raise TrainingError(f"{directory}: history.json has no row for its kept epoch ({best_epoch}).")
        phase = history[-1]["phase"]
        changed = changed_settings(trained_with, config) - resumable_settings(phase)
        if changed:
            raise TrainingError(f"{directory}: was trained with other settings ({', '.join(sorted(changed))}); "
                                "extend it with the flags it was trained with.")
        if phase == "scst" and config.scst_select == "beam":  # the score the loop compares, as it measured it
            best_cider = best["val_cider_beam"] if best["phase"] == "scst" else manifest["xe_val_cider_beam"]
        else:
            best_cider = best["val_cider"]
        stale = sum(h["phase"] == phase and h["epoch"] > best_epoch for h in history)
        state = {"phase": phase, "epoch": history[-1]["epoch"],
                 "phase_epoch": sum(h["phase"] == phase for h in history),
                 "best_cider": best_cider, "best_epoch": best_epoch, "stale_epochs": stale,
                 "learning_rate": rate_after(history[-1]["learning_rate"], phase, stale, config),
                 "history": history,
                 "config": trained_with, "encoder_checksum": encoder_checksum, "finished": True,
                 "extended_from": {"directory": str(directory),
                                   "manifest_sha256": artifacts.sha256_file(directory / artifacts.MANIFEST)}}
        if "xe_val_cider_beam" in manifest:
            state["xe_val_cider_beam"] = manifest["xe_val_cider_beam"]
        if "scst_teacher" in manifest:
            state["teacher_manifest_sha256"] = manifest["scst_teacher"]["manifest_sha256"]
        if trained.config.exit_flow_from and trained.exit_flow is not None:
            state["shared_exit_flow_sha256"] = trained.exit_flow.sha256
        if tuned:
            state["finetune_from"] = manifest["exit_flow"]["tuned_from_epoch"]
        model = new_model(config, state["learning_rate"], averaging=averages_weights(config, phase),
                          tuned=tuned, imagenet_head=False)
        if tuned:
            model.caption_decoder.set_weights(trained.model.get_weights())
            model.exit_flow.load_weights(str(trained.exit_flow.weights))
        else:
            model.set_weights(trained.model.get_weights())
        self.save(model, state, is_best=True)  # the kept epoch is both the last and the best
        return state


def rate_after(last_rate: float, phase: str, stale: int, config: Config) -> float:
    """The learning rate a run holds after an epoch that ran at `last_rate` (what its history
    row records): cross-entropy halves it after every `lr_decay_patience` epochs in a row
    without a better val score, as the loop does, once the epoch is done."""
    if phase == "xe" and stale and stale % config.lr_decay_patience == 0:
        return last_rate / 2
    return last_rate


def resumable_settings(phase: str | None, tuning_began: bool = False) -> frozenset:
    """The settings a run may change when it resumes in `phase` (fine-tuning's, until it begins)."""
    from captioner.training.finetune import FINETUNE_SETTINGS
    return (SCHEDULE_SETTINGS | (SCST_SETTINGS if phase == "xe" else frozenset())
            | (frozenset() if tuning_began else FINETUNE_SETTINGS))


def tuned_file(state: dict, epoch: int) -> bool:
    """Whether the weights saved after `epoch` include a tuned exit flow."""
    return bool(state.get("finetune_from")) and epoch >= state["finetune_from"]


def changed_settings(saved: dict, config: Config) -> set[str]:
    """The settings in which `config` differs from `saved` (a setting added since `saved`
    was written counts as its default)."""
    defaults = Config().to_json()
    current = config.to_json()
    return {k for k in set(saved) | set(current) if saved.get(k, defaults.get(k)) != current.get(k)}


def seed_epoch(model, seed: int) -> None:
    """Seed every random draw an epoch makes inside Keras (dropout masks) from `seed` alone.

    The dropout layers' seed-generator states are variables that `save_weights` does not
    store, so without this a resumed run, or one started from a copied checkpoint, would
    draw other masks than an unbroken run of the same epochs."""
    import keras
    keras.utils.set_random_seed(seed)
    states = [v for v in model.non_trainable_variables if v.path.endswith("seed_generator_state")]
    for i, state in enumerate(states):
        state.assign([seed * 1000 + i, 0])


def new_model(config: Config, learning_rate: float, averaging: bool = False, tuned: bool = False,
              imagenet_head: bool = True):
    """A decoder with its optimiser built, so saved weights include (and restore) its moments
    and, with `averaging`, Keras's moving average of the weights (momentum `scst_ema`).
    `tuned`: the decoder with Xception's exit flow and its own optimiser (training/finetune.py),
    the exit flow at ImageNet weights (or random ones, to load over, without `imagenet_head`)."""
    import keras
    from captioner.training.finetune import add_encoder_optimizer, build_tuned_model, new_head
    model = build_tuned_model(config, new_head(config, imagenet_head)) if tuned else build_decoder(config)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate, clipnorm=5.0, use_ema=averaging,
                                                  ema_momentum=config.scst_ema))
    model.optimizer.build(model.caption_decoder.trainable_variables if tuned else model.trainable_variables)
    if tuned:
        add_encoder_optimizer(model, config)
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


def load_decoder_only(model, path: Path, config: Config, tuned_file: bool = False) -> None:
    """Load a checkpoint's weights into `model`, leaving its optimiser as it is. A file saved
    before fine-tuning began (not `tuned_file`) holds a decoder alone: loaded into a tuned
    model, the exit flow keeps the weights it has."""
    donor = new_model(config, config.learning_rate, tuned=tuned_file, imagenet_head=False)
    with warnings.catch_warnings():  # its optimiser may differ (a moving average); only layers are taken
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        donor.load_weights(str(path))
    if tuned_file and not is_tuned(model):
        raise TrainingError(f"{path}: holds a tuned exit flow, which this model has no place for.")
    target = model if tuned_file == is_tuned(model) else decoder_part(model)
    target.set_weights(donor.get_weights())


def to_tuned(model, config: Config, learning_rate: float):
    """A frozen-encoder decoder's weights in a tuned model with the ImageNet exit flow and
    fresh optimisers (the decoder's at `learning_rate`)."""
    tuned = new_model(config, learning_rate, tuned=True)
    tuned.caption_decoder.set_weights(decoder_part(model).get_weights())
    return tuned
