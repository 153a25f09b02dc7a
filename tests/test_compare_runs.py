"""benchmarks/compare_runs.py reads what runs recorded, from checkpoints and model directories alike."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import compare_runs  # noqa: E402

HISTORY = [{"phase": "xe", "epoch": 1, "val_cider": 0.30, "seconds": 60},
           {"phase": "xe", "epoch": 2, "val_cider": 0.41, "seconds": 60},
           {"phase": "xe", "epoch": 3, "val_cider": 0.39, "seconds": 60},
           {"phase": "scst", "epoch": 4, "val_cider": 0.45, "val_cider_beam": 0.52, "seconds": 600},
           {"phase": "scst", "epoch": 5, "val_cider": 0.46, "val_cider_beam": 0.51, "seconds": 840}]


def test_a_checkpoint_and_a_model_directory_read_alike(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    config = {"finetune_encoder": "exit_flow", "scst_exit_flow": "fixed", "scst_distinct_beam": 3}
    (tmp_path / "ckpt" / "state.json").write_text(json.dumps({"history": HISTORY, "xe_val_cider_beam": 0.47,
                                                              "config": config}))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "history.json").write_text(json.dumps(HISTORY))
    (tmp_path / "model" / "manifest.json").write_text(json.dumps({"xe_val_cider_beam": 0.47}))
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    assert compare_runs.main([str(tmp_path / "ckpt"), str(tmp_path / "model"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    first, second = rows.values()
    assert first == second == {"tuned": "exit_flow", "scst_exit_flow": "fixed", "beam": 3, "xe_epochs": 3, "xe_best_greedy": [2, 0.41], "xe_beam3": 0.47,
                               "scst_beam3": [0.52, 0.51], "scst_best_beam3": 0.52,
                               "minutes_per_scst_epoch": 12.0}


def test_anything_else_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="neither a model directory"):
        compare_runs.main([str(tmp_path)])
