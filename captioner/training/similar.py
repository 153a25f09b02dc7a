"""Each photo's most similar other photos in one split, by cosine similarity of pooled Xception
vectors: the negatives of the contrastive self-critical reward (see self_critical.scst_epoch)."""
from __future__ import annotations

import numpy as np

from captioner.vision.encoder import pool
from captioner.explain.familiarity import unit_rows


def similar_photos(features: np.ndarray, count: int, chunk: int = 512) -> np.ndarray:
    """(n, count) row indices of each photo's `count` nearest other photos, nearest first.

    `features` are what a decoder reads (pooled vectors, or 100 regions per photo); they are
    pooled a chunk at a time, since 6,000 photos of regions are 4.9 GB as float32."""
    if not 0 < count < len(features):
        raise ValueError(f"need between 1 and {len(features) - 1} similar photos, got {count}.")
    vectors = unit_rows(np.concatenate([pool(features[i:i + chunk])
                                        for i in range(0, len(features), chunk)]))
    nearest = np.empty((len(vectors), count), dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        sims = vectors[start:start + chunk] @ vectors.T
        rows = np.arange(start, start + len(sims))
        sims[rows - start, rows] = -np.inf  # never itself
        best = np.argpartition(-sims, count - 1, axis=1)[:, :count]
        order = np.argsort(-np.take_along_axis(sims, best, axis=1), axis=1, kind="stable")
        nearest[rows] = np.take_along_axis(best, order, axis=1)
    return nearest
