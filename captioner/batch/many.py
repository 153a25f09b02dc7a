"""Caption several uploaded photos at once: what the app's "Many photos" page lays out.

Each file is decoded on its own (a bad one gets its one-line error and the rest go on), the
good ones are encoded by Xception in batches and captioned by one batched beam search per
batch. Results keep the upload order; `to_records` gives the rows of the CSV and JSON
downloads (no thumbnails in those: the table shows them, the files hold text).
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from captioner.data.images import ImageError, load_image, prepare_for_encoder

THUMBNAIL = 160


@dataclass
class PhotoResult:
    name: str
    caption: str | None = None
    log_prob: float | None = None
    normalized_log_prob: float | None = None
    similarity: float | None = None     # to the training photos, when familiarity is given
    unfamiliar: bool | None = None
    trust: float | None = None          # how far to trust the caption (trust/estimate.py)
    verdict: str | None = None
    trust_reasons: list[str] | None = None
    error: str | None = None
    thumbnail: bytes | None = None      # JPEG, THUMBNAIL px on its longer side


def _thumbnail(img: Image.Image) -> bytes:
    small = img.copy()
    small.thumbnail((THUMBNAIL, THUMBNAIL), Image.LANCZOS)
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def caption_files(captioner, files: list[tuple[str, bytes]], beam: int = 3, batch_size: int = 8,
                  familiarity=None) -> list[PhotoResult]:
    """One PhotoResult per (name, bytes), in order. Photos are decoded a batch at a time, so
    memory holds one batch of encoder inputs (about 1 MB a photo), not every upload's."""
    results = [PhotoResult(name) for name, _ in files]
    for start in range(0, len(files), batch_size):
        batch, arrays = [], []
        for i in range(start, min(start + batch_size, len(files))):
            name, data = files[i]
            try:
                img = load_image(data, name)
                array, thumbnail = prepare_for_encoder(img), _thumbnail(img)
            except ImageError as exc:
                results[i].error = str(exc)
                continue
            except Exception as exc:  # one odd file must not cost the others their captions
                results[i].error = f"{name}: cannot be read ({type(exc).__name__})."
                continue
            batch.append(i)
            arrays.append(array)
            results[i].thumbnail = thumbnail
        if batch:
            caption_batch(captioner, [results[i] for i in batch], np.stack(arrays), beam, familiarity)
    return results


def caption_batch(captioner, results: list[PhotoResult], arrays: np.ndarray, beam: int, familiarity) -> None:
    """Fill `results` in with the captions of their photos' encoder inputs `arrays`."""
    maps = captioner.encoder.feature_maps(arrays)
    similarity = (familiarity.similarity(captioner.imagenet_maps(maps)) if familiarity is not None
                  else [None] * len(results))
    for result, captions, sim in zip(results, captioner.caption_batch(maps, beam=beam, top=1), similarity):
        best = captions[0]
        result.caption = best.text
        result.log_prob = round(best.log_prob, 4)
        result.normalized_log_prob = round(best.normalized_log_prob, 4)
        if best.trust is not None:
            result.trust = round(best.trust.value, 3)
            result.verdict = best.trust.verdict
            result.trust_reasons = list(best.trust.reasons)
        if sim is not None:
            result.similarity = round(float(sim), 4)
            result.unfamiliar = bool(familiarity.is_unfamiliar(sim))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(records: list[dict]) -> list[dict]:
    """`records` for a CSV file: a text cell that a spreadsheet would run as a formula (an
    uploaded file named "=HYPERLINK(...).jpg", and the error naming it) starts with a quote."""
    return [{k: f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v for k, v in r.items()}
            for r in records]


def to_records(results: list[PhotoResult], model: str, beam: int) -> list[dict]:
    """Rows for CSV/JSON: the same keys for every photo, captioned or not."""
    return [{"file": r.name, "model": model, "beam": beam, "caption": r.caption,
             "log_prob": r.log_prob, "normalized_log_prob": r.normalized_log_prob,
             "trust": r.trust, "verdict": r.verdict,
             "trust_reasons": None if r.trust_reasons is None else "; ".join(r.trust_reasons),
             "similarity_to_training": r.similarity, "unlike_training_photos": r.unfamiliar,
             "error": r.error} for r in results]
