"""The case report: one self-contained HTML file (audio, question, answers, heatmap with path and edited
frames, curves, metrics) from the library and from `python -m lsl_core report-case`, checked as
parsed HTML here and opened from a file:// URL in headless Chromium (tests/test_browser_report.py)."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from lsl_core.data.samples import Sample

QUESTION = "who wrote hamlet in one short sentence ?"


class _Sections(HTMLParser):
    """Collects the ids of <section>, the <audio> src, <script src> and the answer cards."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.audio: list[str] = []
        self.external: list[str] = []
        self.cards: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "audio":
            self.audio.append(a.get("src", ""))
        if tag in ("script", "link", "img") and (a.get("src") or a.get("href")):
            self.external.append(a.get("src") or a.get("href"))
        if tag == "div" and "card" in (a.get("class") or ""):
            self.cards.append(a.get("data-condition", ""))


def _figure_json(page: str, div_id: str) -> dict:
    """The data/layout Plotly.newPlot receives for one figure div."""
    m = re.search(r'Plotly\.newPlot\(\s*"' + re.escape(div_id) + r'",\s*', page)
    assert m, f"no Plotly.newPlot for {div_id}"
    dec = json.JSONDecoder()
    data, end = dec.raw_decode(page, m.end())
    layout, _ = dec.raw_decode(page, re.compile(r",\s*").match(page, end).end())
    return {"data": data, "layout": layout}


def _array(x) -> np.ndarray:
    """A Plotly JSON array: a list, or a typed array {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(x, dict) and "bdata" in x:
        a = np.frombuffer(base64.b64decode(x["bdata"]), dtype=np.dtype(x["dtype"]))
        return a.reshape([int(n) for n in str(x["shape"]).split(",")]) if "shape" in x else a
    return np.asarray(x)


@pytest.fixture(scope="module")
def sample():
    return Sample(id="case", audio=tone(1.4), sr=16_000, question=QUESTION, answers=("shakespeare",),
                  accent="espeak:en-gb")


@pytest.fixture(scope="module")
def report(tiny_model, sample):
    from lsl_core.case_report import report_case

    return report_case(tiny_model, sample, "angle:bottom3", max_new_tokens=4, cascade=False)  # random tiny ASR


def test_report_holds_every_section_and_nothing_external(report):
    from lsl_core.case_report import SECTIONS

    p = _Sections()
    p.feed(report)
    assert p.sections == list(SECTIONS)
    assert p.external == []  # Plotly and the audio are inlined: opens offline
    assert report.count("<script") >= 1 and "Plotly.newPlot" in report
    assert len(report) > 3_000_000  # plotly.js itself is inlined (several MB)


def test_audio_is_the_clip(report, sample):
    p = _Sections()
    p.feed(report)
    (src,) = p.audio
    assert src.startswith("data:audio/wav;base64,")
    audio, sr = sf.read(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), dtype="float32")
    assert sr == 16_000 and audio.shape == sample.audio.shape
    np.testing.assert_allclose(audio, sample.audio, atol=1 / 32767 + 1e-6)  # 16-bit PCM


def test_answers_heatmap_and_metrics_come_from_the_analysis(tiny_model, report, sample):
    from lsl_core.analysis import analyze_sample
    from lsl_core.interventions import generate_side_by_side

    p = _Sections()
    p.feed(report)
    assert p.cards[:2] == ["text", "speech"] and p.cards[-1] == "angle:bottom3"
    sbs = generate_side_by_side(tiny_model, sample, ["angle:bottom3"], max_new_tokens=4, cascade=False)
    for a in sbs.answers():  # greedy: the same answers as a fresh generation
        assert f'<p class="answer">{a.answer or "∅ (empty answer)"}</p>'.replace("'", "&#x27;") in report
    a = analyze_sample(tiny_model, sample)
    fig = _figure_json(report, "fig-heatmap")
    z = _array(fig["data"][0]["z"]).astype(np.float64)
    np.testing.assert_allclose(z, a.cos[0], rtol=1e-6)  # layer 0 = the intervention's layer, cosine
    edited = sbs.interventions[0]
    boxes = [s for s in fig["layout"].get("shapes", []) if s.get("type") == "rect"]
    assert len(boxes) == 2 * len(edited.frames) > 0  # white + dashed black box per edited frame
    assert f"{a.aps_cos:.6f}" in report and f"{a.aps_dist:.6f}" in report
    assert QUESTION in report and "shakespeare" in report and "synthetic speech" in report
    for div in ("fig-sequence", "fig-tokenwise", "fig-norms"):
        assert _figure_json(report, div)["data"], div


def test_cli_writes_the_report(tiny_parts, tmp_path, capsys):
    from lsl_core.cli import main
    from lsl_core.model.loading import CheckpointManifest, write_manifest

    folder = tmp_path / "clips"
    folder.mkdir()
    sf.write(folder / "q0.wav", tone(1.2), 16_000)
    (folder / "questions.csv").write_text(f"file,question,answers\nq0.wav,{QUESTION},shakespeare\n")
    write_manifest(CheckpointManifest(name="tiny-cli", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                                      family="tiny", strategy="none", downsample=5, seed=1), tmp_path / "ckpt")
    out = tmp_path / "out" / "case.html"
    code = main(["report-case", "--checkpoint", str(tmp_path / "ckpt"), "--samples", f"folder:{folder}",
                 "--sample", "q0", "--intervention", "length:all", "--tokens", "3", "--path", "dtw", "--no-cascade",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0 and out.is_file() and "wrote" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    p = _Sections()
    p.feed(page)
    assert p.cards[-1] == "length:all" and "dtw path" in page
    assert main(["report-case", "--checkpoint", str(tmp_path / "ckpt"), "--samples", f"folder:{folder}",
                 "--sample", "nope", "--out", str(out)]) == 2  # a bad sample id: one line, exit 2
    assert "No sample with id 'nope'" in capsys.readouterr().err
