"""Caption statistics and search used by the dataset page."""
from captioner.data import stats as stats
from captioner.data.text import Vocabulary

CAPTIONS = {
    "a.jpg": ["A dog runs on the grass .", "The dog is running", "A brown dog ."],
    "b.jpg": ["A man in a red shirt rides a bike .", "Man riding a bicycle", "A hotdog stand ."],
    "c.jpg": ["Two children play in the water", "Kids splash , laughing .", "A Red ball"],
}
SPLITS = {"train": ["a.jpg", "b.jpg"], "val": ["c.jpg"], "test": []}


def test_caption_lengths_use_training_tokenisation():
    # "Kids splash , laughing ." has 3 words: punctuation is not a word.
    assert stats.caption_lengths(["Kids splash , laughing .", "A dog", "A red dog"]) == {2: 1, 3: 2}


def test_top_words_ranked_and_filtered():
    every = stats.captions_of(CAPTIONS)
    assert stats.top_words(every, 2) == [("a", 8), ("dog", 3)]
    content = stats.top_words(every, 3, exclude=stats.STOP_WORDS)
    assert content[0] == ("dog", 3) and all(w not in stats.STOP_WORDS for w, _ in content)


def test_vocab_size_by_min_count_matches_vocabulary_build():
    train = stats.captions_of(CAPTIONS, SPLITS["train"])
    sizes = stats.vocab_size_by_min_count(train, range(1, 5))
    assert sizes == {m: len(Vocabulary.build(train, m)) for m in range(1, 5)}
    assert sizes[1] > sizes[2] >= sizes[4] >= 4  # never below the special tokens


def test_summary():
    result = stats.summary(CAPTIONS, SPLITS, n_words=3)
    assert result["n_images"] == 3 and result["n_captions"] == 9
    assert result["images_per_split"] == {"train": 2, "val": 1, "test": 0}
    assert sum(result["caption_lengths"].values()) == 9
    assert result["top_words"][0] == ("a", 8)
    assert set(result["train_vocab_by_min_count"]) == set(range(1, 21))


def test_search_is_case_insensitive_whole_word_and_phrase():
    index = stats.build_search_index(CAPTIONS)
    assert stats.search_captions(index, "DOG") == ["a.jpg"]          # not "hotdog"
    assert stats.search_captions(index, "red") == ["b.jpg", "c.jpg"]
    assert stats.search_captions(index, "  Red   Shirt ") == ["b.jpg"]
    assert stats.search_captions(index, "grass the dog") == []       # no phrase across captions
    assert stats.search_captions(index, "dog", ["c.jpg", "a.jpg"]) == ["a.jpg"]
    assert stats.search_captions(index, "", ["c.jpg", "b.jpg"]) == ["c.jpg", "b.jpg"]
    assert stats.search_captions(index, "splash laughing") == ["c.jpg"]  # the comma is ignored


def test_normalize_for_search():
    assert stats.normalize_for_search("A dog , Running.") == "a dog running"
