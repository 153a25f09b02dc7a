"""Each split's features in the form a decoder trains on, through the on-disk feature cache:
pooled 2048-d vectors for merge, the 100 regions for attention."""
from __future__ import annotations

from captioner.data.dataset import Flickr8k
from captioner.decoders.config import Config
from captioner.decoders.registry import training_features
from captioner.training.progress import ProgressReporter
from captioner.vision.features import FeatureCache, extract_feature_maps


def split_features(dataset: Flickr8k, splits: dict[str, list[str]], encoder, progress: bool,
                   config: Config | None = None, reporter: ProgressReporter | None = None) -> dict:
    """Each split's features through the on-disk cache, in the form `config.decoder` reads
    (pooled vectors for merge, 100 regions for attention)."""
    config = config or Config()
    cache = FeatureCache(encoder.checksum)
    pooled = config.decoder == "merge"
    out = {}
    for split, names in splits.items():
        if names:
            on_progress = reporter and (lambda done, total, split=split: reporter.report(
                split=split, done=done, total=total, unit="photos"))
            maps = extract_feature_maps([dataset.image_path(n) for n in names], encoder, cache,
                                        progress=progress, pooled=pooled, desc=f"Features ({split})",
                                        on_progress=on_progress)
            out[split] = maps if pooled else training_features(config, maps)
    return out


def views_maps(paths: list, flows: list, progress: bool = True, desc: str = "Features"):
    """(n, views, 10, 10, 2048) float16: each photo of `paths` encoded for models reading the
    tuned exit flows `flows` (model_dirs/views.py; view 0 is ImageNet's), on LiteRT, through
    the on-disk cache keyed by every exit flow. Converts what LiteRT needs first (TensorFlow)."""
    from captioner.vision.encoder import FEATURE_MAP_SHAPE
    from captioner.vision.tuned_encoder import convert_views, open_views_encoder
    convert_views(flows)
    encoder = open_views_encoder("litert", flows)
    cache = FeatureCache(encoder.checksum, shape=(len(flows) + 1, *FEATURE_MAP_SHAPE), part="views")
    views_from_trunk_cache(paths, encoder, cache, progress, desc)
    return extract_feature_maps(paths, encoder, cache, progress=progress, desc=desc)


def views_from_trunk_cache(paths: list, encoder, cache: FeatureCache, progress: bool = True,
                           desc: str = "Features", batch_size: int = 32) -> int:
    """Put into `cache` the views of those `paths` it lacks whose trunk output fine-tuning has
    cached (training/finetune.trunk_cache: the same LiteRT trunk, stored in float16 as the
    views encoder rounds it): only the heads run, about a sixth of a pass each, instead of the
    whole encoder. Returns how many photos it mapped."""
    import sys

    import numpy as np
    from tqdm import tqdm

    from captioner.training.finetune import trunk_cache
    from captioner.vision.features import file_digest
    trunk = trunk_cache(encoder.base_checksum, encoder.trunk_layer)
    if encoder.kind != "litert" or not trunk.dir.is_dir():   # the cache holds the LiteRT trunk's output
        return 0
    digests = [d for d in dict.fromkeys(file_digest(p) for p in paths)
               if not cache.path_for(d).is_file() and trunk.path_for(d).is_file()]
    mapped = 0
    with tqdm(total=len(digests), desc=f"{desc}, from cached trunk outputs", unit="img",
              disable=not progress or not digests, file=sys.stderr, dynamic_ncols=True) as bar:
        for start in range(0, len(digests), batch_size):
            batch = [(d, trunk.get(d)) for d in digests[start:start + batch_size]]
            batch = [(d, inner) for d, inner in batch if inner is not None]   # damaged: the encoder redoes it
            if batch:
                for (digest, _), views in zip(batch, encoder.maps_from_trunk(np.stack([i for _, i in batch]))):
                    cache.put(digest, views)
                mapped += len(batch)
            bar.update(min(batch_size, len(digests) - start))
    return mapped


def split_views(dataset: Flickr8k, splits: dict[str, list[str]], flows: list, progress: bool) -> dict:
    """Each split's `views_maps`: what models reading the tuned exit flows `flows` decode."""
    return {split: views_maps([dataset.image_path(n) for n in names], flows, progress, f"Features ({split})")
            for split, names in splits.items()}


def model_maps(paths: list, flows: list, encoder, progress: bool = True, desc: str = "Features"):
    """What a Captioner reading `flows` takes as features for `paths`: the frozen maps of
    `encoder` without tuned exit flows, else `views_maps`."""
    if flows:
        return views_maps(paths, flows, progress, desc)
    return extract_feature_maps(paths, encoder, FeatureCache(encoder.checksum), progress=progress, desc=desc)


def shared_flow_features(dataset: Flickr8k, splits: dict[str, list[str]], flow, config: Config,
                         progress: bool, chunk: int = 256) -> tuple[dict, object]:
    """For a decoder reading another model's tuned exit flow `flow` (config.exit_flow_from):
    each split's features from that flow's maps (view 1), in the form `config.decoder` reads,
    and the training photos' ImageNet ones (view 0, for what must not depend on the flow: the
    contrastive reward's similar photos, a frozen teacher). A split's views are held while
    they are formed (4.9 GB for Flickr8k's training photos), never their float32 copy."""
    import numpy as np
    features, imagenet_train = {}, None
    for split, names in splits.items():
        if not names:
            continue
        views = views_maps([dataset.image_path(n) for n in names], [flow], progress, f"Features ({split})")
        formed = [np.concatenate([training_features(config, views[i:i + chunk, v])
                                  for i in range(0, len(views), chunk)])
                  for v in ((1, 0) if split == "train" else (1,))]
        features[split] = formed[0]
        if split == "train":
            imagenet_train = formed[1]
        del views
    return features, imagenet_train
