"""Scoring captions as papers do (the COCO caption toolkit), per-photo agreement with people,
phrases, training curves, and the report that writes the score tables and model cards.

Imports data, vision, decoders, decoding, model_dirs.
"""
