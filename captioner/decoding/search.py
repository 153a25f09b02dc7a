"""Greedy search, beam search and sampling, written once for every decoder.

A decoder offers a small NumPy step interface (see model.MergeDecoder, attention.AttentionDecoder):

    context = decoder.prepare(features)         per-photo work, once per photo
    state   = decoder.initial_state(rows)       a tuple of arrays, one row per hypothesis
    out     = decoder.step(tokens, state, context, photos)
              -> out.log_probs (rows, vocab), out.state, out.attention (rows, 101) or None

`photos[r]` says which photo row r belongs to, so beams and samples share their photo's
context instead of copying it. Every live beam of every photo advances in one step call.

Scores are summed log-probabilities; finished hypotheses are ranked by
`log_prob / length ** alpha` (length counts the end token), which keeps wide beams from
preferring short generic captions. Searches never emit <pad>, <unk> or <start>, the same word
twice in a row, a three-word phrase already said, or a pair of content words already said
("a boy in a blue shirt and blue shirt"). Of Flickr8k's 40,460 human captions, 8 repeat a word,
236 (0.6%) a three-word phrase and 217 (0.5%) a content-word pair; 1,607 (4.0%) repeat some
pair, mostly with a function word ("in a ... in a"), which is why the pair rule spares those.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from captioner.data.text import Vocabulary

NEG_INF = np.float32(-1e30)
NO_REPEAT_NGRAM = 3


@dataclass(frozen=True)
class Caption:
    text: str
    tokens: tuple[int, ...]       # word ids, without start/end
    log_prob: float               # total log-probability, always including the end token
    normalized_log_prob: float    # log_prob / length ** alpha
    finished: bool                # False if cut at the maximum length (end then forced)
    # With `attention=True`: one row per word and the end token, 100 regions then the
    # sentinel's share (how much the word came from the language model, not the photo).
    attention: np.ndarray | None = field(default=None, compare=False, repr=False)
    word_log_probs: tuple[float, ...] = field(default=(), compare=False, repr=False)
    # How far to trust it (captioner.trust.estimate.Trust), when the model has an estimate.
    trust: object = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict:
        out = {"caption": self.text, "log_prob": round(self.log_prob, 4),
               "normalized_log_prob": round(self.normalized_log_prob, 4),
               "finished": self.finished}
        # the same keys with or without a trust estimate, so every record has one shape
        out.update(self.trust.to_json() if self.trust is not None else
                   {"trust": None, "verdict": None, "signals": None, "reasons": None})
        return out


@dataclass
class TraceStep:
    """What one step of beam search did for one photo (recorded only when asked).

    `parent` indexes the previous step's `kept` list of the same photo (0 at step 0, the
    start token); scores are cumulative log-probabilities. `finished` holds the hypotheses
    that ended here as (parent, log_prob, normalized_log_prob, ended): ended is False for
    those cut at the length limit, which the last step records.
    """
    step: int
    photo: int
    kept: list = field(default_factory=list)        # (parent, token, score), in beam order
    pruned: list = field(default_factory=list)      # (parent, token, score) ranked but dropped
    finished: list = field(default_factory=list)    # (parent, log_prob, normalized, ended)


def _make_caption(vocab: Vocabulary, words, log_prob: float, finished: bool, alpha: float,
                  attention=None, word_log_probs=()) -> Caption:
    words = tuple(int(w) for w in words)
    length = len(words) + 1  # the end token, chosen or forced at the length limit
    return Caption(vocab.decode(words), words, float(log_prob),
                   float(log_prob) / (max(length, 1) ** alpha), finished,
                   None if attention is None else np.asarray(attention, dtype=np.float32),
                   tuple(float(x) for x in word_log_probs))


def _mask_banned(log_probs: np.ndarray, previous: np.ndarray, history: np.ndarray,
                 content: np.ndarray) -> None:
    """Forbid special tokens, the previous word, a repeated trigram or content-word pair.

    `history` holds each row's words so far, shape (rows, t); `content[w]` is True for words
    that are not function words.
    """
    log_probs[:, [Vocabulary.pad_id, Vocabulary.unk_id, Vocabulary.start_id]] = NEG_INF
    log_probs[np.arange(len(previous)), previous] = NEG_INF
    t = history.shape[1]
    if t >= 2:  # an earlier "blue shirt" bans "shirt" after "blue"
        last = history[:, -1]
        for i in range(t - 1):
            rows = np.flatnonzero((history[:, i] == last) & content[last]
                                  & content[history[:, i + 1]])
            log_probs[rows, history[rows, i + 1]] = NEG_INF
    n = NO_REPEAT_NGRAM
    if t < n:
        return
    last = history[:, t - n + 1:]
    for i in range(t - n + 1):  # every earlier (n-1)-gram equal to the last one bans its follower
        rows = np.flatnonzero((history[:, i:i + n - 1] == last).all(axis=1))
        log_probs[rows, history[rows, i + n - 1]] = NEG_INF


def greedy_search(decoder, vocab: Vocabulary, features: np.ndarray, max_length: int = 30,
                  alpha: float = 0.7, attention: bool = False) -> list[Caption]:
    """One caption per photo of `features`, always taking the likeliest word."""
    context = decoder.prepare(features)
    n = len(next(iter(context.values())))
    state = decoder.initial_state(n)
    token = np.full(n, Vocabulary.start_id)
    words = np.zeros((n, max_length), dtype=np.int64)
    word_lp = np.zeros((n, max_length + 1), dtype=np.float32)
    att = [] if attention else None
    lengths = np.zeros(n, dtype=np.int64)
    live = np.ones(n, dtype=bool)
    content = vocab.content_mask
    for t in range(max_length + 1):
        rows = np.flatnonzero(live)
        if not len(rows):
            break
        out = decoder.step(token[rows], tuple(x[rows] for x in state), context, rows)
        for x, new in zip(state, out.state):
            x[rows] = new
        if attention:
            step_att = np.zeros((n, out.attention.shape[1]), dtype=np.float32)
            step_att[rows] = out.attention
            att.append(step_att)
        log_probs = out.log_probs
        if t == max_length:  # cut at the limit: charge the end token, so all captions score alike
            word_lp[rows, t] = log_probs[:, Vocabulary.end_id]
            break
        _mask_banned(log_probs, token[rows], words[rows, :t], content)  # live rows have t words
        best = log_probs.argmax(axis=1)
        word_lp[rows, t] = log_probs[np.arange(len(rows)), best]
        ended = best == Vocabulary.end_id
        live[rows[ended]] = False
        going = rows[~ended]
        words[going, t] = best[~ended]
        lengths[going] += 1
        token[rows] = best
    captions = []
    for i in range(n):
        steps = lengths[i] + 1
        captions.append(_make_caption(
            vocab, words[i, :lengths[i]], word_lp[i, :steps].astype(np.float64).sum(), not live[i],
            alpha, np.stack([a[i] for a in att[:steps]]) if attention else None, word_lp[i, :steps]))
    return captions


def beam_search(decoder, vocab: Vocabulary, features: np.ndarray, beam: int = 3, top: int = 1,
                max_length: int = 30, alpha: float = 0.7, attention: bool = False,
                trace: list | None = None) -> list[list[Caption]]:
    """The `top` best captions (by normalised score) for each photo of `features`.

    With a `trace` list, each step appends one TraceStep per photo still searching (for
    drawing the search); without one the search does no extra work."""
    if beam < 1 or top < 1:
        raise ValueError(f"beam width and top must be at least 1, got {beam} and {top}")
    if not len(features):
        return []
    context = decoder.prepare(features)
    n, k, vocab_size = len(next(iter(context.values()))), beam, decoder.vocab_size
    content = vocab.content_mask
    photos = np.repeat(np.arange(n), k)          # the photo of each row of the state
    state = decoder.initial_state(n * k)
    tokens = np.full(n * k, Vocabulary.start_id)
    scores = np.full((n, k), NEG_INF, dtype=np.float32)
    scores[:, 0] = 0.0  # all beams start identical: only one may expand
    words = np.zeros((n, k, 0), dtype=np.int64)
    # Per hypothesis: each word's log-probability and (if asked) where it looked.
    word_lp = np.zeros((n, k, 0), dtype=np.float32)
    att = None
    finished: list[list[Caption]] = [[] for _ in range(n)]
    active = np.arange(n)          # photos still searching, in row order of the state
    n_candidates = min(2 * k, k * vocab_size)

    for t in range(max_length):
        a = len(active)
        if t == 0:  # the k beams of a photo are still identical: compute one, copy it
            out = decoder.step(tokens[::k], tuple(x[::k] for x in state), context, photos[::k])
            log_probs = np.repeat(out.log_probs, k, axis=0)
            state = tuple(np.repeat(x, k, axis=0) for x in out.state)
            step_att = None if out.attention is None else np.repeat(out.attention, k, axis=0)
        else:
            out = decoder.step(tokens, state, context, photos)
            log_probs, state, step_att = out.log_probs, out.state, out.attention
        if attention:
            step_att = step_att.reshape(a, k, 1, -1)
            att = step_att if att is None else np.concatenate([att, step_att], axis=2)
        _mask_banned(log_probs, tokens, words.reshape(a * k, -1), content)
        log_probs = log_probs.reshape(a, k, vocab_size)
        flat = (scores[:, :, None] + log_probs).reshape(a, -1)
        part = np.argpartition(-flat, n_candidates - 1, axis=1)[:, :n_candidates]
        part_scores = np.take_along_axis(flat, part, axis=1)
        # Stable sort on (score desc, index asc) keeps the search deterministic under ties.
        order = np.lexsort((part, -part_scores), axis=1)
        ranked = np.take_along_axis(part, order, axis=1)

        new_scores = np.full((a, k), NEG_INF, dtype=np.float32)
        source = np.zeros((a, k), dtype=np.int64)
        new_tokens = np.full((a, k), Vocabulary.end_id, dtype=np.int64)
        for r in range(a):
            photo, kept = active[r], 0
            for rank, index in enumerate(ranked[r]):
                score = flat[r, index]
                if score <= NEG_INF / 2:
                    break
                b, w = divmod(int(index), vocab_size)
                if w == Vocabulary.end_id:
                    if rank < k:  # an end among the k best candidates is a finished caption
                        finished[photo].append(_make_caption(
                            vocab, words[r, b], score, True, alpha,
                            att[r, b] if attention else None,
                            [*word_lp[r, b], log_probs[r, b, w]]))
                    continue
                new_scores[r, kept], source[r, kept], new_tokens[r, kept] = score, b, w
                kept += 1
                if kept == k:
                    break
            if trace is not None:
                trace.append(_trace_step(t, int(photo), ranked[r], flat[r], vocab_size, k,
                                         new_scores[r], source[r], new_tokens[r], finished[photo]))

        rows = (np.arange(a)[:, None] * k + source).reshape(-1)
        state = tuple(x[rows] for x in state)
        chosen_lp = np.take_along_axis(log_probs.reshape(a * k, -1)[rows], new_tokens.reshape(-1, 1), 1)
        words = np.concatenate([np.take_along_axis(words, source[:, :, None], axis=1),
                                new_tokens[:, :, None]], axis=2)
        word_lp = np.concatenate([np.take_along_axis(word_lp, source[:, :, None], axis=1),
                                  chosen_lp.reshape(a, k, 1)], axis=2)
        if attention:
            att = np.take_along_axis(att, source[:, :, None, None], axis=1)
        scores, tokens = new_scores, new_tokens.reshape(-1)

        alive = scores[:, 0] > NEG_INF / 2
        done = np.array([len(finished[i]) >= k for i in active]) | ~alive
        if done.any():
            keep = np.flatnonzero(~done)
            active, scores, words, word_lp = active[keep], scores[keep], words[keep], word_lp[keep]
            if attention:
                att = att[keep]
            rows = (keep[:, None] * k + np.arange(k)).reshape(-1)
            state, tokens, photos = tuple(x[rows] for x in state), tokens[rows], photos[rows]
        if not len(active):
            break

    if len(active):  # reached max_length: keep the cut hypotheses, charged for an end token
        out = decoder.step(tokens, state, context, photos)
        end_log_probs = out.log_probs[:, Vocabulary.end_id]
        for r, photo in enumerate(active):
            for b in range(k):
                if scores[r, b] > NEG_INF / 2:
                    row = r * k + b
                    finished[photo].append(_make_caption(
                        vocab, words[r, b], scores[r, b] + end_log_probs[row], False, alpha,
                        np.concatenate([att[r, b], out.attention[row:row + 1]]) if attention else None,
                        [*word_lp[r, b], end_log_probs[row]]))
                    if trace is not None:
                        cut = finished[photo][-1]
                        if not trace or trace[-1].step != max_length or trace[-1].photo != photo:
                            trace.append(TraceStep(max_length, int(photo)))
                        trace[-1].finished.append((b, cut.log_prob, cut.normalized_log_prob, False))

    results = []
    for hyps in finished:
        hyps = sorted(hyps, key=lambda cap: (-cap.normalized_log_prob, -cap.log_prob, cap.tokens))
        results.append(hyps[:top])
    return results


def _trace_step(t, photo, ranked, flat, vocab_size, k, scores, source, tokens, finished) -> TraceStep:
    """One photo's step for the trace, replaying the ranking the search just used."""
    step = TraceStep(t, photo)
    step.kept = [(int(b), int(w), float(s)) for b, w, s in zip(source, tokens, scores)
                 if s > NEG_INF / 2]
    kept = {(b, w) for b, w, _ in step.kept}
    ended = []
    for rank, index in enumerate(ranked):
        if flat[index] <= NEG_INF / 2:
            break
        b, w = divmod(int(index), vocab_size)
        if w == Vocabulary.end_id and rank < k:
            ended.append(b)  # the search appended these to `finished`, in this order
        elif (b, w) not in kept:
            step.pruned.append((b, w, float(flat[index])))
    new = finished[len(finished) - len(ended):] if ended else []
    step.finished = [(b, cap.log_prob, cap.normalized_log_prob, True) for b, cap in zip(ended, new)]
    return step


