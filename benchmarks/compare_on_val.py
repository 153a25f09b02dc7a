#!/usr/bin/env python
"""Is a candidate model better than the committed one on validation, beyond the noise of 1,000
photos? Both caption the val split at beam 3, each at its own length penalty (an ensemble also
at its own mix); a paired bootstrap of per-photo CIDEr (captioner/evaluation/paired.py) then
gives the difference, its 95% interval and the share of resamples at or below zero. Nothing
here touches test. The rule in docs/training.md: a candidate replaces a committed model only
when that share is at most 5%.

    python benchmarks/compare_on_val.py --data ../shared/flickr8k \
        --candidate /work/runs/ens_c/ensemble --baseline trained/ensemble

Each of --candidate and --baseline is a model directory or an ensemble directory (its members
beside it).
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
    parser.add_argument("--candidate", required=True, help="model or ensemble directory")
    parser.add_argument("--baseline", default="trained/ensemble", help="model or ensemble directory "
                        "(default: trained/ensemble)")
    parser.add_argument("--resamples", type=int, default=10_000)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args(argv)

    from captioner.vision.tf_setup import import_tensorflow_quietly
    import_tensorflow_quietly()
    from captioner.cli_errors import run_reporting_errors
    from captioner.data.dataset import data_dir_from_env, load_flickr8k
    from captioner.decoders.config import Config
    from captioner.decoding.search import beam_search
    from captioner.evaluation.metrics import coco_scores
    from captioner.evaluation.paired import paired_bootstrap
    from captioner.model_dirs.catalog import load_model
    from captioner.model_dirs.views import exit_flows, views_decoder
    from captioner.training.features import split_features, split_views
    from captioner.training.progress import log
    from captioner.training.scores import require_trained_encoder
    from captioner.vision.encoder import Encoder

    def val_cider(directory: str, dataset, encoder) -> dict[str, float]:
        """Each val photo's CIDEr at beam 3, decoded as the app decodes with this model or
        ensemble (its own mix and length penalty, each member on its own exit flow's map)."""
        names = dataset.images("val")
        trained = load_model(directory)
        require_trained_encoder(trained, encoder.checksum)
        flows = exit_flows(trained)
        if flows:
            features = split_views(dataset, {"val": names}, flows, progress=False)["val"]
        else:   # the frozen maps' 100 regions (a merge decoder pools them)
            features = split_features(dataset, {"val": names}, encoder, False, Config(decoder="attention"))["val"]
        captions = beam_search(views_decoder(trained, flows), trained.vocab, features, beam=3,
                               max_length=trained.config.max_decode_length, alpha=trained.config.length_alpha)
        per_photo: dict = {}
        scores = coco_scores(dict(zip(names, [c[0].text for c in captions])), {n: dataset.captions[n] for n in names},
                             meteor=False, per_image=per_photo)
        log(f"{directory}: val CIDEr {scores['CIDEr']:.4f} at beam 3, length penalty {trained.config.length_alpha}")
        return {name: per_photo[name]["cider"] for name in names}

    def job() -> int:
        dataset, encoder = load_flickr8k(data_dir_from_env(args.data)), Encoder()
        candidate, baseline = (val_cider(d, dataset, encoder) for d in (args.candidate, args.baseline))
        names = sorted(baseline)
        result = paired_bootstrap([candidate[n] for n in names], [baseline[n] for n in names], args.resamples)
        print(f"{args.candidate} - {args.baseline}: val CIDEr {result['difference']:+.4f}, 95% interval "
              f"{result['low']:+.4f} to {result['high']:+.4f}, {result['share_at_or_below_zero']:.1%} of "
              f"resamples at or below 0, standard error {result['standard_error']:.4f}")
        if args.json:
            Path(args.json).write_text(json.dumps({"candidate": args.candidate, "baseline": args.baseline,
                                                   "photos": len(names), **result}, indent=2) + "\n")
        return 0

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
