"""Distillation in the self-critical phase: the teacher's distribution is what the ensemble
decodes with, and a step on it moves the student toward it."""
import numpy as np
import pytest

from captioner.decoders.config import Config

# <start> then words; the last row ends early, padded with 0 as sampled captions are
TOKENS = np.array([[2, 5, 6, 7, 9], [2, 11, 4, 4, 8], [2, 19, 5, 0, 0]], dtype=np.int32)
PHOTOS = np.array([0, 1, 0])


def tiny(kind: str, seed: int):
    import keras
    from captioner.training.checkpoint import new_model
    keras.utils.set_random_seed(seed)
    config = Config(vocab_size=20, units=16, embed_dim=8, attention_dim=8, decoder=kind,
                    image_dropout=0.0, embed_dropout=0.0)
    return new_model(config, 1e-2), config


def regions(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 100, 2048)).astype(np.float16)


def test_the_teacher_reads_each_word_as_the_ensemble_decodes_it():
    """Teacher-forced in one pass, the teacher's distribution after each prefix equals the
    NumPy ensemble's step by step; the merge member pools the regions it is given."""
    from captioner.decoders.registry import numpy_decoder
    from captioner.training.distillation import Teacher
    from captioner.decoders.ensemble import EnsembleDecoder
    members = [tiny("attention", 1), tiny("merge", 2)]
    features = regions()
    teacher = Teacher(members, [0.6, 0.4], "fingerprint").bind(features)
    probs = teacher.probabilities(PHOTOS, TOKENS).numpy()
    assert probs.shape == (3, 5, 20)
    ensemble = EnsembleDecoder([numpy_decoder(m, c) for m, c in members], [0.6, 0.4])
    context, state = ensemble.prepare(features.reshape(2, 10, 10, 2048)), ensemble.initial_state(3)
    for t in range(TOKENS.shape[1]):
        out = ensemble.step(TOKENS[:, t], state, context, PHOTOS)
        real = TOKENS[:, t] > 0  # after a caption's end its row is padding, weighted 0
        np.testing.assert_allclose(probs[real, t], np.exp(out.log_probs[real]), atol=1e-5)
        state = out.state


def test_an_attention_teacher_needs_the_maps_and_a_merge_teacher_takes_either():
    from captioner.training.checkpoint import TrainingError
    from captioner.training.distillation import Teacher
    features = regions()
    pooled = features.astype(np.float32).mean(axis=1)
    with pytest.raises(TrainingError, match="needs the 10x10 maps"):
        Teacher([tiny("attention", 1)], [1.0], "fingerprint").bind(pooled)
    merge = [tiny("merge", 2)]
    from_maps = Teacher(merge, [1.0], "fingerprint").bind(features).probabilities(PHOTOS, TOKENS)
    from_pooled = Teacher(merge, [1.0], "fingerprint").bind(pooled).probabilities(PHOTOS, TOKENS)
    np.testing.assert_allclose(from_maps.numpy(), from_pooled.numpy(), atol=1e-6)


def test_a_teacher_whose_member_has_its_own_exit_flow_reads_each_members_view():
    """Issue 24: a tuned attention member reads its own view of the training photos and a frozen
    merge member ImageNet's, as the ensemble decodes them (model_dirs/views.py)."""
    from captioner.training.checkpoint import TrainingError
    from captioner.training.distillation import Teacher
    imagenet, tuned = regions(), regions(3)[1:]   # two different photos' worth of maps for each view
    views = np.stack([imagenet.reshape(2, 10, 10, 2048), tuned.reshape(2, 10, 10, 2048)], axis=1)
    members = [tiny("attention", 1), tiny("merge", 2)]
    teacher = Teacher(members, [0.6, 0.4], "fingerprint")
    teacher.flows, teacher.views = ["the attention member's"], [1, 0]
    found = teacher.bind(views).probabilities(PHOTOS, TOKENS).numpy()
    reference = Teacher(members, [0.6, 0.4], "fingerprint")
    reference._features = [tuned, imagenet.astype(np.float32).mean(axis=1)]
    np.testing.assert_allclose(found, reference.probabilities(PHOTOS, TOKENS).numpy(), atol=1e-6)
    reference._features = [imagenet, tuned.astype(np.float32).mean(axis=1)]   # the views swapped
    assert not np.allclose(found, reference.probabilities(PHOTOS, TOKENS).numpy(), atol=1e-4)
    with pytest.raises(TrainingError, match="needs the training photos' views"):
        teacher.bind(imagenet)


