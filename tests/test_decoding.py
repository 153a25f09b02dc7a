"""Greedy and beam search on tiny random decoders, checked against exhaustive search."""
import itertools

import numpy as np
import pytest

from captioner.config import Config
from captioner.decoding import beam_search, greedy_search
from captioner.model import DecoderWeights, build_decoder
from captioner.text import Vocabulary

VOCAB = Vocabulary(["x", "y", "z"])
BANNED = [Vocabulary.pad_id, Vocabulary.unk_id, Vocabulary.start_id]


def random_weights(seed: int, vocab_size: int = len(VOCAB), units=8, embed=4, feat=6) -> DecoderWeights:
    rng = np.random.default_rng(seed)
    r = lambda *shape: (rng.standard_normal(shape) * 0.5).astype(np.float32)
    w = DecoderWeights(r(feat, units), r(units), r(vocab_size, embed), r(embed, 4 * units),
                       r(units, 4 * units), r(4 * units), r(units, units), r(units), r(units, vocab_size),
                       r(vocab_size))
    w.logits_bias[Vocabulary.end_id] -= 3.0   # so captions are not all empty
    w.logits_kernel[:, Vocabulary.end_id] *= 0.2
    return w


def repeats_trigram(seq) -> bool:
    grams = [tuple(seq[i:i + 3]) for i in range(len(seq) - 2)]
    return len(grams) != len(set(grams))


def exhaustive_best(w: DecoderWeights, feature: np.ndarray, max_length: int, alpha: float):
    """Score every caption of up to max_length words; return (normalised score, tokens).

    Captions that repeat a word twice in a row are not allowed, as in the searches."""
    proj = w.project_image(feature[None])
    words = range(4, w.vocab_size)
    best = (-np.inf, ())
    for length in range(max_length + 1):
        for seq in itertools.product(words, repeat=length):
            if any(a == b for a, b in zip(seq, seq[1:])) or repeats_trigram(seq):
                continue
            h, c = w.initial_state(1)
            token, total = Vocabulary.start_id, 0.0
            for word in seq:
                lp, h, c = w.step(np.array([token]), h, c, proj)
                lp[:, BANNED + [token]] = -1e30
                total, token = total + lp[0, word], word
            # Finished or cut at the limit, a caption is charged for its end token.
            lp, h, c = w.step(np.array([token]), h, c, proj)
            best = max(best, ((total + lp[0, Vocabulary.end_id]) / (length + 1) ** alpha, seq))
    return best


@pytest.mark.parametrize("seed", [0, 2, 3, 4])
@pytest.mark.parametrize("alpha", [0.0, 0.7, 1.0])
def test_beam_one_is_greedy_and_full_beam_is_exact(seed, alpha):
    w = random_weights(seed)
    features = np.random.default_rng(seed + 100).standard_normal((6, 6)).astype(np.float32)
    greedy = greedy_search(w, VOCAB, features, max_length=6, alpha=alpha)
    beam1 = beam_search(w, VOCAB, features, beam=1, max_length=6, alpha=alpha)
    # 3 words, 6 steps, no word twice in a row: at most 3 * 2**5 = 96 live prefixes, so
    # k=96 prunes nothing (and 6 words are enough to meet the repeated-trigram rule).
    full = beam_search(w, VOCAB, features, beam=96, top=3, max_length=6, alpha=alpha)
    for i in range(len(features)):
        assert beam1[i][0].tokens == greedy[i].tokens
        assert beam1[i][0].log_prob == pytest.approx(greedy[i].log_prob, abs=1e-4)
        score, tokens = exhaustive_best(w, features[i], 6, alpha)
        assert full[i][0].tokens == tokens
        assert full[i][0].normalized_log_prob == pytest.approx(score, abs=1e-4)
        assert [c.normalized_log_prob for c in full[i]] == sorted(
            (c.normalized_log_prob for c in full[i]), reverse=True)
    assert len({g.tokens for g in greedy}) > 1, "test decoder is degenerate; pick other seeds"


def test_never_emits_banned_tokens_and_respects_max_length():
    w = random_weights(7)
    w.logits_bias[Vocabulary.unk_id] += 50.0   # the model would love to say <unk>
    w.logits_bias[Vocabulary.start_id] += 40.0
    w.logits_bias[Vocabulary.end_id] -= 50.0   # and hardly ever stops by itself
    features = np.ones((3, 6), dtype=np.float32)
    captions = [c for c in greedy_search(w, VOCAB, features, max_length=7)]
    captions += [c for caps in beam_search(w, VOCAB, features, beam=4, top=4, max_length=7) for c in caps]
    for cap in captions:
        assert set(cap.tokens) <= {4, 5, 6} and len(cap.tokens) <= 7
        assert cap.finished or len(cap.tokens) == 7
        assert all(a != b for a, b in zip(cap.tokens, cap.tokens[1:])), cap.text
        assert not repeats_trigram(cap.tokens), cap.text
    assert any(not cap.finished for cap in captions)  # the limit was reached and respected


def test_deterministic_and_batch_independent():
    w = random_weights(3)
    features = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
    together = beam_search(w, VOCAB, features, beam=3, top=2)
    alone = [beam_search(w, VOCAB, f[None], beam=3, top=2)[0] for f in features]
    assert together == beam_search(w, VOCAB, features, beam=3, top=2)
    # BLAS may round differently for other batch sizes: same captions, scores to 1e-5.
    for mine, single in zip(together, alone):
        assert [c.tokens for c in mine] == [c.tokens for c in single]
        assert [c.log_prob for c in mine] == pytest.approx([c.log_prob for c in single], abs=1e-5)


def test_numpy_step_matches_keras_forward_pass():
    config = Config(vocab_size=20, units=16, embed_dim=8)
    model = build_decoder(config)
    weights = DecoderWeights.from_keras(model)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((3, 2048)).astype(np.float32)
    tokens = np.array([[2, 5, 6, 7, 9], [2, 11, 4, 4, 8], [2, 19, 3, 5, 5]], dtype=np.int32)
    logits = model([features, tokens], training=False).numpy()
    expected = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    proj = weights.project_image(features)
    h, c = weights.initial_state(3)
    for t in range(tokens.shape[1]):
        log_probs, h, c = weights.step(tokens[:, t], h, c, proj)
        np.testing.assert_allclose(log_probs, expected[:, t], atol=1e-4)


def test_invalid_beam():
    with pytest.raises(ValueError, match="at least 1"):
        beam_search(random_weights(0), VOCAB, np.zeros((1, 6), np.float32), beam=0)
