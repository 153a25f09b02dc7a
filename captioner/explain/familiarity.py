"""Is a photo like the ones the model learned from? Cosine similarity to training centroids.

The decoders only ever saw Flickr8k photos (people, dogs, outdoor scenes); given a cat
close-up, a blank page or noise they still write a confident caption. To warn about that,
the training photos' pooled Xception vectors are clustered (k-means on unit vectors), and a
photo's similarity is the cosine to its nearest centroid. The threshold is a low percentile
of the same similarity over the validation split: "98% of held-out Flickr8k photos are at
least this similar". Centroids summarise the training set (model parameters, like the
decoder's weights), so they ship in trained/; no photo's own features do.

Stored as trained/training_photos.h5 (h5py, no pickle), beside the model directories,
since it depends on the encoder and the training split, not on a decoder.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captioner.data.files import replaced_when_written

FILE = "training_photos.h5"
DEFAULT_CLUSTERS = 128
DEFAULT_PERCENTILE = 2.0


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)


def pooled(features: np.ndarray) -> np.ndarray:
    """(n, 2048) vectors from maps (10, 10, 2048), (n, 10, 10, 2048) or vectors (n, 2048)."""
    features = np.asarray(features, dtype=np.float32)
    if features.ndim == 3:
        features = features[None]
    if features.ndim == 4:
        features = features.reshape(len(features), -1, features.shape[-1]).mean(axis=1)
    return features.reshape(-1, features.shape[-1])


@dataclass
class Familiarity:
    centroids: np.ndarray          # (k, 2048) float32, unit length
    threshold: float               # below this, a photo is unlike the training photos
    percentile: float              # of the validation similarities the threshold is
    encoder_checksum: str
    stats: dict = field(default_factory=dict)

    def similarity(self, features: np.ndarray) -> np.ndarray:
        """Cosine similarity of each photo to its nearest centroid, shape (n,)."""
        return (unit_rows(pooled(features)) @ self.centroids.T).max(axis=1)

    def is_unfamiliar(self, similarity: float) -> bool:
        return float(similarity) < self.threshold

    def save(self, path: str | os.PathLike) -> Path:
        import h5py
        path = Path(path)
        with replaced_when_written(path, path.with_name(f".{path.name}.{os.getpid()}.partial")) as partial:
            with h5py.File(partial, "w") as out:
                # float16 halves the file (1 MB at 256 centroids); cosines move by < 1e-3.
                out.create_dataset("centroids", data=self.centroids.astype(np.float16))
                out.attrs["threshold"] = self.threshold
                out.attrs["percentile"] = self.percentile
                out.attrs["encoder_checksum"] = self.encoder_checksum
                out.attrs["stats"] = json.dumps(self.stats)
            os.chmod(partial, 0o644)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Familiarity":
        import h5py
        with h5py.File(path, "r") as data:
            return cls(unit_rows(data["centroids"][()]), float(data.attrs["threshold"]),
                       float(data.attrs["percentile"]), str(data.attrs["encoder_checksum"]),
                       json.loads(str(data.attrs["stats"])))


def build(train_vectors: np.ndarray, val_vectors: np.ndarray, encoder_checksum: str,
          clusters: int = DEFAULT_CLUSTERS, percentile: float = DEFAULT_PERCENTILE,
          seed: int = 0) -> Familiarity:
    """k-means centroids of the training vectors, and the threshold from the validation split."""
    from scipy.cluster.vq import kmeans2
    train = unit_rows(train_vectors)
    clusters = min(clusters, len(train))
    # Euclidean k-means on unit vectors groups by cosine; centroids are re-normalised after.
    centroids, _ = kmeans2(train, clusters, iter=20, minit="++", seed=np.random.default_rng(seed))
    centroids = unit_rows(centroids[np.linalg.norm(centroids, axis=1) > 0])
    familiarity = Familiarity(centroids, 0.0, float(percentile), encoder_checksum)
    val = familiarity.similarity(val_vectors)
    familiarity.threshold = float(np.percentile(val, percentile))
    familiarity.stats = {
        "train_photos": int(len(train)), "val_photos": int(len(val)), "clusters": int(len(centroids)),
        "val_similarity": {q: round(float(np.percentile(val, p)), 4)
                           for q, p in (("min", 0), ("p1", 1), ("p5", 5), ("median", 50), ("max", 100))},
    }
    return familiarity


def find(model_root: str | os.PathLike) -> Path | None:
    """trained/training_photos.h5 for a trained/ root or for one model directory inside it."""
    root = Path(model_root)
    for candidate in (root / FILE, root.parent / FILE):
        if candidate.is_file():
            return candidate
    return None
