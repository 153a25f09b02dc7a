"""Fine-tuning Xception's exit flow with the attention decoder, on tiny generated data
(training/finetune.py). The exit flow starts from a seeded random Xception here (the
ImageNet weights are not in the tests' private cache); the integration tests read the real one."""
import dataclasses

import numpy as np
import pytest

from captioner.model_dirs import artifacts
from captioner.model_dirs.artifacts import load_trained
from captioner.training import finetune


class PixelTrunk:
    """A stand-in for Xception's trunk: the photo's 19x19 grid of mean colours, tiled to the
    middle flow's 728 channels (float16, like the cache)."""
    checksum = "pixel-trunk-for-tests"

    def feature_maps(self, batch):
        batch = np.asarray(batch, dtype=np.float32)
        n, h, w, _ = batch.shape
        k = 19
        cells = batch[:, : h // k * k, : w // k * k].reshape(n, k, h // k, k, w // k, 3).mean(axis=(2, 4))
        return np.tile(cells, (1, 1, 1, 728 // 3 + 1))[..., :728].astype(np.float16)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTIONER_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def seeded_xception(monkeypatch):
    """The same random Xception every time the exit flow starts afresh."""
    from captioner.vision.encoder import build_xception
    import keras
    keras.utils.set_random_seed(7)
    weights = build_xception().get_weights()

    def fresh():
        model = build_xception()
        model.set_weights(weights)
        return model
    monkeypatch.setattr(finetune, "imagenet_xception", fresh)


def h5_arrays(path):
    """Every array of a .weights.h5 file, in the order the file lists them."""
    import h5py
    arrays = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, item: arrays.append(item[()]) if isinstance(item, h5py.Dataset) else None)
    assert arrays, path
    return arrays


def tiny_config(**changes):
    from train_helper import TINY
    return dataclasses.replace(TINY, **{"decoder": "attention", "finetune_encoder": "exit_flow",
                                        "encoder_learning_rate": 1e-4, **changes})


def quick(evaluate_test=False, **extra):
    """Tiny runs on the pixel stand-ins; the test split is scored only where a test reads it."""
    from conftest import PixelEncoder
    return dict(encoder=PixelEncoder(), trunk_encoder=PixelTrunk(), progress=False,
                evaluate_test=evaluate_test, **extra)


def test_settings_are_checked():
    from captioner.decoders.config import Config
    Config(decoder="merge", finetune_encoder="exit_flow")   # either decoder tunes one
    with pytest.raises(ValueError, match="finetune_encoder must be one of"):
        Config(decoder="attention", finetune_encoder="everything")
    with pytest.raises(ValueError, match="scst_ema"):
        Config(decoder="attention", finetune_encoder="block14", scst_ema=0.9)
    with pytest.raises(ValueError, match="scst_exit_flow must be one of"):
        Config(decoder="attention", finetune_encoder="exit_flow", scst_exit_flow="frozen")
    with pytest.raises(ValueError, match="exit_flow_from"):
        Config(decoder="attention", finetune_encoder="exit_flow", exit_flow_from="trained/attention")
    with pytest.raises(ValueError, match="finetune_mirror"):
        Config(decoder="attention", finetune_mirror=0.5)
    with pytest.raises(ValueError, match="finetune_mirror"):
        Config(decoder="attention", finetune_encoder="exit_flow", finetune_mirror=1.5)


@pytest.mark.parametrize("decoder", ["attention", "merge"])
def test_a_step_moves_the_exit_flow_and_lowers_the_loss(seeded_xception, decoder):
    from captioner.training.checkpoint import new_model
    from captioner.training.step import make_train_step
    config = tiny_config(vocab_size=12, decoder=decoder)
    model = new_model(config, 1e-3, tuned=True)
    train_step, _ = make_train_step(model)
    rng = np.random.default_rng(0)
    inputs = {"trunk": rng.standard_normal((2, 19, 19, 728)).astype(np.float32),
              "photo_index": np.array([0, 0, 1, 1], np.int32),
              "tokens": rng.integers(1, 12, (4, 5)).astype(np.int32)}
    targets = rng.integers(1, 12, (4, 5)).astype(np.int32)
    mask = np.ones((4, 5), np.float32)
    head_before = [w.copy() for w in model.exit_flow.get_weights()]
    losses = [float(train_step(inputs, targets, mask, np.float32(20))[0]) for _ in range(5)]
    assert losses[-1] < losses[0]
    moved = [not np.array_equal(a, b) for a, b in zip(head_before, model.exit_flow.get_weights())]
    assert sum(moved) > len(moved) // 2   # the kernels move (BatchNorm's moving statistics do not)
    assert int(model.encoder_optimizer.iterations.numpy()) == 5


def test_a_tuned_merge_model_reads_the_average_of_its_exit_flows_map(seeded_xception):
    """The merge decoder tuned: each caption row reads its photo's pooled map, as the merge
    decoder reads a frozen one (vision/encoder.pool), and decodes in NumPy as in Keras."""
    from captioner.decoders.registry import numpy_decoder
    from captioner.training.checkpoint import new_model
    config = tiny_config(vocab_size=12, decoder="merge")
    model = new_model(config, 1e-3, tuned=True)
    rng = np.random.default_rng(1)
    trunk = rng.standard_normal((2, 19, 19, 728)).astype(np.float32)
    photo_index, tokens = np.array([1, 0, 1], np.int32), rng.integers(1, 12, (3, 4)).astype(np.int32)
    logits = np.asarray(model({"trunk": trunk, "photo_index": photo_index, "tokens": tokens}))
    maps = np.asarray(model.exit_flow(trunk, training=False))
    vectors = maps.reshape(2, -1, 2048).mean(axis=1)
    expected = np.asarray(model.caption_decoder({"image": vectors[photo_index], "tokens": tokens}))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])   # the two photos' rows read different vectors
    # The NumPy step on the tuned maps (as head_maps gives them) gives Keras' first word.
    decoder = numpy_decoder(model, config)
    context = decoder.prepare(finetune.head_maps(model, trunk))
    first = decoder.step(tokens[:, 0], decoder.initial_state(3), context, photo_index).log_probs
    keras_first = np.asarray(model.caption_decoder({"image": finetune.head_maps(model, trunk).astype(np.float32)
                                                    .mean(axis=1)[photo_index], "tokens": tokens[:, :1]}))[:, 0]
    np.testing.assert_allclose(first, keras_first - np.log(np.exp(keras_first).sum(-1, keepdims=True)),
                               rtol=1e-4, atol=1e-4)


