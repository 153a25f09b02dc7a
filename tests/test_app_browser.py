"""The web app in a real browser: `python -m app.serve` (`make run`) as a subprocess, driven by Chromium.

Needs Debian's chromium (`apt-get install chromium`) and the Python playwright package;
the screenshots it takes are the ones in docs/ (the caption page, its explanations, the
dataset and training pages). The dataset page is photographed on its Statistics tab, so that
no Flickr8k photo ends up in the repository.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.serve import server_command, stop_server, wait_until_healthy
from app_fixtures import (assert_plausible_caption, model_vocabulary, models_with_attention,
                          photo_png)
from conftest import IN_CI, ROOT, require

pytestmark = pytest.mark.integration
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
UPLOADER = '[data-testid="stFileUploaderDropzoneInput"]'
DOCS = ROOT / "docs"
VIEWPORT = {"width": 1280, "height": 1500}
SESSIONS = 8
CAPTION_TIMEOUT_MS = 180_000   # 8 sessions, and the other test worker, share 2 cores


@dataclass
class Server:
    url: str
    log: Path

    def log_problems(self) -> list[str]:
        text = self.log.read_text(errors="replace")
        return [line for line in text.splitlines()
                if re.search(r"Traceback|Exception|\bERROR\b|Error:", line)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    require(Path(CHROMIUM), "Chromium (`make setup` installs it)")
    if importlib.util.find_spec("playwright") is None:
        message = "the playwright package is missing (pip install -r requirements.txt)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def server(trained_dir, shared_data, chromium, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    # The committed models (merge, attention and their ensemble, the default), as trained/ holds them.
    models = models_with_attention(tmp_path_factory.mktemp("models") / "trained", trained_dir)
    env = dict(os.environ, CAPTIONER_MODEL_DIR=str(models), CAPTIONER_DATA_DIR=str(shared_data),
               PYTHONUNBUFFERED="1")
    # As `make run` serves it: app.serve loads the models, then runs `streamlit run`.
    with open(log, "wb") as out:
        process = subprocess.Popen(server_command(sys.executable, port), cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        problem = wait_until_healthy(process, url, timeout=60)
        if problem:
            pytest.fail(f"{problem}:\n{log.read_text()}")
        yield Server(url, log)
    finally:
        stop_server(process)


@pytest.fixture(scope="module")
def vocabulary(trained_dir) -> set[str]:
    return model_vocabulary(trained_dir)


def _photo_file(tmp_path: Path, name: str, flip: bool = False) -> Path:
    path = tmp_path / f"{name}{'-flipped' if flip else ''}.png"
    path.write_bytes(photo_png(name, flip))
    return path


def wait_until_idle(page) -> None:
    """Until the script run is over (Streamlit shows a Stop button while it runs)."""
    from playwright.sync_api import expect
    expect(page.get_by_role("button", name="Stop")).to_have_count(0, timeout=60_000)


def test_caption_dataset_and_training_pages(server, chromium, vocabulary, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    photo = _photo_file(tmp_path, "camera")  # the README shows this one
    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(server.url)
            page.locator(UPLOADER).set_input_files(photo)
            for beam in (1, 3, 5):
                heading = page.locator(f".st-key-beam-{beam} :is(h3, em)").first
                expect(heading).to_be_visible(timeout=CAPTION_TIMEOUT_MS)
                assert_plausible_caption(heading.inner_text().strip(), vocabulary)
                expect(page.locator(f".st-key-beam-{beam} table")).to_be_visible()
            wait_until_idle(page)
            expect(page.get_by_text("Encoded just now.")).to_be_visible()
            expect(page.locator('[data-testid="stSidebar"]')).to_contain_text("Image encoder ready")
            page.screenshot(path=DOCS / "screenshot-caption.png")

            page.get_by_role("link", name="Flickr8k dataset").click()
            expect(page.get_by_text(re.compile(r"^8,000 photos match"))).to_be_visible(timeout=60_000)
            search = page.get_by_label("Search captions")
            search.fill("red shirt")
            search.press("Enter")
            expect(page.get_by_text(re.compile(r"^\d+ photos match"))).to_be_visible(timeout=30_000)
            expect(page.locator('[data-testid="stSidebar"]')).to_contain_text("Model in use")
            page.get_by_role("tab", name="Statistics").click()
            expect(page.get_by_text("Most frequent words")).to_be_visible()
            expect(page.locator('[data-testid="stVegaLiteChart"]')).to_have_count(4, timeout=30_000)
            wait_until_idle(page)
            page.wait_for_timeout(1000)  # let the charts draw
            page.screenshot(path=DOCS / "screenshot-dataset.png")

            page.get_by_role("link", name="Training").click()
            expect(page.get_by_text("Test scores by beam width")).to_be_visible(timeout=60_000)
            # 2 charts for a model trained before validation CIDEr was recorded, 4 with the
            # self-critical phase: wait for the last heading and the first chart.
            expect(page.get_by_text("Provenance")).to_be_visible(timeout=30_000)
            expect(page.locator('[data-testid="stVegaLiteChart"]').first).to_be_visible(timeout=30_000)
            expect(page.locator('[data-testid="stSidebar"]')).to_contain_text("Model in use")
            wait_until_idle(page)
            page.wait_for_timeout(1000)
            page.screenshot(path=DOCS / "screenshot-training.png")
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
    assert not server.log_problems(), server.log_problems()


def test_attention_figure_beam_trees_and_three_photos_at_once(server, chromium, tmp_path):
    import csv

    from playwright.sync_api import expect, sync_playwright

    photos = [_photo_file(tmp_path, name) for name in ("camera", "astronaut", "coffee")]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
            page.goto(server.url)
            page.locator(UPLOADER).set_input_files(photos[0])
            expect(page.locator(".st-key-beam-3 :is(h3, em)").first).to_be_visible(timeout=CAPTION_TIMEOUT_MS)
            # the beam trees of widths 1 and 5, drawn by Graphviz in the browser
            expect(page.locator('[data-testid="stGraphVizChart"] svg')).to_have_count(2, timeout=60_000)
            expect(page.locator('[data-testid="stGraphVizChart"] svg').last).to_contain_text("end")
            page.get_by_text("attention", exact=True).click()
            # exact: the ensemble's heading ("..., in the ensemble") is on screen until the rerun
            # replaces it, and an element found then is detached under the test's feet
            attention_heading = page.get_by_text("Where the attention model looked", exact=True)
            expect(attention_heading).to_be_visible(timeout=CAPTION_TIMEOUT_MS)
            # the slider comes after the grid, and the chosen word's figure after the slider
            expect(page.get_by_text("Show one word large")).to_be_visible(timeout=CAPTION_TIMEOUT_MS)
            # the grid: the photo and one panel per word (the run that draws it may still be
            # starting, with the ensemble's figure already cleared, when the button is gone)
            page.wait_for_function("() => [...document.querySelectorAll('[data-testid=stImage] img')]"
                                   ".some(img => img.naturalWidth > 1000)", timeout=CAPTION_TIMEOUT_MS)
            wait_until_idle(page)
            attention_heading.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            page.screenshot(path=DOCS / "screenshot-explain.png")

            page.get_by_role("link", name="Caption many photos").click()
            # Wait for the new page's uploader (it takes several files); the caption page's
            # single-file uploader may still be on screen for a moment after the click.
            page.wait_for_url("**/many")
            page.locator(f"{UPLOADER}[multiple]").wait_for(state="attached", timeout=CAPTION_TIMEOUT_MS)
            page.locator(UPLOADER).set_input_files(photos)
            expect(page.get_by_text("3 captioned, 0 could not be read", exact=False)).to_be_visible(
                timeout=CAPTION_TIMEOUT_MS)
            wait_until_idle(page)
            with page.expect_download() as download:
                page.get_by_role("button", name="Download CSV").click()
            with open(download.value.path(), newline="") as handle:
                rows = list(csv.DictReader(handle))
            assert [r["file"] for r in rows] == [p.name for p in photos]
            assert all(r["caption"] and not r["error"] for r in rows)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
    assert not server.log_problems(), server.log_problems()


def test_concurrent_sessions_all_get_captions(server, chromium, vocabulary, tmp_path):
    from playwright.async_api import async_playwright

    names = ["chelsea", "coffee", "astronaut", "rocket", "motorcycle", "camera", "chelsea", "coffee"]
    photos = [_photo_file(tmp_path, name, flip=i >= 6) for i, name in enumerate(names[:SESSIONS])]

    async def session(browser, photo: Path) -> str:
        context = await browser.new_context(viewport={"width": 1100, "height": 900})
        try:
            page = await context.new_page()
            await page.goto(server.url, timeout=CAPTION_TIMEOUT_MS)  # 8 sessions share 2 cores
            await page.locator(UPLOADER).set_input_files(photo)
            heading = page.locator(".st-key-beam-3 :is(h3, em)").first
            await heading.wait_for(timeout=CAPTION_TIMEOUT_MS)
            # the explanations under load too: both beam trees drawn
            trees = page.locator('[data-testid="stGraphVizChart"] svg')
            await trees.nth(1).wait_for(timeout=CAPTION_TIMEOUT_MS)
            assert await page.locator('[data-testid="stException"]').count() == 0
            # No alert but the familiarity warning, which these non-Flickr8k photos may earn,
            # and, on a machine without the nearest-photo index, the note saying how to build it.
            alerts = page.locator('[data-testid="stAlert"]')
            unexpected = (alerts.filter(has_not_text="unlike the photos the model learned from")
                          .filter(has_not_text="index-dataset"))
            assert await unexpected.count() == 0, await unexpected.all_inner_texts()
            return (await heading.inner_text()).strip()
        finally:
            await context.close()

    async def main() -> list[str]:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                return await asyncio.gather(*(session(browser, photo) for photo in photos))
            finally:
                await browser.close()

    captions = asyncio.run(main())
    assert len(captions) == SESSIONS
    for caption in captions:
        assert_plausible_caption(caption, vocabulary)
    assert not server.log_problems(), server.log_problems()
