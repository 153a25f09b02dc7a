"""Browse Flickr8k: search the captions, page through photos, see one with its ratings, and
the statistics that shaped the model's vocabulary."""
import math

import pandas as pd
import streamlit as st

from app import support as app
from app import model_vs_people
from captioner import ImageError
from captioner.data.annotations import caption_text
from captioner.data.stats import search_captions

PER_PAGE, COLUMNS = 12, 4
SPLITS = ["all", "train", "val", "test"]

st.title("Flickr8k dataset")
root = app.dataset_root()
index, error = app.dataset_index(root)


def show_without_dataset(error: str) -> None:
    st.warning("No Flickr8k dataset to browse.", icon="📂")
    st.text(error)  # it names the path the user typed: shown verbatim, not as Markdown
    st.markdown(
        "To browse the photos, download the Kaggle copy of Flickr8k (*Flickr 8k Dataset*, "
        "`adityajn105/flickr8k`: an `Images/` folder and `captions.txt`), unpack it, and enter "
        "its directory in the sidebar, or start the app with `CAPTIONER_DATA_DIR` set to it "
        "(the only way when the server locks the directory). "
        "The original release (`Flicker8k_Dataset/` and `Flickr8k_text/`) works too, and adds "
        "the human ratings of captions.")
    captioner, _ = app.load_captioner()
    if captioner is None:
        return
    st.subheader("What the trained model was built from", anchor=False)
    data = captioner.manifest.get("dataset") or {}
    images = data.get("images") or {}
    st.dataframe(pd.DataFrame({"": [
        data.get("layout", "?"), str(data.get("path", "?")),
        ", ".join(f"{split} {n:,}" for split, n in images.items()),
        f"{data.get('train_captions', 0):,}", f"{captioner.vocab_size:,}",
        str(captioner.config.min_word_count),
    ]}, index=["layout", "directory", "photos", "training captions", "vocabulary size",
               "minimum word count"]))


def select(name: str | None) -> None:
    st.session_state["selected_photo"] = name


def show_photo(name: str) -> None:
    """One photo large, with its references, the model's caption and human ratings."""
    dataset = index.dataset
    with st.container(border=True, key="selected-photo"):
        photo_col, text_col = st.columns([1, 2], gap="large")
        large = app.thumbnail(str(dataset.image_path(name)), 512)
        if large:
            photo_col.image(large, width="stretch")
        else:
            photo_col.warning("Cannot read this photo.")
        photo_col.text(f"{name}\n{dataset.split_of.get(name, 'no')} split")
        photo_col.button("Close", on_click=select, args=(None,), key="close-photo")
        with text_col:
            st.markdown("**Reference captions** (written by people)")
            st.text("\n".join(f"{i}. {text}" for i, text in enumerate(dataset.captions[name], 1)))
            show_model_caption(name)
            show_ratings(name)


def show_model_caption(name: str) -> None:
    captioner, _ = app.load_captioner()
    # For the models on disk now: after retraining, a photo is captioned by the new model.
    stamp = app.model_stamp()
    if st.session_state.get("model_captions_stamp") != stamp:
        st.session_state["model_captions"], st.session_state["model_captions_stamp"] = {}, stamp
    done = st.session_state["model_captions"]
    encoder_error = app.encoder_error() if captioner is not None else "no trained model"
    if st.button("Caption it with the model", key="caption-selected", disabled=bool(encoder_error),
                 help=f"Unavailable: {encoder_error}" if encoder_error else None):
        photo = app.read_photo(index.dataset.image_path(name)) or b""
        try:
            features = app.encode_photo(captioner, photo, name)["features"]
            done[name] = captioner.caption(features, beam=captioner.config.default_beam)[0].text
        except ImageError as exc:
            done[name] = f"({exc})"
    if name in done:
        st.markdown("**The model's caption**")
        st.text(done[name])


