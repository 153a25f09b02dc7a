#!/usr/bin/env python
"""Side by side, the validation scores of training runs, epoch by epoch: what each step of a
recipe was worth (issue 24: tuning the exit flow in cross-entropy, in self-critical training
too, block 14 against the whole exit flow).

    .venv/bin/python benchmarks/compare_runs.py trained/attention /work/runs/.tuned.checkpoint-attention

Each argument is a model directory (its history.json and manifest.json) or a training
checkpoint, finished or not (its state.json). Printed per run: what it tuned (the exit flow
or block 14, and whether self-critical training tuned it on or kept it fixed), the best greedy
val CIDEr of cross-entropy, the score self-critical training had to beat (the kept
cross-entropy weights at beam `scst_distinct_beam`, 3 in our runs), then each self-critical
epoch's val CIDEr at that beam and the best of them. Nothing is recomputed: these are the
figures the runs recorded as they chose their epochs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_run(path: Path) -> dict:
    """{"history": [...], "xe_val_cider_beam": float | None, "config": {...}} of a model
    directory or checkpoint."""
    if (path / "state.json").is_file():
        state = json.loads((path / "state.json").read_text())
        return {"history": state["history"], "xe_val_cider_beam": state.get("xe_val_cider_beam"),
                "config": state.get("config") or {}}
    if (path / "history.json").is_file() and (path / "manifest.json").is_file():
        manifest = json.loads((path / "manifest.json").read_text())
        config = path / "config.json"
        return {"history": json.loads((path / "history.json").read_text()),
                "xe_val_cider_beam": manifest.get("xe_val_cider_beam"),
                "config": json.loads(config.read_text()) if config.is_file() else {}}
    raise SystemExit(f"{path}: neither a model directory (history.json, manifest.json) nor a "
                     "checkpoint (state.json)")


def summary(run: dict) -> dict:
    xe = [r for r in run["history"] if r["phase"] == "xe"]
    scst = [r for r in run["history"] if r["phase"] == "scst"]
    best_xe = max(xe, key=lambda r: r["val_cider"], default=None)
    beam = [r.get("val_cider_beam") for r in scst]
    scored = [b for b in beam if b is not None]
    config = run["config"]
    return {"tuned": config.get("finetune_encoder") or None,
            "scst_exit_flow": config.get("scst_exit_flow", "train") if config.get("finetune_encoder") else None,
            "beam": config.get("scst_distinct_beam"),
            "xe_epochs": len(xe),
            "xe_best_greedy": best_xe and (best_xe["epoch"], best_xe["val_cider"]),
            "xe_beam3": run["xe_val_cider_beam"],
            "scst_beam3": beam,
            "scst_best_beam3": max(scored) if scored else None,
            "minutes_per_scst_epoch": round(sum(r["seconds"] for r in scst) / len(scst) / 60, 1) if scst else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="model directories or checkpoints")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)
    rows = {str(p): summary(read_run(p)) for p in args.runs}
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for name, row in rows.items():
        epoch, greedy = row["xe_best_greedy"] or (None, None)
        label = ("Xception frozen" if row["scst_exit_flow"] is None else f"Xception's {row['tuned']} tuned, "
                 + ("held fixed" if row["scst_exit_flow"] == "fixed" else "tuned on") + " in self-critical training")
        print(f"{name}: {label}\n  cross-entropy: {row['xe_epochs']} epochs, best greedy val CIDEr "
              f"{greedy} (epoch {epoch}); kept weights at beam {row['beam']}: {row['xe_beam3']}")
        if row["scst_beam3"]:
            print(f"  self-critical, val CIDEr at beam {row['beam']} by epoch: "
                  f"{', '.join('-' if b is None else f'{b:.4f}' for b in row['scst_beam3'])}")
            print(f"  best {row['scst_best_beam3']}; {row['minutes_per_scst_epoch']} minutes an epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
