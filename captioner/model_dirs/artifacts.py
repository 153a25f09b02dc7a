"""Save and load `trained/`: decoder weights, vocabulary, config, history, metrics.

A new model is written into a staging directory beside the target and swapped in with one
atomic rename, so a crash leaves the previous model whole. On load, the files must agree
with each other and with manifest.json (their sha256), or the directory is refused.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from captioner.data.files import replaced_when_written, sha256_file  # noqa: F401  (sha256_file re-exported: artifacts.sha256_file)
from captioner.decoders.config import Config
from captioner.data.text import Vocabulary

WEIGHTS = "decoder.weights.h5"
HEAD_WEIGHTS = "exit_flow.weights.h5"   # a tuned model's own exit flow, which reads the shared trunk
VOCAB = "vocab.json"
CONFIG = "config.json"
HISTORY = "history.json"
METRICS = "metrics.json"
MANIFEST = "manifest.json"
PHOTO_SCORES = "test_captions.json"   # each test photo's caption and scores, for the app
# Scores on photos from outside Flickr8k (../shared/coco-dev), beside the model but not in its
# manifest: they describe the model, they are not part of it.
EVERYDAY_METRICS = "everyday_metrics.json"
REQUIRED = (WEIGHTS, VOCAB, CONFIG, MANIFEST)


class ArtifactError(RuntimeError):
    """trained/ is missing, incomplete or inconsistent."""


def environment() -> dict:
    """Where a model was made, for its manifest: library versions and the machine."""
    import platform
    import sys

    import keras
    import numpy as np
    import tensorflow as tf
    return {"versions": {"python": sys.version.split()[0], "tensorflow": tf.__version__,
                         "keras": keras.__version__, "numpy": np.__version__},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"}


def write_text_atomic(path: Path, text: str) -> None:
    """`path` holds either its old contents or `text`, never a part of it, after a kill or
    (the data synced before the rename) a power cut."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with replaced_when_written(path, Path(tmp)):  # a full disk leaves no stray temporary file
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes files private; these are meant to be read


def fsync_tree(directory: Path) -> None:
    """Flush a directory's files, then the directory itself, to disk."""
    if os.name == "nt":  # read-only descriptors cannot be fsynced there
        return
    for path in directory.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_directory(directory)


def fsync_directory(directory: Path) -> None:
    if os.name == "nt":  # Windows opens no directory for fsync (its renames are journalled)
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def weights_fingerprint(files: dict) -> str:
    """What a model's learnt weights are, from its manifest's file list: the decoder's sha256, or
    for a model with its own exit flow (issue 24) a sha256 over both, so an ensemble scored with
    it, or a trust estimate fitted for it, goes stale when either changes."""
    if HEAD_WEIGHTS not in files:
        return files[WEIGHTS]
    return hashlib.sha256(f"{files[WEIGHTS]}+{files[HEAD_WEIGHTS]}".encode()).hexdigest()


def write_json_atomic(path: Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read ({exc.strerror}).") from None
    except ValueError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc}).") from None


def save_trained(out_dir: Path, model, vocab: Vocabulary, config: Config,
                 history: list[dict], metrics: dict | None, info: dict,
                 photo_scores: list[dict] | None = None, exit_flow: "ExitFlow | None" = None) -> Path:
    """Write a complete model directory and swap it in for `out_dir` atomically. `exit_flow`:
    a model directory's tuned exit flow to carry over as it is (re-scoring a model whose Keras
    `model` is its decoder alone)."""
    def write(staging: Path) -> list[str]:
        # A compiled model's save_weights also stores the optimiser's moments (3x the size);
        # the app needs only the decoder, so save an uncompiled copy.
        from captioner.decoders.registry import build_decoder
        from captioner.decoders.registry import decoder_part, is_tuned
        decoder = build_decoder(config)
        decoder.set_weights(decoder_part(model).get_weights())
        decoder.save_weights(str(staging / WEIGHTS))
        tuned = [HEAD_WEIGHTS] if is_tuned(model) or exit_flow is not None else []
        if is_tuned(model):  # the model's own exit flow, which reads the shared trunk's output, in float16
            from captioner.vision.exit_flow import save_float16_weights
            save_float16_weights(model.exit_flow, staging / HEAD_WEIGHTS)
        elif exit_flow is not None:
            shutil.copyfile(exit_flow.weights, staging / HEAD_WEIGHTS)
        vocab.save(staging / VOCAB)
        config.save(staging / CONFIG)
        write_json_atomic(staging / HISTORY, history)
        return [WEIGHTS, *tuned, VOCAB, CONFIG, HISTORY, *write_scores(staging, metrics, photo_scores)]
    return write_model_dir(out_dir, write, info)


