"""The score tables of README.md and docs/, and each model's MODEL_CARD.md, written from the
models' own metrics.json, never by hand (`python -m captioner report`).

A table lives between two markers in a Markdown file, and only what lies between them is
rewritten:

    <!-- report:scores -->
    | model | ... |
    <!-- /report:scores -->
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from captioner.model_dirs.artifacts import (EVERYDAY_METRICS, HEAD_WEIGHTS, MANIFEST, ArtifactError, read_json,
                                           sha256_file, write_text_atomic)
from captioner.model_dirs.catalog import MODEL_NAMES, available_models, read_records, resolve_model

MODEL_CARD = "MODEL_CARD.md"
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "CIDEr")
BEAMS = ("1", "3", "5")
SHOWN_BEAM = "3"  # the app's default beam width, and the one papers on Flickr8k report
# Published results on the same Flickr8k test split at beam 3, for comparison; a range where
# a paper reports several runs or variants, "" where it reports no such figure.
PUBLISHED = (
    ("merge, frozen VGG-16 (Tanti et al. 2018)", {"BLEU-4": "0.178-0.185", "CIDEr": "0.469-0.480"}),
    ("soft / adaptive attention, frozen VGG-16 (sulabhkatiyar/Spatial_Att, Adaptive_Att)",
     {"BLEU-4": "0.205", "CIDEr": "0.493-0.524"}),
    ("adaptive attention, fine-tuned ResNet-152 (sulabhkatiyar/Adaptive_Att)",
     {"BLEU-4": "0.233", "CIDEr": "0.566-0.589"}),
)
PEOPLE = "people: each photo's first reference against the other four"


@dataclass
class Model:
    name: str
    directory: Path
    records: dict
    default: bool

    @property
    def metrics(self) -> dict:
        return self.records["metrics"]

    @property
    def config(self) -> dict:
        return self.records["config"]

    @property
    def manifest(self) -> dict:
        return self.records["manifest"]

    @property
    def everyday(self) -> dict | None:
        """Scores on photos from outside Flickr8k, if measured (training_scripts/evaluate.py --everyday)."""
        path = self.directory / EVERYDAY_METRICS
        return read_json(path) if path.is_file() else None


def scored_models(root: str | os.PathLike | None = None) -> list[Model]:
    """Every model under `root` that has test metrics, merge, attention, ensemble first."""
    found = available_models(root)
    if not found:
        raise ArtifactError(f"{root}: no trained model here.")
    default = resolve_model(root)
    order = {name: i for i, name in enumerate(MODEL_NAMES)}
    models = []
    for name, directory in sorted(found.items(), key=lambda item: (order.get(item[0], len(order)), item[0])):
        records = read_records(directory)
        if records.get("metrics"):
            models.append(Model(name, directory, records, directory == default))
    return models


def describe(model: Model) -> str:
    """A model's one-line name in tables: what it is and how it was trained."""
    config = model.config
    if config.get("decoder") == "ensemble":
        mix = " + ".join(f"{w} {n}" for n, w in ensemble_members(config))
        return f"ensemble: {mix}"
    label = config.get("decoder", model.name)
    if model.manifest.get("best_phase") == "scst":
        label += " + contrastive self-critical" if config.get("scst_contrast_weight") else " + self-critical"
    if config.get("scst_teacher"):
        teacher = model.manifest.get("scst_teacher") or {}
        earlier = source_state(model, config["scst_teacher"], manifest_sha=teacher.get("manifest_sha256")) == "retrained"
        label += f", distilling {'an earlier' if earlier else 'the'} {Path(config['scst_teacher']).name} model"
    if config.get("exit_flow_from"):
        earlier = source_state(model, config["exit_flow_from"], exit_flow_sha=flow_copy(model.manifest)) == "retrained"
        label += (f", reading {'an earlier' if earlier else 'the'} {Path(config['exit_flow_from']).name} "
                  "model's tuned exit flow")
    elif model.manifest.get("exit_flow"):
        label += f", Xception's {TUNED_PART.get(config.get('finetune_encoder'), 'exit flow')} tuned"
    return label


TUNED_PART = {"exit_flow": "exit flow", "block14": "block 14"}


def ensemble_members(config: dict) -> list[tuple[str, str]]:
    """[(member name, its weight as written)] of an ensemble's config ("attention 0.5, merge 0.5")."""
    return [tuple(part.rsplit(" ", 1)) for part in config.get("members", "").split(", ") if part]


