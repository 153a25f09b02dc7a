#!/usr/bin/env python
"""Photos per second of `caption-dir` against a loop over Captioner.caption_image.

    python benchmarks/bench_batch.py --data ../shared/flickr8k [--photos 200] [--runs 3] [--ray] [--json]

Both engines caption the same Flickr8k test photos (a temporary folder of symlinks, so nothing
is copied) at the same beam width with the same Captioner, in one process, alternating which
goes first in each run, so the ratio holds on a noisy shared machine. Reported: the median
over runs of wall time and photos/s.

* loop: `captioner.caption_image(path)` per photo: decode, encode (batch of one), beam search.
* caption-dir: batch.caption_dir, i.e. batches of --batch-size decoded in a thread while
  Xception encodes the previous batch, one batched beam search per batch, lines fsynced.
* ray (with --ray): batch_ray.caption_dir_ray on a local Ray instance started beforehand
  (its start-up is timed separately); each run includes the actors loading the model.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import captioner  # noqa: E402,F401  (sets thread and logging defaults before NumPy loads)


def link_photos(paths: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True)
    for path in paths:
        (folder / path.name).symlink_to(Path(path).resolve())


def time_loop(model, paths, beam) -> tuple[float, dict[str, str]]:
    start = time.perf_counter()
    captions = {path.name: model.caption_image(path, beam=beam)[0].text for path in paths}
    return time.perf_counter() - start, captions


def time_caption_dir(model, folder, out, beam, batch_size) -> tuple[float, dict[str, str]]:
    from captioner.batch.folder import caption_dir
    start = time.perf_counter()
    summary = caption_dir(model, folder, out, beam=beam, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    assert summary.failed == 0 and summary.already_done == 0, summary
    records = [json.loads(line) for line in Path(out).read_text().splitlines()]
    return seconds, {r["path"]: r["captions"][0]["caption"] for r in records}


def time_ray(folder, outdir, beam, batch_size, workers, model_arg) -> float:
    from captioner.batch.on_ray import caption_dir_ray
    from captioner.api import load_captioner
    start = time.perf_counter()
    summary = caption_dir_ray(folder, outdir, functools.partial(load_captioner, model_arg),
                              beam=beam, batch_size=batch_size, workers=workers, progress=False)
    assert summary.failed == 0, summary
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CAPTIONER_DATA_DIR", "../shared/flickr8k"))
    parser.add_argument("--model", default=None, help="merge, attention or a model directory "
                        "(default: the best bundled model)")
    parser.add_argument("--photos", type=int, default=200, help="Flickr8k test photos (default 200)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each engine (default 3)")
    parser.add_argument("--beam", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ray", action="store_true", help="also time --engine ray (local instance)")
    parser.add_argument("--ray-workers", type=int, default=None, help="Ray actors (default: one per CPU)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from captioner.api import load_captioner
    from captioner.data.dataset import load_flickr8k

    dataset = load_flickr8k(args.data)
    paths = [Path(dataset.image_path(name)) for name in dataset.images("test")[: args.photos]]
    model = load_captioner(args.model)
    model.check_encoder()
    model.caption_image(paths[0], beam=args.beam)  # warm-up: builds Xception and traces its graph

    seconds: dict[str, list[float]] = {"loop": [], "caption-dir": []}
    agree = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        folder = Path(tmp) / "photos"
        link_photos(paths, folder)
        for run in range(args.runs):
            order = ("loop", "caption-dir") if run % 2 == 0 else ("caption-dir", "loop")
            for engine in order:
                if engine == "loop":
                    elapsed, loop_captions = time_loop(model, paths, args.beam)
                else:
                    elapsed, dir_captions = time_caption_dir(model, folder, Path(tmp) / f"run{run}.jsonl",
                                                             args.beam, args.batch_size)
                seconds[engine].append(elapsed)
                print(f"run {run + 1}/{args.runs} {engine}: {elapsed:.1f} s", file=sys.stderr)
            agree.append(sum(loop_captions[k] == dir_captions[k] for k in loop_captions))
        ray_start = None
        if args.ray:
            from captioner.batch.on_ray import import_ray, start_ray
            ray = import_ray()
            t0 = time.perf_counter()
            start_ray(ray, None)
            ray_start = time.perf_counter() - t0
            seconds["ray"] = []
            try:
                for run in range(args.runs):
                    seconds["ray"].append(time_ray(folder, Path(tmp) / f"ray{run}", args.beam,
                                                   args.batch_size, args.ray_workers, args.model))
                    print(f"run {run + 1}/{args.runs} ray: {seconds['ray'][-1]:.1f} s", file=sys.stderr)
            finally:
                ray.shutdown()

    n = len(paths)
    loop_median = statistics.median(seconds["loop"])
    results = {"photos": n, "runs": args.runs, "beam": args.beam, "batch_size": args.batch_size,
               "model": model.name, "cpus": os.cpu_count(), "engines": {},
               "same_first_caption_loop_vs_caption_dir": f"{min(agree)}/{n}"}
    for engine, times in seconds.items():
        median = statistics.median(times)
        results["engines"][engine] = {"seconds": [round(t, 2) for t in times],
                                      "median_seconds": round(median, 2),
                                      "photos_per_s": round(n / median, 2),
                                      "speedup_vs_loop": round(loop_median / median, 2)}
    if ray_start is not None:
        results["ray_init_seconds"] = round(ray_start, 2)

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{n} Flickr8k test photos, beam {args.beam}, model {model.name}, {os.cpu_count()} CPUs, "
          f"median of {args.runs} runs")
    print(f"{'engine':<14}{'seconds':>10}{'photos/s':>11}{'vs loop':>10}")
    for engine, row in results["engines"].items():
        print(f"{engine:<14}{row['median_seconds']:>10}{row['photos_per_s']:>11}"
              f"{row['speedup_vs_loop']:>9}x")
    if ray_start is not None:
        print(f"(ray: the local instance took {ray_start:.1f} s to start, not counted above; "
              "each run includes the actors loading the model)")
    print(f"same first caption, loop vs caption-dir: {results['same_first_caption_loop_vs_caption_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
