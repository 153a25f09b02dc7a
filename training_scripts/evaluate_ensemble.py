#!/usr/bin/env python
"""Score an ensemble of two trained models on Flickr8k's test split (it is not an app model yet).

    python training_scripts/evaluate_ensemble.py --data ../shared/flickr8k \
        --models trained/attention trained/merge --weights 0.5,0.6,0.7 --out ensemble-metrics.json

At every step the ensemble mixes the two decoders' next-word log-probabilities, the first
weighted w and the second 1 - w (captioner/ensemble.py). w and the length penalty are chosen
on the validation split (CIDEr at beam 3); the test split is then scored at beams 1, 3 and 5
as training scores a model, and the metrics are printed as JSON (and written to --out).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Flickr8k directory (either layout); default $CAPTIONER_DATA_DIR")
    parser.add_argument("--models", nargs=2, default=["trained/attention", "trained/merge"],
                        help="two model directories (default: trained/attention trained/merge)")
    parser.add_argument("--weights", default="0.5,0.6,0.7",
                        help="the first model's weights to try on val, comma-separated (default: 0.5,0.6,0.7)")
    parser.add_argument("--out", help="also write the metrics to this JSON file")
    parser.add_argument("--xception-weights", help="Xception .weights.h5 (default: the cache)")
    args = parser.parse_args(argv)
    try:
        weights = [float(w) for w in args.weights.split(",")]
    except ValueError:
        parser.error(f"--weights: expected numbers separated by commas, got {args.weights!r}")
    if not all(0.0 <= w <= 1.0 for w in weights):
        parser.error(f"--weights: each weight must be between 0 and 1, got {args.weights!r}")

    from captioner.tf_setup import import_tensorflow_quietly
    import_tensorflow_quietly()
    from captioner.artifacts import write_json_atomic
    from captioner.cli_errors import run_reporting_errors
    from captioner.dataset import data_dir_from_env
    from captioner.encoder import Encoder
    from captioner.model_scores import score_ensemble

    def job():
        metrics = score_ensemble(data_dir_from_env(args.data), args.models, weights,
                                 Encoder(args.xception_weights))
        if args.out:
            write_json_atomic(Path(args.out), metrics)
        print(json.dumps(metrics, indent=1))
        return 0

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
