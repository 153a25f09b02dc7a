"""caption-dir on a tiny model with a stand-in encoder, in a subprocess a test can kill:

    python batch_helper.py local MODEL_DIR PHOTOS OUT.jsonl [SECONDS_PER_BATCH [STOP_AT_LINES]]
    python batch_helper.py ray MODEL_DIR PHOTOS OUTDIR

Prints the run's summary as one JSON line. Run as a script, this file's folder and the
working directory (the repository) are on the path of Ray's workers too.
"""
import dataclasses
import functools
import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import PixelEncoder  # noqa: E402

BATCH_SIZE = 4


class SlowPixelEncoder(PixelEncoder):
    """PixelEncoder that takes `delay` seconds a batch, so a run lasts long enough to kill;
    with `stop_at`, it stops its process (SIGSTOP) when a batch begins and `out` already holds
    that many lines, so a test kills it at a known point, however slow the machine."""

    def __init__(self, delay: float = 0.0, out: str | None = None, stop_at: int | None = None):
        self.delay, self.out, self.stop_at = delay, out, stop_at

    def feature_maps(self, batch):
        if self.stop_at and Path(self.out).read_bytes().count(b"\n") >= self.stop_at:
            os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(self.delay)
        return super().feature_maps(batch)


def load_tiny(model_dir: str, delay: float = 0.0, out: str | None = None, stop_at: int | None = None):
    from captioner import Captioner
    return Captioner.load(model_dir, encoder=SlowPixelEncoder(delay, out, stop_at))


if __name__ == "__main__":
    engine, model_dir, photos, out = sys.argv[1:5]
    if engine == "local":
        from captioner.batch.folder import caption_dir
        delay = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
        stop_at = int(sys.argv[6]) if len(sys.argv) > 6 else None
        summary = caption_dir(load_tiny(model_dir, delay, out, stop_at), photos, out, batch_size=BATCH_SIZE,
                              progress=False)
    else:
        from captioner.batch.on_ray import caption_dir_ray
        summary = caption_dir_ray(photos, out, functools.partial(load_tiny, model_dir),
                                  batch_size=BATCH_SIZE, progress=False)
    print(json.dumps(dataclasses.asdict(summary)))
