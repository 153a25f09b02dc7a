"""Greedy and beam search on tiny random decoders of both kinds, checked against exhaustive
search; the NumPy steps checked against the Keras forward passes."""
import itertools

import numpy as np
import pytest

from captioner.decoders.attention import AttentionDecoder
from captioner.decoders.config import Config
from captioner.decoders.registry import build_decoder, numpy_decoder
from captioner.decoding.search import beam_search, greedy_search, sample_captions
from captioner.decoders.merge import MergeDecoder
from captioner.data.text import Vocabulary

VOCAB = Vocabulary(["x", "y", "z"])
BANNED = [Vocabulary.pad_id, Vocabulary.unk_id, Vocabulary.start_id]


def _random(rng):
    return lambda *shape: (rng.standard_normal(shape) * 0.5).astype(np.float32)


def random_merge(seed: int, vocab_size: int = len(VOCAB), units=8, embed=4, feat=6) -> MergeDecoder:
    r = _random(np.random.default_rng(seed))
    w = MergeDecoder(r(feat, units), r(units), r(vocab_size, embed), r(embed, 4 * units),
                     r(units, 4 * units), r(4 * units), r(units, units), r(units), r(units, vocab_size),
                     r(vocab_size))
    w.logits_bias[Vocabulary.end_id] -= 3.0   # so captions are not all empty
    w.logits_kernel[:, Vocabulary.end_id] *= 0.2
    return w


def random_attention(seed: int, vocab_size: int = len(VOCAB), units=8, embed=4, feat=6, att=5):
    r = _random(np.random.default_rng(seed))
    w = AttentionDecoder(r(feat, units), r(units), r(units, att), r(feat, embed), r(embed),
                         r(vocab_size, embed), r(2 * embed, 4 * units), r(units, 4 * units), r(4 * units),
                         r(2 * embed, units), r(units), r(units, units), r(units, att) * 4, r(units, att),
                         r(units, units), r(units), r(units, vocab_size), r(vocab_size))
    w.logits_bias[Vocabulary.end_id] -= 3.0
    w.logits_kernel[:, Vocabulary.end_id] *= 0.2
    w.__post_init__()
    return w


