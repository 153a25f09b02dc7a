"""The Python API the app and the command line use.

    captioner = Captioner.load("trained/")
    features = captioner.features("photo.jpg")            # encode once (~0.25 s on 2 cores)
    for beam in (1, 3, 5):
        captioner.caption(features, beam=beam, top=3)      # decode many times (milliseconds)

Thread safety: the encoder serialises its calls with a lock; decoding only reads the NumPy
weight arrays and allocates its own state, so any number of threads may decode at once.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .artifacts import TrainedModel, load_trained
from .decoding import Caption, beam_search, greedy_search
from .encoder import Encoder, EncoderWeightsError
from .images import ImageSource, load_image, prepare_for_encoder
from .model import DecoderWeights

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "trained"
MAX_BEAM = 20


class Captioner:
    def __init__(self, trained: TrainedModel, encoder: Encoder | None = None,
                 encoder_weights: str | os.PathLike | None = None):
        self.trained = trained
        self.config = trained.config
        self.vocab = trained.vocab
        self.weights = DecoderWeights.from_keras(trained.model)
        self._encoder = encoder
        self._encoder_weights = encoder_weights
        self._encoder_lock = threading.Lock()

    @classmethod
    def load(cls, directory: str | os.PathLike | None = None, encoder: Encoder | None = None,
             encoder_weights: str | os.PathLike | None = None) -> "Captioner":
        directory = directory or os.environ.get("CAPTIONER_MODEL_DIR") or DEFAULT_MODEL_DIR
        return cls(load_trained(directory), encoder, encoder_weights)

    # -- encoder ---------------------------------------------------------------------------
    @property
    def encoder(self) -> Encoder:
        """The Xception encoder, built on first use (it takes a few seconds)."""
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    self._encoder = Encoder(self._encoder_weights)
        return self._encoder

    def check_encoder(self) -> None:
        """Build the encoder now and refuse one whose weights differ from training's."""
        expected = (self.trained.manifest.get("encoder") or {}).get("weights_checksum")
        if expected and self.encoder.checksum != expected:
            raise EncoderWeightsError(f"Encoder weights {self.encoder.checksum[:12]} differ from the "
                               f"ones this model was trained with ({expected[:12]}).")

    def features(self, image: ImageSource, name: str | None = None) -> np.ndarray:
        """2048-d Xception vector of one photo (path, bytes or PIL image)."""
        return self.features_batch([image], [name])[0]

    def features_batch(self, images: list[ImageSource], names: list[str | None] | None = None) -> np.ndarray:
        names = names or [None] * len(images)
        arrays = np.stack([prepare_for_encoder(load_image(img, name)) for img, name in zip(images, names)])
        return self.encoder.encode(arrays)

    def feature_map(self, image: ImageSource, name: str | None = None) -> np.ndarray:
        """10x10x2048 spatial Xception features, for attention models."""
        return self.encoder.feature_maps(prepare_for_encoder(load_image(image, name)))[0]

    # -- decoder ---------------------------------------------------------------------------
    def caption(self, features: np.ndarray, beam: int | None = None, top: int = 1,
                alpha: float | None = None, max_length: int | None = None) -> list[Caption]:
        """The `top` best captions for one feature vector; beam=1 is greedy search."""
        return self.caption_batch(np.atleast_2d(features), beam, top, alpha, max_length)[0]

    def caption_batch(self, features: np.ndarray, beam: int | None = None, top: int = 1,
                      alpha: float | None = None, max_length: int | None = None) -> list[list[Caption]]:
        beam = self.config.default_beam if beam is None else int(beam)
        if not 1 <= beam <= MAX_BEAM:
            raise ValueError(f"beam width must be between 1 and {MAX_BEAM}, got {beam}")
        if not 1 <= top <= MAX_BEAM:
            raise ValueError(f"top must be between 1 and {MAX_BEAM}, got {top}")
        alpha = self.config.length_alpha if alpha is None else alpha
        max_length = max_length or self.config.max_decode_length
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.config.feature_dim:
            raise ValueError(f"expected features of shape (n, {self.config.feature_dim}), "
                             f"got {features.shape}")
        if beam == 1 and top == 1:
            return [[cap] for cap in greedy_search(self.weights, self.vocab, features, max_length, alpha)]
        return beam_search(self.weights, self.vocab, features, beam, top, max_length, alpha)

    def caption_image(self, image: ImageSource, beam: int | None = None, top: int = 1,
                      name: str | None = None) -> list[Caption]:
        return self.caption(self.features(image, name), beam=beam, top=top)

    # -- what the app shows about the model ------------------------------------------------
    @property
    def metrics(self) -> dict | None:
        return self.trained.metrics

    @property
    def history(self) -> list[dict]:
        return self.trained.history

    @property
    def manifest(self) -> dict:
        return self.trained.manifest

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)