def write_scores(directory: Path, metrics: dict | None, photo_scores: list[dict] | None) -> list[str]:
    """metrics.json and test_captions.json, those there are; returns the names written."""
    files = []
    if metrics is not None:
        write_json_atomic(directory / METRICS, metrics)
        files.append(METRICS)
    if photo_scores:
        write_json_atomic(directory / PHOTO_SCORES, photo_scores)
        files.append(PHOTO_SCORES)
    return files


def write_model_dir(out_dir: Path, write, info: dict) -> Path:
    """Stage a model directory (`write(staging)` writes its files and returns their names),
    add manifest.json with each file's sha256, and swap it in for `out_dir` atomically."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.staging-"))
    try:
        files = write(staging)
        manifest = dict(info, files={name: sha256_file(staging / name) for name in files})
        write_json_atomic(staging / MANIFEST, manifest)
        os.chmod(staging, 0o755)
        fsync_tree(staging)  # on disk before it replaces the old model, which is then deleted
        _swap_in(staging, out_dir)
        fsync_directory(out_dir.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after a swap this holds the old model
    return out_dir


def _swap_in(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
        return
    if _rename_exchange(staging, target):
        return
    # No renameat2 (not Linux): two renames; the window without `target` is tiny.
    backup = target.with_name(f".{target.name}.previous")
    shutil.rmtree(backup, ignore_errors=True)
    os.rename(target, backup)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(backup, target)  # the old model back where it was
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two directories with Linux renameat2(RENAME_EXCHANGE)."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)),
                       rename_exchange)
    return result == 0


@dataclass(frozen=True)
class ExitFlow:
    """A model's tuned exit flow: its weights file, that file's sha256 and the trunk layer it reads."""
    weights: Path
    sha256: str
    layer: str


@dataclass
class TrainedModel:
    """One trained decoder: its files read and checked. `numpy_decoder()` decodes with the
    arrays read by h5py; `model`, the Keras decoder (for training and scoring), is built on
    first use, which imports TensorFlow."""
    directory: Path
    config: Config
    vocab: Vocabulary
    layers: dict                       # {layer name: arrays}, as decoders/weights_file.py reads them
    manifest: dict
    history: list = field(default_factory=list)
    metrics: dict | None = None
    _keras: object = field(default=None, repr=False)
    _decoder: object = field(default=None, repr=False)

    def numpy_decoder(self):
        """The NumPy decoding step on these weights (no Keras, no TensorFlow); one per model,
        shared by whoever decodes with it (it is read-only)."""
        if self._decoder is None:
            from captioner.decoders.registry import numpy_decoder_from_layers
            self._decoder = numpy_decoder_from_layers(self.layers, self.config)
        return self._decoder

    @property
    def exit_flow(self) -> ExitFlow | None:
        """The model's own tuned exit flow (issue 24), or None: it reads the frozen encoder."""
        sha = self.manifest.get("files", {}).get(HEAD_WEIGHTS)
        if sha is None:
            return None
        layer = (self.manifest.get("exit_flow") or {}).get("layer")
        if layer not in ("add_10", "add_11"):
            raise ArtifactError(f"{self.directory / MANIFEST}: lists {HEAD_WEIGHTS} without the "
                                f"layer it reads (exit_flow.layer add_10 or add_11).")
        return ExitFlow(self.directory / HEAD_WEIGHTS, sha, layer)

    @property
    def model(self):
        if self._keras is None:
            from captioner.decoders.registry import build_decoder
            model = build_decoder(self.config)
            try:
                model.load_weights(str(self.directory / WEIGHTS))
            except Exception as exc:
                raise ArtifactError(f"{self.directory / WEIGHTS}: does not fit {CONFIG} and {VOCAB} "
                                    f"({str(exc).splitlines()[0][:200]}).") from None
            self._keras = model
        return self._keras


