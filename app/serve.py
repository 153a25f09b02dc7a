"""Serve the app warm: `python -m app.serve [streamlit options]` loads the models, the encoder,
the trust estimates and the indexes the caption page reads, then starts `streamlit run
streamlit_app.py` in the same process.

Plain `streamlit run` answers its health check at once and lets the first visitor wait while
the page loads everything (about 2 s here with LiteRT, 16 s with TensorFlow). Here the caches
(`st.cache_resource`, process-wide) are filled before the server listens, so the first caption
takes as long as every later one. Whatever fails to load is left for the page to explain:
the server starts regardless.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # as streamlit_app.py, before NumPy loads
M_ARENA_MAX = -8   # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Each session's script runs in a thread of its own, and glibc gives threads malloc arenas
    of their own (up to 8 per core), each keeping the memory its thread freed: measured here,
    4 sessions peaked at 701 MB with the default and 637 MB with 2 arenas, at no cost in
    speed. Must run before the server's threads start; False where malloc is not glibc's."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def preload() -> float:
    """Fill the app's caches as its first visitor would; returns the seconds it took."""
    started = time.perf_counter()
    # Outside a session Streamlit warns, for every cached call, that there is no script context.
    logging.getLogger("streamlit.runtime.scriptrunner_utils.script_run_context").setLevel(logging.ERROR)
    logging.getLogger("streamlit.runtime.caching.cache_data_api").setLevel(logging.ERROR)
    import pandas  # noqa: F401  (the caption page's tables)

    from app import explain  # noqa: F401  (matplotlib, the figures)
    from app import support
    captioners, _ = support.load_captioners()
    if support.encoder_error() is None and captioners:
        default = next(iter(captioners.values()))
        for captioner in captioners.values():
            captioner.trust_model  # noqa: B018  (loads it)
        support.familiarity()
        data, _ = support.flickr8k(support.default_data_dir())
        if data is not None:  # the nearest photos need Flickr8k to show: no index without it
            support.neighbour_index(default.imagenet_checksum)
    return time.perf_counter() - started


def warm_up() -> str:
    """Preload, and say how it went; a failure is only reported: the server starts anyway."""
    try:
        return f"Preloaded the models and indexes in {preload():.1f} s"
    except Exception as exc:  # no model, a damaged one: the page explains it to the visitor
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"Not preloaded ({reason}); the app will say what is wrong."


def server_command(python: str, port: int) -> list[str]:
    """How tests and benchmarks start the app as `make run` does, headless, on `port`."""
    return [python, "-m", "app.serve", "--server.port", str(port), "--server.address", "127.0.0.1",
            "--server.headless", "true", "--server.fileWatcherType", "none",
            "--browser.gatherUsageStats", "false"]


def wait_until_healthy(process, url: str, timeout: float = 120) -> str | None:
    """None once `url`'s health check answers ok; otherwise why not (the process exited, or
    `timeout` seconds passed)."""
    import urllib.request
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            return f"streamlit exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return None
        except OSError:
            pass
        if time.monotonic() > deadline:
            return f"streamlit did not answer within {timeout:.0f} s"
        time.sleep(0.05)


def stop_server(process) -> None:
    """Terminate, and kill what does not stop within 15 s."""
    import subprocess
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    limit_malloc_arenas()
    sys.path.insert(0, str(ROOT))
    print(warm_up(), file=sys.stderr, flush=True)
    from streamlit.web import cli
    sys.argv = ["streamlit", "run", str(ROOT / "streamlit_app.py"), *(sys.argv[1:] if argv is None else argv)]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
