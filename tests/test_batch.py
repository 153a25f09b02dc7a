"""caption-dir: one JSON line per photo, resumable after SIGKILL or a torn line, bad files
recorded and counted, and the Ray engine writing the same records as the local one.

A tiny random decoder and the instant PixelEncoder stand in for the real model (the last
test uses the real one), so these tests exercise our pipeline, not Xception."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import IN_CI, ROOT, make_photo

HELPER = Path(__file__).resolve().parent / "batch_helper.py"
WORDS = ("a", "red", "green", "blue", "square", "stripes", "on", "white")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A decoder with large random weights, so its captions are words that differ by photo."""
    from captioner.model_dirs import artifacts
    from captioner.decoders.config import Config
    from captioner.decoders.registry import build_decoder
    from captioner.data.text import Vocabulary
    vocab = Vocabulary(list(WORDS))
    config = Config(vocab_size=len(vocab), units=8, embed_dim=4, max_decode_length=6)
    model = build_decoder(config)
    rng = np.random.default_rng(7)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(w.dtype) for w in model.get_weights()])
    out = tmp_path_factory.mktemp("tiny") / "trained"
    artifacts.save_trained(out, model, vocab, config, [], {"split": "test"}, {})
    return out


def make_folder(root: Path, n: int = 24, bad: bool = True) -> Path:
    """`n` photos in every format, some in nested folders, plus (with `bad`) files that are
    not usable images and files that must be ignored."""
    formats = ("jpg", "png", "webp", "bmp", "gif", "JPEG")
    colours = ("red", "green", "blue", "yellow")
    for i in range(n):
        folder = root / ("" if i % 3 == 0 else f"trip{i % 3}") / ("deeper" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        make_photo(colours[i % 4], ("square", "stripes")[i % 2], i).save(
            folder / f"photo{i:03d}.{formats[i % len(formats)]}")
    if bad:
        (root / "notes.jpg").write_text("not a photo")
        (root / "trip1" / "empty.png").write_bytes(b"")
        import io
        whole = io.BytesIO()
        make_photo("blue", "square", 98).save(whole, format="JPEG")
        (root / "trip2" / "cut.jpg").write_bytes(whole.getvalue()[:300])
        (root / "readme.txt").write_text("ignored: not a photo extension")
        (root / "._photo000.jpg").write_bytes(b"macOS resource fork: hidden, ignored")
        (root / ".thumbnails").mkdir()
        make_photo("red", "square", 99).save(root / ".thumbnails" / "t.jpg")
    return root


BAD = {"notes.jpg": "not an image", "trip1/empty.png": "empty", "trip2/cut.jpg": "truncated"}


def load(model_dir: Path):
    from captioner import Captioner
    from conftest import PixelEncoder
    return Captioner.load(model_dir, encoder=PixelEncoder())


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_path(records: list[dict]) -> dict[str, dict]:
    paths = [r["path"] for r in records]
    assert len(paths) == len(set(paths)), "a photo appears twice"
    return {r["path"]: r for r in records}


def assert_same_records(got: dict[str, dict], want: dict[str, dict]) -> None:
    """Same photos, same captions word for word; scores equal to the 4 decimals written
    (a different batch split may move the last digit of a BLAS sum)."""
    assert got.keys() == want.keys()
    for path, record in want.items():
        other = got[path]
        assert list(other) == list(record), path
        assert {k: other[k] for k in ("path", "model", "beam", "error")} == \
               {k: record[k] for k in ("path", "model", "beam", "error")}, path
        assert [c["caption"] for c in other["captions"]] == [c["caption"] for c in record["captions"]], path
        for a, b in zip(other["captions"], record["captions"]):
            assert a["finished"] == b["finished"]
            assert a["log_prob"] == pytest.approx(b["log_prob"], abs=2e-4)
            assert a["normalized_log_prob"] == pytest.approx(b["normalized_log_prob"], abs=2e-4)


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """A folder and the records of one uninterrupted local run over it."""
    from captioner.batch.folder import caption_dir
    folder = make_folder(tmp_path_factory.mktemp("ref") / "photos")
    out = folder.parent / "captions.jsonl"
    summary = caption_dir(load(tiny_model), folder, out, batch_size=4, progress=False)
    assert (summary.photos, summary.captioned, summary.failed) == (27, 24, 3)
    return folder, by_path(read_lines(out))


def test_a_folder_that_cannot_be_listed_is_named_not_skipped_silently(tmp_path, monkeypatch, capsys):
    from captioner.batch.folder import BatchError, find_photos
    (tmp_path / "open").mkdir()
    (tmp_path / "locked").mkdir()
    (tmp_path / "open" / "a.jpg").write_bytes(b"")
    (tmp_path / "locked" / "b.jpg").write_bytes(b"")
    scandir = os.scandir

    def refusing(path="."):  # what a folder without read permission does (tests may run as root)
        if Path(path).name == "locked" or Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)
    monkeypatch.setattr(os, "scandir", refusing)
    denied = None
    assert find_photos(tmp_path) == ["open/a.jpg"]
    assert capsys.readouterr().err == (f"warning: {tmp_path / 'locked'}: cannot list the folder (Permission "
                                       "denied); its photos are left out.\n")
    denied = tmp_path
    with pytest.raises(BatchError, match=f"^{tmp_path}: cannot list the folder \\(Permission denied\\).$"):
        find_photos(tmp_path)


