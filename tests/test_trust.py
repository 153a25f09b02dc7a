"""The trust estimate on data the tests make: signals, calibration, the JSON, staleness."""
import json

import numpy as np
import pytest

from captioner.decoding.search import Caption
from captioner.trust import fit
from captioner.trust.estimate import (FILE, LIKELY_RIGHT, LIKELY_WRONG, UNSURE, TrustError, TrustModel,
                                      load_estimate, save_estimates)
from captioner.trust.signals import Evidence, signals, weakest_word, word_agreement

CUTOFFS = {LIKELY_RIGHT: 0.5, UNSURE: 0.2}


def caption(text: str, word_log_probs=None, normalized=-1.0) -> Caption:
    words = text.split()
    lps = tuple(word_log_probs or [-0.5] * (len(words) + 1))
    return Caption(text, tuple(range(len(words))), sum(lps), normalized, True, word_log_probs=lps)


def test_signals_read_the_caption_its_alternatives_and_the_members():
    shown = caption("a dog runs on the grass", [-0.1, -0.2, -3.0, -0.1, -0.1, -0.4, -0.2], -0.6)
    assert weakest_word(shown) == -3.0  # "runs", a content word; "a", "on", "the" do not count
    assert word_agreement("a dog runs on the grass", ["a dog runs on the grass"]) == 1.0
    assert word_agreement("a dog runs", ["a cat sleeps"]) == 0.0
    assert word_agreement("a dog runs", ["a dog sleeps"]) == pytest.approx(0.5)
    evidence = Evidence(shown, [shown, caption("a dog runs in the grass"), caption("a cat sits on a mat")],
                        [caption("a dog runs on the grass"), caption("a brown dog plays")],
                        np.array([0.2, 0.7, 0.5]))
    found = signals(evidence)
    # the shown caption is not its own alternative: one alternative agrees, one not at all
    assert found["beam_agreement"] == pytest.approx(0.5)
    assert found["member_agreement"] == pytest.approx((1.0 + 2 * 1 / 6) / 2)
    assert found["familiarity"] == pytest.approx(0.7) and found["log_prob"] == -0.6
    assert "member_agreement" not in signals(Evidence(shown, [shown], [], np.array([0.1])))


def synthetic_photos(n: int, rng, shift: float = 0.0) -> fit.Photos:
    """Photos whose CIDEr follows two signals through a logistic link, plus a useless one,
    and a centroid similarity that predicts CIDEr a little (photo_kind's job)."""
    a, b, noise = rng.normal(size=(3, n))
    similarity = rng.uniform(0, 1, size=(n, 4)).astype(np.float32)
    z = 1.5 * a - 1.0 * b + 1.2 * (similarity[:, 0] - 0.5) + shift
    right = rng.uniform(size=n) < 1 / (1 + np.exp(-z))
    cider = np.where(right, rng.uniform(0.6, 2.0, n), rng.uniform(0.0, 0.59, n))
    values = [{"log_prob": float(x), "weakest_word": float(-y), "beam_agreement": float(u)}
              for x, y, u in zip(a, b, noise)]
    return fit.Photos([f"p{i}.jpg" for i in range(n)], values, similarity, cider)


def fitted(rng, photos=None) -> TrustModel:
    photos = photos or synthetic_photos(4000, rng)
    return fit.fit("merge", {"merge": "w" * 64}, "f" * 64, photos, np.ones(len(photos)),
                   ["log_prob", "weakest_word", "beam_agreement", "photo_kind"], 0.6, "test", CUTOFFS)


def test_calibration_holds_on_photos_it_was_not_fitted_on():
    rng = np.random.default_rng(0)
    estimate = fitted(rng)
    held = synthetic_photos(4000, rng)
    measured = fit.measure(estimate, held)
    # of the captions given about p, about p are right, band by band
    for band in measured["reliability"]:
        if band["photos"] >= 200:
            assert abs(band["mean_trust"] - band["right_share"]) < 0.06, band
    # it ranks: the most trusted score higher than the least trusted; the useless signal is weak
    assert measured["estimate"]["spearman"] > 0.4
    assert measured["estimate"]["top30_cider"] > 2 * measured["estimate"]["bottom40_cider"]
    assert abs(estimate.coefficients[2]) < 0.1 < estimate.coefficients[0]
    assert abs(measured["signals"]["beam_agreement"]["spearman"]) < 0.1
    assert sum(measured["verdicts"].values()) == pytest.approx(1.0, abs=0.002)


def test_fitting_weighs_each_source_the_same():
    rng = np.random.default_rng(1)
    joined, weights = fit.join(synthetic_photos(300, rng), synthetic_photos(100, rng))
    assert len(joined) == 400 and weights[:300].sum() == pytest.approx(weights[300:].sum())


