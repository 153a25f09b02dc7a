"""Self-critical training: the CIDEr-D reward equals pycocoevalcap's CIDEr, and one update
moves probability toward samples that beat their baseline."""
import numpy as np
import pytest

from captioner.evaluation.cider import CiderD


def corpus(seed: int, n_images: int = 30):
    rng = np.random.default_rng(seed)
    words = "a dog man boy girl runs jumps in on the grass water red blue shirt ball park".split()
    sentence = lambda: " ".join(rng.choice(words, size=rng.integers(3, 12)))
    refs = {f"img{i}": [sentence() for _ in range(5)] for i in range(n_images)}
    hyps = {k: sentence() for k in refs}
    return refs, hyps


@pytest.mark.parametrize("seed", [0, 1])
def test_cider_d_matches_pycocoevalcap(seed):
    from pycocoevalcap.cider.cider import Cider
    refs, hyps = corpus(seed)
    expected_mean, expected = Cider().compute_score(refs, {k: [v] for k, v in hyps.items()})
    scorer = CiderD(refs)
    ours = scorer.score_many(list(refs), [hyps[k] for k in refs])
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-12)
    assert ours.mean() == pytest.approx(expected_mean)
    # A reference scores far above an unrelated caption: the reward is worth maximising.
    assert scorer.score("img0", refs["img0"][0]) > 3 * scorer.score("img0", "zebra giraffe")


def test_scst_update_follows_the_advantage():
    """On a tiny attention model, an update with advantage +1 on a caption raises its
    log-probability, one with -1 lowers it, and a mixed batch (+1 for one caption, -1 for
    another) lowers the advantage-weighted objective. Each case starts from the same weights;
    the step is small so that the first-order effect decides (one Adam step with a large rate
    may move a caption that shares every parameter with the other either way)."""
    import keras
    from captioner.decoders.config import Config
    from captioner.decoders.registry import keras_inputs
    from captioner.training.checkpoint import new_model
    from captioner.training.step import make_train_step
    keras.utils.set_random_seed(0)
    config = Config(decoder="attention", vocab_size=12, units=16, embed_dim=8, attention_dim=8,
                    image_dropout=0.0, embed_dropout=0.0)
    model = new_model(config, 1e-3)
    initial = [v.numpy() for v in model.variables] + [v.numpy() for v in model.optimizer.variables]
    train_step, nll_sum = make_train_step(model)
    regions = np.random.default_rng(0).standard_normal((1, 100, 2048)).astype(np.float16)
    good = [5, 6, 7, 3]   # words then <end>
    bad = [8, 9, 3, 0]
    targets = np.array([good, bad], dtype=np.int32)
    inputs = np.array([[2, *good[:-1]], [2, *bad[:-1]]], dtype=np.int32)
    inputs[inputs == 3] = 0
    mask = (targets > 0).astype(np.float32)
    batch = keras_inputs(config, regions, np.array([0, 0]), inputs)

    def nll(row):  # -log p of one caption: weight only its words
        weights = np.zeros_like(mask)
        weights[row] = mask[row]
        return float(nll_sum(batch, targets, weights))

    def after_update(advantage):
        for variable, value in zip(list(model.variables) + list(model.optimizer.variables), initial):
            variable.assign(value)
        before = nll(0), nll(1)
        weights = mask * np.array(advantage, np.float32)[:, None]
        train_step(batch, targets, weights, np.float32(mask.sum()))
        return before, (nll(0), nll(1))

    before, after = after_update([1.0, 0.0])
    assert after[0] < before[0], "a positive advantage should make the caption more likely"
    before, after = after_update([0.0, -1.0])
    assert after[1] > before[1], "a negative advantage should make the caption less likely"
    before, after = after_update([1.0, -1.0])
    assert after[0] - after[1] < before[0] - before[1], "the weighted objective should fall"


def test_mixed_objective_adds_the_references_with_their_weight():
    """The references join the sampled captions in one batch (one update), padded to a common
    width, and weigh `reference_weight` in all: their mean -log p times the weight."""
    from captioner.training.caption_set import CaptionSet
    from captioner.training.self_critical import with_references
    captions = CaptionSet(photos=np.array([0, 0, 1]), by_photo=[[0, 1], [2]],
                          ids=[np.array([4, 5, 6, 7, 8, 9]), np.array([4]), np.array([5, 6])])
    photos = np.array([0, 0, 1, 1])                      # two samples per photo
    inputs = np.array([[2, 4, 0], [2, 5, 6], [2, 7, 0], [2, 0, 0]], np.int32)
    targets = np.array([[4, 3, 0], [5, 6, 3], [7, 3, 0], [3, 0, 0]], np.int32)
    weights = (targets > 0) * np.array([[0.5], [-0.5], [0.2], [-0.2]], np.float32)
    p, i, t, w = with_references(captions, np.array([0, 1]), photos, inputs, targets, weights, 3.0)
    assert p.tolist() == [0, 0, 1, 1, 0, 0, 1]
    assert i.shape == t.shape == w.shape == (7, 7)       # the longest reference: 6 words + <end>
    np.testing.assert_array_equal(w[:4, :3], weights)
    assert not w[:4, 3:].any()
    assert w[4:].sum() == pytest.approx(3.0)
    assert ((w[4:] > 0) == (t[4:] > 0)).all()            # every reference word, <end> included
    assert t[4].tolist() == [4, 5, 6, 7, 8, 9, 3] and t[5].tolist() == [4, 3, 0, 0, 0, 0, 0]
    # Samples longer than every reference: the references are padded instead.
    wide = lambda a: np.pad(a, ((0, 0), (0, 9 - a.shape[1])))
    p, i, t, w = with_references(captions, np.array([1]), photos[2:], wide(inputs[2:]),
                                 wide(targets[2:]), wide(weights[2:]), 1.0)
    assert i.shape == t.shape == w.shape == (3, 9) and w[2].sum() == pytest.approx(1.0)