def test_a_step_with_the_exit_flow_fixed_moves_the_decoder_alone(seeded_xception):
    """What --scst-exit-flow fixed does in self-critical training."""
    from captioner.training.checkpoint import new_model
    from captioner.training.step import make_train_step
    model = new_model(tiny_config(vocab_size=12), 1e-3, tuned=True)
    train_step, _ = make_train_step(model, train_exit_flow=False)
    rng = np.random.default_rng(0)
    inputs = {"trunk": rng.standard_normal((2, 19, 19, 728)).astype(np.float32),
              "photo_index": np.array([0, 1], np.int32), "tokens": rng.integers(1, 12, (2, 5)).astype(np.int32)}
    head_before = [w.copy() for w in model.exit_flow.get_weights()]
    decoder_before = [w.copy() for w in model.caption_decoder.get_weights()]
    train_step(inputs, rng.integers(1, 12, (2, 5)).astype(np.int32), np.ones((2, 5), np.float32), np.float32(10))
    for a, b in zip(head_before, model.exit_flow.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(decoder_before, model.caption_decoder.get_weights()))
    assert int(model.encoder_optimizer.iterations.numpy()) == 0


def test_with_the_exit_flow_fixed_the_training_maps_are_made_once(tmp_path, original_dataset,
                                                                    seeded_xception, monkeypatch):
    """--scst-exit-flow fixed: self-critical sampling reads the training photos' maps made when
    the exit flow was fixed (the same as running it on each chunk); tuned on, it runs the exit
    flow on each chunk. The contrastive negatives come from the frozen features either way."""
    from captioner.training import run as run_module
    from captioner.training.checkpoint import new_model
    from captioner.training.progress import ProgressReporter
    run = run_module.Run(original_dataset, tiny_config(), quick()["encoder"], False, None,
                         ProgressReporter(tmp_path, "attention"), PixelTrunk())
    frozen_similar = run_module.similar_photos(run.features["train"], run_module.SIMILAR_PHOTOS)
    model = new_model(run.config, 1e-3, tuned=True)
    photos = np.array([2, 0, 3])
    per_chunk = finetune.head_maps(model, run.trunk["train"][photos])
    mapped = []   # how many photos each run of the exit flow mapped
    monkeypatch.setattr(run_module, "head_maps", lambda m, trunk: mapped.append(len(trunk)) or
                        finetune.head_maps(m, trunk))
    run.tune(model, fixed=True)
    assert mapped == [len(run.splits["val"]), len(run.splits["train"])]
    # (mapped in one batch of 30 rather than of 3: the same to within float16's rounding)
    np.testing.assert_allclose(run.sampling_features(photos).astype(np.float32), per_chunk.astype(np.float32),
                               rtol=2e-3, atol=1e-3)
    np.testing.assert_array_equal(run.similar_train_photos, frozen_similar)
    assert len(mapped) == 2
    run.tune(model)   # tuned on: each chunk through the exit flow as it now is
    np.testing.assert_array_equal(run.sampling_features(photos), per_chunk)
    assert mapped[2:] == [len(run.splits["val"]), len(photos)]


