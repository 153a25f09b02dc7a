"""`caption-dir --engine ray`: the folder.py job on Ray Data, for a cluster.

    captioner caption-dir /mnt/photos --out /mnt/captions --engine ray [--address HOST:6379]

The driver lists the photos; Ray Data splits the list into blocks; a pool of actors, each of
which loads the Captioner once (building Xception takes seconds, so a plain task per batch
would pay that every time), runs batch.caption_paths on batches of paths; write_json writes
JSON-lines files into the output folder as blocks finish. The records are folder.py's, field
for field. Actors read the photos themselves, by path, so the photo folder and the output
folder must be at the same path on every node (a shared filesystem or a mounted bucket), and
only paths and short records travel through Ray's object store.

Unlike the local engine this one does not resume photo by photo: Ray retries failed tasks
and restarts dead actors itself, and a failed job is re-run into an empty folder.
Ray is optional (`pip install 'captioner[scale]'`) and imported only here.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from captioner.batch.folder import BatchError, caption_paths, find_photos
from captioner.trust.signals import SIGNALS

# Only paths and records (a few hundred bytes a photo) go through the object store, so a
# local instance needs little; Ray's default (30% of RAM) would take memory from TensorFlow.
LOCAL_OBJECT_STORE_BYTES = 500 * 1024 * 1024


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise BatchError("--engine ray needs Ray: pip install 'captioner[scale]' "
                         "(or 'ray[data]').") from None
    return ray


def record_schema():
    """folder.py's record as an Arrow schema: stated, not inferred, so a batch of nothing but
    errors has the same columns and types as any other."""
    import pyarrow as pa
    signals = pa.struct([(name, pa.float64()) for name in SIGNALS])  # a model uses some of them
    caption = pa.struct([("caption", pa.string()), ("log_prob", pa.float64()),
                         ("normalized_log_prob", pa.float64()), ("finished", pa.bool_()),
                         ("trust", pa.float64()), ("verdict", pa.string()), ("signals", signals),
                         ("reasons", pa.list_(pa.string()))])
    return pa.schema([("path", pa.string()), ("model", pa.string()), ("beam", pa.int64()),
                      ("min_trust", pa.float64()), ("captions", pa.list_(caption)), ("error", pa.string()),
                      ("withheld", pa.string())])


class CaptionActor:
    """One per worker slot: loads the Captioner once, then captions batch after batch."""

    def __init__(self, root: str, load_captioner, beam: int, top: int, cpus: float,
                 min_trust: float | None = None):
        # Both encoders size their thread pools to every core of the node; with several actors
        # on a node that oversubscribes the cores, so each uses only the CPUs Ray gave it.
        threads = max(1, int(cpus))
        os.environ["CAPTIONER_ENCODER_THREADS"] = str(threads)   # LiteRT's
        self.root, self.beam, self.top, self.min_trust = Path(root), beam, top, min_trust
        self.captioner = load_captioner()
        if self.captioner.encoder_kind == "tensorflow":          # the recipe asked for it (a GPU node)
            from captioner.vision.tf_setup import import_tensorflow_quietly
            tf = import_tensorflow_quietly()
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
        self.captioner.check_encoder()
        if min_trust is not None and self.captioner.trust_model is None:
            from captioner.trust.estimate import TrustError
            raise TrustError(f"--min-trust needs a trust estimate: {self.captioner.trust_problem}")

    def __call__(self, batch):
        import pyarrow as pa
        paths = [str(path) for path in batch["path"]]
        records = caption_paths(self.captioner, self.root, paths, self.beam, self.top, self.min_trust)
        return pa.Table.from_pylist(records, schema=record_schema())


@dataclass
class RaySummary:
    photos: int
    captioned: int
    failed: int
    errors: list[str]   # the first few error messages
    seconds: float

    @property
    def photos_per_second(self) -> float:
        return self.photos / max(self.seconds, 1e-9)


def start_ray(ray, address: str | None) -> bool:
    """Connect to the cluster at `address`, or start a small local instance. Returns whether
    this call started Ray (and so should shut it down)."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        # Usage statistics would be sent over the network from a local run; off unless asked.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False,
                 object_store_memory=LOCAL_OBJECT_STORE_BYTES, logging_level=logging.WARNING)
    return True


def utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def caption_dir_ray(root: str | os.PathLike, outdir: str | os.PathLike, load_captioner,
                    beam: int = 3, top: int = 1, batch_size: int = 16, address: str | None = None,
                    workers: int | None = None, cpus_per_worker: float = 1,
                    progress: bool = True, min_trust: float | None = None, use_gpus: bool = False) -> RaySummary:
    """Caption every photo under `root` into JSON-lines files in `outdir` (new or empty).
    `load_captioner` is a picklable callable returning a Captioner; each actor calls it once.
    `use_gpus`: its encoder is TensorFlow's, which runs on a GPU: one per actor where the
    cluster has them (LiteRT runs on CPUs, so a GPU reserved for it would only cap the pool)."""
    ray = import_ray()
    if batch_size < 1:
        raise BatchError(f"--batch-size must be at least 1, got {batch_size}.")
    if cpus_per_worker <= 0 or (workers is not None and workers < 1):
        raise BatchError(f"--cpus-per-worker must be above 0 and --workers at least 1, got "
                         f"{cpus_per_worker} and {workers}.")
    root, outdir = Path(root).resolve(), Path(outdir).resolve()
    if outdir.is_file():
        raise BatchError(f"{outdir}: is a file; --engine ray writes a folder of JSON-lines files.")
    if outdir.is_dir() and any(outdir.iterdir()):
        # Ray names its files afresh on every run: writing into a used folder would duplicate.
        raise BatchError(f"{outdir}: not empty; --engine ray writes into a new or empty folder.")
    photos = find_photos(root)
    # Arrow's strings are UTF-8: a name that is not (os.walk's surrogate escapes) would fail the job.
    unnamed = [path for path in photos if not utf8(path)]
    if unnamed:
        print(f"warning: {len(unnamed)} file name(s) are not valid UTF-8, which Ray's records cannot "
              f"hold, such as {unnamed[0]!r}: left out (--engine local captions them).", file=sys.stderr)
        photos = [path for path in photos if utf8(path)]
    start = time.perf_counter()
    started = start_ray(ray, address)
    try:
        resources = ray.cluster_resources()
        # With --encoder tensorflow the encoder runs on a GPU where the cluster has them (needs
        # the `tensorflow` build with CUDA on those nodes): one GPU per actor, one per GPU.
        gpus = int(resources.get("GPU", 0)) if use_gpus else 0
        if workers is None:
            workers = gpus or max(1, int(resources.get("CPU", 1) // cpus_per_worker))
        ray.data.DataContext.get_current().enable_progress_bars = progress
        if not photos:
            outdir.mkdir(parents=True, exist_ok=True)
            return RaySummary(0, 0, 0, [], time.perf_counter() - start)
        dataset = ray.data.from_items([{"path": path} for path in photos])
        captions = dataset.map_batches(
            CaptionActor, batch_size=batch_size, batch_format="numpy",
            fn_constructor_args=(str(root), load_captioner, beam, top, cpus_per_worker, min_trust),
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
            num_cpus=cpus_per_worker, num_gpus=1 if gpus else 0)
        captions.write_json(str(outdir))
        summary = _count(ray, outdir, len(photos))
    except ray.exceptions.RayError as exc:
        lines = [line for line in str(exc).splitlines() if line.strip()]
        raise BatchError(f"the Ray job failed: {lines[-1] if lines else type(exc).__name__}") from None
    finally:
        if started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - start
    return summary


def _count(ray, outdir: Path, expected: int, keep: int = 20) -> RaySummary:
    """Read the written records back (with Ray, so an output folder only the cluster sees
    works too): how many, how many failed, and check none is missing or repeated."""
    written = failed = 0
    errors: list[str] = []
    paths: set[str] = set()
    table_rows = ray.data.read_json(str(outdir)).select_columns(["path", "error"])
    for batch in table_rows.iter_batches(batch_format="pyarrow", batch_size=4096):
        for path, error in zip(batch["path"].to_pylist(), batch["error"].to_pylist()):
            written += 1
            paths.add(path)
            if error:
                failed += 1
                if len(errors) < keep:
                    errors.append(error)
    if written != expected or len(paths) != expected:
        raise BatchError(f"{outdir}: holds {written} records for {len(paths)} photos, "
                         f"expected {expected}.")
    return RaySummary(expected, written - failed, failed, errors, 0.0)
