"""File checksums, shared by every layer that checks a file against a recorded sha256."""
from __future__ import annotations

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
