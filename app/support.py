"""What the web app's pages share: the cached model, dataset index, thumbnails and photos.

Streamlit re-runs a page script on every interaction, so anything slow lives here behind
a cache: the Captioner loads once per server process (`st.cache_resource`), the dataset
is indexed once per directory, thumbnails are made lazily and kept in memory only
(`st.cache_data`), and each session keeps the features of its photos by content hash so
that changing beam widths never runs the encoder again. The `captioner` library itself
knows nothing about Streamlit.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from PIL import Image

from captioner import Captioner, ImageError
from captioner.data.annotations import Annotations, load_annotations
from captioner.model_dirs.artifacts import ArtifactError
from captioner.model_dirs.catalog import read_records
from captioner.data.dataset import DatasetError, Flickr8k, load_flickr8k
from captioner.data.stats import build_search_index, summary
from captioner.data.images import load_image
from captioner.evaluation.insights import load_photo_scores, missed_words, model_vocabulary
from captioner.evaluation.phrases import compare_phrases
from captioner.model_dirs.ensemble_dir import is_ensemble, stale_members

REPO = Path(__file__).resolve().parent.parent   # the checkout: app/ sits in it
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "avif", "heic", "heif"]
UPLOAD_LABEL = "JPEG, PNG, WebP, BMP, GIF, TIFF, AVIF or HEIC, up to 20 MB"
MAX_PHOTOS = 50   # the Many photos page: a batch of uploads is held in memory, up to 20 MB each
BEAM_CHOICES = [1, 2, 3, 5, 8, 10]
DEFAULT_BEAMS = [1, 3, 5]
TOP_ALTERNATIVES = 3
PHOTO_CACHE_SIZE = 8          # photos whose features one session keeps
FIX_MODEL = ("Train one with `make train` (it writes `trained/`), or set "
             "`CAPTIONER_MODEL_DIR` to a trained model directory, then reload this page.")

# Example photos from scikit-image's bundled data (public domain or CC0; see
# skimage/data/README.txt). Never Flickr8k photos: those may not ship with the project.
# Ordered by how close each is to Flickr8k's people-and-dogs photos: the model has hardly
# seen a cat, and says so (a close-up of Chelsea becomes "a bird ... in front of a crocodile").
EXAMPLES = {
    "Man with a camera": "camera",
    "Motorcycle": "motorcycle",
    "Rocket launch": "rocket",
    "Astronaut": "astronaut",
    "Cup of coffee": "coffee",
    "Cat": "chelsea",
}


# -- the model -------------------------------------------------------------------------
def model_dir() -> Path:
    """$CAPTIONER_MODEL_DIR, or the checkout's trained/ (the installed package's copy)."""
    from captioner.model_dirs.catalog import default_model_root
    return default_model_root()


def _model_stamp(directory: Path) -> tuple:
    """Changes when training swaps in a new model, so the cache reloads it."""
    from captioner.model_dirs.catalog import available_models
    stamp = []
    for name, path in sorted(available_models(directory).items()):
        try:
            stat = (path / "manifest.json").stat()
            stamp.append((name, stat.st_mtime_ns, stat.st_size))
        except OSError:
            pass
    return tuple(stamp)


@st.cache_resource(show_spinner="Loading the caption model…", max_entries=1)
def _load_captioner(directory: str, stamp: tuple) -> Captioner:
    # Flickr8k's captions sharpen the trust estimate where the dataset and its index are here
    return Captioner.load(directory, data_dir=default_data_dir())


def load_captioner() -> tuple[Captioner | None, str | None]:
    """(captioner, None), or (None, why it cannot be loaded). Failures are not cached,
    so the app picks the model up as soon as training has written it."""
    directory = model_dir()
    try:
        return _load_captioner(str(directory), _model_stamp(directory)), None
    except Exception as exc:  # ArtifactError, or a Keras error on a damaged file
        return None, str(exc) or type(exc).__name__


def show_model_error(message: str) -> None:
    st.error(f"**The caption model could not be loaded.** {FIX_MODEL}", icon="🚫")
    st.text(message)  # paths and library messages, shown verbatim rather than as Markdown


def require_captioner() -> Captioner:
    """The shared Captioner; otherwise explain how to fix trained/ and stop the page."""
    captioner, error = load_captioner()
    if captioner is None:
        show_model_error(error)
        st.stop()
    return captioner


_others_stamp: dict[str, tuple] = {}  # per model directory, the stamp _load_other's entries are of


@st.cache_resource(show_spinner="Loading the other caption model…", max_entries=4)
def _load_other(directory: str, stamp: tuple, name: str) -> Captioner:
    # The same encoder as the default model's, so one encoder pass serves both, wherever the
    # default's encoding holds this model's exit flow (issue 24: a frozen model reads the
    # ImageNet view every encoding has).
    default = _load_captioner(directory, stamp)
    other = (Captioner(default.members[name], data_dir=default.data_dir) if name in default.members  # loaded already
             else Captioner.load(directory, name=name, data_dir=default.data_dir))
    if {f.sha256 for f in other.flows} <= {f.sha256 for f in default.flows}:
        other = Captioner(other.trained, encoder=default.encoder, data_dir=default.data_dir, flows=default.flows)
    return other


def load_captioners() -> tuple[dict[str, Captioner], list[str]]:
    """Every model in trained/, the default (best test CIDEr) first, and why any other could
    not be loaded. Call after require_encoder(): the others reuse its Xception."""
    from captioner.model_dirs.catalog import available_models
    directory = model_dir()
    stamp = _model_stamp(directory)
    if _others_stamp.setdefault(str(directory), stamp) != stamp:
        # Retrained: the old models (and the old default's Xception they share) are let go now,
        # not when four newer entries have pushed them out of the cache.
        _load_other.clear()
        _others_stamp[str(directory)] = stamp
    default = _load_captioner(str(directory), stamp)
    models, errors = {default.name: default}, []
    for name in available_models(directory):
        if name not in models:
            try:
                models[name] = _load_other(str(directory), stamp, name)
            except Exception as exc:  # a damaged second model must not hide the first
                errors.append(f"{name}: {exc}")
    return models, errors


@st.cache_resource(show_spinner=False, max_entries=2)
def _familiarity(path: str, mtime: int):
    from captioner.explain.familiarity import Familiarity
    return Familiarity.load(path)


def familiarity(encoder_checksum: str | None = None):
    """The training photos' centroids and threshold (trained/training_photos.h5), or None; None
    too when they were made from other Xception weights than `encoder_checksum` (a model's
    ImageNet trunk), whose maps they cannot be compared with."""
    from captioner.explain.familiarity import find
    path = find(model_dir())
    if path is None:
        return None
    try:
        found = _familiarity(str(path), path.stat().st_mtime_ns)
    except Exception:  # a damaged file costs the warning, not the page
        logging.getLogger(__name__).exception("Cannot read %s", path)
        return None
    if encoder_checksum and found.encoder_checksum != encoder_checksum:
        logging.getLogger(__name__).warning("%s: centroids of other Xception weights (%s, not %s); run "
                                            "`make index`", path, found.encoder_checksum[:12], encoder_checksum[:12])
        return None
    return found


@st.cache_resource(show_spinner="Loading the nearest-photo index…", max_entries=1)
def _neighbours(path: str, mtime: int):
    from captioner.explain.neighbours import NeighbourIndex
    return NeighbourIndex.shared(Path(path))   # the same arrays as the trust estimate's consensus


def neighbour_index(encoder_checksum: str):
    """The training photos' index in the cache (built by `index-dataset`), or None."""
    from captioner.explain.neighbours import index_path
    path = index_path(encoder_checksum)
    if not path.is_file():
        return None
    try:
        return _neighbours(str(path), path.stat().st_mtime_ns)
    except Exception:
        logging.getLogger(__name__).exception("Cannot read %s", path)
        return None


