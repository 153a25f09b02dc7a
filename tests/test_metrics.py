"""The COCO toolkit's METEOR from one kept Java process (evaluation/metrics.meteor_score)."""
import shutil

import pytest

from captioner.evaluation import metrics
from conftest import IN_CI

GTS = {"1": ["a dog runs on the grass", "a brown dog is running"], "2": ["two children play in the sand"]}
RES = {"1": ["a dog runs"], "2": ["a child plays on a beach"]}


@pytest.fixture
def java():
    if shutil.which("java") is None:
        if IN_CI:
            pytest.fail("Java not found (required in CI: make setup installs it)")
        pytest.skip("Java not found")


def test_meteor_keeps_one_process_and_replaces_a_dead_one(java):
    first = metrics.meteor_score(GTS, RES)
    process = metrics._METEOR.meteor_p
    assert metrics.meteor_score(GTS, RES) == first and metrics._METEOR.meteor_p is process   # reused
    assert 0 < first < 1 and metrics.meteor_score({"1": GTS["1"]}, {"1": ["a dog runs on the grass"]}) > first
    assert metrics.coco_scores({"1": "a dog runs"}, {"1": GTS["1"]})["METEOR"] == round(
        metrics.meteor_score({"1": GTS["1"]}, {"1": ["a dog runs"]}), 4)    # coco_scores reads it too
    assert metrics._METEOR.meteor_p is process
    process.kill()
    process.wait()
    assert metrics.meteor_score(GTS, RES) == first   # a new process, the same score
    replacement = metrics._METEOR.meteor_p
    assert replacement is not process and replacement.poll() is None
    metrics._close_meteor()   # what runs at exit
    assert metrics._METEOR is None and replacement.poll() is not None
