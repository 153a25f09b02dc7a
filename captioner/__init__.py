"""Image captioning: ImageNet Xception features + LSTM decoders trained on Flickr8k."""
import os as _os

# TensorFlow's C++ start-up chatter (when training, or --encoder tensorflow) is noise for users.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Decoding multiplies small matrices: OpenBLAS threads spinning against the encoder's on two
# cores made beam search 10-30x slower under load. Must be set before NumPy is imported.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from captioner.api import Captioner  # noqa: E402
from captioner.decoding.search import Caption  # noqa: E402
from captioner.data.images import ImageError  # noqa: E402

__all__ = ["Captioner", "Caption", "ImageError"]
__version__ = "1.0.0"
