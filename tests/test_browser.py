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


# true once the app has been idle (script state 'notRunning', no status widget) for IDLE_HOLD_MS in a row:
# an action's rerun can start a few hundred ms after the action, so one idle glance is not enough
_IDLE_JS = """(hold) => {
    const app = document.querySelector('[data-testid="stApp"]');
    const busy = !app || app.getAttribute('data-test-script-state') !== 'notRunning'
        || document.querySelector('[data-testid="stStatusWidget"]') !== null;
    const now = performance.now();
    if (busy || window.__lslIdleSince === undefined) {
        window.__lslIdleSince = busy ? undefined : now;
        return false;
    }
    return now - window.__lslIdleSince >= hold;
}"""
IDLE_HOLD_MS = 1000


def _wait_idle(page, timeout_ms: int = LOAD_TIMEOUT_MS) -> None:
    """Until the script run has finished and no new one started for IDLE_HOLD_MS (Streamlit's
    `data-test-script-state` on stApp, and its 'running' status widget gone)."""
    page.evaluate("() => { window.__lslIdleSince = undefined; }")
    page.wait_for_function(_IDLE_JS, arg=IDLE_HOLD_MS, timeout=timeout_ms, polling=100)


def test_user_reaches_heatmap_and_regenerates_with_bottom3_angle(server, shots):
    from playwright.sync_api import expect, sync_playwright

    from lsl_core.model.loading import default_checkpoint, read_manifest

    default = read_manifest(default_checkpoint()).name  # the shipped default (latest LoRA checkpoint)
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
            # the metric tile, after the controls (the controls table below names the same score in a cell)
            expect(page.locator('[data-testid="stMetricLabel"]', has_text="APS (cosine)")).to_be_visible(
                timeout=LOAD_TIMEOUT_MS)
            _wait_idle(page)
            _shot(page, shots / "1_sample_explorer.png")
            assert "sample=" in page.url and "layer=" in page.url

            # pick another sample in the sidebar
            before = _question(page)
            model = _sidebar_values(page)["Checkpoint"]
            assert model.startswith(default), (model, default)
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

            # the view as Python: the expander at the page's end holds the calls with these settings
            page.get_by_text("Reproduce this view in Python").click()
            code = page.locator('[data-testid="stMain"] [data-testid="stCode"]')
            expect(code.first).to_be_visible()
            python, command = code.all_inner_texts()
            assert "generate_side_by_side(model, sample, ['angle:bottom3'], max_new_tokens=16" in python, python
            assert "report-case" in command and "--intervention angle:bottom3 --tokens 16" in command, command
            code.first.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "3b_reproduce_in_python.png"))

            # the sidebar's link reopens the same model, sample, layer and intervention in a new session
            page.locator('[data-testid="stSidebar"]').get_by_text("Link to this view").click()
            link = page.locator('[data-testid="stSidebar"] [data-testid="stCode"]').inner_text().strip()
            assert f"model={default}" in link and "iv=angle%3Abottom3" in link and "/Interventions?" in link
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


# ============================================================================ trustworthy views (issue 14)
def _wav_bytes(x) -> bytes:
    import io

    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(x, dtype=np.float32), 16_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _open(page, server: str, path: str) -> None:
    """Open a link to a page: the landing page first, so that a fresh server knows the app's pages (before
    app.py's st.navigation ran once, the browser shows 'Page not found' for a page URL)."""
    from playwright.sync_api import expect

    page.goto(server, wait_until="domcontentloaded")
    expect(page.get_by_role("heading", name="Modality Gap Explorer")).to_be_visible(timeout=LOAD_TIMEOUT_MS)
    page.goto(f"{server}/{path}", wait_until="domcontentloaded")


def _count_text(page, text: str) -> int:
    """How many rendered elements (alerts, captions, markdown) show `text` (each element counted once)."""
    return page.evaluate("""(t) => Array.from(document.querySelectorAll(
        '[data-testid="stAlertContainer"], [data-testid="stCaptionContainer"], [data-testid="stMarkdownContainer"]'))
        .filter(e => e.innerText.includes(t) && !Array.from(e.querySelectorAll('*')).some(
            c => c !== e && c.matches('[data-testid="stAlertContainer"], [data-testid="stCaptionContainer"], '
                                      + '[data-testid="stMarkdownContainer"]') && c.innerText.includes(t))).length""",
                         text)


