"""The encoder of a model with its own exit flow (issue 24): the shared ImageNet trunk, then the
model's tuned head.

    photo -> trunk (ImageNet, shared, vision/exit_flow.py) -> float16 -> ImageNet's head -> view 0
                                                                      -> each model's head -> view 1, 2, ...

The trunk's output is rounded to float16 between the two, as in training, where the head
learnt on the cached (float16) trunk outputs. On LiteRT both halves are .tflite files in the
cache: the trunk converted from the ImageNet weights, the head from the model's
exit_flow.weights.h5 (`convert_head`; `fetch-weights` converts every tuned model in trained/).
Each file's record names what it was converted from, and a head converted from other weights
than the model directory's is refused.

A model with its own exit flow also needs the photo's ImageNet map: familiarity, the nearest
training photos and consensus compare it with the training photos' frozen maps, and in an
ensemble a frozen member decodes it. So the encoder runs the trunk once and then every exit flow
the models read, ImageNet's first, and gives their maps side by side as "views" (`ViewsEncoder`):
each costs about 16% of a whole Xception pass.

`checksum` (what feature caches are keyed by) names the trunk and every head, so tuned maps
never mix with frozen ones; `base_checksum` is the ImageNet weights', which the model's
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


class ViewsEncoder:
    """The Encoder's interface (feature_maps, encode, checksum, source, kind) for models with
    their own exit flows: the trunk once, then each head, each a callable from a float32 batch
    to float16 maps. `feature_maps` gives (n, views, 10, 10, 2048): view 0 is the ImageNet
    exit flow's map (the frozen encoder's, which familiarity, the nearest photos and consensus
    read, and frozen models decode), view i the map of `head_checksums[i - 1]`'s tuned exit flow."""

    def __init__(self, trunk, heads: list, base_checksum: str, head_checksums: list[str], kind: str,
                 source: str, trunk_layer: str = "add_10"):
        if len(heads) != len(head_checksums) + 1:
            raise ValueError("one head for ImageNet's exit flow, then one per tuned exit flow")
        self._trunk, self._heads = trunk, list(heads)
        self.trunk_layer = trunk_layer   # where the trunk ends and the heads begin
        self.base_checksum, self.head_checksums = base_checksum, list(head_checksums)
        self.checksum = views_checksum(base_checksum, self.head_checksums)
        self.kind, self.source = kind, source
        self._lock = threading.Lock()

    @property
    def views(self) -> int:
        return len(self._heads)

    def warm_up(self) -> None:
        from captioner.data.images import ENCODER_SIZE
        self.feature_maps(np.zeros((1, ENCODER_SIZE, ENCODER_SIZE, 3), np.float32))

    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        with self._lock:
            inner = np.asarray(self._trunk(batch), np.float16)   # as the training cache holds it
            return self._heads_on(inner)

    def maps_from_trunk(self, inner: np.ndarray) -> np.ndarray:
        """`feature_maps` of photos whose trunk output `inner` (n, h, w, c) float16 is already
        at hand (fine-tuning's cache of it, training/finetune.trunk_cache): the heads alone."""
        with self._lock:
            return self._heads_on(np.asarray(inner, np.float16))

    def _heads_on(self, inner: np.ndarray) -> np.ndarray:
        inner = inner.astype(np.float32)
        return np.stack([np.asarray(head(inner), np.float16) for head in self._heads], axis=1)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """The pooled ImageNet vector (view 0), as the frozen encoder's `encode` gives it."""
        return pool(self.feature_maps(batch)[:, 0])


def views_checksum(base_checksum: str, head_checksums: list[str]) -> str:
    """What a ViewsEncoder's maps are keyed by: the trunk's weights and every tuned head's."""
    return tuned_checksum(base_checksum, "+".join(["imagenet", *head_checksums]))


