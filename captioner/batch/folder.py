"""Caption every photo under a folder into a JSON-lines file, resumably (`caption-dir`).

One record per photo, the same from this engine and from Ray (on_ray.py):

    {"path": "2019/beach.jpg", "model": "ensemble", "beam": 3, "min_trust": null,
     "captions": [{"caption": "...", "log_prob": -9.12, "normalized_log_prob": -2.88, "finished": true,
                   "trust": 0.41, "verdict": "unsure", "signals": {...}, "reasons": [...]}],
     "error": null, "withheld": null}

`path` is relative to the folder, so the output does not depend on where the folder is
mounted. A photo that cannot be read gets "captions": [] and "error": "<path>: <why>"; one whose
captions all fall below `--min-trust` gets "captions": [] and "withheld": why. Every record has
the same seven keys, so the file loads as one table (pandas.read_json(lines=True), Spark, ...)
and Ray's columnar JSON writer produces the very same records. A run resumes only with the
model, beam width and --min-trust its records were written with.

Pipeline: a thread decodes and resizes the next batch while Xception encodes the current one
(Pillow and LiteRT release the GIL), one batched beam search captions the batch, and its
lines are appended and fsynced before the next batch starts (resumable_jsonl.py), so a run
killed at any point resumes without losing or repeating a photo.
"""
from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioner.data.images import PHOTO_EXTENSIONS, ImageError, load_image, prepare_for_encoder
from captioner.batch.resumable_jsonl import ResumableJsonl
from captioner.trust.estimate import keep_trusted

RECORD_KEYS = ("path", "model", "beam", "min_trust", "captions", "error", "withheld")


class BatchError(ValueError):
    """A caption-dir run cannot start; the message is one line naming the file or folder."""


def find_photos(root: str | os.PathLike) -> list[str]:
    """Every file under `root` with a photo extension, as sorted POSIX paths relative to it.
    Hidden files and folders are skipped: macOS "._photo.jpg" resource forks and thumbnail
    caches are not photos, and would only fill the output with errors."""
    root = Path(root)
    if not root.is_dir():
        raise BatchError(f"{root}: not a folder.")
    found = []

    def unreadable(exc: OSError) -> None:  # os.walk would skip it without a word
        if Path(exc.filename) == root:
            raise BatchError(f"{root}: cannot list the folder ({exc.strerror}).")
        print(f"warning: {exc.filename}: cannot list the folder ({exc.strerror}); its photos are "
              "left out.", file=sys.stderr)

    for folder, dirs, files in os.walk(root, onerror=unreadable):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        relative = Path(folder).relative_to(root)
        found.extend((relative / name).as_posix() for name in files
                     if not name.startswith(".") and name.lower().endswith(PHOTO_EXTENSIONS))
    return sorted(found)


def caption_record(path: str, model: str, beam: int, captions, min_trust: float | None = None) -> dict:
    """A photo's line; with `min_trust`, captions below it are left out and `withheld` says why."""
    kept, withheld = keep_trusted(captions, min_trust)
    return {"path": path, "model": model, "beam": beam, "min_trust": min_trust,
            "captions": [c.to_json() for c in kept], "error": None, "withheld": withheld}


def error_record(path: str, model: str, beam: int, message: str, min_trust: float | None = None) -> dict:
    return {"path": path, "model": model, "beam": beam, "min_trust": min_trust, "captions": [],
            "error": message, "withheld": None}


@dataclass
class Decoded:
    """A batch after decoding: every path in order, the encoder input of those that decoded,
    and the one-line error of those that did not."""
    paths: list[str]
    arrays: dict[str, np.ndarray]
    errors: dict[str, str]


def prepare(root: Path, paths: list[str]) -> Decoded:
    decoded = Decoded(list(paths), {}, {})
    for path in paths:
        try:
            decoded.arrays[path] = prepare_for_encoder(load_image(Path(root) / path, name=path))
        except ImageError as exc:
            decoded.errors[path] = str(exc)
        except Exception as exc:  # one odd file must never stop a run over 50,000 photos
            decoded.errors[path] = f"{path}: cannot be read ({type(exc).__name__}: {exc})."
    return decoded


def caption_decoded(captioner, decoded: Decoded, beam: int, top: int, min_trust: float | None = None) -> list[dict]:
    """Records for a decoded batch, in its order: one Xception call on the stack of photos
    that decoded, then one batched beam search over them."""
    records = {path: error_record(path, captioner.name, beam, message, min_trust)
               for path, message in decoded.errors.items()}
    if decoded.arrays:
        maps = captioner.encoder.feature_maps(np.stack(list(decoded.arrays.values())))
        for path, captions in zip(decoded.arrays, captioner.caption_batch(maps, beam=beam, top=top)):
            records[path] = caption_record(path, captioner.name, beam, captions, min_trust)
    return [records[path] for path in decoded.paths]