def test_a_distillation_step_moves_the_student_toward_the_teacher():
    """With no advantage on the samples, steps on the teacher's targets alone lower the KL
    from teacher to student on the words they weigh (the step reports it, before its update);
    with those weights at 0 the student does not move."""
    import tensorflow as tf
    from captioner.decoders.registry import keras_inputs
    from captioner.training.distillation import Teacher
    from captioner.training.step import make_train_step
    student, config = tiny("attention", 3)
    features = regions()
    teacher = Teacher([tiny("attention", 4)], [1.0], "fingerprint").bind(features)
    inputs = keras_inputs(config, features, PHOTOS, TOKENS)
    targets = np.concatenate([TOKENS[:, 1:], np.zeros((3, 1), np.int32)], axis=1)  # the next word
    mask = (targets > 0).astype(np.float32)
    q = teacher.probabilities(PHOTOS, TOKENS)

    def kl():
        log_p = tf.nn.log_softmax(student(inputs, training=False)).numpy().astype(np.float64)
        q64 = q.numpy().astype(np.float64)
        return float((q64 * (np.log(q64) - log_p)).sum(-1)[mask > 0].mean())

    train_step, _ = make_train_step(student)
    before = [v.numpy() for v in student.trainable_variables]
    start = kl()
    _, reported = train_step(inputs, targets, np.zeros_like(mask), np.float32(mask.sum()),
                             soft_targets=q, soft_weights=mask * 0.5)
    assert float(reported) == pytest.approx(start, rel=1e-4)
    for _ in range(2):
        train_step(inputs, targets, np.zeros_like(mask), np.float32(mask.sum()),
                   soft_targets=q, soft_weights=mask * 0.5)
    assert kl() < start - 0.01
    student2, _ = tiny("attention", 3)
    step2, _ = make_train_step(student2)
    step2(inputs, targets, np.zeros_like(mask), np.float32(mask.sum()),
          soft_targets=q, soft_weights=np.zeros_like(mask))
    for a, b in zip(before, student2.trainable_variables):
        np.testing.assert_allclose(a, b.numpy())


def test_a_self_critical_epoch_gives_the_step_the_teacher_on_each_sampled_word():
    """Through scst_epoch, with the references appended: the teacher's distribution on the
    sample rows (as it reads those very tokens), weight x 1 on each sampled word up to its
    end, 0 after it and on every reference row."""
    from types import SimpleNamespace

    from captioner.training.caption_set import CaptionSet
    from captioner.evaluation.cider import CiderD
    from captioner.decoders.registry import keras_inputs
    from captioner.training.distillation import Teacher
    from captioner.training.self_critical import scst_epoch
    from captioner.data.text import Vocabulary
    vocab = Vocabulary([f"w{i}" for i in range(16)])
    assert len(vocab) == 20
    model, config = tiny("attention", 5)
    config.scst_samples, config.scst_xe_weight, config.max_decode_length = 3, 0.5, 6
    config.scst_teacher, config.scst_teacher_weight = "teacher", 0.25
    features = regions(4)
    teacher = Teacher([tiny("attention", 6), tiny("merge", 7)], [0.5, 0.5], "fingerprint").bind(features)
    names = [f"p{i}" for i in range(4)]
    ids = [np.array([4 + (i + j) % 16, 4 + (2 * i + j) % 16], np.int32) for i in range(4) for j in range(2)]
    captions = CaptionSet(np.repeat(np.arange(4), 2), ids, [[2 * i, 2 * i + 1] for i in range(4)])
    run = SimpleNamespace(config=config, vocab=vocab, splits={"train": names}, features={"train": features},
                          photos_per_batch=2, progress=False, captions={"train": captions},
                          reporter=SimpleNamespace(report=lambda **_: None),
                          sampling_features=lambda photos: features[photos],
                          inputs=lambda split, photos, tokens: keras_inputs(config, features, photos, tokens))
    cider = CiderD({n: ["w1 w2 w3", "w4 w5"] for n in names})
    calls = []

    def step(inputs, targets, weights, normaliser, soft_targets=None, soft_weights=None):
        calls.append((inputs, targets, soft_targets.numpy(), soft_weights))
        return 0.0, 0.0
    row = scst_epoch(run, model, step, cider, np.random.default_rng(0), 1, teacher)
    assert len(calls) == 2 and "teacher_kl" in row
    for inputs, targets, soft, weights in calls:
        samples = 2 * 3  # photos per update x samples per photo; the references follow
        assert soft.shape == (*targets.shape, 20) and weights.shape == targets.shape
        np.testing.assert_array_equal(weights[:samples], 0.25 * (targets[:samples] > 0))
        assert not weights[samples:].any()
        want = teacher.probabilities(photo_rows(inputs, features)[:samples], inputs["tokens"][:samples]).numpy()
        real = weights[:samples] > 0
        np.testing.assert_allclose(soft[:samples][real], want[real], atol=1e-6)


