"""The encoder of a model with its own exit flow (issue 24): the shared ImageNet trunk, then the
model's tuned head.

    photo -> trunk (ImageNet, shared, vision/exit_flow.py) -> float16 -> head (the model's own) -> map

The trunk's output is rounded to float16 between the two, as in training, where the head
learnt on the cached (float16) trunk outputs. On LiteRT both halves are .tflite files in the
cache: the trunk converted from the ImageNet weights, the head from the model's
exit_flow.weights.h5 (`convert_head`; `fetch-weights` converts every tuned model in trained/).
Each file's record names what it was converted from, and a head converted from other weights
than the model directory's is refused.

`checksum` (what feature caches and neighbour indexes are keyed by) names the pair, so tuned
maps never mix with frozen ones; `base_checksum` is the ImageNet weights', which the model's
manifest records as where it started.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np

from captioner.vision.encoder import EncoderWeightsError, cache_dir, pool

HEADS_DIR = "exit_flows"


def tuned_checksum(base_checksum: str, head_sha256: str) -> str:
    return hashlib.sha256(f"{base_checksum}+{head_sha256}".encode()).hexdigest()


def head_lite_path(head_sha256: str) -> Path:
    return cache_dir() / HEADS_DIR / f"exit_flow-{head_sha256[:24]}.tflite"


def keras_head(weights_path: Path, split: str, xception=None):
    """The exit flow at a model's tuned weights, as a Keras model (TensorFlow)."""
    from captioner.vision.encoder import load_cached_weights
    from captioner.vision.exit_flow import trunk_and_head
    xception = xception if xception is not None else load_cached_weights()[0]
    head = trunk_and_head(xception, split)[1]
    try:
        head.load_weights(str(weights_path))
    except Exception as exc:
        raise EncoderWeightsError(f"{weights_path}: not an exit flow from {split} "
                                  f"({str(exc).splitlines()[0][:160]}).") from None
    return head


def convert_head(weights_path: Path, head_sha256: str, split: str) -> Path:
    """The model's exit flow as a LiteRT file in the cache (needs TensorFlow), unless it is there."""
    from captioner.vision.litert import convert, verified_record
    path = head_lite_path(head_sha256)
    try:
        verified_record(path, source=head_sha256)
        return path
    except EncoderWeightsError:
        pass  # missing, damaged or from other weights: convert again
    return convert(keras_head(weights_path, split), head_sha256, path)


class TunedEncoder:
    """The Encoder's interface (feature_maps, encode, checksum, source, kind) over a trunk and
    a head, each a callable from a float32 batch to float16 maps."""

    def __init__(self, trunk, head, base_checksum: str, head_sha256: str, kind: str, source: str):
        self._trunk, self._head = trunk, head
        self.base_checksum, self.head_checksum = base_checksum, head_sha256
        self.checksum = tuned_checksum(base_checksum, head_sha256)
        self.kind, self.source = kind, source
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        from captioner.data.images import ENCODER_SIZE
        self.feature_maps(np.zeros((1, ENCODER_SIZE, ENCODER_SIZE, 3), np.float32))

    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        with self._lock:
            inner = np.asarray(self._trunk(batch), np.float16)   # as the training cache holds it
            return np.asarray(self._head(inner.astype(np.float32)), np.float16)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return pool(self.feature_maps(batch))


def open_tuned_encoder(kind: str, head_weights: Path, head_sha256: str, split: str) -> TunedEncoder:
    """The trunk and a model's head on `kind` ("litert": the cached conversions; "tensorflow": Keras)."""
    if kind == "litert":
        from captioner.vision.exit_flow import trunk_lite_path
        from captioner.vision.litert import SETUP_HINT, LiteEncoder
        trunk_path, head_path = trunk_lite_path(split), head_lite_path(head_sha256)
        for path in (trunk_path, head_path):
            if not path.is_file():
                raise EncoderWeightsError(f"{head_weights.parent}: has a tuned exit flow, whose LiteRT "
                                          f"conversion {path} is missing; {SETUP_HINT}.")
        trunk = LiteEncoder(trunk_path)
        head = LiteEncoder(head_path, source=head_sha256)
        return TunedEncoder(trunk.feature_maps, head.feature_maps, trunk.checksum, head_sha256, "litert",
                            f"{trunk_path} + {head_path} (LiteRT)")
    from captioner.vision.encoder import Encoder
    from captioner.vision.exit_flow import trunk_and_head
    from captioner.vision.tf_setup import import_tensorflow_quietly
    tf = import_tensorflow_quietly()
    base = Encoder(allow_download=False)
    trunk_model = trunk_and_head(base.model, split)[0]
    head_model = keras_head(head_weights, split, base.model)

    def function(model):
        run = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        return lambda batch: run(tf.constant(batch)).numpy().astype(np.float16)
    return TunedEncoder(function(trunk_model), function(head_model), base.checksum, head_sha256,
                        "tensorflow", f"{base.source} + {head_weights} (TensorFlow)")


def imagenet_split_encoder(split: str = "add_10") -> TunedEncoder:
    """The trunk and the ImageNet exit flow as two LiteRT files: what a tuned model's encoder
    costs (the same layers at other weights), for benchmarks/bench_decode.py. Converted once
    into the cache (needs TensorFlow)."""
    from captioner.vision.encoder import EXPECTED_CHECKSUM, load_cached_weights
    from captioner.vision.exit_flow import trunk_and_head, trunk_encoder
    from captioner.vision.litert import LiteEncoder, convert, verified_record
    trunk = trunk_encoder(split)
    path = cache_dir() / HEADS_DIR / f"imagenet-{split}.tflite"
    try:
        verified_record(path)
    except EncoderWeightsError:
        convert(trunk_and_head(load_cached_weights()[0], split)[1], EXPECTED_CHECKSUM, path)
    head = LiteEncoder(path, source=EXPECTED_CHECKSUM)
    return TunedEncoder(trunk.feature_maps, head.feature_maps, trunk.checksum, EXPECTED_CHECKSUM,
                        "litert", f"{trunk.path} + {path} (LiteRT)")
