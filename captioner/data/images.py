"""Safe decoding of untrusted image bytes into the array the encoder expects.

Every photo, whether a Flickr8k training image or a browser upload, goes through
`prepare_for_encoder`, so training and inference cannot disagree on preprocessing.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Refuse anything larger than ~40 megapixels before decoding pixels (a 30000x30000 PNG
# bomb is 900 MP). Pillow only warns below 2x its own limit, so we check explicitly.
MAX_PIXELS = 40_000_000
MAX_FILE_BYTES = 20 * 1024 * 1024
ENCODER_SIZE = 299
# Flickr8k as shipped here is stored at 224x224; every photo is first brought to that
# size so features of an upload match the distribution the decoder was trained on.
SOURCE_SIZE = 224
OPEN_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "AVIF")
SUPPORTED_FORMATS = OPEN_FORMATS + ("MPO",)  # multi-picture JPEGs open through the JPEG parser
# File names a folder walk picks up (lower-cased suffixes); the bytes still decide the format.
PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif",
                    ".tif", ".tiff", ".avif", ".heic", ".heif")
FORMAT_NAMES = "JPEG, PNG, WebP, BMP, GIF, TIFF, AVIF, HEIC"


def _register_heif() -> tuple[str, ...]:
    """HEIC/HEIF (iPhone photos) through pillow-heif, when installed: a Pillow plugin, so the
    same size checks and bomb guard apply before any pixel is decoded."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return ()
    register_heif_opener()
    return ("HEIF",)


HEIF_FORMATS = _register_heif()
OPEN_FORMATS += HEIF_FORMATS
SUPPORTED_FORMATS += HEIF_FORMATS

Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False

ImageSource = Union[str, os.PathLike, bytes, Image.Image]


class ImageError(ValueError):
    """An input that is not a usable image; the message is one sentence for the user."""


def _describe(source: ImageSource, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "the image"


def load_image(source: ImageSource, name: str | None = None,
               max_bytes: int = MAX_FILE_BYTES) -> Image.Image:
    """Decode a path, raw bytes or PIL image into an upright RGB PIL image. A big JPEG is
    decoded at a reduced scale; `info["source_size"]` holds the file's own size, upright.

    Raises ImageError with a one-line message naming `name` (or the path) and the problem.
    """
    label = _describe(source, name)
    if isinstance(source, Image.Image):
        return _to_rgb(source, label)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{label}: no such file.")
        try:
            size = path.stat().st_size
            if size > max_bytes:
                raise ImageError(f"{label}: file is {size / 1e6:.1f} MB, over the "
                                 f"{max_bytes / 1e6:.0f} MB limit.")
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{label}: cannot read file ({exc.strerror}).") from None
    else:
        data = bytes(source)
    if not data:
        raise ImageError(f"{label}: file is empty.")
    if len(data) > max_bytes:
        raise ImageError(f"{label}: file is {len(data) / 1e6:.1f} MB, over the "
                         f"{max_bytes / 1e6:.0f} MB limit.")
    try:
        # Only the parsers we support ever see untrusted bytes.
        img = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image (supported: {FORMAT_NAMES}).") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: image is too large to decode safely "
                         f"(over {MAX_PIXELS // 1_000_000} megapixels).") from None
    except Exception as exc:  # Pillow raises many types for malformed headers
        raise ImageError(f"{label}: image data is truncated or corrupt ({_one_line(exc)}).") from None
    if img.format not in SUPPORTED_FORMATS:
        raise ImageError(f"{label}: {img.format} images are not supported (use {FORMAT_NAMES}).")
    _check_size(img, label)
    try:
        img.seek(0)  # animated GIF/WebP, multi-page TIFF, HEIF collections: first image
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: image is too large to decode safely.") from None
    except (EOFError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: image data is truncated or corrupt ({_one_line(exc)}).") from None
    _check_size(img, label)  # a HEIF file opens on its primary image, which need not be the first
    stored = img.size  # before draft() below shrinks a big JPEG
    try:
        if img.format in ("JPEG", "MPO"):
            # Decode big JPEGs at a reduced scale (still >= 4x what the encoder uses):
            # a 40 MP phone photo then costs ~10 MB of memory instead of ~120 MB.
            img.draft(img.mode, (4 * SOURCE_SIZE, 4 * SOURCE_SIZE))
        img.load()
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: image is too large to decode safely.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: image data is truncated or corrupt ({_one_line(exc)}).") from None
    decoded = img.size
    rgb = _to_rgb(img, label)
    # The photo's own size, upright: what the user's file holds, not the decoded draft.
    rgb.info["source_size"] = stored[::-1] if rgb.size != decoded and rgb.size == decoded[::-1] else stored
    return rgb


def _check_size(img: Image.Image, label: str) -> None:
    """Refuse, before any pixel is decoded, an image too large to decode safely or empty."""
    width, height = img.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"{label}: image is {width}x{height} pixels, too large to decode "
                         f"safely (limit {MAX_PIXELS // 1_000_000} megapixels).")
    if width < 1 or height < 1:
        raise ImageError(f"{label}: image has no pixels.")


def _one_line(exc: Exception) -> str:
    """A decoder library's message on one line (libheif's end with a newline)."""
    return " ".join(str(exc).split())


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not cost the user a caption
        pass
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits rather than clipping to white.
        # float32 and in place: a 40 MP 16-bit image is a few KB as PNG but 160 MB here.
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max()) or 1.0
        arr *= 255.0 / top
        np.clip(arr, 0, 255, out=arr)
        img = Image.fromarray(arr.astype(np.uint8), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        img = Image.fromarray(((arr - lo) / ((hi - lo) or 1.0) * 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparency onto white, as a browser would show it.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    try:
        return img.convert("RGB")
    except Exception as exc:
        raise ImageError(f"{label}: cannot convert {img.mode} image to RGB ({exc}).") from None


def prepare_for_encoder(img: Image.Image) -> np.ndarray:
    """RGB PIL image -> float32 (299, 299, 3) array in Xception's [-1, 1] range."""
    small = img.resize((SOURCE_SIZE, SOURCE_SIZE), Image.BICUBIC, reducing_gap=3.0)
    big = small.resize((ENCODER_SIZE, ENCODER_SIZE), Image.BICUBIC)
    arr = np.asarray(big, dtype=np.float32)
    return arr / 127.5 - 1.0
