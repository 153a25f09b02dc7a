"""The caption page's explanations and the many-photos page, driven with streamlit.testing.

The committed merge model is the real one; the attention model is a tiny untrained one made
here (its captions are nonsense, but its attention maps have the real shape, which is what
the page draws). Needs trained/, Flickr8k and the Xception weights: skipped without them on
a developer machine, a failure in CI.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from app_fixtures import APP, beam_captions, models_with_attention, photo_png
from conftest import ROOT, TRAINED, require

TIMEOUT = 180
pytestmark = pytest.mark.integration
FAMILIARITY = ROOT / "trained" / "training_photos.h5"
# the models the app shows: merge and attention, and the ensemble of the two if committed
TRAINED_NAMES = ["merge", "attention"] + (["ensemble"] if (TRAINED / "ensemble" / "manifest.json").is_file() else [])


@pytest.fixture(scope="module")
def model_root(tmp_path_factory, trained_dir):
    """trained/ with the real merge model, a tiny attention model and the real centroids."""
    require(FAMILIARITY, "trained/training_photos.h5 (python -m captioner index-dataset)")
    return models_with_attention(tmp_path_factory.mktemp("models") / "trained", trained_dir)


@pytest.fixture()
def app_env(monkeypatch, model_root, shared_data):
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(model_root))
    monkeypatch.setenv("CAPTIONER_DATA_DIR", str(shared_data))
    return model_root


def new_app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=TIMEOUT)


def assert_no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def uploaded(at: AppTest, name: str, data: bytes) -> AppTest:
    at.file_uploader(key="upload").upload(name, data, "image/png").run()
    assert_no_exception(at)
    return at


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def box_captions(at: AppTest) -> list[str]:
    return [c.value for c in at.main.caption if "eam width" in c.value]


def word_tables(at: AppTest) -> list:
    return [d.value for d in at.main.dataframe if "probability" in d.value.columns]


def graphviz(at: AppTest) -> list[str]:
    return [el.proto.spec for el in at.get("graphviz_chart")]


def test_model_choice_side_by_side_on_one_encoding(app_env):
    at = uploaded(new_app().run(), "cat.png", photo_png("chelsea"))
    model = at.radio(key="model")
    order = model.options[:-1]  # the best model by test CIDEr first, and chosen
    together = {2: "Both side by side", 3: "All side by side"}[len(order)]
    assert sorted(order) == sorted(TRAINED_NAMES) and model.options[-1] == together
    assert model.value == order[0]
    assert [c.split(" ·")[0] for c in box_captions(at)] == ["Beam width 1", "Beam width 3", "Beam width 5"]
    first_captions = beam_captions(at)

    model.set_value(together).run()
    assert_no_exception(at)
    labels = [c.split(" · decoded")[0] for c in box_captions(at)]
    assert labels == [f"{m} · beam width {b}" for b in (1, 3, 5) for m in order]
    # same photo, same captions
    assert beam_captions(at)[::len(order)] == first_captions
    assert at.session_state["encoder_runs"] == 1, "every model must read one encoding"
    # both attending models draw their maps, each with its own controls
    headers = [h.value for h in at.main.header]
    assert "Where the attention model looked" in headers
    if "ensemble" in order:
        assert "Where the attention model looked, in the ensemble" in headers

    at.radio(key="model").set_value(order[1]).run()
    assert_no_exception(at)
    assert len(box_captions(at)) == 3 and at.session_state["encoder_runs"] == 1


def test_per_word_confidence(app_env):
    at = uploaded(new_app().run(), "cat.png", photo_png("chelsea"))
    tables = word_tables(at)
    assert len(tables) == 3  # one per beam width
    for table, caption in zip(tables, beam_captions(at)):
        assert list(table["word"]) == caption.split() + ["<end>"]
        assert ((table["probability"] > 0) & (table["probability"] <= 1)).all()
    assert any(c.value.startswith("Least sure of") for c in at.main.caption)


def test_attention_grid_and_a_word_shown_large(app_env):
    at = uploaded(new_app().run(), "cat.png", photo_png("chelsea"))
    at.radio(key="model").set_value("merge").run()
    assert "Where the attention model looked" not in [h.value for h in at.main.header]
    at.radio(key="model").set_value("attention").run()
    assert_no_exception(at)
    assert "Where the attention model looked" in [h.value for h in at.main.header]
    assert at.selectbox(key="attention_beam_attention").value == 3
    at.selectbox(key="attention_beam_attention").set_value(1).run()
    assert_no_exception(at)
    images_before = len(at.main.image)
    table = word_tables(at)[0]  # beam width 1's caption, as the figure now shows
    assert "from the photo" in table.columns  # the sentinel share, per word
    slider = at.select_slider(key="attention_word_attention")
    assert len(slider.options) == len(table)  # one per word and the end token
    assert slider.options[0] == f"1. {table['word'][0]}"
    slider.set_value(1).run()
    assert_no_exception(at)
    assert len(at.main.image) == images_before  # the grid and the large word, redrawn


@pytest.fixture()
def deltas(monkeypatch) -> list[list]:
    """Each run's deltas, in the order the browser receives them (AppTest keeps only the tree)."""
    from streamlit.testing.v1 import local_script_runner
    parse, runs = local_script_runner.parse_tree_from_messages, []

    def recording(messages):
        runs.append([m for m in messages if m.HasField("delta")])
        return parse(messages)
    monkeypatch.setattr(local_script_runner, "parse_tree_from_messages", recording)
    return runs


