"""Caption metrics with the COCO caption toolkit (pycocoevalcap), as papers report them.

`coco_scores` runs the PTB tokenizer, BLEU-1..4, METEOR and CIDEr (the tokenizer and METEOR
need Java). `quick_bleu4` is the cheap per-epoch validation score: BLEU-4 on our own tokens.
"""
from __future__ import annotations

import shutil
import sys

import numpy as np

from .text import clean_caption


def java_available() -> bool:
    return shutil.which("java") is not None


def quick_bleu4(hypotheses: dict[str, str], references: dict[str, list[str]]) -> float:
    from pycocoevalcap.bleu.bleu import Bleu
    gts = {k: [" ".join(clean_caption(r)) for r in references[k]] for k in hypotheses}
    res = {k: [hypotheses[k] or "a"] for k in hypotheses}
    score, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return float(score[3])


def coco_scores(hypotheses: dict[str, str], references: dict[str, list[str]],
                meteor: bool = True) -> dict[str, float | None]:
    """BLEU-1..4, METEOR, CIDEr of one hypothesis per image against its references."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    keys = sorted(hypotheses)
    if java_available():
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({k: [{"caption": r} for r in references[k]] for k in keys})
        res = tokenizer.tokenize({k: [{"caption": hypotheses[k]}] for k in keys})
    else:
        # Same idea as PTB tokenisation for these captions: lower case, words only.
        gts = {k: [" ".join(clean_caption(r)) for r in references[k]] for k in keys}
        res = {k: [" ".join(clean_caption(hypotheses[k]))] for k in keys}
    res = {k: [v[0] if v and v[0] else "a"] for k, v in res.items()}  # empty breaks BLEU

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores: dict[str, float | None] = {f"BLEU-{i + 1}": float(bleu[i]) for i in range(4)}
    scores["METEOR"] = None
    if meteor:
        if java_available():
            from pycocoevalcap.meteor.meteor import Meteor
            scorer = Meteor()
            try:
                scores["METEOR"] = float(scorer.compute_score(gts, res)[0])
            finally:
                del scorer
        else:
            print("METEOR not computed: Java is not installed (apt-get install "
                  "default-jre-headless, or run `make setup`).", file=sys.stderr)
    scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return {k: (round(v, 4) if v is not None else None) for k, v in scores.items()}


def distinct_fraction(captions: list[str]) -> float:
    """Share of distinct captions: near 0 means the model says the same thing for every photo."""
    return round(len(set(captions)) / max(len(captions), 1), 4)


def human_ceiling(references: dict[str, list[str]]) -> dict[str, float | None]:
    """Scores of each image's first reference against the other four."""
    hyps = {k: refs[0] for k, refs in references.items() if len(refs) > 1}
    others = {k: references[k][1:] for k in hyps}
    return coco_scores(hyps, others)


def mean_length(captions: list[str]) -> float:
    return round(float(np.mean([len(c.split()) for c in captions])) if captions else 0.0, 2)
