"""What the web app's pages share: the cached models and dataset (`support`), the caption page's
explanations (`explain`), and the parts of pages long enough for a file of their own. Each lays
out what a `captioner` module computes and holds no model logic of its own.

Imports `captioner` (never the other way: the library does not import Streamlit or the app).
"""
