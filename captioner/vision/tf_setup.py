"""Import TensorFlow without its C++ start-up banner on stderr.

TensorFlow prints oneDNN/absl notices straight to file descriptor 2 while it loads, which
would bury a CLI's one-line errors. Python exceptions from the import still propagate.
"""
from __future__ import annotations

import os
import sys


def import_tensorflow_quietly():
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            import tensorflow
            import keras  # noqa: F401  (keras pulls in the same libraries)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    return tensorflow
