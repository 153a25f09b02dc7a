"""The library behind the caption page's explanations: familiarity, nearest photos,
confidence, attention figures, many photos at once, index-dataset and caption --attention."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from captioner.model_dirs import artifacts
from captioner.decoding.confidence import least_confident, word_confidence
from captioner.decoding.search import Caption
from captioner.explain.familiarity import Familiarity, build, find
from captioner.explain.neighbours import NeighbourIndex
from conftest import PixelEncoder, write_original_layout


def clustered(rng, n, centres):
    return np.abs(centres[rng.integers(0, len(centres), n)] + 0.1 * rng.standard_normal((n, centres.shape[1])))


def test_familiarity_threshold_flags_outliers_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.abs(rng.standard_normal((5, 64)))
    fam = build(clustered(rng, 600, centres), clustered(rng, 200, centres), "abc", clusters=8,
                percentile=2)
    val = fam.similarity(clustered(rng, 200, centres))
    assert 0.9 < np.mean(val >= fam.threshold) <= 1.0
    outlier = np.zeros(64)
    outlier[0] = 1.0  # one feature alone: unlike any cluster
    assert fam.is_unfamiliar(fam.similarity(outlier[None])[0])
    assert fam.similarity(np.ones((2, 10, 10, 64))).shape == (2,)  # maps are pooled first
    path = fam.save(tmp_path / "training_photos.h5")
    loaded = Familiarity.load(path)
    assert loaded.threshold == pytest.approx(fam.threshold)
    assert loaded.stats == fam.stats and loaded.encoder_checksum == "abc"
    assert np.allclose(loaded.similarity(centres),
                       fam.similarity(centres), atol=2e-3)  # float16 on disk
    model = tmp_path / "merge"
    model.mkdir()
    assert find(tmp_path) == path and find(model) == path and find(tmp_path / "x" / "y") is None


def test_nearest_photos(tmp_path):
    rng = np.random.default_rng(1)
    vectors = np.abs(rng.standard_normal((50, 32)))
    index = NeighbourIndex.from_vectors([f"{i}.jpg" for i in range(50)], vectors)
    index = NeighbourIndex.load(index.save(tmp_path / "idx" / "train.h5"))
    found = index.nearest(vectors[7] * 3.0, count=3)  # cosine: the scale does not matter
    assert found[0][0] == "7.jpg" and found[0][1] == pytest.approx(1.0, abs=2e-3)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


def _caption(words=("a", "dog", "runs"), attention=False) -> Caption:
    log_probs = tuple(math.log(p) for p in (0.9, 0.2, 0.6, 0.8))
    weights = None
    if attention:
        weights = np.full((len(words) + 1, 101), 0.5 / 100, dtype=np.float32)
        weights[:, -1] = 0.5
        weights[1, 12] += 0.3
        weights[1, -1] -= 0.3
    return Caption(" ".join(words), (4, 5, 6), sum(log_probs), sum(log_probs) / 2, True, weights, log_probs)


def test_word_confidence():
    rows = word_confidence(_caption())
    assert [r["word"] for r in rows] == ["a", "dog", "runs", "<end>"]
    assert [round(r["probability"], 3) for r in rows] == [0.9, 0.2, 0.6, 0.8]
    assert least_confident(_caption()) == ("dog", pytest.approx(0.2))
    rows = word_confidence(_caption(attention=True))
    assert rows[1]["from the photo"] == pytest.approx(0.8)


def test_attention_figures():
    from captioner.explain.figures import attention_grid, attention_word, figure_png, region_map
    image = Image.new("RGB", (120, 80), (200, 100, 50))
    caption = _caption(attention=True)
    assert region_map(caption, 1).argmax() == 12 and region_map(caption, 1).sum() == pytest.approx(1)
    grid = attention_grid(image, caption, columns=3)
    titled = [ax.get_title() for ax in grid.axes if ax.get_title()]
    assert titled == ["photo", "a\nphoto 50%", "dog\nphoto 80%", "runs\nphoto 50%", "<end>\nphoto 50%"]
    png = figure_png(grid)
    assert Image.open(io.BytesIO(png)).format == "PNG"
    assert "80% from the photo" in attention_word(image, caption, 1).axes[0].get_title()
    with pytest.raises(ValueError, match="attention model"):
        attention_grid(image, _caption())


def _tiny_captioner(tmp_path, decoder="merge"):
    from captioner import Captioner
    from captioner.decoders.config import Config
    from captioner.decoders.registry import build_decoder
    from captioner.data.text import Vocabulary
    vocab = Vocabulary(["a", "red", "square"])
    config = Config(decoder=decoder, vocab_size=len(vocab), units=16, embed_dim=8, attention_dim=8)
    out = artifacts.save_trained(tmp_path / decoder, build_decoder(config), vocab, config, [], None, {})
    return Captioner.load(out, encoder=PixelEncoder())


def test_many_photos_bad_file_among_good(tmp_path):
    from captioner.batch.many import caption_files, to_records
    captioner = _tiny_captioner(tmp_path)
    good = io.BytesIO()
    Image.new("RGB", (64, 48), (20, 200, 30)).save(good, "PNG")
    files = [("one.png", good.getvalue()), ("bad.jpg", b"not an image"), ("two.png", good.getvalue())]
    fam = Familiarity(np.ones((1, 2048), np.float32) / np.sqrt(2048), 0.5, 2.0, "x")
    results = caption_files(captioner, files, beam=2, batch_size=1, familiarity=fam)
    assert [r.name for r in results] == ["one.png", "bad.jpg", "two.png"]
    assert results[1].error.startswith("bad.jpg: not an image") and results[1].caption is None
    assert results[0].caption is not None and results[0].caption == results[2].caption
    assert results[0].thumbnail[:2] == b"\xff\xd8" and results[0].unfamiliar is not None
    records = to_records(results, "merge", 2)
    assert len({tuple(r) for r in records}) == 1  # the same keys for every row
    json.dumps(records)
    from captioner.batch.many import spreadsheet_safe
    named = [dict(records[0], file="=HYPERLINK(1).png", error="@x"), dict(records[0], file="a=b.png")]
    assert [(r["file"], r["error"], r["beam"]) for r in spreadsheet_safe(named)] == [
        ("'=HYPERLINK(1).png", "'@x", 2), ("a=b.png", None, 2)]
    # Batched, a bad file inside a batch shifts nothing: each photo keeps its own results.
    other = io.BytesIO()
    Image.new("RGB", (48, 64), (220, 30, 30)).save(other, "PNG")
    files[2] = ("two.png", other.getvalue())
    alone = caption_files(captioner, files, beam=2, batch_size=1, familiarity=fam)
    assert alone[0].similarity != alone[2].similarity
    for batch_size in (2, 3):
        assert caption_files(captioner, files, beam=2, batch_size=batch_size, familiarity=fam) == alone


def test_index_dataset_on_a_tiny_dataset(tmp_path, monkeypatch):
    from captioner.explain.index import describe, index_dataset
    from captioner.explain.neighbours import index_path
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "cache"))
    data = write_original_layout(tmp_path / "flickr", n_images=40)
    summary = index_dataset(data, tmp_path / "trained", PixelEncoder(), clusters=4, percentile=5,
                            progress=False)
    assert summary.familiarity_file == tmp_path / "trained" / "training_photos.h5"
    assert summary.neighbour_file == index_path(PixelEncoder.checksum)
    assert str(tmp_path / "cache") in str(summary.neighbour_file)  # never in the repository
    fam = Familiarity.load(summary.familiarity_file)
    assert fam.stats["train_photos"] == 30 and fam.stats["clusters"] == 4
    assert "test_photos_passing" in fam.stats and "centroids" in describe(summary)
    assert len(NeighbourIndex.load(summary.neighbour_file).names) == 30


def test_the_nearest_photo_index_alone_is_built_once_and_rebuilt_for_other_photos(tmp_path, monkeypatch):
    from captioner.data.dataset import load_flickr8k
    from captioner.explain.index import neighbour_index
    from captioner.explain.neighbours import index_path
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "cache"))
    dataset = load_flickr8k(write_original_layout(tmp_path / "flickr", n_images=40))
    index = neighbour_index(dataset, PixelEncoder(), progress=False)
    path = index_path(PixelEncoder.checksum)
    assert index.names == dataset.images("train") and path.is_file()
    built = path.stat().st_mtime_ns
    assert neighbour_index(dataset, PixelEncoder(), progress=False).names == index.names
    assert path.stat().st_mtime_ns == built  # read back, not rebuilt
    NeighbourIndex(index.names[:3], index.vectors[:3]).save(path)   # an index of other photos
    assert neighbour_index(dataset, PixelEncoder(), progress=False).names == index.names
    assert not (tmp_path / "trained").exists()   # the centroids are not touched


# -- with the real encoder, centroids and Flickr8k -----------------------------------------
def _odd_images() -> dict:
    import skimage.data
    rng = np.random.default_rng(0)
    return {"blank": Image.new("RGB", (320, 240), (255, 255, 255)),
            "black": Image.new("RGB", (320, 240), (0, 0, 0)),
            "one colour": Image.new("RGB", (320, 240), (200, 30, 30)),
            "one red pixel": Image.new("RGB", (1, 1), (255, 0, 0)),
            "noise": Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)),
            "cat (skimage chelsea)": Image.fromarray(skimage.data.chelsea())}


@pytest.mark.integration
def test_flickr8k_test_photos_pass_and_odd_images_are_flagged(encoder, shared_data):
    from captioner.data.dataset import load_flickr8k
    from captioner.vision.features import extract_feature_maps
    from captioner.data.images import prepare_for_encoder
    from conftest import ROOT, require
    fam = Familiarity.load(require(ROOT / "trained" / "training_photos.h5", "training_photos.h5"))
    assert fam.encoder_checksum == encoder.checksum
    dataset = load_flickr8k(shared_data)
    test = [dataset.image_path(n) for n in dataset.images("test")[:300]]
    passed = fam.similarity(extract_feature_maps(test, encoder, pooled=True, progress=False)) >= fam.threshold
    assert passed.mean() >= 0.95, passed.mean()
    odd = _odd_images()
    similarity = fam.similarity(encoder.feature_maps(np.stack([prepare_for_encoder(i) for i in odd.values()])))
    flagged = {name: bool(s < fam.threshold) for name, s in zip(odd, similarity)}
    assert all(flagged.values()), dict(zip(odd, similarity.round(3)))


@pytest.mark.integration
def test_cli_writes_the_attention_figure(encoder, tmp_path, capsys):
    from captioner.__main__ import main
    from captioner.vision.encoder import cached_weights_path
    _tiny_captioner(tmp_path, "attention")
    merge_dir = _tiny_captioner(tmp_path, "merge").trained.directory
    photo, out = tmp_path / "cat.png", tmp_path / "figure.png"
    _odd_images()["cat (skimage chelsea)"].save(photo)
    weights = str(cached_weights_path())
    assert main(["caption", str(photo), "--model", str(tmp_path / "attention"), "--attention", str(out),
                 "--xception-weights", weights]) == 0
    figure = Image.open(out)
    assert figure.format == "PNG" and figure.width > 400 and figure.height > 200  # photo + words
    assert "attention figure of" in capsys.readouterr().err
    assert main(["caption", str(photo), "--model", str(merge_dir), "--attention", str(out)]) == 2
    assert "needs the attention model" in capsys.readouterr().err
    assert main(["caption", str(photo), str(photo), "--attention", str(out)]) == 2


def test_the_app_compares_maps_only_with_centroids_of_the_same_weights(tmp_path, monkeypatch):
    from captioner.explain.familiarity import FILE, Familiarity
    Familiarity(np.ones((1, 2048), np.float32) / np.sqrt(2048), 0.5, 2.0, "a" * 64).save(tmp_path / FILE)
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(tmp_path))
    from app import support
    assert support.familiarity("a" * 64).encoder_checksum == "a" * 64
    assert support.familiarity("b" * 64) is None   # other Xception weights: no verdict from them
