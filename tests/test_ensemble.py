"""The ensemble decoder on tiny random decoders: its step is the weighted, renormalised sum
of its members' log-probabilities, and the one beam search runs on it exactly."""
import numpy as np
import pytest

from captioner.decoding.search import beam_search
from captioner.decoders.ensemble import EnsembleDecoder
from captioner.decoders.step import log_softmax
from test_decoding import VOCAB, exhaustive_best, random_attention, random_features, random_merge


def pair(weight=0.6):
    return EnsembleDecoder([random_attention(2), random_merge(3)], [weight, 1 - weight])


def test_a_one_member_ensemble_decodes_as_its_member():
    member = random_attention(2)
    features = random_features("attention", 4, 7)
    alone = beam_search(member, VOCAB, features, beam=3, top=3, max_length=6, attention=True)
    ensembled = beam_search(EnsembleDecoder([member], [1.0]), VOCAB, features, beam=3, top=3,
                            max_length=6, attention=True)
    for mine, theirs in zip(ensembled, alone):
        assert [c.tokens for c in mine] == [c.tokens for c in theirs]
        np.testing.assert_allclose([c.log_prob for c in mine], [c.log_prob for c in theirs], atol=1e-5)
        np.testing.assert_allclose(mine[0].attention, theirs[0].attention, atol=1e-6)


