#!/usr/bin/env python
"""Make trained/ensemble: two or more trained models decoding as one, scored on Flickr8k's test split.

    python training_scripts/evaluate_ensemble.py --data ../shared/flickr8k \
        --models trained/attention trained/merge --weights 0.3,0.4,0.5,0.6,0.7 --out trained/ensemble

At every step the ensemble mixes the decoders' next-word log-probabilities, each weighted
(captioner/decoders/ensemble.py): for two models, --weights lists the first one's weight w and
the second gets 1 - w; for more, each choice lists every model's weight, colon-separated
(0.4:0.3:0.3). The mix and the length penalty are chosen on the validation split (CIDEr at
beam 3); the test split is then scored at beams 1, 3 and 5
as training scores a model. --out (beside the members) is written atomically: a model the
app, the CLI and Captioner.load() can choose (captioner/model_dirs/ensemble_dir.py). The test
metrics are also printed as JSON.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Flickr8k directory (either layout); default $CAPTIONER_DATA_DIR")
    parser.add_argument("--models", nargs="+", default=["trained/attention", "trained/merge"],
                        help="two or more model directories (default: trained/attention trained/merge)")
    parser.add_argument("--weights", default="0.3,0.4,0.5,0.6,0.7",
                        help="the mixes to try on val, comma-separated: for two models the first one's weight, "
                        "for more every model's, colon-separated, summing to 1 (default: 0.3,0.4,0.5,0.6,0.7)")
    parser.add_argument("--out", help="the ensemble's directory, beside the members (default: ensemble "
                        "beside them, e.g. trained/ensemble)")
    parser.add_argument("--xception-weights", help="Xception .weights.h5 (default: the cache)")
    args = parser.parse_args(argv)
    from captioner.model_dirs.ensemble_dir import parse_mixes
    if len(args.models) < 2:
        parser.error(f"--models: an ensemble is two or more models, got {len(args.models)}")
    try:
        mixes = parse_mixes(args.weights, len(args.models))
    except ValueError as exc:
        parser.error(f"--weights: {exc}")

    from captioner.vision.tf_setup import import_tensorflow_quietly
    import_tensorflow_quietly()
    from captioner.model_dirs.artifacts import environment
    from captioner.cli_errors import run_reporting_errors
    from captioner.data.dataset import data_dir_from_env
    from captioner.vision.encoder import Encoder
    from captioner.training.scores import score_ensemble
    from captioner.training.progress import log
    from captioner.model_dirs.ensemble_dir import save_ensemble
    from captioner.evaluation.report import write_model_card

    def job():
        out = Path(args.out) if args.out else Path(args.models[0]).resolve().parent / "ensemble"
        started = time.time()
        encoder = Encoder(args.xception_weights)
        scored = score_ensemble(data_dir_from_env(args.data), args.models, mixes, encoder)
        info = {"created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "encoder": {"name": "xception", "weights_checksum": encoder.checksum},
                "scoring_seconds": round(time.time() - started, 1), **environment()}
        save_ensemble(out, args.models, scored["members_weights_sha256"], scored["vocab"], scored["weights"],
                      scored["length_alpha"], scored["metrics"], scored["photo_scores"], info,
                      scored["val_search"])
        write_model_card(out)
        log(f"Ensemble written to {out}")
        print(json.dumps(scored["metrics"], indent=1))
        return 0

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