class Screen:
    """The "Beam width" boxes a browser shows, replayed from the deltas as its frontend applies
    them (Streamlit 1.67): an element stays on screen, greyed once stale, until the running
    script writes its position or replaces a container above it; a container written where
    one of its type stood keeps the old children; what is still stale when the run ends goes."""

    def __init__(self):
        self.boxes: dict[tuple, str] = {}     # delta path -> widget key
        self.blocks: dict[tuple, str] = {}    # delta path -> container type

    def _drop_below(self, path: tuple, inclusive: bool) -> None:
        for shown in (self.boxes, self.blocks):
            for p in [p for p in shown if p[:len(path)] == path and (inclusive or p != path)]:
                del shown[p]

    def run(self, messages) -> list[str]:
        """Apply one run; what was on screen beside each new box as its figure drew (the
        figure is computed just after its box is sent)."""
        from streamlit.runtime.state.common import user_key_from_element_id
        writes = [(tuple(m.metadata.delta_path), m.delta) for m in messages
                  if m.delta.WhichOneof("type") in ("new_element", "add_block")]
        boxes = [(path, user_key_from_element_id(d.new_element.selectbox.id)) for path, d in writes
                 if d.WhichOneof("type") == "new_element" and d.new_element.WhichOneof("type") == "selectbox"
                 and d.new_element.selectbox.label == "Beam width"]
        written, problems = set(), []
        for path, delta in writes:
            written.add(path)
            if delta.WhichOneof("type") == "add_block":
                kind = delta.add_block.WhichOneof("type")
                self.boxes.pop(path, None)
                if self.blocks.get(path) != kind:
                    self._drop_below(path, inclusive=False)
                self.blocks[path] = kind
                continue
            self._drop_below(path, inclusive=True)
            if (path, key := next((k for p, k in boxes if p == path), None)) not in boxes:
                continue
            self.boxes[path] = key
            to_come = [box for box in boxes if box[0] not in written]
            for stale_path, stale_key in self.boxes.items():
                # a stale box where the same control is about to be redrawn is that control
                if stale_path not in written and (stale_path, stale_key) not in to_come:
                    problems.append(f"while the figure under {path} draws, {stale_key} of the last "
                                    f"run is still on screen at {stale_path}")
        self.boxes = {p: k for p, k in self.boxes.items() if p in written}
        self.blocks = {p: k for p, k in self.blocks.items() if p in written}
        return problems


