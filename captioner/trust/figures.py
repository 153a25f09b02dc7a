"""docs/trust.png: how well trust ranks captions, and whether it means what it says.

One risk-coverage panel per set of held-out photos (x: the share of photos captioned, most
trusted first; y: their mean CIDEr-D), a line per signal and a thick one for the estimate,
then a reliability diagram (trust against the share of captions that were right)."""
from __future__ import annotations

import os
from pathlib import Path


from captioner.evaluation.plots import save_figure
from captioner.trust.estimate import TrustModel
from captioner.trust.fit import Photos, reliability, risk_coverage, scores_of


def trust_figure(estimate: TrustModel, sets: dict[str, Photos], out: str | os.PathLike) -> Path:
    import matplotlib
    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(sets) + 1, figsize=(5.2 * (len(sets) + 1), 4.2))
    for ax, (title, photos) in zip(axes, sets.items()):
        trust, values = scores_of(estimate, photos)
        for signal, score in values.items():
            ax.plot(*risk_coverage(score, photos.cider), lw=1, label=signal.replace("_", " "))
        ax.plot(*risk_coverage(trust, photos.cider), lw=2.5, color="black", label="trust (fitted)")
        ax.axhline(photos.cider.mean(), ls=":", color="grey", lw=1, label="all photos")
        ax.set(title=f"{title} ({len(photos)} photos)", xlabel="share of photos captioned, most trusted first",
               ylabel="mean CIDEr-D of those captioned", xlim=(0, 1))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for (title, photos), marker in zip(sets.items(), "os^"):
        trust, _ = scores_of(estimate, photos)
        bins = reliability(trust, photos.cider >= estimate.right["threshold"], bins=10)
        ax.plot([b["mean_trust"] for b in bins], [b["right_share"] for b in bins], marker=marker, label=title)
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="calibrated")
    ax.set(title=f"Reliability ({estimate.model})", xlabel="trust", ylabel="share of captions right",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, out)