def random_features(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "merge":
        return rng.standard_normal((n, 6)).astype(np.float32)
    # Photos that differ region by region and as a whole, so captions differ too.
    return (rng.standard_normal((n, 100, 6)) + 3 * rng.standard_normal((n, 1, 6))).astype(np.float32)


DECODERS = {"merge": random_merge, "attention": random_attention}


def allowed(seq) -> bool:
    """The searches' rules for this all-content-word vocabulary: no word twice in a row, no
    repeated pair (every pair here is of content words), hence no repeated trigram."""
    pairs = list(zip(seq, seq[1:]))
    return all(a != b for a, b in pairs) and len(pairs) == len(set(pairs))


def exhaustive_best(decoder, feature: np.ndarray, max_length: int, alpha: float):
    """Score every allowed caption of up to max_length words; return (normalised score, tokens)."""
    context = decoder.prepare(feature[None])
    photo = np.array([0])
    best = (-np.inf, ())
    for length in range(max_length + 1):
        for seq in itertools.product(range(4, decoder.vocab_size), repeat=length):
            if not allowed(seq):
                continue
            state, token, total = decoder.initial_state(1), Vocabulary.start_id, 0.0
            for word in seq:
                out = decoder.step(np.array([token]), state, context, photo)
                total, token, state = total + out.log_probs[0, word], word, out.state
            # Finished or cut at the limit, a caption is charged for its end token.
            out = decoder.step(np.array([token]), state, context, photo)
            best = max(best, ((total + out.log_probs[0, Vocabulary.end_id]) / (length + 1) ** alpha, seq))
    return best


@pytest.mark.parametrize("kind", DECODERS)
@pytest.mark.parametrize("seed", [0, 2, 3])
@pytest.mark.parametrize("alpha", [0.0, 0.7, 1.0])
def test_beam_one_is_greedy_and_full_beam_is_exact(kind, seed, alpha):
    decoder = DECODERS[kind](seed)
    features = random_features(kind, 5, seed + 100)
    greedy = greedy_search(decoder, VOCAB, features, max_length=6, alpha=alpha)
    beam1 = beam_search(decoder, VOCAB, features, beam=1, max_length=6, alpha=alpha)
    # 3 words, no word twice in a row, no pair twice: at most 3 * 2**5 = 96 live prefixes,
    # so k=96 prunes nothing.
    full = beam_search(decoder, VOCAB, features, beam=96, top=3, max_length=6, alpha=alpha)
    for i in range(len(features)):
        assert beam1[i][0].tokens == greedy[i].tokens
        assert beam1[i][0].log_prob == pytest.approx(greedy[i].log_prob, abs=1e-4)
        score, tokens = exhaustive_best(decoder, features[i], 6, alpha)
        assert full[i][0].tokens == tokens
        assert full[i][0].normalized_log_prob == pytest.approx(score, abs=1e-4)
        assert [c.normalized_log_prob for c in full[i]] == sorted(
            (c.normalized_log_prob for c in full[i]), reverse=True)
        for cap in (greedy[i], full[i][0]):  # per-word log-probabilities add up to the total
            assert len(cap.word_log_probs) == len(cap.tokens) + 1
            assert sum(cap.word_log_probs) == pytest.approx(cap.log_prob, abs=1e-4)
    assert len({g.tokens for g in greedy}) > 1, "test decoder is degenerate; pick other seeds"


def test_never_emits_banned_tokens_and_respects_max_length():
    w = random_merge(7)
    w.logits_bias[Vocabulary.unk_id] += 50.0   # the model would love to say <unk>
    w.logits_bias[Vocabulary.start_id] += 40.0
    w.logits_bias[Vocabulary.end_id] -= 50.0   # and hardly ever stops by itself
    features = np.ones((3, 6), dtype=np.float32)
    # (5 words: the rules allow at most 7 from three words, then only <end> is left.)
    captions = [c for c in greedy_search(w, VOCAB, features, max_length=5)]
    captions += [c for caps in beam_search(w, VOCAB, features, beam=4, top=4, max_length=5) for c in caps]
    for cap in captions:
        assert set(cap.tokens) <= {4, 5, 6} and len(cap.tokens) <= 5
        assert cap.finished or len(cap.tokens) == 5
        assert allowed(cap.tokens), cap.text
    assert any(not cap.finished for cap in captions)  # the limit was reached and respected


def test_function_word_pairs_may_repeat_content_pairs_may_not():
    from captioner.decoding.search import NEG_INF, _mask_banned
    vocab = Vocabulary(["a", "dog", "in", "blue", "shirt", "and", "red"])
    ids = {w: vocab.stoi[w] for w in vocab.itos}
    history = np.array([[ids[w] for w in "a dog in a blue shirt and blue".split()],
                        [ids[w] for w in "a dog in a red shirt and red".split()],
                        [ids[w] for w in "a dog in a blue shirt in a".split()]])
    log_probs = np.zeros((3, len(vocab)), np.float32)
    _mask_banned(log_probs, history[:, -1], history, vocab.content_mask)
    banned = [{vocab.itos[i] for i in np.flatnonzero(row <= NEG_INF / 2)} - set(vocab.itos[:4])
              for row in log_probs]
    assert banned[0] == {"blue", "shirt"}    # no "blue blue", no second "blue shirt"
    assert banned[1] == {"red", "shirt"}
    assert banned[2] == {"a", "blue"}        # "in a" may repeat, "in a blue" may not
    history = np.array([[ids[w] for w in "a dog in a".split()]])
    log_probs = np.zeros((1, len(vocab)), np.float32)
    _mask_banned(log_probs, history[:, -1], history, vocab.content_mask)
    banned = {vocab.itos[i] for i in np.flatnonzero(log_probs[0] <= NEG_INF / 2)} - set(vocab.itos[:4])
    assert banned == {"a"}                   # "a dog in a dog" repeats only "a dog": allowed


def test_deterministic_and_batch_independent():
    for make, kind in ((random_merge, "merge"), (random_attention, "attention")):
        w = make(3)
        features = random_features(kind, 5, 1)
        together = beam_search(w, VOCAB, features, beam=3, top=2)
        alone = [beam_search(w, VOCAB, f[None], beam=3, top=2)[0] for f in features]
        assert together == beam_search(w, VOCAB, features, beam=3, top=2)
        # BLAS may round differently for other batch sizes: same captions, scores to 1e-5.
        for mine, single in zip(together, alone):
            assert [c.tokens for c in mine] == [c.tokens for c in single]
            assert [c.log_prob for c in mine] == pytest.approx([c.log_prob for c in single], abs=1e-5)


def test_attention_weights_come_with_each_word_on_request():
    w = random_attention(2)
    features = random_features("attention", 3, 5)
    for caps in (greedy_search(w, VOCAB, features, max_length=6, attention=True),
                 [c for cs in beam_search(w, VOCAB, features, beam=3, top=3, max_length=6, attention=True)
                  for c in cs]):
        for cap in caps:
            assert cap.attention.shape == (len(cap.tokens) + 1, 101)
            np.testing.assert_allclose(cap.attention.sum(axis=1), 1.0, atol=1e-5)
    plain = beam_search(w, VOCAB, features, beam=3, top=3, max_length=6)
    assert all(c.attention is None for cs in plain for c in cs)
    # The weights a caption carries are those of a teacher-forced pass over its words.
    cap = beam_search(w, VOCAB, features[:1], beam=3, max_length=6, attention=True)[0][0]
    context, state, token = w.prepare(features[:1]), w.initial_state(1), Vocabulary.start_id
    for t, word in enumerate([*cap.tokens, Vocabulary.end_id]):
        out = w.step(np.array([token]), state, context, np.array([0]))
        np.testing.assert_allclose(out.attention[0], cap.attention[t], atol=1e-6)
        state, token = out.state, word


def test_numpy_steps_match_keras_forward_passes():
    rng = np.random.default_rng(0)
    maps = rng.standard_normal((2, 10, 10, 2048)).astype(np.float16)
    tokens = np.array([[2, 5, 6, 7, 9], [2, 11, 4, 4, 8], [2, 19, 3, 5, 5]], dtype=np.int32)
    photos = np.array([0, 1, 0])
    for kind in ("merge", "attention"):
        config = Config(vocab_size=20, units=16, embed_dim=8, attention_dim=8, decoder=kind)
        model = build_decoder(config)
        decoder = numpy_decoder(model, config)
        if kind == "merge":
            from captioner.vision.encoder import pool
            logits = model([pool(maps)[photos], tokens], training=False).numpy()
            weights = None
        else:
            logits, weights = model.forward({"regions": maps.reshape(2, 100, 2048).astype(np.float32),
                                             "photo_index": photos, "tokens": tokens})
            logits, weights = logits.numpy(), weights.numpy()
        expected = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        context = decoder.prepare(maps)
        state = decoder.initial_state(3)
        for t in range(tokens.shape[1]):
            out = decoder.step(tokens[:, t], state, context, photos)
            np.testing.assert_allclose(out.log_probs, expected[:, t], atol=1e-4, err_msg=kind)
            if weights is not None:
                np.testing.assert_allclose(out.attention, weights[:, t], atol=1e-5)
            state = out.state


def test_sampling_follows_the_model_and_marks_endings():
    w = random_attention(4)
    features = random_features("attention", 2, 0)
    ids, ended = sample_captions(w, features, samples=400, max_length=5, rng=np.random.default_rng(0))
    assert ids.shape == (800, 6) and ended.dtype == bool
    for row, done in zip(ids, ended):
        words = list(row)
        if done:
            end = words.index(Vocabulary.end_id)
            assert all(x == 0 for x in words[end + 1:]) and Vocabulary.start_id not in words[:end]
        else:
            assert Vocabulary.end_id not in words and words[-1] == 0
    # The first word's empirical frequencies match the model's first-step distribution.
    out = w.step(np.array([Vocabulary.start_id]), w.initial_state(1), w.prepare(features[:1]), np.array([0]))
    p = np.exp(out.log_probs[0])
    p[[Vocabulary.pad_id, Vocabulary.start_id]] = 0
    p /= p.sum()
    observed = np.bincount(ids[:400, 0], minlength=len(p)) / 400
    np.testing.assert_allclose(observed, p, atol=0.08)


def test_invalid_beam():
    with pytest.raises(ValueError, match="at least 1"):
        beam_search(random_merge(0), VOCAB, np.zeros((1, 6), np.float32), beam=0)
