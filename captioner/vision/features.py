"""Batch feature extraction with a resumable on-disk cache (outside the repository).

One Xception pass per photo gives its 10x10x2048 map; the cache keeps that map as float16
(400 KB a photo, 3.3 GB for Flickr8k) at `<cache>/features/<encoder>/<sha1[:2]>/<sha1>.npy`,
keyed by the sha1 of the file's bytes and the encoder's weights checksum, so a changed photo
or encoder never reuses a stale map, and a killed extraction resumes where it stopped. The
2048-d vector the merge decoder reads is the mean of that same float16 map (`pool`), as at
inference, so both decoders and the app see identical features.
"""
from __future__ import annotations

import hashlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from captioner.vision.encoder import FEATURE_MAP_SHAPE, cache_dir, pool
from captioner.data.files import replaced_when_written
from captioner.data.images import ImageError, load_image, prepare_for_encoder

if TYPE_CHECKING:
    pass

# Bump when images.prepare_for_encoder or the stored form changes, so old entries are not reused.
PREPROCESS_VERSION = "v2-map16"


class FeatureCache:
    """`shape`: what one photo's entry holds (Xception's map; the exit flow's input for
    fine-tuning, whose cache `part` names, e.g. "add_10")."""

    def __init__(self, encoder_checksum: str, root: Path | None = None,
                 shape: tuple = FEATURE_MAP_SHAPE, part: str = ""):
        name = f"xception-{part + '-' if part else ''}{encoder_checksum[:16]}-{PREPROCESS_VERSION}"
        self.dir = (root or cache_dir() / "features") / name
        self.shape = tuple(shape)

    def path_for(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npy"

    def get(self, digest: str) -> np.ndarray | None:
        """The cached float16 (10, 10, 2048) map, or None."""
        path = self.path_for(digest)
        if not path.is_file():
            return None
        try:
            feature_map = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None  # a damaged entry is recomputed rather than trusted
        ok = feature_map.shape == self.shape and feature_map.dtype == np.float16
        return feature_map if ok else None

    def put(self, digest: str, feature_map: np.ndarray) -> None:
        path = self.path_for(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_when_written(path, path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")) as partial:
            np.save(partial, np.asarray(feature_map, dtype=np.float16), allow_pickle=False)


def file_digest(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def extract_feature_maps(paths: list[Path], encoder, cache: FeatureCache | None = None,
                         batch_size: int = 32, progress: bool = True, pooled: bool = False,
                         desc: str = "Extracting features", on_progress=None,
                         collect: bool = True, mirrored: bool = False) -> np.ndarray | None:
    """Xception features of `paths`, computing only what is not cached.

    Returns float16 maps (n, 10, 10, 2048), or with `pooled` their float32 means (n, 2048),
    pooled one photo at a time so the maps of a whole split need not fit in memory.
    `on_progress(done, total)` is called after each batch the encoder runs. Without `collect`
    the maps only go to the cache (for caches larger than memory) and None is returned.
    With `mirrored` each photo is mirrored left to right before it is encoded (training's
    augmentation; `cache` must be one of mirrored photos: the file digests do not say so).
    """
    from tqdm import tqdm

    if mirrored and cache is None:   # the default cache holds the photos as they are
        raise ValueError("mirrored photos need a cache of their own (finetune.trunk_cache)")
    cache = cache or FeatureCache(encoder.checksum)
    paths = [Path(p) for p in paths]
    digests = [file_digest(p) for p in paths]
    if not collect:
        out = None
    elif pooled:
        out = np.zeros((len(paths), cache.shape[-1]), dtype=np.float32)
    else:
        out = np.zeros((len(paths), *cache.shape), dtype=np.float16)

    def store(i: int, feature_map: np.ndarray) -> None:
        if out is not None:
            out[i] = pool(feature_map[None])[0] if pooled else feature_map

    todo = []
    for i, digest in enumerate(digests):
        if not collect and cache.path_for(digest).is_file():
            continue  # cached: not even read
        feature_map = cache.get(digest)
        if feature_map is None:
            todo.append(i)
        else:
            store(i, feature_map)
    if not todo:
        return out
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]

    def prepare(batch):
        arrays = np.stack([prepare_for_encoder(load_image(paths[i])) for i in batch])
        return np.ascontiguousarray(arrays[:, :, ::-1]) if mirrored else arrays

    bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
    start = time.perf_counter()
    # Decode the next batch in a thread while Xception runs on the current one.
    with ThreadPoolExecutor(max_workers=1) as workers:
        pending = workers.submit(prepare, batches[0])
        for b, batch in enumerate(batches):
            try:
                arrays = pending.result()
            except ImageError as exc:
                raise ImageError(f"Feature extraction stopped: {exc}") from None
            if b + 1 < len(batches):
                pending = workers.submit(prepare, batches[b + 1])
            maps = encoder.feature_maps(arrays)
            for i, feature_map in zip(batch, maps):
                cache.put(digests[i], feature_map)
                store(i, feature_map)
            bar.update(len(batch))
            if on_progress:
                on_progress(bar.n, len(todo))
    bar.close()
    if progress:
        rate = len(todo) / max(time.perf_counter() - start, 1e-9)
        print(f"{desc}: {len(todo)} new, {len(paths) - len(todo)} cached, "
              f"{rate:.1f} images/s", file=sys.stderr)
    return out


def extract_features(paths: list[Path], encoder, cache: FeatureCache | None = None,
                     batch_size: int = 32, progress: bool = True,
                     desc: str = "Extracting features") -> np.ndarray:
    """(n, 2048) float32 vectors: the means of the cached maps."""
    return extract_feature_maps(paths, encoder, cache, batch_size, progress, pooled=True, desc=desc)
