"""One self-critical epoch (Rennie et al. 2017): sample captions, reward them with CIDEr-D,
and raise the probability of those better than their siblings.

The weights of the shared training step are each sample's advantage, reward minus the mean
reward of the photo's other samples (the "new self-critical" baseline). Optionally the
photo's reference captions stay in the loss with weight `scst_xe_weight` (a mixed
objective), and the reward may be contrastive (`scst_contrast_weight`): the sample's
CIDEr-D against its own photo's references minus a share of its CIDEr-D against those of a
similar training photo, so a caption earns only what tells its photo apart. (CIDEr alone
rewards safe, generic captions that many photos share; the training loop also refuses an
epoch whose val captions are not distinct enough.)
"""
from __future__ import annotations

import sys

import numpy as np

from captioner.training.run import SIMILAR_PHOTOS, Run
from captioner.training.caption_set import CaptionSet
from captioner.evaluation.cider import CiderD
from captioner.decoders.registry import numpy_decoder
from captioner.decoding.search import sample_captions
from captioner.data.text import Vocabulary, clean_caption

SCST_SAMPLE_PHOTOS = 96     # photos sampled with one copy of the weights (then 6-8 updates)
END_WORD = "<end>"          # kept in the reward, so stopping mid-phrase costs CIDEr


def reward_scorer(run: Run) -> CiderD:
    """CIDEr-D over the training references, each ending in the end word (computed once)."""
    refs = {n: [" ".join(clean_caption(c) + [END_WORD]) for c in run.references["train"][n]]
            for n in run.splits["train"]}
    return CiderD(refs)


def scst_epoch(run: Run, model, train_step, cider: CiderD, rng, epoch: int, teacher=None) -> dict:
    """One pass of self-critical training over the training photos (distilling `teacher`,
    a `distillation.Teacher`, on the samples if given)."""
    from tqdm import tqdm
    config, vocab, samples = run.config, run.vocab, run.config.scst_samples
    names = run.splits["train"]
    order = rng.permutation(len(names))
    chunks = [order[i:i + SCST_SAMPLE_PHOTOS] for i in range(0, len(order), SCST_SAMPLE_PHOTOS)]
    per_update = max(1, run.photos_per_batch)
    rewards_all, contrasts_all, losses, teacher_kls = [], [], [], []
    similar = run.similar_train_photos if config.scst_contrast_weight else None
    bar = tqdm(total=len(order), desc=f"Epoch {epoch} self-critical", unit="photo",
               disable=not run.progress, file=sys.stderr, dynamic_ncols=True)
    for chunk in chunks:
        decoder = numpy_decoder(model, config)  # the current weights, for this chunk's samples
        ids, ended = sample_captions(decoder, run.sampling_features(chunk), samples,
                                     config.max_decode_length, rng)
        texts = [(vocab.decode(row) + (f" {END_WORD}" if done else "")).strip() for row, done in zip(ids, ended)]
        keys = [names[p] for p in np.repeat(chunk, samples)]
        similar_keys = None
        if similar is not None:
            # one similar photo per photo, so its samples are compared on the same footing
            negatives = np.repeat(similar[chunk, rng.integers(0, SIMILAR_PHOTOS, len(chunk))], samples)
            similar_keys = [names[i] for i in negatives]
        own, against, rewards = sample_rewards(cider, keys, texts, similar_keys, config.scst_contrast_weight)
        own, rewards = own.reshape(len(chunk), samples), rewards.reshape(len(chunk), samples)
        rewards_all.append(own.mean(axis=1))  # reported as plain CIDEr-D, comparable across runs
        if against is not None:
            contrasts_all.append(against.reshape(len(chunk), samples).mean(axis=1))
        baseline = (rewards.sum(axis=1, keepdims=True) - rewards) / (samples - 1)
        advantage = (rewards - baseline).reshape(-1).astype(np.float32)
        lengths = np.where(ended, (ids != Vocabulary.end_id).argmin(axis=1) + 1, (ids > 0).sum(axis=1))
        for start in range(0, len(chunk), per_update):
            rows = np.arange(start * samples, min(start + per_update, len(chunk)) * samples)
            width = int(lengths[rows].max())
            targets = ids[rows, :width]
            inputs = np.concatenate([np.full((len(rows), 1), Vocabulary.start_id, np.int32),
                                     targets[:, :-1]], axis=1)
            inputs[inputs == Vocabulary.end_id] = 0  # after the end a row is padding
            mask = (np.arange(width)[None, :] < lengths[rows, None]).astype(np.float32)
            photos = np.repeat(chunk[start:start + per_update], samples)
            weights = mask * advantage[rows, None]
            distilled = {}
            if teacher is not None:
                distilled = teacher_targets(teacher, photos, inputs, config.scst_teacher_weight * mask)
            if config.scst_xe_weight:
                photos, inputs, targets, weights = with_references(
                    run.captions["train"], chunk[start:start + per_update], photos, inputs,
                    targets, weights, config.scst_xe_weight * mask.sum())
                distilled = pad_rows(distilled, len(photos), inputs.shape[1])
            loss, teacher_kl = train_step(run.inputs("train", photos, inputs), targets, weights,
                                          np.float32(mask.sum()), **distilled)
            losses.append(float(loss))
            teacher_kls.append(float(teacher_kl))
        bar.update(len(chunk))
        mean_reward = float(np.concatenate(rewards_all).mean())
        bar.set_postfix(reward=f"{mean_reward:.3f}", refresh=False)
        run.reporter.report(done=bar.n, total=len(order), unit="photos", mean_reward=round(mean_reward, 4),
                            loss=round(float(np.mean(losses[-20:])), 4))
    bar.close()
    run.reporter.report(step="validation", force=True)
    row = {"loss": round(float(np.mean(losses)), 4),
           "mean_reward": round(float(np.concatenate(rewards_all).mean()), 4)}
    if teacher is not None:  # how far the student's words are from the teacher's, per word
        row["teacher_kl"] = round(float(np.mean(teacher_kls)), 4)
    if contrasts_all:  # how well the samples fit their similar photos' references
        row["mean_similar_photo_reward"] = round(float(np.concatenate(contrasts_all).mean()), 4)
    return row


