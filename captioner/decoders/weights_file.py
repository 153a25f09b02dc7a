"""A decoder's .weights.h5 read with h5py into its layers' arrays: decoding without Keras.

Keras 3 does not file a model's variables under the layers' names but under the path it walks
to them (`layers/dense_2/vars/0` is the merge decoder's `logits` kernel). LAYOUT maps each
layer the NumPy steps read to that path, for the files Keras 3 writes for these two decoders.
tests/test_weights_file.py checks the map against Keras' own loading for both decoders, so a
Keras release that files them elsewhere fails there, not in front of a user; and a file with
variables the map does not account for is refused here.
"""
from __future__ import annotations

import os

import numpy as np

LAYOUT = {
    "merge": {"image_dense": "layers/dense", "merge_dense": "layers/dense_1", "logits": "layers/dense_2",
              "embedding": "layers/embedding", "lstm": "layers/lstm/cell"},
    "attention": {"region_dense": "layers/dense", "region_keys": "layers/dense_1",
                  "global_dense": "global_dense", "embedding": "embedding", "lstm": "layers/lstm/cell",
                  "sentinel_input": "layers/dense_3", "sentinel_hidden": "layers/dense_4",
                  "output_dense": "layers/dense_5", "logits": "layers/dense_6", "attention": "attend"},
}


class WeightsFileError(ValueError):
    """The file is not a decoder's weights as Keras 3 writes them."""


def read_layers(path: str | os.PathLike, decoder: str) -> dict[str, list[np.ndarray]]:
    """{layer name: its arrays as float32, in the layer's own order} for decoder kind `decoder`."""
    import h5py
    layout = LAYOUT[decoder]
    try:
        with h5py.File(path, "r") as handle:
            stored = []
            handle.visititems(lambda name, item: stored.append(name) if isinstance(item, h5py.Dataset) else None)
            layers, used = {}, 0
            for layer, group in layout.items():
                variables = handle.get(f"{group}/vars")
                if variables is None:
                    raise WeightsFileError(f"{path}: no {group}/vars (the {decoder} decoder's {layer} layer).")
                layers[layer] = [np.asarray(variables[str(i)], dtype=np.float32) for i in range(len(variables))]
                used += len(variables)
    except OSError as exc:
        raise WeightsFileError(f"{path}: not an HDF5 weights file ({exc}).") from None
    if used != len(stored):
        raise WeightsFileError(f"{path}: holds {len(stored)} arrays where a {decoder} decoder has {used}; "
                               "not this decoder's weights, or written by a Keras that files them differently.")
    return layers


def check_shapes(layers: dict[str, list[np.ndarray]], config) -> None:
    """Refuse arrays that do not fit `config` (its vocabulary, sizes), naming the first that does not."""
    vocab, units, embed = config.vocab_size, config.units, config.embed_dim
    expected = {"embedding": [(vocab, embed)], "logits": [(units, vocab), (vocab,)]}
    if config.decoder == "merge":
        expected.update(image_dense=[(config.feature_dim, units), (units,)],
                        lstm=[(embed, 4 * units), (units, 4 * units), (4 * units,)],
                        merge_dense=[(units, units), (units,)])
    else:
        attention = config.attention_dim
        expected.update(region_dense=[(config.feature_dim, units), (units,)], region_keys=[(units, attention)],
                        global_dense=[(config.feature_dim, embed), (embed,)],
                        lstm=[(2 * embed, 4 * units), (units, 4 * units), (4 * units,)],
                        sentinel_input=[(2 * embed, units), (units,)], sentinel_hidden=[(units, units)],
                        output_dense=[(units, units), (units,)], attention=[(units, attention)] * 2)
    for layer, shapes in expected.items():
        found = [a.shape for a in layers[layer]]
        if found != shapes:
            raise WeightsFileError(f"the {layer} layer's arrays are {found}, where the config needs {shapes}.")
