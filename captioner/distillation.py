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

from .artifacts import MANIFEST, ArtifactError, load_trained
from .checkpoint import TrainingError
from .decoders import keras_inputs
from .encoder import pool
from .text import Vocabulary


class Teacher:
    def __init__(self, members: list, weights: list[float], fingerprint: str):
        """`members`: (Keras decoder, its Config) pairs; `weights`: how their log-probabilities
        mix (an ensemble's, or [1.0]); `fingerprint`: sha256 of the teacher's manifest.json."""
        import tensorflow as tf
        self.members, self.weights, self.fingerprint = members, [float(w) for w in weights], fingerprint
        models = [model for model, _ in members]

        @tf.function(reduce_retracing=True)
        def probabilities(inputs):
            mixed = sum(w * tf.nn.log_softmax(model(x, training=False))
                        for w, model, x in zip(self.weights, models, inputs))
            return tf.nn.softmax(mixed)  # renormalised, as EnsembleDecoder.step does
        self._probabilities = probabilities

    @classmethod
    def load(cls, directory: str | os.PathLike, vocab: Vocabulary) -> "Teacher":
        """The model or ensemble in `directory`; it must share the student's vocabulary."""
        from .trained_ensemble import is_ensemble, load_ensemble
        directory = Path(directory)
        try:
            if is_ensemble(directory):
                loaded = load_ensemble(directory)
                members, weights = [(m.model, m.config) for m in loaded.members], loaded.weights
            else:
                loaded = load_trained(directory)
                members, weights = [(loaded.model, loaded.config)], [1.0]
        except ArtifactError as exc:
            raise TrainingError(f"teacher {exc}") from None
        if loaded.vocab.itos != vocab.itos:
            raise TrainingError(f"{directory}: the teacher's vocabulary differs from this run's "
                                "(trained on other captions or another --min-word-count).")
        fingerprint = hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()
        return cls(members, weights, fingerprint)

    def probabilities(self, features: np.ndarray, photos: np.ndarray, tokens: np.ndarray):
        """The teacher's next-word distribution (rows, width, vocab) after each prefix of
        `tokens` (teacher forcing), a TensorFlow tensor. `features`: one row per photo of the
        split, as maps (n, 100, 2048) or pooled vectors (n, 2048); each member gets its form."""
        inputs = [keras_inputs(config, self._features_for(config.decoder, features), photos, tokens)
                  for _, config in self.members]
        return self._probabilities(inputs)

    def _features_for(self, decoder: str, features: np.ndarray) -> np.ndarray:
        if decoder == "merge":
            if features.ndim == 2:
                return features
            if getattr(self, "_pooled_source", None) is not features:  # pooled once per split
                self._pooled_source, self._pooled = features, pool(features)
            return self._pooled
        if features.ndim != 3:
            raise TrainingError("a teacher with an attention decoder needs the 10x10 maps: "
                                "distil into an attention student, or use a merge teacher.")
        return features
