"""trained/ensemble/: models in trained/ decoding as one (decoders/ensemble.py), a model like the others.

The directory holds no weights of its own. ensemble.json names the members (directories
beside it, so trained/ can move) with their weights, the length penalty chosen on val, and
the sha256 of each member's weights as they were scored. Beside it: the members' vocab.json
(pages that read a model's vocabulary work unchanged), metrics.json, test_captions.json
and manifest.json, which lists every file's sha256, as a trained model's does.

A member retrained since the ensemble was scored makes those scores wrong: the ensemble is
then *stale*. It refuses to load, saying which member changed and how to re-score it, and
it is never the default model (`recorded_test_cider` is -1).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from captioner.model_dirs.artifacts import (MANIFEST, METRICS, VOCAB, ArtifactError,
                                            TrainedModel, load_trained, read_json, verified_manifest,
                                            weights_fingerprint, write_json_atomic, write_model_dir,
                                            write_scores)
from captioner.decoders.config import Config
from captioner.data.text import Vocabulary

ENSEMBLE = "ensemble.json"
RESCORE = "re-score it with `make ensemble`"


@dataclass
class TrainedEnsemble:
    directory: Path
    config: Config              # the first member's, with the ensemble's length penalty
    vocab: Vocabulary
    members: list[TrainedModel]
    member_names: list[str]
    weights: list[float]
    manifest: dict
    metrics: dict | None = None
    history: list = field(default_factory=list)  # nothing was trained

    def numpy_decoder(self):
        from captioner.decoders.ensemble import EnsembleDecoder
        return EnsembleDecoder([m.numpy_decoder() for m in self.members], self.weights)


def mix_key(weights) -> str:
    """How a mix of members is named in ensemble.json's val_search: the first member's weight
    for two members (the second's is the rest), every member's weight, colon-separated, for more."""
    weights = [float(w) for w in weights]
    return str(weights[0]) if len(weights) == 2 else ":".join(map(str, weights))


def parse_mixes(text: str, members: int) -> list[tuple[float, ...]]:
    """Mixes to try, one weight per member each, as the scripts' --weights spell them:
    "0.3,0.4" for two members (the first one's weight; the second gets the rest), and
    "0.4:0.3:0.3,0.5:0.3:0.2" for any number. ValueError says what is wrong."""
    mixes = []
    for choice in text.split(","):
        try:
            mix = [float(w) for w in choice.split(":")]
        except ValueError:
            raise ValueError(f"expected numbers, got {choice!r}") from None
        if len(mix) == 1 and members == 2:
            mix.append(round(1 - mix[0], 6))
        if len(mix) != members:
            raise ValueError(f"{choice!r}: expected {members} weights, colon-separated, one per model")
        if not all(0.0 <= w <= 1.0 for w in mix) or abs(sum(mix) - 1) > 1e-6:
            raise ValueError(f"{choice!r}: each weight must be between 0 and 1, and they must sum to 1")
        if tuple(mix) in mixes:
            raise ValueError(f"{choice!r} is given twice")
        mixes.append(tuple(mix))
    return mixes


def is_ensemble(directory: str | os.PathLike) -> bool:
    return (Path(directory) / ENSEMBLE).is_file()


def _description(directory: Path) -> dict:
    description = read_json(directory / ENSEMBLE)
    keys = {"members", "weights", "members_weights_sha256", "length_alpha"}
    if (not isinstance(description, dict) or not keys <= set(description)
            or not len(description["members"]) == len(description["weights"])
            == len(description["members_weights_sha256"])):
        raise ArtifactError(f"{directory / ENSEMBLE}: expected {', '.join(sorted(keys))}, "
                            "one entry per member.")
    return description


def stale_members(directory: str | os.PathLike) -> list[str]:
    """The members whose weights are missing or differ from those the ensemble was scored
    with, by their manifests (cheap: no file is hashed; loading checks the files too)."""
    directory = Path(os.path.abspath(directory))  # "." has no parent to find the members in
    description = _description(directory)
    stale = []
    for name, scored in zip(description["members"], description["members_weights_sha256"]):
        try:
            now = weights_fingerprint(read_json(directory.parent / name / MANIFEST)["files"])
        except (ArtifactError, KeyError, TypeError):
            now = None
        if now != scored:
            stale.append(name)
    return stale


def load_ensemble(directory: str | os.PathLike) -> TrainedEnsemble:
    directory = Path(os.path.abspath(directory))
    manifest = verified_manifest(directory, (ENSEMBLE, VOCAB))
    description = _description(directory)
    stale = stale_members(directory)
    if stale:
        raise ArtifactError(f"{directory}: scored with other weights of {', '.join(stale)} than "
                            f"{directory.parent} now holds (retrained since?); {RESCORE}.")
    members = [load_trained(directory.parent / name) for name in description["members"]]
    try:
        vocab = Vocabulary.load(directory / VOCAB)
    except ValueError as exc:
        raise ArtifactError(str(exc)) from None
    if any(m.vocab.itos != vocab.itos for m in members):
        raise ArtifactError(f"{directory / VOCAB}: differs from its members' vocabularies; {RESCORE}.")
    config = dataclasses.replace(members[0].config, length_alpha=float(description["length_alpha"]))
    metrics = read_json(directory / METRICS) if (directory / METRICS).is_file() else None
    return TrainedEnsemble(directory, config, vocab, members, list(description["members"]),
                           [float(w) for w in description["weights"]], manifest, metrics)


def save_ensemble(out_dir: str | os.PathLike, member_dirs: list, weights_sha256: list[str], vocab: Vocabulary,
                  weights: list[float], length_alpha: float, metrics: dict | None,
                  photo_scores: list[dict] | None, info: dict, val_search: dict | None = None) -> Path:
    """Write trained/ensemble (or `out_dir`) atomically; the members must be beside it.
    `weights_sha256` and `vocab` are those of the members as they were scored, not re-read
    now: a member replaced meanwhile must leave the ensemble stale, not look current."""
    out_dir = Path(os.path.abspath(out_dir))  # lexically: a member may be a symlink
    member_dirs = [Path(os.path.abspath(d)) for d in member_dirs]
    if any(d.parent != out_dir.parent for d in member_dirs):
        raise ArtifactError(f"{out_dir}: an ensemble's members must be directories beside it, "
                            f"got {', '.join(map(str, member_dirs))}.")
    description = {"members": [d.name for d in member_dirs], "weights": [float(w) for w in weights],
                   "members_weights_sha256": list(weights_sha256),
                   "length_alpha": float(length_alpha), "val_search": val_search or {}}

    def write(staging: Path) -> list[str]:
        write_json_atomic(staging / ENSEMBLE, description)
        vocab.save(staging / VOCAB)
        return [ENSEMBLE, VOCAB, *write_scores(staging, metrics, photo_scores)]
    first = read_json(member_dirs[0] / MANIFEST)
    info = {"decoder": "ensemble", "members": description["members"], "dataset": first.get("dataset"), **info}
    return write_model_dir(out_dir, write, info)


def ensemble_records(directory: Path) -> dict:
    """What the Training page shows of an ensemble, shaped as a trained model's records: its
    "config" is the ensemble's settings, its history empty, and "stale" the members retrained
    since it was scored."""
    description = _description(directory)
    manifest = read_json(directory / MANIFEST)
    first = mix_key(description["weights"])
    config = {"decoder": "ensemble",
              "members": ", ".join(f"{name} {w:g}" for name, w in zip(description["members"], description["weights"])),
              "length_alpha": description["length_alpha"],
              "extra": {"val_alpha_search": (description.get("val_search") or {}).get(first),
                        # val CIDEr at beam 3 by the mix (rows: mix_key) and alpha
                        "val_mix_search": {weight: {alpha: scores.get("CIDEr") for alpha, scores in by_alpha.items()}
                                           for weight, by_alpha in (description.get("val_search") or {}).items()}}}
    metrics = read_json(directory / METRICS) if (directory / METRICS).is_file() else None
    return {"manifest": manifest, "config": config, "history": [], "metrics": metrics,
            "stale": stale_members(directory)}
