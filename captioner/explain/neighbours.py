"""The Flickr8k training photos nearest to a photo, by cosine similarity of pooled Xception vectors.

This index holds one vector per training photo, which is Flickr8k-derived data, so it lives
in the cache (~/.cache/captioner/dataset-index/, or $CAPTIONER_CACHE_DIR), never in the
repository; `python -m captioner index-dataset` builds it. 6,000 vectors are 24 MB on disk
(float16) and 49 MB in memory (float32: NumPy has no fast float16 product, 70 ms a lookup
against 6 here); a lookup is one matrix-vector product. `shared` loads a file once per process
for the app's nearest photos and the trust estimate's consensus alike.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioner.data.files import replaced_when_written
from captioner.vision.encoder import cache_dir
from captioner.vision.features import PREPROCESS_VERSION
from captioner.explain.familiarity import pooled, unit_rows


def index_path(encoder_checksum: str, root: Path | None = None) -> Path:
    """Where the index of maps from these weights, preprocessed as today, is kept: a change to
    either (PREPROCESS_VERSION) makes a new one, as it does the feature cache."""
    return (root or cache_dir() / "dataset-index") / f"xception-{encoder_checksum[:16]}-{PREPROCESS_VERSION}" / "train.h5"


LOAD_ROWS = 500
_SHARED: dict = {}     # (path, mtime) -> NeighbourIndex
_SHARING = threading.Lock()


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)  # shared between the app's sessions and the trust estimate
    return array


@dataclass
class NeighbourIndex:
    names: list[str]           # Flickr8k file names, as in the dataset's split files
    vectors: np.ndarray        # (n, 2048) unit vectors, float32 once loaded

    @classmethod
    def shared(cls, path: Path) -> "NeighbourIndex":
        """The index at `path`, loaded once per process (again if the file is rebuilt)."""
        key = (str(path), Path(path).stat().st_mtime_ns)
        with _SHARING:
            if key not in _SHARED:
                _SHARED.clear()
                _SHARED[key] = cls.load(Path(path))
            return _SHARED[key]

    def nearest(self, features: np.ndarray, count: int = 4) -> list[tuple[str, float]]:
        """(name, cosine similarity) of the `count` most similar training photos, best first."""
        best, sims = self.nearest_rows(features, count)
        return [(self.names[i], float(s)) for i, s in zip(best[0], sims[0])]

    def nearest_rows(self, features: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """For each photo of `features` (maps, vectors or one of either), the rows of its `count`
        most similar training photos, best first, and their cosine similarities."""
        queries = unit_rows(pooled(features)).reshape(-1, self.vectors.shape[1])
        sims = queries.astype(self.vectors.dtype) @ self.vectors.T   # float32 once loaded
        count = min(count, sims.shape[1])
        best = np.argpartition(-sims, count - 1, axis=1)[:, :count]
        order = np.argsort(-np.take_along_axis(sims, best, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(best, order, axis=1)
        return best, np.take_along_axis(sims, best, axis=1)

    def save(self, path: Path) -> Path:
        import h5py
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_when_written(path, path.with_name(f".{path.name}.{os.getpid()}.partial")) as partial:
            with h5py.File(partial, "w") as out:
                out.create_dataset("vectors", data=self.vectors.astype(np.float16))
                out.create_dataset("names", data=np.array(self.names, dtype=object),
                                   dtype=h5py.string_dtype())
        return path

    @classmethod
    def load(cls, path: Path) -> "NeighbourIndex":
        import h5py
        with h5py.File(path, "r") as data:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in data["names"][()]]
            stored = data["vectors"]
            # row blocks straight into float32: the whole float16 copy would add 24 MB to a
            # server's peak memory for the moment it loads
            vectors = np.empty(stored.shape, np.float32)
            for start in range(0, len(vectors), LOAD_ROWS):
                vectors[start:start + LOAD_ROWS] = stored[start:start + LOAD_ROWS]
            return cls(names, _read_only(vectors))

    @classmethod
    def from_vectors(cls, names: list[str], vectors: np.ndarray) -> "NeighbourIndex":
        return cls(list(names), _read_only(unit_rows(vectors).astype(np.float32)))  # saved as float16
