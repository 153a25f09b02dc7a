"""Xception on LiteRT (vision/litert.py): the Keras encoder's maps and captions, a file that
is checked before it is used, and the choice of runtime (vision/engines.py)."""
import json
import shutil

import numpy as np
import pytest

from captioner.vision.encoder import EncoderWeightsError
from captioner.vision.engines import encoder_kind, open_encoder
from conftest import require, trained_models


@pytest.fixture(scope="module")
def photos(shared_data):
    from captioner.data.dataset import load_flickr8k
    from captioner.data.images import load_image, prepare_for_encoder
    data = load_flickr8k(shared_data)
    names = data.images("test")[200:212]
    return np.stack([prepare_for_encoder(load_image(data.image_path(n))) for n in names])


@pytest.mark.integration
def test_litert_gives_the_keras_maps_and_captions(encoder, keras_encoder, photos):
    from captioner import Captioner
    assert encoder.kind == "litert" and encoder.checksum == keras_encoder.checksum
    lite, keras = encoder.feature_maps(photos), keras_encoder.feature_maps(photos)
    assert lite.dtype == keras.dtype == np.float16 and lite.shape == keras.shape == (12, 10, 10, 2048)
    # Both runtimes agree to about 1e-5 in float32 (measured 9e-6 on values up to ~20), so the
    # stored float16 maps differ by that, or by one float16 step where a value sits on a
    # rounding boundary; and rarely at all.
    step = np.spacing(np.maximum(np.abs(lite), np.abs(keras))).astype(np.float32)
    assert (np.abs(lite.astype(np.float32) - keras.astype(np.float32)) <= step + 2e-5).all()
    assert (lite != keras).mean() < 0.01
    # One photo at a time (the app) and in a batch (caption-dir) give the same map.
    np.testing.assert_array_equal(encoder.feature_maps(photos[3]), lite[3:4])
    # Each committed model captions them alike on either runtime; one with its own exit flow
    # reads views, made by each runtime's trunk and exit flows (vision/tuned_encoder.py).
    views = {}
    for name, directory in trained_models().items():
        captioner = Captioner.load(directory, encoder=encoder)
        maps = {"litert": lite, "tensorflow": keras}
        if captioner.flows:
            key = tuple(f.sha256 for f in captioner.flows)
            if key not in views:
                views[key] = {kind: Captioner.load(directory, encoder_kind=kind).encoder.feature_maps(photos)
                              for kind in maps}
            maps = views[key]
            assert maps["litert"].shape == (12, 1 + len(key), 10, 10, 2048)
            # view 0 is ImageNet's map, through the trunk and exit flow as two graphs: the same
            # to within float16 rounding (measured: 8% of values differ, by at most 0.008)
            np.testing.assert_allclose(maps["litert"][:, 0].astype(np.float32), lite.astype(np.float32),
                                       rtol=1e-2, atol=1e-2)
        from_lite = [c[0].text for c in captioner.caption_batch(maps["litert"], beam=3, trust=False)]
        from_keras = [c[0].text for c in captioner.caption_batch(maps["tensorflow"], beam=3, trust=False)]
        assert from_lite == from_keras, name


@pytest.fixture()
def lite_copy(tmp_path, monkeypatch):
    """The converted encoder and its record, copied into a cache of the test's own."""
    from captioner.vision.litert import LITE_FILENAME, LITE_RECORD, cached_lite_path
    real = require(cached_lite_path(), "LiteRT Xception (run `make setup`)")
    for name in (LITE_FILENAME, LITE_RECORD):
        shutil.copy(real.parent / name, tmp_path / name)
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("CAPTIONER_LITE_ENCODER", raising=False)
    return tmp_path / LITE_FILENAME, tmp_path / LITE_RECORD


@pytest.mark.integration   # the converted encoder `make setup` writes
def test_a_damaged_or_foreign_encoder_file_is_refused(lite_copy):
    from captioner.vision.litert import LiteEncoder
    model, record = lite_copy
    assert LiteEncoder().path == model   # the copy verifies and loads
    original = record.read_text()
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF         # one weight, somewhere in the middle
    model.write_bytes(bytes(data))
    with pytest.raises(EncoderWeightsError, match=rf"{model}: sha256 .* is not the .* recorded"):
        LiteEncoder()
    # Converted from other weights: refused, even with a record that matches the file.
    from captioner.data.files import sha256_file
    record.write_text(json.dumps({"sha256": sha256_file(model), "weights_checksum": "0" * 64}))
    with pytest.raises(EncoderWeightsError, match="not the ImageNet weights"):
        LiteEncoder()
    record.unlink()
    with pytest.raises(EncoderWeightsError, match="missing or unreadable.*make setup"):
        LiteEncoder()
    model.unlink()
    record.write_text(original)
    with pytest.raises(EncoderWeightsError, match="No LiteRT encoder.*make setup"):
        LiteEncoder()


def test_the_runtime_is_litert_unless_asked_or_given_keras_weights(monkeypatch):
    monkeypatch.delenv("CAPTIONER_ENCODER", raising=False)
    assert encoder_kind(None) == "litert"
    assert encoder_kind("tensorflow") == "tensorflow"
    assert encoder_kind(None, "my.weights.h5") == "tensorflow"   # only TensorFlow reads it
    assert encoder_kind(None, "my.tflite") == "litert"
    with pytest.raises(EncoderWeightsError, match="my.weights.h5: the LiteRT encoder reads a .tflite"):
        encoder_kind("litert", "my.weights.h5")
    monkeypatch.setenv("CAPTIONER_ENCODER", "tensorflow")
    assert encoder_kind(None) == "tensorflow"
    monkeypatch.setenv("CAPTIONER_ENCODER", "onnx")
    with pytest.raises(EncoderWeightsError, match="CAPTIONER_ENCODER='onnx'"):
        open_encoder()