@st.cache_resource(show_spinner="Loading the Xception image encoder (once per server)…", max_entries=1)
def _encoder_error(directory: str, stamp: tuple) -> str | None:
    """Build and verify the encoder: None when it is usable, else why it is not.

    This runs inside a script run, before any page draws, and not in a background thread:
    Streamlit calls keras.backend.clear_session() whenever a script run ends, which resets
    Keras' layer naming for every thread, so a model being built elsewhere at that moment
    fails ('The name "conv2d" is used 2 times'). While this computes, every other
    session's run waits at this call (st.cache_resource computes a value once), so no run
    can end mid-build; the retry covers a run that had already passed this point.
    """
    captioner = _load_captioner(directory, stamp)
    for attempt in range(3):
        try:
            captioner.check_encoder()
            captioner.encoder.warm_up()  # the first upload then shows a real encoding time
            return None
        except ValueError:  # Keras' duplicate-name error, see above
            if attempt == 2:
                raise
        except Exception as exc:  # EncoderWeightsError, or weights unlike training's
            logging.getLogger(__name__).exception("The image encoder failed to load")
            return str(exc) or type(exc).__name__


def encoder_error() -> str | None:
    """None if the encoder is ready (building it on first use), else the reason it is not."""
    directory = model_dir()
    try:
        return _encoder_error(str(directory), _model_stamp(directory))
    except Exception as exc:
        return str(exc) or type(exc).__name__


