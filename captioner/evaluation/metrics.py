"""Caption metrics with the COCO caption toolkit (pycocoevalcap), as papers report them.

`coco_scores` runs the PTB tokenizer, BLEU-1..4, METEOR and CIDEr (the tokenizer and METEOR
need Java). `quick_scores` is the cheap per-epoch validation score: BLEU-4 and CIDEr on our own
tokens. `caption_statistics` measures the failure modes a single score hides.
"""
from __future__ import annotations

import atexit
import shutil
import sys
import threading

import numpy as np

from captioner.data.text import clean_caption


def java_available() -> bool:
    return shutil.which("java") is not None


_METEOR = None                 # the toolkit's METEOR scorer (a Java process), kept for reuse
_METEOR_LOCK = threading.Lock()


def meteor_score(gts: dict, res: dict) -> float:
    """METEOR of tokenized hypotheses against references, from one Java process kept for the
    life of this one: starting one loads its paraphrase tables (about 10 s here, and an
    evaluation scores four caption sets), while scoring on a running one takes a fraction of
    a second. A process that died is replaced once."""
    global _METEOR
    with _METEOR_LOCK:
        for attempt in range(2):
            if _METEOR is None:
                from pycocoevalcap.meteor.meteor import Meteor
                _METEOR = Meteor()
            try:
                return float(_METEOR.compute_score(gts, res)[0])
            except (OSError, ValueError):   # a broken pipe, or an empty line from a dead process
                _close_meteor()             # (its lock stays held after a failure: never reused)
                if attempt:
                    raise


def _close_meteor() -> None:
    """Stop the METEOR process. The toolkit's scorer holds its lock if a score failed midway,
    and its __del__ waits on that lock: released here first."""
    global _METEOR
    scorer, _METEOR = _METEOR, None
    if scorer is not None:
        if scorer.lock.locked():
            scorer.lock.release()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
        try:
            scorer.meteor_p.stdin.close()   # unsent words of a failed score cannot be flushed
        except OSError:
            pass


atexit.register(_close_meteor)


def quick_scores(hypotheses: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    gts = {k: [" ".join(clean_caption(r)) for r in references[k]] for k in hypotheses}
    res = {k: [hypotheses[k] or "a"] for k in hypotheses}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"BLEU-4": round(float(bleu[3]), 4), "CIDEr": round(float(cider), 4)}


def coco_scores(hypotheses: dict[str, str], references: dict[str, list[str]],
                meteor: bool = True, per_image: dict | None = None) -> dict[str, float | None]:
    """BLEU-1..4, METEOR, CIDEr of one hypothesis per image against its references.

    With a `per_image` dict, fills it with each image's CIDEr and smoothed sentence BLEU-4."""
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
            scores["METEOR"] = meteor_score(gts, res)
        else:
            print("METEOR not computed: Java is not installed (apt-get install "
                  "default-jre-headless, or run `make setup`).", file=sys.stderr)
    cider, cider_per_image = Cider().compute_score(gts, res)
    scores["CIDEr"] = float(cider)
    if per_image is not None:
        for key, value in zip(gts, cider_per_image):  # Cider scores in the order of gts' keys
            per_image[key] = {"cider": round(float(value), 4),
                              "bleu4": sentence_bleu4(res[key][0], gts[key])}
    return {k: (round(v, 4) if v is not None else None) for k, v in scores.items()}


# A caption ending in one of these stopped mid-phrase ("a dog runs through the").
BAD_ENDINGS = frozenset("""a an the this that these those some another each its his her their our
your my in on at of to from with without by for into onto over under near behind beside between
through across along around about above below while as than and or but is are was were be being
been has have had does do""".split())


def caption_statistics(captions: list[str]) -> dict[str, float]:
    """What one score hides: `distinct` near 0 means the same caption for every photo;
    `vocabulary_used` (distinct words in all captions) shrinks when a model plays safe;
    `bigram_repeats` and `bad_endings` are the shares of captions that repeat a word pair or
    stop mid-phrase."""
    words = [caption.split() for caption in captions]
    pairs = [list(zip(w, w[1:])) for w in words]
    n = max(len(captions), 1)
    return {"distinct": round(len(set(captions)) / n, 4),
            "mean_words": round(float(np.mean([len(w) for w in words])) if words else 0.0, 2),
            "vocabulary_used": len({x for w in words for x in w}),
            "bigram_repeats": round(sum(len(set(p)) < len(p) for p in pairs) / n, 4),
            "bad_endings": round(sum(bool(w) and w[-1] in BAD_ENDINGS for w in words) / n, 4)}


def human_ceiling(references: dict[str, list[str]]) -> dict[str, float | None]:
    """Scores of each image's first reference against the other four."""
    hyps = {k: refs[0] for k, refs in references.items() if len(refs) > 1}
    others = {k: references[k][1:] for k in hyps}
    return coco_scores(hyps, others)



def sentence_bleu4(hypothesis: str, references: list[str]) -> float:
    """BLEU-4 of one caption, smoothed: unsmoothed BLEU is 0 for any caption without a
    matching 4-gram. NLTK's method 3 is NIST's geometric smoothing, sacrebleu's default."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    value = sentence_bleu([r.split() for r in references], hypothesis.split(),
                          smoothing_function=SmoothingFunction().method3)
    return round(float(value), 4)