def encoder_sentence(model: Model) -> str:
    """What the model card says of the encoder: frozen at ImageNet weights, or partly tuned."""
    encoder = model.manifest.get("encoder") or {}
    start = f"The encoder is Xception with ImageNet weights (sha256 `{encoder.get('weights_checksum', '')[:12]}...`)"
    tuned = model.manifest.get("exit_flow")
    if model.config.get("decoder") == "ensemble":
        members = [name for name, _ in ensemble_members(model.config)]
        manifests = [model.directory.parent / n / "manifest.json" for n in members]
        own = [n for n, path in zip(members, manifests) if path.is_file() and read_json(path).get("exit_flow")]
        if own:
            shas = {read_json(path).get("files", {}).get("exit_flow.weights.h5") for path in manifests
                    if path.is_file() and read_json(path).get("exit_flow")}
            if len(shas) == 1 and len(own) == len(members):
                return start + "; its members read one tuned exit flow, which runs once a photo (see their cards)."
            kinds = "a tuned exit flow" if len(shas) == 1 else "tuned exit flows of their own"
            rest = (" (see its card), the others through ImageNet's, frozen" if len(own) < len(members)
                    else " (see their cards)")
            return start + f"; each member reads its own map: {', '.join(own)} through {kinds}{rest}."
    if not tuned:
        return start + ", frozen."
    if model.config.get("exit_flow_from"):
        source, copy = model.config["exit_flow_from"], flow_copy(model.manifest)
        return (start + f"; it reads the exit flow (from `{tuned.get('layer')}` on) that "
                f"`{source}` tuned, held fixed while this decoder trained "
                f"(a copy of it, byte for byte, is `exit_flow.weights.h5`, sha256 `{copy[:12]}...`)"
                f"{retrained_since(model, source, exit_flow_sha=copy)}, and the rest stays frozen.")
    part = TUNED_PART.get(model.config.get("finetune_encoder"), "exit flow")
    phases = ("in cross-entropy, then held fixed in self-critical training"
              if model.config.get("scst_exit_flow") == "fixed" else "in cross-entropy and self-critical training")
    float16 = tuned.get("float16") or {}
    stored = (f" Stored in float16 (`exit_flow.weights.h5`): val CIDEr at beam 3 "
              f"{float16['val_cider_beam3_float16']:.4f}, against {float16['val_cider_beam3_float32']:.4f} in float32, "
              f"the same caption for {float16['same_caption']:.1%} of the val photos."
              if {"val_cider_beam3_float16", "val_cider_beam3_float32", "same_caption"} <= set(float16) else "")
    mirror = model.config.get("finetune_mirror") or 0
    mirrored = (f" In its tuned cross-entropy epochs a training photo was read mirrored left to right "
                f"with probability {mirror:g} (never one whose captions say left or right)." if mirror else "")
    return (start + f"; its {part} ({tuned.get('parameters', 0):,} parameters, from `{tuned.get('layer')}` on) "
            f"was tuned with this decoder from epoch {tuned.get('tuned_from_epoch')}, {phases}, and the rest "
            f"stays frozen.{mirrored}{stored}")


def _number(value) -> str:
    return "" if value is None else f"{value:.3f}"


def _count(value) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _share(value) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def scores_table(models: list[Model]) -> str:
    """The README's table: each model at beam 3, published results, people."""
    header = "| model | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | CIDEr | distinct captions |"
    rows = [header, "|" + "---|" * 8]
    for m in models:
        scores = m.metrics["beam"][SHOWN_BEAM]
        name = f"**{describe(m)}** (the default)" if m.default else describe(m)
        cells = [_number(scores.get(k)) for k in METRICS]
        cells[3], cells[5] = f"**{cells[3]}**", f"**{cells[5]}**"
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {_share(m.metrics['distinct_captions'][SHOWN_BEAM])} |")
    for name, published in PUBLISHED:
        rows.append(f"| {name} | " + " | ".join(published.get(k, "") for k in METRICS) + " | |")
    rows.append(_people_row(models, 0, 1))
    return "\n".join(rows)


