"""The ensemble decoder on tiny random decoders: its step is the weighted, renormalised sum
of its members' log-probabilities, and the one beam search runs on it exactly."""
import numpy as np
import pytest

from captioner.decoding import beam_search
from captioner.ensemble import EnsembleDecoder
from captioner.model import log_softmax
from test_decoding import VOCAB, exhaustive_best, random_attention, random_features, random_merge


def pair(weight=0.6):
    return EnsembleDecoder([random_attention(2), random_merge(3)], [weight, 1 - weight])


def test_a_one_member_ensemble_decodes_as_its_member():
    member = random_attention(2)
    features = random_features("attention", 4, 7)
    alone = beam_search(member, VOCAB, features, beam=3, top=3, max_length=6, attention=True)
    ensembled = beam_search(EnsembleDecoder([member], [1.0]), VOCAB, features, beam=3, top=3,
                            max_length=6, attention=True)
    for mine, theirs in zip(ensembled, alone):
        assert [c.tokens for c in mine] == [c.tokens for c in theirs]
        np.testing.assert_allclose([c.log_prob for c in mine], [c.log_prob for c in theirs], atol=1e-5)
        np.testing.assert_allclose(mine[0].attention, theirs[0].attention, atol=1e-6)


def test_each_step_mixes_the_members_and_keeps_their_states():
    ensemble = pair(0.6)
    attention, merge = ensemble.members
    features = random_features("attention", 3, 5)  # the merge member pools the same regions
    contexts = [ensemble.prepare(features), attention.prepare(features), merge.prepare(features)]
    photos = np.array([0, 1, 2, 2])
    states = [ensemble.initial_state(4), attention.initial_state(4), merge.initial_state(4)]
    tokens = np.full(4, VOCAB.start_id)
    for words in ([4, 5, 6, 4], [6, 4, 5, 5]):
        out, a, m = (d.step(tokens, s, c, photos)
                     for d, s, c in zip((ensemble, attention, merge), states, contexts))
        want = log_softmax(0.6 * a.log_probs + 0.4 * m.log_probs)
        np.testing.assert_allclose(out.log_probs, want, atol=1e-5)
        np.testing.assert_allclose(np.exp(out.log_probs).sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(out.attention, a.attention, atol=1e-6)  # the attention member's
        states = [out.state, a.state, m.state]
        tokens = np.array(words)
    for mine, theirs in zip(states[0], (*states[1], *states[2])):
        np.testing.assert_allclose(mine, theirs, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_full_beam_on_an_ensemble_is_exact(alpha):
    ensemble = pair(0.5)
    features = random_features("attention", 3, 11)
    # as in test_decoding: k=96 prunes nothing for 3 words and 6 steps
    full = beam_search(ensemble, VOCAB, features, beam=96, max_length=6, alpha=alpha)
    for i in range(len(features)):
        score, tokens = exhaustive_best(ensemble, features[i], 6, alpha)
        assert full[i][0].tokens == tokens
        assert full[i][0].normalized_log_prob == pytest.approx(score, abs=1e-4)


def test_bad_ensembles_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        EnsembleDecoder([random_merge(1), random_merge(2)], [0.5, 0.6])
    with pytest.raises(ValueError, match="one weight per member"):
        EnsembleDecoder([random_merge(1)], [0.5, 0.5])
    with pytest.raises(ValueError, match="one vocabulary"):
        EnsembleDecoder([random_merge(1), random_merge(2, vocab_size=len(VOCAB) + 1)], [0.5, 0.5])
