"""CIDEr-D, the reward of self-critical training, with document frequencies computed once.

The same arithmetic as pycocoevalcap's `Cider` (which is CIDEr-D: clipped counts, a Gaussian
length penalty with sigma 6, x10), including its quirk of measuring length in bigrams, so a
reward here means what a reported CIDEr means; tests check the two agree. pycocoevalcap
recomputes the n-gram statistics of every reference on every call; self-critical training
scores about 30,000 sampled captions an epoch against the same references, so here the
document frequencies are computed once, and each reference's tf-idf vector once, when first
scored against (the trust estimate's consensus reads ten photos' references per caption,
never all 6,000).

N-grams are keyed by Python's 64-bit hash of the word tuple, not the tuple: a tuple key and its
word strings cost about ten times an int, and building the table from 346,596 distinct tuples
left a server about 48 MB heavier than the table it kept (freed small objects stay in Python's
arenas). Counting the hashes in NumPy leaves 9 MB. Hashes are only compared within one process
(str hashes are salted per process), and two of Flickr8k's n-grams sharing one of 2^64 values
is a chance of about 1e-8.
"""
from __future__ import annotations

import math
from collections import Counter, OrderedDict

import numpy as np

N = 4
SIGMA = 6.0


def ngram_counts(words: list[str], n: int = N) -> Counter:
    """Counts of each n-gram of 1..n words, keyed by (order, hash of the words)."""
    return Counter((k - 1, hash(tuple(words[i:i + k]))) for k in range(1, n + 1)
                   for i in range(len(words) - k + 1))


def _log_document_frequencies(references: dict[str, list[str]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted hashes of every n-gram that occurs in more than one key's references, and
    their log(df)."""
    per_key = [np.fromiter({h for ref in refs for _, h in ngram_counts(ref.split(), n)}, np.int64)
               for refs in references.values()]
    hashes, counts = np.unique(np.concatenate(per_key) if per_key else np.zeros(0, np.int64),
                               return_counts=True)
    del per_key
    # An n-gram in one key's references weighs as one in none (log max(1, df)): leaving those
    # out changes no score and drops most of the table (346,596 n-grams to 65,921 for
    # Flickr8k's training captions).
    shared = counts > 1
    return hashes[shared], np.log(counts[shared].astype(np.float64))


class CiderD:
    def __init__(self, references: dict[str, list[str]], n: int = N, sigma: float = SIGMA,
                 max_cached: int | None = None):
        """`references`: space-separated token strings per key, the corpus whose document
        frequencies weigh n-grams (for training rewards: the training references);
        `max_cached`: how many keys' reference vectors to keep (all by default; a server
        scoring against a few keys per request keeps the most recently computed)."""
        self.n, self.sigma = n, sigma
        self.references = references
        self._df_hashes, self._log_df = _log_document_frequencies(references, n)
        self.ref_len = math.log(float(len(references)))
        self._reference_vectors: OrderedDict = OrderedDict()
        self.max_cached = max_cached

    def reference_vectors(self, key: str) -> list:
        found = self._reference_vectors.get(key)
        if found is None:
            found = self._reference_vectors[key] = [self._vector(ngram_counts(r.split(), self.n))
                                                     for r in self.references[key]]
            if self.max_cached is not None and len(self._reference_vectors) > self.max_cached:
                self._reference_vectors.popitem(last=False)
        return found

    def log_document_frequencies(self, counts: Counter) -> list[float]:
        """log(df) of each n-gram of `counts`, in its order (0 for one the table leaves out)."""
        hashes = np.fromiter((h for _, h in counts), np.int64, len(counts))
        if not len(self._df_hashes) or not len(hashes):
            return [0.0] * len(hashes)
        at = np.minimum(np.searchsorted(self._df_hashes, hashes), len(self._df_hashes) - 1)
        return np.where(self._df_hashes[at] == hashes, self._log_df[at], 0.0).tolist()

    def _vector(self, counts: Counter):
        vec = [{} for _ in range(self.n)]
        norm = [0.0] * self.n
        length = 0
        for (order, ngram), tf, log_df in zip(counts, counts.values(), self.log_document_frequencies(counts)):
            weight = float(tf) * (self.ref_len - log_df)
            vec[order][ngram] = weight
            norm[order] += weight * weight
            if order == 1:  # pycocoevalcap's length: the number of bigrams
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def score(self, key: str, candidate: str) -> float:
        """CIDEr-D of one candidate against the references of `key`."""
        return self._score(self._vector(ngram_counts(candidate.split(), self.n)), key)

    def mean_score(self, keys: list[str], candidate: str) -> float:
        """The mean of `score(key, candidate)` over `keys`, the candidate's vector made once."""
        cooked = self._vector(ngram_counts(candidate.split(), self.n))
        return float(np.mean([self._score(cooked, key) for key in keys]))

    def _score(self, cooked, key: str) -> float:
        vec, norm, length = cooked
        refs = self.reference_vectors(key)
        total = 0.0
        for ref_vec, ref_norm, ref_length in refs:
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * self.sigma ** 2))
            for order in range(self.n):
                ref_grams = ref_vec[order]
                value = sum(min(w, ref_grams.get(g, 0.0)) * ref_grams.get(g, 0.0)
                            for g, w in vec[order].items())
                if norm[order] and ref_norm[order]:
                    value /= norm[order] * ref_norm[order]
                total += value * penalty
        return total / self.n / len(refs) * 10.0

    def score_many(self, keys: list[str], candidates: list[str]) -> np.ndarray:
        return np.array([self.score(k, c) for k, c in zip(keys, candidates)], dtype=np.float64)
