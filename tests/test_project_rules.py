"""Rules the whole code base keeps: no pickle, no raw HTML, the library never imports Streamlit."""
import re

from conftest import ROOT

SOURCES = [p for p in ROOT.rglob("*.py")
           if ".venv" not in p.parts and "build" not in p.parts and p.name != "test_project_rules.py"]


def test_sources_found():
    assert len(SOURCES) > 20


def test_no_pickle_anywhere():
    for path in SOURCES:
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(c?pickle|joblib|dill)\b", text, re.M), path
        assert "allow_pickle=True" not in text, path


def test_no_unsafe_html():
    for path in SOURCES:
        assert "unsafe_allow_html" not in path.read_text(), path


def test_library_does_not_import_streamlit():
    for path in (ROOT / "captioner").rglob("*.py"):
        assert not re.search(r"^\s*(import|from)\s+streamlit", path.read_text(), re.M), path


def test_streamlit_config_caps_uploads_and_keeps_xsrf():
    text = (ROOT / ".streamlit" / "config.toml").read_text()
    assert re.search(r"^maxUploadSize\s*=\s*20\s*$", text, re.M)
    assert re.search(r"^enableXsrfProtection\s*=\s*true\s*$", text, re.M)


def test_served_app_watches_no_files():
    # Watching the tree (.venv included) flooded the server log with inotify overflows.
    text = (ROOT / ".streamlit" / "config.toml").read_text()
    assert re.search(r'^fileWatcherType\s*=\s*"none"\s*$', text, re.M)


def test_the_makefile_trains_each_committed_model_with_the_settings_it_recorded():
    """`make train` is how trained/ is reproduced: its flags for each decoder (the extension's
    overriding the first run's) give the training settings the committed model's config.json
    recorded, so a model trained some other way cannot be committed unnoticed."""
    import dataclasses
    import json
    from captioner.decoders.config import Config
    makefile = (ROOT / "Makefile").read_text()
    defaults = Config()
    models = re.search(r"^MODELS = (.*)$", makefile, re.M).group(1).split()
    committed = sorted(d.name for d in (ROOT / "trained").iterdir() if (d / "config.json").is_file())
    assert sorted(models) == committed  # `make train` trains every committed model, and no other
    for model in models:
        flags = {}
        for variable in (f"TRAIN_FLAGS_{model}", f"EXTEND_FLAGS_{model}"):
            line = re.search(rf"^{variable} \?=(.*)$", makefile, re.M)
            words = line.group(1).split() if line else []
            flags.update({k[2:].replace("-", "_"): v for k, v in zip(words[::2], words[1::2])})
        made = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(Config)}
        made.update({k: type(made[k])(v) for k, v in flags.items()})
        recorded = json.loads((ROOT / "trained" / model / "config.json").read_text())
        decoder = re.search(rf"^DECODER_{model} \??= (.*)$", makefile, re.M)
        assert recorded["decoder"] == (decoder.group(1).strip() if decoder else model), model
        for key, value in recorded.items():
            if key in made and key not in ("decoder", "vocab_size", "extra", "feature_dim", "length_alpha"):
                assert made[key] == value, (model, key, made[key], value)
