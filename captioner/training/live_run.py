"""Read a training run in progress from its checkpoint directory, for people watching it.

A run keeps `state.json` (the finished epochs, written at the end of each) and
`progress.json` (where it is now, rewritten every few seconds by captioner.training.progress) in its
checkpoint directory, `.<out>.checkpoint-<name>/` beside `--out`. Both are written
atomically, so reading them while training runs is safe. From them `read_run` works out
the time an epoch takes and the time left in the current phase.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from captioner.model_dirs.artifacts import MANIFEST, ArtifactError, read_json
from captioner.training.progress import PROGRESS_FILE

STATE_FILE = "state.json"
PHASE_NAMES = {"features": "extracting features", "xe": "cross-entropy",
               "scst": "self-critical", "evaluation": "test evaluation", "done": "done"}


@dataclass
class LiveRun:
    directory: Path
    decoder: str
    model: str                        # the model directory it writes (its decoder's name unless --name)
    running: bool                     # its process is alive (on this machine)
    phase: str                        # features, xe, scst, evaluation
    epoch: int | None                 # the epoch under way (1-based, counted over both phases)
    phase_epoch: int | None           # ... counted within its phase
    max_phase_epochs: int | None
    step: str | None                  # training, validation (within an epoch)
    done: int = 0
    total: int = 0
    unit: str = ""
    loss: float | None = None
    mean_reward: float | None = None
    history: list = field(default_factory=list)   # finished epochs, as history.json rows
    best_epoch: int | None = None
    best_cider: float | None = None
    updated_seconds_ago: float | None = None
    epoch_elapsed: float | None = None            # seconds since the current epoch started
    epoch_seconds: float | None = None            # the time an epoch of this phase takes
    epoch_seconds_measured: bool = False          # from finished epochs, not extrapolated
    epoch_left: float | None = None               # seconds until the current epoch ends
    epochs_after: tuple[int, int] | None = None   # further epochs in this phase: (if no
    phase_left: tuple[float, float] | None = None  # improvement, at most) and their seconds

    @property
    def phase_name(self) -> str:
        return PHASE_NAMES.get(self.phase, self.phase)


def checkpoint_dirs(model_root: str | os.PathLike) -> list[Path]:
    """Checkpoint directories of runs writing to `model_root` (trained/), or to the
    models directory that holds `model_root` when it is one model (trained/merge)."""
    root = Path(model_root).resolve()
    outs = [root.parent] if (root / MANIFEST).is_file() else []
    outs.append(root)
    found = []
    for out in outs:
        for path in sorted(out.parent.glob(f".{out.name}.checkpoint*")):
            if (path / STATE_FILE).is_file() or (path / PROGRESS_FILE).is_file():
                found.append(path)
    return found


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's process, but alive
        return True
    return True


def _optional_json(path: Path) -> dict:
    """A file that may be missing (a run in its first epoch has no state.json yet)."""
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except ArtifactError:
        if not path.exists():  # removed while being read: the run ended (progress.json) just now
            return {}
        raise
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object.")
    return data


def read_run(directory: str | os.PathLike, now: float | None = None) -> LiveRun | None:
    """The run checkpointed in `directory`, or None if there is none there."""
    directory = Path(directory)
    now = time.time() if now is None else now
    state = _optional_json(directory / STATE_FILE)
    progress = _optional_json(directory / PROGRESS_FILE)
    if not state and not progress:
        return None
    if state.get("finished") and not progress:
        return None  # a finished run whose checkpoint was kept (--keep-checkpoint): nothing live
    config = state.get("config") or {}
    history = list(state.get("history") or [])
    phase = progress.get("phase") or state.get("phase") or "xe"
    decoder = progress.get("decoder") or config.get("decoder") or "?"
    run = LiveRun(
        directory=directory, decoder=decoder, model=progress.get("model") or decoder,
        running=_alive(progress.get("pid")), phase=phase,
        epoch=progress.get("epoch", state.get("epoch")), phase_epoch=progress.get("phase_epoch"),
        max_phase_epochs=progress.get("max_phase_epochs"), step=progress.get("step"),
        done=int(progress.get("done") or 0), total=int(progress.get("total") or 0),
        unit=progress.get("unit") or "", loss=progress.get("loss"),
        mean_reward=progress.get("mean_reward") if phase == "scst" else None, history=history,
        best_epoch=state.get("best_epoch") or None,
        best_cider=state.get("best_cider") if (state.get("best_cider") or -1) >= 0 else None,
        updated_seconds_ago=now - progress["updated"] if "updated" in progress else None)
    if phase in ("xe", "scst") and "epoch_started" in progress:
        _estimate(run, now - progress["epoch_started"], state, config)
    return run


def _estimate(run: LiveRun, elapsed: float, state: dict, config: dict) -> None:
    """Time per epoch: the median of this phase's finished epochs; before the first one
    ends, this epoch's elapsed time divided by the share of its batches done (which leaves
    out the validation pass, so it is an underestimate until an epoch has finished)."""
    run.epoch_elapsed = max(elapsed, 0.0)
    finished = [row["seconds"] for row in run.history
                if row.get("phase", "xe") == run.phase and "seconds" in row]
    if finished:
        run.epoch_seconds, run.epoch_seconds_measured = statistics.median(finished[-5:]), True
    elif run.step == "training" and run.total and run.done:
        run.epoch_seconds = run.epoch_elapsed * run.total / run.done
    if run.epoch_seconds is None:
        return
    run.epoch_left = max(run.epoch_seconds - run.epoch_elapsed, 0.0)
    if run.max_phase_epochs is None or run.phase_epoch is None:
        return
    at_most = max(run.max_phase_epochs - run.phase_epoch, 0)
    # The phase stops after `patience` epochs without a better validation CIDEr.
    patience = config.get("patience" if run.phase == "xe" else "scst_patience")
    stale = state.get("stale_epochs", 0) if state.get("phase") == run.phase else 0
    if_flat = at_most if patience is None else min(at_most, max(patience - stale - 1, 0))
    run.epochs_after = (if_flat, at_most)
    run.phase_left = (run.epoch_left + if_flat * run.epoch_seconds,
                      run.epoch_left + at_most * run.epoch_seconds)


def live_runs(model_root: str | os.PathLike, now: float | None = None) -> list[LiveRun]:
    """Every run with a checkpoint beside `model_root`, running ones first."""
    runs = [run for run in (read_run(d, now) for d in checkpoint_dirs(model_root)) if run]
    return sorted(runs, key=lambda run: (not run.running, run.directory.name))


def format_seconds(seconds: float | None) -> str:
    """"1 h 05 min", "12 min", "40 s"; "?" when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