def sample_captions(decoder, features: np.ndarray, samples: int, max_length: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`samples` captions per photo drawn from the model (self-critical training).

    Returns word ids (n * samples, max_length + 1), photo by photo, each ending in <end>
    unless cut at the limit and padded with 0, and whether each sample ended by itself.
    Only <pad> and <start> are forbidden, so the draws follow the model's own distribution.
    """
    context = decoder.prepare(features)
    n = len(next(iter(context.values())))
    rows_total = n * samples
    photos = np.repeat(np.arange(n), samples)
    state = decoder.initial_state(rows_total)
    token = np.full(rows_total, Vocabulary.start_id)
    out_ids = np.zeros((rows_total, max_length + 1), dtype=np.int32)
    live = np.ones(rows_total, dtype=bool)
    for t in range(max_length + 1):
        rows = np.flatnonzero(live)
        if not len(rows):
            break
        out = decoder.step(token[rows], tuple(x[rows] for x in state), context, photos[rows])
        for x, new in zip(state, out.state):
            x[rows] = new
        log_probs = out.log_probs
        log_probs[:, [Vocabulary.pad_id, Vocabulary.start_id]] = -np.inf
        if t == max_length:
            break  # cut: no end token, so the reward sees an unfinished caption
        probs = np.exp(log_probs - log_probs.max(axis=1, keepdims=True))
        cumulative = np.cumsum(probs, axis=1)
        draws = rng.random(len(rows)) * cumulative[:, -1]
        chosen = (cumulative < draws[:, None]).sum(axis=1).clip(max=probs.shape[1] - 1)
        out_ids[rows, t] = chosen
        live[rows[chosen == Vocabulary.end_id]] = False
        token[rows] = chosen
    return out_ids, ~live