def test_contrastive_reward_favours_the_caption_that_tells_similar_photos_apart():
    from captioner.training.self_critical import sample_rewards
    refs = {"grass": ["a brown dog runs on the grass", "a dog runs across green grass",
                      "a brown dog running in a grassy field"],
            "sand": ["a brown dog runs on the sand", "a dog runs across the beach sand",
                     "a brown dog running on a sandy beach"],
            "city": ["a man rides a bike in the city", "people walk down a busy street",
                     "a man on a bicycle in traffic"]}
    scorer = CiderD(refs)
    generic, specific = "a brown dog runs", "a dog runs across green grass"
    texts, keys, similar = [generic, specific], ["grass", "grass"], ["sand", "sand"]
    own, against, reward = sample_rewards(scorer, keys, texts, similar, 0.5)
    assert against[0] > against[1]  # the generic caption fits the similar photo too...
    assert reward[1] - reward[0] > own[1] - own[0]  # ...so contrast widens the specific one's lead
    np.testing.assert_allclose(reward, own - 0.5 * against)
    plain_own, none, plain = sample_rewards(scorer, keys, texts, None, 0.0)
    assert none is None and (plain == plain_own).all() and (plain_own == own).all()


def test_moving_average_is_what_validation_and_the_kept_copy_see_and_it_survives_a_resume(tmp_path):
    """With `scst_ema`, the optimiser keeps an exponential moving average of the weights: it is
    what `averaged_weights` shows (then the live weights come back to go on training), what the
    checkpoint keeps as the best copy, and, with the live weights, what a resumed run restores."""
    import keras
    from captioner.decoders.config import Config
    from captioner.decoders.registry import keras_inputs
    from captioner.training.checkpoint import Checkpoint, averaged_weights, load_decoder_only, new_model
    from captioner.training.step import make_train_step
    keras.utils.set_random_seed(0)
    config = Config(decoder="attention", vocab_size=12, units=16, embed_dim=8, attention_dim=8,
                    image_dropout=0.0, embed_dropout=0.0, scst_ema=0.5)
    model = new_model(config, 1e-2, averaging=True)
    with averaged_weights(model):  # no update yet: nothing to average, the weights as they are
        untouched = [v.numpy() for v in model.trainable_variables]
    train_step, _ = make_train_step(model)
    regions = np.random.default_rng(0).standard_normal((1, 100, 2048)).astype(np.float16)
    targets = np.array([[5, 6, 7, 3]], dtype=np.int32)
    batch = keras_inputs(config, regions, np.array([0]), np.array([[2, 5, 6, 7]], dtype=np.int32))
    mask = np.ones_like(targets, dtype=np.float32)
    average = None
    for _ in range(3):
        train_step(batch, targets, mask, np.float32(mask.sum()))
        live = [v.numpy() for v in model.trainable_variables]
        # the first update starts the average at the weights; then momentum 0.5
        average = live if average is None else [0.5 * a + 0.5 * w for a, w in zip(average, live)]
    assert not np.allclose(untouched[0], live[0])
    assert not all(np.allclose(a, w) for a, w in zip(average, live))
    with averaged_weights(model):
        for variable, expected in zip(model.trainable_variables, average):
            np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    for variable, expected in zip(model.trainable_variables, live):
        np.testing.assert_array_equal(variable.numpy(), expected)

    checkpoint = Checkpoint(tmp_path / "ckpt")
    state = {"phase": "scst", "epoch": 1, "learning_rate": 1e-2, "config": config.to_json()}
    checkpoint.save(model, state, is_best=True)
    kept = new_model(config, 1e-3)
    load_decoder_only(kept, checkpoint.best_path(state), config)
    for variable, expected in zip(kept.trainable_variables, average):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    resumed, _ = checkpoint.load(config)
    for variable, expected in zip(resumed.trainable_variables, live):
        np.testing.assert_array_equal(variable.numpy(), expected)
    with averaged_weights(resumed):
        for variable, expected in zip(resumed.trainable_variables, average):
            np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
