"""Give back the resident pages of a memory-mapped model file once nothing reads them.

LiteRT maps a .tflite file into memory and XNNPACK copies every weight out of it into its own
packed buffers when the interpreter is built. From then on the file's pages are not read, but
they stay resident and count in the process's memory a second time: 105 MB for the trunk and
two exit flows (measured with /proc/self/smaps, 2026-12-06). `release_file_pages` asks the
kernel to page them out (madvise MADV_PAGEOUT on the file's read-only mappings): they leave the
process's resident set, and should an operator XNNPACK did not take read a weight again, the
page is read back from the file. MADV_PAGEOUT, unlike MADV_DONTNEED, never discards data: were
a range to be unmapped and reused by another thread between reading /proc/self/maps and the
call, its pages would at worst be swapped out, not zeroed. So this is only ever a question of
memory, never of correctness.
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path

MADV_PAGEOUT = 21  # Linux 5.4+; older kernels answer EINVAL and nothing is released


@functools.cache
def _madvise():
    libc = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter is linked with
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def _mappings(path: Path) -> list[tuple[int, int]]:
    """(start, length) of each read-only mapping of `path` in this process."""
    target = os.fsencode(path.resolve())
    found = []
    with open("/proc/self/maps", "rb") as maps:   # file names need not be UTF-8
        for line in maps:
            fields = line.rstrip(b"\n").split(maxsplit=5)
            if len(fields) == 6 and fields[5] == target and b"w" not in fields[1]:
                start, end = (int(x, 16) for x in fields[0].split(b"-"))
                found.append((start, end - start))
    return found


def release_file_pages(path: str | os.PathLike) -> int:
    """Page out this process's resident pages of `path`'s read-only mappings; the bytes asked
    for. Off Linux, without /proc or on a kernel older than 5.4 it releases nothing: the memory
    stays held, nothing else changes."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        madvise = _madvise()
        mappings = _mappings(Path(path))
    except (OSError, AttributeError, ValueError):
        return 0
    released = 0
    for start, length in mappings:
        if madvise(start, length, MADV_PAGEOUT) == 0:
            released += length
    return released
