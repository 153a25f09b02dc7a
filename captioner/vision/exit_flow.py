"""Xception cut where its exit flow begins, so the exit flow can be fine-tuned with a decoder.

The entry and middle flows (84% of a forward pass) stay at ImageNet weights and run once per
photo, into a cache of their output; the exit flow (blocks 13 and 14, 6.8M parameters) is a
model of its own that training can update, at about 16% of a forward pass per photo.

    SPLITS["exit_flow"] = "add_10": the middle flow's output, (19, 19, 728); blocks 13 and 14 tuned
    SPLITS["block14"]  = "add_11": block 13's output, (10, 10, 1024); block 14 alone tuned

`trunk_and_head` gives both halves of a built Xception; the head is a copy with its own
weights (tuning it leaves the shared encoder alone), equal to the full model on any photo
(tests/test_exit_flow.py). Its BatchNormalization layers are meant to run in inference mode:
batches of a few dozen photos of one dataset would make poor estimates of ImageNet's
statistics, and the frozen trunk's output keeps the distribution the statistics describe.
"""
from __future__ import annotations

SPLITS = {"exit_flow": "add_10", "block14": "add_11"}
SPLIT_SHAPES = {"add_10": (19, 19, 728), "add_11": (10, 10, 1024)}
READ_BY = {"add_10": "block13_sepconv1_act", "add_11": "block14_sepconv1"}  # the first layer after each


def trunk_and_head(xception, split: str = "add_10"):
    """(trunk: photo -> `split`'s output, head: that output -> the 10x10x2048 map) as Keras models."""
    import keras
    if split not in SPLIT_SHAPES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_SHAPES)}, got {split!r}")
    # Keras numbers Add layers per process (the second Xception built has add_12 onward), so
    # the cut is found by the named layer that reads it.
    cut = xception.get_layer(READ_BY[split]).input
    trunk = keras.Model(xception.input, cut, name=f"xception_to_{split}")
    shared = keras.Model(cut, xception.output)
    head = keras.models.clone_model(shared)   # weights of its own
    head.set_weights(shared.get_weights())
    return trunk, head


def head_parameters(head) -> int:
    return int(sum(w.size for w in head.get_weights()))


def trunk_lite_path(split: str = "add_10"):
    from captioner.vision.encoder import cache_dir
    return cache_dir() / f"xception_trunk_{split}.tflite"


def trunk_encoder(split: str = "add_10"):
    """The trunk up to `split` on LiteRT (the encoder's interface; `checksum` the ImageNet
    arrays'), converted once from the cached weights into ~/.cache/captioner (needs TensorFlow
    the first time). It runs batches at nearly twice TensorFlow's rate on these cores."""
    import sys
    from captioner.vision.litert import LiteEncoder, convert, verified_record
    path = trunk_lite_path(split)
    try:
        verified_record(path)
    except Exception:  # missing, damaged or from other weights: convert again
        from captioner.vision.encoder import load_cached_weights
        model, checksum, _ = load_cached_weights()
        print(f"Converting Xception's trunk up to {split} for LiteRT...", file=sys.stderr, flush=True)
        convert(trunk_and_head(model, split)[0], checksum, path)
    return LiteEncoder(path)


def round_to_float16(head):
    """Set `head`'s weights to the nearest float16 values, as a model directory stores them
    (`save_float16_weights`), so what training scores is what it writes. Measured on a tuned
    block 14 (benchmarks/check_exit_flow_float16.py): val CIDEr 0.4896 to 0.4897 at beam 3,
    99.7% of the captions the same, for half the file."""
    import numpy as np
    head.set_weights([w.astype(np.float16).astype(w.dtype) for w in head.get_weights()])
    return head


def save_float16_weights(head, path) -> None:
    """`head.save_weights(path)` with every float32 array stored as float16 (Keras loads them
    back into its float32 variables); the rest of the file (groups, attributes) as Keras wrote it."""
    import os
    from pathlib import Path

    import h5py
    import numpy as np
    path = Path(path)
    full = path.with_name(f".{path.name}.{os.getpid()}.float32.weights.h5")
    head.save_weights(str(full))
    try:
        with h5py.File(full, "r") as source, h5py.File(path, "w") as target:
            def copy(name, item):
                if isinstance(item, h5py.Group):
                    made = target.require_group(name)
                else:
                    data = item[()]
                    made = target.create_dataset(name, data=data.astype(np.float16) if data.dtype == np.float32 else data)
                made.attrs.update(dict(item.attrs))
            target.attrs.update(dict(source.attrs))
            source.visititems(copy)
    finally:
        full.unlink(missing_ok=True)
