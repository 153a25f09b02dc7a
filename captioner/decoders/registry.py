"""The two decoders behind one interface: build the Keras model, get its NumPy step, and
shape a training batch the way that model reads it. `config.decoder` picks the kind."""
from __future__ import annotations

import numpy as np

from captioner.decoders.config import Config


def build_decoder(config: Config, vocab_size: int | None = None):
    """A fresh Keras decoder of the kind `config.decoder` names."""
    if config.decoder == "attention":
        from captioner.decoders.attention import build_attention_decoder
        return build_attention_decoder(config, vocab_size)
    from captioner.decoders.merge import build_merge_decoder
    return build_merge_decoder(config, vocab_size)


def is_tuned(model) -> bool:
    """Whether a Keras model is a decoder with its own exit flow (training/finetune.py)."""
    return hasattr(model, "exit_flow")


def decoder_part(model):
    """The caption decoder of a model, tuned or not."""
    return model.caption_decoder if is_tuned(model) else model


def numpy_decoder(model, config: Config):
    """The NumPy decoding step on a Keras decoder's current weights (a tuned model's decoder
    part: it reads the maps its exit flow makes, training/finetune.head_maps)."""
    model = decoder_part(model)
    if config.decoder == "attention":
        from captioner.decoders.attention import AttentionDecoder
        return AttentionDecoder.from_keras(model)
    from captioner.decoders.merge import MergeDecoder
    return MergeDecoder.from_keras(model)


def numpy_decoder_from_layers(layers: dict, config: Config):
    """The NumPy decoding step on a decoder's arrays as decoders/weights_file.py reads them
    from its .weights.h5, without Keras or TensorFlow."""
    if config.decoder == "attention":
        from captioner.decoders.attention import AttentionDecoder as kind
    else:
        from captioner.decoders.merge import MergeDecoder as kind
    return kind.from_layers(layers.__getitem__)


def training_features(config: Config, feature_maps: np.ndarray) -> np.ndarray:
    """What a decoder reads per photo: (n, 100, 2048) float16 regions, or pooled vectors."""
    if config.decoder == "attention":
        return feature_maps.reshape(len(feature_maps), -1, feature_maps.shape[-1])
    from captioner.vision.encoder import pool
    return pool(feature_maps)


def keras_inputs(config: Config, photo_features: np.ndarray, photos: np.ndarray,
                 tokens: np.ndarray) -> dict:
    """The model's inputs for captions `tokens` (C, T) of photos `photos` (C,), where
    `photo_features` holds one row per photo of the split (see training_features)."""
    if config.decoder == "attention":
        # Each photo once, however many of its captions are in the batch.
        unique, index = np.unique(photos, return_inverse=True)
        return {"regions": photo_features[unique].astype(np.float32),
                "photo_index": index.astype(np.int32), "tokens": tokens.astype(np.int32)}
    return {"image": photo_features[photos].astype(np.float32), "tokens": tokens.astype(np.int32)}