def test_one_beam_width_box_per_figure_while_it_redraws(app_env, deltas):
    """Changing model, widths or the figure's own width must never leave a second "Beam
    width" box on screen while the attention maps redraw (issue 22)."""
    at = uploaded(new_app().run(), "cat.png", photo_png("chelsea"))
    screen = Screen()
    for run in deltas:
        screen.run(run)
    together = at.radio(key="model").options[-1]
    steps = [("model", "attention"), ("model", together), ("model", "attention")]
    if "ensemble" in TRAINED_NAMES:
        steps += [("model", "ensemble"), ("model", "attention"), ("model", "ensemble")]
    steps += [("beams", [1, 3, 5, 10]), ("beams", [1, 3]), ("attention_beam", 1), ("model", together),
              ("beams", [1, 3, 5]), ("model", "attention")]
    lingering = []
    for widget, value in steps:
        if widget == "model":
            at.radio(key="model").set_value(value).run()
        elif widget == "beams":
            at.multiselect(key="beams").set_value(value).run()
        else:
            at.selectbox(key=f"attention_beam_{at.radio(key='model').value}").set_value(value).run()
        assert_no_exception(at)
        lingering += [f"{widget}={value}: {problem}" for problem in screen.run(deltas[-1])]
        # and once drawn, one box per figure
        figures = [h.value for h in at.main.header if h.value.startswith("Where the")]
        assert len(screen.boxes) == len(set(screen.boxes.values())) == len(figures) >= 1, (widget, value)
    assert not lingering, lingering


def test_beam_search_trees_side_by_side(app_env):
    at = uploaded(new_app().run(), "cat.png", photo_png("chelsea"))
    trees = graphviz(at)
    assert len(trees) == 2  # the narrowest and widest chosen widths: 1 and 5
    assert "Beam width 1:" in trees[0] and "Beam width 5:" in trees[1]
    assert all("#d62728" in tree for tree in trees)  # the winning path
    best = beam_captions(at)
    assert f"Beam width 5: {best[2]}" in trees[1]

    at.multiselect(key="tree_beams").set_value([10]).run()
    at.toggle(key="tree_pruned").set_value(False).run()
    assert_no_exception(at)
    (tree,) = graphviz(at)
    assert "Beam width 10:" in tree and "pruned" not in tree
    assert at.session_state["encoder_runs"] == 1


def private_cache(tmp_path, monkeypatch):
    """A cache of the test's own for the app (CAPTIONER_CACHE_DIR), holding only the real
    encoder weights: no nearest-photo index unless the test writes one there."""
    from captioner.vision.encoder import WEIGHTS_FILENAME, cached_weights_path
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WEIGHTS_FILENAME).symlink_to(cached_weights_path())
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(cache))
    return cache


@pytest.fixture()
def small_neighbour_index(monkeypatch, tmp_path, encoder, shared_data):
    """A nearest-photo index of a few training photos in a cache of the test's own: the real
    one (`index-dataset`, 6,000 photos) is built from training's feature cache, which a fresh
    machine does not have, and a test must not depend on what a developer left there."""
    from captioner.data.dataset import load_flickr8k
    from captioner.vision.encoder import pool
    from captioner.data.images import load_image, prepare_for_encoder
    from captioner.explain.neighbours import NeighbourIndex, index_path
    dataset = load_flickr8k(shared_data)
    names = dataset.images("train")[:8]
    maps = encoder.feature_maps(np.stack([prepare_for_encoder(load_image(dataset.image_path(n)))
                                          for n in names]))
    cache = private_cache(tmp_path, monkeypatch)
    NeighbourIndex.from_vectors(names, pool(maps)).save(
        index_path(encoder.checksum, cache / "dataset-index"))
    return names


def test_unlike_the_training_photos_warning(app_env, shared_data, small_neighbour_index):
    at = new_app().run()
    at.radio(key="source").set_value("Example photo").run()
    at.selectbox(key="example").set_value("Cat").run()
    assert_no_exception(at)
    # one of the trust estimate's signals, said under the photo; the captions' verdicts say the rest
    unlike = lambda: any("Similarity to the training photos" in c.value and "(unlike them)" in c.value
                         for c in at.main.caption)
    assert unlike() and not at.main.warning

    at.radio(key="source").set_value("Upload a photo").run()
    uploaded(at, "red.png", png(Image.new("RGB", (300, 200), (200, 30, 30))))
    assert unlike()
    assert any("Likely wrong" in m.value for m in at.main.markdown)  # every box: one colour is no photo
    assert any("the photo is unlike the training photos" in c.value for c in at.main.caption)

    from captioner.data.dataset import load_flickr8k
    dataset = load_flickr8k(shared_data)
    for name in dataset.images("test")[:3]:
        uploaded(at, name, dataset.image_path(name).read_bytes())
        assert not at.main.warning, name
        assert not unlike() and any(c.value.startswith("Similarity to the training photos") for c in at.main.caption)
    # with Flickr8k and the index: the nearest training photos and their captions
    assert any(c.value.startswith("similarity ") for c in at.main.caption)
    assert any(t.value.startswith("• ") for t in at.main.text)