def test_the_trunk_cache_round_trips(tmp_path, original_dataset):
    from captioner.data.dataset import load_flickr8k
    data = load_flickr8k(original_dataset)
    splits = {"val": data.images("val")[:3]}
    first = finetune.trunk_features(data, splits, tiny_config(), False, PixelTrunk())["val"]
    assert first.shape == (3, 19, 19, 728) and first.dtype == np.float16

    class Refuses(PixelTrunk):
        def feature_maps(self, batch):
            raise AssertionError("cached: the trunk must not run again")
    again = finetune.trunk_features(data, splits, tiny_config(), False, Refuses())["val"]
    np.testing.assert_array_equal(first, again)


def test_the_mirrored_trunk_cache_holds_the_mirrored_photos_and_round_trips(tmp_path, original_dataset):
    from captioner.data.dataset import load_flickr8k
    from captioner.data.images import load_image, prepare_for_encoder
    data = load_flickr8k(original_dataset)
    splits = {"train": data.images("train")[:3], "val": data.images("val")[:2]}
    config = tiny_config(finetune_mirror=0.5)
    first = finetune.trunk_features(data, splits, config, False, PixelTrunk())
    assert set(first) == {"train", "val", finetune.MIRRORED}   # the training photos alone, mirrored
    photos = np.stack([prepare_for_encoder(load_image(data.image_path(n))) for n in splits["train"]])
    np.testing.assert_array_equal(first[finetune.MIRRORED], PixelTrunk().feature_maps(photos[:, :, ::-1]))
    np.testing.assert_array_equal(first["train"], PixelTrunk().feature_maps(photos))
    assert not np.array_equal(first["train"], first[finetune.MIRRORED])

    class Refuses(PixelTrunk):
        def feature_maps(self, batch):
            raise AssertionError("cached: the trunk must not run again")
    again = finetune.trunk_features(data, splits, config, False, Refuses())
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    from captioner.vision.features import extract_feature_maps
    with pytest.raises(ValueError, match="cache of their own"):   # never into the plain photos' cache
        extract_feature_maps([data.image_path(splits["train"][0])], PixelTrunk(), mirrored=True, progress=False)


