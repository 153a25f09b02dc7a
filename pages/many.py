"""Caption many photos at once: upload several, get a table of thumbnails and captions, and
download it as CSV or JSON. A bad file gets its one-line error in the table."""
import base64
import hashlib
import json

import pandas as pd
import streamlit as st

from app import support as app
from captioner.batch.many import caption_files, spreadsheet_safe, to_records

st.title("Caption many photos")
app.require_captioner()

uploads = st.file_uploader(f"Photos ({app.UPLOAD_LABEL} each)", type=app.UPLOAD_TYPES,
                           accept_multiple_files=True, key="uploads")
left, right = st.columns(2)
beam = left.selectbox("Beam width", app.BEAM_CHOICES, index=app.BEAM_CHOICES.index(3), key="many_beam")
if not uploads:
    st.info("Choose one or more photos to caption.")
    st.stop()

app.require_encoder()
models, _ = app.load_captioners()
model = models[right.selectbox("Model", list(models), key="many_model")]
if len(uploads) > app.MAX_PHOTOS:
    st.warning(f"{len(uploads)} photos chosen: the first {app.MAX_PHOTOS} are captioned (at most "
               f"{app.MAX_PHOTOS} at a time here; `captioner caption-dir` takes a whole folder).", icon="⚠️")
    uploads = uploads[:app.MAX_PHOTOS]
# The names as uploaded: the table and the downloads show them as text, never as Markdown.
files = [(u.name or f"Photo {i + 1}", u.getvalue()) for i, u in enumerate(uploads)]

# Every widget click re-runs the page: keep the results of this exact set of files.
key = hashlib.sha1(repr((model.name, app.model_stamp(), beam,
                         [(n, hashlib.sha1(d).digest()) for n, d in files])).encode()).hexdigest()
cache = st.session_state.setdefault("many_results", {})
if key not in cache:
    with st.spinner(f"Captioning {len(files)} photos…"):
        cache.clear()  # one batch per session is kept, not every batch ever uploaded
        cache[key] = caption_files(model, files, beam=beam, familiarity=app.familiarity(model.imagenet_checksum))
results = cache[key]

failed = sum(r.error is not None for r in results)
st.caption(f"{len(results) - failed} captioned, {failed} could not be read · model {model.name}, "
           f"beam width {beam}")
table = pd.DataFrame({
    "photo": [f"data:image/jpeg;base64,{base64.b64encode(r.thumbnail).decode()}" if r.thumbnail else None
              for r in results],
    "file": [r.name for r in results],
    "caption": [r.caption or "" for r in results],
    "trust": [r.trust for r in results],
    "verdict": [r.verdict or "" for r in results],
    "score": [r.normalized_log_prob for r in results],
    "like the training photos": [None if r.unfamiliar is None else ("no" if r.unfamiliar else "yes")
                                 for r in results],
    "error": [r.error or "" for r in results],
})
st.dataframe(table, hide_index=True, row_height=90, column_config={
    "photo": st.column_config.ImageColumn("photo", width="small"),
    "caption": st.column_config.TextColumn("caption", width="large"),
    "trust": st.column_config.ProgressColumn(
        "trust", format="%.2f", min_value=0.0, max_value=1.0,
        help="How likely the caption is as good as a typical person's (calibrated); click to sort"),
    "score": st.column_config.NumberColumn("score", format="%.2f", help="log p / length^α"),
})
if model.trust_model is None:
    st.warning(f"These captions carry no trust estimate: {model.trust_problem}", icon="⚠️")
elif model.trust_note:
    st.caption(f"Trust: {model.trust_note}")

records = to_records(results, model.name, beam)
left, right = st.columns(2)
left.download_button("Download CSV", pd.DataFrame(spreadsheet_safe(records)).to_csv(index=False), "captions.csv",
                     "text/csv", key="download_csv", on_click="ignore")
right.download_button("Download JSON", json.dumps(records, indent=2), "captions.json",
                      "application/json", key="download_json", on_click="ignore")