def test_without_the_index_the_page_still_warns_and_says_how_to_build_it(app_env, monkeypatch,
                                                                         tmp_path):
    private_cache(tmp_path, monkeypatch)   # the weights, but no nearest-photo index
    at = uploaded(new_app().run(), "cat.png", photo_png("chelsea"))
    assert_no_exception(at)
    assert any("(unlike them)" in c.value for c in at.main.caption)
    assert any("index-dataset" in i.value for i in at.main.info)
    assert not any(c.value.startswith("similarity ") for c in at.main.caption)
    # the page says which trust estimate read the captions (with the nearest photos' captions
    # or without: the server's Captioner, cached, decided when it loaded)
    assert any(c.value.startswith("Trust: Read with") for c in at.main.caption)


def test_without_the_centroids_the_page_says_how_to_get_them(monkeypatch, tmp_path, trained_dir,
                                                           shared_data):
    root = tmp_path / "trained"
    root.mkdir()
    (root / "merge").symlink_to(TRAINED / "merge")
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(root))
    at = uploaded(new_app().run(), "cat.png", photo_png("chelsea"))
    # the trust estimate reads the centroids too: the page says it has none, and why
    assert [w.value for w in at.main.warning if "No trust estimate for the merge model" not in w.value] == []
    assert any("training_photos.h5" in w.value for w in at.main.warning)
    assert any("index-dataset" in c.value for c in at.main.caption)
    assert at.radio(key="model").options == ["merge"]


def test_many_photos_with_a_bad_file_among_good_ones(app_env):
    at = new_app().run()
    at.switch_page("pages/many.py").run()
    assert_no_exception(at)
    files = [("cat.png", photo_png("chelsea"), "image/png"),
             ("notes.jpg", b"not a photo at all", "image/jpeg"),
             ("coffee.png", photo_png("coffee"), "image/png")]
    at.file_uploader(key="uploads").set_value(files).run()
    assert_no_exception(at)
    table = at.main.dataframe[0].value
    assert list(table["file"]) == ["cat.png", "notes.jpg", "coffee.png"]
    assert table["error"][1].startswith("notes.jpg: not an image")
    assert table["caption"][0] and table["caption"][2] and not table["caption"][1]
    assert table["photo"][0].startswith("data:image/jpeg;base64,") and not isinstance(table["photo"][1], str)
    assert table["like the training photos"][0] == table["like the training photos"][2] == "no"
    assert any("2 captioned, 1 could not be read" in c.value for c in at.main.caption)
    assert len(at.get("download_button")) == 2

    at.selectbox(key="many_model").set_value("attention").run()  # the other model, same files
    assert_no_exception(at)
    assert list(at.main.dataframe[0].value["file"]) == ["cat.png", "notes.jpg", "coffee.png"]


def test_many_photos_keeps_names_as_uploaded_and_caps_how_many(app_env, monkeypatch):
    from app import support
    monkeypatch.setattr(support, "MAX_PHOTOS", 2)
    at = new_app().run()
    at.switch_page("pages/many.py").run()
    files = [("IMG 1 (1).png", photo_png("chelsea"), "image/png"),
             ("café.png", photo_png("coffee"), "image/png"),
             ("third.png", photo_png("coffee"), "image/png")]
    at.file_uploader(key="uploads").set_value(files).run()
    assert_no_exception(at)
    assert list(at.main.dataframe[0].value["file"]) == ["IMG 1 (1).png", "café.png"]
    assert any("3 photos chosen: the first 2 are captioned" in w.value for w in at.main.warning)
