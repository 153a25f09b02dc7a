"""Xception on LiteRT: the same 10x10x2048 map as the Keras encoder, without TensorFlow.

`convert` (needs TensorFlow; `fetch-weights` runs it) turns the checksummed ImageNet weights
into a .tflite flatbuffer in the cache, beside the Keras weights, and records the file's sha256
and the arrays' checksum in a JSON beside it. `LiteEncoder` (needs only `ai-edge-litert`)
refuses a file whose sha256 differs from that record, and one converted from weights other
than the pinned ImageNet ones, so the map it gives is the one the decoders were trained on.
It runs on XNNPACK with one thread per core.
"""
from __future__ import annotations

import json
import os
import threading
from hashlib import sha256
from pathlib import Path

import numpy as np

from captioner.data.files import replaced_when_written, sha256_file
from captioner.vision.mapped_files import release_file_pages
from captioner.vision.tf_setup import silenced
from captioner.vision.encoder import (EXPECTED_CHECKSUM, EncoderWeightsError, cache_dir,
                                      pool)

LITE_FILENAME = "xception_imagenet_notop.tflite"
LITE_RECORD = "xception_imagenet_notop.tflite.json"
SETUP_HINT = "run `make setup` (or `python -m captioner fetch-weights`, which needs TensorFlow)"


def cached_lite_path() -> Path:
    return cache_dir() / LITE_FILENAME


def _record_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".json")


def convert(keras_model, weights_checksum: str, target: Path | None = None, int8: bool = False) -> Path:
    """Write `keras_model` (ImageNet Xception, `weights_checksum` its arrays') as a LiteRT
    flatbuffer with a batch dimension that can be resized, atomically, with its record.
    `int8`: dynamic-range quantised weights (benchmarks/check_int8.py measures what it costs)."""
    from captioner.vision.tf_setup import import_tensorflow_quietly
    tf = import_tensorflow_quietly()
    target = Path(target or cached_lite_path())
    target.parent.mkdir(parents=True, exist_ok=True)
    # from_keras_model freezes the weights into the file; a concrete function of a Keras 3
    # model would keep them as resource variables and write a 175 KB shell.
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with silenced((1, 2)):  # it prints every variable it freezes
        flatbuffer = converter.convert()
    record = {"sha256": sha256(flatbuffer).hexdigest(), "weights_checksum": weights_checksum,
              "weights": "int8 (dynamic range)" if int8 else "float32",
              "converted_with": f"tensorflow {tf.__version__}"}
    # The model first, then its record: a crash between leaves a record that does not match,
    # which is refused and rewritten by the next fetch-weights, never a silently wrong file.
    with replaced_when_written(target, target.with_name(f".{target.name}.{os.getpid()}.partial")) as partial:
        partial.write_bytes(flatbuffer)
    record_path = _record_path(target)
    with replaced_when_written(record_path, record_path.with_name(f".{record_path.name}.{os.getpid()}.partial")) as partial:
        partial.write_text(json.dumps(record, indent=2) + "\n")
    return target


def verified_record(path: Path, verify_source: bool = True, source: str = EXPECTED_CHECKSUM) -> dict:
    """The conversion record of `path`, once the file's sha256 matches it (and, with
    `verify_source`, once it says the file was converted from the weights `source`)."""
    record_path = _record_path(path)
    try:
        record = json.loads(record_path.read_text())
        expected, _ = record["sha256"], record["weights_checksum"]
    except (OSError, ValueError, KeyError, TypeError):
        raise EncoderWeightsError(f"{record_path}: missing or unreadable, so {path.name} cannot be "
                                  f"checked; {SETUP_HINT}.") from None
    try:
        actual = sha256_file(path)
    except OSError as exc:  # deleted, as the messages below ask: converted anew by the caller
        raise EncoderWeightsError(f"{path}: cannot be read ({exc.strerror}); {SETUP_HINT}.") from None
    if actual != expected:
        raise EncoderWeightsError(f"{path}: sha256 {actual[:12]} is not the {expected[:12]} recorded when it "
                                  f"was converted (damaged or replaced); delete it and {SETUP_HINT}.")
    if verify_source and record["weights_checksum"] != source:
        what = "the ImageNet weights" if source == EXPECTED_CHECKSUM else "the weights expected"
        raise EncoderWeightsError(f"{path}: converted from weights {record['weights_checksum'][:12]}, not "
                                  f"{what} {source[:12]}; delete it and {SETUP_HINT}.")
    return record


