#!/usr/bin/env python
"""Side by side, the validation scores of training runs, epoch by epoch: what each step of a
recipe was worth (issue 24: tuning the exit flow in cross-entropy, in self-critical training
too, block 14 against the whole exit flow).

    .venv/bin/python benchmarks/compare_runs.py trained/attention /work/runs/.tuned.checkpoint-attention

Each argument is a model directory (its history.json and manifest.json) or a training
checkpoint, finished or not (its state.json). Printed per run: the best greedy val CIDEr of
cross-entropy, the score self-critical training had to beat (the kept cross-entropy weights at
beam 3), then each self-critical epoch's val CIDEr at beam 3 and the best of them. Nothing is
recomputed: these are the figures the runs recorded as they chose their epochs.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_run(path: Path) -> dict:
    """{"history": [...], "xe_val_cider_beam": float | None} of a model directory or checkpoint."""
    if (path / "state.json").is_file():
        state = json.loads((path / "state.json").read_text())
        return {"history": state["history"], "xe_val_cider_beam": state.get("xe_val_cider_beam")}
    if (path / "history.json").is_file() and (path / "manifest.json").is_file():
        manifest = json.loads((path / "manifest.json").read_text())
        return {"history": json.loads((path / "history.json").read_text()),
                "xe_val_cider_beam": manifest.get("xe_val_cider_beam")}
    raise SystemExit(f"{path}: neither a model directory (history.json, manifest.json) nor a "
                     "checkpoint (state.json)")


def summary(run: dict) -> dict:
    xe = [r for r in run["history"] if r["phase"] == "xe"]
    scst = [r for r in run["history"] if r["phase"] == "scst"]
    best_xe = max(xe, key=lambda r: r["val_cider"], default=None)
    beam = [r.get("val_cider_beam") for r in scst]
    scored = [b for b in beam if b is not None]
    return {"xe_epochs": len(xe),
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
        print(f"{name}\n  cross-entropy: {row['xe_epochs']} epochs, best greedy val CIDEr "
              f"{greedy} (epoch {epoch}); kept weights at beam 3: {row['xe_beam3']}")
        if row["scst_beam3"]:
            print(f"  self-critical, val CIDEr at beam 3 by epoch: "
                  f"{', '.join('-' if b is None else f'{b:.4f}' for b in row['scst_beam3'])}")
            print(f"  best {row['scst_best_beam3']}; {row['minutes_per_scst_epoch']} minutes an epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
