"""Human judgements shipped with the original Flickr8k release (Hodosh et al., 2013).

    ExpertAnnotations.txt      image <TAB> caption id <TAB> score <TAB> score <TAB> score
                               (three experts, 1 = unrelated ... 4 = describes the image)
    CrowdFlowerAnnotations.txt image <TAB> caption id <TAB> fraction yes <TAB> yes <TAB> no
                               (crowd workers asked "does this caption describe the image?")

A caption id is "<photo>.jpg#<n>", the n-th caption written for <photo>; it is often a
caption of ANOTHER photo, since the judgements rate image/caption pairs. The Kaggle layout
has no such files: every reader here returns empty results for missing files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

EXPERT_FILE = "ExpertAnnotations.txt"
CROWD_FILE = "CrowdFlowerAnnotations.txt"


@dataclass(frozen=True)
class PairRating:
    """A judgement of one photo/caption pair; the caption may be another photo's."""
    image: str                   # the photo that was shown
    caption_id: str              # "<photo>.jpg#<n>"

    @property
    def caption_image(self) -> str:
        return split_caption_id(self.caption_id)[0]

    @property
    def caption_index(self) -> int:
        return split_caption_id(self.caption_id)[1]

    @property
    def own_caption(self) -> bool:
        """True when the caption was written for this very photo."""
        return self.caption_image == self.image


@dataclass(frozen=True)
class ExpertRating(PairRating):
    scores: tuple[int, ...]      # one 1-4 score per expert

    @property
    def mean_score(self) -> float:
        return sum(self.scores) / len(self.scores)


@dataclass(frozen=True)
class CrowdRating(PairRating):
    fraction_yes: float          # share of workers who said the caption fits the photo
    yes: int
    no: int


@dataclass
class Annotations:
    expert: dict[str, list[ExpertRating]] = field(default_factory=dict)  # photo -> ratings
    crowd: dict[str, list[CrowdRating]] = field(default_factory=dict)
    skipped_lines: int = 0       # malformed lines ignored while reading

    def __bool__(self) -> bool:
        return bool(self.expert or self.crowd)

    def for_image(self, image: str) -> tuple[list[ExpertRating], list[CrowdRating]]:
        return list(self.expert.get(image, [])), list(self.crowd.get(image, []))


def split_caption_id(caption_id: str) -> tuple[str, int]:
    """"123_abc.jpg#2" -> ("123_abc.jpg", 2); an id without a valid index gives -1."""
    image, _, index = caption_id.rpartition("#")
    if not image:
        return caption_id, -1
    try:
        return image, int(index)
    except ValueError:
        return image, -1


def caption_text(captions: dict[str, list[str]], caption_id: str) -> str | None:
    """The text a caption id refers to, or None if the dataset does not have it."""
    image, index = split_caption_id(caption_id)
    texts = captions.get(image, [])
    return texts[index] if 0 <= index < len(texts) else None


def _rows(path: Path, n_fields: int):
    """Yield (fields or None for a malformed line) for each non-blank line of a TSV file."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            parts = line.split("\t")
            yield parts if len(parts) == n_fields else None


def read_expert(path: str | os.PathLike) -> tuple[dict[str, list[ExpertRating]], int]:
    """Expert ratings grouped by photo, and the number of malformed lines skipped."""
    path = Path(path)
    ratings: dict[str, list[ExpertRating]] = {}
    skipped = 0
    if not path.is_file():
        return ratings, skipped
    for parts in _rows(path, 5):
        try:
            image, caption_id = parts[0], parts[1]
            scores = tuple(int(s) for s in parts[2:])
        except (TypeError, ValueError):
            skipped += 1
            continue
        if not all(1 <= s <= 4 for s in scores):
            skipped += 1
            continue
        ratings.setdefault(image, []).append(ExpertRating(image, caption_id, scores))
    return ratings, skipped


def read_crowd(path: str | os.PathLike) -> tuple[dict[str, list[CrowdRating]], int]:
    """Crowd judgements grouped by photo, and the number of malformed lines skipped."""
    path = Path(path)
    ratings: dict[str, list[CrowdRating]] = {}
    skipped = 0
    if not path.is_file():
        return ratings, skipped
    for parts in _rows(path, 5):
        try:
            image, caption_id = parts[0], parts[1]
            fraction, yes, no = float(parts[2]), int(parts[3]), int(parts[4])
        except (TypeError, ValueError):
            skipped += 1
            continue
        if yes < 0 or no < 0 or not 0.0 <= fraction <= 1.0:
            skipped += 1
            continue
        ratings.setdefault(image, []).append(CrowdRating(image, caption_id, fraction, yes, no))
    return ratings, skipped


def load_annotations(text_dir: str | os.PathLike | None) -> Annotations:
    """Both annotation files from a Flickr8k_text/ directory; None or missing -> empty."""
    if text_dir is None:
        return Annotations()
    text_dir = Path(text_dir)
    expert, skipped_expert = read_expert(text_dir / EXPERT_FILE)
    crowd, skipped_crowd = read_crowd(text_dir / CROWD_FILE)
    return Annotations(expert, crowd, skipped_expert + skipped_crowd)
