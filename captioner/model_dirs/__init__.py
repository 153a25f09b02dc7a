"""The model directories in `trained/` on disk: save and load a decoder (`artifacts`) or an
ensemble (`ensemble_dir`), verify them against their manifest, and choose the default
(`catalog`).

Imports data, vision, decoders, decoding.
"""
