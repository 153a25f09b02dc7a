"""The Python API the app and the command line use.

    captioner = Captioner.load()                          # the best model in trained/ (or name=...)
    features = captioner.features("photo.jpg")            # encode once (~0.25 s on 2 cores)
    for beam in (1, 3, 5):
        captioner.caption(features, beam=beam, top=3)      # decode many times (milliseconds)

`features` is Xception's 10x10x2048 map (float16); the merge decoder reads its mean, the
attention decoder all 100 regions, so one encoder pass serves both models.

Thread safety: the encoder serialises its calls with a lock; decoding only reads the NumPy
weight arrays and allocates its own state, so any number of threads may decode at once.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from .artifacts import MANIFEST, METRICS, ArtifactError, TrainedModel, load_trained, read_json
from .decoders import numpy_decoder
from .decoding import Caption, beam_search, greedy_search
from .encoder import Encoder, EncoderWeightsError
from .images import ImageSource, load_image, prepare_for_encoder
from .trained_ensemble import TrainedEnsemble, is_ensemble, load_ensemble, stale_members


def _bundled_model_dir() -> Path:
    """trained/ of the checkout when running from the repository; otherwise the copy that
    `pip install .` puts inside the package (pyproject.toml maps trained/ to captioner/trained)."""
    package = Path(__file__).resolve().parent
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "trained").is_dir():
        return checkout / "trained"
    return package / "trained"


DEFAULT_MODEL_DIR = _bundled_model_dir()
MAX_BEAM = 20


def default_model_root() -> Path:
    return Path(os.environ.get("CAPTIONER_MODEL_DIR") or DEFAULT_MODEL_DIR)


def available_models(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Model directories by name: the subdirectories of `root` holding a model (trained/merge,
    trained/attention, trained/ensemble), or `root` itself, named by its decoder, when it is
    one model."""
    root = Path(root or default_model_root())
    if (root / MANIFEST).is_file():
        if is_ensemble(root):
            return {"ensemble": root}
        try:
            name = read_json(root / "config.json").get("decoder", "merge")
        except ArtifactError:
            name = root.name
        return {name: root}
    if not root.is_dir():
        return {}
    return {d.name: d for d in sorted(root.iterdir()) if (d / MANIFEST).is_file()}


def test_cider(directory: Path) -> float:
    """A model's test CIDEr at beam 3 (as recorded by training), or -1 if it has none, or if
    it is an ensemble whose members have been retrained since it was scored."""
    try:
        if is_ensemble(directory) and stale_members(directory):
            return -1.0
        return float(read_json(Path(directory) / METRICS)["beam"]["3"]["CIDEr"])
    except (ArtifactError, KeyError, TypeError, ValueError):
        return -1.0