def test_the_json_round_trips_and_gives_the_same_verdicts(tmp_path):
    rng = np.random.default_rng(2)
    estimate = fitted(rng)
    save_estimates(tmp_path, {"merge": estimate})
    loaded = load_estimate(tmp_path, "merge", {"merge": "w" * 64}, "f" * 64)
    assert loaded == estimate
    photos = synthetic_photos(50, rng)
    assert np.array_equal(fit.scores_of(loaded, photos)[0], fit.scores_of(estimate, photos)[0])
    evidence = Evidence(caption("a dog"), [caption("a dog")], [], np.array([0.9, 0.1, 0.1, 0.1]))
    trust = loaded.assess(evidence)
    assert 0.0 <= trust.value <= 1.0 and trust.verdict in (LIKELY_RIGHT, UNSURE, LIKELY_WRONG)
    assert set(trust.to_json()) == {"trust", "verdict", "signals", "reasons"}
    json.dumps(trust.to_json())


def test_a_stale_or_damaged_estimate_is_refused(tmp_path):
    with pytest.raises(TrustError, match="no trust estimate"):
        load_estimate(tmp_path, "merge", {"merge": "w" * 64}, "f" * 64)
    save_estimates(tmp_path, {"merge": fitted(np.random.default_rng(3))})
    with pytest.raises(TrustError, match="other weights of merge.*stale.*make trust"):
        load_estimate(tmp_path, "merge", {"merge": "x" * 64}, "f" * 64)
    with pytest.raises(TrustError, match="centroids"):
        load_estimate(tmp_path, "merge", {"merge": "w" * 64}, "g" * 64)
    with pytest.raises(TrustError, match="no trust estimate for the attention model"):
        load_estimate(tmp_path, "attention", {"attention": "w" * 64}, "f" * 64)
    data = json.loads((tmp_path / FILE).read_text())
    del data["models"]["merge"]["coefficients"][0]
    (tmp_path / FILE).write_text(json.dumps(data))
    with pytest.raises(TrustError, match="not a trust estimate"):
        load_estimate(tmp_path, "merge", {"merge": "w" * 64}, "f" * 64)


def test_verdicts_read_the_cut_offs():
    estimate = fitted(np.random.default_rng(4), synthetic_photos(500, np.random.default_rng(5)))
    assert [estimate.verdict(p) for p in (0.9, 0.5, 0.49, 0.2, 0.19)] == [
        LIKELY_RIGHT, LIKELY_RIGHT, UNSURE, UNSURE, LIKELY_WRONG]


def test_a_photo_less_familiar_than_any_fitted_on_is_likely_wrong_whatever_the_rest_says():
    rng = np.random.default_rng(6)
    photos = synthetic_photos(2000, rng)
    for v, sims in zip(photos.values, photos.similarity):
        v["familiarity"] = float(sims.max())
    estimate = fit.fit("merge", {"merge": "w" * 64}, "f" * 64, photos, np.ones(len(photos)),
                       ["log_prob", "weakest_word", "familiarity"], 0.6, "test", CUTOFFS)
    floor = estimate.support["familiarity_floor"]
    assert floor == pytest.approx(min(v["familiarity"] for v in photos.values))
    confident = {"log_prob": 3.0, "weakest_word": 3.0}
    inside = estimate.trust({**confident, "familiarity": floor + 0.01})
    outside = estimate.trust({**confident, "familiarity": floor - 0.01})
    assert estimate.verdict(inside) == LIKELY_RIGHT
    assert estimate.verdict(outside) == LIKELY_WRONG and outside <= CUTOFFS[UNSURE] / 2
    # an estimate written before the floor existed loads and judges as it did
    data = estimate.to_json()
    del data["support"]
    old = TrustModel.from_json(data)
    assert old.trust({**confident, "familiarity": floor - 0.01}) == old.probability({**confident, "familiarity": floor - 0.01})


def test_min_trust_keeps_what_reaches_it_and_says_why_it_withheld_the_rest():
    import dataclasses

    from captioner.trust.estimate import Trust, keep_trusted
    sure = dataclasses.replace(caption("a dog runs"), trust=Trust(0.8, LIKELY_RIGHT, {}))
    guess = dataclasses.replace(caption("a girl plays"), trust=Trust(0.05, LIKELY_WRONG, {},
                                                                      ["the photo is unlike the training photos"]))
    assert keep_trusted([sure, guess], None) == ([sure, guess], None)
    assert keep_trusted([sure, guess], 0.5) == ([sure], None)
    kept, why = keep_trusted([guess], 0.5)
    assert kept == [] and why == ("withheld: trust 0.05 (likely wrong: the photo is unlike the training "
                                  "photos), below --min-trust 0.5")


# -- consensus: the nearest training photos' captions ---------------------------------------
def tiny_consensus(neighbours: int = 2):
    """Four 'training photos' along two directions: dogs on grass, and people in a city."""
    from captioner.explain.neighbours import NeighbourIndex
    from captioner.trust.consensus import Consensus
    vectors = np.array([[1, 0.1, 0], [1, 0, 0.1], [0, 1, 0.1], [0.1, 1, 0]], np.float32)
    captions = {"dog1.jpg": ["A dog runs on the grass .", "a brown dog running on grass"],
                "dog2.jpg": ["a dog plays in the green grass", "The dog runs across a field"],
                "city1.jpg": ["people walk down a busy city street", "a crowd on a street"],
                "city2.jpg": ["a man walks on a city street", "people crossing the street"]}
    return Consensus(NeighbourIndex.from_vectors(list(captions), vectors), captions, neighbours)


