"""How sure the model was of each word of a caption.

A word's probability is the model's probability of that word given the photo and the words
before it (exp of Caption.word_log_probs), after the search's bans (repeats, <unk>) were
applied, so it is what the search actually chose from. The end token is a row too: a low
probability there means the model was unsure the caption was complete.
"""
from __future__ import annotations

import math

from captioner.decoding.search import Caption

END = "<end>"


def word_confidence(caption: Caption) -> list[dict]:
    """One row per word and the end token: word, probability, and (attention model with
    attention=True) the share of the word that came from the photo."""
    words = caption.text.split() + [END if caption.finished else "<end> (forced: length limit)"]
    rows = [{"word": w, "probability": math.exp(lp)} for w, lp in zip(words, caption.word_log_probs)]
    if caption.attention is not None:
        for row, weights in zip(rows, caption.attention):
            row["from the photo"] = float(1.0 - weights[-1])
    return rows


def least_confident(caption: Caption) -> tuple[str, float] | None:
    """The caption's least probable word (not the end token), for a one-line summary."""
    rows = word_confidence(caption)[:-1]
    if not rows:
        return None
    row = min(rows, key=lambda r: r["probability"])
    return row["word"], row["probability"]