# Models already loaded, while anything holds them, by directory and manifest: the app's
# ensemble then decodes with the very arrays of the single models beside it (115 MB less).
_LOADED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


def load_trained(directory: str | os.PathLike) -> TrainedModel:
    """A model directory, its files checked against manifest.json on every call; a model
    loaded before from the same files is shared, not read again."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no trained model here (run training_scripts/train.py).")
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if missing:
        raise ArtifactError(f"{directory}: incomplete model, missing {', '.join(missing)}.")
    manifest = verified_manifest(directory, (WEIGHTS, VOCAB, CONFIG))
    # The path as given, not resolved: a model reached through a symlink belongs to the
    # trained/ it was found in (its trust estimate and centroids are looked up beside it).
    key = (os.path.abspath(directory), json.dumps(manifest, sort_keys=True))
    cached = _LOADED.get(key)
    if cached is not None:
        return cached
    try:
        config = Config.load(directory / CONFIG)
        vocab = Vocabulary.load(directory / VOCAB)
    except ValueError as exc:
        raise ArtifactError(str(exc)) from None
    if config.vocab_size != len(vocab):
        raise ArtifactError(f"{directory}: {CONFIG} says {config.vocab_size} words but "
                            f"{VOCAB} has {len(vocab)}; they come from different runs.")
    from captioner.decoders.weights_file import WeightsFileError, check_shapes, read_layers
    try:
        layers = read_layers(directory / WEIGHTS, config.decoder)
    except WeightsFileError as exc:
        raise ArtifactError(str(exc)) from None
    try:
        check_shapes(layers, config)
    except WeightsFileError as exc:
        raise ArtifactError(f"{directory / WEIGHTS}: does not fit {CONFIG} and {VOCAB}: {exc}") from None
    history = read_json(directory / HISTORY) if (directory / HISTORY).is_file() else []
    metrics = read_json(directory / METRICS) if (directory / METRICS).is_file() else None
    trained = TrainedModel(directory, config, vocab, layers, manifest, history, metrics)
    _LOADED[key] = trained
    return trained


def verified_manifest(directory: Path, required: tuple[str, ...]) -> dict:
    """manifest.json, once every file it lists (among them `required`) matches its sha256."""
    manifest = read_json(directory / MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not set(required) <= set(files):
        raise ArtifactError(f"{directory / MANIFEST}: does not list the sha256 of "
                            f"{', '.join(required[:-1])} and {required[-1]}.")
    for name, expected in files.items():
        path = directory / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in {MANIFEST} but missing.")
        if sha256_file(path) != expected:
            raise ArtifactError(f"{path}: contents do not match {MANIFEST} "
                                "(files from different training runs?).")
    return manifest


def model_records(directory: str | os.PathLike) -> dict:
    """What training recorded about one decoder's model, without building it: {"manifest",
    "config", "history", "metrics" (None if not evaluated)}."""
    directory = Path(directory)
    manifest = read_json(directory / MANIFEST)
    config = read_json(directory / CONFIG)
    if not isinstance(manifest, dict) or not isinstance(config, dict):
        raise ArtifactError(f"{directory}: {MANIFEST} and {CONFIG} must hold JSON objects.")
    history = read_json(directory / HISTORY) if (directory / HISTORY).is_file() else []
    metrics = read_json(directory / METRICS) if (directory / METRICS).is_file() else None
    return {"manifest": manifest, "config": config, "history": history, "metrics": metrics}
