"""Helpers shared by the web app's tests (test_app.py, test_app_browser.py).

The real model and data come from conftest.py's `trained_dir` and `shared_data` fixtures:
skipped on a developer machine without them, a failure in CI.
"""
from __future__ import annotations

import io

from conftest import ROOT

APP = str(ROOT / "streamlit_app.py")


def photo_png(name: str = "chelsea", flip: bool = False) -> bytes:
    """A scikit-image sample photo (never a Flickr8k one) as PNG bytes."""
    import skimage.data
    from PIL import Image, ImageOps
    array = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    image = Image.fromarray(array)
    if flip:
        image = ImageOps.mirror(image)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def model_vocabulary(trained_dir) -> set[str]:
    from captioner.data.text import Vocabulary
    return set(Vocabulary.load(trained_dir / "vocab.json").itos)


def assert_plausible_caption(text: str, vocabulary: set[str] | None = None) -> None:
    """A caption a person could read: 2-30 lowercase words, from the model's vocabulary,
    not one word repeated."""
    words = text.split()
    assert 2 <= len(words) <= 30, text
    assert all(word.isalpha() and word.islower() for word in words), text
    if vocabulary is not None:
        assert set(words) <= vocabulary, text
    assert len(set(words)) > 1, f"degenerate caption: {text!r}"


def models_with_attention(root, trained_dir):
    """A trained/ root for the app: the committed merge model, the committed centroids, and
    trained/attention and trained/ensemble if committed, else a tiny untrained attention model
    (its captions are nonsense, but its attention maps have the real shape, which is what the
    page draws)."""
    from pathlib import Path

    from captioner.model_dirs import artifacts
    from captioner.decoders.config import Config
    from captioner.decoders.registry import build_decoder
    from captioner.data.text import Vocabulary
    from conftest import TRAINED
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "merge").symlink_to(TRAINED / "merge")
    for shared in ("training_photos.h5", "trust.json"):
        if (TRAINED / shared).is_file():
            (root / shared).symlink_to(TRAINED / shared)
    if (TRAINED / "attention" / "manifest.json").is_file():
        (root / "attention").symlink_to(TRAINED / "attention")
        if (TRAINED / "ensemble" / "manifest.json").is_file():  # its members are the two above
            (root / "ensemble").symlink_to(TRAINED / "ensemble")
        return root
    vocab = Vocabulary(["a", "dog", "runs", "on", "the", "grass", "man", "red"])
    config = Config(decoder="attention", vocab_size=len(vocab), units=16, embed_dim=8,
                    attention_dim=8, max_decode_length=12)
    artifacts.save_trained(root / "attention", build_decoder(config), vocab, config, [], None, {})
    return root


def _walk(node):
    for child in getattr(node, "children", {}).values():
        yield child
        yield from _walk(child)


def beam_captions(at) -> list[str]:
    """The best caption of each beam-width box, in page order: a headline, or for a caption
    the trust estimate calls likely wrong, the guess in italics below its verdict."""
    shown = []
    for node in _walk(at.main):
        if node.type == "subheader" and "Where the" not in node.value and "How the" not in node.value:
            shown.append(node.value)
        elif node.type == "markdown" and node.value.startswith("*") and node.value.endswith("*") \
                and not node.value.startswith("**"):
            shown.append(node.value.strip("*"))
    return shown
