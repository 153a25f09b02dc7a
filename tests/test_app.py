"""The Streamlit app, driven in-process with streamlit.testing (no browser).

The model is cached per process (st.cache_resource), so only the first caption test pays
for loading Xception.
"""
from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app_fixtures import APP, assert_plausible_caption, beam_captions, model_vocabulary, photo_png

TIMEOUT = 120
integration = pytest.mark.integration  # needs trained/, Flickr8k and the Xception weights


@pytest.fixture()
def app_env(monkeypatch, trained_dir, shared_data):
    """Point the app at the real model and data (conftest.py finds them)."""
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(trained_dir))
    monkeypatch.setenv("CAPTIONER_DATA_DIR", str(shared_data))


def new_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def test_without_settings_the_app_finds_the_checkouts_models_and_the_shared_data(monkeypatch):
    """`make run` sets nothing: trained/ is the checkout's, the dataset ../shared/flickr8k."""
    from conftest import ROOT
    from app.support import default_data_dir, model_dir
    monkeypatch.delenv("CAPTIONER_MODEL_DIR", raising=False)
    monkeypatch.delenv("CAPTIONER_DATA_DIR", raising=False)
    assert model_dir() == ROOT / "trained"
    shared = ROOT.parent / "shared" / "flickr8k"
    assert default_data_dir() == (str(shared) if shared.is_dir() else "")


def test_the_warm_start_survives_a_missing_model(monkeypatch, tmp_path):
    """app.serve preloads before serving; with nothing to load the server must start anyway
    (the page then explains), so the preload reports the problem instead of raising."""
    from app.serve import warm_up
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(tmp_path / "nothing"))
    message = warm_up()
    assert message.startswith("Not preloaded") and "no trained model" in message


# -- no model ------------------------------------------------------------------------------
@pytest.mark.parametrize("broken", ["missing", "corrupt"])
@pytest.mark.parametrize("page", ["pages/caption.py", "pages/training.py"])
def test_missing_or_broken_model_explains_the_fix(monkeypatch, tmp_path, broken, page):
    model = tmp_path / "trained"
    if broken == "corrupt":
        model.mkdir()
        (model / "manifest.json").write_text("{not json")
        for name in ("decoder.weights.h5", "vocab.json", "config.json"):
            (model / name).write_text("")
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(model))
    at = new_app().run()
    if page != "pages/caption.py":
        at.switch_page(page).run()
    assert_no_exception(at)
    errors = " ".join(e.value for e in at.main.error)
    assert "could not be loaded" in errors and "make train" in errors
    assert any(str(model) in t.value for t in at.main.text)  # the library's own message
    if page == "pages/caption.py":  # see test_switching_pages for why only here
        assert any("No trained model" in e.value for e in at.sidebar.error)


def test_training_page_shows_a_run_in_progress_by_its_models_name(monkeypatch, tmp_path):
    """The live view names the model a run writes, so a second model of one decoder
    (train.py --name) is told apart from the first while both train."""
    import json
    import os
    model = tmp_path / "trained"
    model.mkdir()
    checkpoint = tmp_path / ".trained.checkpoint-attention_b"
    checkpoint.mkdir()
    (checkpoint / "progress.json").write_text(json.dumps(
        {"decoder": "attention", "model": "attention_b", "pid": os.getpid(), "phase": "xe", "epoch": 2,
         "phase_epoch": 2, "max_phase_epochs": 30, "step": "training", "done": 5, "total": 10}))
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(model))
    at = new_app().run()
    at.switch_page("pages/training.py").run()
    assert_no_exception(at)
    assert [h.value for h in at.main.header][:1] == ["Training now"]
    assert at.main.subheader[0].value.startswith("attention_b (attention decoder): cross-entropy, epoch 2")

    (checkpoint / "state.json").write_text("[]")   # damaged: the page says so and goes on
    at.run()
    assert_no_exception(at)
    assert any("Cannot show the runs in progress:" in w.value and "state.json: expected a JSON object" in w.value
               for w in at.main.warning)
    assert at.main.title  # the rest of the page is drawn


