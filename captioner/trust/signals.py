"""The evidence a caption's trust is read from, and the signals computed from it.

Every signal is oriented so that higher means "more likely right". They are cheap: the
caption's own word probabilities, the other captions of a beam-3 search of the same photo,
an ensemble's members' own captions, the photo's similarity to the training photos'
centroids (explain/familiarity.py), and, where Flickr8k is at hand, the caption's agreement
with the captions of the most similar training photos (consensus.py), all of which
captioning has at hand or gets in a few milliseconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from captioner.data.text import FUNCTION_WORDS
from captioner.decoding.search import Caption

# name -> what it measures, for people reading the trust model's JSON and the page
SIGNALS = {
    "log_prob": "the caption's length-normalised log-probability",
    "weakest_word": "the log-probability of its least probable content word",
    "beam_agreement": "how many of its content words the search's other captions share",
    "member_agreement": "how many of its content words the ensemble's members' own captions share",
    "familiarity": "the photo's cosine similarity to the nearest training-photo centroid",
    "photo_kind": "how well the model captions photos that resemble the same training photos",
    "consensus": "its CIDEr-D against the captions of the 10 most similar training photos",
}
EVIDENCE_BEAM = 3  # the alternatives and the members' captions come from a beam-3 search


@dataclass
class Evidence:
    """What is known about one photo's caption when it is shown."""
    caption: Caption
    alternatives: list[Caption]                # the beam-3 search's finished captions of the photo
    member_captions: list[Caption] = field(default_factory=list)   # an ensemble's members' own
    centroid_similarity: np.ndarray | None = None                  # (k,) cosine to each centroid
    consensus: float | None = None   # agreement with the nearest training photos' captions (consensus.py)


def content_words(text: str) -> set[str]:
    return {w for w in text.split() if w not in FUNCTION_WORDS}


def word_agreement(text: str, others: list[str]) -> float:
    """Mean F1 between the content words of `text` and of each other caption (1 with no
    other caption: nothing disagrees)."""
    mine = content_words(text)
    if not others:
        return 1.0
    scores = []
    for other in others:
        theirs = content_words(other)
        shared = len(mine & theirs)
        scores.append(0.0 if not shared else 2 * shared / (len(mine) + len(theirs)))
    return float(np.mean(scores))


def _without_first(text: str, texts: list[str]) -> list[str]:
    """The search's other captions: the caption shown is usually the search's best."""
    if text in texts:
        texts = list(texts)
        texts.remove(text)
    return texts


def weakest_word(caption: Caption) -> float:
    """The lowest log-probability of a content word (of any word if it has none)."""
    words = caption.text.split()
    scores = [lp for w, lp in zip(words, caption.word_log_probs) if w not in FUNCTION_WORDS]
    scores = scores or list(caption.word_log_probs[:len(words)]) or [caption.normalized_log_prob]
    return float(min(scores))


def signals(evidence: Evidence) -> dict[str, float]:
    """Every signal but photo_kind (which the trust model computes from the centroid
    similarities with its own fitted weights)."""
    text = evidence.caption.text
    out = {
        "log_prob": float(evidence.caption.normalized_log_prob),
        "weakest_word": weakest_word(evidence.caption),
        "beam_agreement": word_agreement(text, _without_first(text, [c.text for c in evidence.alternatives])),
    }
    if evidence.member_captions:
        out["member_agreement"] = word_agreement(text, [c.text for c in evidence.member_captions])
    if evidence.centroid_similarity is not None:
        out["familiarity"] = float(np.max(evidence.centroid_similarity))
    if evidence.consensus is not None:
        out["consensus"] = float(evidence.consensus)
    return {k: (v if math.isfinite(v) else -50.0) for k, v in out.items()}
