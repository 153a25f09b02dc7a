"""Shared fixtures: tiny datasets the tests make, and the real data/model for integration."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED_DATA = Path(os.environ.get("CAPTIONER_DATA_DIR") or ROOT.parent / "shared" / "flickr8k")
TRAINED = ROOT / "trained"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(path: Path, what: str) -> Path:
    """Integration inputs: a failure in CI, a skip on a developer machine without them."""
    if not Path(path).exists():
        message = f"{what} not found at {path}"
        if IN_CI:
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)
    return Path(path)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require(SHARED_DATA / "Flickr8k_text" / "Flickr8k.token.txt", "Flickr8k").parent.parent


def trained_models() -> dict:
    """The committed models by name (trained/merge, trained/attention)."""
    from captioner.model_dirs.catalog import available_models
    return available_models(TRAINED)


@pytest.fixture(scope="session")
def trained_dir() -> Path:
    """The model the app and CLI load by default: the best committed one by test CIDEr."""
    from captioner.model_dirs.catalog import resolve_model
    require(TRAINED / "merge" / "decoder.weights.h5", "trained merge model")
    return resolve_model(TRAINED)


@pytest.fixture(scope="session")
def encoder():
    """The encoder serving uses: Xception on LiteRT."""
    from captioner.vision.litert import LiteEncoder, cached_lite_path
    require(cached_lite_path(), "LiteRT Xception (run `make setup`)")
    return LiteEncoder()


@pytest.fixture(scope="session")
def keras_encoder():
    """Xception on TensorFlow, which training uses and LiteRT is checked against."""
    from captioner.vision.encoder import Encoder, cached_weights_path
    require(cached_weights_path(), "Xception weights (run `make setup`)")
    return Encoder()


@pytest.fixture(scope="session")
def serving_flows(encoder) -> list:
    """The tuned exit flows the committed models read (issue 24; none if all are frozen)."""
    from captioner.model_dirs.catalog import load_model
    from captioner.model_dirs.views import exit_flows
    return exit_flows([load_model(d) for d in trained_models().values()])


@pytest.fixture(scope="session")
def serving_encoder(encoder, serving_flows):
    """What serving encodes a photo with, shared by every committed model as the app shares
    it: Xception on LiteRT, or, with tuned exit flows, its ImageNet trunk once, then ImageNet's
    exit flow and each tuned one, side by side (views)."""
    if not serving_flows:
        return encoder
    from captioner.vision.tuned_encoder import open_views_encoder
    return open_views_encoder("litert", serving_flows)


def serving_captioner(directory, encoder, flows, name=None, **kwargs):
    """A committed model on the shared serving encoder (`serving_encoder`, `serving_flows`)."""
    from captioner import Captioner
    return Captioner.load(directory, name, encoder=encoder, flows=flows, **kwargs)


@pytest.fixture(scope="session")
def captioner(trained_dir, serving_encoder, serving_flows):
    return serving_captioner(trained_dir, serving_encoder, serving_flows)


@pytest.fixture(scope="session", params=["merge", "attention", "ensemble"])
def each_captioner(request, trained_dir, serving_encoder, serving_flows):
    """Every committed model in turn, sharing one encoder (all three are committed: one
    missing fails in CI, like any missing integration input)."""
    directory = require(TRAINED / request.param, f"the committed {request.param} model")
    # data_dir "": the trust estimate every install has, wherever the tests run (a developer's
    # cache may hold the nearest-photo index; tests/test_trust_models.py covers the other one)
    return serving_captioner(directory, serving_encoder, serving_flows, data_dir="")


# -- tiny datasets -----------------------------------------------------------------------
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220),
           "yellow": (230, 220, 30)}
SHAPES = ("square", "stripes")


def make_photo(colour: str, shape: str, seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.full((size, size, 3), 245, dtype=np.uint8)
    rgb = np.array(COLOURS[colour], dtype=np.uint8)
    if shape == "square":
        o = rng.integers(4, 16)
        arr[o:o + 32, o:o + 32] = rgb
    else:
        arr[:, ::8] = rgb
        arr[:, 1::8] = rgb
    noise = rng.integers(0, 12, arr.shape, dtype=np.uint8)
    return Image.fromarray(np.clip(arr.astype(int) + noise - 6, 0, 255).astype(np.uint8))


def tiny_corpus(n_images: int = 40):
    """(name, photo, five captions) for generated photos whose captions say colour and shape."""
    items = []
    for i in range(n_images):
        colour = list(COLOURS)[i % len(COLOURS)]
        shape = SHAPES[(i // len(COLOURS)) % len(SHAPES)]
        name = f"{1000 + i}_{i:04x}.jpg"
        captions = [f"A {colour} {shape} on white .", f"a {colour} {shape}",
                    f"The {shape} is {colour} .", f"{colour.title()} {shape} !",
                    f"a picture of a {colour} {shape}"]
        items.append((name, make_photo(colour, shape, i), captions))
    return items


def write_original_layout(root: Path, n_images: int = 40) -> Path:
    items = tiny_corpus(n_images)
    photos, text = root / "Flicker8k_Dataset", root / "Flickr8k_text"
    photos.mkdir(parents=True)
    text.mkdir()
    with open(text / "Flickr8k.token.txt", "w") as handle:
        for name, photo, captions in items:
            photo.save(photos / name, quality=92)
            for j, caption in enumerate(captions):
                handle.write(f"{name}#{j}\t{caption}\n")
    names = [name for name, _, _ in items]
    n_test = n_val = max(1, n_images // 8)
    (text / "Flickr_8k.testImages.txt").write_text("\n".join(names[:n_test]) + "\n")
    (text / "Flickr_8k.devImages.txt").write_text("\n".join(names[n_test:n_test + n_val]) + "\n")
    (text / "Flickr_8k.trainImages.txt").write_text("\n".join(names[n_test + n_val:]) + "\n")
    return root


def write_kaggle_layout(root: Path, n_images: int = 40) -> Path:
    items = tiny_corpus(n_images)
    (root / "Images").mkdir(parents=True)
    with open(root / "captions.txt", "w") as handle:
        handle.write("image,caption\n")
        for name, photo, captions in items:
            photo.save(root / "Images" / name, quality=92)
            for caption in captions:
                handle.write(f"{name},{caption}\n")
    return root


@pytest.fixture
def original_dataset(tmp_path) -> Path:
    return write_original_layout(tmp_path / "flickr_original")


@pytest.fixture
def kaggle_dataset(tmp_path) -> Path:
    return write_kaggle_layout(tmp_path / "flickr_kaggle")


class PixelEncoder:
    """A stand-in for Xception in unit tests: a 10x10 map whose cells hold their own mean
    colour and the photo's 4x4 grid of mean colours, tiled to 2048 values (float16, like
    Xception's maps). Deterministic and instant, so training tests exercise our code."""
    checksum = "pixel-encoder-for-tests"

    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim == 3:
            batch = batch[None]
        n, h, w, _ = batch.shape
        def grid(k):
            return batch[:, : h // k * k, : w // k * k].reshape(n, k, h // k, k, w // k, 3).mean(axis=(2, 4))
        cells = grid(10)                                              # (n, 10, 10, 3)
        whole = np.broadcast_to(grid(4).reshape(n, 1, 1, 48), (n, 10, 10, 48))
        values = np.concatenate([cells, whole], axis=-1)              # 51 values a cell
        return np.tile(values, (1, 1, 1, 2048 // 51 + 1))[..., :2048].astype(np.float16)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        from captioner.vision.encoder import pool
        return pool(self.feature_maps(batch))
