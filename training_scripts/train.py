#!/usr/bin/env python
"""Train the caption decoder on Flickr8k and write trained/.

    python training_scripts/train.py --data ../shared/flickr8k --out trained/

Re-running after a kill resumes from the last finished epoch.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from captioner.config import Config  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="Flickr8k directory (either layout); default $CAPTIONER_DATA_DIR")
    parser.add_argument("--out", default="trained", help="model directory to write (default: trained)")
    parser.add_argument("--checkpoint-dir", help="where to keep resumable checkpoints "
                        "(default: .<out>.checkpoint beside --out)")
    parser.add_argument("--xception-weights", help="Xception .weights.h5 (default: the cache)")
    parser.add_argument("--no-test", action="store_true", help="skip the test-split evaluation")
    defaults = Config()
    for field in dataclasses.fields(Config):
        if field.name in ("vocab_size", "extra", "feature_dim"):
            continue
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(getattr(defaults, field.name)),
                            default=getattr(defaults, field.name), help=f"(default: %(default)s)")
    args = parser.parse_args(argv)

    from captioner.tf_setup import import_tensorflow_quietly
    import_tensorflow_quietly()
    from captioner.cli_errors import run_reporting_errors
    from captioner.dataset import data_dir_from_env
    from captioner.encoder import Encoder
    from captioner.train import train

    def job():
        config = Config(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Config)
                           if hasattr(args, f.name)})
        encoder = Encoder(args.xception_weights)
        train(data_dir_from_env(args.data), args.out, config, args.checkpoint_dir, encoder,
              evaluate_test=not args.no_test)
        return 0

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.exit(main())
