"""TIFF, AVIF and HEIC/HEIF: accepted, converted like the other formats, and behind the same guards."""
import io

import numpy as np
import pytest
from PIL import Image

from captioner.data import images
from captioner.data.images import HEIF_FORMATS, PHOTO_EXTENSIONS, ImageError, load_image


def photo(size=(48, 32)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


FORMATS = ["TIFF", "AVIF", "HEIF"]   # pillow-heif is a requirement: HEIC is never left untested


@pytest.mark.parametrize("fmt", FORMATS)
def test_new_formats_load_as_rgb(fmt):
    out = load_image(encode(photo(), fmt), name=f"phone.{fmt.lower()}")
    assert out.mode == "RGB" and out.size == (48, 32)


def test_heic_needs_pillow_heif_which_requirements_pin():
    import pillow_heif  # noqa: F401  (an ImportError fails the test: the requirements pin it)
    assert HEIF_FORMATS == ("HEIF",)
    assert {".heic", ".heif", ".tif", ".tiff", ".avif"} <= set(PHOTO_EXTENSIONS)


def test_tiff_modes_are_converted():
    sixteen = Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16))
    out = load_image(encode(sixteen, "TIFF"))
    assert out.mode == "RGB" and np.asarray(out).max() > 200  # scaled, not clipped to white
    cmyk = photo().convert("CMYK")
    assert load_image(encode(cmyk, "TIFF")).mode == "RGB"
    pages = io.BytesIO()
    photo().save(pages, "TIFF", save_all=True, append_images=[photo((10, 10))])
    assert load_image(pages.getvalue()).size == (48, 32)  # the first page


def _tiff_claiming(width: int, height: int) -> bytes:
    """A tiny TIFF whose header says it is huge (the tags are rewritten, not the pixels)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "TIFF"))
    offset = int.from_bytes(data[4:8], "little")
    count = int.from_bytes(data[offset:offset + 2], "little")
    for i in range(count):
        entry = offset + 2 + 12 * i
        tag = int.from_bytes(data[entry:entry + 2], "little")
        kind = int.from_bytes(data[entry + 2:entry + 4], "little")
        value = width if tag == 256 else height if tag == 257 else None
        if value is not None:
            data[entry + 2:entry + 4] = (4).to_bytes(2, "little")  # LONG, room for the size
            data[entry + 8:entry + 12] = value.to_bytes(4, "little")
            assert kind in (3, 4)
    return bytes(data)


@pytest.mark.parametrize("fmt", ["TIFF", "HEIF", "AVIF"])
def test_decompression_bombs_are_refused_before_decoding(fmt, monkeypatch):
    if fmt == "TIFF":
        data = _tiff_claiming(30000, 30000)
    else:
        # Real files just over a lowered limit (encoding 40 megapixels would take seconds).
        data = encode(Image.new("RGB", (120, 100)), fmt)
        monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ImageError, match="too large"):
        load_image(data, name=f"bomb.{fmt.lower()}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_files_are_one_line(fmt):
    data = encode(photo((200, 150)), fmt)
    with pytest.raises(ImageError) as info:
        load_image(data[: len(data) // 3], name=f"cut.{fmt.lower()}")
    assert str(info.value).startswith(f"cut.{fmt.lower()}: ") and "\n" not in str(info.value)


def test_a_heif_whose_first_image_is_a_bomb_is_refused_though_its_primary_is_small(monkeypatch):
    """pillow-heif opens a file on its primary image; we decode the first, so both are checked."""
    import pillow_heif
    heif = pillow_heif.from_pillow(Image.new("RGB", (120, 100)))
    heif.add_from_pillow(Image.new("RGB", (40, 40)))
    heif[0].info["primary"], heif[1].info["primary"] = False, True
    buffer = io.BytesIO()
    heif.save(buffer, quality=80, primary_index=1)
    assert Image.open(io.BytesIO(buffer.getvalue())).size == (40, 40)  # what the first check sees
    monkeypatch.setattr(images, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageError, match="120x100 pixels, too large"):
        load_image(buffer.getvalue(), name="two.heic")
