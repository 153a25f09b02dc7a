"""Training end to end on a tiny generated dataset, kill-and-resume, and trained/ handling."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from captioner.model_dirs import artifacts
from captioner.model_dirs.artifacts import ArtifactError, load_trained
from captioner.vision.features import FeatureCache

HELPER = Path(__file__).resolve().parent / "train_helper.py"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "cache"))


def run_helper(data, out, ckpt, decoder="merge", env_extra=None):
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, str(HELPER), str(data), str(out), str(ckpt), decoder],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def kill_when(proc, state_path: Path, ready, timeout=240):
    """SIGKILL `proc` once its checkpoint state is `ready`; fail, saying so, if it never is."""
    deadline = time.time() + timeout
    reached = False
    while not reached and time.time() < deadline and proc.poll() is None:
        try:
            reached = state_path.exists() and ready(json.loads(state_path.read_text()))
        except ValueError:
            pass  # never half-written (atomic), but be safe
        time.sleep(0.1)
    if not reached:  # killing it now would test another point of the run than intended
        proc.kill()
        pytest.fail(f"the run did not reach the point to kill it at within {timeout} s:\n" + proc.stdout.read())
    assert proc.poll() is None, "training finished before it could be killed:\n" + proc.stdout.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return json.loads(state_path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("decoder, phase", [("merge", "xe"), ("attention", "scst")])
def test_training_is_killed_then_resumes_and_writes_a_consistent_model(tmp_path, original_dataset,
                                                                       decoder, phase):
    out, ckpt = tmp_path / "trained", tmp_path / "ckpt"
    proc = run_helper(original_dataset, out, ckpt, decoder)
    state = kill_when(proc, ckpt / "state.json",
                      lambda s: s["phase"] == phase and s["phase_epoch"] >= (2 if phase == "xe" else 1))
    killed_at = state["epoch"]
    assert not out.exists(), "a killed run must not leave trained/ behind"

    proc = run_helper(original_dataset, out, ckpt, decoder)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert f"Resuming from {ckpt} after epoch {killed_at} ({phase})" in log

    trained = load_trained(out)
    assert trained.config.decoder == decoder
    epochs = [row["epoch"] for row in trained.history]
    assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) > killed_at
    phases = [row["phase"] for row in trained.history]
    assert phases == sorted(phases, key=["xe", "scst"].index) and "scst" in phases
    assert all("mean_reward" in row and "val_bad_endings" in row
               for row in trained.history if row["phase"] == "scst")
    # the contrastive reward records how well the samples fit their similar photos
    assert all(("mean_similar_photo_reward" in row) == (row["phase"] == "scst" and decoder == "attention")
               for row in trained.history)
    # the guard's measure: distinct captions at beam `scst_distinct_beam`, or greedy at 1
    guard_key = "val_distinct_beam" if trained.config.scst_distinct_beam > 1 else "val_distinct"
    assert (guard_key == "val_distinct_beam") == (decoder == "attention")
    assert all((guard_key in r) == (r["phase"] == "scst" or guard_key == "val_distinct")
               for r in trained.history)
    from captioner.training.scores import ALPHA_CHOICES  # measured at the length penalty val CIDEr prefers
    assert all(r["val_distinct_alpha"] in ALPHA_CHOICES for r in trained.history if "val_distinct_beam" in r)
    keepable = [r for r in trained.history
                if r["phase"] == "scst" and r[guard_key] >= trained.config.scst_min_distinct]
    # the kept epoch: the best cross-entropy one unless a keepable self-critical epoch beats it,
    # each phase scored as the run chooses (the attention run: CIDEr at beam 3 for both)
    select = "val_cider_beam" if trained.config.scst_select == "beam" else "val_cider"
    assert (select == "val_cider_beam") == (decoder == "attention")
    best_xe = max((r for r in trained.history if r["phase"] == "xe"), key=lambda r: r["val_cider"])
    best_scst = max(keepable, key=lambda r: r[select], default=None)
    xe_score = trained.manifest["xe_val_cider_beam"] if select == "val_cider_beam" else best_xe["val_cider"]
    expected = best_scst if best_scst and best_scst[select] > xe_score else best_xe
    assert trained.manifest["best_epoch"] == expected["epoch"]
    assert set(trained.metrics["beam"]) == {"1", "3", "5"}
    assert trained.metrics["beam"]["3"]["BLEU-1"] > 0.2  # learned colour and shape words (random: ~0.05)
    for key in ("distinct_captions", "mean_words", "vocabulary_used", "bigram_repeat_rate",
                "bad_ending_rate"):
        assert set(trained.metrics[key]) == {"1", "3", "5"}
    # each test photo's caption at the default width with its own scores, for the app
    rows = json.loads((out / "test_captions.json").read_text())
    assert len(rows) == trained.metrics["n_images"] and len({r["image"] for r in rows}) == len(rows)
    for row in rows:
        assert set(row) == {"image", "caption", "beam", "bleu4", "cider"}
        assert row["beam"] == trained.config.default_beam and 0 <= row["bleu4"] <= 1 and row["cider"] >= 0
    assert "test_captions.json" in trained.manifest["files"]
    # the training script writes the model's card from what it recorded
    card = (out / "MODEL_CARD.md").read_text()
    assert f"| 3 | {trained.metrics['beam']['3']['BLEU-1']:.3f} |" in card and f"--decoder {decoder}" in card
    assert not ckpt.exists()


@pytest.mark.slow
def test_kaggle_layout_trains_too(tmp_path, kaggle_dataset):
    proc = run_helper(kaggle_dataset, tmp_path / "trained", tmp_path / "ckpt")
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    manifest = json.loads((tmp_path / "trained" / "manifest.json").read_text())
    assert manifest["dataset"]["layout"] == "kaggle"

    # Re-scoring keeps the weights and history, and rewrites the metrics atomically.
    from captioner.training.scores import rescore
    from conftest import PixelEncoder
    before = load_trained(tmp_path / "trained")
    metrics = rescore(kaggle_dataset, tmp_path / "trained", PixelEncoder(), progress=False)
    after = load_trained(tmp_path / "trained")
    assert after.manifest["files"]["decoder.weights.h5"] == before.manifest["files"]["decoder.weights.h5"]
    assert after.history == before.history and after.metrics == metrics and "rescored" in after.manifest
    assert len(json.loads((tmp_path / "trained" / "test_captions.json").read_text())) == metrics["n_images"]


@pytest.mark.slow
def test_a_kept_checkpoint_extends_a_finished_run(tmp_path, original_dataset, capsys):
    import dataclasses
    from captioner.training.loop import train
    from conftest import PixelEncoder
    from train_helper import TINY
    out, ckpt = tmp_path / "trained", tmp_path / "ckpt"
    config = dataclasses.replace(TINY, max_epochs=2, scst_max_epochs=1, scst_patience=3)
    quick = dict(encoder=PixelEncoder(), progress=False, evaluate_test=False)  # the other tests score test
    train(original_dataset, out, config, ckpt, keep_checkpoint=True, **quick)
    first = load_trained(out)
    assert [r["phase"] for r in first.history] == ["xe", "xe", "scst"]
    assert (ckpt / "state.json").is_file(), "keep_checkpoint must keep it"
    from captioner.training.live_run import read_run
    assert read_run(ckpt) is None, "a finished run is not shown as a live (or killed) one"
    capsys.readouterr()

    # one more self-critical epoch, resumed from where the finished run stopped
    train(original_dataset, out, dataclasses.replace(config, scst_max_epochs=2), ckpt, **quick)
    log = capsys.readouterr().out
    assert f"Resuming from {ckpt} after epoch 3 (scst)" in log and "That run had finished" in log
    extended = load_trained(out)
    assert extended.history[:3] == first.history
    assert [(r["epoch"], r["phase"]) for r in extended.history[3:]] == [(4, "scst")]
    assert extended.config.scst_max_epochs == 2 and not ckpt.exists()


@pytest.mark.slow
def test_a_finished_model_is_extended_without_its_checkpoint(tmp_path, original_dataset, capsys):
    """--extend: a model directory stands in for the checkpoint its run did not keep, from
    cross-entropy into self-critical training, then by one more self-critical epoch."""
    import dataclasses
    from captioner.training.checkpoint import TrainingError
    from captioner.training.loop import train
    from conftest import PixelEncoder
    from train_helper import TINY
    out = tmp_path / "trained"
    config = dataclasses.replace(TINY, max_epochs=2, patience=9, scst_max_epochs=0, scst_patience=3)
    quick = dict(encoder=PixelEncoder(), progress=False, evaluate_test=False)
    train(original_dataset, out, config, tmp_path / "ckpt-a", **quick)
    xe_only = load_trained(out)
    assert [r["phase"] for r in xe_only.history] == ["xe", "xe"] and not (tmp_path / "ckpt-a").exists()
    xe_only_manifest = artifacts.sha256_file(out / artifacts.MANIFEST)

    # Into the self-critical phase (whose settings may still change), from the kept weights.
    capsys.readouterr()
    config = dataclasses.replace(config, scst_max_epochs=1, scst_xe_weight=0.5)
    train(original_dataset, out, config, tmp_path / "ckpt-b", extend=out, **quick)
    log = capsys.readouterr().out
    assert f"Extending {out}: its run (2 epochs, kept epoch {xe_only.manifest['best_epoch']})" in log
    first = load_trained(out)
    assert first.history[:2] == xe_only.history
    assert [(r["epoch"], r["phase"]) for r in first.history[2:]] == [(3, "scst")]
    assert first.manifest["extended_from"] == {
        "directory": str(out), "manifest_sha256": xe_only_manifest}
    assert not (tmp_path / "ckpt-b").exists()

    # One more self-critical epoch: the count of that phase's epochs carries on.
    train(original_dataset, out, dataclasses.replace(config, scst_max_epochs=2), tmp_path / "ckpt-c",
          extend=out, **quick)
    extended = load_trained(out)
    assert extended.history[:3] == first.history
    assert [(r["epoch"], r["phase"]) for r in extended.history[3:]] == [(4, "scst")]

    # Refused: other settings than the model's, or another decoder.
    with pytest.raises(TrainingError, match=r"trained with other settings \(units\)"):
        train(original_dataset, tmp_path / "other", dataclasses.replace(config, units=config.units * 2),
              tmp_path / "ckpt-d", extend=out, **quick)
    with pytest.raises(TrainingError, match="is a merge model, not attention"):
        train(original_dataset, tmp_path / "other", dataclasses.replace(config, decoder="attention"),
              tmp_path / "ckpt-e", extend=out, **quick)


@pytest.mark.slow
@pytest.mark.parametrize("decoder", ["merge", "attention"])
def test_a_stopped_and_resumed_run_repeats_an_unbroken_one(tmp_path, original_dataset, decoder):
    """Dropout masks are seeded per epoch, not carried in unsaved variables: resuming after
    epoch 2 (cross-entropy) and after epoch 4 (the first self-critical one) changes nothing."""
    import dataclasses

    import numpy as np

    from captioner.training.loop import train
    from conftest import PixelEncoder
    from train_helper import TINY
    config = dataclasses.replace(TINY, decoder=decoder, max_epochs=3, patience=9, scst_max_epochs=2,
                                 scst_patience=9, image_dropout=0.5, embed_dropout=0.5)
    quick = dict(encoder=PixelEncoder(), progress=False, evaluate_test=False)
    train(original_dataset, tmp_path / "unbroken", config, tmp_path / "ckpt-a", **quick)
    for stop in (2, 2, None):  # epochs 1-2, 3-4, 5
        train(original_dataset, tmp_path / "resumed", config, tmp_path / "ckpt-b",
              stop_after_epochs=stop, **quick)
    unbroken, resumed = load_trained(tmp_path / "unbroken"), load_trained(tmp_path / "resumed")
    assert [r["phase"] for r in resumed.history] == ["xe"] * 3 + ["scst"] * 2

    def measured(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    assert measured(resumed.history) == measured(unbroken.history)
    for a, b in zip(unbroken.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def tiny_trained(tmp_path, vocab_words=("a", "red", "square")):
    from captioner.decoders.config import Config
    from captioner.decoders.registry import build_decoder
    from captioner.data.text import Vocabulary
    vocab = Vocabulary(list(vocab_words))
    config = Config(vocab_size=len(vocab), units=8, embed_dim=4)
    out = tmp_path / "trained"
    model = build_decoder(config)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)  # as after training: Adam moments exist
    artifacts.save_trained(out, model, vocab, config, [], {"split": "test"}, {"k": 1})
    return out, config, vocab


def test_roundtrip_and_atomic_replacement(tmp_path, monkeypatch):
    out, config, vocab = tiny_trained(tmp_path)
    first = load_trained(out)
    assert first.config.vocab_size == len(first.vocab) == 7
    import h5py
    with h5py.File(out / "decoder.weights.h5") as weights:
        assert "optimizer" not in weights  # only what decoding needs is shipped
    assert all(p.stat().st_mode & 0o044 for p in out.iterdir())  # readable by the app's user
    from captioner.decoders.registry import build_decoder

    def crash(*_args, **_kw):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "write_json_atomic", crash)
    with pytest.raises(OSError):
        artifacts.save_trained(out, build_decoder(config), vocab, config, [], None, {})
    monkeypatch.undo()
    assert load_trained(out).manifest == first.manifest  # the old model is intact
    assert [p.name for p in tmp_path.iterdir()] == ["trained"]  # no staging left behind

    artifacts.save_trained(out, build_decoder(config), vocab, config, [{"epoch": 1}], None, {"k": 2})
    assert load_trained(out).manifest["k"] == 2


def test_inconsistent_model_is_refused(tmp_path):
    out, config, vocab = tiny_trained(tmp_path)
    other, _, _ = tiny_trained(tmp_path / "other", ("a", "dog"))
    (out / "vocab.json").write_bytes((other / "vocab.json").read_bytes())
    with pytest.raises(ArtifactError, match="do not match manifest.json"):
        load_trained(out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["files"].pop("vocab.json")
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not list the sha256"):
        load_trained(out)
    manifest["files"]["vocab.json"] = artifacts.sha256_file(out / "vocab.json")
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="config.json says 7 words but vocab.json has 6"):
        load_trained(out)
    (out / "weights.tmp").write_text("")
    (out / "decoder.weights.h5").unlink()
    with pytest.raises(ArtifactError, match="missing decoder.weights.h5"):
        load_trained(out)
    with pytest.raises(ArtifactError, match="no trained model"):
        load_trained(tmp_path / "nothing")


def test_feature_cache_ignores_damaged_entries(tmp_path):
    import numpy as np
    cache = FeatureCache("abc", root=tmp_path)
    cache.put("deadbeef", np.ones((10, 10, 2048)))
    stored = cache.get("deadbeef")
    assert stored.dtype == np.float16 and stored.shape == (10, 10, 2048) and stored.astype(np.float32).sum() == 204800
    cache.put("cafe", np.ones(2048))          # an old-style vector: not a map, recomputed
    assert cache.get("cafe") is None
    cache.path_for("deadbeef").write_bytes(b"garbage")
    assert cache.get("deadbeef") is None


def test_a_loaded_model_is_shared_but_its_files_are_still_checked(tmp_path):
    out, config, vocab = tiny_trained(tmp_path)
    first = load_trained(out)
    assert load_trained(out) is first                 # the ensemble reuses its members this way
    assert load_trained(out).numpy_decoder() is first.numpy_decoder()
    elsewhere = tmp_path / "other-root"
    elsewhere.mkdir()
    (elsewhere / "trained").symlink_to(out)
    assert load_trained(elsewhere / "trained") is not first   # belongs to the trained/ it was found in
    weights = out / "decoder.weights.h5"
    good = weights.read_bytes()
    weights.write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="do not match manifest.json"):
        load_trained(out)                             # damaged since: refused, though loaded before
    weights.write_bytes(good)
    from captioner.decoders.registry import build_decoder
    artifacts.save_trained(out, build_decoder(config), vocab, config, [], None, {"k": 3})
    assert load_trained(out) is not first and load_trained(out).manifest["k"] == 3   # retrained
