"""The one training step both phases run: a weighted sum of the word log-likelihoods.

For cross-entropy the weights are 1 on every real word; for self-critical training they are
each sample's advantage (see `self_critical`), so a single compiled step serves both. A
self-critical step with a teacher (see `distillation`) adds the cross-entropy from the
teacher's distribution at each word, weighted per word like the rest."""
from __future__ import annotations


def make_train_step(model, label_smoothing: float = 0.0, train_exit_flow: bool = True):
    """One update on sum(weights * loss per word) / normaliser, the loss per word being
    -log p(target), or with `label_smoothing` e its smoothed form (1 - e) (-log p(target)) +
    e x the mean of -log p over the vocabulary: cross-entropy or SCST (never smoothed).
    A tuned model's exit flow learns too, unless `train_exit_flow` is False.
    With `soft_targets` (rows, width, vocab) the loss adds sum(soft_weights x -sum_v q log p)
    / normaliser: distillation from a teacher's distribution q.

    Returns (loss, KL(q || p) averaged over the words `soft_weights` weighs, or 0 without a
    teacher): how far the student is from its teacher, which the loss (holding q's entropy)
    does not show."""
    import tensorflow as tf
    from captioner.training.finetune import optimiser_groups
    groups = optimiser_groups(model, train_exit_flow)

    @tf.function(reduce_retracing=True)
    def train_step(inputs, targets, weights, normaliser, soft_targets=None, soft_weights=None):
        with tf.GradientTape() as tape:
            logits = model(inputs, training=True)
            nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
            if label_smoothing:
                uniform = -tf.reduce_mean(tf.nn.log_softmax(logits), axis=-1)
                nll = (1.0 - label_smoothing) * nll + label_smoothing * uniform
            loss = tf.reduce_sum(nll * weights) / normaliser
            teacher_kl = tf.constant(0.0)
            if soft_targets is not None:
                soft_nll = -tf.reduce_sum(soft_targets * tf.nn.log_softmax(logits), axis=-1)
                loss += tf.reduce_sum(soft_nll * soft_weights) / normaliser
                kl = soft_nll + tf.reduce_sum(tf.math.xlogy(soft_targets, soft_targets), axis=-1)
                teacher_kl = tf.reduce_sum(kl * soft_weights) / tf.maximum(tf.reduce_sum(soft_weights), 1e-9)
        grads = tape.gradient(loss, [v for _, variables in groups for v in variables])
        start = 0
        for optimizer, variables in groups:  # a tuned exit flow has its own (training/finetune.py)
            optimizer.apply_gradients(zip(grads[start:start + len(variables)], variables))
            start += len(variables)
        return loss, teacher_kl

    @tf.function(reduce_retracing=True)
    def nll_sum(inputs, targets, weights):
        logits = model(inputs, training=False)
        nll = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)
        return tf.reduce_sum(nll * weights)

    return train_step, nll_sum
