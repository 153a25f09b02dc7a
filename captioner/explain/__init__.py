"""Why the model said what it said: how familiar a photo looks, its nearest training photos,
attention figures, and the index of the training photos these need.

Imports data, vision, decoders, decoding, model_dirs, evaluation.
"""
