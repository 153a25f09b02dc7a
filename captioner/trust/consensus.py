"""Consensus (Devlin et al. 2015, "Exploring nearest neighbor approaches for image captioning"):
how well a caption agrees with what people wrote for the training photos most like this one.

A model that is guessing writes a fluent Flickr8k sentence that the photos it resembles do
not bear out; a caption people would write for the nearest training photos is usually the
right kind of caption. The score is the caption's CIDEr-D against the five human captions of
each of the `NEIGHBOURS` training photos nearest by cosine similarity of pooled Xception
vectors, averaged; the document frequencies are those of all the training captions.

It needs the training photos' vectors (the nearest-photo index that `index-dataset` writes to
the cache) and their captions (Flickr8k itself), neither of which may be committed, so it is
available only where the dataset is; the trust estimate then has a sharper variant that reads it
(trust/estimate.py). Measured on held-out everyday photos it is the strongest single signal.
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np

from captioner.data.text import clean_caption
from captioner.evaluation.cider import CiderD
from captioner.explain.neighbours import NeighbourIndex, index_path

NEIGHBOURS = 10
KEPT_REFERENCES = 500    # training photos whose tf-idf vectors stay computed (a few MB)
_LOADED: dict = {}     # (index file, its mtime, dataset) -> Consensus: models in one process share one
_LOADING = threading.Lock()


def names_digest(names: list[str]) -> str:
    """Which training photos an index holds: an estimate fitted with consensus over one set of
    neighbours is refused over another (a partial index would score captions differently)."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


class Consensus:
    def __init__(self, index: NeighbourIndex, captions: dict[str, list[str]], neighbours: int = NEIGHBOURS):
        missing = [n for n in index.names if not captions.get(n)]
        if missing:
            raise ValueError(f"no captions for {len(missing)} of the index's {len(index.names)} photos "
                             f"(e.g. {missing[0]}): the index and the dataset differ")
        self.index, self.names = index, list(index.names)   # the index is shared with the app's nearest photos
        self.neighbours = min(neighbours, len(index.names))
        references = {n: [" ".join(clean_caption(c)) for c in captions[n]] for n in index.names}
        # what an estimate fitted with consensus must have read the same (estimate.load_estimate)
        self.fingerprint = {"neighbours": self.neighbours, "photos": len(self.names),
                            "names_sha256": names_digest(self.names),
                            "references_sha256": hashlib.sha256(json.dumps(references, sort_keys=True).encode()).hexdigest()}
        # the reference vectors of the last few dozen photos' neighbours are kept, not all 6,000
        self.cider = CiderD(references, max_cached=KEPT_REFERENCES)

    @classmethod
    def from_dataset(cls, encoder_checksum: str, data_dir: str | Path) -> "Consensus":
        """The index in the cache for this encoder, with the captions of the dataset at `data_dir`
        (loaded once per process: about 1 s and 65 MB, the index's 49 MB shared with the app's
        nearest photos, the cleaned captions and n-gram table about 15 MB, and the reference
        vectors of the photos scored since, up to KEPT_REFERENCES); FileNotFoundError (index) or
        DatasetError (dataset) when either is missing."""
        from captioner.data.dataset import load_flickr8k
        path = index_path(encoder_checksum)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no nearest-photo index")
        key = (str(path), path.stat().st_mtime_ns, str(Path(data_dir).resolve()))
        with _LOADING:
            if key not in _LOADED:
                _LOADED.clear()  # an index rebuilt since: the old one goes
                captions = load_flickr8k(Path(data_dir)).captions  # first: without it the index is not loaded
                _LOADED[key] = cls(NeighbourIndex.shared(path), captions)
            return _LOADED[key]

    def nearest(self, features: np.ndarray) -> np.ndarray:
        """(photos, NEIGHBOURS) indices of each photo's nearest training photos."""
        return self.index.nearest_rows(features, self.neighbours)[0]

    def scores(self, features: np.ndarray, texts: list[list[str]]) -> list[list[float]]:
        """Each caption's consensus: `texts[i]` are captions of photo i of `features`."""
        return [[self.cider.mean_score([self.names[j] for j in near], text) for text in captions]
                for near, captions in zip(self.nearest(features), texts)]
