"""Several trained decoders as one: a weighted product of their next-word distributions.

    log p(w | ...) = sum_i weight_i * log p_i(w | ...) - log Z       (weights sum to 1)

An `EnsembleDecoder` offers the same NumPy step interface as one decoder (see decoders/step.py),
so the one greedy search, beam search and sampler run on it unchanged. Its context is the
members' contexts under prefixed keys, its state their states side by side; every member
reads the same Xception map (the merge decoder pools it), so the photo is encoded once.
Attention, when asked for, is the first attention member's: where that decoder looked while
the ensemble chose the word.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from captioner.decoders.step import StepOutput, log_softmax


class EnsembleDecoder:
    def __init__(self, members: Sequence, weights: Sequence[float]):
        if len(members) < 1 or len(members) != len(weights):
            raise ValueError(f"an ensemble needs one weight per member, got {len(members)} members "
                             f"and {len(weights)} weights")
        if any(w < 0 for w in weights) or not np.isclose(sum(weights), 1.0):
            raise ValueError(f"ensemble weights must be >= 0 and sum to 1, got {list(weights)}")
        sizes = {m.vocab_size for m in members}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members must share one vocabulary, got sizes {sorted(sizes)}")
        self.members, self.weights = list(members), [float(w) for w in weights]
        self.vocab_size = sizes.pop()
        self._states = [len(m.initial_state(1)) for m in self.members]  # arrays per member state
        attending = [i for i, m in enumerate(self.members) if m.has_attention]
        self._attention_member = attending[0] if attending else None

    @property
    def has_attention(self) -> bool:
        return self._attention_member is not None

    def prepare(self, features: np.ndarray) -> dict:
        return {f"{i}/{key}": value for i, member in enumerate(self.members)
                for key, value in member.prepare(features).items()}

    def initial_state(self, rows: int) -> tuple:
        return tuple(x for member in self.members for x in member.initial_state(rows))

    def step(self, tokens: np.ndarray, state: tuple, context: dict, photos: np.ndarray) -> StepOutput:
        mixed, new_state, attention, start = 0.0, [], None, 0
        for i, (member, weight) in enumerate(zip(self.members, self.weights)):
            prefix = f"{i}/"
            own = {key[len(prefix):]: value for key, value in context.items() if key.startswith(prefix)}
            out = member.step(tokens, state[start:start + self._states[i]], own, photos)
            start += self._states[i]
            mixed = mixed + weight * out.log_probs
            new_state.extend(out.state)
            if i == self._attention_member:
                attention = out.attention
        return StepOutput(log_softmax(mixed).astype(np.float32), tuple(new_state), attention)


def mixed(decoders: Sequence, weights: Sequence[float]) -> "EnsembleDecoder":
    """The ensemble of `decoders` weighted by `weights`, leaving out those weighted 0 (their
    steps would cost time and change nothing)."""
    kept = [i for i, w in enumerate(weights) if w > 0]
    return EnsembleDecoder([decoders[i] for i in kept], [weights[i] for i in kept])
