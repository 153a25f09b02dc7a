"""Which models trained/ holds, which one is the default, and loading any of them.

A model is a directory with a manifest: one decoder (trained/merge, trained/attention) or an
ensemble of them (trained/ensemble). The default is the best by recorded test CIDEr at beam 3,
passing over an ensemble whose members were retrained since it was scored.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from captioner.model_dirs.artifacts import (MANIFEST, METRICS, ArtifactError, TrainedModel, load_trained,
                                            model_records, read_json)
from captioner.model_dirs.ensemble_dir import (TrainedEnsemble, ensemble_records, is_ensemble, load_ensemble,
                                               stale_members)

# The committed models' names, which the command line's --model takes without a directory.
MODEL_NAMES = ("merge", "attention", "ensemble")


def _bundled_model_dir() -> Path:
    """trained/ of the checkout when running from the repository; otherwise the copy that
    `pip install .` puts inside the package (pyproject.toml maps trained/ to captioner/trained)."""
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "trained").is_dir():
        return checkout / "trained"
    return package / "trained"


DEFAULT_MODEL_DIR = _bundled_model_dir()


def default_model_root() -> Path:
    return Path(os.environ.get("CAPTIONER_MODEL_DIR") or DEFAULT_MODEL_DIR)


def available_models(root: str | os.PathLike | None = None) -> dict[str, Path]:
    """Model directories by name: the subdirectories of `root` holding a model (trained/merge,
    trained/attention, trained/ensemble), or `root` itself, named by its decoder, when it is
    one model."""
    root = Path(root or default_model_root())
    if (root / MANIFEST).is_file():
        if is_ensemble(root):
            return {"ensemble": root}
        try:
            name = read_json(root / "config.json").get("decoder", "merge")
        except ArtifactError:
            name = root.name
        return {name: root}
    if not root.is_dir():
        return {}
    return {d.name: d for d in sorted(root.iterdir()) if (d / MANIFEST).is_file()}


def is_model_name(model: str | None) -> bool:
    """Whether the command line's --model names a model of trained/ (a committed name, or the
    directory name of any model there, e.g. one trained with train.py --name) rather than a path."""
    if model is None or Path(model).exists():
        return False
    return model in MODEL_NAMES or model in available_models()


def model_name(trained: TrainedModel | TrainedEnsemble) -> str:
    """The name of a model built without its catalog's (Captioner(trained)): "ensemble", or
    its decoder's, as available_models names a directory that is one model. Captioner.load
    passes the name available_models gives it (trained/attention_imagenet's is its directory's)."""
    return "ensemble" if isinstance(trained, TrainedEnsemble) else trained.config.decoder


def test_cider(directory: Path) -> float:
    """A model's test CIDEr at beam 3 (as recorded by training), or -1 if it has none, or if
    it is an ensemble whose members have been retrained since it was scored."""
    try:
        if is_ensemble(directory) and stale_members(directory):
            return -1.0
        return float(read_json(Path(directory) / METRICS)["beam"]["3"]["CIDEr"])
    except (ArtifactError, KeyError, TypeError, ValueError):
        return -1.0


def resolve_model(root: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """The directory of model `name`, or of the best model by test CIDEr."""
    return ranked_models(root, name)[0]


def ranked_models(root: str | os.PathLike | None = None, name: str | None = None) -> list[Path]:
    """Model `name`'s directory alone, or every model's, the best by test CIDEr first."""
    root = Path(root or default_model_root())
    models = available_models(root)
    if not models:
        raise ArtifactError(f"{root}: no trained model here (run `make train`, or "
                            "training_scripts/train.py).")
    if name is None:
        return sorted(models.values(), key=lambda d: (test_cider(d), d.name), reverse=True)
    if name not in models:
        raise ArtifactError(f"{root}: no model named {name!r} (available: {', '.join(models)}).")
    return [models[name]]


def load_model(directory: str | os.PathLike) -> TrainedModel | TrainedEnsemble:
    """A trained model's directory, or an ensemble's."""
    return load_ensemble(directory) if is_ensemble(directory) else load_trained(directory)


def read_records(directory: str | os.PathLike) -> dict:
    """What training recorded about a model or an ensemble, without building it: {"manifest",
    "config", "history", "metrics" (None if not evaluated)}. For pages and plots that show many
    models."""
    return ensemble_records(Path(directory)) if is_ensemble(directory) else model_records(directory)


def convert_exit_flows(root: str | os.PathLike | None = None) -> list[Path]:
    """The LiteRT files serving needs for every model in `root` with its own exit flow: the
    shared trunk, ImageNet's exit flow from the same layer and each model's head, converted where missing (needs TensorFlow; `make
    setup` runs it). Returns the heads' paths."""
    from captioner.vision.tuned_encoder import convert_views, head_lite_path
    heads = []
    for directory in available_models(root).values():
        if is_ensemble(directory):
            continue   # its members are converted as models of their own
        try:
            flow = load_trained(directory).exit_flow
        except ArtifactError as exc:  # the app serves the other models and says what is wrong with this one
            print(f"warning: {exc} Its exit flow, if any, is not converted.", file=sys.stderr)
            continue
        if flow is not None:
            convert_views([flow])   # the trunk up to flow.layer and ImageNet's head once, then its own
            heads.append(head_lite_path(flow.sha256))
            print(f"{directory.name}: its exit flow for LiteRT at {heads[-1]}")
    return heads
