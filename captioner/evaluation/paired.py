"""Is one model better than another on the same photos, or is it the noise of 1,000 photos?

A paired bootstrap of per-photo scores (Koehn 2004, "Statistical significance tests for machine
translation evaluation"): resample the photos with replacement and see how often the candidate's
mean stays above the baseline's. Corpus CIDEr is the mean of per-photo CIDEr (the document
frequencies come from the references alone), so resampling per-photo CIDEr resamples the score.
"""
from __future__ import annotations

import numpy as np


def paired_bootstrap(candidate, baseline, resamples: int = 10_000, seed: int = 0) -> dict:
    """The candidate's mean per-photo score minus the baseline's, its 95% bootstrap interval,
    the share of resamples in which the difference is at or below zero, and the standard error."""
    candidate = np.asarray(candidate, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    if candidate.shape != baseline.shape or candidate.ndim != 1 or candidate.size < 2:
        raise ValueError(f"need two equally long lists of per-photo scores (at least 2), got "
                         f"{candidate.shape} and {baseline.shape}")
    differences = candidate - baseline
    rng = np.random.default_rng(seed)
    # means of `resamples` resamples at once: rows of photo indices drawn with replacement
    picks = rng.integers(0, differences.size, size=(resamples, differences.size))
    means = differences[picks].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"difference": float(differences.mean()), "low": float(low), "high": float(high),
            "share_at_or_below_zero": float(np.mean(means <= 0)),
            "standard_error": float(differences.std(ddof=1) / np.sqrt(differences.size))}
