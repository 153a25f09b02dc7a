"""Label smoothing in the cross-entropy step: the loss it minimises is the smoothed one, and
the plain step (what self-critical training uses) is untouched by it."""
import numpy as np
import pytest


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_train_step_minimises_the_smoothed_cross_entropy(smoothing):
    import keras
    from captioner.decoders.config import Config
    from captioner.decoders.registry import keras_inputs
    from captioner.training.checkpoint import new_model
    from captioner.training.step import make_train_step
    keras.utils.set_random_seed(0)
    config = Config(decoder="merge", vocab_size=12, units=16, embed_dim=8,
                    image_dropout=0.0, embed_dropout=0.0, label_smoothing=smoothing)
    model = new_model(config, 1e-3)
    features = np.random.default_rng(0).standard_normal((2, 2048)).astype(np.float32)
    targets = np.array([[5, 6, 7, 3], [8, 9, 3, 0]], dtype=np.int32)
    inputs = np.array([[2, 5, 6, 7], [2, 8, 9, 0]], dtype=np.int32)
    mask = (targets > 0).astype(np.float32)
    batch = keras_inputs(config, features, np.array([0, 1]), inputs)

    logits = np.asarray(model(batch, training=False), dtype=np.float64)
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    smoothed = (1 - smoothing) * nll + smoothing * -log_p.mean(-1)
    expected = (smoothed * mask).sum() / mask.sum()

    train_step, _ = make_train_step(model, config.label_smoothing)
    loss = float(train_step(batch, targets, mask, np.float32(mask.sum()))[0])  # before its update
    assert loss == pytest.approx(expected, rel=1e-5)
    if smoothing:  # smoothing adds the vocabulary-wide term: the loss differs from plain -log p
        assert loss != pytest.approx((nll * mask).sum() / mask.sum(), rel=1e-3)

