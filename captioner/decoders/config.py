"""All hyperparameters of a trained model: one dataclass, saved as config.json beside it."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path


DECODERS = ("merge", "attention")
SCST_SELECTIONS = ("greedy", "beam")
FINETUNE_CHOICES = ("", "exit_flow", "block14")   # vision/exit_flow.py: SPLITS
SCST_EXIT_FLOW_CHOICES = ("train", "fixed")


@dataclass
class Config:
    # Vocabulary and captions
    min_word_count: int = 5
    max_caption_words: int = 30        # longer training captions are truncated
    # Decoder: "merge" (image vector added to the LSTM output) or "attention" (adaptive
    # attention over the 10x10 map, see decoders/attention.py)
    decoder: str = "merge"
    feature_dim: int = 2048
    embed_dim: int = 256
    units: int = 512
    image_dropout: float = 0.5
    embed_dropout: float = 0.5
    attention_dim: int = 256           # attention decoder only
    # Optimisation
    batch_size: int = 64
    learning_rate: float = 1e-3
    max_epochs: int = 30
    patience: int = 4                  # epochs without a better val CIDEr before stopping
    lr_decay_patience: int = 2         # halve the learning rate after this many flat epochs
    # Cross-entropy only: the target is (1 - this) on the reference word plus this share spread
    # evenly over the vocabulary (Szegedy et al. 2016), so the model stays less sure of itself
    # and its samples vary more when self-critical training starts. 0 = plain cross-entropy.
    label_smoothing: float = 0.0
    seed: int = 1234
    # Self-critical sequence training (CIDEr-D reward) after cross-entropy; 0 epochs skips it
    scst_max_epochs: int = 5
    scst_samples: int = 5              # captions sampled per photo; baseline = mean of the others
    scst_learning_rate: float = 5e-5
    scst_patience: int = 2             # epochs without a better val CIDEr before stopping
    # Self-critical training sharpens the model toward safe, generic captions that many photos
    # share. Two guards against it: cross-entropy on the photo's own references stays in the
    # loss with this weight (0 = pure SCST), and an SCST epoch is kept only if at least this
    # share of its val captions is distinct, decoded at beam width `scst_distinct_beam`
    # (1 = greedy). Beam search merges near-identical greedy captions, so the honest measure
    # is at the app's width, with the length penalty the finished model would choose.
    scst_xe_weight: float = 1.0
    scst_min_distinct: float = 0.8
    scst_distinct_beam: int = 1
    # What chooses the self-critical epoch kept: val CIDEr of greedy captions ("greedy"), or
    # ("beam") of the captions the guard decodes at beam `scst_distinct_beam` with the chosen
    # length penalty, i.e. as the app will caption; greedy CIDEr proved a poor guide to it
    # (0.521 greedy gave 0.516 at beam 3 where 0.507 gave 0.538). The phase must then beat the
    # cross-entropy weights measured the same way.
    scst_select: str = "greedy"
    # Contrastive reward: a sample's reward is its CIDEr-D against its own photo's references
    # minus this weight times its CIDEr-D against those of one of the photo's most similar
    # training photos. A generic caption fits the neighbour as well as its own photo and gains
    # nothing; a caption that tells the two apart does. 0 = plain CIDEr-D.
    scst_contrast_weight: float = 0.0
    # Polyak averaging: validation, the kept epoch and the shipped model use an exponential
    # moving average of the weights over self-critical updates, with this momentum per update
    # (0 = the last weights). The samples still come from the live weights, the policy being
    # trained; the average smooths out the noise of 5-sample gradient estimates.
    scst_ema: float = 0.0
    # Distillation (see training/distillation.py): a trained model or ensemble directory whose next-word
    # distributions the student is pulled toward on its own samples, with this weight per word
    # (0 = no teacher). The ensemble of both decoders beats either alone; this moves part of
    # that gain into one decoder, which then decodes at one decoder's cost.
    scst_teacher: str = ""
    scst_teacher_weight: float = 0.0
    # Fine-tuning Xception's exit flow with the decoder (either kind, see
    # training/finetune.py): "" keeps Xception frozen at ImageNet weights; "exit_flow" tunes
    # blocks 13 and 14 (from the middle flow's output, add_10), "block14" block 14 alone. The
    # tuned layers learn at their own, smaller rate, from epoch `finetune_start_epoch` (counted
    # over both phases) on: a CNN is best tuned once the language model has settled.
    finetune_encoder: str = ""
    encoder_learning_rate: float = 1e-5
    finetune_start_epoch: int = 1
    # Augmentation for the tuned exit flow: in each tuned cross-entropy epoch a training photo
    # is read mirrored left to right with this probability (the photo is mirrored, then the
    # trunk run on it, into a cache of its own), unless one of its captions says "left" or
    # "right". The exit flow then sees two photos for each one, against overfitting 6.8M
    # parameters to 6,000 photos. 0 = never.
    finetune_mirror: float = 0.0
    # In self-critical training the tuned exit flow goes on learning ("train"), or stays as
    # the kept cross-entropy epoch left it ("fixed"), so that only the decoder learns from the
    # rewards: what tuning it in self-critical training is worth is measured against this.
    scst_exit_flow: str = "train"
    # A trained model directory whose tuned exit flow this decoder reads, held fixed, instead of
    # ImageNet's (either decoder): an ensemble member trained on its partner's maps shares them,
    # so the ensemble runs one tuned exit flow a photo instead of two. The model written
    # carries a copy of it, byte for byte.
    exit_flow_from: str = ""
    # Decoding
    max_decode_length: int = 30
    length_alpha: float = 0.7          # score = sum log p / (length ** alpha)
    default_beam: int = 3
    # Filled in by training: vocabulary size and what the model was trained on
    vocab_size: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}.")
        if self.scst_max_epochs < 0 or self.scst_samples < 2 or self.scst_learning_rate <= 0:
            raise ValueError("scst_max_epochs must be >= 0, scst_samples >= 2 (the baseline is the "
                             "mean of the other samples) and scst_learning_rate positive.")
        positive = ("min_word_count", "max_caption_words", "feature_dim", "embed_dim", "units",
                    "attention_dim", "scst_patience", "scst_distinct_beam",
                    "batch_size", "max_epochs", "patience", "lr_decay_patience",
                    "max_decode_length", "default_beam")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}.")
        for name in ("image_dropout", "embed_dropout", "label_smoothing"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        if self.scst_select not in SCST_SELECTIONS:
            raise ValueError(f"scst_select must be one of {', '.join(SCST_SELECTIONS)}, got {self.scst_select!r}.")
        if self.scst_select == "beam" and self.scst_distinct_beam < 2:
            raise ValueError("scst_select 'beam' must be given a scst_distinct_beam of at least 2 "
                             "(the beam width it chooses at).")
        if self.scst_teacher_weight < 0 or bool(self.scst_teacher_weight) != bool(self.scst_teacher):
            raise ValueError("scst_teacher_weight must be positive with a scst_teacher (a trained "
                             "model directory), and 0 without one.")
        if not 0 <= self.scst_ema < 1:
            raise ValueError(f"scst_ema must be in [0, 1), got {self.scst_ema}.")
        if self.scst_xe_weight < 0 or self.scst_contrast_weight < 0 or not 0 <= self.scst_min_distinct <= 1:
            raise ValueError("scst_xe_weight and scst_contrast_weight must not be negative and "
                             "scst_min_distinct must be in [0, 1].")
        if self.finetune_encoder not in FINETUNE_CHOICES:
            raise ValueError(f"finetune_encoder must be one of {', '.join(map(repr, FINETUNE_CHOICES))}, "
                             f"got {self.finetune_encoder!r}.")
        if self.scst_exit_flow not in SCST_EXIT_FLOW_CHOICES:
            raise ValueError(f"scst_exit_flow must be one of {', '.join(SCST_EXIT_FLOW_CHOICES)}, "
                             f"got {self.scst_exit_flow!r}.")
        if self.finetune_encoder and self.scst_ema:
            raise ValueError("finetune_encoder cannot be combined with scst_ema (the moving average "
                             "would cover the decoder alone).")
        if self.finetune_encoder and self.exit_flow_from:
            raise ValueError("exit_flow_from reads another model's exit flow as it is; it cannot be "
                             "combined with finetune_encoder, which tunes one of the decoder's own.")
        if not 0 <= self.finetune_mirror <= 1 or (self.finetune_mirror and not self.finetune_encoder):
            raise ValueError("finetune_mirror must be in [0, 1], and above 0 only with finetune_encoder "
                             "(it mirrors the photos the tuned exit flow reads).")
        if self.encoder_learning_rate <= 0 or self.finetune_start_epoch < 1:
            raise ValueError("encoder_learning_rate must be positive and finetune_start_epoch at least 1.")
        if self.learning_rate <= 0 or self.length_alpha < 0:
            raise ValueError("learning_rate must be positive and length_alpha not negative.")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, source: str = "config.json") -> "Config":
        if not isinstance(data, dict):
            raise ValueError(f"{source}: expected a JSON object.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown settings {', '.join(unknown)}.")
        return cls(**data)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Config":
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read config ({exc}).") from None
        return cls.from_json(data, str(path))
