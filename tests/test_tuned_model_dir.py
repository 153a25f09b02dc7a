"""A model directory that carries its own exit flow (issue 24): it loads, and encodes a photo
as the Keras model it came from does, on TensorFlow and on LiteRT; a model without one reads
the frozen encoder; and an encoder that does not run the model's exit flow is refused.

Integration: the real ImageNet weights, with the exit flow moved off them by seeded noise so
that a frozen map could not pass for a tuned one."""
import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from captioner.vision.encoder import EXPECTED_CHECKSUM, EncoderWeightsError
from conftest import require

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_cache():
    """The real cache, with the trunk converted once (what `fetch-weights` does for tuned models)."""
    from captioner.vision.encoder import cache_dir, cached_weights_path
    from captioner.vision.exit_flow import trunk_encoder
    require(cached_weights_path(), "Xception weights (run `make setup`)")
    trunk_encoder("add_10")
    return cache_dir()


@pytest.fixture(scope="module")
def cache(real_cache, tmp_path_factory):
    """A cache of the tests' own, holding links to the real weights and trunk: the heads the
    tests convert stay out of the real one."""
    private = tmp_path_factory.mktemp("cache")
    for path in real_cache.iterdir():
        if path.is_file():
            os.symlink(path, private / path.name)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CAPTIONER_CACHE_DIR", str(private))
        patch.delenv("CAPTIONER_LITE_ENCODER", raising=False)
        yield private


@pytest.fixture(scope="module")
def tuned(cache, tmp_path_factory):
    """(model directory, the Keras model it was saved from) for a tiny tuned attention model."""
    import keras
    from captioner.data.text import Vocabulary
    from captioner.model_dirs import artifacts
    from captioner.training.checkpoint import new_model
    from captioner.vision.exit_flow import round_to_float16
    from train_helper import TINY
    vocab = Vocabulary.build(["a dog runs on the grass", "a man rides a bike"], 1)
    config = dataclasses.replace(TINY, decoder="attention", finetune_encoder="exit_flow",
                                 vocab_size=len(vocab))
    keras.utils.set_random_seed(3)
    model = new_model(config, 1e-3, tuned=True)
    rng = np.random.default_rng(3)
    model.exit_flow.set_weights([w * (1 + 0.2 * rng.standard_normal(w.shape)).astype(w.dtype) if w.ndim > 1 else w
                                 for w in model.exit_flow.get_weights()])
    round_to_float16(model.exit_flow)   # as training does before it writes the model
    info = {"decoder": "attention", "encoder": {"name": "xception", "weights_checksum": EXPECTED_CHECKSUM},
            "exit_flow": {"layer": "add_10", "tuned_from_epoch": 1,
                          "parameters": int(model.exit_flow.count_params())}}
    out = artifacts.save_trained(tmp_path_factory.mktemp("models") / "attention", model, vocab, config,
                                 [{"epoch": 1}], None, info)
    return out, model


@pytest.fixture(scope="module")
def photos(shared_data):
    from captioner.data.dataset import load_flickr8k
    from captioner.data.images import load_image, prepare_for_encoder
    data = load_flickr8k(shared_data)
    return np.stack([prepare_for_encoder(load_image(data.image_path(n))) for n in data.images("test")[:3]])


def keras_maps(model, photos):
    """What training gives: the trunk's output as the cache holds it (float16), then the exit flow."""
    from captioner.vision.encoder import load_cached_weights
    from captioner.vision.exit_flow import trunk_and_head
    trunk = trunk_and_head(load_cached_weights()[0])[0]
    inner = np.asarray(trunk(photos, training=False)).astype(np.float16).astype(np.float32)
    return np.asarray(model.exit_flow(inner, training=False)).astype(np.float16)


