"""End to end in a real headless Chromium: `streamlit run app.py` on the shipped default model; a user
opens the landing page, goes to the Sample Explorer, sees the heatmap, picks another sample, applies
the Bottom3 angle projection on the Interventions page and regenerates. Screenshots are saved to
$LSL_SCREENSHOTS (default artifacts/screenshots/) to look at.

Uses Debian's /usr/bin/chromium (never downloads a browser). Marker `browser`; skipped with a reason
when Chromium or Playwright is missing. Slow: loads the embedded model (tens of seconds on 2 cores).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HEATMAP = '[data-testid="stPlotlyChart"] .heatmaplayer'
LOAD_TIMEOUT_MS = 300_000  # first model conversion on a fresh machine + the analysis, on 2 busy cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh) to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("LSL_ZOO", "LSL_DEFAULT_CHECKPOINT", "LSL_SAMPLE_SET", "LSL_RESULTS_DIR"):
        env.pop(k, None)  # the shipped defaults
    log = open(ROOT / ".pytest_cache" / "streamlit_e2e.log", "w") if (ROOT / ".pytest_cache").is_dir() else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"streamlit did not start (exit code {proc.poll()}); see .pytest_cache/streamlit_e2e.log")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            log.close()


@pytest.fixture(scope="module")
def shots() -> Path:
    out = Path(os.environ.get("LSL_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def _sidebar_values(page) -> dict:
    """Label -> shown value of the sidebar's select boxes."""
    return page.evaluate("""() => Object.fromEntries(Array.from(document.querySelectorAll(
        '[data-testid="stSidebar"] input[role=combobox]')).map(e => [e.getAttribute('aria-label'), e.value]))""")


def _question(page) -> str:
    return page.locator('[data-testid="stMarkdownContainer"]', has_text="Question (text input):").first.inner_text()


def _shot(page, path: Path) -> None:
    """A screenshot of the whole page: Streamlit scrolls inside its main block, so grow the viewport first."""
    height = page.evaluate("""() => {
        const b = document.querySelector('[data-testid="stMainBlockContainer"]');
        return b ? Math.ceil(b.getBoundingClientRect().height + 120) : 1100; }""")
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height), 6000))})
    page.wait_for_timeout(800)  # plotly relayout
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)


def _wait_idle(page, timeout_ms: int = LOAD_TIMEOUT_MS) -> None:
    """Until Streamlit's 'running' indicator is gone (the script run finished)."""
    page.wait_for_timeout(300)
    page.locator('[data-testid="stStatusWidget"]').wait_for(state="detached", timeout=timeout_ms)


def test_user_reaches_heatmap_and_regenerates_with_bottom3_angle(server, shots):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            # landing page -> Sample Explorer -> heatmap
            t0 = time.perf_counter()
            page.goto(server, wait_until="domcontentloaded")
            expect(page.get_by_role("heading", name="Modality Gap Explorer")).to_be_visible(timeout=60_000)
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Sample Explorer").click()
            page.locator(HEATMAP).first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            print(f"\nlanding -> rendered heatmap: {time.perf_counter() - t0:.1f} s")
            expect(page.get_by_text("APS (cosine)")).to_be_visible()
            _wait_idle(page)
            _shot(page, shots / "1_sample_explorer.png")
            assert "sample=" in page.url and "layer=" in page.url

            # pick another sample in the sidebar
            before = _question(page)
            model = _sidebar_values(page)["Checkpoint"]
            assert model.startswith("lora-step0400"), model  # the shipped default
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.locator('[data-testid="stSelectbox"]', has_text="Sample").last.click()
            page.get_by_role("option").nth(5).click()
            expect(page.locator('[data-testid="stMarkdownContainer"]', has_text="Question (text input):").first
                   ).not_to_have_text(before, timeout=LOAD_TIMEOUT_MS)
            page.locator(HEATMAP).first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            _wait_idle(page)
            _shot(page, shots / "2_sample_explorer_other_sample.png")
            after = _question(page)
            assert after != before
            assert _sidebar_values(page)["Checkpoint"] == model, _sidebar_values(page)

            # Interventions: angle projection of the Bottom3 path frames, regenerate
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Interventions").click()
            page.locator(HEATMAP).first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            _wait_idle(page)
            assert _question(page) == after  # the sidebar's sample survives the page switch
            page.get_by_text("angle", exact=True).click()
            page.get_by_text("Bottom-k", exact=True).click()
            k = page.get_by_label("k", exact=True)
            k.fill("3")
            k.press("Enter")
            tokens = page.get_by_label("Max new tokens")
            tokens.fill("16")
            tokens.press("Enter")
            _wait_idle(page)
            page.get_by_role("button", name="Regenerate").click()
            expect(page.get_by_text("Edited at layer ℓ = 0")).to_be_visible(timeout=LOAD_TIMEOUT_MS)
            for title in ("Text", "Speech", "Cascade (ASR → LLM)", "Angle·Bottom3"):
                expect(page.locator("strong", has_text=title).first).to_be_visible()
            _wait_idle(page)
            assert "iv=angle%3Abottom3" in page.url or "iv=angle:bottom3" in page.url
            page.mouse.move(5, 5)  # no tooltip in the screenshot
            _shot(page, shots / "3_interventions_bottom3_angle.png")
            page.locator('[data-testid="stPlotlyChart"]', has=page.locator(".heatmaplayer")).first.screenshot(
                path=str(shots / "4_heatmap_edited.png"))
            answers = page.locator('[data-testid="stAlertContentInfo"]').all_inner_texts()[:4]

            # the sidebar's link reopens the same model, sample, layer and intervention in a new session
            page.locator('[data-testid="stSidebar"]').get_by_text("Link to this view").click()
            link = page.locator('[data-testid="stSidebar"] [data-testid="stCode"]').inner_text().strip()
            assert "model=lora-step0400" in link and "iv=angle%3Abottom3" in link and "/Interventions?" in link
            other = browser.new_page(viewport={"width": 1500, "height": 1100})
            other.goto(link, wait_until="domcontentloaded")
            expect(other.get_by_text("Edited at layer ℓ = 0")).to_be_visible(timeout=LOAD_TIMEOUT_MS)
            _wait_idle(other)
            assert _question(other) == after
            assert other.locator('[data-testid="stAlertContentInfo"]').all_inner_texts()[:4] == answers
            other.close()
        finally:
            browser.close()
    for name in ("1_sample_explorer", "2_sample_explorer_other_sample", "3_interventions_bottom3_angle"):
        assert (shots / f"{name}.png").stat().st_size > 10_000