def sample_rewards(cider: CiderD, keys: list[str], texts: list[str], similar_keys: list[str] | None,
                   contrast_weight: float):
    """(own CIDEr-D, CIDEr-D against the similar photos or None, reward) of each sample: the
    reward is the first minus `contrast_weight` x the second, so a caption that fits a similar
    photo as well as its own earns less than one that tells them apart."""
    own = cider.score_many(keys, texts)
    if similar_keys is None or not contrast_weight:
        return own, None, own
    against = cider.score_many(similar_keys, texts)
    return own, against, own - contrast_weight * against


def with_references(captions: CaptionSet, chunk_photos, photos, inputs, targets, weights,
                    reference_weight: float):
    """Append the photos' reference captions (teacher forced) to an SCST batch, their words
    weighted so that they add `reference_weight` x their mean -log p to the loss: the
    cross-entropy part of the mixed objective, which anchors the model to human captions."""
    indices = [i for p in chunk_photos for i in captions.by_photo[p]]
    ref_photos, ref_inputs, ref_targets = captions.batch(indices)
    ref_mask = (ref_targets > 0).astype(np.float32)
    width = max(inputs.shape[1], ref_inputs.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])))
    return (np.concatenate([photos, ref_photos]),
            np.concatenate([pad(inputs), pad(ref_inputs)]),
            np.concatenate([pad(targets), pad(ref_targets)]),
            np.concatenate([pad(weights), pad(ref_mask * (reference_weight / ref_mask.sum()))]).astype(np.float32))


def teacher_targets(teacher, photos, inputs, weights) -> dict:
    """The train step's distillation arguments for sampled captions: the teacher's
    distribution after each of their prefixes, weighted per word by `weights` (0 past the end)."""
    return {"soft_targets": teacher.probabilities(photos, inputs),
            "soft_weights": weights.astype(np.float32)}


def pad_rows(distilled: dict, rows: int, width: int) -> dict:
    """Distillation arguments for a batch the references were appended to: their rows and any
    extra width get zero weight (the references are anchored to by cross-entropy alone)."""
    if not distilled:
        return distilled
    import tensorflow as tf
    soft, weights = distilled["soft_targets"], distilled["soft_weights"]
    extra_rows, extra_width = rows - weights.shape[0], width - weights.shape[1]
    return {"soft_targets": tf.pad(soft, [[0, extra_rows], [0, extra_width], [0, 0]]),
            "soft_weights": np.pad(weights, ((0, extra_rows), (0, extra_width)))}