def test_silence_and_bad_uploads_each_get_one_message(server, shots):
    import numpy as np
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            _open(page, server, "Sample_Explorer?set=upload")
            expect(page.get_by_text("This link was made from an uploaded clip")).to_be_visible(timeout=LOAD_TIMEOUT_MS)
            sidebar = page.locator('[data-testid="stSidebar"]')
            q = sidebar.get_by_label("Question (what the clip says)")
            q.fill("who wrote hamlet ?")
            q.press("Enter")
            _wait_idle(page)
            for name, data, message in (
                    ("silence.wav", _wav_bytes(np.zeros(1600)), "no speech energy"),
                    ("notes.wav", b"this is not audio at all" * 4, "Could not decode audio")):
                sidebar.locator('input[type="file"]').set_input_files(
                    files=[{"name": name, "mimeType": "audio/wav", "buffer": data}])
                expect(sidebar.get_by_text(message)).to_be_visible(timeout=LOAD_TIMEOUT_MS)
                # the main area's pointer renders later in the same run; wait for it before counting (an idle
                # stretch before the upload's rerun starts would end _wait_idle early)
                main = page.locator('[data-testid="stMain"]')
                expect(main.get_by_text("the message in the sidebar")).to_be_visible(timeout=LOAD_TIMEOUT_MS)
                _wait_idle(page)
                assert _count_text(page, message) == 1, f"{message!r} shown {_count_text(page, message)} times"
                assert _count_text(page, "the message in the sidebar") == 1
                assert "object at 0x" not in page.locator("body").inner_text()
                assert page.locator(HEATMAP).count() == 0  # nothing was analysed
            _shot(page, shots / "5_upload_refused.png")
            assert "WAV, FLAC, OGG or MP3" in sidebar.get_by_text("Could not decode audio").inner_text()
        finally:
            browser.close()


