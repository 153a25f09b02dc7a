"""`pip install .` in a fresh venv gives a `captioner` command that captions with the bundled
model from any working directory (not only from the repository)."""
import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, require

pytestmark = pytest.mark.integration

# What the package is built from; the copy proves it needs nothing else from the repository.
SOURCES = ("pyproject.toml", "README.md", "captioner", "trained")


def run(*args, cwd, timeout=300):
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "CAPTIONER_MODEL_DIR", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory, trained_dir) -> Path:
    """A venv with the package installed from a copy of the sources; its bin/ folder."""
    root = tmp_path_factory.mktemp("package")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    venv = root / "venv"
    made = run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv, cwd=root)
    assert made.returncode == 0, made.stderr
    # A venv made from a venv sees the base interpreter's packages, not this venv's: a .pth
    # file adds ours (TensorFlow, Keras, pip, setuptools) behind the new venv's own, so
    # nothing is downloaded and the installed captioner still comes first.
    new_site = next((venv / "lib").glob("python3*/site-packages"))
    (new_site / "test-parent-env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    # --no-build-isolation: the build backend comes from this environment, so no index is needed.
    built = run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps",
                "--no-build-isolation", source, cwd=root)
    assert built.returncode == 0, built.stdout + built.stderr
    return venv / "bin"


def test_installed_command_uses_the_packaged_model_from_any_directory(installed, tmp_path):
    where = run(installed / "python", "-c",
                "import captioner, captioner.model_dirs.catalog as c; print(captioner.__file__); "
                "print(c.DEFAULT_MODEL_DIR)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    package_file, model_dir = where.stdout.split()
    venv = installed.parent
    assert Path(package_file).is_relative_to(venv) and Path(model_dir).is_relative_to(venv)
    assert Path(model_dir, "merge", "manifest.json").is_file()

    info = run(installed / "captioner", "info", cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    models = json.loads(info.stdout)
    assert models and all(Path(m["model"]).is_relative_to(venv) for m in models)


def test_installed_command_captions_a_photo(installed, tmp_path, shared_data):
    from captioner.vision.encoder import cached_weights_path
    require(cached_weights_path(), "Xception weights (run `make setup`)")
    test_names = (shared_data / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()
    photo = shared_data / "Flicker8k_Dataset" / test_names[0]
    result = run(installed / "captioner", "caption", photo, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert record["image"] == str(photo) and record["model"] in ("merge", "attention", "ensemble")
    words = record["captions"][0]["caption"].split()
    assert 3 <= len(words) <= 25

    usage = run(installed / "captioner", "--help", cwd=tmp_path)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: captioner")
    assert "caption-dir" in usage.stdout


CHECK_REQUIREMENTS = r"""
import ast, importlib.metadata as md, json, pathlib, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
declared = {norm(re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0]) for r in md.requires("captioner") or []}
package = pathlib.Path(sys.argv[1])
modules = set()
for path in package.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            modules.add(node.module.split(".")[0])
third_party = sorted(m for m in modules - set(sys.stdlib_module_names) if m != "captioner")
providers = md.packages_distributions()
undeclared = [m for m in third_party
              if norm(m) not in declared and not {norm(d) for d in providers.get(m, [])} & declared]
print(json.dumps({"third_party": third_party, "undeclared": undeclared}))
"""


def test_installed_metadata_declares_every_library_the_package_imports(installed, tmp_path):
    """The venv above reuses this one's packages, so pip never resolved the declared
    dependencies: check instead that every third-party module the installed package imports
    is provided by a distribution it declares (core or an extra)."""
    where = run(installed / "python", "-c", "import captioner, os; print(os.path.dirname(captioner.__file__))",
                cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    result = run(installed / "python", "-c", CHECK_REQUIREMENTS, where.stdout.strip(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert {"numpy", "tensorflow", "keras", "PIL", "h5py"} <= set(found["third_party"]), found
    assert found["undeclared"] == [], found
