"""An append-only JSON-lines file that a SIGKILL can interrupt at any point.

Each record is one line, keyed by its "path". Lines are appended with `os.write` on an
O_APPEND descriptor (no user-space buffer that a kill could lose) and fsynced after every
batch. Linux can still cut a large write short when a fatal signal arrives, so the last line
may be torn: `open_for_resume` reads what is there, truncates a torn last line back to the
previous newline, and reports the paths already done. A torn line is the last, has no
trailing newline and begins as our records do; anything else that is not a record (a whole
line of something else, wherever it is) means this is not our file, and we refuse to touch
it rather than guess: `--out notes.json` by mistake must not empty notes.json.

An exclusive flock stops two runs from appending to the same file (they would duplicate work
and lines); the kernel drops it when the process dies, so a killed run never leaves it behind.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any, Callable


class OutputFileError(ValueError):
    """The output file cannot be resumed; the message names it and says why."""


# How every record's line begins: json.dumps keeps key order, and "path" is the first key.
RECORD_START = b'{"path": '


def _is_record(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("path"), str)


def _torn(raw: bytes) -> bool:
    """Whether a line that is not a record is one a killed append cut short."""
    return not raw.endswith(b"\n") and (raw.startswith(RECORD_START) or RECORD_START.startswith(raw))


def scan(path: Path, keep: Callable[[dict], Any]) -> tuple[dict[str, Any], int]:
    """`keep(record)` for each record of an existing file, by path (first one wins), and the
    byte length of its intact part: everything up to the last newline that ends a record."""
    records: dict[str, Any] = {}
    intact = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, 1):
            try:
                record = json.loads(raw) if raw.endswith(b"\n") else None
            except ValueError:
                record = None
            if not _is_record(record):
                if not _torn(raw):  # (a line without a newline is the last)
                    raise OutputFileError(
                        f"{path}: line {number} is not a caption record, so this is not an "
                        "output of caption-dir (or it was edited); use another --out.")
                break  # torn last line: redone by this run
            if record["path"] not in records:
                records[record["path"]] = keep(record)
            intact += len(raw)
    return records, intact


class ResumableJsonl:
    """`with ResumableJsonl(path, keep) as out:` then `out.done` ({path: keep(record)} for the
    records written so far) and `out.append(records)`. `keep` picks what the caller needs of
    each record, so memory grows by a path and a small value per line, not a whole record."""

    def __init__(self, path: str | os.PathLike, keep: Callable[[dict], Any] = lambda record: True):
        self.path = Path(path)
        self.keep = keep
        self.done: dict[str, Any] = {}
        self.repaired_bytes = 0
        self._fd: int | None = None

    def __enter__(self) -> "ResumableJsonl":
        if self.path.is_dir():
            raise OutputFileError(f"{self.path}: is a directory; --out takes a .jsonl file "
                                  "(a directory is for --engine ray).")
        if not self.path.parent.is_dir():
            raise OutputFileError(f"{self.path}: folder {self.path.parent} does not exist.")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputFileError(f"{self.path}: another caption-dir is writing it.") from None
        try:
            self.done, intact = scan(self.path, self.keep)
            size = os.fstat(fd).st_size
            if intact < size:
                os.ftruncate(fd, intact)
                os.fsync(fd)
                self.repaired_bytes = size - intact
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def drop(self, paths: set[str]) -> None:
        """Rewrite the file without the records of `paths` (to retry them), atomically: a kill
        leaves either the old file or the new one."""
        if not paths & self.done.keys():
            return
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        fd = None
        try:
            with open(self.path, "rb") as source, open(partial, "wb") as target:
                for raw in source:
                    if json.loads(raw)["path"] not in paths:
                        target.write(raw)
                target.flush()
                os.fsync(target.fileno())
            # Lock the new file before it takes the old one's name, so no other run slips in.
            fd = os.open(partial, os.O_RDWR | os.O_APPEND)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.replace(partial, self.path)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            partial.unlink(missing_ok=True)
            raise OutputFileError(f"{self.path}: cannot rewrite it ({exc.strerror}).") from None
        os.close(self._fd)
        self._fd = fd
        self.done = {p: r for p, r in self.done.items() if p not in paths}

    def append(self, records: list[dict]) -> None:
        """Write `records` as lines, in one write where the kernel allows, then fsync."""
        # ASCII escapes keep any file name writable, even one that is not valid UTF-8.
        data = "".join(json.dumps(r) + "\n" for r in records).encode("ascii")
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:  # a full disk: the file is named, and a rerun repairs a torn line
            raise OutputFileError(f"{self.path}: cannot write ({exc.strerror}).") from None
        for record in records:
            if record["path"] not in self.done:
                self.done[record["path"]] = self.keep(record)

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
