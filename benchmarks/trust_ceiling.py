#!/usr/bin/env python
"""How high could any trust estimate lift the most trusted captions? A perfect ranking of the
held-out everyday photos by their own per-photo CIDEr-D gives the ceiling for issue 21's
"mean CIDEr of the 30% most trusted" (and the floor for the 40% least trusted).

    python benchmarks/trust_ceiling.py [--everyday ../shared/coco-dev] [--model ensemble] [--json]

Decodes every everyday photo at beam 3 as the app does (LiteRT; the feature cache is reused),
scores each caption against its five references with the COCO toolkit's CIDEr-D (what
trust.json's "right" reads) and reports, for the half that fit_trust.py holds out and for all
photos: the mean, the mean of the best 30% and of the worst 40%, and the share reaching a few
CIDEr-D levels. No estimate is read or fitted.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--everyday", default="../shared/coco-dev")
    parser.add_argument("--model", default=None, help="merge, attention or ensemble (default: the default model)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np

    from captioner.api import load_captioner
    from captioner.data.dataset import load_caption_folder
    from captioner.evaluation.metrics import coco_scores
    from captioner.vision.features import FeatureCache, extract_feature_maps
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "training_scripts"))
    from fit_trust import held_out

    folder = load_caption_folder(args.everyday)
    names = folder.images()
    captioner = load_captioner(args.model, data_dir="")
    paths = [folder.image_path(n) for n in names]
    if captioner.has_views:
        from captioner.training.features import views_maps
        maps = views_maps(paths, captioner.flows, progress=False)
    else:
        maps = extract_feature_maps(paths, captioner.encoder, FeatureCache(captioner.encoder.checksum), progress=False)
    found = captioner.caption_batch(maps, beam=3, trust=False)
    per_photo = {}
    coco_scores({n: f[0].text for n, f in zip(names, found)}, {n: folder.captions[n] for n in names},
                meteor=False, per_image=per_photo)

    def figures(chosen):
        cider = np.sort([per_photo[n]["cider"] for n in chosen])[::-1]
        top, bottom = int(round(0.3 * len(cider))), int(round(0.4 * len(cider)))
        return {"photos": len(cider), "mean": round(float(cider.mean()), 3),
                "best_30%_mean": round(float(cider[:top].mean()), 3),
                "worst_40%_mean": round(float(cider[-bottom:].mean()), 3),
                **{f"share_at_least_{t}": round(float((cider >= t).mean()), 3) for t in (0.5, 0.72, 1.0)}}
    results = {"model": captioner.name, "held_out_half": figures([n for n in names if held_out(n)]),
               "all": figures(names)}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for part in ("held_out_half", "all"):
            print(part, results[part])
    return 0


if __name__ == "__main__":
    sys.exit(main())
