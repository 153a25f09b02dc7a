"""A running training's live progress, for people watching it (the app's Training page).

The training loop calls `report(...)` as it goes; at most every few seconds (and at every
phase change) the reporter rewrites `progress.json` in the checkpoint directory atomically,
so a reader never sees half a file. Finished epochs are in the checkpoint's state.json.
"""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from captioner.model_dirs.artifacts import write_json_atomic

PROGRESS_FILE = "progress.json"


def log(message: str) -> None:
    """A timestamped line on stdout, for the console and the training log."""
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", flush=True)


class ProgressReporter:
    def __init__(self, directory: Path, decoder: str, every_seconds: float = 3.0, model: str | None = None):
        """`model`: the name of the model directory the run writes (train.py --name), when it
        is not the decoder's own."""
        self.path = Path(directory) / PROGRESS_FILE
        self.every = every_seconds
        self.fields = {"decoder": decoder, "model": model or decoder, "pid": _pid(), "started": time.time()}
        self._last_write = 0.0

    def report(self, force: bool = False, **fields) -> None:
        phase_changed = "phase" in fields and fields["phase"] != self.fields.get("phase")
        self.fields.update(fields, updated=time.time())
        now = time.monotonic()
        if force or phase_changed or now - self._last_write >= self.every:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, self.fields)
            self._last_write = now

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _pid() -> int:
    import os
    return os.getpid()