def all_beams_table(models: list[Model]) -> str:
    """docs/training.md's table: every model at every beam width, with the caption statistics."""
    header = ("| model | beam | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | METEOR | CIDEr | distinct captions | words "
              "| distinct words | bad endings | repeated pair |")
    rows = [header, "|" + "---|" * 13]
    for m in models:
        met = m.metrics
        for beam in BEAMS:
            if beam not in met["beam"]:
                continue
            bold = beam == SHOWN_BEAM
            name = describe(m) + (" (the default)" if m.default and bold else "")
            cells = [_number(met["beam"][beam].get(k)) for k in METRICS]
            stats = [_share(met["distinct_captions"].get(beam)), f"{met['mean_words'][beam]:.2f}",
                     str(met["vocabulary_used"][beam]), _share(met["bad_ending_rate"][beam]),
                     _share(met["bigram_repeat_rate"][beam])]
            if bold:
                name, beam_cell = f"**{name}**", f"**{beam}**"
                cells[3], cells[5], stats[0] = f"**{cells[3]}**", f"**{cells[5]}**", f"**{stats[0]}**"
            else:
                beam_cell = beam
            rows.append(f"| {name} | {beam_cell} | " + " | ".join(cells + stats) + " |")
    rows.append(_people_row(models, 1, 5))
    return "\n".join(rows)


def _people_row(models: list[Model], blanks_before: int, blanks_after: int) -> str:
    """People's level, as every model's metrics.json records it (the same references)."""
    human = models[0].metrics.get("human_first_reference") or {}
    cells = [PEOPLE] + [""] * blanks_before + [_number(human.get(k)) for k in METRICS] + [""] * blanks_after
    return "| " + " | ".join(cells) + " |"


def everyday_table(models: list[Model]) -> str:
    """The README's second table: the same models on everyday photos unlike Flickr8k's."""
    measured = [m for m in models if m.everyday]
    if not measured:
        return "(not measured: run `make everyday`)"
    rows = ["| model | photos | BLEU-1 | BLEU-4 | METEOR | CIDEr | distinct captions | CIDEr on Flickr8k test |",
            "|" + "---|" * 8]
    for m in measured:
        e = m.everyday
        scores = e["beam"][SHOWN_BEAM]
        name = f"**{describe(m)}** (the default)" if m.default else describe(m)
        rows.append(f"| {name} | {e['n_images']} | {_number(scores.get('BLEU-1'))} | {_number(scores.get('BLEU-4'))} | "
                    f"{_number(scores.get('METEOR'))} | **{_number(scores.get('CIDEr'))}** | "
                    f"{_share(e['distinct_captions'][SHOWN_BEAM])} | {_number(m.metrics['beam'][SHOWN_BEAM]['CIDEr'])} |")
    human, flickr_human = measured[0].everyday["human_first_reference"], measured[0].metrics["human_first_reference"]
    rows.append(f"| {PEOPLE} | {measured[0].everyday['n_images']} | {_number(human.get('BLEU-1'))} | "
                f"{_number(human.get('BLEU-4'))} | {_number(human.get('METEOR'))} | {_number(human.get('CIDEr'))} | | "
                f"{_number(flickr_human.get('CIDEr'))} |")
    return "\n".join(rows)


TRUST_SETS = (("flickr8k_test", "Flickr8k test"), ("everyday_held_out", "everyday, held-out half"))


# trust.json's two estimates per model (trust/estimate.py), as the tables name them
TRUST_VARIANTS = (("with_consensus", "with the training captions"), ("models", "without"))


def _trust_estimates(models: list[Model], variant: str = "models") -> dict:
    path = models[0].directory.parent / "trust.json"
    return (read_json(path).get(variant) or {}) if path.is_file() else {}


def trust_table(models: list[Model]) -> str:
    """How well each model's trust estimates rank and sort captions on photos they were not fitted on."""
    rows = ["| model | estimate | photos | Spearman with per-photo CIDEr | mean CIDEr of the 30% most trusted | "
            "of the 40% least trusted | all | likely right | unsure | likely wrong |", "|" + "---|" * 10]
    for m in models:
        for variant, variant_label in TRUST_VARIANTS:
            held = (_trust_estimates(models, variant).get(m.name) or {}).get("fitted", {}).get("held_out")
            if not held:
                continue
            for key, label in TRUST_SETS:
                f = held[key]
                e, v = f["estimate"], f["verdicts"]
                name = f"**{m.name}**" if m.default else m.name
                rows.append(f"| {name}, {label} | {variant_label} | {f['photos']} | **{e['spearman']:.2f}** | "
                            f"**{e['top30_cider']:.3f}** | **{e['bottom40_cider']:.3f}** | {f['mean_cider']:.3f} | "
                            f"{_share(v['likely right'])} | {_share(v['unsure'])} | {_share(v['likely wrong'])} |")
    return "\n".join(rows) if len(rows) > 2 else "(not measured: run `make trust`)"