# -- caption page --------------------------------------------------------------------------
@integration
def test_upload_then_change_beam_widths_encodes_once(app_env, trained_dir):
    at = new_app().run()
    assert_no_exception(at)
    at.file_uploader(key="upload").upload("cat.png", photo_png("chelsea"), "image/png").run()
    assert_no_exception(at)
    assert not at.main.error
    first = beam_captions(at)
    assert len(first) == 3  # the default widths 1, 3 and 5
    words = model_vocabulary(trained_dir)
    for caption in first:
        assert_plausible_caption(caption, words)
    assert at.session_state["encoder_runs"] == 1
    assert any("Encoded just now" in c.value for c in at.main.caption)

    at.multiselect(key="beams").set_value([2, 8, 10]).run()
    assert_no_exception(at)
    assert len(beam_captions(at)) == 3
    assert at.session_state["encoder_runs"] == 1, "changing beam widths must reuse the features"
    assert any("reused" in c.value for c in at.main.caption)
    assert [c.value.split(" ·")[0] for c in at.main.caption if c.value.startswith("Beam width")] == \
        ["Beam width 2", "Beam width 8", "Beam width 10"]
    # each width shows its best alternatives and their log-probabilities
    tables = at.main.table
    assert len(tables) == 3
    assert all(list(t.value.columns) == ["caption", "log p", "score"] for t in tables)
    assert len(tables[-1].value) == 3
    assert all(float(x) < 0 for x in tables[-1].value["log p"])


@integration
def test_example_photo(app_env, trained_dir):
    at = new_app().run()
    at.radio(key="source").set_value("Example photo").run()
    at.selectbox(key="example").set_value("Rocket launch").run()
    assert_no_exception(at)
    captions = beam_captions(at)
    assert len(captions) == 3
    for caption in captions:
        assert_plausible_caption(caption, model_vocabulary(trained_dir))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb's signature)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


BAD_UPLOADS = {
    "not an image": ("notes.jpg", b"these are not the pixels you are looking for", "not an image"),
    "empty": ("empty.png", b"", "empty"),
    "truncated": ("cut.png", photo_png("coffee")[:5000], "truncated"),
    "oversized": ("huge.png", b"\x89PNG" + b"\0" * (21 * 1024 * 1024), "limit"),
    "decompression bomb": ("bomb.png", _png_claiming(30000, 30000), "too large"),
    "markdown in the name": ("[click](http://example.com).png", b"junk", "not an image"),
}


@integration
def test_bad_uploads_show_an_error_and_the_session_recovers(app_env):
    at = new_app().run()
    for label, (name, data, expected) in BAD_UPLOADS.items():
        at.file_uploader(key="upload").set_value((name, data, "image/png")).run()
        assert_no_exception(at)
        errors = [e.value for e in at.main.error]
        assert len(errors) == 1 and expected in errors[0], (label, errors)
        assert "](" not in errors[0], "file names must not reach Markdown as links"
        assert not beam_captions(at)
    at.file_uploader(key="upload").set_value(("cat.png", photo_png("chelsea"), "image/png")).run()
    assert_no_exception(at)
    assert not at.main.error
    assert len(beam_captions(at)) == 3


# -- dataset page --------------------------------------------------------------------------
def _count(at: AppTest) -> int:
    line = next(c.value for c in at.main.caption if "photos match" in c.value)
    return int(line.split()[0].replace(",", ""))


def _grid_captions(at: AppTest) -> list[str]:
    return [t.value for t in at.main.text if t.value.startswith("• ")]


