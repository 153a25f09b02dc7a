"""Batch feature extraction with a resumable on-disk cache (outside the repository).

Each photo's 2048-d vector is stored as `<cache>/features/<encoder>/<sha1[:2]>/<sha1>.npy`,
keyed by the sha1 of the file's bytes and the encoder's weights checksum, so a changed photo
or encoder never reuses a stale vector, and a killed extraction resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .encoder import FEATURE_DIM, cache_dir
from .images import ImageError, load_image, prepare_for_encoder

# Bump when images.prepare_for_encoder changes, so old vectors are not reused.
PREPROCESS_VERSION = "v1"


class FeatureCache:
    def __init__(self, encoder_checksum: str, root: Path | None = None):
        self.dir = (root or cache_dir() / "features") / f"xception-{encoder_checksum[:16]}-{PREPROCESS_VERSION}"

    def path_for(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        path = self.path_for(digest)
        if not path.is_file():
            return None
        try:
            vector = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed rather than trusted
        return vector if vector.shape == (FEATURE_DIM,) else None

    def put(self, digest: str, vector: np.ndarray) -> None:
        path = self.path_for(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
        np.save(partial, np.asarray(vector, dtype=np.float32), allow_pickle=False)
        os.replace(partial, path)


def file_digest(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def extract_features(paths: list[Path], encoder, cache: FeatureCache | None = None,
                     batch_size: int = 32, progress: bool = True,
                     desc: str = "Extracting features") -> np.ndarray:
    """Return an (n, 2048) float32 array for `paths`, computing only what is not cached."""
    from tqdm import tqdm

    cache = cache or FeatureCache(encoder.checksum)
    paths = [Path(p) for p in paths]
    digests = [file_digest(p) for p in paths]
    out = np.zeros((len(paths), FEATURE_DIM), dtype=np.float32)
    todo = []
    for i, digest in enumerate(digests):
        vector = cache.get(digest)
        if vector is None:
            todo.append(i)
        else:
            out[i] = vector
    if not todo:
        return out
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]

    def prepare(batch):
        return np.stack([prepare_for_encoder(load_image(paths[i])) for i in batch])

    bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    start = time.perf_counter()
    # Decode the next batch in a thread while Xception runs on the current one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, batches[0])
        for b, batch in enumerate(batches):
            try:
                arrays = pending.result()
            except ImageError as exc:
                raise ImageError(f"Feature extraction stopped: {exc}") from None
            if b + 1 < len(batches):
                pending = pool.submit(prepare, batches[b + 1])
            vectors = encoder.encode(arrays)
            for i, vector in zip(batch, vectors):
                out[i] = vector
                cache.put(digests[i], vector)
            bar.update(len(batch))
    bar.close()
    if progress:
        rate = len(todo) / max(time.perf_counter() - start, 1e-9)
        print(f"{desc}: {len(todo)} new, {len(paths) - len(todo)} cached, "
              f"{rate:.1f} images/s", file=sys.stderr)
    return out