def resolve_model(root: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """The directory of model `name`, or of the best model by test CIDEr."""
    return ranked_models(root, name)[0]


def ranked_models(root: str | os.PathLike | None = None, name: str | None = None) -> list[Path]:
    """Model `name`'s directory alone, or every model's, the best by test CIDEr first."""
    root = Path(root or default_model_root())
    models = available_models(root)
    if not models:
        raise ArtifactError(f"{root}: no trained model here (run `make train`, or "
                            "training_scripts/train.py).")
    if name is None:
        return sorted(models.values(), key=lambda d: (test_cider(d), d.name), reverse=True)
    if name not in models:
        raise ArtifactError(f"{root}: no model named {name!r} (available: {', '.join(models)}).")
    return [models[name]]


def load_model(directory: str | os.PathLike) -> TrainedModel | TrainedEnsemble:
    """A trained model's directory, or an ensemble's."""
    return load_ensemble(directory) if is_ensemble(directory) else load_trained(directory)


class Captioner:
    def __init__(self, trained: TrainedModel | TrainedEnsemble, encoder: Encoder | None = None,
                 encoder_weights: str | os.PathLike | None = None):
        self.trained = trained
        self.config = trained.config
        self.vocab = trained.vocab
        if isinstance(trained, TrainedEnsemble):
            self.name, self.decoder = "ensemble", trained.numpy_decoder()
        else:
            self.name, self.decoder = trained.config.decoder, numpy_decoder(trained.model, trained.config)
        self._encoder = encoder
        self._encoder_weights = encoder_weights
        self._encoder_lock = threading.Lock()
        self.passed_over: list[str] = []  # better models that could not be loaded, and why

    @classmethod
    def load(cls, directory: str | os.PathLike | None = None, name: str | None = None,
             encoder: Encoder | None = None,
             encoder_weights: str | os.PathLike | None = None) -> "Captioner":
        """Model `name` ("merge", "attention", "ensemble") from `directory` (default trained/),
        or the one with the best test CIDEr; `directory` may also be one model's own directory.
        Without a name, a best model that cannot be loaded (a damaged member of the ensemble)
        gives way to the next best, and `passed_over` says why; if none loads, the best's
        error is raised."""
        errors = []
        for candidate in ranked_models(directory, name):
            try:
                trained = load_model(candidate)
            except ArtifactError as exc:
                if name is not None:
                    raise
                errors.append(exc)
                continue
            captioner = cls(trained, encoder, encoder_weights)
            captioner.passed_over = [str(e) for e in errors]
            return captioner
        raise errors[0]

    @property
    def has_attention(self) -> bool:
        return self.decoder.has_attention

    @property
    def members(self) -> dict:
        """An ensemble's members by name (their TrainedModel, already loaded); {} for one model."""
        if isinstance(self.trained, TrainedEnsemble):
            return dict(zip(self.trained.member_names, self.trained.members))
        return {}

    @property
    def attention_source(self) -> str:
        """Whose attention `caption(..., attention=True)` returns: this model's, or for an
        ensemble its attention member's (where that decoder looked as the ensemble chose)."""
        if self.members:
            return next((n for n, m in self.members.items() if m.config.decoder == "attention"), None)
        return self.name if self.has_attention else None

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
        """Xception's (10, 10, 2048) float16 map of one photo (path, bytes or PIL image)."""
        return self.features_batch([image], [name])[0]

    def features_batch(self, images: list[ImageSource], names: list[str | None] | None = None) -> np.ndarray:
        names = names or [None] * len(images)
        arrays = np.stack([prepare_for_encoder(load_image(img, name)) for img, name in zip(images, names)])
        return self.encoder.feature_maps(arrays)

    # -- decoder ---------------------------------------------------------------------------
    def caption(self, features: np.ndarray, beam: int | None = None, top: int = 1,
                alpha: float | None = None, max_length: int | None = None,
                attention: bool = False, trace: list | None = None) -> list[Caption]:
        """The `top` best captions for one photo's features; beam=1 is greedy search.
        With `attention` (attention model only), each caption carries its per-word weights;
        with a `trace` list, the beam search appends what each step kept and pruned
        (decoding.TraceStep), for drawing it."""
        return self.caption_batch(np.asarray(features)[None], beam, top, alpha, max_length,
                                  attention, trace)[0]

    def caption_batch(self, features: np.ndarray, beam: int | None = None, top: int = 1,
                      alpha: float | None = None, max_length: int | None = None,
                      attention: bool = False, trace: list | None = None) -> list[list[Caption]]:
        beam = self.config.default_beam if beam is None else int(beam)
        if not 1 <= beam <= MAX_BEAM:
            raise ValueError(f"beam width must be between 1 and {MAX_BEAM}, got {beam}")
        if not 1 <= top <= MAX_BEAM:
            raise ValueError(f"top must be between 1 and {MAX_BEAM}, got {top}")
        alpha = self.config.length_alpha if alpha is None else alpha
        max_length = max_length or self.config.max_decode_length
        features = np.asarray(features)
        maps = features.ndim == 4 and features.shape[1:] == (10, 10, self.config.feature_dim)
        vectors = features.ndim == 2 and features.shape[1] == self.config.feature_dim
        if not (maps or (vectors and not self.has_attention)):
            raise ValueError(f"expected Xception maps of shape (n, 10, 10, {self.config.feature_dim})"
                             + ("" if self.has_attention else f" or vectors (n, {self.config.feature_dim})")
                             + f", got {features.shape}")
        attention = attention and self.has_attention
        if beam == 1 and top == 1 and trace is None:  # beam 1 is greedy, but only beams trace
            return [[cap] for cap in greedy_search(self.decoder, self.vocab, features, max_length,
                                                   alpha, attention)]
        return beam_search(self.decoder, self.vocab, features, beam, top, max_length, alpha,
                           attention, trace)

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


MODEL_NAMES = ("merge", "attention", "ensemble")


def load_captioner(model: str | None = None, **kwargs) -> Captioner:
    """What the command line's --model means: a model's name ("merge", "attention",
    "ensemble") or a directory (one model, or a trained/ holding several); None is the best
    bundled model."""
    if model in MODEL_NAMES and not Path(model).exists():
        return Captioner.load(name=model, **kwargs)
    return Captioner.load(model, **kwargs)
