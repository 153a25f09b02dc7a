"""Figures as images (matplotlib): where the attention model looked for each word.

The "Show, Attend and Tell" grid: the photo, then one panel per word (and the end token) with
that step's 10x10 attention map upsampled over the photo. The encoder squeezes every photo to
a square without keeping its aspect ratio, so the map's cells stretch over the photo's own
width and height. Each panel says how much of the word came from the photo: 1 minus the
visual sentinel's weight (the sentinel is the language model's own memory).

Uses matplotlib's object API (Figure, not pyplot): no global state, so app sessions in
several threads can draw at once, and no display is needed.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

from captioner.decoding.search import Caption

END = "<end>"
CMAP = "inferno"


def caption_words(caption: Caption) -> list[str]:
    """The words the attention rows belong to: the caption's words, then the end token."""
    return caption.text.split() + [END]


def photo_share(caption: Caption) -> np.ndarray:
    """Per word (and the end token): the share of attention on the photo, 1 - sentinel."""
    return 1.0 - np.asarray(caption.attention)[:, -1]


def region_map(caption: Caption, index: int) -> np.ndarray:
    """Word `index`'s attention over the 10x10 regions, scaled to sum to 1 over the photo."""
    regions = np.asarray(caption.attention, dtype=np.float32)[index, :-1].reshape(10, 10)
    return regions / max(float(regions.sum()), 1e-12)


def _require_attention(caption: Caption) -> None:
    if caption.attention is None:
        raise ValueError("this caption has no attention weights: use the attention model "
                         "and caption(..., attention=True)")


def _overlay(ax, photo: np.ndarray, weights: np.ndarray, title: str, fontsize: float) -> None:
    height, width = photo.shape[:2]
    ax.imshow(photo)
    ax.imshow(weights, cmap=CMAP, alpha=0.6, extent=(0, width, height, 0),
              interpolation="bicubic", vmin=0.0, vmax=max(float(weights.max()), 1e-12))
    ax.set_title(title, fontsize=fontsize)
    ax.set_axis_off()


def attention_grid(image: Image.Image, caption: Caption, columns: int = 5, panel_inches: float = 2.2):
    """The photo and one panel per word; returns a matplotlib Figure."""
    from matplotlib.figure import Figure
    _require_attention(caption)
    photo = np.asarray(image.convert("RGB"))
    words, shares = caption_words(caption), photo_share(caption)
    panels = len(words) + 1
    columns = min(columns, panels)
    rows = math.ceil(panels / columns)
    title_inches = 0.4  # two lines of 10 pt above each panel
    height = rows * (panel_inches + title_inches)
    # Fixed margins, not a layout engine: constrained layout measured every title's extent and
    # took two thirds of the drawing time (the app draws one grid per photo and width).
    fig = Figure(figsize=(columns * panel_inches, height))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.02 / rows, top=1 - title_inches / height,
                        wspace=0.06, hspace=title_inches / panel_inches)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    axes[0].imshow(photo)
    axes[0].set_title("photo", fontsize=10)
    axes[0].set_axis_off()
    for i, (word, share) in enumerate(zip(words, shares)):
        # parse_math=False: the title is model output, never mathtext.
        _overlay(axes[i + 1], photo, region_map(caption, i), "", 10)
        axes[i + 1].set_title(f"{word}\nphoto {share:.0%}", fontsize=10, parse_math=False)
    for ax in axes[panels:]:
        ax.set_axis_off()
    return fig


def attention_word(image: Image.Image, caption: Caption, index: int, inches: float = 6.0):
    """One word's map, large, with a colour scale."""
    from matplotlib.figure import Figure
    _require_attention(caption)
    photo = np.asarray(image.convert("RGB"))
    words, shares = caption_words(caption), photo_share(caption)
    fig = Figure(figsize=(inches * 1.15, inches), layout="constrained")
    ax = fig.subplots()
    weights = region_map(caption, index)
    _overlay(ax, photo, weights, "", 12)
    ax.set_title(f"\"{words[index]}\": {shares[index]:.0%} from the photo, "
                 f"{1 - shares[index]:.0%} from the language model", fontsize=12, parse_math=False)
    scale = fig.colorbar(ax.images[-1], ax=ax, shrink=0.8)
    scale.set_label("share of the word's attention on the photo")
    return fig


def figure_png(fig, dpi: int = 100) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_jpeg(fig, dpi: int = 100, quality: int = 85) -> bytes:
    """For figures that are mostly photo: a fifth of the PNG's bytes, encoded in a third of the time."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", dpi=dpi, pil_kwargs={"quality": quality})
    return buffer.getvalue()
