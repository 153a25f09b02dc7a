"""Statistics and caption search over a Flickr8k caption set, as plain dicts and lists.

Everything here is a pure function of `{image name: [captions]}` (and split lists), so the
web app can cache the results and the tests can check them on a handful of captions.
Word counts use the same tokenisation as training (`text.clean_caption`), so the
"vocabulary size against minimum count" curve meets the trained model's vocabulary size
at its `min_word_count`.
"""
from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter
from typing import Iterable, Mapping, Sequence

from captioner.data.text import SPECIAL_TOKENS, clean_caption, word_counts

# Function words that dominate any frequency list of English captions; the app can hide
# them to show what the photos are about.
STOP_WORDS = frozenset("""
a an the and or of in on at to with by for from into onto over under its his her their
is are was were be being been while as up down out off some other another
""".split())

_SEARCH_TOKEN = re.compile(r"[a-z0-9]+")
# Between the captions of one photo, so a phrase cannot match across two of them.
_SEPARATOR = " | "


def caption_lengths(captions: Iterable[str]) -> dict[int, int]:
    """{number of words: number of captions}, sorted by length."""
    counts = Counter(len(clean_caption(caption)) for caption in captions)
    return dict(sorted(counts.items()))


def top_words(captions: Iterable[str], n: int = 25, exclude: Iterable[str] = ()) -> list[tuple[str, int]]:
    """The n most frequent words, most frequent first (ties alphabetically)."""
    return _ranked(word_counts(captions), n, exclude)


def _ranked(counts: Mapping[str, int], n: int, exclude: Iterable[str] = ()) -> list[tuple[str, int]]:
    exclude = set(exclude)
    ranked = sorted(((w, c) for w, c in counts.items() if w not in exclude), key=lambda wc: (-wc[1], wc[0]))
    return ranked[:n]


def vocab_size_by_min_count(captions: Iterable[str], min_counts: Iterable[int] = range(1, 21)) -> dict[int, int]:
    """{min_count: vocabulary size}, counted as `Vocabulary.build` does (special tokens included)."""
    counts = sorted(word_counts(captions).values())
    sizes = {}
    for m in min_counts:
        # words with count >= m are those after the last count below m
        sizes[int(m)] = len(counts) - bisect_left(counts, m) + len(SPECIAL_TOKENS)
    return sizes


def images_per_split(splits: Mapping[str, Sequence[str]]) -> dict[str, int]:
    return {split: len(names) for split, names in splits.items()}


def captions_of(captions: Mapping[str, Sequence[str]], names: Iterable[str] | None = None) -> list[str]:
    """All captions of the given photos (all photos if names is None), in order."""
    names = captions.keys() if names is None else names
    return [text for name in names for text in captions.get(name, ())]


def summary(captions: Mapping[str, Sequence[str]], splits: Mapping[str, Sequence[str]],
            train_split: str = "train", n_words: int = 25,
            min_counts: Iterable[int] = range(1, 21)) -> dict:
    """Everything the dataset page charts, in one JSON-friendly dict."""
    every = captions_of(captions, [name for names in splits.values() for name in names])
    train = captions_of(captions, splits.get(train_split, ()))
    tokens = [clean_caption(text) for text in every]
    lengths = [len(words) for words in tokens]
    counts = Counter(word for words in tokens for word in words)
    return {
        "n_images": sum(len(names) for names in splits.values()),
        "n_captions": len(every),
        "mean_caption_words": round(sum(lengths) / len(lengths), 2) if lengths else 0.0,
        "images_per_split": images_per_split(splits),
        "caption_lengths": dict(sorted(Counter(lengths).items())),
        "top_words": _ranked(counts, n_words),
        "top_content_words": _ranked(counts, n_words, STOP_WORDS),
        "distinct_words": len(counts),
        "train_vocab_by_min_count": vocab_size_by_min_count(train, min_counts),
    }


# -- search ----------------------------------------------------------------------------------
def normalize_for_search(text: str) -> str:
    """Lower-case words separated by single spaces: "A dog , running." -> "a dog running"."""
    return " ".join(_SEARCH_TOKEN.findall(text.lower()))


def build_search_index(captions: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """{image: its captions normalised and joined}, built once per dataset."""
    return {name: _SEPARATOR + _SEPARATOR.join(normalize_for_search(t) for t in texts) + _SEPARATOR
            for name, texts in captions.items()}


def search_captions(index: Mapping[str, str], query: str, names: Iterable[str] | None = None) -> list[str]:
    """Photos (in the order of `names`, default all) with a caption containing the query.

    Case and punctuation are ignored and only whole words match: "dog" finds "A dog ."
    but not "hotdog"; "red shirt" finds "a man in a red shirt". An empty query matches all.
    """
    names = list(index) if names is None else list(names)
    needle = normalize_for_search(query)
    if not needle:
        return names
    needle = f" {needle} "
    return [name for name in names if needle in index.get(name, "")]
