"""Issue 13 in the app (AppTest on the tiny world of test_app.py): the alignment path choice (argmax |
DTW) on the Explorer and the Interventions page, the logit-lens grid with its layer filter, the norm
curves, argmax vs DTW side by side and the stability figure on the CKA page, the case-report download,
and a 60 s upload that renders as a binned heatmap."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from test_app import (  # noqa: F401  (fixtures: world, navigation_mode)
    CKA,
    EXPLORER,
    INTERVENTIONS,
    _app,
    _arr,
    _fig,
    _figs,
    _model,
    _run,
    _sample,
    _texts,
    _widget,
    navigation_mode,
    world,
)


def _heatmap(at) -> dict:
    found = [f for f in _figs(at) if any(str(t.get("name", "")).startswith("alignment path i*_j") for t in f["data"])]
    assert found, "no frames x tokens heatmap on the page"
    return found[0]


def test_explorer_dtw_path_norm_curves_and_logit_lens(world):
    from lsl_core.analysis import AnalysisOptions, analyze_sample, lens_sample

    at = _app(EXPLORER)
    model = _model(world)
    L = model.num_layers
    s = _sample(world, world["ids"][0])
    ref = analyze_sample(model, s, AnalysisOptions(path="dtw"), cache=False)
    _widget(at.radio, "Alignment path").set_value("dtw")
    _run(at)
    fig = _heatmap(at)
    centres = np.asarray(ref.frame_times) + ref.frame_seconds / 2
    np.testing.assert_allclose(_arr(fig["data"][1]["y"]), centres[ref.path_cos[L // 2]], atol=1e-6)
    assert fig["data"][1]["name"] == "alignment path i*_j (dtw)" and at.query_params["path"] == "dtw"
    norms = _fig(at, "Token norms and standardized distance")
    np.testing.assert_allclose(_arr(norms["data"][2]["y"]), ref.std_dist, rtol=1e-6)
    from lsl_core.viz import VALUE_DIGITS

    assert f"{ref.aps_cos:.{VALUE_DIGITS}f}" == [m for m in at.metric if m.label == "APS (cosine)"][0].value

    # the logit lens: off until asked, then the grid over the layer filter's layers
    assert not [f for f in _figs(at) if "Logit lens" in f["layout"]["title"]["text"]]
    _widget(at.select_slider, "Layer filter (curves and logit lens)").set_value((1, L))
    at.toggle[0].set_value(True)
    _run(at)
    grid = _fig(at, "Logit lens over the speech frames")
    lens = lens_sample(model, s, k=5, layers=list(range(1, L + 1)), path="dtw", metric="cosine")
    np.testing.assert_array_equal(_arr(grid["data"][0]["y"]), np.arange(1, L + 1))
    np.testing.assert_allclose(_arr(grid["data"][0]["z"]), np.log10(lens.speech_rank), atol=1e-9)
    assert np.asarray(grid["data"][0]["customdata"])[0][0] == lens.speech_top[0, 0, 0].strip() or "␣"
    assert at.query_params["lens"] == "1"
    seq = _fig(at, "Sequence level")
    assert seq["layout"]["xaxis"]["range"] == [0.5, L + 0.5]  # the layer filter limits the curves too


def test_sixty_second_upload_renders_binned(world):
    at = _app(EXPLORER)
    _widget(at.sidebar.selectbox, "Sample set").set_value("upload")
    _run(at)
    buf = io.BytesIO()  # 60 s at 8 kHz, 16-bit: 0.96 MB, under the tiny world's 1 MB upload limit
    t = np.arange(60 * 8000) / 8000
    sf.write(buf, (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), 8000, format="WAV", subtype="PCM_16")
    at.sidebar.file_uploader[0].set_value(("minute.wav", buf.getvalue(), "audio/wav"))
    _widget(at.sidebar.text_input, "Question (what the clip says)").set_value("who wrote hamlet ?")
    _run(at)
    fig = _heatmap(at)
    assert "600 frames shown in 200 bins" in fig["layout"]["title"]["text"]
    assert np.shape(_arr(fig["data"][0]["z"]))[0] == 200
    assert not at.error


def test_cka_page_argmax_vs_dtw_and_stability(world):
    from lsl_core.analysis import AnalysisOptions, analyze_sample, analyze_stability
    from lsl_core.data.sets import load_sample_set

    at = _app(CKA)
    model = _model(world)
    s = _sample(world, world["ids"][0])
    L = model.num_layers
    for method in ("argmax", "dtw"):
        ref = analyze_sample(model, s, AnalysisOptions(cka_path_layer=L // 2, path=method), cache=False)
        fig = _fig(at, f"cosine {method} path at layer {L // 2}")
        np.testing.assert_allclose(_arr(fig["data"][0]["z"]), ref.cka, atol=1e-6)
        np.testing.assert_array_equal(_arr(fig["data"][1]["x"]), ref.cka.argmax(axis=1))  # the band
    assert "argmax vs DTW for this sample: Pearson r" in _texts(at)

    _widget(at.number_input, "Samples").set_value(4)
    _run(at)
    at.button(key="cka_stability_run").click()
    _run(at)
    ids = world["ids"][:4]
    ref = analyze_stability(model, [load_sample_set(world["spec"])[i] for i in ids])
    fig = _fig(at, "Stability of the cross-layer CKA")
    np.testing.assert_allclose(_arr(fig["data"][0]["z"]), ref.summary.correlation, atol=1e-9)
    for k, label in enumerate(ref.summary.labels):
        np.testing.assert_array_equal(_arr(fig["data"][1 + k]["y"]), ref.summary.band[k])
    dtw = _fig(at, "Aligned CKA, dtw · cosine · path@middle, mean over 4 samples")
    np.testing.assert_allclose(_arr(dtw["data"][0]["z"]), ref.matrices["dtw · cosine · path@middle"], atol=1e-9)


def test_interventions_case_report_download(world, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    deferred: dict[str, object] = {}  # file name -> the callable the button runs on a click
    add = MediaFileManager.add_deferred

    def record(self, data_callable, mimetype, coordinates, file_name=None, **kw):
        deferred[file_name] = data_callable
        return add(self, data_callable, mimetype, coordinates, file_name=file_name, **kw)

    monkeypatch.setattr(MediaFileManager, "add_deferred", record)
    at = _app(INTERVENTIONS)
    _widget(at.number_input, "Max new tokens").set_value(4)
    _widget(at.checkbox, "Cascade baseline (ASR → LLM)").uncheck()
    _run(at)
    assert not at.get("download_button") or all(b.proto.label != "Case report (HTML)" for b in at.get("download_button"))
    at.button(key="iv_run").click()
    _run(at)
    (btn,) = [b for b in at.get("download_button") if b.proto.label == "Case report (HTML)"]
    assert btn.proto.deferred_file_id  # built only on a click: run the registered callable as the click would
    (name,) = [n for n in deferred if n and n.startswith("case_")]
    assert name.endswith("angle_bottom3.html")
    page = deferred[name]()
    from test_case_report import _figure_json, _Sections

    from lsl_core.case_report import SECTIONS

    p = _Sections()
    p.feed(page)
    assert p.sections == list(SECTIONS) and p.external == []
    assert p.cards == ["text", "speech", "angle:bottom3"]
    for answer in [i.value for i in at.info][:3]:  # the answers shown on the page are the report's
        assert answer.replace("'", "&#x27;") in page
    s = _sample(world, world["ids"][0])
    assert s.question in page and "--intervention angle:bottom3 --tokens 4 --no-cascade" in page
    from lsl_core.analysis import analyze_sample

    a = analyze_sample(_model(world), s, cache=False)
    z = _arr(_figure_json(page, "fig-heatmap")["data"][0]["z"])
    np.testing.assert_allclose(z, a.cos[0], atol=1e-5)
