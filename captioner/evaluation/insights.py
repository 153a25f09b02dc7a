"""Where a model agrees with people and where it does not, photo by photo.

Evaluation writes, beside metrics.json, each test photo's caption with its CIDEr and smoothed
sentence BLEU-4 against the photo's references (artifacts.PHOTO_SCORES). This module reads
those files for every model, sorts and filters the photos, and finds the words people use
that a model never says. Plain lists and dicts, so the app can lay them out and the tests can
check them on a handful of captions.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from captioner.model_dirs.artifacts import PHOTO_SCORES, VOCAB, ArtifactError, read_json
from captioner.data.stats import normalize_for_search
from captioner.evaluation.metrics import sentence_bleu4
from captioner.data.text import Vocabulary, clean_caption

SCORE_KEYS = ("cider", "bleu4")
# Where a word must (or must not) appear for a photo to be kept by `filter_photos`.
WHERE = {
    "references": (True, None),
    "caption": (None, True),
    "references, not caption": (True, False),
    "caption, not references": (False, True),
}


def load_photo_scores(model_dir: str | os.PathLike) -> dict[str, dict] | None:
    """{image: {"caption", "beam", "cider", "bleu4"}} from a model directory, or None when
    the model was evaluated before evaluation wrote per-photo scores."""
    path = Path(model_dir) / PHOTO_SCORES
    if not path.is_file():
        return None
    rows = read_json(path)
    if not isinstance(rows, list):
        raise ArtifactError(f"{path}: expected a list of photos, found {type(rows).__name__}.")
    scores = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not {"image", "caption", *SCORE_KEYS} <= set(row):
            raise ArtifactError(f"{path}: entry {i} lacks image, caption, cider or bleu4.")
        scores[row["image"]] = {"caption": str(row["caption"]), "beam": row.get("beam"),
                                **{key: float(row[key]) for key in SCORE_KEYS}}
    return scores


def model_vocabulary(model_dir: str | os.PathLike) -> set[str] | None:
    """The words a model can say, or None if its vocabulary cannot be read."""
    try:
        return set(Vocabulary.load(Path(model_dir) / VOCAB).itos)
    except ValueError:
        return None


def _contains(text: str, needle: str) -> bool:
    """Whole-word match, as the dataset page's caption search does ("dog" is not "hotdog")."""
    return f" {needle} " in f" {normalize_for_search(text)} "


def filter_photos(scores: Mapping[str, dict], references: Mapping[str, Sequence[str]],
                  word: str, where: str = "references") -> list[str]:
    """Photos whose references and/or caption contain `word` (a word or phrase), as `where`
    says: e.g. "references, not caption" finds the dog photos the model did not call dogs."""
    if where not in WHERE:
        raise ValueError(f"where must be one of {', '.join(WHERE)}, got {where!r}")
    needle = normalize_for_search(word)
    if not needle:
        return list(scores)
    want_refs, want_caption = WHERE[where]
    kept = []
    for image, row in scores.items():
        in_refs = any(_contains(r, needle) for r in references.get(image, ()))
        in_caption = _contains(row["caption"], needle)
        if (want_refs is None or in_refs == want_refs) and (want_caption is None or in_caption == want_caption):
            kept.append(image)
    return kept


def sort_photos(scores: Mapping[str, dict], images: Iterable[str] | None = None,
                by: str = "cider", best_first: bool = False) -> list[str]:
    """Images ordered by a per-photo score (ties by name, so the order is stable)."""
    if by not in SCORE_KEYS:
        raise ValueError(f"by must be one of {', '.join(SCORE_KEYS)}, got {by!r}")
    images = list(scores) if images is None else [i for i in images if i in scores]
    sign = -1 if best_first else 1
    return sorted(images, key=lambda image: (sign * scores[image][by], image))


def reference_bleu4(references: Sequence[str]) -> list[float]:
    """Each reference's sentence BLEU-4 against the photo's other references: how people
    score by the same yardstick (against four references, the model against five)."""
    cleaned = [" ".join(clean_caption(r)) for r in references]
    return [sentence_bleu4(text, cleaned[:i] + cleaned[i + 1:]) if len(cleaned) > 1 else 0.0
            for i, text in enumerate(cleaned)]


def missed_words(people: Iterable[str], model: Iterable[str], vocabulary: set[str] | None = None,
                 top: int = 25, min_count: int = 5) -> list[dict]:
    """Words people use at least `min_count` times that the model never says, most frequent
    first, each marked with whether the model could have said it (in its vocabulary)."""
    said = Counter(w for caption in model for w in clean_caption(caption))
    heard = Counter(w for caption in people for w in clean_caption(caption))
    missing = sorted(((w, c) for w, c in heard.items() if c >= min_count and w not in said),
                     key=lambda wc: (-wc[1], wc[0]))[:top]
    return [{"word": w, "people": c,
             "in vocabulary": None if vocabulary is None else w in vocabulary} for w, c in missing]
