import json

import pytest

from captioner.data.dataset import DatasetError, deterministic_split, load_flickr8k
from captioner.data.text import Vocabulary, clean_caption


def test_clean_caption():
    assert clean_caption("A dog's ball, 2 kids & a CAT!") == ["a", "dog", "ball", "kids", "a", "cat"]


def test_vocabulary_min_count_and_roundtrip(tmp_path):
    vocab = Vocabulary.build(["a dog runs", "a dog sits", "a cat"], min_count=2)
    assert vocab.itos[4:] == ["a", "dog"]
    assert vocab.encode("a cat runs") == [4, vocab.unk_id, vocab.unk_id]
    assert vocab.decode([vocab.start_id, 4, 5, vocab.end_id, 4]) == "a dog"
    vocab.save(tmp_path / "vocab.json")
    again = Vocabulary.load(tmp_path / "vocab.json")
    assert again.itos == vocab.itos and again.min_count == 2
    (tmp_path / "bad.json").write_text(json.dumps({"tokens": ["x"]}))
    with pytest.raises(ValueError, match="bad.json"):
        Vocabulary.load(tmp_path / "bad.json")


def test_original_layout(original_dataset):
    ds = load_flickr8k(original_dataset)
    assert ds.layout == "original"
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [30, 5, 5]
    name = ds.splits["train"][0]
    assert len(ds.captions[name]) == 5 and ds.image_path(name).is_file()


def test_kaggle_layout_and_deterministic_split(kaggle_dataset):
    ds = load_flickr8k(kaggle_dataset)
    assert ds.layout == "kaggle"
    sizes = {s: len(n) for s, n in ds.splits.items()}
    assert sizes == {"train": 30, "val": 5, "test": 5}
    assert not set(ds.splits["train"]) & set(ds.splits["test"])
    assert load_flickr8k(kaggle_dataset).splits == ds.splits


def test_full_size_split_matches_standard_sizes():
    names = [f"{i}_x.jpg" for i in range(8091)]
    split = deterministic_split(names)
    assert {s: len(v) for s, v in split.items()} == {"train": 6000, "val": 1000, "test": 1000}


def test_kaggle_caption_with_comma(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "Images" / "1.jpg").write_bytes(b"x")
    (tmp_path / "captions.txt").write_text("image,caption\n1.jpg,a dog, running\n")
    assert load_flickr8k(tmp_path).captions["1.jpg"] == ["a dog, running"]


def test_missing_files_are_named(tmp_path, original_dataset):
    with pytest.raises(DatasetError, match="does not exist"):
        load_flickr8k(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a Flickr8k directory"):
        load_flickr8k(tmp_path / "empty")
    (original_dataset / "Flickr8k_text" / "Flickr_8k.devImages.txt").unlink()
    with pytest.raises(DatasetError, match="Flickr_8k.devImages.txt: missing"):
        load_flickr8k(original_dataset)
    (tmp_path / "kag" / "Images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="captions.txt: missing"):
        load_flickr8k(tmp_path / "kag")
