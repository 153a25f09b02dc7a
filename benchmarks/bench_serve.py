#!/usr/bin/env python
"""The served app as its visitors meet it, on LiteRT against TensorFlow in the same run.

    python benchmarks/bench_serve.py [--runs 3] [--encoders litert,tensorflow] [--json]
                                     [--python build/venv-serve-*/bin/python] [--without-flickr8k]

For each encoder, in turn (the order alternates between runs), it starts `streamlit run`,
then reports:
  - health_s: from starting the server to /_stcore/health answering;
  - upload_box_s: from health to the first visitor's upload box (the models load now);
  - first_caption_s: from health to that visitor's caption on screen (Chromium opens the
    page, uploads a photo and waits for the beam-3 caption);
  - four_sessions_s: four Chromium sessions at once, each uploading another photo, until
    every one shows its caption and both beam trees;
  - peak_rss_mb: the server's peak resident memory (the kernel's VmHWM) over all of it.
Figures are medians over the runs; `--json` prints them with every run's own.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.serve import server_command, stop_server, wait_until_healthy  # noqa: E402
UPLOADER = '[data-testid="stFileUploaderDropzoneInput"]'
CAPTION = ".st-key-beam-3 :is(h3, em)"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")   # scikit-image's samples
TIMEOUT_MS = 180_000
KEYS = ("health_s", "upload_box_s", "first_caption_s", "four_sessions_s", "peak_rss_mb")


def photo_files(directory: Path) -> list[Path]:
    import skimage.data
    from PIL import Image
    paths = []
    for name in PHOTOS:
        buffer = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).save(buffer, "PNG")
        path = directory / f"{name}.png"
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    """The process's high-water mark of resident memory, as the kernel keeps it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc (not Linux?)")


SERVER_ENV: dict = {}   # what the command line adds to the server's environment


def start_server(python: str, encoder: str, port: int, log: Path) -> subprocess.Popen:
    env = dict(os.environ, CAPTIONER_ENCODER=encoder, PYTHONUNBUFFERED="1", **SERVER_ENV)
    env.pop("VIRTUAL_ENV", None)
    with open(log, "wb") as out:
        return subprocess.Popen(server_command(python, port), cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


async def visit(browser, url: str, photo: Path, trees: bool, marks: dict | None = None) -> str:
    """One visitor: open the page, upload `photo`, wait for its caption (and the beam trees).
    `marks` gets the time the upload box appeared."""
    context = await browser.new_context(viewport={"width": 1100, "height": 900})
    try:
        page = await context.new_page()
        await page.goto(url, timeout=TIMEOUT_MS)
        uploader = page.locator(UPLOADER)
        await uploader.wait_for(state="attached", timeout=TIMEOUT_MS)
        if marks is not None:
            marks["upload_box"] = time.perf_counter()
        await uploader.set_input_files(photo, timeout=TIMEOUT_MS)
        heading = page.locator(CAPTION).first
        await heading.wait_for(timeout=TIMEOUT_MS)
        if trees:
            await page.locator('[data-testid="stGraphVizChart"] svg').nth(1).wait_for(timeout=TIMEOUT_MS)
        if await page.locator('[data-testid="stException"]').count():
            raise SystemExit(f"the app showed an exception for {photo.name}")
        return (await heading.inner_text()).strip()
    finally:
        await context.close()


async def one_run(python: str, encoder: str, photos: list[Path], chromium: str, workdir: Path) -> dict:
    from playwright.async_api import async_playwright
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"server-{encoder}-{port}.log"
    async with async_playwright() as p:
        # The browser is up before the server starts, so its launch is not in the timings.
        browser = await p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        started = time.perf_counter()
        process = start_server(python, encoder, port, log)
        try:
            problem = wait_until_healthy(process, url)
            if problem:
                raise SystemExit(f"{problem}:\n{log.read_text()}")
            healthy = time.perf_counter()
            marks = {}
            first = await visit(browser, url, photos[0], trees=False, marks=marks)
            first_caption = time.perf_counter()
            captions = await asyncio.gather(*(visit(browser, url, photo, trees=True) for photo in photos[1:5]))
            four = time.perf_counter()
            rss = peak_rss_mb(process.pid)
        finally:
            stop_server(process)
            await browser.close()
    return {"health_s": round(healthy - started, 2), "first_caption_s": round(first_caption - healthy, 2),
            "upload_box_s": round(marks["upload_box"] - healthy, 2),
            "four_sessions_s": round(four - first_caption, 2), "peak_rss_mb": round(rss),
            "captions": [first, *captions]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs of each encoder (default 3)")
    parser.add_argument("--encoders", default="litert,tensorflow", help="comma-separated (default both)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter that serves the app, e.g. a serving-only venv's (default: this one)")
    parser.add_argument("--chromium", default=os.environ.get("CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--without-flickr8k", action="store_true", help="serve as a host holding only the "
                        "models would (a 1 GB host): no dataset, so no nearest photos and trust without consensus")
    args = parser.parse_args(argv)
    if args.without_flickr8k:
        SERVER_ENV["CAPTIONER_DATA_DIR"] = str(ROOT / "build" / "no-flickr8k-here")
    encoders = args.encoders.split(",")
    runs: dict[str, list[dict]] = {e: [] for e in encoders}
    with tempfile.TemporaryDirectory() as tmp:
        photos = photo_files(Path(tmp))
        for run in range(args.runs):
            for encoder in (encoders if run % 2 == 0 else encoders[::-1]):
                result = asyncio.run(one_run(args.python, encoder, photos, args.chromium, Path(tmp)))
                runs[encoder].append(result)
                print(f"run {run + 1} {encoder}: {json.dumps({k: v for k, v in result.items() if k != 'captions'})}",
                      file=sys.stderr)
    summary = {e: {key: statistics.median(r[key] for r in rs) for key in KEYS}
               for e, rs in runs.items()}
    out = {"runs": args.runs, "python": args.python, "median": summary, "each_run": runs}
    if "litert" in summary:
        out["targets_met"] = {"peak_rss_under_700_mb": summary["litert"]["peak_rss_mb"] <= 700,
                              "first_caption_under_5_s": summary["litert"]["first_caption_s"] <= 5}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'median of ' + str(args.runs) + ' runs':<22}" + "".join(f"{e:>14}" for e in summary))
    for key, label in (("health_s", "start to health, s"), ("upload_box_s", "health to upload box, s"),
                       ("first_caption_s", "health to 1st caption, s"),
                       ("four_sessions_s", "4 sessions, s"), ("peak_rss_mb", "peak RSS, MB")):
        print(f"{label:<22}" + "".join(f"{summary[e][key]:>14}" for e in summary))
    if "targets_met" in out:
        print("targets met:", out["targets_met"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