def show_encoder_error(message: str) -> None:
    st.error("**The image encoder is not available.** Run `make setup` (or "
             "`python -m captioner fetch-weights`) and restart the app.", icon="🚫")
    st.text(message)


def require_encoder() -> None:
    """Stop the page with an explanation if photos cannot be encoded."""
    error = encoder_error()
    if error:
        show_encoder_error(error)
        st.stop()


# -- what training recorded, for every model ------------------------------------------------
def models() -> dict[str, Path]:
    from captioner.model_dirs.catalog import available_models
    return available_models(model_dir())


@st.cache_data(show_spinner=False, max_entries=4)
def _records(directory: str, stamp: tuple) -> dict:
    return read_records(directory)


def model_records() -> tuple[dict[str, dict], dict[str, str]]:
    """({name: history, metrics, manifest, config}, {name: why it cannot be read}), from the
    JSON files alone: the Training page needs no Keras model."""
    records, errors = {}, {}
    stamp = _model_stamp(model_dir())
    for name, directory in models().items():
        try:
            records[name] = _records(str(directory), stamp)
        except ArtifactError as exc:
            errors[name] = str(exc)
    return records, errors


@st.cache_data(show_spinner="Reading each test photo's scores…", max_entries=4)
def _photo_scores(directory: str, stamp: tuple) -> dict | None:
    return load_photo_scores(directory)


def photo_scores() -> tuple[dict[str, dict], list[str]]:
    """({model: {image: caption and scores}}, [models evaluated before per-photo scores])."""
    scored, unscored = {}, []
    stamp = _model_stamp(model_dir())
    for name, directory in models().items():
        if is_ensemble(directory) and stale_members(directory):
            continue  # its captions are of member weights that are gone
        try:
            scores = _photo_scores(str(directory), stamp)
        except ArtifactError as exc:
            logging.getLogger(__name__).warning("%s", exc)
            scores = None
        if scores:
            scored[name] = scores
        else:
            unscored.append(name)
    return scored, unscored


@st.cache_data(show_spinner="Counting phrases…", max_entries=16)
def phrase_table(root: str, model: str, n: int, stamp: tuple) -> dict:
    captions = _flickr8k(_resolved(root)).captions
    scores = photo_scores()[0][model]
    return compare_phrases([c for image in scores for c in captions.get(image, ())],
                           [row["caption"] for row in scores.values()], n)


@st.cache_data(show_spinner=False, max_entries=8)
def missed_word_table(root: str, model: str, stamp: tuple) -> list[dict]:
    captions = _flickr8k(_resolved(root)).captions
    scores = photo_scores()[0][model]
    return missed_words([c for image in scores for c in captions.get(image, ())],
                        [row["caption"] for row in scores.values()], model_vocabulary(models()[model]))


def model_stamp() -> tuple:
    return _model_stamp(model_dir())


# -- photos ----------------------------------------------------------------------------
def safe_label(filename: str | None, default: str = "The photo") -> str:
    """A file name reduced to characters that cannot form Markdown links or markup, since
    error messages naming it are shown with st.error."""
    cleaned = re.sub(r"[^A-Za-z0-9 ._-]", "", filename or "").strip()[:60]
    return cleaned or default