@integration
def test_dataset_search_split_and_details(app_env):
    at = new_app().run()
    at.switch_page("pages/dataset.py").run()
    assert_no_exception(at)
    total = _count(at)
    assert total == 8000
    assert len(at.tabs[0].image) == 12  # one page of thumbnails in the Browse tab

    at.text_input(key="query").set_value("Red SHIRT").run()
    assert_no_exception(at)
    found = _count(at)
    assert 0 < found < total
    for block in _grid_captions(at):  # every photo shown has a caption with the phrase
        assert "red shirt" in block.lower(), block

    at.selectbox(key="split").set_value("test").run()
    in_test = _count(at)
    assert 0 < in_test < found
    assert at.number_input(key="page").value == 1

    opens = [b for b in at.main.button if (b.key or "").startswith("open-")]
    assert len(opens) == min(12, in_test)
    opens[0].click().run()
    assert_no_exception(at)
    references = [t.value for t in at.main.text if t.value.startswith("1. ")]
    assert len(references) == 1 and "red shirt" in references[0].lower()
    # the test split is the one with human ratings in the original release
    headings = " ".join(m.value for m in at.main.markdown)
    assert "Expert ratings" in headings or "Crowd judgements" in headings
    assert any("written for" in t.value.columns for t in at.main.dataframe)

    at.button(key="caption-selected").click().run()
    assert_no_exception(at)
    assert any(m.value == "**The model's caption**" for m in at.main.markdown)

    at.button(key="close-photo").click().run()
    assert not any(t.value.startswith("1. ") for t in at.main.text)


@integration
def test_dataset_statistics(app_env):
    at = new_app().run()
    at.switch_page("pages/dataset.py").run()
    assert_no_exception(at)
    assert [m.value for m in at.main.metric][:2] == ["8,000", "40,000"]
    assert len(at.main.get("vega_lite_chart")) == 4
    at.toggle(key="content_words").set_value(False).run()
    assert_no_exception(at)


@integration
def test_dataset_page_without_dataset_says_how_to_get_it(monkeypatch, tmp_path, trained_dir):
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(trained_dir))
    monkeypatch.setenv("CAPTIONER_DATA_DIR", str(tmp_path / "nowhere"))
    at = new_app().run()
    at.switch_page("pages/dataset.py").run()
    assert_no_exception(at)
    assert at.main.warning and any("does not exist" in t.value for t in at.main.text)
    assert any("Kaggle" in m.value and "captions.txt" in m.value for m in at.main.markdown)
    saved = at.main.dataframe[0].value  # what training recorded about its data
    assert "vocabulary size" in saved.index


# -- training page and navigation ----------------------------------------------------------
@integration
def test_training_page(app_env, monkeypatch):
    from conftest import TRAINED, trained_models
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(TRAINED))  # every committed model, as users see it
    at = new_app().run()
    at.switch_page("pages/training.py").run()
    assert_no_exception(at)
    # "Training now" comes first while a run is training in this checkout (the live view)
    assert [h.value for h in at.main.header if h.value != "Training now"] == [
        "Learning curves", "Test scores by beam width", "Hyperparameters", "Provenance"]
    assert len(at.main.get("vega_lite_chart")) >= 2
    names = list(trained_models())
    assert [s.value for s in at.main.subheader if s.value in names] == names  # one scores column each
    scores = at.main.dataframe[1].value
    assert "beam 3" in scores.index and {"BLEU-4", "CIDEr"} <= set(scores.columns)
    provenance = at.main.dataframe[-1].value
    assert list(provenance.columns) == names and "decoder parameters" in provenance.index
    if "ensemble" in names:  # made from the others, not trained: no curves, its mix instead
        assert provenance["ensemble"]["members"].startswith("attention 0.")
        assert any("not trained itself" in c.value for c in at.main.caption)
        assert any(m.value.startswith("**Mix search, ensemble**") for m in at.main.markdown)


@integration
def test_switching_pages(app_env):
    at = new_app().run()
    assert_no_exception(at)
    # AppTest (Streamlit 1.67) drops the router's sidebar elements after switch_page, though
    # a browser shows them on every page (test_app_browser.py checks that), so the shared
    # sidebar is checked on the first page only.
    assert [s.value for s in at.sidebar.subheader] == ["Model in use"]
    assert len(at.sidebar.metric) == 2
    titles = []
    for page in ["pages/dataset.py", "pages/training.py", "pages/caption.py"]:
        at.switch_page(page).run()
        assert_no_exception(at)
        titles.append(at.main.title[0].value)
    assert titles == ["Flickr8k dataset", "Training", "Caption a photo"]
