"""The trust estimate: a logistic regression over a handful of signals, saved as JSON beside
the models it was fitted for (trained/trust.json), and refused once they change.

    p(right) = sigmoid(intercept + sum_i coefficient_i * (signal_i - mean_i) / scale_i)

"Right" is defined in the file (a per-photo CIDEr-D threshold, see training_scripts/fit_trust.py);
the verdict reads p against two cut-offs. One signal, photo_kind, is itself a fitted linear
score: of the photo's cosine similarities to the training-photo centroids, how well the model
captions photos that resemble the same training photos. Everything here is NumPy: serving
never needs scikit-learn.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from captioner.model_dirs.artifacts import (MANIFEST, ArtifactError, read_json, weights_fingerprint,
                                            write_json_atomic)
from captioner.trust.signals import Evidence, signals

FILE = "trust.json"
FORMAT = 1
LIKELY_RIGHT, UNSURE, LIKELY_WRONG = "likely right", "unsure", "likely wrong"
REFIT = "refit it with `make trust`"
# Why a caption lost trust, for the signals that pulled its estimate down.
REASONS = {
    "log_prob": "the model found the caption as a whole unlikely",
    "weakest_word": "the model was unsure of a word",
    "beam_agreement": "the search's other captions say something else",
    "member_agreement": "the ensemble's two decoders disagree",
    "familiarity": "the photo is unlike the training photos",
    "outside": "the photo is unlike every photo the estimate was fitted on",
    "photo_kind": "the model often gets photos like this one wrong",
    "consensus": "people described the most similar training photos differently",
}
# trust.json holds two estimates per model: "models", from signals every install has, and
# "with_consensus", which also reads the nearest training photos' captions (consensus.py) and
# is used where Flickr8k and its nearest-photo index are at hand.
BASIC, WITH_CONSENSUS = "models", "with_consensus"


class TrustError(ArtifactError):
    """A trust estimate that cannot be used for this model (stale, damaged, missing)."""


@dataclass
class Trust:
    """How far to trust one caption."""
    value: float                  # calibrated probability that the caption is right
    verdict: str                  # likely right, unsure, likely wrong
    signals: dict[str, float]
    reasons: list[str] = field(default_factory=list)   # what pulled it down, most first

    @property
    def meaning(self) -> str:
        """One short line on what the number means."""
        return (f"Of captions the model gives this trust, about {round(10 * self.value)} in 10 "
                "are as good as a typical person's.")

    def to_json(self) -> dict:
        return {"trust": round(self.value, 3), "verdict": self.verdict,
                "signals": {k: round(v, 4) for k, v in self.signals.items()}, "reasons": self.reasons}


@dataclass
class TrustModel:
    model: str                              # the model it was fitted for
    weights_sha256: dict[str, str]          # its (members') weights, as fitted
    familiarity_sha256: str                 # the centroids photo_kind and familiarity read
    right: dict                             # {"metric", "threshold", "why"}
    signals: list[str]
    mean: list[float]
    scale: list[float]
    coefficients: list[float]
    intercept: float
    photo_kind: dict                        # {"coefficients": [k], "intercept"}
    cutoffs: dict                           # {"likely right": p, "unsure": p}: p at or above each
    fitted: dict = field(default_factory=dict)     # what it was fitted on, and held-out figures
    format: int = FORMAT
    consensus: dict = field(default_factory=dict)  # Consensus.fingerprint, if it reads consensus
    # {"familiarity_floor": f}: the least familiar photo it was fitted on. A logistic regression
    # extrapolates without limit; below the floor (a blank or one-colour image, noise) there is
    # no evidence for any trust, so it is capped under the "unsure" cut-off (`trust`).
    support: dict = field(default_factory=dict)

    def values(self, evidence: Evidence) -> dict[str, float]:
        found = signals(evidence)
        if "photo_kind" in self.signals:
            kind = self.photo_kind
            found["photo_kind"] = float(np.dot(kind["coefficients"], evidence.centroid_similarity)
                                        + kind["intercept"])
        missing = [s for s in self.signals if s not in found]
        if missing:
            raise TrustError(f"trust estimate for {self.model}: no evidence for {', '.join(missing)}.")
        return {s: found[s] for s in self.signals}

    def probability(self, values: dict[str, float]) -> float:
        z = self.intercept + sum(c * (values[s] - m) / sd for s, c, m, sd in
                                 zip(self.signals, self.coefficients, self.mean, self.scale))
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def outside_support(self, values: dict[str, float]) -> bool:
        floor = self.support.get("familiarity_floor")
        return floor is not None and "familiarity" in values and values["familiarity"] < floor

    def trust(self, values: dict[str, float]) -> float:
        """The probability, capped at half the "unsure" cut-off for a photo outside the support."""
        p = self.probability(values)
        return min(p, self.cutoffs[UNSURE] / 2) if self.outside_support(values) else p

    def verdict(self, probability: float) -> str:
        if probability >= self.cutoffs[LIKELY_RIGHT]:
            return LIKELY_RIGHT
        return UNSURE if probability >= self.cutoffs[UNSURE] else LIKELY_WRONG

    def assess(self, evidence: Evidence) -> Trust:
        values = self.values(evidence)
        p = self.trust(values)
        pulls = sorted((c * (values[s] - m) / sd, s) for s, c, m, sd in
                       zip(self.signals, self.coefficients, self.mean, self.scale))
        reasons = [REASONS[s] for pull, s in pulls if pull < -0.25]
        if self.outside_support(values):
            reasons.insert(0, REASONS["outside"])
        return Trust(p, self.verdict(p), values, reasons)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, where: str = FILE) -> "TrustModel":
        try:
            model = cls(**data)
            n = len(model.signals)
            assert model.format == FORMAT, f"format {model.format}, expected {FORMAT}"
            assert len(model.mean) == len(model.scale) == len(model.coefficients) == n, "one entry per signal"
            assert set(model.cutoffs) == {LIKELY_RIGHT, UNSURE}, "cut-offs for likely right and unsure"
            assert all(s > 0 for s in model.scale), "positive scales"
        except (TypeError, AssertionError) as exc:
            raise TrustError(f"{where}: not a trust estimate ({exc}).") from None
        return model


# -- trained/trust.json: one estimate per model ------------------------------------------
def model_weights(trained) -> dict[str, str]:
    """The sha256 of a model's weights (an ensemble's: each member's), from its manifest, by
    directory name (trained/attention_imagenet is an attention decoder too)."""
    members = getattr(trained, "members", None)
    if members is not None:
        return {name: weights_fingerprint(m.manifest["files"]) for name, m in zip(trained.member_names, members)}
    return {Path(os.path.abspath(trained.directory)).name: weights_fingerprint(trained.manifest["files"])}


def weights_on_disk(model_root: Path, names: list[str]) -> dict[str, str | None]:
    """The sha256 of the weights trained/<name>/ holds now, by its manifest (None: no model)."""
    found = {}
    for name in names:
        try:
            found[name] = weights_fingerprint(read_json(model_root / name / MANIFEST)["files"])
        except (ArtifactError, KeyError, TypeError):
            found[name] = None
    return found


def save_estimates(model_root: str | os.PathLike, estimates: dict[str, TrustModel], extra: dict | None = None,
                   with_consensus: dict[str, TrustModel] | None = None) -> Path:
    path = Path(model_root) / FILE
    write_json_atomic(path, {"format": FORMAT, BASIC: {n: e.to_json() for n, e in estimates.items()},
                             WITH_CONSENSUS: {n: e.to_json() for n, e in (with_consensus or {}).items()},
                             **(extra or {})})
    return path


def load_estimate(model_root: str | os.PathLike, name: str, weights: dict[str, str],
                  familiarity_sha256: str | None, consensus=None) -> TrustModel:
    """The estimate fitted for model `name` with exactly these weights; TrustError otherwise.
    With `consensus` (a trust.consensus.Consensus), the estimate that reads it, fitted over
    exactly its training photos, neighbour count and reference captions."""
    path = Path(model_root) / FILE
    if not path.is_file():
        raise TrustError(f"{path}: no trust estimate; fit one with `make trust`.")
    data = read_json(path)
    variant = WITH_CONSENSUS if consensus is not None else BASIC
    entry = (data.get(variant) or {}).get(name) if isinstance(data, dict) else None
    if entry is None:
        what = "that reads the training photos' captions " if consensus is not None else ""
        raise TrustError(f"{path}: no trust estimate {what}for the {name} model; {REFIT}.")
    estimate = TrustModel.from_json(entry, str(path))
    if ("consensus" in estimate.signals) != (consensus is not None):
        raise TrustError(f"{path}: the {name} model's {variant} estimate "
                         f"{'reads' if consensus is None else 'does not read'} consensus; {REFIT}.")
    if consensus is not None and estimate.consensus != consensus.fingerprint:
        raise TrustError(f"{path}: the estimate that reads the training photos' captions was fitted over "
                         f"other photos, neighbours or captions ({estimate.consensus.get('photos', '?')} photos, "
                         f"{estimate.consensus.get('neighbours', '?')} neighbours) than it would read now; {REFIT}.")
    changed = sorted(n for n in set(weights) | set(estimate.weights_sha256)
                     if weights.get(n) != estimate.weights_sha256.get(n))
    if changed:
        raise TrustError(f"{path}: fitted for other weights of {', '.join(changed)} than trained/ holds "
                         f"now (retrained since): the estimate is stale; {REFIT}.")
    if familiarity_sha256 != estimate.familiarity_sha256:
        raise TrustError(f"{path}: fitted with other training-photo centroids (training_photos.h5 was "
                         f"rebuilt since); {REFIT}.")
    return estimate


def keep_trusted(captions: list, min_trust: float | None) -> tuple[list, str | None]:
    """The captions at or above `min_trust`, and, if none is, why the photo gets none (for
    people who would rather have no alt text than wrong alt text)."""
    if min_trust is None:
        return captions, None
    kept = [c for c in captions if c.trust is not None and c.trust.value >= min_trust]
    if kept or not captions:
        return kept, None
    best = captions[0].trust
    why = "; ".join(best.reasons) if best and best.reasons else "no signal stood out"
    value = "no trust estimate" if best is None else f"trust {best.value:.2f} ({best.verdict}: {why})"
    return [], f"withheld: {value}, below --min-trust {min_trust:g}"