def photo_rows(inputs: dict, features: np.ndarray) -> np.ndarray:
    """Which photo of `features` each row of an attention batch describes."""
    unique = [int(np.argmin(np.abs(features.astype(np.float32) - r).sum(axis=(1, 2)))) for r in inputs["regions"]]
    return np.array(unique)[inputs["photo_index"]]


def test_teacher_settings_are_checked():
    with pytest.raises(ValueError, match="scst_teacher_weight"):
        Config(scst_teacher_weight=0.5)
    with pytest.raises(ValueError, match="scst_teacher_weight"):
        Config(scst_teacher="trained/ensemble")
    Config(scst_teacher="trained/ensemble", scst_teacher_weight=0.5)


def test_references_appended_after_the_samples_get_no_teacher_weight():
    import tensorflow as tf
    from captioner.training.self_critical import pad_rows
    soft = tf.ones((2, 3, 5))
    padded = pad_rows({"soft_targets": soft, "soft_weights": np.ones((2, 3), np.float32)}, 4, 6)
    assert padded["soft_targets"].shape == (4, 6, 5)
    assert padded["soft_weights"].sum() == 6 and not padded["soft_weights"][2:].any()
    assert not padded["soft_weights"][:, 3:].any()
    assert pad_rows({}, 4, 6) == {}


@pytest.mark.slow
def test_a_run_distils_its_teacher_records_it_and_resumes_only_with_it(tmp_path, original_dataset, monkeypatch):
    """End to end on the tiny dataset: a teacher trained first, then a student whose
    self-critical epochs distil it; the student's manifest names the teacher by its manifest's
    sha256, and a resume that finds another teacher stops rather than mixing two."""
    import dataclasses
    import hashlib
    import json

    from captioner.model_dirs.artifacts import load_trained
    from captioner.training.checkpoint import TrainingError
    from captioner.training.loop import train
    from conftest import PixelEncoder
    from train_helper import TINY
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "cache"))
    quick = dict(encoder=PixelEncoder(), progress=False, evaluate_test=False)
    config = dataclasses.replace(TINY, decoder="attention", max_epochs=2, patience=9)
    train(original_dataset, tmp_path / "teacher", dataclasses.replace(config, scst_max_epochs=0), tmp_path / "ckpt-t", **quick)
    student = dataclasses.replace(config, scst_max_epochs=2, scst_patience=9, seed=7,
                                  scst_teacher=str(tmp_path / "teacher"), scst_teacher_weight=0.5)
    train(original_dataset, tmp_path / "student", student, tmp_path / "ckpt-s", stop_after_epochs=3, **quick)
    state_path = tmp_path / "ckpt-s" / "state.json"
    state = json.loads(state_path.read_text())
    fingerprint = hashlib.sha256((tmp_path / "teacher" / "manifest.json").read_bytes()).hexdigest()
    assert state["phase"] == "scst" and state["teacher_manifest_sha256"] == fingerprint

    state_path.write_text(json.dumps({**state, "teacher_manifest_sha256": "0" * 64}))
    with pytest.raises(TrainingError, match="not the teacher"):
        train(original_dataset, tmp_path / "student", student, tmp_path / "ckpt-s", **quick)
    state_path.write_text(json.dumps(state))
    train(original_dataset, tmp_path / "student", student, tmp_path / "ckpt-s", **quick)
    trained = load_trained(tmp_path / "student")
    assert [r["phase"] for r in trained.history] == ["xe", "xe", "scst", "scst"]
    assert trained.manifest["scst_teacher"] == {"directory": str(tmp_path / "teacher"), "manifest_sha256": fingerprint}
    assert trained.config.scst_teacher_weight == 0.5
    assert all(r["teacher_kl"] > 0 for r in trained.history if r["phase"] == "scst")

    # The teacher must stay as it was: a student written over it is refused before training.
    with pytest.raises(TrainingError, match="is the teacher"):
        train(original_dataset, tmp_path / "teacher", student, tmp_path / "ckpt-x", **quick)
    # A merge student reads pooled vectors; its attention teacher gets the cached maps.
    merge = dataclasses.replace(student, decoder="merge", max_epochs=1, scst_max_epochs=1)
    train(original_dataset, tmp_path / "merge", merge, tmp_path / "ckpt-m", **quick)
    assert [r["phase"] for r in load_trained(tmp_path / "merge").history] == ["xe", "scst"]
