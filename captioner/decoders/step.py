"""The step interface every decoder implements, and the NumPy arithmetic the steps share.

A decoder's `step(tokens, state, context, photos)` advances a batch of partial captions by one
word and returns a `StepOutput`: the next word's log-probabilities, the new state and, for the
attention decoder, where the word looked. `prepare(features)` does the per-photo work once.
Greedy search, beam search and sampling (`captioner.decoding`) are written against this alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StepOutput:
    log_probs: np.ndarray                  # (rows, vocab)
    state: tuple                           # arrays with one row per hypothesis
    attention: np.ndarray | None = None    # (rows, regions + 1): where the word looked; last = sentinel


def layer_weights(model, name: str) -> list[np.ndarray]:
    """A Keras layer's arrays as float32 NumPy arrays, in the layer's own order."""
    return [np.asarray(w, dtype=np.float32) for w in model.get_layer(name).get_weights()]


class LSTMDecoder:
    """What both NumPy decoders share: an LSTM state and a softmax over the vocabulary."""
    lstm_recurrent: np.ndarray
    logits_kernel: np.ndarray

    @property
    def vocab_size(self) -> int:
        return self.logits_kernel.shape[1]

    @property
    def units(self) -> int:
        return self.lstm_recurrent.shape[0]

    def initial_state(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        zeros = np.zeros((rows, self.units), dtype=np.float32)
        return zeros, zeros.copy()


# Below this many rows, one matrix-vector product per row beats a matrix product: OpenBLAS
# repacks the whole weight matrix for every GEMM, which dominates when the batch is a few
# beams of one photo (measured here: 3 rows x 512x2528 in 0.24 ms as GEMVs, 0.50 ms as GEMM).
# For small matrices the repacking is cheap and the per-row Python loop is not.
SMALL_BATCH_ROWS = 6
LARGE_WEIGHTS = 1_000_000


def matmul(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    if 1 < len(x) <= SMALL_BATCH_ROWS and weights.size >= LARGE_WEIGHTS:
        return np.stack([row @ weights for row in x])
    return x @ weights


def lstm_update(z: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, f, g, o = np.split(z, 4, axis=1)  # Keras gate order
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # overflow-free form of 1/(1+e^-x)


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    x = np.exp(x - x.max(axis=-1, keepdims=True))
    return x / x.sum(axis=-1, keepdims=True)
