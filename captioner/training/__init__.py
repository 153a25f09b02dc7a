"""Training a decoder end to end, resumably: the loop, its two phases (cross-entropy and
self-critical), the shared step, checkpoints, the CIDEr-D reward, distillation, the scores
recorded beside a model, and the live progress the app shows.

Imports every package above it: data, vision, decoders, decoding, model_dirs, evaluation, explain.
"""
