"""The beam search trace (decoding.TraceStep) and the tree drawn from it (beam_tree.py)."""
import pytest

from captioner.decoding.beam_tree import beam_tree_dot, path_tokens, photo_steps, winner
from captioner.decoding.search import beam_search
from captioner.data.text import Vocabulary
from test_decoding import DECODERS, random_features

WORDS = Vocabulary([f"w{i}" for i in range(12)])


@pytest.mark.parametrize("kind", ["merge", "attention"])
@pytest.mark.parametrize("beam", [1, 3, 6])
def test_trace_reproduces_the_returned_captions(kind, beam):
    decoder = DECODERS[kind](seed=beam, vocab_size=len(WORDS))
    features = random_features(kind, 3, seed=7)
    plain = beam_search(decoder, WORDS, features, beam, top=beam, max_length=8, alpha=0.7)
    trace = []
    traced = beam_search(decoder, WORDS, features, beam, top=beam, max_length=8, alpha=0.7,
                         trace=trace)
    assert traced == plain  # tracing changes nothing
    for photo, captions in enumerate(traced):
        steps = photo_steps(trace, photo)
        assert sorted(steps) == list(range(len(steps)))  # one record per step, none skipped
        for step in steps.values():
            assert len(step.kept) <= beam
            scores = [score for _, _, score in step.kept]
            assert scores == sorted(scores, reverse=True)
            # a pruned candidate never beat the worst kept one (ends ranked past k aside)
            if len(step.kept) == beam:
                assert all(score <= scores[-1] + 1e-6 for _, token, score in step.pruned
                           if token != Vocabulary.end_id)
        # every returned caption is a finished hypothesis of the trace, with its score
        finished = {}
        for t, step in steps.items():
            for parent, log_prob, normalized, _ in step.finished:
                finished[path_tokens(steps, t, parent)] = (log_prob, normalized)
        for cap in captions:
            assert finished[cap.tokens] == pytest.approx((cap.log_prob, cap.normalized_log_prob), abs=1e-4)
        best = winner(trace, photo)
        assert best.tokens == captions[0].tokens
        assert best.normalized_log_prob == pytest.approx(captions[0].normalized_log_prob)


def test_cut_hypotheses_are_recorded_at_the_length_limit():
    decoder = DECODERS["merge"](seed=1, vocab_size=len(WORDS))
    decoder.logits_bias[Vocabulary.end_id] -= 50.0  # never ends by itself
    trace = []
    captions = beam_search(decoder, WORDS, random_features("merge", 1, 0), 3, top=3,
                           max_length=5, trace=trace)[0]
    last = trace[-1]
    assert last.step == 5 and len(last.finished) == 3
    assert not any(ended for *_, ended in last.finished)
    assert all(not cap.finished for cap in captions)
    assert winner(trace).tokens == captions[0].tokens


def test_tree_marks_the_winning_path_and_scales_to_wide_long_searches():
    decoder = DECODERS["attention"](seed=3, vocab_size=len(WORDS))
    decoder.logits_bias[Vocabulary.end_id] -= 50.0  # 30 full steps at width 10
    trace = []
    caption = beam_search(decoder, WORDS, random_features("attention", 1, 1), 10, top=1,
                          max_length=30, trace=trace)[0][0]
    dot = beam_tree_dot(trace, WORDS, title="width 10")
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert "rankdir=LR" in dot  # steps as columns: 30 columns of at most 10 kept words
    kept_nodes = [line for line in dot.splitlines() if line.lstrip().startswith("k") and "[label" in line]
    assert len(kept_nodes) == sum(len(s.kept) for s in trace) <= 300
    winning = [line for line in dot.splitlines() if "[label" in line and "#d62728" in line]
    # start, every word of the winner, and its end (or cut) box
    assert len(winning) == len(caption.tokens) + 2
    without_pruned = beam_tree_dot(trace, WORDS, show_pruned=False)
    assert "dashed" not in without_pruned.replace("rounded,filled,dashed", "")
    assert len(without_pruned) < len(dot)
