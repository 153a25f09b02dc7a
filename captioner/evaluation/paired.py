"""Is one model better than another on the same photos, or is it the noise of 1,000 photos?

A paired bootstrap of per-photo scores (Koehn 2004, "Statistical significance tests for machine
translation evaluation"), by SciPy's `scipy.stats.bootstrap` (already a training dependency):
resample the photos' score differences with replacement and see how often their mean stays
above zero. Corpus CIDEr is the mean of per-photo CIDEr (its document frequencies come from the
references alone), so resampling per-photo CIDEr resamples the score.
"""
from __future__ import annotations

import numpy as np


def paired_bootstrap(candidate, baseline, resamples: int = 10_000, seed: int = 0) -> dict:
    """The candidate's mean per-photo score minus the baseline's, its 95% bootstrap interval,
    the share of resamples in which the difference is at or below zero, and the standard error."""
    from scipy.stats import bootstrap

    candidate = np.asarray(candidate, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    if candidate.shape != baseline.shape or candidate.ndim != 1 or candidate.size < 2:
        raise ValueError(f"need two equally long lists of per-photo scores (at least 2), got "
                         f"{candidate.shape} and {baseline.shape}")
    differences = candidate - baseline
    # the percentile interval, so that it and the share at or below zero read one distribution
    result = bootstrap((differences,), np.mean, n_resamples=resamples, method="percentile",
                       rng=np.random.default_rng(seed))
    return {"difference": float(differences.mean()),
            "low": float(result.confidence_interval.low), "high": float(result.confidence_interval.high),
            "share_at_or_below_zero": float(np.mean(result.bootstrap_distribution <= 0)),
            "standard_error": float(differences.std(ddof=1) / np.sqrt(differences.size))}