def trust_signals_table(models: list[Model]) -> str:
    """What each signal of the default model's sharper estimate does alone, and the synthetic images."""
    estimates = _trust_estimates(models, "with_consensus") or _trust_estimates(models)
    default = next((m for m in models if m.default and m.name in estimates), None)
    if default is None:
        return "(not measured: run `make trust`)"
    estimate = estimates[default.name]
    held = estimate["fitted"]["held_out"]
    rows = ["| signal (" + default.name + ") | coefficient | Flickr8k test: Spearman | top 30% CIDEr | "
            "everyday held-out: Spearman | top 30% CIDEr |", "|" + "---|" * 6]
    for signal, coefficient in zip(estimate["signals"], estimate["coefficients"]):
        a, b = held["flickr8k_test"]["signals"][signal], held["everyday_held_out"]["signals"][signal]
        rows.append(f"| {signal.replace('_', ' ')} | {coefficient:+.2f} | {a['spearman']:.2f} | {a['top30_cider']:.3f} | "
                    f"{b['spearman']:.2f} | {b['top30_cider']:.3f} |")
    a, b = held["flickr8k_test"]["estimate"], held["everyday_held_out"]["estimate"]
    rows.append(f"| **the fitted estimate** | | **{a['spearman']:.2f}** | **{a['top30_cider']:.3f}** | "
                f"**{b['spearman']:.2f}** | **{b['top30_cider']:.3f}** |")
    synthetic = ", ".join(f"{name} {s['trust']:.2f} ({s['verdict']})" for name, s in held["synthetic"].items())
    return "\n".join(rows) + f"\n\nSynthetic images: {synthetic}."


TABLES = {"scores": scores_table, "scores-all-beams": all_beams_table, "everyday": everyday_table,
          "trust": trust_table, "trust-signals": trust_signals_table}
MARKER = re.compile(r"(<!-- report:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(\n<!-- /report:(?P=name) -->)", re.S)


def fill_tables(text: str, models: list[Model]) -> str:
    """`text` with every marked table rewritten; an unknown table name is an error."""
    def replace(match):
        name = match.group("name")
        if name not in TABLES:
            raise ArtifactError(f"unknown report table {name!r} (known: {', '.join(TABLES)})")
        return match.group(1) + TABLES[name](models) + match.group(4)
    return MARKER.sub(replace, text)


def flow_copy(manifest: dict) -> str:
    """The sha256 of the exit flow a model directory carries, as its manifest records it ("" if none)."""
    return (manifest.get("files") or {}).get(HEAD_WEIGHTS, "")


def source_state(model, source: str, manifest_sha: str | None = None, exit_flow_sha: str | None = None) -> str:
    """Whether the model directory `source` (beside this one, unless absolute) still holds what
    this model was trained with, the manifest whose sha256 it recorded or the exit flow it
    carries a copy of: "same", "retrained" or "missing". The model itself is unaffected (it
    carries its copy), but rerunning its recipe would not reproduce it."""
    directory = Path(source) if Path(source).is_absolute() else model.directory.parent / Path(source).name
    try:
        if manifest_sha and sha256_file(directory / MANIFEST) != manifest_sha:
            return "retrained"
        if exit_flow_sha and flow_copy(read_json(directory / MANIFEST)) != exit_flow_sha:
            return "retrained"
    except (OSError, ArtifactError):
        return "missing"
    return "same"


def retrained_since(model, source: str, manifest_sha: str | None = None, exit_flow_sha: str | None = None) -> str:
    """The card's note on `source` (see source_state): "" while it holds what this model read."""
    state = source_state(model, source, manifest_sha, exit_flow_sha)
    if state == "missing":
        return f" (`{source}` is not here)"
    if state == "same":
        return ""
    kept = ("with another exit flow; this model carries the one it read" if exit_flow_sha
            else "this model was trained with the one recorded here")
    return f" (`{source}` has been retrained since{',' if exit_flow_sha else ';'} {kept})"


def _flags(config: dict) -> str:
    """The training script's flags that differ from its defaults, as the model recorded them."""
    from captioner.decoders.config import Config
    defaults = Config()
    flags = []
    for key, value in config.items():
        if key in ("vocab_size", "extra", "feature_dim", "decoder", "length_alpha") or not hasattr(defaults, key):
            continue
        if value != getattr(defaults, key):
            flags.append(f"--{key.replace('_', '-')} {value}")
    return " ".join(flags)


