"""Which runtime encodes photos: LiteRT (the default; no TensorFlow) or TensorFlow.

Both give the same map from the same ImageNet weights (tests/test_litert.py). Serving uses
LiteRT: it starts in milliseconds, holds a quarter of TensorFlow's memory and runs faster on
these cores. TensorFlow is for training, for converting, and when asked for (`--encoder
tensorflow`, CAPTIONER_ENCODER=tensorflow), e.g. on a GPU.
"""
from __future__ import annotations

import os
from pathlib import Path

from captioner.vision.encoder import EncoderWeightsError

ENCODERS = ("litert", "tensorflow")


def default_encoder() -> str:
    kind = os.environ.get("CAPTIONER_ENCODER") or "litert"
    if kind not in ENCODERS:
        raise EncoderWeightsError(f"CAPTIONER_ENCODER={kind!r}: expected one of {', '.join(ENCODERS)}.")
    return kind


def encoder_kind(kind: str | None, weights: str | os.PathLike | None = None) -> str:
    """The runtime for `kind` and an explicit weights file: a Keras .weights.h5 given without
    a kind is read by TensorFlow (it is the only runtime that reads it)."""
    if kind is None and weights and not str(weights).endswith(".tflite"):
        return "tensorflow"
    kind = kind or default_encoder()
    if kind not in ENCODERS:
        raise EncoderWeightsError(f"unknown encoder {kind!r}: expected one of {', '.join(ENCODERS)}.")
    if kind == "litert" and weights and not str(weights).endswith(".tflite"):
        raise EncoderWeightsError(f"{Path(weights).name}: the LiteRT encoder reads a .tflite file; "
                                  "pass --encoder tensorflow to encode with Keras weights.")
    return kind


def open_encoder(kind: str | None = None, weights: str | os.PathLike | None = None):
    """A LiteEncoder or an Encoder (TensorFlow), with verified ImageNet weights."""
    if encoder_kind(kind, weights) == "litert":
        from captioner.vision.litert import LiteEncoder
        return LiteEncoder(weights)
    from captioner.vision.encoder import Encoder
    from captioner.vision.tf_setup import import_tensorflow_quietly
    import_tensorflow_quietly()
    return Encoder(weights)