def show_ratings(name: str) -> None:
    if not index.annotations:
        st.caption("No human ratings: this copy of the dataset has no annotation files "
                   "(the Kaggle layout does not include them).")
        return
    expert, crowd = index.annotations.for_image(name)
    if not expert and not crowd:
        st.caption("No human ratings for this photo (the rated pairs are for the test split).")
        return
    captions = index.dataset.captions

    def whose(rating):  # the rated caption is often one written for another photo
        return "this photo" if rating.own_caption else "another photo"

    if expert:
        st.markdown("**Expert ratings** (1 = unrelated … 4 = describes the photo)")
        st.dataframe(pd.DataFrame([{
            "caption": caption_text(captions, r.caption_id) or r.caption_id,
            "written for": whose(r), "experts": " ".join(map(str, r.scores)),
            "mean": round(r.mean_score, 2)} for r in expert]).sort_values("mean", ascending=False),
            hide_index=True)
    if crowd:
        st.markdown("**Crowd judgements** (does the caption describe the photo?)")
        st.dataframe(pd.DataFrame([{
            "caption": caption_text(captions, r.caption_id) or r.caption_id,
            "written for": whose(r), "yes": r.yes, "no": r.no,
            "share yes": round(r.fraction_yes, 2)} for r in crowd]).sort_values("share yes", ascending=False),
            hide_index=True)


def show_browser() -> None:
    split_col, query_col = st.columns([1, 3])
    split = split_col.selectbox("Split", SPLITS, key="split")
    query = query_col.text_input("Search captions", key="query", placeholder="a word or phrase, e.g. red shirt")
    names = index.dataset.images(None if split == "all" else split)
    matches = search_captions(index.search, query, names)
    if st.session_state.get("browse_filter") != (root, split, query):
        st.session_state["browse_filter"] = (root, split, query)
        st.session_state["page"] = 1  # a new filter starts on its first page
    pages = max(1, math.ceil(len(matches) / PER_PAGE))
    page_col, count_col = st.columns([1, 3], vertical_alignment="bottom")
    page = page_col.number_input("Page", min_value=1, max_value=pages, key="page")
    count_col.caption(f"{len(matches):,} photos match · page {page} of {pages}")

    if st.session_state.get("selected_photo") in index.dataset.captions:
        show_photo(st.session_state["selected_photo"])
    shown = matches[(page - 1) * PER_PAGE: page * PER_PAGE]
    for name in app.photo_cards(index.dataset, shown, COLUMNS):
        # Human-written text: st.text shows it verbatim, never as Markdown.
        st.text("\n".join(f"• {text}" for text in index.dataset.captions[name]))
        st.button("Details", key=f"open-{name}", on_click=select, args=(name,))


def show_statistics() -> None:
    stats = app.dataset_summary(root)
    for column, (label, value) in zip(st.columns(4), [
            ("Photos", stats["n_images"]), ("Captions", stats["n_captions"]),
            ("Words per caption", stats["mean_caption_words"]), ("Distinct words", stats["distinct_words"])]):
        column.metric(label, f"{value:,}")
    left, right = st.columns(2, gap="large")
    with left:
        st.subheader("Photos per split", anchor=False)
        st.bar_chart(pd.DataFrame(stats["images_per_split"].items(), columns=["split", "photos"]),
                     x="split", y="photos", sort=False)
        st.subheader("Caption length", anchor=False)
        st.bar_chart(pd.DataFrame(stats["caption_lengths"].items(), columns=["words", "captions"]),
                     x="words", y="captions")
    with right:
        st.subheader("Most frequent words", anchor=False)
        content = st.toggle("Hide function words (a, the, in, …)", value=True, key="content_words")
        words = stats["top_content_words" if content else "top_words"]
        st.bar_chart(pd.DataFrame(words, columns=["word", "count"]), x="word", y="count",
                     horizontal=True, sort="-count")
        st.subheader("Vocabulary size against minimum word count", anchor=False)
        by_count = stats["train_vocab_by_min_count"]
        st.line_chart(pd.DataFrame(by_count.items(), columns=["minimum count", "vocabulary size"]),
                      x="minimum count", y="vocabulary size")
        captioner, _ = app.load_captioner()
        note = "Training split; rarer words become the unknown-word token."
        if captioner is not None:
            note += (f" The model in use kept words seen at least {captioner.config.min_word_count} "
                     f"times: {captioner.vocab_size:,} tokens.")
        st.caption(note)


if index is None:
    show_without_dataset(error)
    st.stop()
browse_tab, stats_tab, model_tab = st.tabs(["Browse", "Statistics", "Model against people"])
with browse_tab:
    show_browser()
with stats_tab:
    show_statistics()
with model_tab:
    model_vs_people.show(index, root)
