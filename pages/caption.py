"""Caption a photo: upload one, take one, or pick an example; compare beam widths side by side."""
import pandas as pd
import streamlit as st

import app_support as app
from captioner import ImageError

st.title("Caption a photo")
captioner = app.require_captioner()

sources = ["Upload a photo", "Take a photo", "Example photo"]
source = st.radio("Photo from", sources, horizontal=True, key="source")
photo, filename = None, None
if source == sources[0]:
    upload = st.file_uploader("Photo (JPEG, PNG, WebP, BMP or GIF, up to 20 MB)",
                              type=app.UPLOAD_TYPES, key="upload")
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
try:
    encoded = app.encode_photo(captioner, photo, filename)
except ImageError as exc:
    st.error(str(exc), icon="🚫")  # the session goes on: the user can pick another file
    st.stop()

results = [(beam, *app.timed_captions(captioner, encoded["features"], beam)) for beam in sorted(beams)]

photo_col, timing_col = st.columns([2, 1], gap="large")
photo_col.image(encoded["preview"], width=480)
with timing_col:
    width, height = encoded["size"]
    st.metric("Encoding (Xception)", f"{encoded['encode_ms']:.0f} ms",
              help="Once per photo: other beam widths reuse the same features.")
    st.caption("Features reused, not encoded again." if encoded["reused"] else "Encoded just now.")
    st.metric("Decoding, all widths", f"{sum(ms for _, _, ms in results):.0f} ms")
    st.caption(f"Photo: {width}×{height} px")

for start in range(0, len(results), 3):  # at most three widths side by side
    for column, (beam, captions, decode_ms) in zip(st.columns(3), results[start:start + 3]):
        with column.container(border=True, key=f"beam-{beam}"):
            st.caption(f"Beam width {beam} · decoded in {decode_ms:.1f} ms")
            # st.subheader renders Markdown, harmless here: the vocabulary holds only a-z words.
            st.subheader(captions[0].text or "(empty caption)", anchor=False)
            # st.table wraps long captions, which a narrow st.dataframe would cut off.
            st.table(pd.DataFrame({
                "caption": [c.text for c in captions],
                "log p": [f"{c.log_prob:.2f}" for c in captions],
                "score": [f"{c.normalized_log_prob:.2f}" for c in captions],
            }, index=pd.RangeIndex(1, len(captions) + 1, name="rank")))

with st.expander("How to read this"):
    st.markdown(
        "Each box is one beam width: the large line is the caption the model picks, the table "
        "its best alternatives. **log p** is the total log-probability of a caption (closer to 0 "
        "is likelier); **score** divides it by length^alpha, so that a caption is not penalised "
        "just for having more words, and is what ranks them. The photo is encoded once; every beam width then "
        "decodes the same features, which takes milliseconds.")
