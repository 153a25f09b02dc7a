"""The caption page's explanations: familiarity, confidence, attention, the beam search tree.

Each function lays out what the library computes (captioner.explain.familiarity,
captioner.decoding.confidence, captioner.explain.figures, captioner.decoding.beam_tree) for one encoded photo; nothing here decides anything about the model.
Model output only ever reaches the page as data (tables, figure images, DOT labels), never as
Markdown or HTML.
"""
from __future__ import annotations

import io

import pandas as pd
import streamlit as st
from PIL import Image

from app import support as app
from captioner.decoding.beam_tree import beam_tree_dot
from captioner.decoding.confidence import least_confident, word_confidence
from captioner.explain.figures import attention_grid, attention_word, caption_words, figure_jpeg

NEIGHBOURS = 4


# -- trust ---------------------------------------------------------------------------
VERDICT_STYLE = {"likely right": ("green", ":material/check_circle:"), "unsure": ("orange", ":material/help:"),
                 "likely wrong": ("red", ":material/error:")}


def show_caption_with_trust(caption) -> None:
    """The caption with its verdict and trust; a likely wrong one as a guess, not a headline.
    Everything but the caption's own words is fixed text: no HTML from model output."""
    trust = caption.trust
    text = caption.text or "(empty caption)"
    if trust is None:
        # st.subheader renders Markdown, harmless here: the vocabulary holds only a-z words.
        st.subheader(text, anchor=False)
        return
    colour, icon = VERDICT_STYLE[trust.verdict]
    st.badge(f"{trust.verdict.capitalize()} · trust {trust.value:.2f}", color=colour, icon=icon)
    if trust.verdict == "likely wrong":
        st.caption("The model's guess, probably wrong:")
        st.markdown(f"*{text}*")  # Markdown, harmless: the vocabulary holds only a-z words
    else:
        st.subheader(text, anchor=False)
    st.caption(trust.meaning + (" Why not higher: " + "; ".join(trust.reasons) + "." if trust.reasons else ""))


def show_trust_problem(captioner, notes_shown: set | None = None) -> None:
    """Say when captions come without trust (a model retrained since its estimate was fitted),
    and otherwise which estimate reads them (with the training photos' captions or without)."""
    if captioner.trust_model is None:
        st.warning(f"**No trust estimate for the {captioner.name} model**: {captioner.trust_problem} "
                   "Judge its captions by the signals below.", icon="⚠️")
    elif captioner.trust_note and captioner.trust_note not in (notes_shown or set()):
        st.caption(f"Trust: {captioner.trust_note}")  # fixed text and paths: st.caption, no HTML
        if notes_shown is not None:
            notes_shown.add(captioner.trust_note)


# -- "unlike the training photos" ------------------------------------------------------
def show_familiarity(captioner, encoded: dict, trusted: bool) -> None:
    """How like the training photos this one is. `trusted`: every model shown carries a trust
    estimate, which reads this signal; otherwise an unlike photo is a warning of its own."""
    familiarity = app.familiarity(captioner.imagenet_checksum)
    if familiarity is None:
        from captioner.explain.familiarity import find
        st.caption("No familiarity check: " + (
            "run `python -m captioner index-dataset` to write `trained/training_photos.h5`."
            if find(app.model_dir()) is None else
            "`trained/training_photos.h5` cannot be read, or was made from other Xception weights than "
            "this model's; run `python -m captioner index-dataset` to write it anew."))
        return
    similarity = float(familiarity.similarity(captioner.imagenet_map(encoded["features"]))[0])
    share = 100 - familiarity.percentile
    unlike = familiarity.is_unfamiliar(similarity)
    if trusted:
        # one of the trust estimate's signals: the caption boxes say when it pulled trust down
        st.caption(f"Similarity to the training photos: {similarity:.2f}"
                   + (" (unlike them)" if unlike else "") + f"; {share:g}% of held-out Flickr8k photos "
                   f"reach {familiarity.threshold:.2f}. One of the signals the trust estimate reads.")
    elif unlike:
        st.warning(f"**This photo is unlike the photos the model learned from** (similarity "
                   f"{similarity:.2f}; {share:g}% of held-out Flickr8k photos reach "
                   f"{familiarity.threshold:.2f}). Flickr8k is mostly people, dogs and outdoor "
                   "scenes: expect the caption to be wrong, however confident it sounds.",
                   icon="⚠️")
    else:
        st.caption(f"Similar to the training photos: {similarity:.2f} (cosine to the nearest of "
                   f"{len(familiarity.centroids)} training-photo centroids; {share:g}% of held-out "
                   f"Flickr8k photos reach {familiarity.threshold:.2f}).")
    with st.expander("The training photos it resembles most"):
        show_neighbours(captioner, encoded)


