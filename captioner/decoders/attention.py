"""The attention decoder: adaptive attention with a visual sentinel over Xception's 10x10 map.

After Lu, Xiong, Parikh and Socher (2017), "Knowing when to look". For each word:

    x_t   = [embedding(w_t); v_g]                      v_g: the projected mean of the map
    h_t   = LSTM(x_t, h_{t-1})
    s_t   = sigmoid(W_x x_t + W_h h_{t-1}) * h_t        the sentinel: what the language model holds
    a_t   = softmax((W_q h_t) . [K_1..K_100, W_s s_t] / sqrt(d))      100 regions + the sentinel
    c_t   = sum_i a_ti V_i + a_t,sentinel * s_t
    p_t   = softmax(W_o tanh(W_c (c_t + h_t)))

The query is h_t, not h_{t-1}, so teacher-forced training runs the fused LSTM over the whole
caption and then attends at every step at once: no Python loop over time, no custom RNN cell.
Two departures from the paper, both for these two CPU cores: the paper's sentinel gates
tanh(m_t), the LSTM's memory, but a fused LSTM exposes only its output h_t = o_t * tanh(m_t),
so the sentinel gates that; and the paper scores regions additively, w . tanh(K_i + W_q h_t),
which costs a tanh over (captions x steps x 100 x d) values, where a scaled dot product is one
matrix product (measured here: NumPy sampling of 480 captions, 0.8 s a step additive).
The regions V and their keys K are projected once per photo and gathered for its captions
(`photo_index`), not once per caption.

`AttentionDecoder` is the same computation in NumPy for decoding, one word at a time, with the
step interface of `decoders/step.py`; it is tested equal to this Keras model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioner.decoders.config import Config
from captioner.decoders.step import (LSTMDecoder, StepOutput, layer_weights, lstm_update, log_softmax,
                                     matmul, sigmoid, softmax)

REGIONS = 100  # Xception's 10x10 map at 299x299 input


def _keras_classes():
    """Keras classes are defined on first use, so importing captioner stays TensorFlow-free."""
    if "AttentionCaptionModel" in _CLASSES:
        return _CLASSES
    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable(package="captioner")
    class AdaptiveAttention(layers.Layer):
        """Scores 100 regions and the sentinel for every time step; returns context and weights."""

        def __init__(self, attention_dim: int, **kwargs):
            super().__init__(**kwargs)
            self.attention_dim = attention_dim

        def build(self, input_shape):
            units = input_shape[0][-1]
            self.query_kernel = self.add_weight(name="query_kernel", shape=(units, self.attention_dim),
                                                initializer="glorot_uniform")
            self.sentinel_kernel = self.add_weight(name="sentinel_kernel",
                                                   shape=(units, self.attention_dim),
                                                   initializer="glorot_uniform")

        def call(self, inputs):
            h, sentinel, regions, keys = inputs    # (C,T,U) (C,T,U) (C,R,U) (C,R,A)
            scale = 1.0 / float(self.attention_dim) ** 0.5
            query = ops.matmul(h, self.query_kernel) * scale                   # (C,T,A)
            region_scores = ops.einsum("cta,cra->ctr", query, keys)            # (C,T,R)
            sentinel_score = ops.sum(query * ops.matmul(sentinel, self.sentinel_kernel), -1)
            weights = ops.softmax(ops.concatenate([region_scores, sentinel_score[..., None]], -1), -1)
            context = ops.einsum("ctr,cru->ctu", weights[..., :-1], regions)
            context = context + weights[..., -1:] * sentinel
            return context, weights

        def get_config(self):
            return {**super().get_config(), "attention_dim": self.attention_dim}

    @keras.saving.register_keras_serializable(package="captioner")
    class AttentionCaptionModel(keras.Model):
        """Inputs: regions (P, 100, 2048), photo_index (C,) into them, tokens (C, T) -> logits."""

        def __init__(self, vocab_size: int, embed_dim: int, units: int, attention_dim: int,
                     image_dropout: float, embed_dropout: float, **kwargs):
            super().__init__(**kwargs)
            self.settings = dict(vocab_size=vocab_size, embed_dim=embed_dim, units=units,
                                 attention_dim=attention_dim, image_dropout=image_dropout,
                                 embed_dropout=embed_dropout)
            self.image_dropout = layers.Dropout(image_dropout, name="image_dropout")
            self.region_dense = layers.Dense(units, activation="relu", name="region_dense")
            self.region_keys = layers.Dense(attention_dim, use_bias=False, name="region_keys")
            self.global_dense = layers.Dense(embed_dim, activation="relu", name="global_dense")
            self.embedding = layers.Embedding(vocab_size, embed_dim, name="embedding")
            self.embed_dropout = layers.Dropout(embed_dropout, name="embed_dropout")
            self.lstm = layers.LSTM(units, return_sequences=True, name="lstm")
            self.sentinel_input = layers.Dense(units, name="sentinel_input")
            self.sentinel_hidden = layers.Dense(units, use_bias=False, name="sentinel_hidden")
            self.attend = AdaptiveAttention(attention_dim, name="attention")
            self.output_dense = layers.Dense(units, activation="tanh", name="output_dense")
            self.output_dropout = layers.Dropout(embed_dropout, name="output_dropout")
            self.logits = layers.Dense(vocab_size, name="logits")

        def forward(self, inputs, training=False):
            regions_in = ops.cast(inputs["regions"], "float32")
            photo_index = ops.cast(inputs["photo_index"], "int32")
            tokens = ops.cast(inputs["tokens"], "int32")
            dropped = self.image_dropout(regions_in, training=training)
            regions = self.region_dense(dropped)                            # (P,R,U)
            keys = self.region_keys(regions)                                # (P,R,A)
            global_vec = self.global_dense(ops.mean(dropped, axis=1))       # (P,E)
            regions, keys, global_vec = (ops.take(x, photo_index, axis=0)
                                         for x in (regions, keys, global_vec))  # per caption
            words = self.embed_dropout(self.embedding(tokens), training=training)  # (C,T,E)
            steps = ops.shape(words)[1]
            x = ops.concatenate([words, ops.repeat(global_vec[:, None, :], steps, axis=1)], -1)
            h = self.lstm(x, training=training)                             # (C,T,U)
            h_prev = ops.pad(h, [[0, 0], [1, 0], [0, 0]])[:, :-1]
            sentinel = ops.sigmoid(self.sentinel_input(x) + self.sentinel_hidden(h_prev)) * h
            context, weights = self.attend([h, sentinel, regions, keys])
            hidden = self.output_dropout(self.output_dense(context + h), training=training)
            return self.logits(hidden), weights

        def call(self, inputs, training=False):
            return self.forward(inputs, training=training)[0]

        def get_config(self):
            return {**super().get_config(), **self.settings}

    _CLASSES.update(AdaptiveAttention=AdaptiveAttention, AttentionCaptionModel=AttentionCaptionModel)
    return _CLASSES


_CLASSES: dict = {}


def build_attention_decoder(config: Config, vocab_size: int | None = None):
    model_class = _keras_classes()["AttentionCaptionModel"]
    model = model_class(vocab_size or config.vocab_size, config.embed_dim, config.units,
                        config.attention_dim, config.image_dropout, config.embed_dropout,
                        name="attention_decoder")
    # Build every weight now (load_weights and get_weights need them), on a dummy batch.
    model({"regions": np.zeros((1, REGIONS, config.feature_dim), np.float32),
           "photo_index": np.zeros((1,), np.int32), "tokens": np.zeros((1, 2), np.int32)})
    return model


def as_regions(features: np.ndarray) -> np.ndarray:
    """(n, 100, 2048) float32 regions from maps (n, 10, 10, 2048) or (n, 100, 2048)."""
    features = np.asarray(features)
    if features.ndim == 4:
        features = features.reshape(len(features), -1, features.shape[-1])
    if features.ndim != 3 or features.shape[1] != REGIONS:
        raise ValueError(f"the attention decoder needs Xception's 10x10x2048 maps, got shape "
                         f"{features.shape}")
    return features.astype(np.float32, copy=False)


@dataclass
class AttentionDecoder(LSTMDecoder):
    """The Keras model's arrays, and one decoding step in NumPy."""
    region_kernel: np.ndarray
    region_bias: np.ndarray
    key_kernel: np.ndarray
    global_kernel: np.ndarray
    global_bias: np.ndarray
    embedding: np.ndarray
    lstm_kernel: np.ndarray
    lstm_recurrent: np.ndarray
    lstm_bias: np.ndarray
    sentinel_input_kernel: np.ndarray
    sentinel_input_bias: np.ndarray
    sentinel_hidden_kernel: np.ndarray
    query_kernel: np.ndarray
    sentinel_kernel: np.ndarray
    output_kernel: np.ndarray
    output_bias: np.ndarray
    logits_kernel: np.ndarray
    logits_bias: np.ndarray

    has_attention = True

    @classmethod
    def from_keras(cls, model) -> "AttentionDecoder":
        return cls.from_layers(lambda name: layer_weights(model, name))

    @classmethod
    def from_layers(cls, get) -> "AttentionDecoder":
        """From `get(layer name)`, that layer's arrays (from Keras, or weights_file.read_layers)."""
        region_kernel, region_bias = get("region_dense")
        (key_kernel,) = get("region_keys")
        global_kernel, global_bias = get("global_dense")
        (embedding,) = get("embedding")
        lstm_kernel, lstm_recurrent, lstm_bias = get("lstm")
        sentinel_input_kernel, sentinel_input_bias = get("sentinel_input")
        (sentinel_hidden_kernel,) = get("sentinel_hidden")
        query_kernel, sentinel_kernel = get("attention")
        output_kernel, output_bias = get("output_dense")
        logits_kernel, logits_bias = get("logits")
        return cls(region_kernel, region_bias, key_kernel, global_kernel, global_bias, embedding,
                   lstm_kernel, lstm_recurrent, lstm_bias, sentinel_input_kernel,
                   sentinel_input_bias, sentinel_hidden_kernel, query_kernel, sentinel_kernel,
                   output_kernel, output_bias, logits_kernel, logits_bias)

    def __post_init__(self):
        # The LSTM's and the sentinel gate's input is [word; image]: the word half is folded
        # into per-token tables, the image half into per-photo rows (`prepare`), so a step
        # gathers rows instead of multiplying by either.
        embed_dim = self.embedding.shape[1]
        self.token_gates = self.embedding @ self.lstm_kernel[:embed_dim] + self.lstm_bias
        self.token_sentinel = (self.embedding @ self.sentinel_input_kernel[:embed_dim]
                               + self.sentinel_input_bias)
        self._image_gate_kernel = self.lstm_kernel[embed_dim:]
        self.scale = np.float32(1.0 / np.sqrt(self.query_kernel.shape[1]))
        self._recurrent_and_sentinel = np.concatenate([self.lstm_recurrent, self.sentinel_hidden_kernel], axis=1)
        self._image_sentinel_kernel = self.sentinel_input_kernel[embed_dim:]

    def prepare(self, features: np.ndarray) -> dict:
        """Per-photo projections, computed once whatever the number of beams or samples."""
        raw = as_regions(features)
        regions = np.maximum(raw @ self.region_kernel + self.region_bias, 0.0)
        global_vec = np.maximum(raw.mean(axis=1) @ self.global_kernel + self.global_bias, 0.0)
        return {"regions": regions, "keys": regions @ self.key_kernel,
                "image_gates": global_vec @ self._image_gate_kernel,
                "image_sentinel": global_vec @ self._image_sentinel_kernel}

    def step(self, tokens: np.ndarray, state: tuple, context: dict, photos: np.ndarray) -> StepOutput:
        h_prev, c = state
        # The LSTM and the sentinel gate both read h_{t-1}: one product for the two.
        recurrent = matmul(h_prev, self._recurrent_and_sentinel)
        units = self.units
        z = self.token_gates[tokens] + context["image_gates"][photos] + recurrent[:, :4 * units]
        h, c = lstm_update(z, c)
        gate = sigmoid(self.token_sentinel[tokens] + context["image_sentinel"][photos]
                       + recurrent[:, 4 * units:])
        sentinel = gate * h
        query = matmul(h, self.query_kernel) * self.scale
        region_scores = per_photo_matmul(context["keys"], photos, query)          # (rows, 100)
        sentinel_score = (query * matmul(sentinel, self.sentinel_kernel)).sum(axis=1)
        weights = softmax(np.concatenate([region_scores, sentinel_score[:, None]], axis=1))
        attended = per_photo_matmul(context["regions"], photos, weights[:, :-1], transpose=True)
        attended += weights[:, -1:] * sentinel
        hidden = np.tanh(matmul(attended + h, self.output_kernel) + self.output_bias)
        logits = matmul(hidden, self.logits_kernel) + self.logits_bias
        return StepOutput(log_softmax(logits), (h, c), weights)


