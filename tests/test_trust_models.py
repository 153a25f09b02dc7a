"""The committed trust estimates with the real encoder and models: images that are no photo
are called likely wrong, a dog the model gets right is not, and the CLI and caption-dir say so."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, TRAINED, require

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("estimates")]


@pytest.fixture(scope="module")
def test_split(shared_data):
    from captioner.data.dataset import load_flickr8k
    return load_flickr8k(shared_data)


@pytest.fixture(scope="module")
def estimates():
    require(TRAINED / "trust.json", "the committed trust estimates (make trust)")
    return json.loads((TRAINED / "trust.json").read_text())


def test_every_committed_model_has_a_fresh_estimate_that_meets_the_bar(each_captioner, estimates, trained_dir):
    assert each_captioner.trust_model is not None, each_captioner.trust_problem
    default = each_captioner.name == trained_dir.name
    for variant in ("models", "with_consensus"):
        held = estimates[variant][each_captioner.name]["fitted"]["held_out"]
        # the floor, on photos the estimate was not fitted on (the default model's, for
        # the estimate that reads consensus: merge's has called 29-31% of Flickr8k test likely wrong)
        if variant == "models" or default:
            assert held["flickr8k_test"]["verdicts"]["likely wrong"] <= 0.30, variant
        assert all(s["verdict"] == "likely wrong" for s in held["synthetic"].values()), (variant, held["synthetic"])
    assert estimates["with_consensus"][each_captioner.name]["consensus"]["photos"] == 6000


def test_images_that_are_no_photo_come_out_likely_wrong(each_captioner):
    from PIL import Image

    from captioner.data.images import prepare_for_encoder
    rng = np.random.default_rng(7)  # not the images the estimate was measured on
    images = [Image.new("RGB", (320, 240), "white"), Image.new("RGB", (64, 64), (10, 10, 10)),
              Image.new("RGB", (500, 500), (230, 200, 20)), Image.new("RGB", (1, 1), (0, 90, 0)),
              Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))]
    maps = each_captioner.encoder.feature_maps(np.stack([prepare_for_encoder(i) for i in images]))
    for captions in each_captioner.caption_batch(maps, beam=3):
        assert captions[0].trust.verdict == "likely wrong", (captions[0].text, captions[0].trust)
        assert captions[0].trust.reasons


def test_a_dog_the_model_gets_right_is_not_likely_wrong(each_captioner, test_split):
    from captioner.evaluation.metrics import sentence_bleu4
    # 40 photos: the merge model gets none of the first 12 right by this measure, 10 of the 40
    dogs = [n for n in test_split.images("test") if all("dog" in c.lower() for c in test_split.captions[n])][:40]
    maps = each_captioner.features_batch([test_split.image_path(n) for n in dogs])
    right = []
    for name, captions in zip(dogs, each_captioner.caption_batch(maps, beam=3)):
        best = captions[0]
        if "dog" in best.text and sentence_bleu4(best.text, test_split.captions[name]) > 0.3:
            right.append(best)
    assert right, "no dog photo captioned well enough to test"
    assert all(c.trust.verdict != "likely wrong" for c in right), [(c.text, c.trust.value) for c in right]
    assert max(c.trust.value for c in right) > 0.4


def test_a_photo_shown_at_several_widths_is_searched_once_and_judged_the_same(each_captioner, test_split):
    """The evidence searches are kept per photo (the app shows one photo at three widths):
    what is kept gives each width the trust a fresh search gives it."""
    maps = each_captioner.features_batch([test_split.image_path(n) for n in test_split.images("test")[30:33]])
    fresh = {}
    for beam in (1, 5):
        each_captioner.forget_recent_photos()
        fresh[beam] = [c[0].trust.value for c in each_captioner.caption_batch(maps, beam=beam)]
    each_captioner.forget_recent_photos()
    each_captioner.caption_batch(maps, beam=3)   # searches each photo, as the page does first
    from captioner.trust import evidence
    real, calls = evidence.search, []
    try:
        evidence.search = lambda *a, **k: calls.append(1) or real(*a, **k)
        kept = {beam: [c[0].trust.value for c in each_captioner.caption_batch(maps, beam=beam)] for beam in (1, 5)}
    finally:
        evidence.search = real
    assert not calls and kept == fresh


def run_cli(*args, cwd=ROOT):
    import os
    env = {**os.environ, "CAPTIONER_DATA_DIR": ""}   # the estimate every install has, as each_captioner
    return subprocess.run([sys.executable, "-m", "captioner", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, test_split):
    from PIL import Image
    folder = tmp_path_factory.mktemp("photos")
    dog = next(n for n in test_split.images("test") if all("dog" in c.lower() for c in test_split.captions[n]))
    shutil.copy(test_split.image_path(dog), folder / "dog.jpg")
    Image.new("RGB", (200, 200), "white").save(folder / "blank.png")
    return folder


def test_cli_prints_the_verdict_and_json_carries_the_trust(photo_folder, encoder):
    result = run_cli("caption", photo_folder / "dog.jpg", photo_folder / "blank.png")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "[likely wrong, trust" in lines[lines.index(str(photo_folder / "blank.png")) + 1]
    result = run_cli("caption", photo_folder / "blank.png", "--json")
    record = json.loads(result.stdout)[0]
    caption = record["captions"][0]
    assert caption["verdict"] == "likely wrong" and 0 <= caption["trust"] < 0.2
    assert {"log_prob", "familiarity", "photo_kind"} <= set(caption["signals"]) and caption["reasons"]
    assert record["withheld"] is None


def test_min_trust_writes_no_caption_and_says_why(photo_folder, tmp_path, encoder):
    result = run_cli("caption", photo_folder / "blank.png", "--json", "--min-trust", "0.3")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)[0]
    assert record["captions"] == [] and record["withheld"].startswith("withheld: trust 0.")
    assert "below --min-trust 0.3" in record["withheld"]
    result = run_cli("caption", photo_folder / "blank.png", "--min-trust", "1.5")
    assert result.returncode == 2 and "between 0 and 1" in result.stderr

    out = tmp_path / "captions.jsonl"
    result = run_cli("caption-dir", photo_folder, "--out", out, "--min-trust", "0.3", "--quiet")
    assert result.returncode == 0, result.stderr
    records = {r["path"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(records) == {"blank.png", "dog.jpg"}
    assert records["blank.png"]["captions"] == [] and "below --min-trust" in records["blank.png"]["withheld"]
    dog = records["dog.jpg"]
    assert all(set(r) == {"path", "model", "beam", "min_trust", "captions", "error", "withheld"}
               for r in records.values())
    if dog["captions"]:
        assert dog["captions"][0]["trust"] >= 0.3 and dog["captions"][0]["verdict"] and dog["withheld"] is None
    else:  # every caption under the threshold: the record says so rather than staying silent
        assert "below --min-trust" in dog["withheld"]
    assert all(r["min_trust"] == 0.3 for r in records.values())
    # Resuming under another threshold would mix two policies in one file: refused, said.
    for other in (("--min-trust", "0.5"), ()):
        result = run_cli("caption-dir", photo_folder, "--out", out, "--quiet", *other)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "with --min-trust 0.3" in result.stderr and "use another --out" in result.stderr
    result = run_cli("caption-dir", photo_folder, "--out", out, "--min-trust", "0.3", "--quiet")
    assert result.returncode == 0 and len(out.read_text().splitlines()) == 2   # the same: nothing to do


def test_a_stale_estimate_is_refused_and_said(tmp_path, serving_encoder, serving_flows, photo_folder):
    """Retrain a model (here: touch its weights' recorded checksum) and its trust is refused."""
    models = tmp_path / "trained"
    shutil.copytree(TRAINED, models)
    data = json.loads((models / "trust.json").read_text())
    for variant in ("models", "with_consensus"):  # a retrained model makes both stale
        data[variant]["attention"]["weights_sha256"]["attention"] = "0" * 64
    (models / "trust.json").write_text(json.dumps(data))
    from conftest import serving_captioner
    stale = serving_captioner(models, serving_encoder, serving_flows, "attention")
    assert stale.trust_model is None and "stale" in stale.trust_problem and "make trust" in stale.trust_problem
    assert stale.caption_image(photo_folder / "dog.jpg")[0].trust is None
    assert serving_captioner(models, serving_encoder, serving_flows, "merge").trust_model is not None
    result = run_cli("caption", photo_folder / "dog.jpg", "--model", models / "attention", "--min-trust", "0.5")
    assert result.returncode == 2 and "stale" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("caption", photo_folder / "dog.jpg", "--model", models / "attention")
    assert result.returncode == 0 and "warning: captions carry no trust estimate" in result.stderr


# -- the estimate that reads consensus (the nearest training photos' captions) ----------------
@pytest.fixture(scope="module")
def index_of_all_training_photos(tmp_path_factory, encoder, test_split):
    """An index of the 6,000 training photos, as `index-dataset` writes it, in a cache of the
    tests' own: real vectors for 48 of them (half with dogs), the rest pointing away from
    every photo (pooled Xception vectors are never negative), so the 48 are every photo's
    nearest. The real index needs every training photo encoded: 15 minutes here."""
    from captioner.data.images import load_image, prepare_for_encoder
    from captioner.explain.neighbours import NeighbourIndex, index_path
    from captioner.vision.encoder import WEIGHTS_FILENAME, cached_weights_path, pool
    names = test_split.images("train")
    dogs = [i for i, n in enumerate(names) if all("dog" in c.lower() for c in test_split.captions[n])][:24]
    real = dogs + [i for i in range(len(names)) if i not in dogs][:24]
    maps = encoder.feature_maps(np.stack([prepare_for_encoder(load_image(test_split.image_path(names[i])))
                                          for i in real]))
    vectors = -np.abs(np.random.default_rng(0).normal(size=(len(names), maps.shape[-1]))).astype(np.float32)
    vectors[real] = pool(maps)
    cache = tmp_path_factory.mktemp("cache")
    (cache / WEIGHTS_FILENAME).symlink_to(cached_weights_path())
    NeighbourIndex.from_vectors(names, vectors).save(index_path(encoder.checksum, cache / "dataset-index"))
    return cache


def captioner_with(directory, serving, data_dir, name="ensemble"):
    from conftest import serving_captioner
    return serving_captioner(directory, *serving, name, data_dir=data_dir)


@pytest.fixture(scope="module")
def serving(serving_encoder, serving_flows):
    return serving_encoder, serving_flows


def test_with_flickr8k_and_its_index_trust_reads_the_nearest_photos_captions(
        monkeypatch, index_of_all_training_photos, serving, shared_data, test_split):
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(index_of_all_training_photos))
    captioner = captioner_with(TRAINED, serving, shared_data)
    assert captioner.trust_model is not None and "consensus" in captioner.trust_model.signals
    assert "10 most similar training photos" in captioner.trust_note
    dogs = [n for n in test_split.images("test") if all("dog" in c.lower() for c in test_split.captions[n])][:6]
    from PIL import Image

    from captioner.data.images import prepare_for_encoder
    blank = captioner.encoder.feature_maps(prepare_for_encoder(Image.new("RGB", (300, 300), "white"))[None])
    maps = np.concatenate([captioner.features_batch([test_split.image_path(n) for n in dogs]), blank])
    found = captioner.caption_batch(maps, beam=3)
    agreement = [c[0].trust.signals["consensus"] for c in found]
    assert all(np.isfinite(agreement)) and max(agreement[:-1]) > agreement[-1]
    assert found[-1][0].trust.verdict == "likely wrong"
    # the number is the caption's CIDEr-D against the captions of its photo's nearest training photos
    direct = captioner._consensus.scores(captioner.imagenet_maps(maps[:1]), [[found[0][0].text]])[0][0]
    assert agreement[0] == pytest.approx(direct)


def test_without_flickr8k_or_with_an_index_of_other_photos_trust_reads_the_rest(
        monkeypatch, tmp_path, encoder, serving, shared_data, test_split):
    captioner = captioner_with(TRAINED, serving, "")
    assert "consensus" not in captioner.trust_model.signals and "no Flickr8k here" in captioner.trust_note
    from captioner.explain.neighbours import NeighbourIndex, index_path
    from captioner.vision.encoder import WEIGHTS_FILENAME, cached_weights_path
    (tmp_path / WEIGHTS_FILENAME).symlink_to(cached_weights_path())
    names = test_split.images("train")[:8]
    NeighbourIndex.from_vectors(names, np.random.default_rng(1).uniform(size=(8, 2048))).save(
        index_path(encoder.checksum, tmp_path / "dataset-index"))
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path))
    partial = captioner_with(TRAINED, serving, shared_data)
    assert "consensus" not in partial.trust_model.signals
    assert "fitted over other photos, neighbours or captions" in partial.trust_note
    assert partial.caption(captioner.features(test_split.image_path(test_split.images("test")[0])))[0].trust
