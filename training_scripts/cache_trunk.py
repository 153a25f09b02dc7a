#!/usr/bin/env python
"""Cache Xception's trunk output (the exit flow's input) for every Flickr8k photo, for
fine-tuning the exit flow with the decoders (issue 24; captioner/vision/exit_flow.py).

    python training_scripts/cache_trunk.py --data ../shared/flickr8k [--split exit_flow|block14|whole]
    python training_scripts/cache_trunk.py --data ../shared/flickr8k --mirrored   # for --finetune-mirror

The trunk runs on LiteRT (converted once, beside the encoder) at nearly twice TensorFlow's
batched rate here; the maps go to ~/.cache/captioner/features/xception-add_10-... as
float16 (525 KB a photo, 4.3 GB for Flickr8k's 8,091 at the add_10 split). `--split whole`
fills the frozen encoder's own cache (the 10x10x2048 maps every run reads; training fills it
too, on TensorFlow, at about half the rate). `--mirrored` fills the cache of the training
photos mirrored left to right, which `--finetune-mirror` reads (3.1 GB at add_10). Killed, it
resumes where it stopped: every map is written atomically as it is made.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CAPTIONER_DATA_DIR", "../shared/flickr8k"))
    parser.add_argument("--split", choices=("exit_flow", "block14", "whole"), default="exit_flow")
    parser.add_argument("--splits", help="Flickr8k splits (default all; train with --mirrored)")
    parser.add_argument("--mirrored", action="store_true",
                        help="the photos mirrored left to right (what --finetune-mirror reads)")
    args = parser.parse_args(argv)
    if args.mirrored and args.split == "whole":
        parser.error("--mirrored caches the exit flow's input (--split exit_flow or block14)")
    splits = args.splits or ("train" if args.mirrored else "train,val,test")

    from captioner.data.dataset import load_flickr8k
    from captioner.training.finetune import trunk_cache
    from captioner.vision.exit_flow import SPLITS, trunk_encoder
    from captioner.vision.features import FeatureCache, extract_feature_maps

    data = load_flickr8k(args.data)
    names = [n for split in splits.split(",") for n in data.images(split)]
    if args.split == "whole":
        from captioner.vision.litert import LiteEncoder
        layer, encoder = "the whole encoder", LiteEncoder()
        cache = FeatureCache(encoder.checksum)
    else:
        layer = SPLITS[args.split]
        encoder = trunk_encoder(layer)
        cache = trunk_cache(encoder.checksum, layer, args.mirrored)
    desc = f"Maps of {layer}" if args.split == "whole" else f"Trunk to {layer}{', mirrored' if args.mirrored else ''}"
    extract_feature_maps([data.image_path(n) for n in names], encoder, cache, batch_size=32,
                         desc=desc, collect=False, mirrored=args.mirrored)
    print(f"{cache.dir}: {len(names)} photos cached", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
