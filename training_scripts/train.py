#!/usr/bin/env python
"""Train caption decoders on Flickr8k and write them to trained/<decoder>/ (or trained/<--name>/).

    python training_scripts/train.py --data ../shared/flickr8k --out trained            # both
    python training_scripts/train.py --data ../shared/flickr8k --decoder attention      # one

Each decoder trains with cross-entropy, then self-critical (CIDEr-D) epochs; the epoch with
the best validation CIDEr is kept, its test scores written beside it. Re-running after a kill
resumes from the last finished epoch (checkpoints in .<out>.checkpoint-<name>/ beside --out).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from captioner.decoders.config import DECODERS, Config  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Flickr8k directory (either layout); default $CAPTIONER_DATA_DIR")
    parser.add_argument("--out", default="trained", help="where models go: <out>/<name>/ (default: trained)")
    parser.add_argument("--name", help="the model's directory in --out, for a second model of one decoder "
                        "(one --decoder; default: the decoder's name)")
    parser.add_argument("--decoder", choices=(*DECODERS, "both"), default="both",
                        help="which decoder to train (default: both, merge first)")
    parser.add_argument("--checkpoint-dir", help="where to keep resumable checkpoints "
                        "(default: .<out>.checkpoint-<name> beside --out)")
    parser.add_argument("--xception-weights", help="Xception .weights.h5 (default: the cache)")
    parser.add_argument("--no-test", action="store_true", help="skip the test-split evaluation")
    parser.add_argument("--keep-checkpoint", action="store_true",
                        help="keep the checkpoint when the run is done, so that running again with a "
                        "larger --scst-max-epochs extends it instead of starting over")
    parser.add_argument("--extend", metavar="MODEL_DIR",
                        help="go on training a finished model (one --decoder, the flags it was trained "
                        "with, a larger --scst-max-epochs), as if its run had kept its checkpoint; "
                        "its optimiser's moments start afresh")
    defaults = Config()
    for field in dataclasses.fields(Config):
        if field.name in ("vocab_size", "extra", "feature_dim", "decoder"):
            continue
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name), help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.checkpoint_dir and args.decoder == "both":
        parser.error("--checkpoint-dir needs one --decoder (each decoder keeps its own checkpoint)")
    if args.name is not None and args.decoder == "both":
        parser.error("--name needs one --decoder (it names one model's directory)")
    if args.name is not None and (not args.name or args.name != Path(args.name).name or args.name.startswith(".")):
        parser.error(f"--name: expected a directory name without '/', got {args.name!r}")
    if args.extend and args.decoder == "both":
        parser.error("--extend needs one --decoder (the model's)")
    if args.exit_flow_from and args.decoder == "both":
        parser.error("--exit-flow-from needs one --decoder (the other model would be trained over its source)")

    from captioner.vision.tf_setup import import_tensorflow_quietly
    import_tensorflow_quietly()
    from captioner.cli_errors import run_reporting_errors
    from captioner.data.dataset import data_dir_from_env
    from captioner.vision.encoder import Encoder
    from captioner.training.progress import log
    from captioner.training.loop import train

    def job():
        encoder = Encoder(args.xception_weights)
        out = Path(args.out)
        for decoder in (DECODERS if args.decoder == "both" else (args.decoder,)):
            settings = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                        if hasattr(args, f.name) and f.name != "decoder"}
            config = Config(**settings, decoder=decoder)
            name = args.name or decoder
            checkpoint = args.checkpoint_dir or out.parent / f".{out.name}.checkpoint-{name}"
            log(f"Training the {decoder} decoder into {out / name}")
            train(data_dir_from_env(args.data), out / name, config, checkpoint, encoder,
                  evaluate_test=not args.no_test, keep_checkpoint=args.keep_checkpoint, extend=args.extend)
        return 0

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
