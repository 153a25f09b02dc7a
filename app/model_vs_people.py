"""The dataset page's "Model against people" tab: test photos sorted by each model's score,
filtered by a word, one photo with every model's caption beside the references, the words
the model never says and the phrases it over-uses."""
from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from app import support as app
from captioner.evaluation.insights import WHERE, filter_photos, reference_bleu4, sort_photos

PER_PAGE, COLUMNS = 8, 4
SORT_KEYS = {"CIDEr": "cider", "BLEU-4": "bleu4"}


def select(name: str | None) -> None:
    st.session_state["scored_photo"] = name


def show(index, root: str) -> None:
    scored, unscored = app.photo_scores()
    if unscored:
        st.info(f"No per-photo scores for: {', '.join(unscored)}. This model was evaluated before "
                "evaluation wrote each photo's caption and scores (test_captions.json); re-score it "
                "with `training_scripts/evaluate.py`, or retrain it.", icon="ℹ️")
    if not scored:
        if not unscored:
            st.info("No trained model: run `make train` to compare a model with people.")
        return
    references = index.dataset.captions
    model_col, sort_col, order_col = st.columns([1, 1, 1])
    model = model_col.selectbox("Model", list(scored), key="mvp_model")
    sort_by = sort_col.selectbox("Sort by", list(SORT_KEYS), key="mvp_sort")
    best_first = order_col.radio("Order", ["worst first", "best first"], key="mvp_order",
                                 horizontal=True) == "best first"
    word_col, where_col = st.columns([2, 1])
    word = word_col.text_input("Word or phrase", key="mvp_word", placeholder="e.g. dog")
    where = where_col.selectbox("Where", list(WHERE), key="mvp_where",
                                help="'references, not caption': photos people described with the "
                                     "word and the model did not")
    scores = scored[model]
    images = sort_photos(scores, filter_photos(scores, references, word, where), SORT_KEYS[sort_by], best_first)
    if st.session_state.get("mvp_filter") != (model, word, where, sort_by, best_first):
        st.session_state["mvp_filter"] = (model, word, where, sort_by, best_first)
        st.session_state["mvp_page"] = 1
    pages = max(1, math.ceil(len(images) / PER_PAGE))
    page_col, count_col = st.columns([1, 3], vertical_alignment="bottom")
    page = page_col.number_input("Page", min_value=1, max_value=pages, key="mvp_page")
    count_col.caption(f"{len(images):,} of {len(scores):,} test photos · page {page} of {pages}")

    if st.session_state.get("scored_photo") in scores:
        show_photo(index, scored, st.session_state["scored_photo"])
    show_grid(index, scores, images[(page - 1) * PER_PAGE: page * PER_PAGE])
    show_missed_words(root, model)
    show_phrases(root, model)


def show_grid(index, scores: dict, shown: list[str]) -> None:
    for name in app.photo_cards(index.dataset, shown, COLUMNS):
        st.text(scores[name]["caption"])
        st.caption(f"CIDEr {scores[name]['cider']:.2f} · BLEU-4 {scores[name]['bleu4']:.2f}")
        st.button("Open", key=f"mvp-open-{name}", on_click=select, args=(name,))


def show_photo(index, scored: dict, name: str) -> None:
    """The photo, each model's caption with its scores, and the references scored alike."""
    with st.container(border=True, key="scored-photo"):
        photo_col, text_col = st.columns([1, 2], gap="large")
        large = app.thumbnail(str(index.dataset.image_path(name)), 512)
        if large:
            photo_col.image(large, width="stretch")
        photo_col.text(name)
        photo_col.button("Close", on_click=select, args=(None,), key="mvp-close")
        with text_col:
            st.markdown("**The models' captions** (scored against the five references)")
            st.dataframe(pd.DataFrame([
                {"model": model, "caption": scores[name]["caption"], "CIDEr": scores[name]["cider"],
                 "BLEU-4": scores[name]["bleu4"]} for model, scores in scored.items() if name in scores]),
                hide_index=True, key="mvp-model-captions")
            refs = index.dataset.captions.get(name, [])
            st.markdown("**Reference captions** (written by people)")
            st.dataframe(pd.DataFrame({"caption": refs, "BLEU-4": reference_bleu4(refs)}),
                         hide_index=True, key="mvp-references")
            st.caption("A reference's BLEU-4 is against the other four (a model's, against all "
                       "five): how the same yardstick scores people. Smoothed sentence BLEU-4 (NLTK).")


def show_missed_words(root: str, model: str) -> None:
    st.subheader("Words people use that the model never says", anchor=False)
    rows = app.missed_word_table(root, model, app.model_stamp())
    if not rows:
        st.caption("None: the model says every word people used at least 5 times on these photos.")
        return
    st.dataframe(pd.DataFrame(rows).rename(columns={"people": "times in the references"}),
                 hide_index=True, key="mvp-missed")
    st.caption("Words used at least 5 times in the references of the test photos and in none of the "
               "model's captions. 'in vocabulary' False: the word was too rare in training for the "
               "model to know it; True: it knows the word but never chose it.")


def show_phrases(root: str, model: str) -> None:
    st.subheader("Phrases: people against the model", anchor=False)
    n = st.radio("Phrase length", [2, 3], format_func=lambda k: f"{k} words", key="mvp_phrase_n",
                 horizontal=True)
    table = app.phrase_table(root, model, n, app.model_stamp())
    for column, (key, title) in zip(st.columns(3), [("people", "People's most frequent"),
                                                    ("model", "The model's most frequent"),
                                                    ("overused", "Over-used by the model")]):
        column.markdown(f"**{title}**")
        column.dataframe(pd.DataFrame(table[key]), hide_index=True, key=f"mvp-phrases-{key}")
    st.caption("Occurrences per 100 captions (five references a photo, one model caption), counted "
               "within each caption with NLTK's collocation finders; phrases that begin or end "
               "with a function word ('in a', 'a blue') are left out.")