def per_photo_matmul(per_photo: np.ndarray, photos: np.ndarray, rows: np.ndarray,
                     transpose: bool = False) -> np.ndarray:
    """For each row r: per_photo[photos[r]] @ rows[r] (or rows[r] @ per_photo[photos[r]]
    with `transpose`), where per_photo is (n, 100, d).

    Searches and sampling keep each photo's rows together and equally many (its beams or
    samples), so the common case is one batched matrix product per photo, with no copy of
    the (rows, 100, d) block that gathering per row would make."""
    n_rows = len(photos)
    group = n_rows // max(len(np.unique(photos)), 1) if n_rows else 1
    grouped = n_rows % group == 0 and (photos.reshape(-1, group) == photos[::group, None]).all()
    if grouped:
        firsts = photos[::group]
        blocks = per_photo if np.array_equal(firsts, np.arange(len(per_photo))) else per_photo[firsts]
        rows = rows.reshape(len(firsts), group, -1)
        if transpose:
            return np.matmul(rows, blocks).reshape(n_rows, -1)                 # (P, g, 100) @ (P, 100, d)
        return np.matmul(blocks, rows.transpose(0, 2, 1)).transpose(0, 2, 1).reshape(n_rows, -1)
    if transpose:
        return np.einsum("rk,rkd->rd", rows, per_photo[photos])
    return np.einsum("rkd,rd->rk", per_photo[photos], rows)
