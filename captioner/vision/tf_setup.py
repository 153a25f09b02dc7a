"""Import TensorFlow without its C++ start-up banner on stderr, and silence its converter.

TensorFlow prints oneDNN/absl notices straight to file descriptor 2 while it loads, which
would bury a CLI's one-line errors; the LiteRT converter prints every captured variable.
Python exceptions still propagate.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading


# Redirecting a descriptor is process-wide: one silenced block at a time (the app builds
# encoders in session threads), re-entrant for the thread that holds it.
_SILENCING = threading.RLock()


@contextlib.contextmanager
def silenced(fds=(2,)):
    """Send file descriptors `fds` (2: stderr; 1: stdout) to /dev/null meanwhile, C++ writes included."""
    with _SILENCING, _redirected(fds):
        yield


@contextlib.contextmanager
def _redirected(fds):
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(fd) for fd in fds]
    try:
        with open(os.devnull, "w") as devnull:
            for fd in fds:
                os.dup2(devnull.fileno(), fd)
            yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for fd, copy in zip(fds, saved):
            os.dup2(copy, fd)
            os.close(copy)


def import_tensorflow_quietly():
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with silenced():
        import tensorflow
        import keras  # noqa: F401  (keras pulls in the same libraries)
    return tensorflow
