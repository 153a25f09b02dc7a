"""Greedy and beam search over a DecoderWeights, batched across images and beams.

Every live beam of every image advances in one `step` call per word. Scores are summed
log-probabilities; finished hypotheses are ranked by `log_prob / length ** alpha` (length
counts the end token), which keeps wide beams from preferring short generic captions.
Neither search ever emits <pad>, <unk> or <start>, the same word twice in a row, or a
three-word phrase it has already said. The model occasionally stutters ("down a street
street") or loops ("a girl in a blue shirt and a girl in a blue shirt and ..."); of Flickr8k's
40,460 human captions only 8 repeat a word and 236 (0.6%) repeat a three-word phrase.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import DecoderWeights
from .text import Vocabulary

NEG_INF = np.float32(-1e30)


@dataclass(frozen=True)
class Caption:
    text: str
    tokens: tuple[int, ...]       # word ids, without start/end
    log_prob: float               # total log-probability, always including the end token
    normalized_log_prob: float    # log_prob / length ** alpha
    finished: bool                # False if cut at the maximum length (end then forced)

    def to_json(self) -> dict:
        return {"caption": self.text, "log_prob": round(self.log_prob, 4),
                "normalized_log_prob": round(self.normalized_log_prob, 4),
                "finished": self.finished}


def _make_caption(vocab: Vocabulary, words, log_prob: float, finished: bool,
                  alpha: float) -> Caption:
    words = tuple(int(w) for w in words)
    length = len(words) + 1  # the end token, chosen or forced at the length limit
    return Caption(vocab.decode(words), words, float(log_prob),
                   float(log_prob) / (max(length, 1) ** alpha), finished)


NO_REPEAT_NGRAM = 3


def _mask_banned(log_probs: np.ndarray, previous: np.ndarray, history: np.ndarray) -> None:
    """Forbid special tokens, the previous word, and any word that would repeat a trigram.

    `history` holds each row's words so far, shape (rows, t), all rows of the same length.
    """
    log_probs[:, [Vocabulary.pad_id, Vocabulary.unk_id, Vocabulary.start_id]] = NEG_INF
    log_probs[np.arange(len(previous)), previous] = NEG_INF
    n, t = NO_REPEAT_NGRAM, history.shape[1]
    if t < n:
        return
    last = history[:, t - n + 1:]
    for i in range(t - n + 1):  # every earlier (n-1)-gram equal to the last one bans its follower
        rows = np.flatnonzero((history[:, i:i + n - 1] == last).all(axis=1))
        log_probs[rows, history[rows, i + n - 1]] = NEG_INF


def greedy_search(weights: DecoderWeights, vocab: Vocabulary, features: np.ndarray,
                  max_length: int = 30, alpha: float = 0.7) -> list[Caption]:
    """One caption per row of `features` (n, 2048), always taking the likeliest word."""
    features = np.atleast_2d(np.asarray(features, dtype=np.float32))
    n = len(features)
    image_proj = weights.project_image(features)
    h, c = weights.initial_state(n)
    token = np.full(n, Vocabulary.start_id)
    words = np.zeros((n, max_length), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    total = np.zeros(n, dtype=np.float64)
    live = np.ones(n, dtype=bool)
    for t in range(max_length):
        rows = np.flatnonzero(live)
        if not len(rows):
            break
        log_probs, h[rows], c[rows] = weights.step(token[rows], h[rows], c[rows], image_proj[rows])
        _mask_banned(log_probs, token[rows], words[rows, :t])  # live rows all have t words
        best = log_probs.argmax(axis=1)
        total[rows] += log_probs[np.arange(len(rows)), best]
        ended = best == Vocabulary.end_id
        live[rows[ended]] = False
        going = rows[~ended]
        words[going, t] = best[~ended]
        lengths[going] += 1
        token[rows] = best
    rows = np.flatnonzero(live)
    if len(rows):  # cut at the limit: charge the end token, so all captions score alike
        log_probs, _, _ = weights.step(token[rows], h[rows], c[rows], image_proj[rows])
        total[rows] += log_probs[:, Vocabulary.end_id]
    return [_make_caption(vocab, words[i, :lengths[i]], total[i], not live[i], alpha)
            for i in range(n)]


def beam_search(weights: DecoderWeights, vocab: Vocabulary, features: np.ndarray,
                beam: int = 3, top: int = 1, max_length: int = 30,
                alpha: float = 0.7) -> list[list[Caption]]:
    """The `top` best captions (by normalised score) for each row of `features`."""
    if beam < 1 or top < 1:
        raise ValueError(f"beam width and top must be at least 1, got {beam} and {top}")
    features = np.atleast_2d(np.asarray(features, dtype=np.float32))
    if not len(features):
        return []
    n, k, vocab_size = len(features), beam, weights.vocab_size
    image_proj = np.repeat(weights.project_image(features), k, axis=0)
    h, c = weights.initial_state(n * k)
    tokens = np.full(n * k, Vocabulary.start_id)
    scores = np.full((n, k), NEG_INF, dtype=np.float32)
    scores[:, 0] = 0.0  # all beams start identical: only one may expand
    words = np.zeros((n, k, 0), dtype=np.int64)
    finished: list[list[Caption]] = [[] for _ in range(n)]
    active = np.arange(n)          # images still searching, in row order of the state
    n_candidates = min(2 * k, k * vocab_size)

    for t in range(max_length):
        a = len(active)
        if t == 0:  # the k beams of a photo are still identical: compute one, copy it
            log_probs, h, c = (np.repeat(x, k, axis=0) for x in weights.step(
                tokens[::k], h[::k], c[::k], image_proj[::k]))
        else:
            log_probs, h, c = weights.step(tokens, h, c, image_proj)
        _mask_banned(log_probs, tokens, words.reshape(a * k, -1))
        flat = (scores[:, :, None] + log_probs.reshape(a, k, vocab_size)).reshape(a, -1)
        part = np.argpartition(-flat, n_candidates - 1, axis=1)[:, :n_candidates]
        part_scores = np.take_along_axis(flat, part, axis=1)
        # Stable sort on (score desc, index asc) keeps the search deterministic under ties.
        order = np.lexsort((part, -part_scores), axis=1)
        ranked = np.take_along_axis(part, order, axis=1)

        new_scores = np.full((a, k), NEG_INF, dtype=np.float32)
        source = np.zeros((a, k), dtype=np.int64)
        new_tokens = np.full((a, k), Vocabulary.end_id, dtype=np.int64)
        for r in range(a):
            image, kept = active[r], 0
            for rank, index in enumerate(ranked[r]):
                score = flat[r, index]
                if score <= NEG_INF / 2:
                    break
                b, w = divmod(int(index), vocab_size)
                if w == Vocabulary.end_id:
                    if rank < k:  # an end among the k best candidates is a finished caption
                        finished[image].append(_make_caption(vocab, words[r, b], score, True, alpha))
                    continue
                new_scores[r, kept], source[r, kept], new_tokens[r, kept] = score, b, w
                kept += 1
                if kept == k:
                    break

        rows = (np.arange(a)[:, None] * k + source).reshape(-1)
        h, c = h[rows], c[rows]
        words = np.concatenate([np.take_along_axis(words, source[:, :, None], axis=1),
                                new_tokens[:, :, None]], axis=2)
        scores, tokens = new_scores, new_tokens.reshape(-1)

        alive = scores[:, 0] > NEG_INF / 2
        done = np.array([len(finished[i]) >= k for i in active]) | ~alive
        if done.any():
            keep = np.flatnonzero(~done)
            active, scores, words = active[keep], scores[keep], words[keep]
            rows = (keep[:, None] * k + np.arange(k)).reshape(-1)
            h, c, tokens, image_proj = h[rows], c[rows], tokens[rows], image_proj[rows]
        if not len(active):
            break

    if len(active):  # reached max_length: keep the cut hypotheses, charged for an end token
        end_log_probs = weights.step(tokens, h, c, image_proj)[0][:, Vocabulary.end_id]
        for r, image in enumerate(active):
            for b in range(k):
                if scores[r, b] > NEG_INF / 2:
                    finished[image].append(_make_caption(
                        vocab, words[r, b], scores[r, b] + end_log_probs[r * k + b], False, alpha))

    results = []
    for hyps in finished:
        hyps = sorted(hyps, key=lambda cap: (-cap.normalized_log_prob, -cap.log_prob, cap.tokens))
        results.append(hyps[:top])
    return results
