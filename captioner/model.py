"""The merge decoder: image vector -> Dense; caption -> Embedding -> LSTM; add -> Dense -> vocab.

Training runs it on whole captions at once (teacher forcing, the LSTM returns every step).
Decoding does not call Keras: `MergeDecoder` holds the same arrays and advances a batch of
partial captions by one word in NumPy, which is exact (tested against the Keras forward
pass) and far cheaper than a Keras call per word on a CPU. It implements the step interface
of `decoding.py`, shared with the attention decoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import Config
from .encoder import pool


def build_merge_decoder(config: Config, vocab_size: int | None = None):
    import keras
    from keras import layers

    vocab_size = vocab_size or config.vocab_size
    image = keras.Input(shape=(config.feature_dim,), name="image")
    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")

    image_vec = layers.Dropout(config.image_dropout, name="image_dropout")(image)
    image_vec = layers.Dense(config.units, activation="relu", name="image_dense")(image_vec)
    image_vec = layers.Reshape((1, config.units), name="image_as_step")(image_vec)

    words = layers.Embedding(vocab_size, config.embed_dim, mask_zero=True, name="embedding")(tokens)
    words = layers.Dropout(config.embed_dropout, name="embed_dropout")(words)
    words = layers.LSTM(config.units, return_sequences=True, name="lstm")(words)

    merged = layers.Add(name="merge")([image_vec, words])  # broadcasts the image over time
    merged = layers.Dense(config.units, activation="relu", name="merge_dense")(merged)
    logits = layers.Dense(vocab_size, name="logits")(merged)
    return keras.Model([image, tokens], logits, name="merge_decoder")


def as_vectors(features: np.ndarray) -> np.ndarray:
    """Pooled (n, 2048) vectors from maps (n, 10, 10, 2048) or (n, 100, 2048), or vectors."""
    features = np.asarray(features)
    if features.ndim == 2:
        return features.astype(np.float32, copy=False)
    if features.ndim in (3, 4):
        return pool(features)
    raise ValueError(f"expected Xception maps or vectors, got shape {features.shape}")


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


@dataclass
class MergeDecoder(LSTMDecoder):
    image_kernel: np.ndarray
    image_bias: np.ndarray
    embedding: np.ndarray
    lstm_kernel: np.ndarray
    lstm_recurrent: np.ndarray
    lstm_bias: np.ndarray
    merge_kernel: np.ndarray
    merge_bias: np.ndarray
    logits_kernel: np.ndarray
    logits_bias: np.ndarray

    has_attention = False

    @classmethod
    def from_keras(cls, model) -> "MergeDecoder":
        def get(name):
            return layer_weights(model, name)
        image_kernel, image_bias = get("image_dense")
        (embedding,) = get("embedding")
        lstm_kernel, lstm_recurrent, lstm_bias = get("lstm")
        merge_kernel, merge_bias = get("merge_dense")
        logits_kernel, logits_bias = get("logits")
        return cls(image_kernel, image_bias, embedding, lstm_kernel, lstm_recurrent, lstm_bias,
                   merge_kernel, merge_bias, logits_kernel, logits_bias)

    def __post_init__(self):
        # Embedding and input kernel folded into one table: each step gathers a row instead
        # of multiplying (about a fifth of a step's arithmetic, for 2528x2048 floats).
        self.token_gates = self.embedding @ self.lstm_kernel + self.lstm_bias

    def prepare(self, features: np.ndarray) -> dict:
        """Per-photo work done once, whatever the number of beams: the projected image."""
        vectors = as_vectors(features)
        return {"image": np.maximum(vectors @ self.image_kernel + self.image_bias, 0.0)}

    def step(self, tokens: np.ndarray, state: tuple, context: dict, photos: np.ndarray) -> StepOutput:
        """One word for a batch of rows; row r belongs to photo `photos[r]` of `context`."""
        h, c = state
        z = self.token_gates[tokens] + matmul(h, self.lstm_recurrent)
        h, c = lstm_update(z, c)
        hidden = np.maximum(matmul(context["image"][photos] + h, self.merge_kernel) + self.merge_bias, 0.0)
        logits = matmul(hidden, self.logits_kernel) + self.logits_bias
        return StepOutput(log_softmax(logits), (h, c))


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