def test_mirroring_reads_the_mirrored_trunk_but_never_for_a_photo_captioned_left_or_right(
        tmp_path, original_dataset, seeded_xception, monkeypatch):
    """--finetune-mirror: a tuned cross-entropy batch reads some photos' mirrored trunk
    outputs, never one whose captions say left or right; before tuning, nothing is mirrored."""
    from captioner.training import cross_entropy
    from captioner.training import run as run_module
    from captioner.training.checkpoint import new_model
    from captioner.training.progress import ProgressReporter
    text = original_dataset / "Flickr8k_text"
    said_left = (text / "Flickr_8k.trainImages.txt").read_text().split()[0]
    with open(text / "Flickr8k.token.txt", "a") as handle:
        handle.write(f"{said_left}#5\tThe square is on the left .\n")
    run = run_module.Run(original_dataset, tiny_config(finetune_mirror=1.0), quick()["encoder"], False, None,
                         ProgressReporter(tmp_path, "attention"), PixelTrunk())
    left = run.splits["train"].index(said_left)
    assert run.mirrorable.tolist() == [p != left for p in range(len(run.splits["train"]))]
    photos = np.array([left, (left + 1) % 5, (left + 2) % 5])
    rng = np.random.default_rng(0)
    assert run.mirror_choices(photos, rng) is None   # not tuned yet: frozen features, no draw
    run.tune(new_model(run.config, 1e-3, tuned=True))
    assert run.mirror_choices(photos, rng).tolist() == [False, True, True]
    # one photo both ways in a batch: two trunk outputs, each row reading its own
    other = photos[1]
    inputs = run.inputs("train", np.array([other, other, left]), np.ones((3, 2), np.int32),
                        np.array([True, False, False]))
    trunk, index = inputs["trunk"], inputs["photo_index"]
    assert len(trunk) == 3
    np.testing.assert_array_equal(trunk[index[0]], run.trunk[finetune.MIRRORED][other].astype(np.float32))
    np.testing.assert_array_equal(trunk[index[1]], run.trunk["train"][other].astype(np.float32))
    np.testing.assert_array_equal(trunk[index[2]], run.trunk["train"][left].astype(np.float32))
    # a whole epoch, with probability 1: every row of a mirrorable photo reads it mirrored
    rows_read = []
    real_inputs = run.inputs

    def recording_inputs(split, rows, tokens, mirrored=None):
        rows_read.extend(zip(rows.tolist(), [False] * len(rows) if mirrored is None else mirrored.tolist()))
        return real_inputs(split, rows, tokens, mirrored)
    monkeypatch.setattr(run, "inputs", recording_inputs)
    monkeypatch.setattr(cross_entropy, "val_loss", lambda run, nll_sum: 0.0)   # not wanted here
    cross_entropy.xe_epoch(run, lambda *args: (np.float32(1.0), np.float32(0.0)), None,
                           np.random.default_rng(1), 1)
    assert len(rows_read) == len(run.captions["train"])
    assert all(flip == (photo != left) for photo, flip in rows_read)


