"""The merge decoder: image vector -> Dense; caption -> Embedding -> LSTM; add -> Dense -> vocab.

Training runs it on whole captions at once (teacher forcing, the LSTM returns every step).
Decoding does not call Keras: `MergeDecoder` holds the same arrays and advances a batch of
partial captions by one word in NumPy, which is exact (tested against the Keras forward
pass) and far cheaper than a Keras call per word on a CPU. It implements the step interface
of `decoders/step.py`, shared with the attention decoder.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioner.decoders.config import Config
from captioner.decoders.step import LSTMDecoder, StepOutput, layer_weights, log_softmax, lstm_update, matmul
from captioner.vision.encoder import pool


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
        return cls.from_layers(lambda name: layer_weights(model, name))

    @classmethod
    def from_layers(cls, get) -> "MergeDecoder":
        """From `get(layer name)`, that layer's arrays (from Keras, or weights_file.read_layers)."""
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