def preview_jpeg(img: Image.Image, size: int = 640) -> bytes:
    img = img.copy()
    img.thumbnail((size, size), Image.LANCZOS)
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=88)
    return buffer.getvalue()


def encode_photo(captioner: Captioner, data: bytes, filename: str | None = None) -> dict:
    """Features of a photo, computed once per session per distinct file content.

    Returns {"features", "encode_ms", "preview" (JPEG bytes), "size", "key" (sha1), "reused"}; raises
    ImageError (one sentence for the user) for anything that is not a usable image.
    """
    key = hashlib.sha1(data).hexdigest()
    # Per encoder too: a model with its own exit flow (issue 24) reads maps of its own.
    slot = f"{key}:{captioner.encoder.checksum}"
    cache = st.session_state.setdefault("photo_features", {})
    if slot in cache:
        cache[slot] = cache.pop(slot)  # most recently used last
        return dict(cache[slot], reused=True)
    img = load_image(data, safe_label(filename))
    started = time.perf_counter()
    features = captioner.features(img)
    encode_ms = (time.perf_counter() - started) * 1000
    # Tests read this counter to check that changing beam widths does not re-encode.
    st.session_state["encoder_runs"] = st.session_state.get("encoder_runs", 0) + 1
    cache[slot] = {"features": features, "encode_ms": encode_ms, "preview": preview_jpeg(img),
                   "size": img.info.get("source_size", img.size), "key": key}
    while len(cache) > PHOTO_CACHE_SIZE:
        cache.pop(next(iter(cache)))
    return dict(cache[slot], reused=False)


def timed_captions(captioner: Captioner, features, beam: int, top: int = TOP_ALTERNATIVES):
    """(the `top` captions at this beam width, decoding time in ms). Not cached: it takes
    milliseconds, and the timing is part of what the page shows."""
    started = time.perf_counter()
    # attention=True only matters for the attention model: per-word weights for the page.
    captions = captioner.caption(features, beam=beam, top=top, attention=True)
    return captions, (time.perf_counter() - started) * 1000


@st.cache_data(show_spinner=False)
def example_photo(key: str) -> bytes:
    """PNG bytes of a scikit-image sample photo (kept lossless, like an upload)."""
    import skimage.data
    if key == "motorcycle":
        array = skimage.data.stereo_motorcycle()[0]
    else:
        array = getattr(skimage.data, key)()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def examples_available() -> bool:
    try:
        import skimage.data  # noqa: F401
    except ImportError:
        return False
    return True


# -- the dataset -----------------------------------------------------------------------
def default_data_dir() -> str:
    if os.environ.get("CAPTIONER_DATA_DIR"):
        return os.environ["CAPTIONER_DATA_DIR"]
    shared = REPO.parent / "shared" / "flickr8k"
    return str(shared) if shared.is_dir() else ""


def data_dir_locked() -> bool:
    """For a public deployment: CAPTIONER_DATA_DIR_LOCKED=1 hides the sidebar's "Dataset
    directory" box, so visitors cannot make the server read a directory of their choosing."""
    return os.environ.get("CAPTIONER_DATA_DIR_LOCKED", "").strip().lower() in ("1", "true", "yes")


def dataset_root() -> str:
    """The dataset directory: fixed by the server when locked, else the sidebar's box."""
    if data_dir_locked():
        return default_data_dir()
    # A widget drawn on one page forgets its value when the visitor goes to another: kept
    # here too, so coming back to the Dataset page finds the directory they typed.
    chosen = st.session_state.setdefault("data_dir_chosen", default_data_dir())
    root = st.sidebar.text_input("Dataset directory", value=chosen, key="data_dir",
                                 help="Flickr8k in either layout; defaults to $CAPTIONER_DATA_DIR.")
    st.session_state["data_dir_chosen"] = root
    return root


@dataclass
class DatasetIndex:
    dataset: Flickr8k
    annotations: Annotations
    search: dict[str, str]    # image -> normalised captions, for captioner.data.stats.search_captions