def test_collapsed_path_note_and_intervals_are_drawn(server, shots):
    import numpy as np
    from playwright.sync_api import expect, sync_playwright

    from lsl_core.analysis import analyze_sample
    from lsl_core.data.sets import load_sample_set
    from lsl_core.model.loading import load_checkpoint

    # the untrained stack's late-layer paths collapse onto a few frames (the trained ones no longer do):
    # find such a layer for the first sample with the library, then open that view by its link
    sample = load_sample_set("sd-qa-mini")[0]
    a = analyze_sample(load_checkpoint(ROOT / "assets" / "checkpoints" / "embedded-untrained"), sample)
    collapsed = np.nonzero(a.collapsed_cos)[0]
    assert collapsed.size, "expected a collapsed cosine path for the untrained stack"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            _open(page, server, f"Sample_Explorer?model=embedded-untrained&sample={sample.id}&layer={collapsed[0]}")
            page.locator(HEATMAP).first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            _wait_idle(page)
            expect(page.get_by_text("path is collapsed at").first).to_be_visible(timeout=LOAD_TIMEOUT_MS)
            assert page.locator(".legendtext", has_text="collapsed path").count() > 0  # marked on the ρ curve
            _shot(page, shots / "6_collapsed_note.png")
            # Benchmark: text / speech / GAP bars with 95% error bars from the stored per-sample results
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Benchmark").click()
            expect(page.get_by_text("95% CI").first).to_be_visible(timeout=LOAD_TIMEOUT_MS)
            _wait_idle(page)
            chart = page.locator('[data-testid="stPlotlyChart"]').first
            chart.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            assert chart.locator("g.errorbar").count() >= 3  # error bars drawn, one per bar
            _shot(page, shots / "7_benchmark_intervals.png")
            # the shipped Table 1 with its nulls: one marker and one horizontal 95% interval per (row, null) pair
            nulls = page.locator('[data-testid="stPlotlyChart"]', has_text="Each intervention against its nulls")
            nulls.first.scroll_into_view_if_needed()
            nulls.first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            assert nulls.first.locator("g.errorbar").count() >= 13  # the 13 nulls of the paper's six rows
            assert nulls.first.locator(".legendtext", has_text="null: shuffled pairing").count() == 1
            _shot(page, shots / "7b_intervention_nulls.png")
            # the stored runs on five checkpoints: the angle rows' five nulls across training, one interval per point
            across = page.locator('[data-testid="stPlotlyChart"]', has_text="against its nulls across training")
            across.first.scroll_into_view_if_needed()
            across.first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            assert across.first.locator("g.errorbar").count() >= 5 * 5
            _shot(page, shots / "7c_intervention_nulls_across.png")
            # the stored layer sweep: the default run names it; picked, Angle·All across 8 layers with 3 comparisons
            expect(page.get_by_text("Interventions across layers are stored in the run(s)")).to_be_visible()
            page.locator('[data-testid="stSelectbox"]', has_text="Checkpoint (stored intervention results)").click()
            page.keyboard.type("table1-layers · ")  # the select box filters its options by what is typed
            page.keyboard.press("Enter")
            layers = page.locator('[data-testid="stPlotlyChart"]', has_text="Angle·All across layers")
            layers.first.wait_for(state="visible", timeout=LOAD_TIMEOUT_MS)
            layers.first.scroll_into_view_if_needed()
            _wait_idle(page)
            assert layers.first.locator(".legendtext").count() == 3  # vs unedited, shuffled pairing, other question
            assert layers.first.locator("g.errorbar").count() >= 3
            _shot(page, shots / "7d_intervention_layers.png")
            # Checkpoints: scores across training with intervals; the title clears the toolbar's row
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Checkpoints").click()
            expect(page.get_by_text("Scores across training")).to_be_visible(timeout=LOAD_TIMEOUT_MS)
            _wait_idle(page)
            # the page draws its figures one after another; wait until at least 4 are drawn outside collapsed
            # expanders before looping over them (Plotly draws each chart after the run has sent it)
            page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="stPlotlyChart"]'))
                .filter(e => e.offsetParent !== null).length >= 4""", timeout=LOAD_TIMEOUT_MS)
            charts = page.locator('[data-testid="stPlotlyChart"]')
            assert charts.first.locator("g.errorbar").count() > 0
            checked = 0
            for k in range(charts.count()):  # 1-, 2- and 3-column rows: no title under the toolbar
                fig = charts.nth(k)
                fig.scroll_into_view_if_needed()
                if not fig.is_visible():  # inside a collapsed expander (e.g. word recall): not drawn
                    continue
                checked += 1
                fig.hover()
                page.wait_for_timeout(300)
                title = fig.locator(".gtitle").bounding_box()
                bar = fig.locator(".modebar-container").bounding_box()
                assert title and bar and title["y"] >= bar["y"] + bar["height"] - 1, (k, title, bar)
            assert checked >= 4, checked
            # GAP vs alignment: the fits' null baselines are explained, and each scatter's legend carries them
            expect(page.get_by_text("what a metric explains beyond it").first).to_be_visible(timeout=LOAD_TIMEOUT_MS)
            assert page.locator(".legendtext", has_text="null 95%").count() >= 3
            _shot(page, shots / "8_checkpoints_intervals.png")
        finally:
            browser.close()


def test_four_concurrent_sessions_each_receive_their_own_answers(server, shots):
    """Four tabs regenerate at once on the shared server: one batch (or two), every tab its own sample."""
    import re

    from playwright.sync_api import sync_playwright

    from lsl_core.data.sets import load_sample_set

    mini = load_sample_set("sd-qa-mini")
    ids = mini.ids()[5:25:5]  # four different questions (each is spoken by 5 voices in a row)
    layers = [21, 22, 23, 24]  # distinct conditions: nothing comes from a cache
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        pages = [browser.new_context(viewport={"width": 1300, "height": 1000}).new_page() for _ in ids]
        try:
            _open(pages[0], server, "")  # the app's pages are known to the server
            for pg, sid, ell in zip(pages, ids, layers):  # open all tabs (sync API: one thread), then wait
                pg.goto(f"{server}/Interventions?sample={sid}&iv=angle:bottom3@{ell}&tokens=8&cascade=0",
                        wait_until="commit")
            for pg, sid, ell in zip(pages, ids, layers):
                pg.locator("strong", has_text=f"Angle·Bottom3 @ℓ{ell}").first.wait_for(timeout=LOAD_TIMEOUT_MS)
            batches = []
            for k, (pg, sid, ell) in enumerate(zip(pages, ids, layers)):
                _wait_idle(pg)
                assert _question(pg).endswith(mini.record(sid).question), (sid, _question(pg))
                titles = [t for t in pg.locator("strong").all_inner_texts() if t.startswith("Angle·")]
                assert set(titles) == {f"Angle·Bottom3 @ℓ{ell}"}  # only this tab's condition (column + caption)
                text = pg.locator("body").inner_text()
                m = re.search(r"one batch with (\d+) other", text)
                batches.append(int(m.group(1)) + 1 if m else 1)
                pg.mouse.move(5, 5)
                if k == 0:
                    _shot(pg, shots / "9_concurrent_session.png")
            assert max(batches) >= 2, batches  # requests of different tabs were generated together
        finally:
            browser.close()


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
            expect(page.get_by_text("Frames × tokens").first).to_be_visible()
            # responsive: the main thread answers at once, and hovering a cell shows its exact values
            t1 = time.perf_counter()
            assert page.evaluate("() => 1 + 1") == 2
            heat = page.locator('[data-testid="stPlotlyChart"]', has=page.locator(".gtitle", has_text="600 frames shown in 200 bins")
                                ).locator(".nsewdrag").first
            box = heat.bounding_box()
            page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
            expect(page.locator(".hoverlayer .hovertext").first).to_contain_text("best: frame", timeout=10_000)
            print(f"hover answered in {time.perf_counter() - t1:.2f} s")
            _shot(page, shots / "6_sixty_second_clip.png")
        finally:
            browser.close()

