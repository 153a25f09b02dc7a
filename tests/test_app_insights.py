"""The app's "Model against people" tab, the locked dataset directory, the Training page with
several models, and its live view of a tiny training run, driven with streamlit.testing.

The small models here are JSON records only (no weights): the tab and the Training page read
nothing else, and the sidebar's "no trained model" error is expected."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from app_fixtures import APP
from conftest import require, trained_models, write_original_layout

TIMEOUT = 60
HELPER = Path(__file__).resolve().parent / "train_helper.py"


def new_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def write_model(directory: Path, history: list[dict], photo_rows: list[dict] | None = None,
                config: dict | None = None) -> Path:
    """A model directory as the Training page and the tab read it (JSON only)."""
    directory.mkdir(parents=True)
    name = directory.name
    (directory / "manifest.json").write_text(json.dumps({
        "created": "2026-01-01T00:00:00+00:00", "best_epoch": 2, "best_phase": history[-1].get("phase", "xe"),
        "epochs_run": len(history), "parameters": 1234, "phase_seconds": {"xe": 120, "scst": 60},
        **({"scst_teacher": {"directory": config["scst_teacher"], "manifest_sha256": "ab" * 32}}
           if (config or {}).get("scst_teacher") else {}),
        **({"extended_from": {"directory": f"trained/{name}", "manifest_sha256": "cd" * 32}}
           if name == "merge" else {})}))
    (directory / "config.json").write_text(json.dumps({"decoder": name, "vocab_size": 9, "units": 32,
                                                       **(config or {})}))
    (directory / "history.json").write_text(json.dumps(history))
    scores = {"BLEU-1": 0.5, "BLEU-2": 0.4, "BLEU-3": 0.3, "BLEU-4": 0.2, "METEOR": 0.2, "CIDEr": 0.5}
    (directory / "metrics.json").write_text(json.dumps({
        "split": "test", "n_images": 5, "length_alpha": 0.5, "beam": {b: scores for b in ("1", "3", "5")},
        "human_first_reference": scores}))
    if photo_rows is not None:
        (directory / "test_captions.json").write_text(json.dumps(photo_rows))
    return directory


HISTORY = [{"phase": "xe", "epoch": 1, "loss": 2.0, "val_loss": 2.1, "val_bleu4": 0.1, "val_cider": 0.3, "seconds": 60,
            "val_distinct": 0.5},
           {"phase": "xe", "epoch": 2, "loss": 1.5, "val_loss": 1.9, "val_bleu4": 0.2, "val_cider": 0.5, "seconds": 60,
            "val_distinct": 0.9},
           {"phase": "scst", "epoch": 3, "loss": -0.1, "mean_reward": 0.6, "val_bleu4": 0.2, "val_cider": 0.6,
            "seconds": 60, "val_distinct": 0.85, "val_distinct_beam": 0.82,  # its guard decoded at beam 3
            "val_cider_beam": 0.62,  # and chose the epoch by CIDEr there
            "mean_similar_photo_reward": 0.2}]  # and its reward was contrastive
GUARDS = {"attention": {"scst_min_distinct": 0.8, "scst_distinct_beam": 3, "scst_select": "beam",
                        "label_smoothing": 0.1, "scst_teacher": "build/teacher/ensemble", "scst_teacher_weight": 0.5},
          "merge": {"scst_min_distinct": 0.8, "scst_distinct_beam": 1}}


@pytest.fixture()
def small_world(tmp_path, monkeypatch):
    """The tiny generated Flickr8k (test photos: the first five, red, green, blue, yellow and
    red squares) and three models: two with per-photo scores, one evaluated before them."""
    data = write_original_layout(tmp_path / "flickr")
    test = sorted(p.name for p in (data / "Flicker8k_Dataset").iterdir())[:5]
    merge_says = ["a red square", "a green square", "a red square", "a yellow square", "a blue stripes"]
    attention_says = ["a red square", "a green square", "a blue square", "a yellow square", "a red square"]
    models = tmp_path / "trained"
    for name, captions in (("merge", merge_says), ("attention", attention_says)):
        rows = [{"image": image, "caption": caption, "beam": 3, "bleu4": round(0.9 - i / 10, 2),
                 "cider": 0.5 if "blue" in caption else round(3.0 - i / 2, 2)}
                for i, (image, caption) in enumerate(zip(test, captions))]
        write_model(models / name, HISTORY if name == "attention" else HISTORY[:2], rows, GUARDS[name])
    write_model(models / "old", HISTORY[:2])
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(models))
    monkeypatch.setenv("CAPTIONER_DATA_DIR", str(data))
    monkeypatch.delenv("CAPTIONER_DATA_DIR_LOCKED", raising=False)
    return {"data": data, "models": models, "test": test}


def grid(at: AppTest) -> list[tuple[str, str]]:
    """(photo name, caption) of each photo card in the tab, in order."""
    names = [b.key.removeprefix("mvp-open-") for b in at.main.button if (b.key or "").startswith("mvp-open-")]
    captions = [t.value for t in at.main.text if t.value.startswith("a ")]
    return list(zip(names, captions))


def test_model_against_people_sorts_filters_and_opens_a_photo(small_world):
    test = small_world["test"]
    at = new_app().run()
    at.switch_page("pages/dataset.py").run()
    assert_no_exception(at)
    assert any("No per-photo scores for: old" in i.value for i in at.main.info)
    assert at.selectbox(key="mvp_model").options == ["attention", "merge"]
    at.selectbox(key="mvp_model").set_value("merge").run()
    # worst CIDEr first (the caption saying "blue" scored 0.5 here), then upwards
    assert [name for name, _ in grid(at)] == [test[4], test[3], test[2], test[1], test[0]]
    at.radio(key="mvp_order").set_value("best first").run()
    assert [name for name, _ in grid(at)][0] == test[0]

    # The blue-square photo (test[2]) that merge called red: people say blue, merge does not...
    at.text_input(key="mvp_word").set_value("Blue").run()
    at.selectbox(key="mvp_where").set_value("references, not caption").run()
    assert grid(at) == [(test[2], "a red square")]
    # ... and the red square that merge called blue
    at.selectbox(key="mvp_where").set_value("caption, not references").run()
    assert grid(at) == [(test[4], "a blue stripes")]
    assert any(c.value.startswith("1 of 5 test photos") for c in at.main.caption)

    at.button(key=f"mvp-open-{test[4]}").click().run()
    assert_no_exception(at)
    both = at.main.dataframe[0].value  # every model's caption of this photo, with its scores
    assert list(both["model"]) == ["attention", "merge"]
    assert list(both["caption"]) == ["a red square", "a blue stripes"]
    assert {"CIDEr", "BLEU-4"} <= set(both.columns)
    references = at.main.dataframe[1].value
    assert len(references) == 5 and references["BLEU-4"].between(0, 1).all()
    at.button(key="mvp-close").click().run()
    assert not any(t.value == test[4] for t in at.main.text)


def test_missed_words_and_phrases(small_world):
    at = new_app().run()
    at.switch_page("pages/dataset.py").run()
    at.selectbox(key="mvp_model").set_value("merge").run()
    assert_no_exception(at)
    missed = next(d.value for d in at.main.dataframe if "word" in d.value.columns)
    # people call the photos "picture"s on white; the model says neither
    assert {"picture", "white"} <= set(missed["word"])
    assert "square" not in set(missed["word"])
    people, model, overused = [d.value for d in at.main.dataframe if "phrase" in d.value.columns]
    assert people.iloc[0]["people"] == 16.0 and model.iloc[0]["phrase"] == "red square"
    assert overused.iloc[0]["phrase"] == "red square"  # said for 2 of 5 photos, people 1 in 5
    assert overused.iloc[0]["model"] == 40.0 and overused.iloc[0]["people"] == 16.0
    at.radio(key="mvp_phrase_n").set_value(3).run()
    assert_no_exception(at)
    # three-word phrases: people's "square on white"; the model's three-word captions all
    # begin with "a", so it has no phrase of its own to count
    people = next(d.value for d in at.main.dataframe if "phrase" in d.value.columns)
    assert people.iloc[0]["phrase"] == "square on white" and people.iloc[0]["people"] == 16.0
    assert all(len(p.split()) == 3 for p in people["phrase"])


def test_the_dataset_directory_typed_is_kept_across_pages(small_world, tmp_path):
    at = new_app().run()
    at.switch_page("pages/dataset.py").run()
    at.text_input(key="data_dir").set_value(str(tmp_path / "elsewhere")).run()
    at.switch_page("pages/training.py").run()
    at.switch_page("pages/dataset.py").run()
    assert_no_exception(at)
    assert at.text_input(key="data_dir").value == str(tmp_path / "elsewhere")


def test_locked_dataset_directory_hides_the_box(small_world, monkeypatch):
    at = new_app().run()
    at.switch_page("pages/dataset.py").run()
    assert at.text_input(key="data_dir").value == str(small_world["data"])
    monkeypatch.setenv("CAPTIONER_DATA_DIR_LOCKED", "1")
    at = new_app().run()
    at.switch_page("pages/dataset.py").run()
    assert_no_exception(at)
    assert not [t for t in at.sidebar.text_input if t.key == "data_dir"]
    assert any("photos match" in c.value for c in at.main.caption)  # the fixed directory is used


def test_training_page_shows_every_model_with_the_self_critical_phase(small_world):
    at = new_app().run()
    at.switch_page("pages/training.py").run()
    assert_no_exception(at)
    assert [h.value for h in at.main.header] == ["Learning curves", "Test scores by beam width",
                                                  "Hyperparameters", "Provenance"]
    # loss, validation CIDEr, validation BLEU-4, mean reward (attention's self-critical epoch),
    # distinct captions (greedy, and at beam 3 where attention's guard measured them)
    assert len(at.main.get("vega_lite_chart")) == 5
    assert any("attention: 80% at beam 3, merge: 80% greedily" in c.value for c in at.main.caption)
    assert any("attention's self-critical epochs are kept by their validation CIDEr at beam 3" in c.value
               for c in at.main.caption)
    assert not any("merge's self-critical epochs are kept" in c.value for c in at.main.caption)
    assert any("attention's training loss is label-smoothed (0.1" in c.value for c in at.main.caption)
    assert not any("merge's training loss" in c.value for c in at.main.caption)
    assert any("attention's self-critical epochs also distil build/teacher/ensemble" in c.value
               and "weight 0.5 per word" in c.value for c in at.main.caption)
    assert not any("merge's self-critical epochs also distil" in c.value for c in at.main.caption)
    assert [s.value for s in at.main.subheader][-3:] == ["attention", "merge", "old"]  # test tables
    provenance = at.main.dataframe[-1].value
    assert list(provenance.columns) == ["attention", "merge", "old"]
    assert provenance.loc["training time", "attention"] == "cross-entropy 2.0 min, self-critical 1.0 min"
    assert provenance.loc["distilled from", "attention"] == "build/teacher/ensemble (manifest abababababab)"
    assert provenance.loc["extended from", "merge"] == "trained/merge (manifest cdcdcdcdcdcd)"
    assert pd.isna(provenance.loc["extended from", "attention"])  # not extended: no such fact


# -- live ----------------------------------------------------------------------------------
def live_status(at: AppTest) -> tuple:
    """What the live view says now: its heading, progress text and metrics."""
    heading = next((s.value for s in at.main.subheader if "decoder:" in s.value), None)
    progress = tuple(p.proto.text for p in at.main.get("progress"))
    return heading, progress, tuple(m.value for m in at.main.metric)


@pytest.mark.slow
def test_live_view_follows_a_tiny_training_run(tmp_path, monkeypatch):
    data = write_original_layout(tmp_path / "flickr")
    models = tmp_path / "trained"
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(models))
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "cache"))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, str(HELPER), str(data), str(models / "merge"),
                             str(tmp_path / ".trained.checkpoint-merge")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        at = new_app().run()
        at.switch_page("pages/training.py").run()
        seen, deadline = [], time.time() + 180
        while time.time() < deadline and proc.poll() is None and len(set(seen)) < 4:
            at.run()
            assert_no_exception(at)
            status = live_status(at)
            if status[0]:
                seen.append(status)
            time.sleep(0.3)
        assert len(set(seen)) >= 4, f"the live view did not change: {seen}\n" + (
            proc.stdout.read() if proc.poll() is not None else "")
        headings = [s[0] for s in seen]
        assert all(h.startswith("merge decoder:") for h in headings)
        assert any("cross-entropy, epoch" in h for h in headings)
        assert any("Time per epoch" == m.label for m in at.main.metric)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()


# -- the real files ------------------------------------------------------------------------
@pytest.mark.integration
def test_model_against_people_on_the_real_models(monkeypatch, shared_data, trained_dir):
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(trained_dir.parent))
    monkeypatch.setenv("CAPTIONER_DATA_DIR", str(shared_data))
    at = new_app().run()
    at.switch_page("pages/dataset.py").run()
    assert_no_exception(at)
    # every committed model has its per-photo scores (one without them is said: the small-world test above)
    scored = [require(directory / "test_captions.json", f"{name}'s per-photo test scores") and name
              for name, directory in trained_models().items()]
    at.text_input(key="mvp_word").set_value("dog").run()
    at.selectbox(key="mvp_where").set_value("references, not caption").run()
    assert_no_exception(at)
    shown = grid(at)
    assert shown and all(" dog" not in f" {caption}" for _, caption in shown)
    at.button(key=f"mvp-open-{shown[0][0]}").click().run()
    assert_no_exception(at)
    assert len(at.main.dataframe[0].value) == len(scored)
    assert any("dog" in r.lower() for r in at.main.dataframe[1].value["caption"])


def test_training_charts_have_legends_that_are_never_cut_off(small_world):
    """Each learning curve says which model by colour and what it measures by dash, in two
    short legends without a width limit (one legend of "attention training, cross-..." names
    was cut off)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df
    at = new_app().run()
    at.switch_page("pages/training.py").run()
    assert_no_exception(at)
    charts = at.main.get("vega_lite_chart")
    assert len(charts) == 5
    for chart in charts:
        spec = json.loads(chart.proto.spec)
        lines = next(layer for layer in spec["layer"] if layer["mark"]["type"] == "line")
        encoding = {**spec.get("encoding", {}), **lines.get("encoding", {})}
        assert encoding["color"]["field"] == "model" and encoding["strokeDash"]["field"] == "line"
        for channel in ("color", "strokeDash"):
            assert encoding[channel]["legend"]["labelLimit"] == 0
        data = pd.concat([convert_arrow_bytes_to_pandas_df(d.data.data) for d in chart.proto.datasets]
                         + ([convert_arrow_bytes_to_pandas_df(chart.proto.data.data)] if chart.proto.data.data else []))
        lines = set(data["line"])
        assert set(data["model"]) <= {"attention", "merge", "old"}
        assert 1 <= len(lines) <= 3 and all(len(line) <= 40 for line in lines), lines
