"""The case report opened from a file:// URL in a real headless Chromium with the network cut off: every
section is shown, the embedded audio decodes to the clip's length, the Plotly figures render (heatmap
with the edited-frame boxes, the curves), the answers are side by side. A screenshot is saved to
$LSL_SCREENSHOTS (default artifacts/screenshots/). Uses Debian's /usr/bin/chromium, the tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import tone

from lsl_core.data.samples import Sample

pytestmark = [pytest.mark.browser]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def report_file(tiny_model, tmp_path_factory) -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh) to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    from lsl_core.case_report import report_case

    sample = Sample(id="case", audio=tone(2.5), sr=16_000, question="who wrote hamlet in one short sentence ?",
                    answers=("shakespeare",), accent="espeak:en-gb")
    path = tmp_path_factory.mktemp("report") / "case report.html"  # a space: the URL must be encoded
    path.write_text(report_case(tiny_model, sample, "angle:bottom3", max_new_tokens=4, cascade=False),
                    encoding="utf-8")
    return path


def test_report_opens_offline_from_file_url_with_every_section(report_file):
    from playwright.sync_api import expect, sync_playwright

    from lsl_core.case_report import SECTIONS

    shots = Path(os.environ.get("LSL_SCREENSHOTS", ROOT / "artifacts" / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def block(route):
            url = route.request.url
            if url.startswith(("file:", "data:", "blob:")):
                route.continue_()
            else:
                outside.append(url)
                route.abort()

        page.route("**/*", block)
        try:
            page.goto(report_file.as_uri(), wait_until="load")
            for sec in SECTIONS:
                expect(page.locator(f"section#{sec}")).to_be_visible()
                assert page.locator(f"section#{sec} h2").inner_text().strip()
            # audio: the embedded WAV decodes to the clip's 2.5 s
            duration = page.evaluate("""() => new Promise((resolve) => {
                const a = document.querySelector('section#audio audio');
                if (a.readyState >= 1) return resolve(a.duration);
                a.addEventListener('loadedmetadata', () => resolve(a.duration));
                a.addEventListener('error', () => resolve(-1));
                a.load(); })""")
            assert duration == pytest.approx(2.5, abs=0.01)
            # question and answers side by side
            expect(page.locator("section#question")).to_contain_text("who wrote hamlet")
            cards = page.locator("section#answers .card")
            assert cards.count() == 3  # text, speech, Angle·Bottom3 (no cascade for the random tiny ASR)
            expect(cards.nth(2)).to_contain_text("Angle·Bottom3")
            boxes = [cards.nth(k).bounding_box() for k in range(3)]
            assert boxes[0]["y"] == pytest.approx(boxes[2]["y"], abs=2) and boxes[0]["x"] < boxes[2]["x"]
            # figures rendered by the inlined Plotly
            page.locator("#fig-heatmap .heatmaplayer").wait_for(state="visible", timeout=30_000)
            assert page.locator("#fig-heatmap .shapelayer path").count() >= 2  # edited-frame boxes
            for div in ("fig-sequence", "fig-tokenwise", "fig-norms"):
                page.locator(f"#{div} .main-svg").first.wait_for(state="visible", timeout=30_000)
                assert page.locator(f"#{div} .scatterlayer .trace").count() >= 1
            assert page.locator("section#metrics table").count() == 2
            expect(page.locator("section#metrics")).to_contain_text("APS (cosine)")
            page.screenshot(path=str(shots / "case_report.png"), full_page=True)
        finally:
            browser.close()
    assert outside == [], f"the report tried to load {outside}"
    assert errors == [], errors
    assert (shots / "case_report.png").stat().st_size > 10_000
