"""Scoring the models on photos from outside Flickr8k (../shared/coco-dev's layout)."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import PixelEncoder


def caption_folder(root, photos=4):
    (root / "photos").mkdir(parents=True)
    lines = []
    rng = np.random.default_rng(0)
    for i in range(photos):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(root / "photos" / f"{i}.jpg")
        lines += [f"{i}.jpg#{k}\ta dog runs on the grass number {k}" for k in range(5)]
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    return root


def test_a_caption_folder_is_read_and_its_faults_named(tmp_path):
    from captioner.data.dataset import DatasetError, load_caption_folder
    folder = load_caption_folder(caption_folder(tmp_path / "everyday"))
    assert folder.name == "everyday" and folder.images() == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert len(folder.captions["2.jpg"]) == 5
    (tmp_path / "everyday" / "photos" / "3.jpg").unlink()
    with pytest.raises(DatasetError, match=r"photos: 1 captioned photos missing, e.g. 3.jpg"):
        load_caption_folder(tmp_path / "everyday")
    with pytest.raises(DatasetError, match="does not exist"):
        load_caption_folder(tmp_path / "nowhere")


def test_every_model_is_scored_beside_itself_and_the_card_reports_it(tmp_path, monkeypatch):
    from captioner.data.text import Vocabulary
    from captioner.decoders.config import Config
    from captioner.decoders.registry import build_decoder
    from captioner.evaluation.report import model_card, scored_models
    from captioner.model_dirs import artifacts
    from captioner.training.scores import score_folder
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "cache"))
    folder = caption_folder(tmp_path / "coco-dev")
    vocab = Vocabulary(["a", "dog", "runs", "on", "the", "grass"])
    config = Config(decoder="attention", vocab_size=len(vocab), units=16, embed_dim=8, attention_dim=8,
                    max_decode_length=6)
    metrics = {"n_images": 10, "beam": {"3": {"CIDEr": 0.5}}, "distinct_captions": {"3": 0.9},
               "vocabulary_used": {"3": 5}, "bad_ending_rate": {"3": 0.0}, "human_first_reference": {"CIDEr": 0.8}}
    model = tmp_path / "trained" / "attention"
    artifacts.save_trained(model, build_decoder(config), vocab, config, [], metrics, {"dataset": {}})
    [(directory, scored)] = score_folder([model], folder, PixelEncoder(), progress=False).items()
    written = json.loads((model / artifacts.EVERYDAY_METRICS).read_text())
    assert written == scored and written["n_images"] == 4 and written["split"] == "coco-dev"
    assert set(written["beam"]) == {"3"} and 0 <= written["beam"]["3"]["CIDEr"]
    assert written["human_first_reference"]["BLEU-1"] > 0.5  # the references share most words
    assert artifacts.EVERYDAY_METRICS not in artifacts.read_json(model / artifacts.MANIFEST)["files"]
    artifacts.load_trained(model)  # the model itself is untouched: it still verifies
    [entry] = scored_models(tmp_path / "trained")
    card = model_card(entry)
    assert "On 4 everyday COCO photos (coco-dev" in card
    assert f"CIDEr {written['beam']['3']['CIDEr']:.3f} at beam 3 against people's" in card

    # A model trained on other Xception weights is not scored on these: refused, nothing written
    from captioner.vision.encoder import EncoderWeightsError
    other = tmp_path / "trained" / "other"
    artifacts.save_trained(other, build_decoder(config), vocab, config, [], metrics,
                           {"dataset": {}, "encoder": {"name": "xception", "weights_checksum": "f" * 64}})
    with pytest.raises(EncoderWeightsError, match=f"^{other}: was trained on features of Xception weights ffffffffffff"):
        score_folder([other], folder, PixelEncoder(), progress=False)
    assert not (other / artifacts.EVERYDAY_METRICS).exists()
