"""Serving, run in a subprocess by tests/test_serving.py (also inside the serving-only venv):
the CLI (`cli ARGS...`) or the app's caption page on an example photo (`app`). Prints one
JSON line: the exit code, what was printed or captioned, and whether TensorFlow was imported."""
from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def run_cli(argv: list[str]) -> dict:
    from captioner.__main__ import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return {"exit": code, "stdout": out.getvalue()}


def run_app() -> dict:
    from streamlit.testing.v1 import AppTest

    from app_fixtures import APP, beam_captions
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.radio(key="source").set_value("Example photo").run()
    at.selectbox(key="example").set_value("Rocket launch").run()
    return {"exit": 1 if at.exception else 0, "errors": [e.value for e in at.exception],
            "captions": beam_captions(at)}


if __name__ == "__main__":
    result = run_app() if sys.argv[1] == "app" else run_cli(sys.argv[2:])
    result["tensorflow"] = "tensorflow" in sys.modules
    result["keras"] = "keras" in sys.modules
    print(json.dumps(result))