def test_a_frozen_model_becomes_a_tuned_one_with_its_decoder_unchanged(seeded_xception):
    """What training does at --finetune-start-epoch: the decoder goes on from where it was."""
    from captioner.decoders.registry import build_decoder, is_tuned
    from captioner.training.checkpoint import to_tuned
    config = tiny_config(vocab_size=12)
    frozen = build_decoder(config)
    tuned = to_tuned(frozen, config, 1e-3)
    assert is_tuned(tuned) and tuned.encoder_optimizer.learning_rate.numpy() == pytest.approx(1e-4)
    for a, b in zip(frozen.get_weights(), tuned.caption_decoder.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_tuned_run_resumed_after_kills_repeats_an_unbroken_one_and_ships_its_exit_flow(
        tmp_path, original_dataset, seeded_xception):
    """Tuning from the first epoch (cross-entropy, half the photos mirrored) on through
    self-critical training; stopping after epochs 1, 2 (the last cross-entropy one) and 3 (the
    first self-critical one) changes nothing, and the model written carries its exit flow,
    scored on the test split through it."""
    from captioner.training.loop import train
    config = tiny_config(max_epochs=2, patience=9, scst_max_epochs=2, scst_patience=9,
                         finetune_start_epoch=1, scst_min_distinct=0.0, finetune_mirror=0.5)
    train(original_dataset, tmp_path / "unbroken", config, tmp_path / "ckpt-a", **quick(evaluate_test=True))
    for stop in (1, 1, 1, None):  # epochs 1, 2, 3, 4
        train(original_dataset, tmp_path / "resumed", config, tmp_path / "ckpt-b",
              stop_after_epochs=stop, **quick(evaluate_test=True))
    unbroken, resumed = load_trained(tmp_path / "unbroken"), load_trained(tmp_path / "resumed")

    def measured(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]
    assert measured(resumed.history) == measured(unbroken.history)
    assert [r["phase"] for r in resumed.history] == ["xe"] * 2 + ["scst"] * 2
    for a, b in zip(unbroken.model.get_weights(), resumed.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    float16 = unbroken.manifest["exit_flow"].pop("float16")   # what storing it in float16 cost, on val
    assert set(float16) == {"val_cider_beam3_float32", "val_cider_beam3_float16", "same_caption"}
    assert 0 <= float16["same_caption"] <= 1 and float16 == resumed.manifest["exit_flow"]["float16"]
    assert unbroken.manifest["exit_flow"] == {"layer": "add_10", "tuned_from_epoch": 1, "parameters": 6_801_104}
    for a, b in zip(h5_arrays(unbroken.exit_flow.weights), h5_arrays(resumed.exit_flow.weights), strict=True):
        np.testing.assert_array_equal(a, b)   # the same tuned exit flow
    assert unbroken.metrics == resumed.metrics
    card = (tmp_path / "unbroken" / "MODEL_CARD.md").read_text()   # says what was tuned, and what float16 cost
    assert "Xception's exit flow tuned" in card and "6,801,104 parameters, from `add_10` on" in card
    assert "from epoch 1, in cross-entropy and self-critical training" in card and "Stored in float16" in card
    assert "read mirrored left to right with probability 0.5" in card
    # A tuned model extends as a frozen one does: one more self-critical epoch, from its own
    # decoder and exit flow (seeded exactly), its optimisers afresh.
    from captioner.training.checkpoint import Checkpoint
    longer = tiny_config(max_epochs=2, patience=9, scst_max_epochs=3, scst_patience=9,
                         finetune_start_epoch=1, scst_min_distinct=0.0, finetune_mirror=0.5)
    seeded = Checkpoint(tmp_path / "ckpt-c")
    as_run = tiny_config(max_epochs=2, patience=9, scst_max_epochs=3, scst_patience=9, finetune_start_epoch=1,
                         scst_min_distinct=0.0, finetune_mirror=0.5, vocab_size=unbroken.config.vocab_size)   # as train() fills it in
    seeded.seed_from_model(tmp_path / "unbroken", as_run, unbroken.vocab, unbroken.manifest["encoder"]["weights_checksum"])
    model, state = seeded.load(as_run)
    assert state["finetune_from"] == 1 and state["epoch"] == 4
    for a, b in zip(unbroken.model.get_weights(), model.caption_decoder.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    model.exit_flow.save_weights(str(tmp_path / "seeded.weights.h5"))
    for a, b in zip(h5_arrays(unbroken.exit_flow.weights), h5_arrays(tmp_path / "seeded.weights.h5"), strict=True):
        np.testing.assert_array_equal(a, b)
    train(original_dataset, tmp_path / "extended", longer, tmp_path / "ckpt-d", extend=tmp_path / "unbroken", **quick())
    extended = load_trained(tmp_path / "extended")
    assert [r["phase"] for r in extended.history] == ["xe"] * 2 + ["scst"] * 3 and extended.exit_flow is not None


@pytest.mark.slow
def test_self_critical_training_tunes_the_exit_flow_or_keeps_the_cross_entropy_one(
        tmp_path, original_dataset, seeded_xception):
    """--scst-exit-flow fixed: the self-critical epochs start from the kept cross-entropy
    epoch's exit flow and leave it as it is (the decoder learns); "train" tunes it on. The
    setting may still change while self-critical training has not begun, so both settings go
    on from one cross-entropy checkpoint."""
    import shutil
    from captioner.decoders.config import Config
    from captioner.training.checkpoint import new_model
    from captioner.training.loop import train

    def config(scst_exit_flow):
        return tiny_config(max_epochs=2, patience=9, scst_max_epochs=2, scst_patience=9,
                           finetune_start_epoch=1, scst_min_distinct=0.0, scst_exit_flow=scst_exit_flow)

    def saved(ckpt, weights_key):
        state = artifacts.read_json(ckpt / "state.json")
        model = new_model(Config.from_json(state["config"]), 1e-3, tuned=True, imagenet_head=False)
        model.load_weights(str(ckpt / state[weights_key]))
        return model.exit_flow.get_weights(), model.caption_decoder.get_weights()

    xe_ckpt = tmp_path / "ckpt-xe"
    train(original_dataset, tmp_path / "out-xe", config("train"), xe_ckpt, stop_after_epochs=2,
          keep_checkpoint=True, **quick())
    assert artifacts.read_json(xe_ckpt / "state.json")["phase"] == "xe"
    xe_flow, xe_decoder = saved(xe_ckpt, "best_weights")   # where self-critical training starts
    for setting in ("train", "fixed"):
        ckpt, out = tmp_path / f"ckpt-{setting}", tmp_path / f"out-{setting}"
        shutil.copytree(xe_ckpt, ckpt)
        for stop in (1, None):   # a resumed self-critical phase keeps the setting too
            train(original_dataset, out, config(setting), ckpt, stop_after_epochs=stop, keep_checkpoint=True,
                  **quick(evaluate_test=True))   # the model card, read below, describes test scores
        state = artifacts.read_json(ckpt / "state.json")
        assert [r["phase"] for r in state["history"]] == ["xe"] * 2 + ["scst"] * 2
        scst_flow, scst_decoder = saved(ckpt, "model")   # after the last self-critical epoch
        same_flow = all(np.array_equal(a, b) for a, b in zip(xe_flow, scst_flow, strict=True))
        assert same_flow == (setting == "fixed"), setting
        assert not all(np.array_equal(a, b) for a, b in zip(xe_decoder, scst_decoder, strict=True))
        card = (out / "MODEL_CARD.md").read_text()
        assert ("then held fixed in self-critical training" in card) == (setting == "fixed"), setting


def test_a_merge_model_tunes_an_exit_flow_of_its_own_and_ships_it(tmp_path, original_dataset, seeded_xception):
    """The merge decoder with --finetune-encoder: cross-entropy tunes the exit flow from epoch
    2, self-critical training holds it fixed, and the model written carries it (scored on the
    test split through it), as an attention model does."""
    from captioner.training.loop import train
    config = tiny_config(decoder="merge", max_epochs=2, patience=9, scst_max_epochs=1, scst_patience=9,
                         finetune_start_epoch=2, scst_min_distinct=0.0, scst_exit_flow="fixed")
    train(original_dataset, tmp_path / "merge", config, tmp_path / "ckpt", **quick(evaluate_test=True))
    trained = load_trained(tmp_path / "merge")
    assert [r["phase"] for r in trained.history] == ["xe"] * 2 + ["scst"]
    assert trained.exit_flow is not None and trained.config.decoder == "merge"
    assert trained.manifest["exit_flow"]["tuned_from_epoch"] == 2
    from captioner.vision.tuned_encoder import keras_head
    tuned = keras_head(trained.exit_flow.weights, "add_10", finetune.imagenet_xception()).get_weights()
    start = finetune.new_head(trained.config).get_weights()   # ImageNet's (here the seeded) exit flow
    moved = [not np.array_equal(a, b.astype(np.float16).astype(np.float32)) for a, b in zip(tuned, start, strict=True)]
    assert sum(moved) > len(moved) // 2   # stored in float16; the kernels moved (BatchNorm's statistics do not)
    assert trained.metrics["beam"]["3"]["CIDEr"] >= 0
    assert "Xception's exit flow tuned" in (tmp_path / "merge" / "MODEL_CARD.md").read_text()
