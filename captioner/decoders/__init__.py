"""The two decoders (merge, attention) and their ensemble, each as a Keras model to train and a
NumPy step to decode with (`step.py`: the interface every search is written against), and the
one `Config` dataclass of a model's settings.

Imports `captioner.data` and `captioner.vision`.
"""