def test_a_tuned_model_directory_encodes_as_its_keras_model(tuned, photos):
    from captioner import Captioner
    from captioner.model_dirs import artifacts
    from captioner.model_dirs.catalog import convert_exit_flows
    directory, model = tuned
    trained = artifacts.load_trained(directory)
    assert trained.exit_flow.layer == "add_10" and trained.exit_flow.weights.name == artifacts.HEAD_WEIGHTS
    import h5py
    with h5py.File(trained.exit_flow.weights) as stored:   # half the size, and loaded exactly
        kinds = set()
        stored.visititems(lambda _, item: kinds.add(item.dtype) if isinstance(item, h5py.Dataset) else None)
    assert kinds == {np.dtype(np.float16)}
    from captioner.vision.tuned_encoder import keras_head
    for a, b in zip(keras_head(trained.exit_flow.weights, "add_10").get_weights(), model.exit_flow.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    expected = keras_maps(model, photos)
    from captioner.vision.encoder import Encoder
    frozen = Encoder().feature_maps(photos).astype(np.float32)

    on_tf = Captioner(trained, encoder_kind="tensorflow")
    on_tf.check_encoder()
    views = on_tf.encoder.feature_maps(photos).astype(np.float32)
    assert views.shape == (3, 2, 10, 10, 2048)   # ImageNet's exit flow's map, then the model's own
    np.testing.assert_allclose(views[:, 1], expected.astype(np.float32), atol=2e-3, rtol=2e-3)
    # view 0 is the frozen encoder's map, up to the trunk's float16 rounding carried through the exit flow
    np.testing.assert_allclose(views[:, 0], frozen, atol=0.01, rtol=2e-3)
    np.testing.assert_array_equal(on_tf.imagenet_maps(views), views[:, 0])

    with pytest.raises(EncoderWeightsError, match="LiteRT conversion .* is missing"):
        Captioner(trained, encoder_kind="litert").encoder
    assert convert_exit_flows(directory.parent)   # what `make setup` runs for trained/
    on_lite = Captioner(trained, encoder_kind="litert")
    on_lite.check_encoder()
    lite_views = on_lite.encoder.feature_maps(photos).astype(np.float32)
    lite = lite_views[:, 1]
    np.testing.assert_allclose(lite_views[:, 0], frozen, atol=0.01, rtol=2e-3)
    # LiteRT and Keras agree to ~1e-5 in float32 per half (tests/test_litert.py); a value that
    # sits on a float16 rounding boundary of the trunk's output may move one step, which the
    # exit flow carries on (measured: at most 0.002, one float16 step, on values up to 5.8).
    np.testing.assert_allclose(lite, expected.astype(np.float32), atol=0.01, rtol=2e-3)
    assert np.corrcoef(lite.ravel(), expected.astype(np.float32).ravel())[0, 1] > 0.9999
    from captioner.vision.litert import LiteEncoder
    assert not np.allclose(LiteEncoder().feature_maps(photos[:1]).astype(np.float32), lite[:1], atol=0.05)
    # Its maps are keyed apart from the frozen encoder's, so no cache mixes them.
    assert on_lite.encoder.checksum not in (EXPECTED_CHECKSUM, on_lite.encoder.base_checksum)
    assert on_lite.encoder.checksum == on_tf.encoder.checksum


def test_an_encoder_without_the_models_exit_flow_is_refused(tuned, encoder):
    from captioner import Captioner
    from captioner.model_dirs import artifacts
    trained = artifacts.load_trained(tuned[0])
    with pytest.raises(EncoderWeightsError, match="reads its own exit flow"):
        Captioner(trained, encoder=encoder).check_encoder()
    with pytest.raises(EncoderWeightsError, match="has its own exit flow"):
        Captioner(trained, encoder_weights="/somewhere/xception.weights.h5").encoder


def test_a_head_converted_from_other_weights_is_refused(tuned, cache):
    from captioner import Captioner
    from captioner.model_dirs import artifacts
    from captioner.model_dirs.catalog import convert_exit_flows
    from captioner.vision.tuned_encoder import head_lite_path
    trained = artifacts.load_trained(tuned[0])
    convert_exit_flows(tuned[0].parent)
    record = Path(str(head_lite_path(trained.exit_flow.sha256)) + ".json")
    original = record.read_text()
    try:
        record.write_text(original.replace(trained.exit_flow.sha256, "0" * 64))
        with pytest.raises(EncoderWeightsError, match="converted from weights 000000"):
            Captioner(trained, encoder_kind="litert").encoder
    finally:
        record.write_text(original)


def test_a_model_without_an_exit_flow_reads_the_frozen_encoder(encoder, mixed):
    """A frozen model reads the shared frozen encoder; the committed models, which all read the
    attention model's tuned exit flow (the merge model since 2026-12-06), read views and refuse
    it, and members that read one exit flow share one view of it."""
    from captioner import Captioner
    from captioner.model_dirs.artifacts import load_trained
    from conftest import trained_models
    for name, directory in trained_models().items():
        captioner = Captioner.load(directory, encoder=encoder)
        members = captioner.trained.member_names if name == "ensemble" else (name,)
        flows = {load_trained(directory.parent / m).exit_flow for m in members} - {None}
        assert bool(captioner.flows) == captioner.has_views == bool(flows), name
        assert len(captioner.flows) == len({flow.sha256 for flow in flows}), name
        if flows:
            with pytest.raises(EncoderWeightsError, match="reads its own exit flow"):
                captioner.check_encoder()
        else:
            captioner.check_encoder()   # the shared frozen encoder is the right one
    frozen = Captioner.load(mixed / "merge", encoder=encoder)   # a tiny frozen merge model
    assert not frozen.flows and not frozen.has_views
    frozen.check_encoder()
    fresh = Captioner.load(mixed / "merge")
    assert fresh.encoder.checksum == EXPECTED_CHECKSUM and not hasattr(fresh.encoder, "head_checksums")


@pytest.fixture(scope="module")
def mixed(tuned):
    """trained/ of the tuned attention model, a frozen merge model on its vocabulary and their
    ensemble: members that read different exit flows."""
    from captioner.model_dirs import artifacts
    from captioner.model_dirs.ensemble_dir import save_ensemble
    from captioner.training.checkpoint import new_model
    from train_helper import TINY
    import keras
    root = tuned[0].parent
    attention = artifacts.load_trained(tuned[0])
    config = dataclasses.replace(TINY, decoder="merge", vocab_size=len(attention.vocab))
    keras.utils.set_random_seed(4)
    info = {"decoder": "merge", "encoder": {"name": "xception", "weights_checksum": EXPECTED_CHECKSUM}}
    artifacts.save_trained(root / "merge", new_model(config, 1e-3), attention.vocab, config, [{"epoch": 1}], None, info)
    members = [root / "attention", root / "merge"]
    fingerprints = [artifacts.weights_fingerprint(artifacts.load_trained(d).manifest["files"]) for d in members]
    # test metrics that make the ensemble the default model, as the committed one is
    save_ensemble(root / "ensemble", members, fingerprints, attention.vocab, [0.5, 0.5], 0.0,
                  {"split": "test", "beam": {"3": {"CIDEr": 0.5}}}, None, {})
    return root


class Fed:
    """A decoder fed the maps given here, whatever the search hands it."""
    def __init__(self, decoder, maps):
        self.decoder, self.maps = decoder, maps

    def prepare(self, _):
        return self.decoder.prepare(self.maps)

    def __getattr__(self, name):
        return getattr(self.decoder, name)


def test_an_ensemble_of_a_tuned_and_a_frozen_model_decodes_each_on_its_own_exit_flow(mixed, photos):
    """Issue 24: the trunk runs once, then ImageNet's exit flow and the tuned one; the tuned member
    reads its own map and the frozen member ImageNet's, in the app, the CLI and caption-dir alike."""
    from captioner import Captioner
    from captioner.decoders.ensemble import EnsembleDecoder
    from captioner.decoding.search import beam_search
    from captioner.model_dirs import artifacts
    from captioner.model_dirs.catalog import convert_exit_flows
    from captioner.model_dirs.ensemble_dir import stale_members
    convert_exit_flows(mixed)
    ensemble = Captioner.load(mixed, name="ensemble")
    assert [f.sha256 for f in ensemble.flows] == [artifacts.load_trained(mixed / "attention").exit_flow.sha256]
    ensemble.check_encoder()
    views = ensemble.encoder.feature_maps(photos)
    assert views.shape == (3, 2, 10, 10, 2048)
    attention, merge = (artifacts.load_trained(mixed / n) for n in ("attention", "merge"))

    def expected(attention_maps, merge_maps):
        decoder = EnsembleDecoder([Fed(attention.numpy_decoder(), attention_maps),
                                   Fed(merge.numpy_decoder(), merge_maps)], [0.5, 0.5])
        return [c[0] for c in beam_search(decoder, ensemble.vocab, views[:, 0], 3, 1, 8, 0.0)]
    found = [c[0] for c in ensemble.caption_batch(views, beam=3, max_length=8, alpha=0.0, trust=False)]
    right = expected(views[:, 1], views[:, 0])
    assert [(c.text, round(c.log_prob, 4)) for c in found] == [(c.text, round(c.log_prob, 4)) for c in right]
    swapped = expected(views[:, 0], views[:, 1])   # so the comparison above could fail
    assert [round(c.log_prob, 4) for c in swapped] != [round(c.log_prob, 4) for c in right]
    with pytest.raises(ValueError, match="maps of 2 exit flows"):
        ensemble.caption_batch(views[:, 0], trust=False)

    # A frozen model shown beside it shares its encoder and reads view 0, as the app does.
    beside = Captioner(merge, encoder=ensemble.encoder, flows=ensemble.flows)
    beside.check_encoder()
    alone = Captioner(merge, flows=[])
    assert ([c[0].log_prob for c in beside.caption_batch(views, beam=3, trust=False)]
            == [c[0].log_prob for c in alone.caption_batch(views[:, 0], beam=3, trust=False)])
    # An ensemble scored with these members is stale once the exit flow changes, even if the decoder does not.
    assert stale_members(mixed / "ensemble") == []
    files = dict(attention.manifest["files"])
    assert artifacts.weights_fingerprint(files) != files[artifacts.WEIGHTS]
    files[artifacts.HEAD_WEIGHTS] = "0" * 64
    assert artifacts.weights_fingerprint(files) != artifacts.weights_fingerprint(attention.manifest["files"])


def test_rescoring_a_tuned_model_keeps_its_exit_flow(tuned, tmp_path):
    """What evaluate.py's re-score writes: the decoder from its Keras model, the exit flow as it was."""
    from captioner.model_dirs import artifacts
    trained = artifacts.load_trained(tuned[0])
    out = artifacts.save_trained(tmp_path / "attention", trained.model, trained.vocab, trained.config,
                                 trained.history, None, {k: v for k, v in trained.manifest.items() if k != "files"},
                                 exit_flow=trained.exit_flow)
    again = artifacts.load_trained(out)
    assert again.exit_flow is not None and again.exit_flow.sha256 == trained.exit_flow.sha256
    assert again.manifest["files"][artifacts.WEIGHTS] == trained.manifest["files"][artifacts.WEIGHTS]


def test_the_app_shows_a_tuned_ensemble_and_a_frozen_model_from_one_encoding(mixed, monkeypatch):
    """The caption page with every model side by side: the tuned ensemble (the default), its tuned
    attention member and the frozen merge model all read the one encoding of the photo."""
    from streamlit.testing.v1 import AppTest
    from app_fixtures import APP, beam_captions, photo_png
    from captioner.model_dirs.catalog import convert_exit_flows
    convert_exit_flows(mixed)
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(mixed))
    at = AppTest.from_file(APP, default_timeout=180).run()
    assert not at.exception, [e.value for e in at.exception]
    at.file_uploader(key="upload").upload("cat.png", photo_png("chelsea"), "image/png").run()
    assert not at.exception, [e.value for e in at.exception]
    at.radio(key="model").set_value("All side by side").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.main.error, [e.value for e in at.main.error]
    assert len(beam_captions(at)) == 9   # three models at the default three widths
    assert at.session_state["encoder_runs"] == 1


