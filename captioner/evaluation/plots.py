"""Training curves of every model as one matplotlib figure, for the README (docs/).

    python -m captioner plot-history --out docs/training-curves.png [--models trained]
"""
from __future__ import annotations

import os
from pathlib import Path

PHASE_STYLE = {"xe": "-", "scst": "--"}
PHASE_LABEL = {"xe": "cross-entropy", "scst": "self-critical"}
# (history key, panel title); a panel is drawn only if some model recorded its key.
PANELS = [("loss", "Training loss (cross-entropy)"), ("val_loss", "Validation loss (cross-entropy)"),
          ("val_bleu4", "Validation BLEU-4 (greedy)"), ("val_cider", "Validation CIDEr (greedy; x: beam search)"),
          ("mean_reward", "Mean CIDEr-D reward of samples (self-critical)"),
          ("mean_similar_photo_reward", "Mean CIDEr-D of samples against a similar photo"),
          ("val_distinct", "Distinct validation captions (greedy; x: beam search)")]
# The same quantity measured at the guard's beam width, drawn over a greedy panel: recorded
# for self-critical epochs of a model whose guard decoded at a width above 1.
BEAM_OVERLAYS = {"val_cider": "val_cider_beam", "val_distinct": "val_distinct_beam"}


def curve_points(histories: dict[str, list[dict]], key: str) -> list[dict]:
    """[{"model", "phase", "epoch", "value"}] of one recorded quantity, for any plotting
    library. Rows without a phase come from models trained before self-critical training
    and are cross-entropy epochs."""
    return [{"model": name, "phase": row.get("phase", "xe"), "epoch": row["epoch"], "value": row[key]}
            for name, history in sorted(histories.items()) for row in history
            if row.get(key) is not None and "epoch" in row]


def plot_histories(histories: dict[str, list[dict]], out: str | os.PathLike) -> Path:
    """One panel per recorded quantity, one colour per model, solid lines for
    cross-entropy epochs and dashed for self-critical ones. Returns the file written."""
    import matplotlib
    matplotlib.use("Agg")  # files only; no display on a server
    import matplotlib.pyplot as plt

    panels = [(key, title) for key, title in PANELS
              if any(key in row for rows in histories.values() for row in rows)]
    if not panels:
        raise ValueError("no training history to plot (history.json is empty or missing).")
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    colours = dict(zip(sorted(histories), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    # Training loss is per-token cross-entropy in one phase and an advantage-weighted sum in
    # the other: not comparable, so the loss panels show cross-entropy epochs only.
    xe_only = {"loss", "val_loss"}
    for ax, (key, title) in zip(axes.flat, panels):
        points_of = curve_points(histories, key)
        for name in sorted(histories):
            for phase, style in PHASE_STYLE.items():
                if key in xe_only and phase != "xe":
                    continue
                points = [(p["epoch"], p["value"]) for p in points_of if p["model"] == name and p["phase"] == phase]
                if points:
                    x, y = zip(*points)
                    ax.plot(x, y, style, marker="o", markersize=3, color=colours[name],
                            label=f"{name}, {PHASE_LABEL[phase]}")
        if key in BEAM_OVERLAYS:
            for name in sorted(histories):
                points = [(p["epoch"], p["value"]) for p in curve_points(histories, BEAM_OVERLAYS[key])
                          if p["model"] == name]
                if points:
                    x, y = zip(*points)
                    ax.plot(x, y, ":", marker="x", markersize=4, color=colours[name],
                            label=f"{name}, self-critical, beam search" + (" (guarded)" if key == "val_distinct" else ""))
        if key == "val_distinct":
            from captioner.decoders.config import Config  # the self-critical epochs below this line are never kept
            ax.axhline(Config().scst_min_distinct, color="grey", linestyle=":", linewidth=1,
                       label="self-critical epochs kept above")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return save_figure(fig, out, dpi=110)


def save_figure(fig, out: str | os.PathLike, dpi: int = 100) -> Path:
    """Lay out `fig`, write it to `out` (its folder made if need be) and free it."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def plot_models(model_root: str | os.PathLike, out: str | os.PathLike) -> Path:
    """The curves of every model under `model_root` (trained/)."""
    from captioner.model_dirs.artifacts import ArtifactError
    from captioner.model_dirs.catalog import read_records
    from captioner.model_dirs.catalog import available_models
    models = available_models(model_root)
    if not models:
        raise ArtifactError(f"{model_root}: no trained model here to plot.")
    return plot_histories({name: read_records(d)["history"] for name, d in models.items()}, out)
