"""Fitting the trust estimate, and measuring it on photos it was not fitted on.

scikit-learn does the fitting (a ridge regression for photo_kind, a logistic regression
for the estimate); the result is plain numbers in a TrustModel, so serving needs NumPy only.
photo_kind's values for the logistic regression's own rows are out-of-fold predictions, so
the estimate does not learn to lean on a score that has seen those very photos.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioner.trust.estimate import LIKELY_RIGHT, LIKELY_WRONG, UNSURE, TrustModel

RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
TOP_SHARE, BOTTOM_SHARE = 0.3, 0.4   # the bar's "30% most trusted" and "40% least trusted"


@dataclass
class Photos:
    """One set of photos as the estimate sees them: each caption's signals (photo_kind
    excepted), the photo's centroid similarities, and the caption's per-photo CIDEr-D."""
    names: list[str]
    values: list[dict[str, float]]
    similarity: np.ndarray       # (n, k)
    cider: np.ndarray            # (n,)
    group: str = ""              # which source, for balancing the fit ("flickr8k", "coco")

    def __len__(self) -> int:
        return len(self.names)

    def take(self, mask: np.ndarray) -> "Photos":
        idx = np.flatnonzero(mask)
        return Photos([self.names[i] for i in idx], [self.values[i] for i in idx], self.similarity[idx],
                      self.cider[idx], self.group)


def join(*sets: Photos) -> tuple[Photos, np.ndarray]:
    """The sets as one, and each row's weight: every source weighs as much as the others,
    however many photos it has (coco-dev has a fifth as many as Flickr8k validation)."""
    weights = np.concatenate([np.full(len(s), 1.0 / len(s)) for s in sets])
    joined = Photos([n for s in sets for n in s.names], [v for s in sets for v in s.values],
                    np.concatenate([s.similarity for s in sets]), np.concatenate([s.cider for s in sets]))
    return joined, weights * len(weights) / weights.sum()


def _photo_kind_model(similarity: np.ndarray, cider: np.ndarray, weights: np.ndarray):
    from sklearn.linear_model import RidgeCV
    return RidgeCV(alphas=RIDGE_ALPHAS).fit(similarity, cider, sample_weight=weights)


def out_of_fold_photo_kind(similarity, cider, weights, folds: int = 5, seed: int = 0) -> np.ndarray:
    from sklearn.model_selection import KFold
    out = np.zeros(len(cider))
    for fit_rows, held_rows in KFold(folds, shuffle=True, random_state=seed).split(similarity):
        model = _photo_kind_model(similarity[fit_rows], cider[fit_rows], weights[fit_rows])
        out[held_rows] = model.predict(similarity[held_rows])
    return out


def fit(model: str, weights_sha256: dict[str, str], familiarity_sha256: str, photos: Photos,
        row_weights: np.ndarray, signals: list[str], right_threshold: float, right_why: str,
        cutoffs: dict[str, float], C: float = 1.0) -> TrustModel:
    """The estimate for `model`: P(per-photo CIDEr-D >= right_threshold) from `signals`."""
    from sklearn.linear_model import LogisticRegression
    columns = {s: np.array([v[s] for v in photos.values]) for s in signals if s != "photo_kind"}
    kind = None
    if "photo_kind" in signals:
        columns["photo_kind"] = out_of_fold_photo_kind(photos.similarity, photos.cider, row_weights)
        final = _photo_kind_model(photos.similarity, photos.cider, row_weights)
        kind = {"coefficients": [float(c) for c in final.coef_], "intercept": float(final.intercept_),
                "ridge_alpha": float(final.alpha_)}
    X = np.stack([columns[s] for s in signals], axis=1)
    mean, scale = X.mean(axis=0), X.std(axis=0).clip(1e-9)
    y = photos.cider >= right_threshold
    logistic = LogisticRegression(C=C, max_iter=1000).fit((X - mean) / scale, y, sample_weight=row_weights)
    return TrustModel(model=model, weights_sha256=dict(weights_sha256), familiarity_sha256=familiarity_sha256,
                      right={"metric": "per-photo CIDEr-D at or above", "threshold": float(right_threshold),
                             "why": right_why},
                      signals=list(signals), mean=[float(m) for m in mean], scale=[float(s) for s in scale],
                      coefficients=[float(c) for c in logistic.coef_[0]], intercept=float(logistic.intercept_[0]),
                      photo_kind=kind or {"coefficients": [], "intercept": 0.0}, cutoffs=dict(cutoffs),
                      fitted={"photos": int(len(photos)), "right_share": round(float(np.average(y, weights=row_weights)), 4)},
                      support={"familiarity_floor": float(columns["familiarity"].min())} if "familiarity" in columns else {})


def scores_of(estimate: TrustModel, photos: Photos) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each photo's trust, and each signal's own values (photo_kind as the estimate computes it)."""
    values = []
    for v, sims in zip(photos.values, photos.similarity):
        row = dict(v)
        if "photo_kind" in estimate.signals:
            row["photo_kind"] = float(np.dot(estimate.photo_kind["coefficients"], sims)
                                      + estimate.photo_kind["intercept"])
        values.append(row)
    trust = np.array([estimate.trust(row) for row in values])
    return trust, {s: np.array([row[s] for row in values]) for s in estimate.signals}


