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


def trunk_and_head(xception, split: str = "add_10"):
    """(trunk: photo -> `split`'s output, head: that output -> the 10x10x2048 map) as Keras models."""
    import keras
    if split not in SPLIT_SHAPES:
        raise ValueError(f"split must be one of {', '.join(SPLIT_SHAPES)}, got {split!r}")
    cut = xception.get_layer(split).output
    trunk = keras.Model(xception.input, cut, name=f"xception_to_{split}")
    shared = keras.Model(cut, xception.output)
    head = keras.models.clone_model(shared)   # weights of its own
    head.set_weights(shared.get_weights())
    return trunk, head


def head_parameters(head) -> int:
    return int(sum(w.size for w in head.get_weights()))