def caption_paths(captioner, root: Path, paths: list[str], beam: int, top: int,
                  min_trust: float | None = None) -> list[dict]:
    """Records for `paths` (relative to `root`), without overlap: what each Ray actor runs."""
    return caption_decoded(captioner, prepare(root, paths), beam, top, min_trust)


@dataclass
class Summary:
    photos: int           # photos in the folder
    captioned: int        # captioned by this run
    failed: int           # failed in this run
    already_done: int     # skipped: the output held them already
    failed_in_output: int  # photos of the folder whose record in the output is an error
    seconds: float

    @property
    def photos_per_second(self) -> float:
        return (self.captioned + self.failed) / max(self.seconds, 1e-9)


def _settings_and_outcome(record: dict) -> tuple:
    """What a resumed run needs of each record already written: its settings (to refuse
    mixing them) and whether it failed (to count and retry errors)."""
    return (record.get("model"), record.get("beam"), record.get("min_trust")), bool(record.get("error"))


def _describe_settings(model, beam, min_trust) -> str:
    return f"model {model} at beam {beam}" + (f" with --min-trust {min_trust:g}" if min_trust is not None else "")


def _check_same_settings(out: Path, done: dict[str, tuple], model: str, beam: int,
                         min_trust: float | None) -> None:
    """Refuse to resume an output written with another model, beam or --min-trust: it would
    mix them (a photo withheld at 0.5 and one kept at 0.2 in one file read as one policy)."""
    for written, _ in done.values():
        if written != (model, beam, min_trust):
            raise BatchError(f"{out}: written with {_describe_settings(*written)}, not "
                             f"{_describe_settings(model, beam, min_trust)}; use another --out.")


def caption_dir(captioner, root: str | os.PathLike, out: str | os.PathLike, beam: int = 3,
                top: int = 1, batch_size: int = 16, retry_errors: bool = False,
                progress: bool = True, min_trust: float | None = None) -> Summary:
    """Caption the photos under `root` that `out` does not hold yet, appending to `out`."""
    from tqdm import tqdm

    if batch_size < 1:
        raise BatchError(f"--batch-size must be at least 1, got {batch_size}.")
    root, out = Path(root), Path(out)
    photos = find_photos(root)
    start = time.perf_counter()
    with ResumableJsonl(out, keep=_settings_and_outcome) as output:
        if output.repaired_bytes:
            print(f"{out}: its last line was torn ({output.repaired_bytes} bytes, from a run "
                  "that was killed); removed, that photo is captioned again.", file=sys.stderr)
        _check_same_settings(out, output.done, captioner.name, beam, min_trust)
        if retry_errors:
            output.drop({path for path, (_, is_error) in output.done.items() if is_error})
        todo = [path for path in photos if path not in output.done]
        already_done = len(photos) - len(todo)
        bar = tqdm(total=len(todo), desc="Captioning", unit="photo", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
        captioned, failed = _caption_into(output, captioner, root, todo, beam, top, batch_size, bar, min_trust)
        bar.close()
        failed_paths = {path for path, (_, is_error) in output.done.items() if is_error}
        failed_in_output = len(failed_paths.intersection(photos))
    return Summary(len(photos), captioned, failed, already_done, failed_in_output,
                   time.perf_counter() - start)


def _caption_into(output: ResumableJsonl, captioner, root: Path, todo: list[str], beam: int,
                  top: int, batch_size: int, bar, min_trust: float | None = None) -> tuple[int, int]:
    """Caption `todo` batch by batch, appending each batch's records; (captioned, failed)."""
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    captioned = failed = 0
    # Decode the next batch in a thread while Xception and the decoder work on this one.
    with ThreadPoolExecutor(max_workers=1) as workers:
        pending = workers.submit(prepare, root, batches[0]) if batches else None
        for b in range(len(batches)):
            decoded = pending.result()
            if b + 1 < len(batches):
                pending = workers.submit(prepare, root, batches[b + 1])
            records = caption_decoded(captioner, decoded, beam, top, min_trust)
            output.append(records)
            for record in records:
                if record["error"]:
                    failed += 1
                    bar.write(f"error: {record['error']}", file=sys.stderr)
                else:
                    captioned += 1
            bar.update(len(records))
    return captioned, failed


def describe(summary: Summary, out: str | os.PathLike) -> str:
    """One line for stderr at the end of a run."""
    line = (f"{out}: {summary.photos} photos; this run captioned {summary.captioned} and "
            f"failed on {summary.failed} ({summary.photos_per_second:.1f} photos/s)")
    if summary.already_done:
        line += f"; {summary.already_done} were already done"
    if summary.failed_in_output:
        line += (f"; {summary.failed_in_output} have an error record "
                 "(fix them and re-run with --retry-errors)")
    return line + "."
