"""The web app: `streamlit run streamlit_app.py`.

This router only lists the pages and draws the sidebar they share; each page in pages/
lays out what the `captioner` library computes, and app/support.py holds the caches.
"""
import os

# Decoding multiplies small matrices in NumPy for many sessions at once: OpenBLAS threads
# only fight each other (and TensorFlow's) for the two cores, which made beam search 10-30x
# slower here. Must be set before NumPy loads; TensorFlow's own threads are unaffected.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import streamlit as st  # noqa: E402

from app import support  # noqa: E402

st.set_page_config(page_title="Image captioner", page_icon="🖼️", layout="wide")

page = st.navigation([
    st.Page("pages/caption.py", title="Caption a photo", icon=":material/photo_camera:", default=True),
    st.Page("pages/many.py", title="Caption many photos", icon=":material/photo_library:"),
    st.Page("pages/dataset.py", title="Flickr8k dataset", icon=":material/dataset:"),
    st.Page("pages/training.py", title="Training", icon=":material/monitoring:"),
])
support.model_sidebar()
page.run()
