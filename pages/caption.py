"""Caption a photo: upload one, take one, or pick an example; compare beam widths and models
side by side, and see why: confidence per word, familiarity, attention and the search tree."""
import pandas as pd
import streamlit as st

from app import explain
from app import support as app
from captioner import ImageError
from captioner.trust.signals import EVIDENCE_BEAM

st.title("Caption a photo")
app.require_captioner()

sources = ["Upload a photo", "Take a photo", "Example photo"]
source = st.radio("Photo from", sources, horizontal=True, key="source")
photo, filename = None, None
if source == sources[0]:
    upload = st.file_uploader(f"Photo ({app.UPLOAD_LABEL})", type=app.UPLOAD_TYPES, key="upload")
    if upload is not None:
        photo, filename = upload.getvalue(), upload.name
elif source == sources[1]:
    # Only shown when chosen: the browser asks for camera access as soon as it appears.
    shot = st.camera_input("Take a photo", key="camera")
    if shot is not None:
        photo, filename = shot.getvalue(), "Camera photo"
elif app.examples_available():
    example = st.selectbox("Example photo", list(app.EXAMPLES), key="example")
    photo, filename = app.example_photo(app.EXAMPLES[example]), example
else:
    st.warning("Example photos need scikit-image (`pip install -r requirements.txt`).")

beams = st.multiselect("Beam widths to compare", app.BEAM_CHOICES, default=app.DEFAULT_BEAMS,
                       key="beams", help="1 is greedy search; wider beams search more candidate captions.")
if photo is None:
    st.info("Choose a photo to caption.")
    st.stop()
if not beams:
    st.warning("Pick at least one beam width.")
    st.stop()

app.require_encoder()
models, model_errors = app.load_captioners()
for message in model_errors:
    st.warning("A model could not be loaded; the others still work.", icon="⚠️")
    st.text(message)
together = "Both side by side" if len(models) == 2 else "All side by side"
choices = list(models) + ([together] if len(models) > 1 else [])
chosen = st.radio("Model", choices, horizontal=True, key="model",
                  help="The first is the best by test CIDEr. Every model reads the same encoding"
                       + ("; the ensemble mixes its members' word probabilities at each step."
                          if "ensemble" in models else "."))
shown = list(models.values()) if chosen == together else [models[chosen]]
default = next(iter(models.values()))
try:
    encoded = app.encode_photo(default, photo, filename)  # one Xception pass for every model
except ImageError as exc:
    st.error(str(exc), icon="🚫")  # the session goes on: the user can pick another file
    st.stop()

beams = sorted(beams)
# The width the trust evidence searches at goes first: its search is then that evidence,
# which the other widths reuse (captioner.api keeps it per photo).
first = sorted(beams, key=lambda beam: beam != EVIDENCE_BEAM)
# Models that share the default's encoder reuse its features; one with its own exit flow encodes once more.
encodings = {m.name: encoded if m is default else app.encode_photo(m, photo, filename) for m in shown}
results = {m.name: sorted(((beam, *app.timed_captions(m, encodings[m.name]["features"], beam)) for beam in first),
                          key=lambda r: r[0])
           for m in shown}

photo_col, timing_col = st.columns([2, 1], gap="large")
photo_col.image(encoded["preview"], width=480)
with timing_col:
    width, height = encoded["size"]
    st.metric("Encoding (Xception)", f"{encoded['encode_ms']:.0f} ms",
              help="Once per photo: other beam widths and models reuse the same features.")
    st.caption("Features reused, not encoded again." if encoded["reused"] else "Encoded just now.")
    st.metric("Decoding, all widths", f"{sum(ms for r in results.values() for _, _, ms in r):.0f} ms")
    st.caption(f"Photo: {width}×{height} px")
notes_shown: set = set()  # the models usually share one note: say it once
for m in shown:
    explain.show_trust_problem(m, notes_shown)
explain.show_familiarity(default, encoded, trusted=all(m.trust_model is not None for m in shown))


def beam_box(column, model: str, beam: int, captions, decode_ms: float, key: str) -> None:
    with column.container(border=True, key=key):
        st.caption(f"{model} · beam width {beam} · decoded in {decode_ms:.1f} ms"
                   if len(shown) > 1 else f"Beam width {beam} · decoded in {decode_ms:.1f} ms")
        explain.show_caption_with_trust(captions[0])
        explain.show_confidence(captions[0])
        # st.table wraps long captions, which a narrow st.dataframe would cut off.
        st.table(pd.DataFrame({
            "caption": [c.text for c in captions],
            "log p": [f"{c.log_prob:.2f}" for c in captions],
            "score": [f"{c.normalized_log_prob:.2f}" for c in captions],
        }, index=pd.RangeIndex(1, len(captions) + 1, name="rank")))


# The browser shows the last run's elements until this run writes their position: whatever
# follows must keep its position from run to run, or the last run's controls linger on screen
# beside the new ones while the attention maps draw (issue 22). So the rows of boxes, however
# many, are one element of the page,
with st.container():
    if len(shown) == 1:  # at most three widths side by side
        rows = results[shown[0].name]
        for start in range(0, len(rows), 3):
            for column, (beam, captions, ms) in zip(st.columns(3), rows[start:start + 3]):
                beam_box(column, shown[0].name, beam, captions, ms, f"beam-{beam}")
    else:  # one row per width, one column per model
        for i, beam in enumerate(beams):
            for column, m in zip(st.columns(len(shown)), shown):
                _, captions, ms = results[m.name][i]
                beam_box(column, m.name, beam, captions, ms, f"beam-{beam}-{m.name}")

# each model that can draw attention has a place of its own, so that no model's figure is
# drawn where another's stood, and the places of those not shown are emptied before any
# figure is drawn,
places = {m.name: st.container() if m in shown else st.empty() for m in models.values() if m.has_attention}
for m in shown:
    if m.has_attention:
        with places[m.name]:
            explain.show_attention(m, encodings[m.name], {beam: captions[0] for beam, captions, _ in results[m.name]})
# and the beam-tree model chooser, shown side by side only, keeps its place when it is not.
tree_model = shown[0]
if len(shown) > 1:
    tree_model = models[st.selectbox("Search tree of", [m.name for m in shown], key="tree_model")]
else:
    st.empty()
explain.show_beam_trees(tree_model, encodings[tree_model.name], beams)

with st.expander("How to read this"):
    st.markdown(
        "Each box is one beam width: the large line is the caption the model picks, the table "
        "its best alternatives. **log p** is the total log-probability of a caption (closer to 0 "
        "is likelier); **score** divides it by length^alpha, so that a caption is not penalised "
        "just for having more words, and is what ranks them. *Word by word* gives each word's "
        "probability. The photo is encoded once; every beam width and model then decodes the "
        "same features, which takes milliseconds. The familiarity check compares the photo's "
        "Xception vector with centroids of the training photos: a photo below the threshold is "
        "unlike anything the model learned from, so its caption deserves little trust.")
