"""File checksums, shared by every layer that checks a file against a recorded sha256, and
writing a file so that it appears whole or not at all."""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MB blocks (encoder files are 83 MB)."""
    digest = hashlib.sha256()
    with open(Path(path), "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def replaced_when_written(target: Path, partial: Path):
    """`with replaced_when_written(target, partial):` write `partial`; once the block is done it
    takes `target`'s name in one rename, and if the block fails (a full disk) it is removed,
    so neither a half-written `target` nor a stray temporary file is left."""
    try:
        yield partial
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