def test_one_record_per_photo_with_captions_or_an_error(reference):
    folder, records = reference
    from captioner.batch.folder import RECORD_KEYS, find_photos
    assert list(records) == find_photos(folder) and len(records) == 27
    assert not any(p.startswith(".") or "/." in p for p in records)  # hidden files skipped
    assert {p.rsplit(".", 1)[1] for p in records} == {"jpg", "png", "webp", "bmp", "gif", "JPEG"}
    for path, record in records.items():
        assert tuple(record) == RECORD_KEYS
        assert record["model"] == "merge" and record["beam"] == 3
        if path in BAD:
            assert record["captions"] == [] and record["error"].startswith(f"{path}: ")
            assert BAD[path] in record["error"]
        else:
            assert record["error"] is None and len(record["captions"]) == 1
            caption = record["captions"][0]
            assert set(caption) == {"caption", "log_prob", "normalized_log_prob", "finished",
                                    "trust", "verdict", "signals", "reasons"}
            assert caption["trust"] is None  # the tiny model has no trust estimate
            assert caption["caption"] and caption["log_prob"] < 0
    texts = {r["captions"][0]["caption"] for r in records.values() if r["captions"]}
    assert len(texts) >= 2  # the captions depend on the photo


def test_bad_files_are_counted_and_reported_and_the_run_goes_on(tiny_model, tmp_path, capsys):
    from captioner.batch.folder import caption_dir, describe
    folder = make_folder(tmp_path / "photos", n=6)
    out = tmp_path / "captions.jsonl"
    summary = caption_dir(load(tiny_model), folder, out, batch_size=2, progress=False)
    assert (summary.captioned, summary.failed, summary.failed_in_output) == (6, 3, 3)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert sorted(errors) == sorted(f"error: {r['error']}" for r in read_lines(out) if r["error"])
    assert "3 have an error record" in describe(summary, out)

    # A re-run does nothing, but still says the output holds failures.
    again = caption_dir(load(tiny_model), folder, out, progress=False)
    assert (again.captioned, again.failed, again.already_done, again.failed_in_output) == (0, 0, 9, 3)
    # Fixed files are captioned again with --retry-errors, each still on one line only.
    make_photo("red", "square", 1).save(folder / "notes.jpg", format="JPEG")
    fixed = caption_dir(load(tiny_model), folder, out, retry_errors=True, progress=False)
    assert (fixed.captioned, fixed.failed, fixed.failed_in_output) == (1, 2, 2)
    records = by_path(read_lines(out))
    assert len(records) == 9 and records["notes.jpg"]["error"] is None


def test_torn_last_line_is_truncated_and_redone(reference, tiny_model, tmp_path, capsys):
    from captioner.batch.folder import caption_dir
    folder, want = reference
    out = tmp_path / "captions.jsonl"
    lines = [json.dumps(want[p]) + "\n" for p in list(want)[:10]]
    torn = json.dumps(want[list(want)[10]])[:37]
    for tail in (torn, '{"pa', lines[9].rstrip("\n")):  # cut, cut early, whole but no newline
        out.write_text("".join(lines[:9]) + tail)
        summary = caption_dir(load(tiny_model), folder, out, batch_size=4, progress=False)
        assert "last line was torn" in capsys.readouterr().err
        assert summary.already_done == 9 and summary.captioned + summary.failed == 18
        assert out.read_text().endswith("\n")
        assert_same_records(by_path(read_lines(out)), want)


def test_an_output_that_is_not_ours_is_refused(reference, tiny_model, tmp_path):
    from captioner.batch.folder import BatchError, caption_dir
    from captioner.batch.resumable_jsonl import OutputFileError
    folder, want = reference
    out = tmp_path / "captions.jsonl"
    first = next(iter(want.values()))
    out.write_text("garbage\n" + json.dumps(first) + "\n")
    with pytest.raises(OutputFileError, match="line 1 is not a caption record"):
        caption_dir(load(tiny_model), folder, out, progress=False)
    assert out.read_text().startswith("garbage\n")  # left as it was
    # Another file named by mistake, even of one line: a whole line, or one that does not begin
    # as a record does, is no torn append, so the file is left as it was.
    for text in ('{"a": 1}\n', '{"a": 1}', json.dumps(first) + "\n{not json at all}\n"):
        out.write_text(text)
        with pytest.raises(OutputFileError, match="is not a caption record"):
            caption_dir(load(tiny_model), folder, out, progress=False)
        assert out.read_text() == text
    out.write_text(json.dumps(dict(first, beam=5)) + "\n")
    with pytest.raises(BatchError, match="with model merge at beam 5, not model merge at beam 3;"):
        caption_dir(load(tiny_model), folder, out, progress=False)
    with pytest.raises(BatchError, match="not a folder"):
        caption_dir(load(tiny_model), tmp_path / "missing", tmp_path / "x.jsonl", progress=False)


