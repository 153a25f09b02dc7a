#!/usr/bin/env python
"""Re-score an existing trained/ on Flickr8k without retraining it.

    python training_scripts/evaluate.py --data ../shared/flickr8k --model trained/    # every model
    python training_scripts/evaluate.py --data ../shared/flickr8k --model trained/merge

Keeps the decoder weights and history; re-chooses the length penalty on the validation
split and rewrites metrics.json (test split, beams 1, 3 and 5) atomically. Use it after a
change to decoding, so the recorded scores describe what the app does. An ensemble
(trained/ensemble) holds no weights of its own: `make ensemble` re-scores it.

    python training_scripts/evaluate.py --everyday ../shared/coco-dev --model trained/

scores every model, the ensemble included, on photos from outside Flickr8k instead (at beam 3,
as the app decodes; nothing is chosen on them) into <model>/everyday_metrics.json, which the
model cards and the README's table report.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Flickr8k directory (either layout); default $CAPTIONER_DATA_DIR")
    parser.add_argument("--model", default="trained", help="a model directory, or a directory of them (default: trained)")
    parser.add_argument("--xception-weights", help="Xception .weights.h5 (default: the cache)")
    parser.add_argument("--everyday", metavar="FOLDER", help="score on this folder of photos and captions "
                        "(photos/, captions.txt; e.g. ../shared/coco-dev) instead of re-scoring Flickr8k")
    args = parser.parse_args(argv)

    from captioner.vision.tf_setup import import_tensorflow_quietly
    import_tensorflow_quietly()
    from captioner.cli_errors import run_reporting_errors
    from captioner.data.dataset import data_dir_from_env
    from captioner.vision.encoder import Encoder
    from captioner.training.scores import rescore, score_folder

    from captioner.model_dirs.catalog import available_models
    from captioner.training.progress import log
    from captioner.model_dirs.ensemble_dir import is_ensemble, stale_members

    def job():
        encoder = Encoder(args.xception_weights)
        models = available_models(args.model)
        if not models:
            raise SystemExit(f"error: {args.model}: no trained model here.")
        if args.everyday:
            stale = [d for d in models.values() if is_ensemble(d) and stale_members(d)]
            for directory in stale:
                log(f"{directory}: stale (members retrained since it was scored), skipped; `make ensemble` first")
            fresh = [d for d in models.values() if d not in stale]
            for directory, metrics in score_folder(fresh, args.everyday, encoder).items():
                log(f"{directory}: {args.everyday} beam 3 CIDEr {metrics['beam']['3']['CIDEr']:.3f} "
                    f"(people {metrics['human_first_reference']['CIDEr']:.3f})")
            return 0
        for directory in models.values():
            if is_ensemble(directory):
                log(f"{directory}: an ensemble, skipped here; re-score it with `make ensemble` "
                    "(training_scripts/evaluate_ensemble.py)")
                continue
            rescore(data_dir_from_env(args.data), directory, encoder)
        return 0

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
