"""Caption cleaning and the vocabulary (stored as JSON, never pickled)."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # NumPy is imported where the mask is built: vocabularies load without it
    import numpy as np

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
SPECIAL_TOKENS = (PAD, UNK, START, END)
_WORD = re.compile(r"[a-z]+")
# Words that may repeat in a pair ("a dog in a field in a park"): articles, prepositions,
# conjunctions, pronouns and auxiliaries. Decoding bans a repeated pair of other words.
FUNCTION_WORDS = frozenset("""
a an the this that these those some another other each its his her their our your my
in on at of to from with without by for into onto over under near behind beside between
through across along around up down off out about above below past while as than
and or but is are was were be being been has have had does do there here it he she they
one two three four""".split())


def clean_caption(caption: str) -> list[str]:
    """Lower-case alphabetic tokens; single letters other than 'a' (stray 's', 't') dropped."""
    return [w for w in _WORD.findall(caption.lower()) if len(w) > 1 or w == "a"]


def word_counts(captions: Iterable[str]) -> Counter:
    counts: Counter = Counter()
    for caption in captions:
        counts.update(clean_caption(caption))
    return counts


class Vocabulary:
    def __init__(self, words: list[str], min_count: int = 1):
        self.itos = list(SPECIAL_TOKENS) + [w for w in words if w not in SPECIAL_TOKENS]
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.min_count = min_count

    pad_id, unk_id, start_id, end_id = 0, 1, 2, 3

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5) -> "Vocabulary":
        counts = word_counts(captions)
        # Most frequent first, ties alphabetically, so the ids are deterministic.
        words = sorted((w for w, c in counts.items() if c >= min_count),
                       key=lambda w: (-counts[w], w))
        return cls(words, min_count)

    @property
    def content_mask(self) -> "np.ndarray":
        """True for each id that is a content word (not special, not a function word)."""
        if getattr(self, "_content_mask", None) is None or len(self._content_mask) != len(self.itos):
            import numpy as np
            self._content_mask = np.array([w not in FUNCTION_WORDS and w not in SPECIAL_TOKENS
                                           for w in self.itos])
        return self._content_mask

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str | list[str]) -> list[int]:
        tokens = clean_caption(caption) if isinstance(caption, str) else caption
        return [self.stoi.get(w, self.unk_id) for w in tokens]

    def decode(self, ids: Iterable[int]) -> str:
        words = []
        for i in ids:
            i = int(i)
            if i == self.end_id:
                break
            if i in (self.pad_id, self.start_id):
                continue
            words.append(self.itos[i])
        return " ".join(words)

    def to_json(self) -> dict:
        return {"format": "captioner-vocab/1", "min_count": self.min_count,
                "special_tokens": list(SPECIAL_TOKENS), "tokens": self.itos}

    @classmethod
    def from_json(cls, data: dict, source: str = "vocab.json") -> "Vocabulary":
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or tokens[:4] != list(SPECIAL_TOKENS) \
                or not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{source}: not a captioner vocabulary "
                             f"(expected 'tokens' starting with {list(SPECIAL_TOKENS)}).")
        if len(set(tokens)) != len(tokens):
            raise ValueError(f"{source}: vocabulary has duplicate tokens.")
        odd = [t for t in tokens[4:] if not _WORD.fullmatch(t)]
        if odd:  # clean_caption only makes a-z words; anything else did not come from training
            raise ValueError(f"{source}: vocabulary has non-word tokens such as {odd[0]!r}.")
        return cls(tokens[4:], int(data.get("min_count", 1)))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=0) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Vocabulary":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read vocabulary ({exc}).") from None
        return cls.from_json(data, str(path))
