"""Gathering the evidence for a batch of shown captions: one beam-3 search of each photo
(its other captions), each ensemble member's own beam-3 caption, and the photo's
similarity to the training-photo centroids. A few milliseconds a photo next to the encoder's
tens: the photo is not encoded again.

The searches depend on the photo alone, not on the caption shown, so `search` and `gather`
are apart: a caller showing one photo at several beam widths searches it once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioner.decoding.search import Caption, beam_search
from captioner.explain.familiarity import pooled, unit_rows
from captioner.trust.signals import EVIDENCE_BEAM, Evidence


@dataclass(frozen=True)
class Searched:
    """One photo's searches: the beam-3 captions, and each ensemble member's own caption."""
    alternatives: list[Caption]
    members: list[Caption]


def search(decoder, vocab, max_length: int, alpha: float, members: list[tuple[object, float]],
           features: np.ndarray, searched: list[list[Caption]] | None = None) -> list[Searched]:
    """The searches of every photo of `features`; `members` is an ensemble's (decoder, length
    penalty) per member, [] for one model; `searched`, the beam-3 search's captions when the
    caller has just run it (the app's default width)."""
    if searched is None:
        searched = beam_search(decoder, vocab, features, EVIDENCE_BEAM, EVIDENCE_BEAM, max_length, alpha)
    own = [beam_search(d, vocab, features, EVIDENCE_BEAM, 1, max_length, a) for d, a in members]
    return [Searched(list(searched[i]), [m[i][0] for m in own]) for i in range(len(features))]


def gather(centroids: np.ndarray, features: np.ndarray, shown: list[list[Caption]],
           searches: list[Searched], consensus=None) -> list[list[Evidence]]:
    """Evidence for every caption of `shown` (one list per photo of `features`); with
    `consensus` (a trust.consensus.Consensus), each caption's agreement with the nearest
    training photos' captions too."""
    similarity = unit_rows(pooled(features)) @ centroids.T
    agreement = (consensus.scores(features, [[c.text for c in captions] for captions in shown])
                 if consensus is not None else [[None] * len(captions) for captions in shown])
    return [[Evidence(caption, searches[i].alternatives, searches[i].members, similarity[i], agreement[i][j])
             for j, caption in enumerate(captions)]
            for i, captions in enumerate(shown)]
