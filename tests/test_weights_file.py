"""Decoder weights read with h5py (decoders/weights_file.py) equal Keras' own loading."""
import dataclasses

import h5py
import numpy as np
import pytest

from captioner.decoders.config import Config
from captioner.decoders.registry import build_decoder, numpy_decoder, numpy_decoder_from_layers
from captioner.decoders.weights_file import WeightsFileError, check_shapes, read_layers
from conftest import trained_models


def assert_same_decoder(a, b, label):
    for field in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name), err_msg=f"{label}: {field.name}")


def saved_tiny(tmp_path, kind):
    config = Config(vocab_size=23, units=16, embed_dim=8, attention_dim=8, decoder=kind)
    model = build_decoder(config)
    rng = np.random.default_rng(1)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path / f"{kind}.weights.h5"
    model.save_weights(str(path))
    return config, model, path


@pytest.mark.parametrize("kind", ["merge", "attention"])
def test_every_array_lands_where_keras_puts_it(tmp_path, kind):
    config, model, path = saved_tiny(tmp_path, kind)
    layers = read_layers(path, kind)
    check_shapes(layers, config)
    assert_same_decoder(numpy_decoder_from_layers(layers, config), numpy_decoder(model, config), kind)


@pytest.mark.parametrize("kind", ["merge", "attention"])
def test_files_that_are_not_this_decoders_weights_are_refused(tmp_path, kind):
    config, _, path = saved_tiny(tmp_path, kind)
    other = "attention" if kind == "merge" else "merge"
    with pytest.raises(WeightsFileError, match=str(path)):
        read_layers(path, other)
    with h5py.File(path, "r+") as handle:
        handle["layers/extra/vars/0"] = np.zeros(3)
    with pytest.raises(WeightsFileError, match="files them differently"):
        read_layers(path, kind)
    with pytest.raises(WeightsFileError, match="the embedding layer's arrays"):
        check_shapes(read_layers(saved_tiny(tmp_path, kind)[2], kind), dataclasses.replace(config, vocab_size=24))
    junk = tmp_path / "junk.weights.h5"
    junk.write_text("not hdf5")
    with pytest.raises(WeightsFileError, match="not an HDF5"):
        read_layers(junk, kind)


@pytest.mark.integration
def test_the_committed_models_read_without_keras_equal_keras():
    from captioner.model_dirs.artifacts import load_trained
    models = {name: d for name, d in trained_models().items() if name != "ensemble"}
    assert set(models) == {"merge", "attention"}
    for name, directory in models.items():
        trained = load_trained(directory)
        assert trained._keras is None  # loading built no Keras model
        assert_same_decoder(trained.numpy_decoder(), numpy_decoder(trained.model, trained.config), name)