def ranking_figures(score: np.ndarray, cider: np.ndarray) -> dict[str, float]:
    """How well a score ranks photos by CIDEr: Spearman, and the mean CIDEr of the most and
    least trusted shares."""
    from scipy.stats import spearmanr
    order = np.argsort(-score, kind="stable")
    top = order[:max(1, round(TOP_SHARE * len(order)))]
    bottom = order[len(order) - max(1, round(BOTTOM_SHARE * len(order))):]
    return {"spearman": round(float(spearmanr(score, cider).statistic), 3),
            "top30_cider": round(float(cider[top].mean()), 3),
            "bottom40_cider": round(float(cider[bottom].mean()), 3)}


def risk_coverage(score: np.ndarray, cider: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of photos captioned, most trusted first, against their mean CIDEr."""
    ordered = cider[np.argsort(-score, kind="stable")]
    return np.arange(1, len(ordered) + 1) / len(ordered), np.cumsum(ordered) / np.arange(1, len(ordered) + 1)


def reliability(trust: np.ndarray, right: np.ndarray, bins: int = 5) -> list[dict]:
    """For each band of trust, how many photos fell in it and the share that were right."""
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (trust >= lo) & ((trust < hi) if hi < 1 else (trust <= hi))
        if inside.any():
            rows.append({"from": round(float(lo), 2), "to": round(float(hi), 2), "photos": int(inside.sum()),
                         "mean_trust": round(float(trust[inside].mean()), 3),
                         "right_share": round(float(right[inside].mean()), 3)})
    return rows


def measure(estimate: TrustModel, photos: Photos) -> dict:
    """Every held-out figure the README reports for one set of photos."""
    trust, signal_values = scores_of(estimate, photos)
    right = photos.cider >= estimate.right["threshold"]
    verdicts = [estimate.verdict(p) for p in trust]
    return {"photos": len(photos), "mean_cider": round(float(photos.cider.mean()), 3),
            "right_share": round(float(right.mean()), 3), "mean_trust": round(float(trust.mean()), 3),
            "estimate": ranking_figures(trust, photos.cider),
            "signals": {s: ranking_figures(v, photos.cider) for s, v in signal_values.items()},
            "verdicts": {v: round(verdicts.count(v) / len(verdicts), 3) for v in (LIKELY_RIGHT, UNSURE, LIKELY_WRONG)},
            "verdict_cider": {v: (round(float(photos.cider[[x == v for x in verdicts]].mean()), 3)
                                  if v in verdicts else None) for v in (LIKELY_RIGHT, UNSURE, LIKELY_WRONG)},
            "reliability": reliability(trust, right),
            "brier": round(float(np.mean((trust - right) ** 2)), 4)}
