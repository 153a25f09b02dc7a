"""Turn the errors a user can cause into one line on stderr and a non-zero exit."""
from __future__ import annotations

import sys

from captioner.model_dirs.artifacts import ArtifactError
from captioner.data.dataset import DatasetError
from captioner.vision.encoder import EncoderWeightsError
from captioner.data.images import ImageError

from captioner.training.checkpoint import TrainingError

# OSError covers unreadable files and full disks: a message, not a traceback.
USER_ERRORS = (ArtifactError, DatasetError, EncoderWeightsError, ImageError, TrainingError,
               ValueError, OSError)


def run_reporting_errors(job) -> int:
    try:
        return job()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