def model_card(model: Model) -> str:
    """The short, conventional card model hubs show: what, data, metrics, limits, reproduction."""
    m, config, manifest = model.metrics, model.config, model.manifest
    dataset = manifest.get("dataset") or {}
    images = dataset.get("images") or {}
    shown = m["beam"][SHOWN_BEAM]
    human = m.get("human_first_reference") or {}
    ensemble = config.get("decoder") == "ensemble"
    n, distinct = m.get("n_images", 1000), m["distinct_captions"][SHOWN_BEAM]
    what = {
        "merge": "an LSTM decoder that adds the photo's pooled Xception vector (2048-d) to the LSTM's "
                 "output at every word (the merge architecture of Tanti et al.)",
        "attention": "an LSTM decoder with adaptive attention and a visual sentinel over Xception's 10x10 "
                     "map of regions (Lu et al. 2017, \"Knowing when to look\")",
        "ensemble": f"the trained decoders beside it ({config.get('members')}) decoding as one, from a "
                    "weighted sum of their word log-probabilities; it holds no weights of its own",
    }.get(config.get("decoder"), config.get("decoder", model.name))
    lines = [
        f"# Model card: {model.name}" + (" (the default model)" if model.default else ""),
        "",
        "*Written by `python -m captioner report` from this directory's metrics.json, manifest.json and "
        "config.json; do not edit by hand.*",
        "",
        "## What it is",
        "",
        f"{describe(model)}: {what}. {encoder_sentence(model)}",
        "",
        "Intended use: English captions of photos like Flickr8k's (people and dogs in everyday "
        "outdoor scenes), in the app, the `captioner` command line and the Python API; a demonstration "
        "and research baseline, not a description service to rely on for accessibility or decisions.",
        "",
        "## Training data",
        "",
        f"Flickr8k ({dataset.get('layout', 'original')} layout): {_count(images.get('train', '?'))} training photos "
        f"with {_count(dataset.get('train_captions', '?'))} captions (five per photo), {_count(images.get('val', '?'))} "
        f"validation photos for every choice (epoch, length penalty{', mix' if ensemble else ''}), "
        f"{_count(images.get('test', '?'))} test photos scored once at the end.",
    ]
    if not ensemble:
        lines += ["", f"Vocabulary: the {config.get('vocab_size', 4) - 4:,} words seen at least "
                  f"{config.get('min_word_count')} times in the training captions, plus 4 special tokens. "
                  f"{manifest.get('parameters', 0):,} parameters; the epoch kept is {manifest.get('best_epoch')} "
                  f"of {manifest.get('epochs_run')} ({'self-critical' if manifest.get('best_phase') == 'scst' else 'cross-entropy'}), "
                  f"after {manifest.get('training_seconds', 0) / 3600:.1f} h on {manifest.get('machine', 'this machine')}."]
    lines += [
        "",
        f"## Metrics (Flickr8k test split, {m.get('n_images', 1000):,} photos, COCO caption toolkit)",
        "",
        "| beam | " + " | ".join(METRICS) + " | distinct captions | distinct words | bad endings |",
        "|" + "---|" * (len(METRICS) + 4),
    ]
    for beam in BEAMS:
        if beam in m["beam"]:
            lines.append(f"| {beam} | " + " | ".join(_number(m["beam"][beam].get(k)) for k in METRICS)
                         + f" | {_share(m['distinct_captions'][beam])} | {m['vocabulary_used'][beam]} | "
                         f"{_share(m['bad_ending_rate'][beam])} |")
    lines.append(_people_row([model], 0, 3))  # under beam: the label; then the metrics; 3 statistics
    lines += [
        "",
        f"Length penalty α = {config.get('length_alpha')} (chosen on validation).",
        "",
        "## Known limits",
        "",
        f"- It has seen only Flickr8k's {_count(images.get('train', '?'))} training photos, mostly people and dogs "
        "outdoors. " + _everyday_limit(model),
        f"- On photos like its training photos it is still well short of people: CIDEr {_number(shown.get('CIDEr'))} "
        f"at beam {SHOWN_BEAM} against people's {_number(human.get('CIDEr'))}, METEOR "
        f"{_number(shown.get('METEOR'))} against {_number(human.get('METEOR'))}.",
        f"- Its captions are generic: the {n:,} test photos get {round(distinct * n):,} different captions "
        f"at beam {SHOWN_BEAM} ({_share(distinct)}; the rest share a caption with another photo), using "
        f"{m['vocabulary_used'][SHOWN_BEAM]} distinct words.",
        "- English only; Flickr8k's captions carry their annotators' biases (for example in how people "
        "are described), and the model repeats them.",
        "",
        "## How to reproduce",
        "",
    ]
    if ensemble:
        lines.append("`make ensemble` (training_scripts/evaluate_ensemble.py: the mix and the length penalty "
                     "chosen on validation, then scored on test), after its members are trained.")
    else:
        flags = _flags(config)
        # a second model of one decoder lives in a directory of its own name (train.py --name)
        named = f" --name {model.directory.name}" if model.directory.name != config.get("decoder") else ""
        lines.append(f"`make train DECODER={model.directory.name}` runs the Makefile's recipe for it. The settings "
                     "this model recorded (config.json), as the training script's flags: `python "
                     f"training_scripts/train.py --data ../shared/flickr8k --out trained --decoder "
                     f"{config.get('decoder')}{named}{' ' + flags if flags else ''}`.")
        if manifest.get("extended_from"):
            lines.append("")
            lines.append("This model was then extended from its finished directory (`--extend "
                         f"{manifest['extended_from'].get('directory')}`, the optimiser afresh), as the "
                         "Makefile's train target does; the settings above are the extended run's.")
        if manifest.get("scst_teacher"):
            lines.append("")
            teacher = manifest["scst_teacher"]
            lines.append(f"Its self-critical phase distils `{teacher.get('directory')}` "
                         f"(manifest sha256 `{teacher.get('manifest_sha256', '')[:12]}...`), "
                         "which must be trained first"
                         f"{retrained_since(model, teacher.get('directory', ''), manifest_sha=teacher.get('manifest_sha256'))}.")
        if config.get("exit_flow_from"):
            lines.append("")
            lines.append(f"It reads the exit flow of `{config['exit_flow_from']}`, which must be trained first"
                         f"{retrained_since(model, config['exit_flow_from'], exit_flow_sha=flow_copy(manifest))}.")
    versions = manifest.get("versions") or {}
    if versions:
        lines += ["", ("Scored" if ensemble else "Trained") + " with " + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]
    return "\n".join(lines) + "\n"


