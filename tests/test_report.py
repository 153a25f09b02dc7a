"""The score tables in README.md and docs/ and each model's MODEL_CARD.md are written from the
models' metrics.json by `python -m captioner report`, never by hand."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, TRAINED, require
from captioner.evaluation.report import (MODEL_CARD, fill_tables, model_card, project_documents, report,
                                         scored_models)
from captioner.model_dirs.artifacts import ArtifactError


def committed_models():
    require(TRAINED / "merge" / "metrics.json", "the committed models")
    return scored_models(TRAINED)


def test_readme_docs_and_model_cards_equal_what_the_report_writes():
    committed_models()
    documents = project_documents(TRAINED)
    assert ROOT / "README.md" in documents and ROOT / "docs" / "training.md" in documents
    stale = report(TRAINED, documents, check=True)
    assert stale == [], f"out of date (run `python -m captioner report`): {stale}"


def test_the_readme_and_the_notebook_hold_the_generated_tables():
    readme = (ROOT / "README.md").read_text()
    notebook = (ROOT / "docs" / "training.md").read_text()
    assert "<!-- report:scores -->" in readme and "<!-- /report:scores -->" in readme
    assert "<!-- report:scores-all-beams -->" in notebook
    # the numbers come from metrics.json: every model's test CIDEr at beam 3 is in the README
    for model in committed_models():
        assert f"{model.metrics['beam']['3']['CIDEr']:.3f}" in readme
        assert (model.directory / MODEL_CARD).is_file()


def test_a_changed_metric_makes_the_tables_and_the_card_stale(tmp_path):
    committed_models()
    models = tmp_path / "trained"
    shutil.copytree(TRAINED, models)
    document = tmp_path / "README.md"
    document.write_text("Intro kept.\n<!-- report:scores -->\nhand-written\n<!-- /report:scores -->\nOutro kept.\n")
    (models / "attention" / MODEL_CARD).unlink()
    assert set(report(models, [document])) == {document, models / "attention" / MODEL_CARD}
    text = document.read_text()
    assert text.startswith("Intro kept.\n<!-- report:scores -->\n| model |") and text.endswith(
        "<!-- /report:scores -->\nOutro kept.\n") and "hand-written" not in text
    assert report(models, [document], check=True) == []

    metrics_path = models / "merge" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["beam"]["3"]["CIDEr"] = 0.1234
    metrics_path.write_text(json.dumps(metrics))
    stale = report(models, [document], check=True)
    assert document in stale and models / "merge" / MODEL_CARD in stale
    assert "0.123" not in document.read_text()  # --check writes nothing
    report(models, [document])
    assert "| **0.123** |" in document.read_text()
    assert "| 3 |" in (models / "merge" / MODEL_CARD).read_text()


def test_an_unknown_table_is_refused():
    with pytest.raises(ArtifactError, match="unknown report table 'nope'"):
        fill_tables("<!-- report:nope -->\nx\n<!-- /report:nope -->", committed_models())


def test_the_cards_say_what_a_model_card_says():
    for model in committed_models():
        card = model_card(model)
        for heading in ("## What it is", "## Training data", "## Metrics", "## Known limits", "## How to reproduce"):
            assert heading in card, (model.name, heading)
        assert f"{100 * model.metrics['distinct_captions']['3']:.1f}%" in card
        assert "6,000 training photos" in card
    cards = {m.name: model_card(m) for m in committed_models()}
    assert "--scst-teacher trained/attention" in cards["merge"] and "make ensemble" in cards["ensemble"]


def test_every_table_row_has_its_headers_cells():
    """A row one cell off puts people's BLEU-1 under BLEU-2 (as the cards once did)."""
    models = committed_models()
    texts = [model_card(m) for m in models] + [(ROOT / "README.md").read_text()]
    for text in texts:
        width = None
        for line in text.splitlines():
            if not line.startswith("|"):
                width = None
                continue
            cells = line.count("|") - 1
            width = width or cells
            assert cells == width, line
    people = next(line for line in model_card(models[0]).splitlines() if line.startswith("| people"))
    human = models[0].metrics["human_first_reference"]
    assert people.split(" | ")[1] == f"{human['BLEU-1']:.3f}"   # under BLEU-1, after the label


def test_the_command_checks_and_reads_no_tensorflow():
    committed_models()
    code = ("import sys; from captioner.__main__ import main; rc = main(['report', '--check']); "
            "print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow'); sys.exit(rc)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout and "no tensorflow" in result.stdout


def test_a_card_says_when_the_model_it_learned_from_has_been_retrained_since(tmp_path):
    """A merge model reads the attention model's exit flow and distils it: once
    trained/attention is retrained, its card must not read as if it still did."""
    import types
    from captioner.evaluation.report import retrained_since
    from captioner.model_dirs.artifacts import sha256_file
    (tmp_path / "trained" / "attention").mkdir(parents=True)
    manifest = tmp_path / "trained" / "attention" / "manifest.json"
    manifest.write_text(json.dumps({"files": {"exit_flow.weights.h5": "a" * 64}}))
    merge = types.SimpleNamespace(directory=tmp_path / "trained" / "merge")
    assert retrained_since(merge, "trained/attention", exit_flow_sha="a" * 64) == ""
    assert retrained_since(merge, "trained/attention", manifest_sha=sha256_file(manifest)) == ""
    assert "retrained since, with another exit flow" in retrained_since(merge, "trained/attention",
                                                                       exit_flow_sha="b" * 64)
    assert "retrained since" in retrained_since(merge, "trained/attention", manifest_sha="c" * 64)
    assert "is not here" in retrained_since(merge, "trained/gone", exit_flow_sha="a" * 64)
    assert retrained_since(merge, str(tmp_path / "trained" / "attention"), exit_flow_sha="a" * 64) == ""
    # and the tables' one-line names say "an earlier" attention model once it has been retrained
    from captioner.evaluation.report import describe
    student = types.SimpleNamespace(
        directory=tmp_path / "trained" / "merge", name="merge",
        config={"decoder": "merge", "scst_teacher": "trained/attention", "exit_flow_from": "trained/attention"},
        manifest={"best_phase": "xe", "scst_teacher": {"manifest_sha256": sha256_file(manifest)},
                  "files": {"exit_flow.weights.h5": "a" * 64}})
    assert describe(student) == "merge, distilling the attention model, reading the attention model's tuned exit flow"
    manifest.write_text(json.dumps({"files": {"exit_flow.weights.h5": "b" * 64}}))   # retrained
    assert describe(student) == ("merge, distilling an earlier attention model, reading an earlier "
                                 "attention model's tuned exit flow")
