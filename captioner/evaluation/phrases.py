"""Two- and three-word phrases in people's captions and a model's, side by side.

NLTK's collocation finders count the phrases within each caption (never across two of
them). Counts are turned into rates per 100 captions, because a photo has five references
and one model caption; a phrase the model says far more often than people ("blue shirt")
is a habit it learned, not something it saw.
"""
from __future__ import annotations

from typing import Iterable

from captioner.data.text import FUNCTION_WORDS, clean_caption


def phrase_counts(captions: Iterable[str], n: int = 2, content_only: bool = True) -> dict[str, int]:
    """{phrase: number of occurrences}; with `content_only`, phrases that begin or end with a
    function word are dropped: fragments such as "in a" and "a blue" are the most frequent
    and say nothing that "blue shirt" or "man in black" does not."""
    from nltk.collocations import BigramCollocationFinder, TrigramCollocationFinder
    finders = {2: BigramCollocationFinder, 3: TrigramCollocationFinder}
    if n not in finders:
        raise ValueError(f"phrases of 2 or 3 words, not {n}")
    finder = finders[n].from_documents(clean_caption(c) for c in captions)
    if content_only:
        finder.apply_ngram_filter(lambda *words: words[0] in FUNCTION_WORDS or words[-1] in FUNCTION_WORDS)
    return {" ".join(gram): count for gram, count in finder.ngram_fd.items()}


def compare_phrases(people: list[str], model: list[str], n: int = 2, top: int = 15,
                    content_only: bool = True) -> dict[str, list[dict]]:
    """The `top` phrases of people and of the model, each with both rates per 100 captions,
    and the phrases the model over-uses most (its rate minus people's)."""
    people_counts = phrase_counts(people, n, content_only)
    model_counts = phrase_counts(model, n, content_only)
    per_people, per_model = 100 / max(len(people), 1), 100 / max(len(model), 1)

    def row(phrase: str) -> dict:
        p = people_counts.get(phrase, 0) * per_people
        m = model_counts.get(phrase, 0) * per_model
        return {"phrase": phrase, "people": round(p, 2), "model": round(m, 2),
                "model / people": round(m / p, 2) if p else None}

    def ranked(counts: dict[str, int]) -> list[str]:
        return sorted(counts, key=lambda phrase: (-counts[phrase], phrase))[:top]

    overused = sorted(model_counts, key=lambda phrase: (
        -(model_counts[phrase] * per_model - people_counts.get(phrase, 0) * per_people), phrase))[:top]
    return {"people": [row(p) for p in ranked(people_counts)],
            "model": [row(p) for p in ranked(model_counts)],
            "overused": [row(p) for p in overused]}
