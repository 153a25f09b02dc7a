"""The nearest other photos of each photo: the negatives of the contrastive reward."""
import numpy as np
import pytest

from captioner.training.similar import similar_photos


def test_nearest_other_photos_by_cosine_never_itself():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    # three tight groups of four photos, as 2x2 "maps" of regions (what attention reads)
    vectors = np.repeat(centres, 4, axis=0) + rng.normal(scale=0.01, size=(12, 16))
    regions = np.repeat(vectors[:, None, :], 4, axis=1).astype(np.float16)
    nearest = similar_photos(regions, 3, chunk=5)  # chunks that cut through the groups
    assert nearest.shape == (12, 3)
    for row, others in enumerate(nearest):
        assert row not in others
        assert set(others) == set(range(row // 4 * 4, row // 4 * 4 + 4)) - {row}
    # pooled vectors (what merge reads) give the same answer, nearest first
    pooled = similar_photos(vectors.astype(np.float32), 3)
    assert (pooled == nearest).all()
    sims = vectors @ vectors.T / np.outer(*[np.linalg.norm(vectors, axis=1)] * 2)
    assert all(sims[r, pooled[r, 0]] >= sims[r, pooled[r, 1]] >= sims[r, pooled[r, 2]] for r in range(12))


def test_asking_for_too_many_similar_photos_is_an_error():
    with pytest.raises(ValueError, match="between 1 and 2"):
        similar_photos(np.ones((3, 4), np.float32), 3)