def test_two_runs_cannot_write_one_output(reference, tiny_model, tmp_path):
    from captioner.batch.resumable_jsonl import OutputFileError, ResumableJsonl
    with ResumableJsonl(tmp_path / "captions.jsonl"):
        with pytest.raises(OutputFileError, match="another caption-dir is writing it"):
            with ResumableJsonl(tmp_path / "captions.jsonl"):
                pass


def run_helper(*args) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", RAY_USAGE_STATS_ENABLED="0")
    return subprocess.Popen([sys.executable, str(HELPER), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stopped(proc) -> bool:
    """Whether `proc` is stopped by a signal (its state in /proc is T)."""
    try:
        stat = Path(f"/proc/{proc.pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_sigkill_at_any_point_then_resume_loses_and_repeats_nothing(reference, tiny_model, tmp_path):
    folder, want = reference
    out = tmp_path / "captions.jsonl"
    # 27 photos in batches of 4: killed once 8 lines are written, then once 20 are. The helper
    # stops itself there (SIGSTOP), so the kill lands mid-run however slow the machine is.
    for kill_after in (8, 20):
        proc = run_helper("local", tiny_model, folder, out, 0.0, kill_after)
        deadline = time.time() + 180
        while not stopped(proc) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert stopped(proc), "it did not stop to be killed: " + ("" if proc.poll() is None else proc.stderr.read())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert kill_after <= count_lines(out) < 27
    proc = run_helper("local", tiny_model, folder, out, 0.0)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["already_done"] >= 20 and summary["failed_in_output"] == 3
    assert_same_records(by_path(read_lines(out)), want)


def test_ray_engine_writes_the_same_records_as_the_local_one(reference, tiny_model, tmp_path):
    try:
        import ray  # noqa: F401
    except ImportError:
        message = "Ray is not installed (requirements.txt pins it; `make test` installs it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    import shutil
    reference_folder, want = reference
    folder = tmp_path / "photos"
    shutil.copytree(reference_folder, folder, symlinks=True)
    # A name that is not UTF-8 (Arrow's strings cannot hold it): left out with a warning
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as photo:
        photo.write((folder / sorted(want)[0]).read_bytes())
    outdir = tmp_path / "ray-out"
    proc = run_helper("ray", tiny_model, folder, outdir)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "warning: 1 file name(s) are not valid UTF-8" in stderr and "'caf\\udce9.jpg'" in stderr
    summary = json.loads(stdout.splitlines()[-1])
    assert (summary["photos"], summary["captioned"], summary["failed"]) == (27, 24, 3)
    assert sorted(summary["errors"]) == sorted(r["error"] for r in want.values() if r["error"])
    records = [r for f in sorted(outdir.iterdir()) for r in read_lines(f)]
    assert_same_records(by_path(records), want)


@pytest.mark.integration
def test_cli_captions_a_folder_of_real_photos_and_resumes(tmp_path, shared_data, trained_dir):
    from captioner.vision.encoder import cached_weights_path
    from conftest import require
    require(cached_weights_path(), "Xception weights (run `make setup`)")
    names = (shared_data / "Flickr8k_text" / "Flickr_8k.testImages.txt").read_text().split()[:3]
    folder = tmp_path / "photos"
    (folder / "album").mkdir(parents=True)
    for name in names:  # symlinks: the dataset is never copied
        (folder / "album" / name).symlink_to(shared_data / "Flicker8k_Dataset" / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "captions.jsonl"

    def cli(*extra):
        return subprocess.run([sys.executable, "-m", "captioner", "caption-dir", folder, "--out", out,
                               "--top", "2", "--batch-size", "2", *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    result = cli()
    assert result.returncode == 1, result.stderr  # one photo failed
    assert "Traceback" not in result.stderr
    assert "error: broken.png: " in result.stderr
    assert "4 photos; this run captioned 3 and failed on 1" in result.stderr
    records = by_path(read_lines(out))
    assert sorted(records) == ["album/" + n for n in sorted(names)] + ["broken.png"]
    for name in names:
        record = records[f"album/{name}"]
        # the default model: the best committed one by test CIDEr
        assert record["model"] == trained_dir.name and record["beam"] == 3 and len(record["captions"]) == 2
        assert 3 <= len(record["captions"][0]["caption"].split()) <= 25

    again = cli()
    assert again.returncode == 1 and "this run captioned 0" in again.stderr
    assert "4 were already done" in again.stderr
    assert read_lines(out) == list(records.values())
    wrong = subprocess.run([sys.executable, "-m", "captioner", "caption-dir", tmp_path / "nope",
                            "--out", out], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 2 and wrong.stderr.strip() == f"error: {tmp_path / 'nope'}: not a folder."
