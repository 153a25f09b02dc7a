"""`python -m captioner index-dataset`: what the app needs to say how familiar a photo looks.

Reads (or computes, on a cold cache) the pooled Xception vector of every Flickr8k photo,
then writes
  * trained/training_photos.h5: k-means centroids of the training split and the threshold
    chosen on the validation split (familiarity.py; committed, a model parameter);
  * the nearest-photo index of the training split, in the cache outside the repository
    (neighbours.py).
The test split is only measured (how many of its photos pass), never used to choose anything.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioner.explain import familiarity as fam
from captioner.data.dataset import load_flickr8k
from captioner.vision.features import extract_feature_maps
from captioner.explain.neighbours import NeighbourIndex, index_path

CHUNK = 250  # photos per cache read between progress updates


@dataclass
class IndexSummary:
    familiarity_file: Path
    neighbour_file: Path
    familiarity: fam.Familiarity
    seconds: float


def split_vectors(paths: list[Path], encoder, bar) -> np.ndarray:
    """Pooled vectors of `paths` through the feature cache, chunk by chunk for the progress bar."""
    out = []
    for start in range(0, len(paths), CHUNK):
        chunk = paths[start:start + CHUNK]
        out.append(extract_feature_maps(chunk, encoder, pooled=True, progress=False))
        bar.update(len(chunk))
    return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)


def neighbour_index(dataset, encoder, progress: bool = True, cache_root: Path | None = None) -> NeighbourIndex:
    """The nearest-photo index of the training split, from the cache when it holds exactly
    those photos, else built from the feature cache and saved there (the trust estimate's
    consensus reads it; `index_dataset` below rebuilds it with the centroids)."""
    names = dataset.images("train")
    path = index_path(encoder.checksum, cache_root)
    if path.is_file():
        found = NeighbourIndex.load(path)
        if found.names == list(names):
            return found
    from tqdm import tqdm
    with tqdm(total=len(names), desc="Reading training photo features", unit="img", disable=not progress,
              file=sys.stderr, dynamic_ncols=True) as bar:
        index = NeighbourIndex.from_vectors(names, split_vectors([dataset.image_path(n) for n in names], encoder, bar))
    index.save(path)
    return index


def index_dataset(data_dir, out_dir, encoder, clusters: int = fam.DEFAULT_CLUSTERS,
                  percentile: float = fam.DEFAULT_PERCENTILE, progress: bool = True,
                  cache_root: Path | None = None) -> IndexSummary:
    from tqdm import tqdm
    started = time.perf_counter()
    dataset = load_flickr8k(data_dir)
    splits = {s: dataset.images(s) for s in ("train", "val", "test")}
    with tqdm(total=sum(map(len, splits.values())), desc="Reading photo features", unit="img",
              disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        vectors = {s: split_vectors([dataset.image_path(n) for n in names], encoder, bar)
                   for s, names in splits.items()}
    if progress:
        print(f"k-means: {clusters} centroids of {len(vectors['train'])} training photos…",
              file=sys.stderr)
    familiarity = fam.build(vectors["train"], vectors["val"], encoder.checksum, clusters, percentile)
    if len(vectors["test"]):
        passed = familiarity.similarity(vectors["test"]) >= familiarity.threshold
        familiarity.stats["test_photos_passing"] = round(float(passed.mean()), 4)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    familiarity_file = familiarity.save(out_dir / fam.FILE)
    neighbour_file = NeighbourIndex.from_vectors(splits["train"], vectors["train"]).save(
        index_path(encoder.checksum, cache_root))
    return IndexSummary(familiarity_file, neighbour_file, familiarity, time.perf_counter() - started)


def describe(summary: IndexSummary) -> str:
    f = summary.familiarity
    lines = [f"{summary.familiarity_file}: {f.stats['clusters']} centroids; threshold "
             f"{f.threshold:.3f} (percentile {f.percentile:g} of {f.stats['val_photos']} validation photos)"]
    if "test_photos_passing" in f.stats:
        lines.append(f"test photos at or above the threshold: {f.stats['test_photos_passing']:.1%}")
    lines.append(f"{summary.neighbour_file}: nearest-photo index of {f.stats['train_photos']} "
                 f"training photos ({summary.seconds:.0f} s in all)")
    return "\n".join(lines)
