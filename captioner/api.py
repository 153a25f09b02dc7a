"""The Python API the app and the command line use.

    captioner = Captioner.load()                          # the best model in trained/ (or name=...)
    features = captioner.features("photo.jpg")            # encode once (~0.25 s on 2 cores)
    for beam in (1, 3, 5):
        captioner.caption(features, beam=beam, top=3)      # decode many times (milliseconds)

`features` is Xception's 10x10x2048 map (float16); the merge decoder reads its mean, the
attention decoder all 100 regions, so one encoder pass serves both models. A model fine-tuned
with its own exit flow (or an ensemble with such a member) reads views instead: one map per
exit flow, ImageNet's first, (views, 10, 10, 2048) a photo, from one pass of the shared trunk
(`has_views`, `imagenet_maps`; model_dirs/views.py).

Serving imports no TensorFlow: Xception runs on LiteRT and the decoders' weights are read
with h5py into NumPy steps. `Captioner.load(encoder_kind="tensorflow")` encodes with Keras.

Thread safety: the encoder serialises its calls with a lock; decoding only reads the NumPy
weight arrays and allocates its own state, so any number of threads may decode at once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from captioner.data.files import sha256_file
from captioner.data.images import ImageSource, load_image, prepare_for_encoder
from captioner.decoding.search import Caption, beam_search, greedy_search
from captioner.model_dirs.artifacts import ArtifactError, TrainedModel
from captioner.model_dirs.catalog import available_models, is_model_name, load_model, model_name, ranked_models
from captioner.model_dirs.ensemble_dir import TrainedEnsemble
from captioner.model_dirs.views import exit_flows, views_decoder
from captioner.trust import evidence as trust_evidence
from captioner.trust.estimate import TrustError, TrustModel, load_estimate, model_weights
from captioner.trust.signals import EVIDENCE_BEAM
from captioner.vision.encoder import Encoder, EncoderWeightsError
from captioner.vision.engines import encoder_kind, open_encoder

MAX_BEAM = 20
RECENT_SEARCHES = 16   # photos whose trust-evidence searches are kept (a few KB each)


class Captioner:
    def __init__(self, trained: TrainedModel | TrainedEnsemble, encoder: Encoder | None = None,
                 encoder_weights: str | os.PathLike | None = None, encoder_kind: str | None = None,
                 data_dir: str | os.PathLike | None = None, flows: list | None = None,
                 name: str | None = None):
        """`flows`: the tuned exit flows whose views `features` hold (model_dirs/views.py), by
        default the model's own; more may be given, so that models with fewer share one encoder.
        `name`: what available_models calls it (default: "ensemble", or its decoder's)."""
        self.trained = trained
        self.config = trained.config
        self.vocab = trained.vocab
        self.name = name or model_name(trained)   # a second attention model (train.py --name) is not "attention"
        self.flows = exit_flows(trained) if flows is None else list(flows)
        # NumPy arrays read with h5py (no TensorFlow); each model reading its own view, if any
        self.decoder = views_decoder(trained, self.flows)
        self._encoder = encoder
        self._encoder_weights = encoder_weights
        self._encoder_kind = encoder_kind
        self._encoder_lock = threading.Lock()
        self.passed_over: list[str] = []  # better models that could not be loaded, and why
        self._trust: TrustModel | None = None
        self._centroids: np.ndarray | None = None
        self.trust_problem: str | None = None   # why captions carry no trust estimate
        self._trust_loaded = False
        # Flickr8k, whose training captions sharpen the trust estimate (trust/consensus.py)
        self.data_dir = data_dir if data_dir is not None else os.environ.get("CAPTIONER_DATA_DIR") or None
        self._consensus = None
        self.trust_note: str | None = None      # which estimate is in use, and how to sharpen it
        self._recent_searches: OrderedDict = OrderedDict()   # photo digest -> its evidence searches
        self._evidence_lock = threading.Lock()

    @classmethod
    def load(cls, directory: str | os.PathLike | None = None, name: str | None = None,
             encoder: Encoder | None = None, encoder_weights: str | os.PathLike | None = None,
             encoder_kind: str | None = None, data_dir: str | os.PathLike | None = None,
             flows: list | None = None) -> "Captioner":
        """Model `name` ("merge", "attention", "ensemble", or any model directory's name in
        `directory`) from `directory` (default trained/),
        or the one with the best test CIDEr; `directory` may also be one model's own directory.
        `encoder_kind` is "litert" (the default, no TensorFlow) or "tensorflow"
        (vision/engines.py); `encoder` is an encoder already built. `data_dir` (default
        $CAPTIONER_DATA_DIR) is Flickr8k: with it and its nearest-photo index (`make neighbours`)
        the trust estimate also reads the nearest training photos' captions.
        Without a name, a best model that cannot be loaded (a damaged member of the ensemble)
        gives way to the next best, and `passed_over` says why; if none loads, the best's
        error is raised. `flows`: as for the constructor (`[]`: decode the frozen maps given, whatever
        exit flows the model has, as benchmarks timing the decoders do)."""
        errors = []
        names = {os.path.abspath(d): n for n, d in available_models(directory).items()}
        for candidate in ranked_models(directory, name):
            try:   # a damaged manifest may only show when its exit flow is read, in the constructor
                captioner = cls(load_model(candidate), encoder, encoder_weights, encoder_kind, data_dir, flows,
                                names.get(os.path.abspath(candidate)))
            except ArtifactError as exc:
                if name is not None:
                    raise
                errors.append(exc)
                continue
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
        """The Xception encoder, built on first use (LiteRT: a fraction of a second;
        TensorFlow: a few seconds)."""
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    self._encoder = self._open_encoder()
        return self._encoder

    @property
    def has_views(self) -> bool:
        """Whether a photo's features are several exit flows' maps side by side, (views, 10, 10,
        2048), ImageNet's first; else Xception's frozen map, (10, 10, 2048)."""
        return bool(self.flows)

    def imagenet_maps(self, features: np.ndarray) -> np.ndarray:
        """The frozen ImageNet maps (n, 10, 10, 2048) of a batch of this model's features: what
        familiarity, the nearest training photos and consensus compare with the training photos'."""
        features = np.asarray(features)
        return features[:, 0] if self.has_views else features

    def imagenet_map(self, features: np.ndarray) -> np.ndarray:
        """`imagenet_maps` of one photo's features."""
        return self.imagenet_maps(np.asarray(features)[None])[0]

    @property
    def imagenet_checksum(self) -> str:
        """The ImageNet weights' checksum, which the frozen maps (and the nearest-photo index
        built from them) are keyed by, whatever exit flows this model reads."""
        return getattr(self.encoder, "base_checksum", self.encoder.checksum)

    def _known_imagenet_checksum(self) -> str:
        """`imagenet_checksum` without opening the encoder for it: the manifest names the
        weights the model was trained on, which an opened encoder is checked against."""
        return (self.imagenet_checksum if self._encoder is not None
                else (self.trained.manifest.get("encoder") or {}).get("weights_checksum", ""))

    def _open_encoder(self):
        if not self.flows:
            return open_encoder(self._encoder_kind, self._encoder_weights)
        if self._encoder_weights:
            raise EncoderWeightsError(f"{self.trained.directory}: has its own exit flow, so it encodes with "
                                      "the cached ImageNet trunk and its exit_flow.weights.h5, not "
                                      f"{self._encoder_weights}.")
        from captioner.vision.tuned_encoder import open_views_encoder
        return open_views_encoder(encoder_kind(self._encoder_kind), self.flows)

    @property
    def encoder_kind(self) -> str:
        """What runs (or will run) Xception: "litert" or "tensorflow" (or a given encoder's `kind`)."""
        if self._encoder is not None:
            return getattr(self._encoder, "kind", "given")
        return encoder_kind(self._encoder_kind, self._encoder_weights)

    def check_encoder(self) -> None:
        """Build the encoder now and refuse one whose weights differ from training's."""
        expected = (self.trained.manifest.get("encoder") or {}).get("weights_checksum")
        base = self.imagenet_checksum   # a tuned encoder's trunk
        if expected and base != expected:
            raise EncoderWeightsError(f"Encoder weights {base[:12]} differ from the "
                               f"ones this model was trained with ({expected[:12]}).")
        heads = getattr(self.encoder, "head_checksums", None)
        wanted = [flow.sha256 for flow in self.flows]
        if (heads is None and wanted) or (heads is not None and heads != wanted):
            raise EncoderWeightsError(
                f"{self.trained.directory}: " + (f"reads its own exit flow ({', '.join(w[:12] for w in wanted)}), "
                                                 "which this encoder does not run." if wanted else
                                                 "reads the frozen encoder, not tuned exit flows."))

    def features(self, image: ImageSource, name: str | None = None) -> np.ndarray:
        """Xception's (10, 10, 2048) float16 map of one photo (path, bytes or PIL image), or with
        `has_views` its maps of every exit flow this model reads, (views, 10, 10, 2048)."""
        return self.features_batch([image], [name])[0]

    def features_batch(self, images: list[ImageSource], names: list[str | None] | None = None) -> np.ndarray:
        names = names or [None] * len(images)
        arrays = np.stack([prepare_for_encoder(load_image(img, name)) for img, name in zip(images, names)])
        return self.encoder.feature_maps(arrays)

    # -- decoder ---------------------------------------------------------------------------
    def caption(self, features: np.ndarray, beam: int | None = None, top: int = 1,
                alpha: float | None = None, max_length: int | None = None,
                attention: bool = False, trace: list | None = None, trust: bool = True) -> list[Caption]:
        """The `top` best captions for one photo's features (at most `beam`: a beam of width
        k finishes k captions); beam=1 is greedy search. With `attention` (attention model only), each caption carries its per-word weights;
        with a `trace` list, the beam search appends what each step kept and pruned
        (decoding.TraceStep), for drawing it.

        Each caption's `trust` (captioner.trust.estimate.Trust) says how far to believe it:
        `trust.value`, a calibrated probability in [0, 1] that the caption is as good as a
        typical person's (per-photo CIDEr-D, see the README), `trust.verdict` ("likely
        right", "unsure", "likely wrong"), the signals it was read from and the reasons that
        pulled it down. It is None when `trust=False` or when this model has no usable
        estimate (`trust_problem` says why, e.g. a model retrained since it was fitted)."""
        return self.caption_batch(np.asarray(features)[None], beam, top, alpha, max_length,
                                  attention, trace, trust)[0]

    def caption_batch(self, features: np.ndarray, beam: int | None = None, top: int = 1,
                      alpha: float | None = None, max_length: int | None = None,
                      attention: bool = False, trace: list | None = None,
                      trust: bool = True) -> list[list[Caption]]:
        beam = self.config.default_beam if beam is None else int(beam)
        if not 1 <= beam <= MAX_BEAM:
            raise ValueError(f"beam width must be between 1 and {MAX_BEAM}, got {beam}")
        if not 1 <= top <= MAX_BEAM:
            raise ValueError(f"top must be between 1 and {MAX_BEAM}, got {top}")
        alpha = self.config.length_alpha if alpha is None else alpha
        max_length = max_length or self.config.max_decode_length
        features = np.asarray(features)
        if self.has_views:
            views = (len(self.flows) + 1, 10, 10, self.config.feature_dim)
            if features.ndim != 5 or features.shape[1:] != views:
                raise ValueError(f"expected the maps of {views[0]} exit flows, shape (n, {', '.join(map(str, views))}), "
                                 f"got {features.shape}")
        else:
            maps = features.ndim == 4 and features.shape[1:] == (10, 10, self.config.feature_dim)
            vectors = features.ndim == 2 and features.shape[1] == self.config.feature_dim
            if not (maps or (vectors and not self.has_attention)):
                raise ValueError(f"expected Xception maps of shape (n, 10, 10, {self.config.feature_dim})"
                                 + ("" if self.has_attention else f" or vectors (n, {self.config.feature_dim})")
                                 + f", got {features.shape}")
        attention = attention and self.has_attention
        trust = trust and self.trust_model is not None
        # At the evidence's own width and length penalty the search's other captions are the
        # evidence: keep them (a top of 3 costs the search nothing) instead of searching again.
        reuse = (trust and beam == EVIDENCE_BEAM and alpha == self.config.length_alpha
                 and max_length == self.config.max_decode_length)
        wanted = max(top, EVIDENCE_BEAM) if reuse else top
        if beam == 1 and wanted == 1 and trace is None:  # beam 1 is greedy, but only beams trace
            found = [[cap] for cap in greedy_search(self.decoder, self.vocab, features, max_length,
                                                    alpha, attention)]
        else:
            found = beam_search(self.decoder, self.vocab, features, beam, wanted, max_length, alpha,
                                attention, trace)
        if trust:
            return self.assess(features, [f[:top] for f in found],
                               [f[:EVIDENCE_BEAM] for f in found] if reuse else None)
        return found

    # -- trust -----------------------------------------------------------------------------
    @property
    def model_root(self) -> Path:
        """The trained/ this model's directory sits in (trust.json and training_photos.h5 are there)."""
        return Path(os.path.abspath(self.trained.directory)).parent

    @property
    def trust_model(self) -> TrustModel | None:
        """This model's trust estimate (trained/trust.json), or None with `trust_problem` set:
        the one that reads the nearest training photos' captions where Flickr8k and its index
        are at hand, else the one every install can use (`trust_note` says which, and why)."""
        if not self._trust_loaded:
            with self._evidence_lock:
                if not self._trust_loaded:
                    self._load_trust()
        return self._trust

    def _load_trust(self) -> None:
        try:
            path = self._familiarity_path()
            args = (self.model_root, self.name, model_weights(self.trained), sha256_file(path))
            self._trust = self._trust_with_consensus(args) or load_estimate(*args)
            self._trust_centroids()
        except (TrustError, ArtifactError, OSError, KeyError, ValueError) as exc:
            self._trust, self.trust_problem = None, str(exc)
            self._consensus, self.trust_note = None, None
        self._trust_loaded = True

    def _trust_with_consensus(self, args: tuple) -> TrustModel | None:
        """The estimate that reads consensus, with the Consensus it reads; None (and why, in
        `trust_note`) when Flickr8k, its index or that estimate is missing."""
        from captioner.data.dataset import DatasetError
        from captioner.trust.consensus import Consensus
        how = ("set CAPTIONER_DATA_DIR to Flickr8k and run `make neighbours` (`python -m captioner "
               "index-dataset --neighbours-only`) to sharpen it")
        without = "Read without the training photos' captions"
        if not self.data_dir:
            self.trust_note = f"{without} (no Flickr8k here: {how})."
            return None
        try:  # the index is keyed by the encoder's weights
            consensus = Consensus.from_dataset(self._known_imagenet_checksum(), self.data_dir)
        except (OSError, DatasetError, ValueError) as exc:  # no index, no dataset, the two differ
            self.trust_note = f"{without} ({_first_line(exc)}; {how})."
            return None
        try:
            estimate = load_estimate(*args, consensus=consensus)
        except TrustError as exc:  # none fitted, fitted over other photos or captions: a refit
            self.trust_note = f"{without} ({_first_line(exc)})"
            return None
        self._consensus = consensus
        self.trust_note = (f"Read with the captions of the {consensus.neighbours} most similar training "
                           "photos, too.")
        return estimate

    def _trust_centroids(self) -> np.ndarray:
        """The training-photo centroids the evidence reads (loaded once; fit_trust.py reads
        them before any estimate exists)."""
        if self._centroids is None:
            from captioner.explain.familiarity import Familiarity
            path = self._familiarity_path()
            familiarity = Familiarity.load(path)
            expected = self._known_imagenet_checksum()
            if expected and familiarity.encoder_checksum != expected:
                raise TrustError(f"{path}: made from other Xception weights ({familiarity.encoder_checksum[:12]}, "
                                 f"not {expected[:12]}); run `make index`.")
            self._centroids = familiarity.centroids
        return self._centroids

    def _familiarity_path(self) -> Path:
        from captioner.explain.familiarity import find
        path = find(self.model_root)
        if path is None:
            raise TrustError(f"{self.model_root}: no training_photos.h5 (`make index`), which the trust "
                             "estimate reads.")
        return path

    def evidence(self, features: np.ndarray, shown: list[list[Caption]],
                 searched: list[list[Caption]] | None = None) -> list[list]:
        """What each shown caption's trust is read from (captioner.trust.signals.Evidence), one
        list per photo of `features`."""
        consensus = self._consensus if self.trust_model is not None and "consensus" in self.trust_model.signals else None
        # The photo's likeness to the training photos is read on the ImageNet map they were indexed by.
        return trust_evidence.gather(self._trust_centroids(), self.imagenet_maps(features), shown,
                                     self._searches(features, searched), consensus)

    def _searches(self, features: np.ndarray, searched: list[list[Caption]] | None) -> list:
        """Each photo's evidence searches, from the last few photos' when they are among them:
        the app shows one photo at several widths, and the searches depend on the photo alone."""
        keys = [hashlib.blake2b(np.ascontiguousarray(f).tobytes(), digest_size=16).digest() for f in features]
        with self._evidence_lock:
            found = [self._recent_searches.get(key) for key in keys]
        missing = [i for i, s in enumerate(found) if s is None]
        if missing:
            members = [(decoder, m.config.length_alpha) for decoder, m in
                       zip(getattr(self.decoder, "members", []), self.members.values())]
            fresh = trust_evidence.search(self.decoder, self.vocab, self.config.max_decode_length,
                                          self.config.length_alpha, members, features[missing],
                                          [searched[i] for i in missing] if searched is not None else None)
            with self._evidence_lock:
                for i, result in zip(missing, fresh):
                    found[i] = self._recent_searches[keys[i]] = result
                while len(self._recent_searches) > RECENT_SEARCHES:
                    self._recent_searches.popitem(last=False)
        return found

    def forget_recent_photos(self) -> None:
        """Drop the kept trust-evidence searches (a benchmark timing a photo's first caption)."""
        with self._evidence_lock:
            self._recent_searches.clear()

    def assess(self, features: np.ndarray, shown: list[list[Caption]],
               searched: list[list[Caption]] | None = None) -> list[list[Caption]]:
        """`shown` (one list of captions per photo of `features`) with each caption's `trust` set."""
        return [[dataclasses.replace(caption, trust=self.trust_model.assess(found))
                 for caption, found in zip(captions, evidence)]
                for captions, evidence in zip(shown, self.evidence(features, shown, searched))]

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


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def load_captioner(model: str | None = None, **kwargs) -> Captioner:
    """What the command line's --model means: a model's name ("merge", "attention",
    "ensemble", or another model's directory name in trained/) or a directory (one model, or a
    trained/ holding several); None is the best bundled model."""
    if is_model_name(model):
        return Captioner.load(name=model, **kwargs)
    return Captioner.load(model, **kwargs)
