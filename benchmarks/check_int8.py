#!/usr/bin/env python
"""Would int8 Xception cost anything? Every model's captions of the validation photos from
the float LiteRT map (the same as TensorFlow's, tests/test_litert.py) and from a dynamic-range
int8 conversion: val CIDEr of each, and the share of photos given the same caption.

    python benchmarks/check_int8.py --data ../shared/flickr8k [--photos 1000] [--json]

The float maps come from the feature cache; the int8 ones are cached apart (a resumable
first run encodes the photos, about 2-3 minutes for 1,000). Shipping int8 needs CIDEr within
0.005 of float for every model and the same caption on at least 95% of photos (issue 23).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("CAPTIONER_DATA_DIR", "../shared/flickr8k"))
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from captioner import Captioner
    from captioner.data.dataset import load_flickr8k
    from captioner.evaluation.metrics import coco_scores
    from captioner.model_dirs.catalog import available_models
    from captioner.vision.encoder import cache_dir, resolve_weights
    from captioner.vision.features import FeatureCache, extract_feature_maps
    from captioner.vision.litert import LiteEncoder, cached_lite_path, convert

    data = load_flickr8k(args.data)
    names = data.images("val")[: args.photos]
    paths = [data.image_path(n) for n in names]
    int8_path = cache_dir() / "xception_imagenet_notop.int8.tflite"
    if not int8_path.is_file():
        model, checksum, _ = resolve_weights()
        convert(model, checksum, int8_path, int8=True)
    float_encoder, int8_encoder = LiteEncoder(cached_lite_path()), LiteEncoder(int8_path)
    maps = {"float": extract_feature_maps(paths, float_encoder, FeatureCache(float_encoder.checksum),
                                          desc="float maps"),
            "int8": extract_feature_maps(paths, int8_encoder, FeatureCache(int8_encoder.checksum),
                                         desc="int8 maps")}
    references = {n: data.captions[n] for n in names}
    results = {"photos": len(names), "int8_file_mb": round(int8_path.stat().st_size / 2**20, 1),
               "float_file_mb": round(cached_lite_path().stat().st_size / 2**20, 1), "models": {}}
    for name in available_models():
        captioner = Captioner.load(name=name, encoder=float_encoder)
        captions = {kind: [c[0].text for c in captioner.caption_batch(m, beam=3, trust=False)]
                    for kind, m in maps.items()}
        cider = {kind: coco_scores(dict(zip(names, caps)), references, meteor=False)["CIDEr"]
                 for kind, caps in captions.items()}
        same = sum(a == b for a, b in zip(captions["float"], captions["int8"])) / len(names)
        results["models"][name] = {"val_cider_float": cider["float"], "val_cider_int8": cider["int8"],
                                   "cider_change": round(cider["int8"] - cider["float"], 4),
                                   "same_caption_share": round(same, 4)}
    results["int8_costs_nothing"] = all(abs(m["cider_change"]) <= 0.005 and m["same_caption_share"] >= 0.95
                                        for m in results["models"].values())
    print(json.dumps(results, indent=2) if args.json else results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
