"""Fine-tuning Xception's exit flow with a decoder (issue 24).

The entry and middle flows stay frozen and run once per photo, into a cache of their output
(`trunk_features`); training then runs, per batch, the exit flow (a copy with weights of its
own, vision/exit_flow.py) on those cached outputs and the decoder on its map, and updates both:

    cached trunk output (P, 19, 19, 728) -> exit flow -> (P, 10, 10, 2048) -> 100 regions -> decoder
                                                         (their average, for the merge decoder)

`TunedCaptionModel` is that pair as one Keras model, so the shared training step, checkpoints
and resumes work on it unchanged. The exit flow learns with its own optimiser at
`encoder_learning_rate` (Adam's step does not depend on a gradient's scale, so one optimiser
with scaled gradients could not give it a smaller rate); its moments are saved with the
model's. Its BatchNormalization layers run in inference mode: batches of a dozen Flickr8k
photos would give poor estimates of the statistics ImageNet's millions fixed, and the frozen
trunk below keeps producing the distribution those statistics describe. Their scale and offset
still learn, like every other weight of the exit flow.
"""
from __future__ import annotations

import functools

import numpy as np

from captioner.decoders.config import Config
from captioner.decoders.registry import is_tuned

# Settings that may change when a run resumes, until its fine-tuning has begun.
FINETUNE_SETTINGS = frozenset({"finetune_encoder", "encoder_learning_rate", "finetune_start_epoch",
                               "finetune_mirror"})
MAP_BATCH = 32


def split_layer(config: Config) -> str:
    from captioner.vision.exit_flow import SPLITS
    return SPLITS[config.finetune_encoder]


def tunes_at(config: Config, epoch: int) -> bool:
    """Whether `epoch` (1-based, over both phases) trains the exit flow."""
    return bool(config.finetune_encoder) and epoch >= config.finetune_start_epoch


def new_head(config: Config, imagenet: bool = True):
    """The exit flow (or block 14) as a model of its own: at the cached ImageNet weights, or
    with `imagenet` False at random ones (for weights about to be loaded over them)."""
    from captioner.vision.exit_flow import trunk_and_head
    if imagenet:
        return trunk_and_head(imagenet_xception(), split_layer(config))[1]
    import keras
    return keras.models.clone_model(_head_template(split_layer(config)))   # fresh random weights


@functools.cache
def _head_template(layer: str):
    """A head of random weights to clone: building all of Xception for one (as every resume,
    extension and kept-epoch load does) costs about 1.5 s more here."""
    from captioner.vision.encoder import build_xception
    from captioner.vision.exit_flow import trunk_and_head
    return trunk_and_head(build_xception(), layer)[1]


def imagenet_xception():
    """Xception at the cached, verified ImageNet weights (the tuned layers' starting point)."""
    from captioner.vision.encoder import load_cached_weights
    return load_cached_weights()[0]


def _classes():
    if _CLASSES:
        return _CLASSES
    import keras
    from keras import ops

    class TunedCaptionModel(keras.Model):
        """Inputs: trunk (P, h, w, c) cached trunk outputs, photo_index (C,), tokens (C, T) -> logits.
        The attention decoder reads each photo's 100 regions; with `pooled`, the merge decoder
        reads their average, one per caption row (as vision/encoder.pool gives it the frozen map)."""

        def __init__(self, exit_flow, caption_decoder, pooled=False, **kwargs):
            super().__init__(**kwargs)
            self.exit_flow = exit_flow
            self.caption_decoder = caption_decoder
            self.pooled = pooled

        def call(self, inputs, training=False):
            maps = self.exit_flow(ops.cast(inputs["trunk"], "float32"), training=False)  # BatchNorm frozen
            regions = ops.reshape(maps, (ops.shape(maps)[0], -1, ops.shape(maps)[-1]))
            if self.pooled:
                image = ops.take(ops.mean(regions, axis=1), inputs["photo_index"], axis=0)
                return self.caption_decoder({"image": image, "tokens": inputs["tokens"]}, training=training)
            return self.caption_decoder({"regions": regions, "photo_index": inputs["photo_index"],
                                         "tokens": inputs["tokens"]}, training=training)

    _CLASSES["TunedCaptionModel"] = TunedCaptionModel
    return _CLASSES


_CLASSES: dict = {}


