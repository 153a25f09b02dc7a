"""The paired bootstrap that decides whether a candidate beats a committed model on val."""
import numpy as np
import pytest

from captioner.evaluation.paired import paired_bootstrap


def test_a_clear_gain_is_clear_of_zero_and_noise_is_not():
    rng = np.random.default_rng(1)
    baseline = rng.uniform(0, 2, 1000)
    clear = paired_bootstrap(baseline + 0.1 + rng.normal(0, 0.3, 1000), baseline)
    assert clear["low"] > 0 and clear["share_at_or_below_zero"] == 0
    assert clear["difference"] == pytest.approx(0.1, abs=0.03)
    noise = paired_bootstrap(baseline + rng.normal(0, 0.3, 1000), baseline)
    assert noise["low"] < 0 < noise["high"] and 0.05 < noise["share_at_or_below_zero"] < 0.95


def test_the_interval_matches_the_standard_error_and_the_seed_repeats_it():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0.6, 0.5, 1000), rng.normal(0.58, 0.5, 1000)
    result = paired_bootstrap(a, b, seed=3)
    assert result == paired_bootstrap(a, b, seed=3)
    assert result["difference"] == pytest.approx(np.mean(a - b))
    # a normal interval is about +-1.96 standard errors wide
    assert (result["high"] - result["low"]) / 2 == pytest.approx(1.96 * result["standard_error"], rel=0.1)


def test_unpaired_scores_are_refused():
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([0.1, 0.2, 0.3], [0.1, 0.2])
