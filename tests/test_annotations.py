"""Reading Flickr8k's expert and crowd judgement files."""
from captioner.data.annotations import (Annotations, caption_text, load_annotations, read_crowd,
                                        read_expert, split_caption_id)

EXPERT = (
    "1000_a.jpg\t2000_b.jpg#2\t1\t1\t2\n"
    "1000_a.jpg\t1000_a.jpg#0\t4\t4\t3\n"
    "\n"
    "1000_a.jpg\tbroken line\n"              # too few fields
    "3000_c.jpg\t1000_a.jpg#1\t2\tx\t2\n"      # not a number
    "3000_c.jpg\t1000_a.jpg#1\t2\t9\t2\n"      # out of the 1-4 scale
)
CROWD = (
    "1000_a.jpg\t1000_a.jpg#0\t1\t3\t0\n"
    "1000_a.jpg\t2000_b.jpg#4\t0.333333\t1\t2\n"
    "2000_b.jpg\t1000_a.jpg#3\t0\t0\t3\n"
    "2000_b.jpg\t1000_a.jpg#3\t1.5\t0\t3\n"    # a share above 1
)
CAPTIONS = {"1000_a.jpg": [f"a caption {i}" for i in range(5)],
            "2000_b.jpg": [f"b caption {i}" for i in range(5)]}


def write(tmp_path, expert=EXPERT, crowd=CROWD):
    (tmp_path / "ExpertAnnotations.txt").write_text(expert)
    (tmp_path / "CrowdFlowerAnnotations.txt").write_text(crowd)
    return tmp_path


def test_expert_ratings_grouped_by_photo(tmp_path):
    ratings, skipped = read_expert(write(tmp_path) / "ExpertAnnotations.txt")
    assert skipped == 3
    assert list(ratings) == ["1000_a.jpg"]
    other, own = ratings["1000_a.jpg"]
    assert other.scores == (1, 1, 2) and not other.own_caption and other.caption_image == "2000_b.jpg"
    assert own.own_caption and own.caption_index == 0 and round(own.mean_score, 2) == 3.67


def test_crowd_judgements(tmp_path):
    ratings, skipped = read_crowd(write(tmp_path) / "CrowdFlowerAnnotations.txt")
    assert skipped == 1
    first, second = ratings["1000_a.jpg"]
    assert (first.yes, first.no, first.fraction_yes, first.own_caption) == (3, 0, 1.0, True)
    assert second.caption_index == 4 and abs(second.fraction_yes - 1 / 3) < 1e-6
    assert ratings["2000_b.jpg"][0].caption_image == "1000_a.jpg"


def test_load_annotations_and_lookup(tmp_path):
    annotations = load_annotations(write(tmp_path))
    assert annotations and annotations.skipped_lines == 4
    expert, crowd = annotations.for_image("1000_a.jpg")
    assert len(expert) == 2 and len(crowd) == 2
    assert annotations.for_image("unknown.jpg") == ([], [])
    assert caption_text(CAPTIONS, expert[0].caption_id) == "b caption 2"
    assert caption_text(CAPTIONS, "2000_b.jpg#7") is None
    assert caption_text(CAPTIONS, "9999_z.jpg#0") is None


def test_missing_files_give_empty_annotations(tmp_path):
    assert not load_annotations(None)
    assert not load_annotations(tmp_path / "nowhere")
    only_crowd = tmp_path / "text"
    only_crowd.mkdir()
    (only_crowd / "CrowdFlowerAnnotations.txt").write_text(CROWD)
    annotations = load_annotations(only_crowd)
    assert annotations.expert == {} and len(annotations.crowd) == 2
    assert isinstance(Annotations(), Annotations) and not Annotations()


def test_split_caption_id():
    assert split_caption_id("1000_a.jpg#3") == ("1000_a.jpg", 3)
    assert split_caption_id("1000_a.jpg") == ("1000_a.jpg", -1)
    assert split_caption_id("1000_a.jpg#x") == ("1000_a.jpg", -1)