def open_views_encoder(kind: str, flows: list) -> ViewsEncoder:
    """The trunk, ImageNet's exit flow and each of `flows` (artifacts.ExitFlow, all cut at the
    same layer) on `kind` ("litert": the cached conversions; "tensorflow": Keras)."""
    from captioner.vision.encoder import EXPECTED_CHECKSUM
    layers = {flow.layer for flow in flows}
    if len(layers) != 1:
        raise EncoderWeightsError("models whose exit flows start at different layers "
                                  f"({', '.join(sorted(layers))}) cannot share one trunk.")
    split = layers.pop()
    if kind == "litert":
        from captioner.vision.exit_flow import trunk_lite_path
        from captioner.vision.litert import SETUP_HINT, LiteEncoder
        paths = [trunk_lite_path(split), imagenet_head_path(split), *(head_lite_path(f.sha256) for f in flows)]
        for path in paths:
            if not path.is_file():
                raise EncoderWeightsError(f"{flows[0].weights.parent}: has a tuned exit flow, whose LiteRT "
                                          f"conversion {path} is missing; {SETUP_HINT}.")
        trunk = LiteEncoder(paths[0], source=EXPECTED_CHECKSUM)  # the cached trunk: of the ImageNet weights
        heads = [LiteEncoder(paths[1], source=EXPECTED_CHECKSUM)]
        heads += [LiteEncoder(path, source=flow.sha256) for path, flow in zip(paths[2:], flows)]
        return ViewsEncoder(trunk.feature_maps, [h.feature_maps for h in heads], trunk.checksum,
                            [f.sha256 for f in flows], "litert", " + ".join(map(str, paths)) + " (LiteRT)", split)
    from captioner.vision.encoder import Encoder
    from captioner.vision.exit_flow import trunk_and_head
    from captioner.vision.tf_setup import import_tensorflow_quietly
    tf = import_tensorflow_quietly()
    base = Encoder()
    trunk_model, imagenet_head = trunk_and_head(base.model, split)

    def function(model):
        run = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        return lambda batch: run(tf.constant(batch)).numpy().astype(np.float16)
    heads = [imagenet_head, *(keras_head(f.weights, split, base.model) for f in flows)]
    return ViewsEncoder(function(trunk_model), [function(h) for h in heads], base.checksum,
                        [f.sha256 for f in flows], "tensorflow",
                        f"{base.source} + " + " + ".join(str(f.weights) for f in flows) + " (TensorFlow)", split)


def imagenet_head_path(split: str) -> Path:
    return cache_dir() / HEADS_DIR / f"imagenet-{split}.tflite"


def convert_imagenet_head(split: str) -> Path:
    """ImageNet's exit flow from `split` as a LiteRT file in the cache (needs TensorFlow), unless
    it is there: view 0 of every ViewsEncoder."""
    from captioner.vision.encoder import EXPECTED_CHECKSUM, load_cached_weights
    from captioner.vision.exit_flow import trunk_and_head
    from captioner.vision.litert import convert, verified_record
    path = imagenet_head_path(split)
    try:
        verified_record(path)
        return path
    except EncoderWeightsError:
        return convert(trunk_and_head(load_cached_weights()[0], split)[1], EXPECTED_CHECKSUM, path)


def convert_views(flows: list) -> None:
    """Every LiteRT file `open_views_encoder("litert", flows)` reads, converted where missing
    (needs TensorFlow): the trunk, ImageNet's exit flow and each tuned one."""
    from captioner.vision.exit_flow import trunk_encoder
    for layer in sorted({flow.layer for flow in flows}):
        trunk_encoder(layer)
        convert_imagenet_head(layer)
    for flow in flows:
        convert_head(flow.weights, flow.sha256, flow.layer)


def imagenet_split_encoder(split: str = "add_10", heads: int = 2) -> ViewsEncoder:
    """The trunk, then ImageNet's exit flow `heads` times: what the encoder of a model with its
    own exit flow costs (the trunk, ImageNet's head and its own: the same layers at other
    weights), for benchmarks/bench_decode.py. Converted once into the cache (needs TensorFlow)."""
    from captioner.vision.exit_flow import trunk_encoder
    from captioner.vision.litert import LiteEncoder
    from captioner.vision.encoder import EXPECTED_CHECKSUM
    trunk = trunk_encoder(split)
    path = convert_imagenet_head(split)
    head = LiteEncoder(path, source=EXPECTED_CHECKSUM)
    return ViewsEncoder(trunk.feature_maps, [head.feature_maps] * heads, trunk.checksum,
                        [EXPECTED_CHECKSUM] * (heads - 1), "litert", f"{trunk.path} + {path} x {heads} (LiteRT)", split)