def _everyday_limit(model: Model) -> str:
    e = model.everyday
    if not e:
        return ("How it does on other photos has not been measured for this model (`make everyday`); "
                "the caption does not say when the model is guessing.")
    scores, human = e["beam"][SHOWN_BEAM], e["human_first_reference"]
    return (f"On {e['n_images']} everyday COCO photos ({Path(e.get('folder', 'coco-dev')).name}: kitchens, food, "
            f"streets, animals, unseen in training) it scores CIDEr {_number(scores.get('CIDEr'))} at beam "
            f"{SHOWN_BEAM} against people's {_number(human.get('CIDEr'))} there (and "
            f"{_number(model.metrics['beam'][SHOWN_BEAM]['CIDEr'])} on Flickr8k's test photos): its caption is often "
            "a fluent sentence about the wrong subject, and it does not say when it is guessing.")


def write_model_card(directory: str | os.PathLike) -> Path | None:
    """MODEL_CARD.md of the model just written to `directory`, among the models beside it (which
    decide whether it is the default); None if it has no test metrics to describe (--no-test)."""
    directory = Path(directory)
    models = scored_models(directory.parent)
    model = next((m for m in models if m.directory.resolve() == directory.resolve()), None)
    if model is None:
        return None
    path = directory / MODEL_CARD
    write_text_atomic(path, model_card(model))
    return path


def report(model_root: str | os.PathLike | None = None, documents: list[Path] = (),
           check: bool = False) -> list[Path]:
    """Rewrite the marked tables of `documents` and every model's card. Returns the files that
    changed (with `check`, the files that would change, writing nothing)."""
    models = scored_models(model_root)
    wanted = {m.directory / MODEL_CARD: model_card(m) for m in models}
    for document in documents:
        text = document.read_text(encoding="utf-8")
        wanted[document] = fill_tables(text, models)
    changed = [p for p, text in wanted.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if not check:
        for path in changed:
            write_text_atomic(path, wanted[path])
    return changed


def project_documents(model_root: Path) -> list[Path]:
    """README.md and docs/*.md of the checkout that holds `model_root` (none in an installed package)."""
    checkout = Path(model_root).resolve().parent
    if not (checkout / "pyproject.toml").is_file():
        return []
    return [p for p in [checkout / "README.md", *sorted((checkout / "docs").glob("*.md"))] if p.is_file()]
