"""A teacher for self-critical training: a trained model or ensemble whose next-word
distributions the student is pulled toward, on the captions the student itself samples.

The ensemble of the two decoders scores better than either alone but costs both decoders'
steps at every word. Distillation moves part of that gain into one decoder: during the
self-critical phase each sampled caption is also read by the teacher (teacher forced, one
batched Keras pass per update), and the student's loss gains `scst_teacher_weight` x the
cross-entropy from the teacher's distribution to its own at every word of the sample, i.e.
forward KL(teacher || student) on the states the student visits (on-policy distillation,
Agarwal et al. 2024, "GKD"). Nothing of the teacher is saved with the student: it is
only read during training, and its manifest's sha256 is recorded beside the student.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from captioner.model_dirs.artifacts import MANIFEST, ArtifactError
from captioner.training.checkpoint import TrainingError
from captioner.decoders.registry import keras_inputs
from captioner.vision.encoder import pool
from captioner.data.text import Vocabulary

POOL_CHUNK = 256  # photos pooled at a time: the float32 copy of all maps would be 4.9 GB


class Teacher:
    def __init__(self, members: list, weights: list[float], fingerprint: str,
                 directories: list[Path] | None = None):
        """`members`: (Keras decoder, its Config) pairs; `weights`: how their log-probabilities
        mix (an ensemble's, or [1.0]); `fingerprint`: sha256 of the teacher's manifest.json;
        `directories`: the teacher's own and its members' (a student must not overwrite them)."""
        import tensorflow as tf
        if len(members) != len(weights) or not members:
            raise ValueError(f"a teacher needs one weight per member, got {len(members)} and {len(weights)}")
        self.members, self.weights, self.fingerprint = members, [float(w) for w in weights], fingerprint
        self.directories = [Path(os.path.abspath(d)) for d in directories or []]
        self._features: list[np.ndarray] | None = None
        self.flows: list = []                      # tuned exit flows its members read (none: frozen maps)
        self.views = [0] * len(members)            # the view of those each member reads
        models = [model for model, _ in members]

        @tf.function(reduce_retracing=True)
        def probabilities(inputs):
            mixed = sum(w * tf.nn.log_softmax(model(x, training=False))
                        for w, model, x in zip(self.weights, models, inputs))
            return tf.nn.softmax(mixed)  # renormalised, as EnsembleDecoder.step does
        self._probabilities = probabilities

    @classmethod
    def load(cls, directory: str | os.PathLike, vocab: Vocabulary, encoder_checksum: str) -> "Teacher":
        """The model or ensemble in `directory`; it must share the student's vocabulary and
        have been trained on features of the same encoder weights."""
        from captioner.model_dirs.catalog import load_model
        from captioner.model_dirs.ensemble_dir import TrainedEnsemble
        directory = Path(directory)
        try:
            loaded = load_model(directory)
        except ArtifactError as exc:
            raise TrainingError(f"teacher {exc}") from None
        trained, weights = ((loaded.members, loaded.weights) if isinstance(loaded, TrainedEnsemble)
                            else ([loaded], [1.0]))
        if loaded.vocab.itos != vocab.itos:
            raise TrainingError(f"{directory}: the teacher's vocabulary differs from this run's "
                                "(trained on other captions or another --min-word-count).")
        for member in trained:
            if (member.manifest.get("encoder") or {}).get("weights_checksum") != encoder_checksum:
                raise TrainingError(f"{member.directory}: the teacher was trained on features of other "
                                    "Xception weights than this run's.")
        fingerprint = hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()
        teacher = cls([(m.model, m.config) for m in trained], weights, fingerprint,
                      [directory, *(m.directory for m in trained)])
        # A member with its own exit flow reads its own maps (model_dirs/views.py): the run
        # encodes the training photos into views, and each member reads its own.
        from captioner.model_dirs.views import exit_flows, view_of
        teacher.flows = exit_flows(loaded)
        teacher.views = [view_of(m, teacher.flows) for m in trained]
        return teacher

    @property
    def needs_maps(self) -> bool:
        """Whether a member reads the 10x10 regions (pooled vectors cannot feed it)."""
        return any(config.decoder == "attention" for _, config in self.members)

    def bind(self, features: np.ndarray) -> "Teacher":
        """Read the training photos' features: maps as regions (n, 100, 2048), or pooled
        vectors (n, 2048) if no member needs more, or with `flows` the views of them (n, views,
        10, 10, 2048). Each member gets its own form (and view), once."""
        if self.flows:
            if features.ndim != 5:
                raise TrainingError("a teacher with its own exit flow needs the training photos' views.")
            self._features = []
            for view, (_, config) in zip(self.views, self.members):
                maps = features[:, view]
                self._features.append(maps.reshape(len(maps), -1, maps.shape[-1]) if config.decoder == "attention"
                                      else np.concatenate([pool(maps[i:i + POOL_CHUNK])
                                                           for i in range(0, len(maps), POOL_CHUNK)]))
            return self
        if features.ndim != 3 and self.needs_maps:
            raise TrainingError("a teacher with an attention decoder needs the 10x10 maps, "
                                "not pooled vectors.")
        pooled = None
        self._features = []
        for _, config in self.members:
            if config.decoder == "attention" or features.ndim == 2:
                self._features.append(features)
                continue
            if pooled is None:
                pooled = np.concatenate([pool(features[i:i + POOL_CHUNK])
                                         for i in range(0, len(features), POOL_CHUNK)])
            self._features.append(pooled)
        return self

    def probabilities(self, photos: np.ndarray, tokens: np.ndarray):
        """The teacher's next-word distribution (rows, width, vocab) after each prefix of
        `tokens` (teacher forcing) of the bound photos `photos`, a TensorFlow tensor."""
        if self._features is None:
            raise RuntimeError("bind() the teacher to the training photos' features first")
        inputs = [keras_inputs(config, features, photos, tokens)
                  for (_, config), features in zip(self.members, self._features)]
        return self._probabilities(inputs)


def check_same_teacher(state: dict, teacher: Teacher, directory: str) -> None:
    """A self-critical phase keeps the teacher it began with (by the sha256 of its manifest),
    or its epochs would mix two teachers: the first epoch records it, a resume compares."""
    began_with = state.setdefault("teacher_manifest_sha256", teacher.fingerprint)
    if began_with != teacher.fingerprint:
        raise TrainingError(f"{directory}: not the teacher this run's self-critical phase began "
                            "with (retrained or re-written since?); restore it, or start over.")