def _minute_of_questions(path: Path) -> str:
    """A 60 s 16 kHz WAV: eight shipped sd-qa-mini questions (en-gb voice) spoken one after the other with
    pauses, padded with silence to 60 s; returns their text joined (the typed question of the clip)."""
    import json

    import numpy as np
    import soundfile as sf

    from lsl_core.data.audio import load_audio_file, prepare_audio

    manifest = ROOT / "assets" / "sd-qa-mini" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["voice"] == "en-gb"][:8]
    clip, texts = np.zeros(60 * 16_000, np.float32), []
    at = 16_000
    for r in rows:
        a = prepare_audio(*load_audio_file(manifest.parent / r["audio"]))
        clip[at : at + a.size] = a
        at += a.size + 4 * 16_000  # 4 s of silence between questions
        texts.append(r["question"])
    assert at - 4 * 16_000 <= clip.size, "the questions do not fit in 60 s"
    sf.write(path, clip, 16_000, subtype="PCM_16")
    return " ".join(texts)


def test_sixty_second_upload_and_logit_lens_render_without_freezing(server, shots, tmp_path):
    """A 60 s clip (600 LLM frames) uploaded in the sidebar renders as a binned heatmap and the page stays
    responsive; the logit-lens grid renders for the shipped default sample."""
    from playwright.sync_api import expect, sync_playwright

    wav = tmp_path / "minute.wav"
    question = _minute_of_questions(wav)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            page.goto(server, wait_until="domcontentloaded")
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Sample Explorer").click()
            page.locator(HEATMAP).first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            _wait_idle(page)
            # the logit lens of the default sample: toggle on, the frames x layers grid appears
            page.get_by_text("Read every layer through the final norm and LM head").click()
            lens = page.locator('[data-testid="stPlotlyChart"]', has_text="Logit lens over the speech frames")
            lens.locator(".heatmaplayer").first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            _wait_idle(page)
            lens.first.scroll_into_view_if_needed()
            lens.first.screenshot(path=str(shots / "5_logit_lens.png"))

            # upload one minute of speech
            sidebar = page.locator('[data-testid="stSidebar"]')
            sidebar.locator('[data-testid="stSelectbox"]', has_text="Sample set").click()
            page.get_by_role("option", name=re.compile("Upload one clip")).click()
            _wait_idle(page)
            sidebar.locator('input[type="file"]').set_input_files(str(wav))
            q = sidebar.get_by_label("Question (what the clip says)")
            q.fill(question)
            q.press("Enter")
            t0 = time.perf_counter()
            title = page.locator('[data-testid="stPlotlyChart"] .gtitle', has_text="600 frames shown in 200 bins")
            title.first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            _wait_idle(page)
            print(f"\n60 s upload -> binned heatmap: {time.perf_counter() - t0:.1f} s")
            expect(page.get_by_text("Frames × tokens")).to_be_visible()
            # responsive: the main thread answers at once, and hovering a cell shows its exact values
            t1 = time.perf_counter()
            assert page.evaluate("() => 1 + 1") == 2
            heat = page.locator('[data-testid="stPlotlyChart"]', has=title).locator(".nsewdrag").first
            box = heat.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
            expect(page.locator(".hoverlayer .hovertext").first).to_contain_text("best: frame", timeout=10_000)
            print(f"hover answered in {time.perf_counter() - t1:.2f} s")
            _shot(page, shots / "6_sixty_second_clip.png")
        finally:
            browser.close()
