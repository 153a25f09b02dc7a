"""Releasing a mapped model file's resident pages (vision/mapped_files.py): memory only, never content."""
from __future__ import annotations

import mmap
import os
import sys

import numpy as np
import pytest

from captioner.vision.mapped_files import release_file_pages

def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    return tuple(int(x) for x in release[:2] if x.isdigit()) >= (major, minor)


# MADV_PAGEOUT came with Linux 5.4; before it the function releases nothing (by design)
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not _kernel_at_least(5, 4),
                                reason="reads /proc/self/smaps; needs MADV_PAGEOUT (Linux 5.4+)")


def resident_kb(path) -> int:
    total, current = 0, None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields[0].split("-")) == 2 and ":" not in fields[0]:
                current = fields[5] if len(fields) > 5 else None
            elif fields[0] == "Rss:" and current == str(path):
                total += int(fields[1])
    return total


def test_released_pages_leave_the_resident_set_and_read_back_unchanged(tmp_path):
    path = (tmp_path / "weights.bin").resolve()
    data = np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8)
    path.write_bytes(data.tobytes())
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        view = np.frombuffer(mapped, dtype=np.uint8)
        assert int(view.sum(dtype=np.int64)) == int(data.sum(dtype=np.int64))   # every page read in
        assert resident_kb(path) >= 7 << 10
        assert release_file_pages(path) == 8 << 20
        assert resident_kb(path) < 1 << 10
        assert np.array_equal(view, data)   # read back from the file
        del view


def test_a_written_private_copy_is_left_alone(tmp_path):
    path = (tmp_path / "copy.bin").resolve()
    path.write_bytes(b"\0" * (1 << 20))
    with open(path, "r+b") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
        mapped[:5] = b"moved"   # a private page that differs from the file
        assert release_file_pages(path) == 0
        assert mapped[:5] == b"moved"


def test_a_file_not_mapped_releases_nothing(tmp_path):
    path = tmp_path / "other.bin"
    path.write_bytes(b"x" * 4096)
    assert release_file_pages(path) == 0