def test_each_step_mixes_the_members_and_keeps_their_states():
    ensemble = pair(0.6)
    attention, merge = ensemble.members
    features = random_features("attention", 3, 5)  # the merge member pools the same regions
    contexts = [ensemble.prepare(features), attention.prepare(features), merge.prepare(features)]
    photos = np.array([0, 1, 2, 2])
    states = [ensemble.initial_state(4), attention.initial_state(4), merge.initial_state(4)]
    tokens = np.full(4, VOCAB.start_id)
    for words in ([4, 5, 6, 4], [6, 4, 5, 5]):
        out, a, m = (d.step(tokens, s, c, photos)
                     for d, s, c in zip((ensemble, attention, merge), states, contexts))
        want = log_softmax(0.6 * a.log_probs + 0.4 * m.log_probs)
        np.testing.assert_allclose(out.log_probs, want, atol=1e-5)
        np.testing.assert_allclose(np.exp(out.log_probs).sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(out.attention, a.attention, atol=1e-6)  # the attention member's
        states = [out.state, a.state, m.state]
        tokens = np.array(words)
    for mine, theirs in zip(states[0], (*states[1], *states[2])):
        np.testing.assert_allclose(mine, theirs, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_full_beam_on_an_ensemble_is_exact(alpha):
    ensemble = pair(0.5)
    features = random_features("attention", 3, 11)
    # as in test_decoding: k=96 prunes nothing for 3 words and 6 steps
    full = beam_search(ensemble, VOCAB, features, beam=96, max_length=6, alpha=alpha)
    for i in range(len(features)):
        score, tokens = exhaustive_best(ensemble, features[i], 6, alpha)
        assert full[i][0].tokens == tokens
        assert full[i][0].normalized_log_prob == pytest.approx(score, abs=1e-4)


def test_bad_ensembles_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        EnsembleDecoder([random_merge(1), random_merge(2)], [0.5, 0.6])
    with pytest.raises(ValueError, match="one weight per member"):
        EnsembleDecoder([random_merge(1)], [0.5, 0.5])
    with pytest.raises(ValueError, match="one vocabulary"):
        EnsembleDecoder([random_merge(1), random_merge(2, vocab_size=len(VOCAB) + 1)], [0.5, 0.5])


# -- trained/ensemble: a model directory of its own -----------------------------------------
def tiny_member(root, decoder, seed, vocab, cider, name=None):
    """A small random (untrained) model written as training writes one, with a test CIDEr, in
    root/<name> (default: root/<decoder>)."""
    import keras

    from captioner.model_dirs import artifacts
    from captioner.decoders.config import Config
    from captioner.decoders.registry import build_decoder
    keras.utils.set_random_seed(seed)
    config = Config(decoder=decoder, vocab_size=len(vocab), units=8, embed_dim=4, attention_dim=4,
                    max_decode_length=6)
    metrics = {"split": "test", "beam": {"3": {"CIDEr": cider}}}
    info = {"decoder": decoder, "dataset": {"path": "flickr8k"}, "encoder": {"weights_checksum": "x"}}
    return artifacts.save_trained(root / (name or decoder), build_decoder(config), vocab, config, [{"epoch": 1}],
                                  metrics, info)


def tiny_ensemble(root, cider=0.7):
    from captioner.model_dirs.artifacts import sha256_file
    from captioner.data.text import Vocabulary
    from captioner.model_dirs.ensemble_dir import save_ensemble
    vocab = Vocabulary(["a", "dog", "runs", "on", "grass"])
    members = [tiny_member(root, "attention", 1, vocab, 0.6), tiny_member(root, "merge", 2, vocab, 0.5)]
    metrics = {"split": "test", "decoder": "ensemble", "beam": {"3": {"CIDEr": cider}}}
    photos = [{"image": "1.jpg", "caption": "a dog", "beam": 3, "bleu4": 0.1, "cider": 0.2}]
    val_search = {"0.6": {"0.5": {"CIDEr": 0.4}, "1.0": {"CIDEr": 0.45}}, "0.7": {"1.0": {"CIDEr": 0.42}}}
    save_ensemble(root / "ensemble", members, [sha256_file(m / "decoder.weights.h5") for m in members], vocab,
                  [0.6, 0.4], 1.0, metrics, photos, {"encoder": {"weights_checksum": "x"}}, val_search)
    return root / "ensemble", members


def test_an_ensemble_directory_loads_and_decodes_as_its_members_mixed(tmp_path):
    from captioner import Captioner
    from captioner.model_dirs.artifacts import load_trained
    from captioner.model_dirs.catalog import read_records
    from captioner.model_dirs.catalog import available_models
    from captioner.decoders.registry import numpy_decoder
    directory, (attention_dir, merge_dir) = tiny_ensemble(tmp_path)
    assert sorted(available_models(tmp_path)) == ["attention", "ensemble", "merge"]
    assert not (directory / "decoder.weights.h5").exists()  # it shares its members' weights
    captioner = Captioner.load(tmp_path)  # the best by test CIDEr: the ensemble's 0.7
    assert captioner.name == "ensemble" and captioner.has_attention
    assert captioner.attention_source == "attention" and captioner.config.length_alpha == 1.0
    by_hand = EnsembleDecoder([numpy_decoder(m.model, m.config) for m in map(load_trained, (attention_dir, merge_dir))],
                              [0.6, 0.4])
    features = np.random.default_rng(0).random((3, 10, 10, 2048)).astype(np.float16)  # Xception-shaped
    mine = captioner.caption_batch(features, beam=3, top=2)
    theirs = beam_search(by_hand, captioner.vocab, features, beam=3, top=2, max_length=6, alpha=1.0)
    assert [[c.tokens for c in row] for row in mine] == [[c.tokens for c in row] for row in theirs]
    assert Captioner.load(tmp_path, name="merge").name == "merge"
    records = read_records(directory)  # what the Training page reads
    assert records["history"] == [] and records["metrics"]["beam"]["3"]["CIDEr"] == 0.7
    assert records["config"]["members"] == "attention 0.6, merge 0.4"
    assert records["config"]["extra"]["val_mix_search"] == {"0.6": {"0.5": 0.4, "1.0": 0.45}, "0.7": {"1.0": 0.42}}
    assert records["manifest"]["dataset"] == {"path": "flickr8k"}  # the members' dataset, for the pages


def test_an_ensemble_of_three_members_decodes_them_mixed_and_names_each_mix_by_every_weight(tmp_path, monkeypatch):
    from captioner import Captioner
    from captioner.data.text import Vocabulary
    from captioner.decoders.registry import numpy_decoder
    from captioner.model_dirs.artifacts import load_trained, sha256_file
    from captioner.model_dirs.catalog import read_records
    from captioner.model_dirs.ensemble_dir import mix_key, save_ensemble
    vocab = Vocabulary(["a", "dog", "runs", "on", "grass"])
    members = [tiny_member(tmp_path, "attention", 1, vocab, 0.6), tiny_member(tmp_path, "merge", 2, vocab, 0.5),
               tiny_member(tmp_path, "attention", 3, vocab, 0.55, name="attention_imagenet")]
    weights = [0.4, 0.3, 0.3]
    assert mix_key(weights) == "0.4:0.3:0.3" and mix_key([0.6, 0.4]) == "0.6"
    metrics = {"split": "test", "decoder": "ensemble", "beam": {"3": {"CIDEr": 0.7}}}
    save_ensemble(tmp_path / "ensemble", members, [sha256_file(m / "decoder.weights.h5") for m in members], vocab,
                  weights, 0.7, metrics, [], {"encoder": {"weights_checksum": "x"}},
                  {mix_key(weights): {"0.7": {"CIDEr": 0.5}}, "0.5:0.3:0.2": {"0.7": {"CIDEr": 0.45}}})
    captioner = Captioner.load(tmp_path, name="ensemble")
    by_hand = EnsembleDecoder([numpy_decoder(m.model, m.config) for m in map(load_trained, members)], weights)
    features = np.random.default_rng(1).random((3, 10, 10, 2048)).astype(np.float16)
    mine = captioner.caption_batch(features, beam=3, top=2)
    theirs = beam_search(by_hand, captioner.vocab, features, beam=3, top=2, max_length=6, alpha=0.7)
    assert [[c.tokens for c in row] for row in mine] == [[c.tokens for c in row] for row in theirs]
    # a second attention model goes by its directory's name (its trust estimate, the pages)
    assert Captioner.load(tmp_path, name="attention_imagenet").name == "attention_imagenet"
    assert Captioner.load(tmp_path, name="attention").name == "attention"
    from captioner.api import load_captioner
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)   # no file called attention_imagenet here: --model names it
    assert load_captioner("attention_imagenet").name == "attention_imagenet"   # the CLI's --model
    records = read_records(tmp_path / "ensemble")
    assert records["config"]["members"] == "attention 0.4, merge 0.3, attention_imagenet 0.3"
    assert records["config"]["extra"]["val_alpha_search"] == {"0.7": {"CIDEr": 0.5}}  # the chosen mix's
    assert records["config"]["extra"]["val_mix_search"] == {"0.4:0.3:0.3": {"0.7": 0.5}, "0.5:0.3:0.2": {"0.7": 0.45}}


def test_mixes_of_two_or_more_members_are_read_as_the_scripts_spell_them():
    from captioner.model_dirs.ensemble_dir import parse_mixes
    assert parse_mixes("0.3,0.7", 2) == [(0.3, 0.7), (0.7, 0.3)]
    assert parse_mixes("0.4:0.3:0.3,0.5:0.3:0.2", 3) == [(0.4, 0.3, 0.3), (0.5, 0.3, 0.2)]
    for text, members, problem in (("0.5:0.6", 2, "sum to 1"), ("0.4:0.3", 3, "expected 3 weights"),
                                   ("0.5", 3, "expected 3 weights"), ("x", 2, "expected numbers"),
                                   ("1.2", 2, "between 0 and 1"), ("0.5:0.5,0.5", 2, "given twice")):
        with pytest.raises(ValueError, match=problem):
            parse_mixes(text, members)


def test_a_mix_leaves_out_the_members_weighted_zero():
    from captioner.decoders.ensemble import mixed
    attention, merge = random_attention(2), random_merge(3)
    features = random_features("attention", 3, 5)
    alone = beam_search(attention, VOCAB, features, beam=3, max_length=6)
    mix = mixed([attention, merge], [1.0, 0.0])
    assert mix.members == [attention]   # the merge decoder's steps are not run
    assert [c[0].tokens for c in beam_search(mix, VOCAB, features, beam=3, max_length=6)] == \
        [c[0].tokens for c in alone]


def test_train_name_never_trains_over_an_ensemble_or_another_decoders_model(tmp_path):
    from captioner.training.loop import TrainingError, refuse_other_model
    directory, (attention_dir, merge_dir) = tiny_ensemble(tmp_path)
    with pytest.raises(TrainingError, match="holds a merge model, not attention"):
        refuse_other_model(merge_dir, "attention")   # --decoder attention --name merge
    with pytest.raises(TrainingError, match="holds an ensemble"):
        refuse_other_model(directory, "attention")
    refuse_other_model(merge_dir, "merge")            # retraining it, as always
    refuse_other_model(tmp_path / "attention_imagenet", "attention")   # a new one


def test_an_ensemble_goes_stale_when_a_member_is_retrained(tmp_path):
    from captioner import Captioner
    from captioner.model_dirs.artifacts import ArtifactError
    from captioner.model_dirs.catalog import resolve_model, test_cider
    from captioner.data.text import Vocabulary
    directory, _ = tiny_ensemble(tmp_path)
    assert resolve_model(tmp_path) == directory
    tiny_member(tmp_path, "merge", 9, Vocabulary(["a", "dog", "runs", "on", "grass"]), 0.5)  # retrained
    assert test_cider(directory) == -1.0
    assert resolve_model(tmp_path).name == "attention", "a stale ensemble is never the default"
    with pytest.raises(ArtifactError, match=r"other weights of merge .*make ensemble"):
        Captioner.load(tmp_path, name="ensemble")
    assert Captioner.load(tmp_path).name == "attention"


def test_an_ensemble_refuses_members_elsewhere_and_tampered_files(tmp_path):
    import json

    from captioner.model_dirs.artifacts import ArtifactError
    from captioner.model_dirs.ensemble_dir import load_ensemble, save_ensemble
    directory, members = tiny_ensemble(tmp_path / "trained")
    with pytest.raises(ArtifactError, match="members must be directories beside it"):
        save_ensemble(tmp_path / "elsewhere" / "ensemble", members, ["x", "y"], None, [0.6, 0.4], 1.0,
                      None, None, {})
    description = json.loads((directory / "ensemble.json").read_text())
    (directory / "ensemble.json").write_text(json.dumps(dict(description, weights=[0.9, 0.1])))
    with pytest.raises(ArtifactError, match="ensemble.json: contents do not match manifest.json"):
        load_ensemble(directory)


def test_a_damaged_member_hands_the_default_to_the_next_model_and_says_why(tmp_path, capsys):
    import json

    from captioner import Captioner
    from captioner.__main__ import main
    directory, (attention_dir, merge_dir) = tiny_ensemble(tmp_path)
    (merge_dir / "decoder.weights.h5").write_bytes(b"damaged")  # its manifest still says it is fine
    captioner = Captioner.load(tmp_path)
    assert captioner.name == "attention"  # the ensemble (0.7) cannot load; attention (0.6) can
    assert len(captioner.passed_over) == 1 and "merge" in captioner.passed_over[0]
    with pytest.raises(Exception, match="contents do not match"):
        Captioner.load(tmp_path, name="ensemble")  # asked by name: the error, not another model

    # `captioner info` lists every model, the broken ones with their error
    assert main(["info", "--model", str(tmp_path)]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"attention", "ensemble", "merge"}
    assert "error" in rows["ensemble"] and "error" in rows["merge"] and "error" not in rows["attention"]


def test_the_training_page_warns_of_a_stale_ensemble(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from app_fixtures import APP
    from captioner.data.text import Vocabulary
    tiny_ensemble(tmp_path)
    monkeypatch.setenv("CAPTIONER_MODEL_DIR", str(tmp_path))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/training.py").run()
    assert not at.exception and not at.main.warning  # fresh: no warning, three score columns
    assert [s.value for s in at.main.subheader if s.value in ("attention", "ensemble", "merge")] == \
        ["attention", "ensemble", "merge"]
    tiny_member(tmp_path, "merge", 9, Vocabulary(["a", "dog", "runs", "on", "grass"]), 0.5)  # retrained
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/training.py").run()
    assert not at.exception
    assert any("ensemble" in w.value and "make ensemble" in w.value for w in at.main.warning)
