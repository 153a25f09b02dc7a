"""One cross-entropy (teacher-forced) epoch over the training captions, and the val loss."""
from __future__ import annotations

import sys

import numpy as np

from captioner.training.run import Run
from captioner.training.caption_set import photo_batches


def xe_epoch(run: Run, train_step, nll_sum, rng, epoch: int) -> dict:
    from tqdm import tqdm
    captions, losses = run.captions["train"], []
    batches = photo_batches(captions, run.photos_per_batch, rng)
    bar = tqdm(batches, desc=f"Epoch {epoch} cross-entropy", unit="batch", disable=not run.progress,
               file=sys.stderr, dynamic_ncols=True)
    for done, photos in enumerate(bar, 1):
        indices = [i for p in photos for i in captions.by_photo[p]]
        rows, inputs, targets = captions.batch(indices)
        mask = (targets > 0).astype(np.float32)
        flips = run.mirror_choices(photos, rng)
        mirrored = None if flips is None else np.isin(rows, np.asarray(photos)[flips])
        loss, _ = train_step(run.inputs("train", rows, inputs, mirrored), targets, mask, np.float32(mask.sum()))
        losses.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", refresh=False)
        run.reporter.report(done=done, total=len(batches), unit="batches",
                            loss=round(float(np.mean(losses[-50:])), 4))
    run.reporter.report(step="validation", force=True)
    return {"loss": round(float(np.mean(losses)), 4), "val_loss": round(val_loss(run, nll_sum), 4)}


def val_loss(run: Run, nll_sum) -> float:
    captions = run.captions["val"]
    total, count = 0.0, 0.0
    for start in range(0, len(run.splits["val"]), 50):
        indices = [i for p in range(start, min(start + 50, len(run.splits["val"])))
                   for i in captions.by_photo[p]]
        rows, inputs, targets = captions.batch(indices)
        mask = (targets > 0).astype(np.float32)
        total += float(nll_sum(run.inputs("val", rows, inputs), targets, mask))
        count += float(mask.sum())
    return total / max(count, 1.0)
