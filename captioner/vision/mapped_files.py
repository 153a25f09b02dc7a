"""Give back the resident pages of a memory-mapped model file once nothing reads them.

LiteRT maps a .tflite file into memory and XNNPACK copies every weight out of it into its own
packed buffers when it prepares the graph. From then on the file's pages are not read, but
they stay resident and count in the process's memory a second time: 105 MB for the trunk and
two exit flows (measured with /proc/self/smaps, 2026-12-06). `release_file_pages` tells the
kernel so (madvise MADV_DONTNEED on the file's read-only mappings): the pages leave the
process's resident set and stay in the page cache, where the kernel may drop them. Should an
operator XNNPACK did not take read a weight again, the page is read back from the file, so
this is only ever a question of memory, never of correctness.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

MADV_DONTNEED = 4


def _mappings(path: Path) -> list[tuple[int, int]]:
    """(start, length) of each read-only mapping of `path` in this process."""
    target = str(path.resolve())
    found = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() == target and "w" not in fields[1]:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.append((start, end - start))
    return found


def release_file_pages(path: str | os.PathLike) -> int:
    """Drop this process's resident pages of `path`'s read-only mappings; the bytes released.
    Off Linux, or without /proc, it releases nothing: the memory stays held, nothing else changes."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        mappings = _mappings(Path(path))
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return 0
    released = 0
    for start, length in mappings:
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_DONTNEED) == 0:
            released += length
    return released
