"""Image captioning: ImageNet Xception features + a merge LSTM decoder trained on Flickr8k."""
import os as _os

# TensorFlow's C++ start-up chatter is noise for users of a CLI or web app.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Decoding multiplies small matrices: OpenBLAS threads spinning against TensorFlow's on two
# cores made beam search 10-30x slower under load. Must be set before NumPy is imported.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from captioner.api import Captioner  # noqa: E402
from captioner.decoding.search import Caption  # noqa: E402
from captioner.data.images import ImageError  # noqa: E402

__all__ = ["Captioner", "Caption", "ImageError"]
__version__ = "1.0.0"
