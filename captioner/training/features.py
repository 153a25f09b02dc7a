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
    return extract_feature_maps(paths, encoder, cache, progress=progress, desc=desc)


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