def maps_along(*directions) -> np.ndarray:
    """(n, 10, 10, 3) maps whose pooled vectors point along `directions`."""
    return np.stack([np.broadcast_to(np.asarray(d, np.float32), (10, 10, 3)) for d in directions])


def test_consensus_is_how_well_a_caption_agrees_with_the_nearest_photos_captions():
    consensus = tiny_consensus()
    dog, city = maps_along([1, 0, 0]), maps_along([0, 1, 0])
    [[right, wrong]] = consensus.scores(dog, [["a dog runs on the grass", "people walk down a city street"]])
    assert right > 0.5 > wrong >= 0.0
    # the same caption agrees with a city photo's neighbours, not with a dog photo's
    assert consensus.scores(city, [["people walk down a city street"]])[0][0] > wrong
    assert set(consensus.names[i] for i in consensus.nearest(dog)[0]) == {"dog1.jpg", "dog2.jpg"}
    shown = caption("a dog runs on the grass")
    assert signals(Evidence(shown, [shown], [], np.array([0.5]), right))["consensus"] == right
    assert "consensus" not in signals(Evidence(shown, [shown], [], np.array([0.5])))


def test_consensus_refuses_an_index_of_photos_the_dataset_does_not_caption():
    from captioner.explain.neighbours import NeighbourIndex
    from captioner.trust.consensus import Consensus
    with pytest.raises(ValueError, match="no captions for 1 of the index's 2 photos"):
        Consensus(NeighbourIndex.from_vectors(["a.jpg", "b.jpg"], np.eye(2, dtype=np.float32)),
                  {"a.jpg": ["a dog"]})


def test_the_estimate_that_reads_consensus_is_kept_apart_and_refused_over_other_photos(tmp_path):
    rng = np.random.default_rng(6)
    photos = synthetic_photos(2000, rng)
    for v in photos.values:
        v["consensus"] = v["log_prob"] + rng.normal(scale=0.5)
    basic = fitted(rng, photos)
    sharper = fit.fit("merge", {"merge": "w" * 64}, "f" * 64, photos, np.ones(len(photos)),
                      basic.signals + ["consensus"], 0.6, "test", CUTOFFS)
    consensus = tiny_consensus()
    sharper.consensus = dict(consensus.fingerprint)
    save_estimates(tmp_path, {"merge": basic}, with_consensus={"merge": sharper})
    args = (tmp_path, "merge", {"merge": "w" * 64}, "f" * 64)
    assert load_estimate(*args) == basic
    assert load_estimate(*args, consensus=consensus) == sharper
    # other neighbours, other photos, other reference captions: each refused, with the fix
    for other in (tiny_consensus(neighbours=1), tiny_consensus_of(["dog1.jpg", "city1.jpg"]),
                  tiny_consensus_of(None, extra="a cat")):
        with pytest.raises(TrustError, match="fitted over other photos, neighbours or captions.*make trust"):
            load_estimate(*args, consensus=other)
    # an entry that lists the wrong signals for its place is refused, not crashed on per caption
    save_estimates(tmp_path, {"merge": sharper}, with_consensus={"merge": basic})
    with pytest.raises(TrustError, match="models estimate reads consensus"):
        load_estimate(*args)
    with pytest.raises(TrustError, match="with_consensus estimate does not read consensus"):
        load_estimate(*args, consensus=consensus)
    save_estimates(tmp_path, {"merge": basic})
    with pytest.raises(TrustError, match="no trust estimate that reads the training photos' captions"):
        load_estimate(*args, consensus=consensus)


def tiny_consensus_of(names=None, extra=None):
    """tiny_consensus() over fewer photos, or with one more caption of the first photo."""
    from captioner.explain.neighbours import NeighbourIndex
    from captioner.trust.consensus import Consensus
    full = tiny_consensus()
    captions = {n: list(refs) for n, refs in full.cider.references.items()}
    if extra:
        captions[full.names[0]].append(extra)
    keep = [full.names.index(n) for n in (names or full.names)]
    return Consensus(NeighbourIndex([full.names[i] for i in keep], full.index.vectors[keep]),
                     {full.names[i]: captions[full.names[i]] for i in keep}, 2)


def test_cider_keeps_only_the_most_recent_reference_vectors_when_asked():
    from captioner.evaluation.cider import CiderD
    refs = {f"p{i}": [f"a dog number {i} runs", "a dog runs on grass"] for i in range(5)}
    capped, full = CiderD(refs, max_cached=2), CiderD(refs)
    keys = ["p0", "p1", "p2", "p0", "p4"]
    assert np.allclose(capped.score_many(keys, ["a dog runs"] * 5), full.score_many(keys, ["a dog runs"] * 5))
    assert list(capped._reference_vectors) == ["p0", "p4"] and len(full._reference_vectors) == 4
