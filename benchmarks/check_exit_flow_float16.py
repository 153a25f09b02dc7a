#!/usr/bin/env python
"""Would a tuned model's exit flow lose anything stored as float16? Its captions of the
validation photos from the exit flow at its float32 weights and at the same weights rounded to
float16: val CIDEr of each at beam 3, the share of photos given the same caption, and how far
the maps moved.

    python benchmarks/check_exit_flow_float16.py --model /work/runs/xe_block14/attention \
        --data ../shared/flickr8k [--photos 1000] [--json]

The exit flow's inputs come from the trunk cache that training filled (a cold cache is
computed on LiteRT, about 2 minutes for 1,000 photos). Issue 24: store the tuned weights as
float16 if validation CIDEr does not move; "costs nothing" is the int8 rule of issue 23 (CIDEr
within 0.005, the same caption on 95% of photos). Needs TensorFlow (the head runs in Keras, as in
training). Models written since training stores the exit flow in float16 record this comparison
themselves (manifest.json, exit_flow.float16), which it then prints.
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
    parser.add_argument("--model", required=True, help="a model directory with exit_flow.weights.h5")
    parser.add_argument("--data", default=os.environ.get("CAPTIONER_DATA_DIR", "../shared/flickr8k"))
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import numpy as np

    from captioner import Captioner
    from captioner.data.dataset import load_flickr8k
    from captioner.evaluation.metrics import coco_scores
    from captioner.training.finetune import head_maps
    from captioner.vision.exit_flow import SPLIT_SHAPES, trunk_encoder
    from captioner.vision.features import FeatureCache, extract_feature_maps
    from captioner.vision.tuned_encoder import keras_head

    captioner = Captioner.load(args.model)
    flow = captioner.trained.exit_flow
    if flow is None:
        parser.error(f"{args.model}: has no tuned exit flow")
    import h5py
    with h5py.File(flow.weights, "r") as stored:
        kinds = set()
        stored.visititems(lambda _, item: kinds.add(str(item.dtype)) if isinstance(item, h5py.Dataset) else None)
    if kinds == {"float16"}:   # written since training rounds before it scores: it measured this itself
        measured = (captioner.manifest.get("exit_flow") or {}).get("float16")
        if measured is None:
            parser.error(f"{flow.weights}: already float16, and its manifest records no float32 comparison")
        print(json.dumps({"model": str(args.model), "recorded_by_training": measured}, indent=2))
        return 0
    data = load_flickr8k(args.data)
    names = data.images("val")[: args.photos]
    trunk = trunk_encoder(flow.layer)
    inputs = extract_feature_maps([data.image_path(n) for n in names], trunk,
                                  FeatureCache(trunk.checksum, shape=SPLIT_SHAPES[flow.layer], part=flow.layer),
                                  desc=f"Exit-flow inputs ({flow.layer})")

    class Head:  # what head_maps reads: a model's exit_flow attribute
        def __init__(self, exit_flow):
            self.exit_flow = exit_flow

    full = keras_head(flow.weights, flow.layer)
    rounded = keras_head(flow.weights, flow.layer)
    rounded.set_weights([w.astype(np.float16).astype(np.float32) for w in full.get_weights()])
    shape = (len(names), 10, 10, -1)
    maps = {"float32": head_maps(Head(full), inputs).reshape(shape),
            "float16": head_maps(Head(rounded), inputs).reshape(shape)}
    references = {n: data.captions[n] for n in names}
    plain = Captioner(captioner.trained, flows=[])   # decodes the maps given, not views of them
    captions = {kind: [c[0].text for c in plain.caption_batch(m, beam=3, trust=False)]
                for kind, m in maps.items()}
    cider = {kind: coco_scores(dict(zip(names, caps)), references, meteor=False)["CIDEr"]
             for kind, caps in captions.items()}
    difference = np.abs(maps["float32"].astype(np.float32) - maps["float16"].astype(np.float32))
    a, b = (maps[k].reshape(len(names), -1).astype(np.float32) for k in ("float32", "float16"))
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    results = {"model": str(args.model), "photos": len(names), "layer": flow.layer,
               "parameters": int(sum(w.size for w in full.get_weights())),
               "val_cider_float32": round(cider["float32"], 4), "val_cider_float16": round(cider["float16"], 4),
               "same_caption": round(sum(x == y for x, y in zip(captions["float32"], captions["float16"])) / len(names), 4),
               "map_max_abs_difference": float(difference.max()),
               "map_min_cosine": round(float(cosine.min()), 6)}
    results["float16_costs_nothing"] = (abs(results["val_cider_float16"] - results["val_cider_float32"]) <= 0.005
                                        and results["same_caption"] >= 0.95)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key, value in results.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
