"""How far to trust a caption: signals the model already has (its own probabilities, the
search's other captions, an ensemble's members, how familiar the photo looks), read by a
small fitted model into a calibrated number in [0, 1] and a verdict.

Imports data, decoding, model_dirs, evaluation, explain (and scikit-learn, to fit only).
"""
