"""Flickr8k readers for the original release and the Kaggle layout, with their splits.

Original: Flicker8k_Dataset/*.jpg + Flickr8k_text/{Flickr8k.token.txt, Flickr_8k.*Images.txt}
Kaggle:   Images/*.jpg + captions.txt (CSV with header `image,caption`), no split files;
          a deterministic 6000/1000/1000 split is derived from a hash of each file name.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "val", "test")
SPLIT_SIZES = {"train": 6000, "val": 1000, "test": 1000}
ORIGINAL_SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt",
                        "val": "Flickr_8k.devImages.txt",
                        "test": "Flickr_8k.testImages.txt"}


class DatasetError(RuntimeError):
    """The dataset directory is missing or not in a layout we understand."""


@dataclass
class Flickr8k:
    root: Path
    layout: str                      # "original" or "kaggle"
    image_dir: Path
    captions: dict[str, list[str]]   # image file name -> raw captions, in file order
    splits: dict[str, list[str]]     # split -> image file names (sorted as in the split file)
    text_dir: Path | None = None
    split_of: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.split_of = {name: split for split, names in self.splits.items() for name in names}

    def image_path(self, name: str) -> Path:
        return self.image_dir / name

    def images(self, split: str | None = None) -> list[str]:
        if split is None:
            return [name for s in SPLITS for name in self.splits.get(s, [])]
        if split not in self.splits:
            raise DatasetError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")
        return list(self.splits[split])


def data_dir_from_env(explicit: str | os.PathLike | None = None) -> Path:
    value = explicit or os.environ.get("CAPTIONER_DATA_DIR")
    if not value:
        raise DatasetError("No dataset directory: pass --data DIR or set CAPTIONER_DATA_DIR.")
    return Path(value).expanduser()


def detect_layout(root: Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset directory does not exist.")
    if (root / "Flickr8k_text").is_dir() or (root / "Flicker8k_Dataset").is_dir():
        return "original"
    if (root / "captions.txt").exists() or (root / "Images").is_dir():
        return "kaggle"
    raise DatasetError(
        f"{root}: not a Flickr8k directory: expected Flicker8k_Dataset/ and Flickr8k_text/ "
        "(original release) or Images/ and captions.txt (Kaggle layout).")


def load_flickr8k(root: str | os.PathLike) -> Flickr8k:
    root = Path(root).expanduser()
    layout = detect_layout(root)
    try:
        return _load_original(root) if layout == "original" else _load_kaggle(root)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{root}: a caption or split file is not UTF-8 text ({exc.reason} "
                           f"at byte {exc.start}).") from None
    except csv.Error as exc:
        raise DatasetError(f"{root / 'captions.txt'}: malformed CSV ({exc}).") from None


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetError(f"{path}: missing ({what}).")
    return path


def _load_original(root: Path) -> Flickr8k:
    image_dir = _require(root / "Flicker8k_Dataset", "directory of Flickr8k photos")
    text_dir = _require(root / "Flickr8k_text", "directory of Flickr8k caption files")
    captions = read_token_file(_require(text_dir / "Flickr8k.token.txt", "the caption file"))
    splits = {}
    for split, filename in ORIGINAL_SPLIT_FILES.items():
        split_file = _require(text_dir / filename, f"the {split} split list")
        names = [n.strip() for n in split_file.read_text(encoding="utf-8").splitlines() if n.strip()]
        splits[split] = [n for n in names if n in captions]
    return Flickr8k(root=root, layout="original", image_dir=image_dir, captions=captions,
                    splits=splits, text_dir=text_dir)


def read_token_file(token_file: Path) -> dict[str, list[str]]:
    """Flickr8k's caption format: lines of '<image>#<n><TAB><caption>', by image in file order."""
    captions: dict[str, list[str]] = {}
    with open(token_file, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            key, sep, caption = line.partition("\t")
            if not sep:
                raise DatasetError(f"{token_file}:{line_no}: expected '<image>#<n><TAB><caption>'.")
            image = key.rsplit("#", 1)[0]
            captions.setdefault(image, []).append(caption.strip())
    return captions


def _load_kaggle(root: Path) -> Flickr8k:
    image_dir = _require(root / "Images", "directory of Flickr8k photos")
    csv_file = _require(root / "captions.txt", "the caption CSV with header image,caption")
    captions: dict[str, list[str]] = {}
    with open(csv_file, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or [h.strip().lower() for h in header[:2]] != ["image", "caption"]:
            raise DatasetError(f"{csv_file}: expected a CSV header 'image,caption', got {header!r}.")
        for row in reader:
            if len(row) < 2 or not row[0].strip():
                continue
            # Captions may contain commas without quoting; rejoin the tail.
            captions.setdefault(row[0].strip(), []).append(",".join(row[1:]).strip())
    present = sorted(name for name in captions if (image_dir / name).is_file())
    return Flickr8k(root=root, layout="kaggle", image_dir=image_dir, captions=captions,
                    splits=deterministic_split(present))


def deterministic_split(names: list[str]) -> dict[str, list[str]]:
    """6000/1000/1000 (scaled down for smaller sets) by the sha1 of each name."""
    ordered = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    total = len(ordered)
    full = sum(SPLIT_SIZES.values())
    n_val = round(total * SPLIT_SIZES["val"] / full) if total < full else SPLIT_SIZES["val"]
    n_test = round(total * SPLIT_SIZES["test"] / full) if total < full else SPLIT_SIZES["test"]
    test = sorted(ordered[:n_test])
    val = sorted(ordered[n_test:n_test + n_val])
    # The full corpus has 8,091 photos: like the original release, 91 stay out of every split.
    train = sorted(ordered[n_test + n_val:][:SPLIT_SIZES["train"]])
    return {"train": train, "val": val, "test": test}


@dataclass
class CaptionFolder:
    """Photos with people's captions from outside Flickr8k (../shared/coco-dev): `photos/` and
    `captions.txt` in Flickr8k's token format. For measuring a model, never for training it."""
    root: Path
    image_dir: Path
    captions: dict[str, list[str]]   # image file name -> its captions

    @property
    def name(self) -> str:
        return self.root.name

    def image_path(self, name: str) -> Path:
        return self.image_dir / name

    def images(self) -> list[str]:
        return sorted(self.captions)


def load_caption_folder(root: str | os.PathLike) -> CaptionFolder:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: photo folder does not exist.")
    image_dir = _require(root / "photos", "directory of photos")
    captions = read_token_file(_require(root / "captions.txt", "the caption file, '<image>#<n><TAB><caption>'"))
    missing = sorted(name for name in captions if not (image_dir / name).is_file())
    if missing:
        raise DatasetError(f"{image_dir}: {len(missing)} captioned photos missing, e.g. {missing[0]}.")
    if not captions:
        raise DatasetError(f"{root / 'captions.txt'}: no captions.")
    return CaptionFolder(root=root, image_dir=image_dir, captions=captions)
