"""Everything one training run needs, loaded once: data, features, vocabulary, captions; and
the validation scores both phases ask of it."""
from __future__ import annotations

import dataclasses
import functools

import numpy as np

from captioner.data.dataset import load_flickr8k
from captioner.data.text import Vocabulary
from captioner.decoders.config import Config
from captioner.decoders.registry import keras_inputs
from captioner.decoding.search import beam_search, greedy_search
from captioner.evaluation.metrics import caption_statistics, quick_scores
from captioner.training.caption_set import CaptionSet
from captioner.training.features import shared_flow_features, split_features
from captioner.decoders.registry import is_tuned
from captioner.training.finetune import MIRRORED, head_maps, mirrorable, trunk_features
from captioner.training.progress import ProgressReporter, log
from captioner.training.scores import ALPHA_CHOICES, best_alpha
from captioner.training.similar import similar_photos

SIMILAR_PHOTOS = 5  # contrastive reward: each sample's negative is one of these nearest photos


class Run:
    """Everything one training run needs, loaded once: data, features, vocabulary, model."""

    def __init__(self, data_dir, config: Config, encoder, progress: bool, max_images: int | None,
                 reporter: ProgressReporter, trunk_encoder=None):
        self.progress = progress
        self.reporter = reporter
        self.encoder = encoder
        reporter.report(phase="features", force=True)
        self.dataset = load_flickr8k(data_dir)
        self.splits = {s: self.dataset.images(s)[:max_images] if max_images else self.dataset.images(s)
                       for s in ("train", "val", "test")}
        log(f"Dataset {self.dataset.root} ({self.dataset.layout} layout): "
            + ", ".join(f"{s} {len(n)}" for s, n in self.splits.items()))
        # Another model's tuned exit flow, read as it is (config.exit_flow_from), or ImageNet's.
        self.shared_flow = (shared_exit_flow(config.exit_flow_from, encoder.checksum)
                            if config.exit_flow_from else None)
        self._imagenet_train = None
        if self.shared_flow is not None:
            log(f"Reading the exit flow of {config.exit_flow_from} (sha256 {self.shared_flow.sha256[:12]}...), held fixed")
            self.features, self._imagenet_train = shared_flow_features(self.dataset, self.splits, self.shared_flow,
                                                                       config, progress)
        else:
            self.features = split_features(self.dataset, self.splits, encoder, progress, config, reporter)
        # Fine-tuning the exit flow: its cached inputs, and (once tuning begins, see `tune`) the
        # model whose exit flow turns them into the maps batches, samples and validation read.
        self.trunk = (trunk_features(self.dataset, self.splits, config, progress, trunk_encoder)
                      if config.finetune_encoder else {})
        self.tuned_model = None
        self.exit_flow_fixed = False   # see `tune`
        # the training photos that may be read mirrored (--finetune-mirror)
        self.mirrorable = (mirrorable(self.dataset.captions, self.splits["train"])
                           if MIRRORED in self.trunk else None)
        self._frozen = {}   # the frozen features of splits tuned maps have replaced
        train_captions = [c for n in self.splits["train"] for c in self.dataset.captions[n]]
        self.vocab = Vocabulary.build(train_captions, config.min_word_count)
        self.config = dataclasses.replace(config, vocab_size=len(self.vocab))
        log(f"Vocabulary: {len(self.vocab)} tokens (words seen >= {config.min_word_count} times in train)")
        self.captions = {s: CaptionSet.build(self.dataset, self.splits[s], self.vocab,
                                             config.max_caption_words) for s in ("train", "val")}
        self.references = {s: {n: self.dataset.captions[n] for n in names}
                           for s, names in self.splits.items()}
        per_photo = len(self.captions["train"]) / max(len(self.splits["train"]), 1)
        self.photos_per_batch = max(1, round(config.batch_size / max(per_photo, 1)))

    def inputs(self, split: str, photos, tokens, mirrored: np.ndarray | None = None) -> dict:
        """A batch's model inputs: caption rows `tokens` of photos `photos` (one per row),
        with `mirrored` (one per row, from `mirror_choices`) the training photos read mirrored."""
        if self.tuned_model is None:
            return keras_inputs(self.config, self.features[split], photos, tokens)
        photos = np.asarray(photos)
        flips = np.zeros(len(photos), bool) if mirrored is None else np.asarray(mirrored, bool)
        # each (photo, mirrored) pair's exit flow runs once
        unique, index = np.unique(photos * 2 + flips, return_inverse=True)
        ids, flipped = unique // 2, unique % 2 == 1
        trunk = self.trunk[split][ids]
        if flipped.any():
            trunk[flipped] = self.trunk[MIRRORED][ids[flipped]]
        return {"trunk": trunk.astype(np.float32),
                "photo_index": index.astype(np.int32), "tokens": tokens.astype(np.int32)}

    def mirror_choices(self, photos, rng) -> np.ndarray | None:
        """Which of the training photos `photos` a tuned cross-entropy batch reads mirrored
        (each with probability `finetune_mirror`, if its captions allow), or None when
        nothing is mirrored: no random draw then, so runs without mirroring are unchanged."""
        if self.mirrorable is None or self.tuned_model is None:
            return None
        photos = np.asarray(photos)
        return self.mirrorable[photos] & (rng.random(len(photos)) < self.config.finetune_mirror)

    def tune(self, model, splits=("val",), fixed: bool = False) -> None:
        """Read `splits` (and from now on the training photos' samples) through `model`'s exit
        flow, if it has one: its current maps replace the frozen features. With `fixed` (the
        exit flow will not change, --scst-exit-flow fixed) the training photos' maps are made
        once here, instead of for each chunk of samples in every epoch."""
        self.tuned_model = model if is_tuned(model) else None
        self.exit_flow_fixed = fixed and self.tuned_model is not None
        if self.tuned_model is not None:
            self.refresh_maps(splits + (("train",) if self.exit_flow_fixed else ()))
        else:  # a frozen model again (the kept epoch came before tuning began): frozen features
            self.features.update(self._frozen)

    def refresh_maps(self, splits=("val",)) -> None:
        """The tuned exit flow's maps of `splits`, after its weights changed."""
        for split in splits:
            if split in self.trunk and self.tuned_model is not None:
                self._frozen.setdefault(split, self.features[split])
                self.features[split] = head_maps(self.tuned_model, self.trunk[split])

    def sampling_features(self, photos: np.ndarray) -> np.ndarray:
        """What self-critical sampling reads for training photos `photos`: the current maps."""
        if self.tuned_model is None or self.exit_flow_fixed:
            return self.features["train"][photos]
        return head_maps(self.tuned_model, self.trunk["train"][photos])

    def val_scores(self, decoder) -> tuple[dict, list]:
        """Greedy captions of the val photos and their BLEU-4 and CIDEr (our tokens, no Java)."""
        captions = greedy_search(decoder, self.vocab, self.features["val"],
                                 self.config.max_decode_length, self.config.length_alpha)
        hyps = {n: c.text for n, c in zip(self.splits["val"], captions)}
        return quick_scores(hyps, self.references["val"]), captions

    def val_at_beam(self, decoder) -> dict:
        """Val captions at beam width `scst_distinct_beam` with the length penalty that scores
        best, as the finished model will choose it: their CIDEr, share of distinct captions
        (a longer caption is more often distinct, so the penalty matters) and the penalty."""
        texts, cider = {}, {}
        for alpha in ALPHA_CHOICES:
            captions = beam_search(decoder, self.vocab, self.features["val"], beam=self.config.scst_distinct_beam,
                                   max_length=self.config.max_decode_length, alpha=alpha)
            texts[alpha] = [c[0].text for c in captions]
            cider[alpha] = quick_scores(dict(zip(self.splits["val"], texts[alpha])), self.references["val"])["CIDEr"]
        alpha = best_alpha(cider)
        return {"val_cider_beam": cider[alpha], "val_distinct_beam": caption_statistics(texts[alpha])["distinct"],
                "val_distinct_alpha": alpha}

    def teacher_features(self, needs_maps: bool, flows: list | None = None) -> np.ndarray:
        """The training photos as a teacher reads them: this run's own features, or, for a
        teacher with an attention member and a merge student, the maps (cached, not re-encoded),
        or for a teacher with its own exit flows `flows` the views of them (model_dirs/views.py)."""
        if flows:
            from captioner.training.features import views_maps
            return views_maps([self.dataset.image_path(n) for n in self.splits["train"]], flows,
                              self.progress, "Teacher's views (train)")
        if needs_maps and self.config.decoder != "attention":
            as_maps = dataclasses.replace(self.config, decoder="attention")
            return split_features(self.dataset, {"train": self.splits["train"]}, self.encoder,
                                  self.progress, as_maps)["train"]
        return self.frozen_train_features

    @functools.cached_property
    def similar_train_photos(self) -> np.ndarray:
        """Each training photo's nearest others (the contrastive reward's negatives), once a run,
        by the frozen ImageNet features: the same whatever the exit flow does."""
        return similar_photos(self.frozen_train_features, SIMILAR_PHOTOS)

    @property
    def frozen_train_features(self) -> np.ndarray:
        """The training photos' frozen ImageNet features, even where tuned maps replaced them."""
        if "train" in self._frozen:
            return self._frozen["train"]
        return self._imagenet_train if self._imagenet_train is not None else self.features["train"]


def shared_exit_flow(directory: str, encoder_checksum: str):
    """The tuned exit flow of the model in `directory`, for a decoder to read as it is; that
    model must have one, started from this run's ImageNet weights."""
    from captioner.model_dirs.artifacts import ArtifactError, load_trained
    from captioner.training.checkpoint import TrainingError
    try:
        source = load_trained(directory)
    except ArtifactError as exc:
        raise TrainingError(f"--exit-flow-from {exc}") from None
    if source.exit_flow is None:
        raise TrainingError(f"{directory}: has no tuned exit flow of its own to read (--exit-flow-from "
                            "wants a model trained with --finetune-encoder).")
    if (source.manifest.get("encoder") or {}).get("weights_checksum") != encoder_checksum:
        raise TrainingError(f"{directory}: its exit flow was tuned from other Xception weights than this run's.")
    return source.exit_flow