def show_neighbours(captioner, encoded: dict) -> None:
    data, _ = app.flickr8k(app.default_data_dir())
    index = app.neighbour_index(captioner.imagenet_checksum) if data is not None else None  # 49 MB: only if shown
    if index is None or data is None:
        st.info("This needs Flickr8k and its nearest-photo index: set `CAPTIONER_DATA_DIR` (see "
                "the Flickr8k dataset page) and run `python -m captioner index-dataset --neighbours-only`.")
        return
    st.caption("What the model learned from when it wrote captions for photos like this one: "
               "the nearest training photos by cosine similarity of their Xception vectors.")
    for column, (name, similarity) in zip(st.columns(NEIGHBOURS), index.nearest(captioner.imagenet_map(encoded["features"]), NEIGHBOURS)):
        with column:
            picture = app.thumbnail(str(data.image_path(name)))
            if picture:
                st.image(picture)
            st.caption(f"similarity {similarity:.2f}")
            for caption in data.captions.get(name, [])[:2]:
                st.text(f"• {caption}")  # dataset text: st.text, never Markdown


# -- per-word confidence ---------------------------------------------------------------
def show_confidence(caption) -> None:
    weakest = least_confident(caption)
    if weakest:
        st.caption(f"Least sure of \u201c{weakest[0]}\u201d ({weakest[1]:.0%})")
    with st.expander("Word by word"):
        columns = {"probability": st.column_config.ProgressColumn(
            "probability", format="percent", min_value=0.0, max_value=1.0,
            help="The model's probability of this word, given the photo and the words before it")}
        rows = word_confidence(caption)
        if rows and "from the photo" in rows[0]:
            columns["from the photo"] = st.column_config.ProgressColumn(
                "from the photo", format="percent", min_value=0.0, max_value=1.0,
                help="Attention on the photo rather than on the language model's memory")
        st.dataframe(pd.DataFrame(rows), column_config=columns, hide_index=True)


# -- attention -------------------------------------------------------------------------
@st.cache_data(show_spinner="Drawing the attention maps…", max_entries=16)
def _attention_grid(photo_key: str, model: str, stamp: tuple, beam: int, _caption, _preview: bytes) -> bytes:
    small = Image.open(io.BytesIO(_preview))
    small.thumbnail((240, 240))
    return figure_jpeg(attention_grid(small, _caption))


@st.cache_data(show_spinner=False, max_entries=64)
def _attention_word(photo_key: str, model: str, stamp: tuple, beam: int, index: int, _caption,
                    _preview: bytes) -> bytes:
    """One word's map, large: drawn when it is asked for (a dozen up front took seconds)."""
    return figure_jpeg(attention_word(Image.open(io.BytesIO(_preview)), _caption, index))


def show_attention(captioner, encoded: dict, best: dict) -> None:
    """The attention figures of one model, from `best` (beam width -> the caption the page
    decoded at it, with its attention rows): the figures need no search of their own. Keyed
    by model, since the attention model and the ensemble (which draws its attention member's)
    can be shown together."""
    beams = sorted(best)
    own = captioner.attention_source == captioner.name
    st.header(f"Where the {captioner.attention_source} model looked" + ("" if own else f", in the {captioner.name}"),
              anchor=False)
    if not own:
        st.caption(f"The {captioner.name} chose each word; the maps are where its {captioner.attention_source} "
                   "member looked as it did. The merge member reads the whole photo's average.")
    beam = st.selectbox("Beam width", beams, index=len(beams) // 2, key=f"attention_beam_{captioner.name}")
    key = (encoded["key"], captioner.name, app.model_stamp(), beam)  # the stamp: a retrained model draws anew
    caption = best[beam]
    words = caption_words(caption)
    st.image(_attention_grid(*key, caption, encoded["preview"]),
             caption="Each word's 10×10 attention over the photo (bright: looked here); "
             "'photo' is how much of the word came from the image rather than the language model.")
    choice = st.select_slider("Show one word large", options=list(range(len(words))),
                              format_func=lambda i: f"{i + 1}. {words[i]}",
                              key=f"attention_word_{captioner.name}")
    st.image(_attention_word(*key, choice, caption, encoded["preview"]), width=640)


# -- the beam search tree --------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=32)
def _tree(photo_key: str, model: str, stamp: tuple, beam: int, show_pruned: bool, _captioner, _features) -> str:
    trace = []
    caption = _captioner.caption(_features, beam=beam, trace=trace)[0]
    return beam_tree_dot(trace, _captioner.vocab, show_pruned=show_pruned,
                         title=f"Beam width {beam}: {caption.text}")


def show_beam_trees(captioner, encoded: dict, beams: list[int]) -> None:
    st.header("How the beam search went", anchor=False)
    default = sorted({min(beams), max(beams)})
    widths = st.multiselect("Widths to draw (two side by side)", app.BEAM_CHOICES, default=default,
                            max_selections=2, key="tree_beams")
    show_pruned = st.toggle("Show pruned candidates", value=True, key="tree_pruned")
    st.caption("Steps run left to right. Boxes are the hypotheses kept at each step; faint dashed "
               "ones were ranked but pruned; green boxes ended there, with their score "
               "(log p / length^α); the red path is the caption the search returns.")
    for column, beam in zip(st.columns(max(len(widths), 1)), sorted(widths)):
        with column:
            st.graphviz_chart(_tree(encoded["key"], captioner.name, app.model_stamp(), beam, show_pruned, captioner,
                                    encoded["features"]), width="stretch")