@st.cache_resource(show_spinner="Reading the dataset…", max_entries=2)
def _flickr8k(root: str) -> Flickr8k:
    return load_flickr8k(root)


@st.cache_resource(show_spinner="Indexing the dataset…", max_entries=2)
def _dataset_index(root: str) -> DatasetIndex:
    dataset = _flickr8k(root)
    return DatasetIndex(dataset, load_annotations(dataset.text_dir),
                        build_search_index(dataset.captions))


def _resolved(root: str) -> str:
    return str(Path(root.strip()).expanduser().resolve())


def flickr8k(root: str) -> tuple[Flickr8k | None, str | None]:
    """The dataset alone (14 MB), for the caption page's nearest photos; `dataset_index` adds
    the people's judgements and the search index (20 MB more) that only the dataset page reads."""
    if not root.strip():
        return None, "No dataset directory is set."
    try:
        return _flickr8k(_resolved(root)), None
    except (DatasetError, OSError) as exc:
        return None, str(exc)


def dataset_index(root: str) -> tuple[DatasetIndex | None, str | None]:
    if not root.strip():
        return None, "No dataset directory is set."
    try:
        return _dataset_index(_resolved(root)), None
    except (DatasetError, OSError) as exc:
        return None, str(exc)


@st.cache_data(show_spinner="Counting words…", max_entries=2)
def dataset_summary(root: str) -> dict:
    dataset = _flickr8k(_resolved(root))
    return summary(dataset.captions, dataset.splits)


@st.cache_data(show_spinner=False, max_entries=4000)
def thumbnail(path: str, size: int = 224) -> bytes | None:
    """Small JPEG of a dataset photo, in memory only (never written next to the data)."""
    try:
        return preview_jpeg(load_image(path), size)
    except ImageError:
        return None


def photo_cards(dataset: Flickr8k, names: list[str], columns: int):
    """Bordered cards of dataset photos, `columns` to a row, each with its thumbnail; yields
    each name while its card is open, so the caller adds the text and buttons under it."""
    for row in range(0, len(names), columns):
        for column, name in zip(st.columns(columns), names[row:row + columns]):
            with column.container(border=True):
                image = thumbnail(str(dataset.image_path(name)))
                if image:
                    st.image(image, width="stretch")
                else:
                    st.warning("Cannot read this photo.")
                yield name


def read_photo(path: str | Path) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError:
        return None


# -- the shared sidebar ----------------------------------------------------------------
def model_sidebar() -> None:
    """Which model is in use, on every page."""
    sidebar = st.sidebar
    sidebar.subheader("Model in use", anchor=False)
    captioner, error = load_captioner()
    if captioner is None:
        sidebar.error("No trained model: see the page for how to make one.", icon="🚫")
        return
    if captioner.passed_over:
        sidebar.warning(f"A better model could not be loaded; using {captioner.name}.", icon="⚠️")
    beam3 = ((captioner.metrics or {}).get("beam") or {}).get("3") or {}
    left, right = sidebar.columns(2)
    left.metric("Test BLEU-4", f"{beam3['BLEU-4']:.3f}" if "BLEU-4" in beam3 else "–",
                help="On the test split, beam width 3")
    right.metric("Test CIDEr", f"{beam3['CIDEr']:.3f}" if "CIDEr" in beam3 else "–",
                 help="On the test split, beam width 3")
    created = str(captioner.manifest.get("created", ""))[:10] or "unknown date"
    if captioner.members:  # an ensemble: nothing of its own was trained
        mix = " + ".join(f"{w:g} {name}" for name, w in zip(captioner.members, captioner.trained.weights))
        sidebar.caption(f"**ensemble** of {mix} · scored {created} · vocabulary {captioner.vocab_size:,} tokens")
    else:
        sidebar.caption(f"**{captioner.name}** decoder · trained {created} · vocabulary "
                        f"{captioner.vocab_size:,} tokens")
    if encoder_error():
        sidebar.error("Image encoder unavailable: see the caption page.", icon="🚫")
    else:
        sidebar.caption(f":material/check_circle: Image encoder ready: Xception, weights "
                        f"{captioner.imagenet_checksum[:12]} (as in training)")
