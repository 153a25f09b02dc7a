"""Per-photo scores, filters, missed words, phrase statistics, a run in progress, the curves
figure: on small data the tests write, and on the committed models and Flickr8k where present."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from captioner.model_dirs.artifacts import PHOTO_SCORES, ArtifactError
from captioner.evaluation.insights import (filter_photos, load_photo_scores, missed_words,
                                           reference_bleu4, sort_photos)
from captioner.training.live_run import checkpoint_dirs, format_seconds, live_runs, read_run
from captioner.evaluation.phrases import compare_phrases, phrase_counts
from conftest import ROOT, require, trained_models

REFERENCES = {
    "dog.jpg": ["A dog runs on the grass .", "a brown dog running", "The dog is playing outside",
                "a dog in a field", "dog running"],
    "cat.jpg": ["a cat sleeps on a sofa", "A cat lying down", "the cat is asleep",
                "a kitten on a couch", "a sleeping cat"],
    "man.jpg": ["a man in a blue shirt", "a man stands on a hotdog stand", "a person in blue",
                "a man outside", "man in a shirt"],
}
PHOTO_ROWS = [
    {"image": "dog.jpg", "caption": "a animal runs on the grass", "beam": 3, "cider": 0.4, "bleu4": 0.2},
    {"image": "cat.jpg", "caption": "a cat sleeps on a sofa", "beam": 3, "cider": 2.1, "bleu4": 0.9},
    {"image": "man.jpg", "caption": "a man in a blue shirt with a dog", "beam": 3, "cider": 0.4, "bleu4": 0.5},
]


def write_scores(directory, rows=PHOTO_ROWS):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / PHOTO_SCORES).write_text(json.dumps(rows))
    return directory


# -- per-photo scores ------------------------------------------------------------------------
def test_load_sort_and_filter(tmp_path):
    scores = load_photo_scores(write_scores(tmp_path / "merge"))
    assert set(scores) == set(REFERENCES) and scores["cat.jpg"]["cider"] == 2.1
    assert sort_photos(scores) == ["dog.jpg", "man.jpg", "cat.jpg"]  # worst first, ties by name
    assert sort_photos(scores, by="bleu4", best_first=True) == ["cat.jpg", "man.jpg", "dog.jpg"]
    assert sort_photos(scores, ["man.jpg", "cat.jpg", "nope.jpg"]) == ["man.jpg", "cat.jpg"]

    # The dog photo whose caption did not say "dog"; "hotdog" is not a dog.
    assert filter_photos(scores, REFERENCES, "Dog", "references, not caption") == ["dog.jpg"]
    assert filter_photos(scores, REFERENCES, "dog", "references") == ["dog.jpg"]
    assert filter_photos(scores, REFERENCES, "dog", "caption") == ["man.jpg"]
    assert filter_photos(scores, REFERENCES, "dog", "caption, not references") == ["man.jpg"]
    assert filter_photos(scores, REFERENCES, "blue shirt") == ["man.jpg"]  # a phrase
    assert filter_photos(scores, REFERENCES, " ", "caption") == list(scores)
    with pytest.raises(ValueError):
        filter_photos(scores, REFERENCES, "dog", "anywhere")


def test_missing_and_malformed_score_files(tmp_path):
    assert load_photo_scores(tmp_path) is None  # a model evaluated before the file existed
    (tmp_path / PHOTO_SCORES).write_text(json.dumps([{"image": "a.jpg", "caption": "x"}]))
    with pytest.raises(ArtifactError, match="entry 0 lacks"):
        load_photo_scores(tmp_path)
    (tmp_path / PHOTO_SCORES).write_text("{broken")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_photo_scores(tmp_path)


def test_per_photo_scores_belong_to_their_photos():
    """Each photo's CIDEr is its own (pycocoevalcap returns them in its key order, not ours),
    and sentence BLEU-4 is smoothed: above 0 without a matching 4-gram, 1 for a reference."""
    from captioner.evaluation.metrics import coco_scores, sentence_bleu4
    hypotheses = {"man.jpg": "a man in a blue shirt", "dog.jpg": "a cat sleeps on a sofa",
                  "cat.jpg": "a cat sleeps on a sofa"}   # deliberately not in sorted order
    per_image = {}
    corpus = coco_scores(hypotheses, REFERENCES, meteor=False, per_image=per_image)
    assert set(per_image) == set(hypotheses)
    assert per_image["dog.jpg"]["cider"] < 0.2 < per_image["cat.jpg"]["cider"]  # same words, other photo
    assert per_image["man.jpg"]["cider"] > 1 and per_image["cat.jpg"]["cider"] > 1
    mean = sum(v["cider"] for v in per_image.values()) / len(per_image)
    assert mean == pytest.approx(corpus["CIDEr"], abs=1e-3)
    assert 0 < sentence_bleu4("a dog runs", ["a dog in a field"]) < 0.5
    assert sentence_bleu4("a man in a blue shirt", REFERENCES["man.jpg"]) == 1.0


def test_missed_words_and_reference_scores():
    people = [r for refs in REFERENCES.values() for r in refs]
    model = [row["caption"] for row in PHOTO_ROWS]
    missed = missed_words(people, model, vocabulary={"dog", "cat", "running"}, min_count=2)
    # words people used at least twice and the model never; ties alphabetically
    assert missed == [{"word": "is", "people": 2, "in vocabulary": False},
                      {"word": "outside", "people": 2, "in vocabulary": False},
                      {"word": "running", "people": 2, "in vocabulary": True}]
    assert missed_words(people, model, min_count=2)[0]["in vocabulary"] is None  # vocabulary unknown
    assert missed_words(people, model, min_count=99) == []

    same = reference_bleu4(["a dog runs on grass"] * 5)
    assert same == [1.0] * 5
    different = reference_bleu4(REFERENCES["cat.jpg"])
    assert len(different) == 5 and all(0 <= s < 1 for s in different)


# -- phrases -------------------------------------------------------------------------------
def test_phrases_are_counted_within_captions_and_compared_per_100_captions():
    counts = phrase_counts(["a man in a blue shirt", "blue shirt"], 2)
    assert counts["blue shirt"] == 2
    assert "shirt blue" not in counts  # never across two captions
    assert "in a" not in counts and "a blue" not in counts  # fragments
    assert "in a" in phrase_counts(["a man in a"], 2, content_only=False)
    assert phrase_counts(["a man in a blue shirt"], 3) == {}
    assert phrase_counts(["a man in black"], 3) == {"man in black": 1}
    with pytest.raises(ValueError):
        phrase_counts(["a b c d"], 4)

    people = ["a man in a blue shirt"] + ["a man in a red coat"] * 9        # 10 captions
    model = ["a man in a blue shirt"] * 3 + ["a man in a coat"]              # 4 captions
    table = compare_phrases(people, model, n=2, top=3)
    top = table["overused"][0]
    assert top["phrase"] == "blue shirt"
    assert top["people"] == 10.0 and top["model"] == 75.0 and top["model / people"] == 7.5
    assert [row["phrase"] for row in table["people"]] == ["red coat", "blue shirt"]
    assert table["people"][0]["model / people"] == 0.0
    assert [row["phrase"] for row in table["model"]] == ["blue shirt"]


# -- a run in progress ---------------------------------------------------------------------
def write_run(directory, progress=None, state=None):
    directory.mkdir(parents=True)
    if progress is not None:
        (directory / "progress.json").write_text(json.dumps(progress))
    if state is not None:
        (directory / "state.json").write_text(json.dumps(state))
    return directory


def test_run_in_progress_estimates_time_per_epoch_and_time_left(tmp_path):
    now = 10_000.0
    history = [{"phase": "xe", "epoch": e, "loss": 3.0 - e / 10, "val_loss": 2.9, "val_bleu4": 0.1,
                "val_cider": 0.2 + e / 100, "seconds": s} for e, s in ((1, 300.0), (2, 320.0), (3, 310.0))]
    ckpt = write_run(tmp_path / ".trained.checkpoint-attention",
                     {"decoder": "attention", "pid": os.getpid(), "phase": "xe", "epoch": 4,
                      "phase_epoch": 4, "max_phase_epochs": 10, "epoch_started": now - 100,
                      "step": "training", "done": 50, "total": 150, "unit": "batches",
                      "loss": 2.5, "updated": now - 2},
                     {"phase": "xe", "epoch": 3, "phase_epoch": 3, "history": history,
                      "best_cider": 0.23, "best_epoch": 3, "stale_epochs": 1,
                      "config": {"decoder": "attention", "patience": 4, "scst_patience": 2}})
    run = read_run(ckpt, now)
    assert run.running and run.decoder == "attention" and run.phase_name == "cross-entropy"
    assert run.model == "attention"  # progress.json from before runs named their model: the decoder's
    assert (run.epoch, run.done, run.total, run.loss, run.best_epoch) == (4, 50, 150, 2.5, 3)
    assert run.epoch_seconds == 310.0 and run.epoch_seconds_measured  # median of finished epochs
    assert run.epoch_left == 210.0
    # after this epoch: 2 more if validation CIDEr stays flat (patience 4, 1 stale), 6 at most
    assert run.epochs_after == (2, 6)
    assert run.phase_left == (210.0 + 2 * 310.0, 210.0 + 6 * 310.0)
    assert round(run.updated_seconds_ago) == 2
    assert format_seconds(run.phase_left[1]) == "34 min" and format_seconds(3700) == "1 h 01 min"


def test_first_epoch_is_extrapolated_and_a_dead_run_is_stopped(tmp_path):
    now = 5_000.0
    ckpt = write_run(tmp_path / ".trained.checkpoint-merge",
                     {"decoder": "merge", "pid": 2 ** 22 + 12345, "phase": "xe", "epoch": 1,
                      "phase_epoch": 1, "max_phase_epochs": 30, "epoch_started": now - 60,
                      "step": "training", "done": 25, "total": 100, "updated": now})
    run = read_run(ckpt, now)
    assert not run.running  # no such process
    assert run.epoch_seconds == 240.0 and not run.epoch_seconds_measured
    assert run.epochs_after == (29, 29)  # no state.json yet: its patience is unknown
    features = write_run(tmp_path / "f", {"decoder": "merge", "phase": "features", "done": 10,
                                          "total": 40, "unit": "photos"})
    assert read_run(features, now).epoch_seconds is None
    assert read_run(tmp_path / "empty") is None


def test_checkpoints_are_found_beside_the_models_directory(tmp_path):
    models = tmp_path / "trained"
    (models / "merge").mkdir(parents=True)
    (models / "merge" / "manifest.json").write_text("{}")
    write_run(tmp_path / ".trained.checkpoint-attention", {"decoder": "attention", "phase": "xe"})
    write_run(tmp_path / ".trained.checkpoint-merge", None, {"phase": "scst", "history": []})
    (tmp_path / ".trained.checkpoint-old").mkdir()  # no state, no progress: not a run
    expected = [tmp_path / ".trained.checkpoint-attention", tmp_path / ".trained.checkpoint-merge"]
    assert checkpoint_dirs(models) == expected
    assert checkpoint_dirs(models / "merge") == expected  # CAPTIONER_MODEL_DIR=trained/merge
    assert [run.decoder for run in live_runs(models)] == ["attention", "?"]
    # a second model of one decoder (train.py --name) is told apart by its directory's name
    write_run(tmp_path / ".trained.checkpoint-attention_b", {"decoder": "attention", "model": "attention_b",
                                                            "phase": "xe"})
    assert [(run.model, run.decoder) for run in live_runs(models)][:2] == [("attention", "attention"),
                                                                           ("attention_b", "attention")]


# -- the figure ------------------------------------------------------------------------------
def test_plot_history_command(tmp_path):
    models = tmp_path / "trained"
    for name, scst in (("merge", False), ("attention", True)):
        (models / name).mkdir(parents=True)
        (models / name / "manifest.json").write_text("{}")
        (models / name / "config.json").write_text(json.dumps({"decoder": name}))
        rows = [{"phase": "xe", "epoch": e, "loss": 2 / e, "val_loss": 2.5 / e, "val_bleu4": e / 50,
                 "val_cider": e / 10} for e in (1, 2, 3)]
        if scst:
            rows.append({"phase": "scst", "epoch": 4, "loss": -0.1, "mean_reward": 0.5,
                         "val_bleu4": 0.07, "val_cider": 0.45, "val_distinct": 0.85,
                         "val_distinct_beam": 0.81, "val_cider_beam": 0.47})  # a guard at beam 3
        (models / name / "history.json").write_text(json.dumps(rows))
    out = tmp_path / "docs" / "curves.png"
    command = [sys.executable, "-m", "captioner", "plot-history", "--models", str(models), "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    done = subprocess.run(command[:-4] + ["--models", str(tmp_path / "none"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("error:") and "no trained model" in done.stderr


# -- the real files ----------------------------------------------------------------------------
@pytest.mark.integration   # Flickr8k and the committed models
def test_real_photo_scores(shared_data):
    from captioner.data.dataset import load_flickr8k
    from captioner.evaluation.insights import model_vocabulary
    scored = trained_models()
    assert set(scored) >= {"merge", "attention", "ensemble"}
    for name, directory in scored.items():   # every committed model has them
        require(directory / PHOTO_SCORES, f"{name}'s per-photo test scores")
    dataset = load_flickr8k(shared_data)
    test = dataset.images("test")
    for name, directory in scored.items():
        scores = load_photo_scores(directory)
        assert set(scores) == set(test), name
        worst, best = sort_photos(scores)[0], sort_photos(scores, best_first=True)[0]
        assert scores[worst]["cider"] <= scores[best]["cider"]
        missed_dogs = filter_photos(scores, dataset.captions, "dog", "references, not caption")
        dogs = filter_photos(scores, dataset.captions, "dog", "references")
        assert set(missed_dogs) < set(dogs)
        people = [c for image in test for c in dataset.captions[image]]
        model = [scores[image]["caption"] for image in test]
        missed = missed_words(people, model, model_vocabulary(directory))
        assert missed and all(row["in vocabulary"] in (True, False) for row in missed)
        assert compare_phrases(people, model, n=3)["overused"]
