"""A decoder that reads one view of photos encoded for several exit flows (issue 24).

Where the models being decoded read different exit flows (a tuned attention model beside a
frozen merge model in one ensemble), each photo is encoded once into maps side by side,
(n, views, 10, 10, 2048) (vision/tuned_encoder.ViewsEncoder); `ViewDecoder` hands its decoder
the view it was trained on and is otherwise that decoder, so the one search runs on it unchanged.
"""
from __future__ import annotations

import numpy as np


class ViewDecoder:
    def __init__(self, decoder, view: int):
        self.decoder, self.view = decoder, int(view)

    def prepare(self, features: np.ndarray) -> dict:
        features = np.asarray(features)
        if features.ndim != 5:
            raise ValueError(f"expected maps of several exit flows, (n, views, 10, 10, channels), got {features.shape}")
        return self.decoder.prepare(features[:, self.view])

    def __getattr__(self, name):   # the step, the state, the vocabulary: the decoder's own
        return getattr(self.decoder, name)
