"""Xception cut for fine-tuning (vision/exit_flow.py), and the trunk-output cache (issue 24)."""
import numpy as np
import pytest

from captioner.vision.exit_flow import SPLIT_SHAPES, head_parameters, trunk_and_head


@pytest.fixture(scope="module")
def xception():
    from captioner.vision.encoder import build_xception
    return build_xception()   # random weights: the cut is tested, not ImageNet


@pytest.mark.parametrize("split", sorted(SPLIT_SHAPES))
def test_trunk_then_head_is_the_whole_encoder(xception, split):
    trunk, head = trunk_and_head(xception, split)
    photos = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32)
    middle = trunk(photos).numpy()
    assert middle.shape == (2, *SPLIT_SHAPES[split])
    np.testing.assert_allclose(head(middle).numpy(), xception(photos).numpy(), atol=1e-5)
    # blocks 13 and 14; block 14 alone (its two separable convolutions and BatchNorms)
    assert head_parameters(head) == {"add_10": 6_801_104, "add_11": 4_755_968}[split]


def test_the_head_has_weights_of_its_own(xception):
    _, head = trunk_and_head(xception, "add_10")
    before = [w.copy() for w in xception.get_weights()]
    head.set_weights([w + 1 for w in head.get_weights()])
    for a, b in zip(before, xception.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_trunk_cache_round_trips_its_own_shape(tmp_path):
    from captioner.vision.features import FeatureCache
    cache = FeatureCache("0" * 64, tmp_path, shape=SPLIT_SHAPES["add_10"], part="add_10")
    assert "add_10" in cache.dir.name
    entry = np.random.default_rng(1).standard_normal(SPLIT_SHAPES["add_10"]).astype(np.float16)
    cache.put("ab" * 20, entry)
    np.testing.assert_array_equal(cache.get("ab" * 20), entry)
    wrong = FeatureCache("0" * 64, tmp_path, part="add_10")   # the encoder's map shape: not this entry
    assert wrong.get("ab" * 20) is None