def lite_checksum(record: dict) -> str:
    """What a converted file's maps are keyed and checked by: the Keras weights' checksum for a
    float32 file; a quantised one is another encoder, whose maps must not pass for (or be
    cached as) the float ones, so its precision comes first ("int8-...")."""
    precision = record.get("weights", "float32")
    return record["weights_checksum"] if precision == "float32" else f"{precision.split()[0]}-{record['weights_checksum']}"


def default_threads() -> int:
    """One per core (at most 4: XNNPACK gains little beyond on one photo), or CAPTIONER_ENCODER_THREADS."""
    configured = os.environ.get("CAPTIONER_ENCODER_THREADS")
    if not configured:
        return min(os.cpu_count() or 1, 4)
    try:
        return max(1, int(configured))
    except ValueError:
        raise EncoderWeightsError(f"CAPTIONER_ENCODER_THREADS={configured}: expected a whole number "
                                  "of threads, such as 2.") from None


class LiteEncoder:
    """The Encoder's interface (feature_maps, encode, checksum, source) on LiteRT.

    `checksum` is that of the Keras arrays the file was converted from, which is what model
    manifests and the feature cache record, so a LiteRT map and a TensorFlow map of the same
    photo are interchangeable (they agree to about 1e-5, below float16's resolution)."""
    kind = "litert"

    def __init__(self, path: str | os.PathLike | None = None, threads: int | None = None,
                 source: str | None = None):
        """`source`: the checksum the file must have been converted from (by default the
        ImageNet weights', unless the file was named explicitly)."""
        explicit = path or os.environ.get("CAPTIONER_LITE_ENCODER") or None
        self.path = Path(explicit).expanduser() if explicit else cached_lite_path()
        if not self.path.is_file():
            raise EncoderWeightsError(f"No LiteRT encoder: {self.path} does not exist; {SETUP_HINT}, "
                                      "or copy the .tflite file and its .json record there from a "
                                      "machine that has run it.")
        record = verified_record(self.path, verify_source=bool(source) or not explicit,
                                 source=source or EXPECTED_CHECKSUM)
        self.checksum = lite_checksum(record)
        self.source = f"{self.path} (LiteRT, {record.get('weights', 'float32')})"
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise EncoderWeightsError("The LiteRT encoder needs the ai-edge-litert package "
                                      "(pip install ai-edge-litert), or pass --encoder tensorflow.") from None
        try:
            with silenced():  # LiteRT announces its XNNPACK delegate on stderr as it applies it
                self._interpreter = Interpreter(model_path=str(self.path),
                                                num_threads=threads or default_threads())
                self._input = self._interpreter.get_input_details()[0]["index"]
                self._output = self._interpreter.get_output_details()[0]["index"]
                # A photo (299, 299, 3) for the whole encoder or its trunk; a trunk's output for an exit flow.
                self.input_shape = tuple(int(d) for d in self._interpreter.get_input_details()[0]["shape"][1:])
                self._batch = 0
                self._resize(1)
        except (RuntimeError, ValueError) as exc:
            raise EncoderWeightsError(f"{self.path}: not a LiteRT model ({exc}).") from None
        # XNNPACK holds its own packed copy of the weights by now: the mapped file's pages need
        # not stay resident too (vision/mapped_files.py).
        release_file_pages(self.path)
        # One interpreter holds one set of buffers: calls from several threads take turns.
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        self.feature_maps(np.zeros((1, *self.input_shape), dtype=np.float32))

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            self._interpreter.resize_tensor_input(self._input, [batch, *self.input_shape])
            self._interpreter.allocate_tensors()
            self._batch = batch

    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim == len(self.input_shape):
            batch = batch[None]
        if batch.shape[1:] != self.input_shape:
            raise ValueError(f"expected inputs of shape (n, {', '.join(map(str, self.input_shape))}), got {batch.shape}")
        with self._lock:
            self._resize(len(batch))
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            maps = self._interpreter.get_tensor(self._output)
        return maps.astype(np.float16)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return pool(self.feature_maps(batch))