def build_tuned_model(config: Config, head=None, decoder=None):
    """The exit flow and a decoder as one model (ImageNet exit flow and a fresh decoder by default)."""
    from captioner.decoders.registry import build_decoder
    model = _classes()["TunedCaptionModel"](head if head is not None else new_head(config),
                                            decoder if decoder is not None else build_decoder(config),
                                            pooled=config.decoder != "attention", name="tuned_caption_model")
    # Built on a dummy batch, so its weights can be loaded (Keras refuses an unbuilt model).
    model({"trunk": np.zeros((1, *model.exit_flow.input_shape[1:]), np.float32),
           "photo_index": np.zeros((1,), np.int32), "tokens": np.zeros((1, 2), np.int32)})
    return model


def add_encoder_optimizer(model, config: Config) -> None:
    """The exit flow's own optimiser, built so saved weights hold (and restore) its moments."""
    import keras
    model.encoder_optimizer = keras.optimizers.Adam(config.encoder_learning_rate, clipnorm=5.0)
    model.encoder_optimizer.build(model.exit_flow.trainable_variables)


def optimiser_groups(model, train_exit_flow: bool = True) -> list:
    """[(optimiser, its variables)]: the decoder's, and for a tuned model the exit flow's
    (unless `train_exit_flow` is False: then no gradient reaches it and it stays as it is)."""
    if not is_tuned(model):
        return [(model.optimizer, model.trainable_variables)]
    return [(model.optimizer, model.caption_decoder.trainable_variables),
            *([(model.encoder_optimizer, model.exit_flow.trainable_variables)] if train_exit_flow else [])]


def trains_exit_flow(config: Config, phase: str) -> bool:
    """Whether a tuned exit flow learns in `phase` ("xe" or "scst")."""
    return phase != "scst" or config.scst_exit_flow == "train"


def head_maps(model, trunk: np.ndarray, batch_size: int = MAP_BATCH) -> np.ndarray:
    """The tuned exit flow's map of cached trunk outputs, as a decoder reads it: (n, 100, 2048)
    float16 regions, like the frozen features they replace."""
    import tensorflow as tf
    run = getattr(model, "_head_function", None)
    if run is None:  # one traced function per model (re-tracing per batch costs seconds)
        head = model.exit_flow
        run = tf.function(lambda x: head(x, training=False), reduce_retracing=True)
        model._head_function = run
    out = None
    for start in range(0, len(trunk), batch_size):
        maps = run(tf.constant(trunk[start:start + batch_size], tf.float32)).numpy()
        if out is None:
            out = np.empty((len(trunk), maps.shape[1] * maps.shape[2], maps.shape[3]), np.float16)
        out[start:start + len(maps)] = maps.reshape(len(maps), -1, maps.shape[-1])
    return out if out is not None else np.zeros((0, 100, 2048), np.float16)


MIRRORED = "train_mirrored"   # trunk_features' key for the mirrored training photos


def trunk_cache(encoder_checksum: str, layer: str, mirrored: bool = False):
    """The cache of the trunk's outputs at `layer`, which the exit flow reads (of mirrored
    photos, apart)."""
    from captioner.vision.exit_flow import SPLIT_SHAPES
    from captioner.vision.features import FeatureCache
    return FeatureCache(encoder_checksum, shape=SPLIT_SHAPES[layer],
                        part=f"{layer}-mirrored" if mirrored else layer)


def trunk_features(dataset, splits: dict, config: Config, progress: bool, trunk_encoder=None) -> dict:
    """Each split's cached trunk output (n, h, w, c) float16, computed where missing by the
    trunk on LiteRT (vision/exit_flow.trunk_encoder) or `trunk_encoder`; with
    `finetune_mirror`, also the training photos' mirrored ones (key MIRRORED)."""
    from captioner.vision.exit_flow import trunk_encoder as lite_trunk
    from captioner.vision.features import extract_feature_maps
    layer = split_layer(config)
    encoder = trunk_encoder or lite_trunk(layer)
    todo = [(split, names, False) for split, names in splits.items() if names]
    if config.finetune_mirror and splits.get("train"):
        todo.append((MIRRORED, splits["train"], True))
    return {key: extract_feature_maps([dataset.image_path(n) for n in names], encoder,
                                      trunk_cache(encoder.checksum, layer, mirrored), progress=progress,
                                      desc=f"Exit-flow inputs ({key.replace('_', ', ')})", mirrored=mirrored)
            for key, names, mirrored in todo}


MIRROR_WORDS = frozenset({"left", "right"})


def mirrorable(captions: dict, names: list[str]) -> np.ndarray:
    """Which photos may be read mirrored: none of whose captions says "left" or "right"
    (mirrored, they would say the wrong one)."""
    from captioner.data.text import clean_caption
    return np.array([not any(MIRROR_WORDS.intersection(clean_caption(c)) for c in captions[n])
                     for n in names], dtype=bool)
