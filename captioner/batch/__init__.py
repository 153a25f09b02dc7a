"""Captioning many photos: a folder into resumable JSON lines (`caption-dir`), the same on Ray,
and the app's many uploads.

Imports data, vision, decoders, decoding, model_dirs (a captioner is handed in, not built here).
"""
