"""Serving without TensorFlow: the CLI, caption-dir and the app run on LiteRT and NumPy, and a
venv made from requirements-serve.txt alone (no TensorFlow in it) gives the full install's
captions."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, SHARED_DATA, TRAINED, require

pytestmark = pytest.mark.integration
HELPER = Path(__file__).with_name("serve_helper.py")


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    """Three Flickr8k test photos and a file that is not a photo, in a folder."""
    folder = tmp_path_factory.mktemp("photos")
    names = (shared_data / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()[5:8]
    for name in names:
        (folder / name).write_bytes((shared_data / "Flicker8k_Dataset" / name).read_bytes())
    (folder / "notes.jpg").write_text("not a photo")
    return folder, [folder / n for n in names]


def serve(python, *args, timeout=300) -> dict:
    """serve_helper.py's JSON line, run by `python` from the checkout, with the real model."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CAPTIONER_MODEL_DIR": str(TRAINED),
           "CAPTIONER_DATA_DIR": str(SHARED_DATA)}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([str(python), str(HELPER), *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def cli_captions(result: dict) -> dict:
    return {Path(r["image"]).name: [c["caption"] for c in r["captions"]]
            for r in json.loads(result["stdout"]) if "captions" in r}


def test_cli_caption_dir_and_app_import_no_tensorflow(photos, tmp_path, shared_data):
    folder, paths = photos
    caption = serve(sys.executable, "cli", "caption", *paths, "--top", "2", "--json")
    assert caption["exit"] == 0 and not caption["tensorflow"] and not caption["keras"]
    assert all(len(c) == 2 for c in cli_captions(caption).values()) and len(cli_captions(caption)) == 3

    out = tmp_path / "captions.jsonl"
    many = serve(sys.executable, "cli", "caption-dir", folder, "--out", out, "--quiet")
    assert many["exit"] == 1 and not many["tensorflow"]   # 1: the file that is not a photo
    records = {Path(r["path"]).name: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == {p.name for p in paths} | {"notes.jpg"}
    assert "not an image" in records["notes.jpg"]["error"]
    for path in paths:  # the same captions as `caption`, batched on LiteRT
        assert records[path.name]["captions"][0]["caption"] == cli_captions(caption)[path.name][0]
        assert records[path.name]["captions"][0]["verdict"] in ("likely right", "unsure", "likely wrong")

    app = serve(sys.executable, "app")
    assert app["exit"] == 0 and not app["tensorflow"] and not app["keras"], app
    assert len(app["captions"]) == 3

    keras = serve(sys.executable, "cli", "caption", *paths, "--top", "2", "--json", "--encoder", "tensorflow")
    assert keras["tensorflow"] and cli_captions(keras) == cli_captions(caption)


@pytest.fixture(scope="module")
def serving_venv():
    """A venv with requirements-serve.txt alone (plus pytest, which the app helper's fixtures
    import). Built once per version of the file under build/, so a developer's reruns reuse
    it; CI's fresh clone builds it from scratch."""
    requirements = (ROOT / "requirements-serve.txt").read_bytes()
    venv = ROOT / "build" / f"venv-serve-{hashlib.sha256(requirements).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").is_file():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pytest_pin = next(line.split()[0] for line in (ROOT / "requirements.txt").read_text().splitlines()
                          if line.startswith("pytest=="))
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                               "-r", str(ROOT / "requirements-serve.txt"), pytest_pin],
                              capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stderr[-3000:]
        (venv / ".installed").write_text("")
    return python


def test_the_serving_only_venv_captions_as_the_full_install(serving_venv, photos, shared_data):
    from captioner.vision.litert import cached_lite_path
    require(cached_lite_path(), "LiteRT Xception (run `make setup`)")
    no_tf = subprocess.run([str(serving_venv), "-c", "import tensorflow"], capture_output=True)
    assert no_tf.returncode != 0   # it really has no TensorFlow
    convert = subprocess.run([str(serving_venv), "-m", "captioner", "fetch-weights"], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert convert.returncode == 2 and "Traceback" not in convert.stderr
    assert "needs TensorFlow" in convert.stderr and len(convert.stderr.strip().splitlines()) == 1
    _, paths = photos
    full = serve(sys.executable, "cli", "caption", *paths, "--top", "2", "--json", "--encoder", "tensorflow")
    lean = serve(serving_venv, "cli", "caption", *paths, "--top", "2", "--json")
    assert lean["exit"] == 0 and not lean["tensorflow"]
    assert cli_captions(lean) == cli_captions(full)
    assert serve(serving_venv, "app")["captions"] == serve(sys.executable, "app")["captions"]