def test_caption_and_caption_dir_run_a_tuned_ensemble(mixed, tmp_path):
    """The CLI and caption-dir encode for the ensemble's exit flows, without TensorFlow."""
    import json
    import subprocess
    import sys
    from conftest import ROOT
    from captioner.model_dirs.catalog import convert_exit_flows
    from app_fixtures import photo_png
    convert_exit_flows(mixed)
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("chelsea", "astronaut"):
        (folder / f"{name}.png").write_bytes(photo_png(name))
    env = dict(os.environ, CAPTIONER_DATA_DIR="")
    caption = subprocess.run([sys.executable, "-m", "captioner", "caption", str(next(folder.iterdir())),
                              "--model", str(mixed / "ensemble"), "--json"],
                             capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert caption.returncode == 0, caption.stderr
    record = json.loads(caption.stdout)
    assert record
    out = tmp_path / "captions.jsonl"
    run = subprocess.run([sys.executable, "-m", "captioner", "caption-dir", str(folder), "--out", str(out),
                          "--model", str(mixed / "ensemble")],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 2 and all(r["captions"] and r["error"] is None for r in records), records


class ChecksumOnly:
    """The ImageNet weights' checksum and nothing else: a run reading another model's exit flow
    encodes every photo for that flow (views), never with ImageNet's encoder alone."""
    checksum = EXPECTED_CHECKSUM

    def feature_maps(self, batch):
        raise AssertionError("encoded with the frozen encoder alone")


def test_a_decoder_trained_on_another_models_exit_flow_reads_it_and_carries_it(tuned, mixed, original_dataset, tmp_path):
    """--exit-flow-from (the merge member trained on the attention member's tuned maps), on 40
    tiny photos through the real trunk on LiteRT: the run's features are that flow's maps (view
    1), pooled, with ImageNet's (view 0) kept for the similar photos; the model written carries
    the flow byte for byte; beside its source it adds no exit flow to run; a frozen model, which
    has none to give, is refused."""
    import json
    from captioner.data.dataset import load_flickr8k
    from captioner.model_dirs import artifacts
    from captioner.model_dirs.views import exit_flows, view_of
    from captioner.training.checkpoint import TrainingError
    from captioner.training.features import views_maps
    from captioner.training.loop import train
    from captioner.training.progress import ProgressReporter
    from captioner.training.run import Run
    from captioner.vision.encoder import pool
    from train_helper import TINY
    source = artifacts.load_trained(tuned[0])
    config = dataclasses.replace(TINY, decoder="merge", max_epochs=1, scst_max_epochs=0,
                                 exit_flow_from=str(tuned[0]))
    run = Run(original_dataset, config, ChecksumOnly(), False, None, ProgressReporter(tmp_path / "progress", "merge"))
    dataset = load_flickr8k(original_dataset)
    views = {s: views_maps([dataset.image_path(n) for n in run.splits[s]], [source.exit_flow], progress=False)
             for s in ("train", "val")}
    assert run.features["val"].shape == (len(run.splits["val"]), 2048)
    np.testing.assert_allclose(run.features["val"], pool(views["val"][:, 1]), rtol=1e-5)
    assert not np.allclose(run.features["val"], pool(views["val"][:, 0]), rtol=1e-2)   # the tuned view, not ImageNet's
    np.testing.assert_allclose(run.features["train"], pool(views["train"][:, 1]), rtol=1e-5)
    np.testing.assert_allclose(run.frozen_train_features, pool(views["train"][:, 0]), rtol=1e-5)

    quick = dict(encoder=ChecksumOnly(), progress=False)
    train(original_dataset, tmp_path / "merge", config, tmp_path / "ckpt", keep_checkpoint=True, **quick)
    merge = artifacts.load_trained(tmp_path / "merge")
    assert (tmp_path / "merge" / artifacts.HEAD_WEIGHTS).read_bytes() == source.exit_flow.weights.read_bytes()
    assert merge.exit_flow.sha256 == source.exit_flow.sha256
    assert merge.manifest["exit_flow"] == {"layer": "add_10", "read_from": str(tuned[0])}
    assert merge.metrics["beam"]["3"]["CIDEr"] >= 0
    assert "held fixed" in (tmp_path / "merge" / "MODEL_CARD.md").read_text()
    flows = exit_flows([source, merge])
    assert len(flows) == 1 and view_of(merge, flows) == view_of(source, flows) == 1

    # A resume finds the exit flow it began with, or stops before encoding anything.
    state_path = tmp_path / "ckpt" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["shared_exit_flow_sha256"] == source.exit_flow.sha256
    state_path.write_text(json.dumps({**state, "shared_exit_flow_sha256": "0" * 64}))
    with pytest.raises(TrainingError, match="not the one this run began"):
        train(original_dataset, tmp_path / "merge", config, tmp_path / "ckpt", **quick)
    with pytest.raises(TrainingError, match="is the model whose exit flow"):
        train(original_dataset, tuned[0], config, tmp_path / "ckpt3", **quick)
    with pytest.raises(TrainingError, match="has no tuned exit flow"):
        train(original_dataset, tmp_path / "merge2", dataclasses.replace(config, exit_flow_from=str(mixed / "merge")),
              tmp_path / "ckpt2", **quick)


def test_views_of_photos_whose_trunk_output_is_cached_run_the_heads_alone(tuned, shared_data, tmp_path, monkeypatch):
    """A training run that tuned an exit flow has cached the trunk's output of every photo:
    the views of those photos then take the heads alone, and are what the whole encoder gives."""
    from captioner.data.dataset import load_flickr8k
    from captioner.data.images import load_image, prepare_for_encoder
    from captioner.model_dirs import artifacts
    from captioner.training.features import views_from_trunk_cache, views_maps
    from captioner.training.finetune import trunk_cache
    from captioner.vision.exit_flow import trunk_encoder
    from captioner.vision.features import FeatureCache, extract_feature_maps, file_digest
    from captioner.vision.tuned_encoder import ViewsEncoder, convert_views, open_views_encoder
    data = load_flickr8k(shared_data)
    paths = [data.image_path(n) for n in data.images("test")[3:6]]
    flows = [artifacts.load_trained(tuned[0]).exit_flow]
    convert_views(flows)
    encoder = open_views_encoder("litert", flows)
    whole = encoder.feature_maps(np.stack([prepare_for_encoder(load_image(p)) for p in paths])).astype(np.float32)
    trunk = trunk_encoder("add_10")   # what training caches: two of the three photos
    extract_feature_maps(paths[:2], trunk, trunk_cache(trunk.checksum, "add_10"), progress=False)
    views = FeatureCache(encoder.checksum, root=tmp_path, shape=(2, 10, 10, 2048), part="views")
    assert views_from_trunk_cache(paths, encoder, views, progress=False) == 2
    assert views_from_trunk_cache(paths, encoder, views, progress=False) == 0   # cached now
    for i in range(2):
        np.testing.assert_allclose(views.get(file_digest(paths[i])).astype(np.float32), whole[i], atol=0.01, rtol=2e-3)
    # views_maps does the same in the default cache, the third photo by the whole encoder
    encoded = []
    whole_encoder = ViewsEncoder.feature_maps
    monkeypatch.setattr(ViewsEncoder, "feature_maps", lambda self, batch: encoded.append(len(batch)) or
                        whole_encoder(self, batch))
    maps = views_maps(paths, flows, progress=False).astype(np.float32)
    assert encoded == [1]
    np.testing.assert_allclose(maps, whole, atol=0.01, rtol=2e-3)
    assert np.mean(maps == whole) > 0.99
