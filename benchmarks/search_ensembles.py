#!/usr/bin/env python
"""Ensembles of any number of trained models, scored on the validation split only (CIDEr and
BLEU-4 at beam 3, at each length penalty `make ensemble` tries): to see whether a third member,
or other weights, would pay before `make ensemble` is changed. Nothing here touches test.

    python benchmarks/search_ensembles.py --data ../shared/flickr8k \
        --models /work/runs/exp_aa/attention /work/runs/exp_aa/attention_on trained/merge \
        --weights 0.5:0.5:0,0.45:0.25:0.3 [--json out.json]

--weights is spelled as for training_scripts/evaluate_ensemble.py: mixes separated by commas,
each one weight per model, colon-separated, summing to 1 (a 0 leaves that model out); for two
models, the first one's weight alone.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import captioner  # noqa: E402,F401  (sets thread and logging defaults before NumPy loads)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Flickr8k directory; default $CAPTIONER_DATA_DIR")
    parser.add_argument("--models", nargs="+", required=True, help="model directories sharing one vocabulary")
    parser.add_argument("--weights", required=True,
                        help="mixes separated by commas, each one weight per model, colon-separated")
    parser.add_argument("--json", help="also write every score here")
    args = parser.parse_args(argv)
    from captioner.model_dirs.ensemble_dir import mix_key, parse_mixes
    try:
        grid = parse_mixes(args.weights, len(args.models))
    except ValueError as exc:
        parser.error(f"--weights: {exc}")

    from captioner.vision.tf_setup import import_tensorflow_quietly
    import_tensorflow_quietly()
    from captioner.cli_errors import run_reporting_errors
    from captioner.data.dataset import data_dir_from_env
    from captioner.decoders.ensemble import mixed
    from captioner.training.progress import log
    from captioner.training.scores import choose_length_alpha, ensemble_inputs

    def job() -> int:
        # the members, checked and loaded as `make ensemble` loads them; val only
        members, decoders, features, names, references, _ = ensemble_inputs(
            data_dir_from_env(args.data), args.models, ("val",))
        scores = {}
        for weights in grid:
            log(f"weights {mix_key(weights)}")
            chosen = choose_length_alpha(mixed(decoders, weights), members[0].vocab, members[0].config,
                                         features["val"], names["val"], references["val"])
            search = chosen.extra["val_alpha_search"]
            scores[mix_key(weights)] = {
                "chosen_alpha": chosen.length_alpha,
                "by_alpha": {a: {"CIDEr": round(s["CIDEr"], 4), "BLEU-4": round(s["BLEU-4"], 4)}
                             for a, s in search.items()}}
        for key, score in scores.items():
            best = score["by_alpha"][str(score["chosen_alpha"])]
            print(f"{key}: val CIDEr {best['CIDEr']:.4f} (alpha {score['chosen_alpha']}), BLEU-4 {best['BLEU-4']:.4f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"models": args.models, "val_beam3": scores}, indent=2) + "\n")
        return 0

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
