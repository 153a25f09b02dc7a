import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from captioner.data.images import ImageError, load_image, prepare_for_encoder


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(mode="RGB", size=(40, 30)):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)


@pytest.mark.parametrize("fmt,mode", [
    ("JPEG", "RGB"), ("PNG", "RGB"), ("WEBP", "RGB"), ("BMP", "RGB"), ("GIF", "P"),
    ("JPEG", "CMYK"), ("JPEG", "L"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "LA"), ("PNG", "1"),
])
def test_valid_images_decode_to_rgb(fmt, mode):
    img = load_image(encode(photo(mode), fmt), name="x")
    assert img.mode == "RGB" and img.size == (40, 30)


def test_16_bit_png_is_scaled_not_clipped():
    arr = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.uint16)
    data = encode(Image.fromarray(arr), "PNG")
    img = load_image(data)
    values = np.asarray(img)[..., 0]
    assert values.min() == 0 and values.max() >= 250 and len(np.unique(values)) > 100


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert load_image(encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (10, 10), c).convert("P") for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    r, g, b = load_image(buf.getvalue()).getpixel((5, 5))
    assert r > 200 and b < 50


def test_exif_orientation_is_honoured():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = load_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40)


def test_a_big_jpeg_is_decoded_small_but_reports_its_own_size_upright():
    img = Image.new("RGB", (4000, 3000), (90, 120, 30))
    out = load_image(encode(img, "JPEG"))
    assert max(out.size) < 4000 and out.info["source_size"] == (4000, 3000)  # draft() shrank it
    exif = Image.Exif()
    exif[0x0112] = 6
    out = load_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size[0] < out.size[1] and out.info["source_size"] == (3000, 4000)
    assert load_image(encode(photo(), "PNG")).info["source_size"] == (40, 30)


def bomb_png(width=30000, height=30000) -> bytes:
    """A few hundred bytes that claim 900 megapixels."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data,needle", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
    (bomb_png(), "too large"),
    (encode(photo(size=(300, 200)), "JPEG")[:600], "truncated"),
    (encode(photo(), "PPM"), "supported: JPEG, PNG, WebP, BMP, GIF, TIFF, AVIF, HEIC"),
])
def test_bad_input_is_one_clear_line(data, needle):
    with pytest.raises(ImageError) as info:
        load_image(data, name="upload.bin")
    message = str(info.value)
    assert message.startswith("upload.bin: ") and needle in message and "\n" not in message


def test_missing_and_oversized_files(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * 2048)
    with pytest.raises(ImageError, match="over the"):
        load_image(big, max_bytes=1024)


def test_prepare_for_encoder_range_and_shape():
    arr = prepare_for_encoder(photo())
    assert arr.shape == (299, 299, 3) and arr.dtype == np.float32
    assert -1.0 <= arr.min() < -0.5 and 0.5 < arr.max() <= 1.0
