"""Distillation in the self-critical phase: the teacher's distribution is what the ensemble
decodes with, and a step on it moves the student toward it."""
import numpy as np
import pytest

from captioner.config import Config

# <start> then words; the last row ends early, padded with 0 as sampled captions are
TOKENS = np.array([[2, 5, 6, 7, 9], [2, 11, 4, 4, 8], [2, 19, 5, 0, 0]], dtype=np.int32)
PHOTOS = np.array([0, 1, 0])


def tiny(kind: str, seed: int):
    import keras
    from captioner.checkpoint import new_model
    keras.utils.set_random_seed(seed)
    config = Config(vocab_size=20, units=16, embed_dim=8, attention_dim=8, decoder=kind,
                    image_dropout=0.0, embed_dropout=0.0)
    return new_model(config, 1e-2), config


def regions(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 100, 2048)).astype(np.float16)


def test_the_teacher_reads_each_word_as_the_ensemble_decodes_it():
    """Teacher-forced in one pass, the teacher's distribution after each prefix equals the
    NumPy ensemble's step by step; the merge member pools the regions it is given."""
    from captioner.decoders import numpy_decoder
    from captioner.distillation import Teacher
    from captioner.ensemble import EnsembleDecoder
    members = [tiny("attention", 1), tiny("merge", 2)]
    teacher = Teacher(members, [0.6, 0.4], "fingerprint")
    features = regions()
    probs = teacher.probabilities(features, PHOTOS, TOKENS).numpy()
    assert probs.shape == (3, 5, 20)
    ensemble = EnsembleDecoder([numpy_decoder(m, c) for m, c in members], [0.6, 0.4])
    context, state = ensemble.prepare(features.reshape(2, 10, 10, 2048)), ensemble.initial_state(3)
    for t in range(TOKENS.shape[1]):
        out = ensemble.step(TOKENS[:, t], state, context, PHOTOS)
        real = TOKENS[:, t] > 0  # after a caption's end its row is padding, weighted 0
        np.testing.assert_allclose(probs[real, t], np.exp(out.log_probs[real]), atol=1e-5)
        state = out.state


def test_a_merge_student_cannot_distil_an_attention_teacher():
    from captioner.checkpoint import TrainingError
    from captioner.distillation import Teacher
    teacher = Teacher([tiny("attention", 1)], [1.0], "fingerprint")
    pooled = regions().astype(np.float32).mean(axis=1)
    with pytest.raises(TrainingError, match="needs the 10x10 maps"):
        teacher.probabilities(pooled, PHOTOS, TOKENS)


def test_a_distillation_step_moves_the_student_toward_the_teacher():
    """With no advantage on the samples, one step on the teacher's targets alone lowers the
    cross-entropy from teacher to student on the words it weighs, and leaves the rest alone."""
    import tensorflow as tf
    from captioner.decoders import keras_inputs
    from captioner.distillation import Teacher
    from captioner.train_step import make_train_step
    student, config = tiny("attention", 3)
    teacher = Teacher([tiny("attention", 4)], [1.0], "fingerprint")
    features = regions()
    inputs = keras_inputs(config, features, PHOTOS, TOKENS)
    targets = np.roll(TOKENS, -1, axis=1)
    mask = (targets > 0).astype(np.float32)
    q = teacher.probabilities(features, PHOTOS, TOKENS)

    def cross_entropy():
        log_p = tf.nn.log_softmax(student(inputs, training=False)).numpy()
        return float(-(q.numpy() * log_p).sum(-1)[mask > 0].mean())

    train_step, _ = make_train_step(student)
    before = [v.numpy() for v in student.trainable_variables]
    start = cross_entropy()
    for _ in range(3):
        train_step(inputs, targets, np.zeros_like(mask), np.float32(mask.sum()),
                   soft_targets=q, soft_weights=mask)
    assert cross_entropy() < start - 0.01
    # No teacher weight: the same step with zero advantages leaves the student as it is.
    student2, _ = tiny("attention", 3)
    step2, _ = make_train_step(student2)
    step2(inputs, targets, np.zeros_like(mask), np.float32(mask.sum()),
          soft_targets=q, soft_weights=np.zeros_like(mask))
    for a, b in zip(before, student2.trainable_variables):
        np.testing.assert_allclose(a, b.numpy())


def test_teacher_settings_are_checked():
    with pytest.raises(ValueError, match="scst_teacher_weight"):
        Config(scst_teacher_weight=0.5)
    with pytest.raises(ValueError, match="scst_teacher_weight"):
        Config(scst_teacher="trained/ensemble")
    Config(scst_teacher="trained/ensemble", scst_teacher_weight=0.5)


def test_references_appended_after_the_samples_get_no_teacher_weight():
    import tensorflow as tf
    from captioner.self_critical import pad_rows
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

    from captioner.artifacts import load_trained
    from captioner.checkpoint import TrainingError
    from captioner.train import train
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
