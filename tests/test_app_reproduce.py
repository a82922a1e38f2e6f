"""'Reproduce this view in Python' (ui/reproduce.py), in AppTest on the tiny world of test_app.py: the code a
page shows runs as shown and rebuilds what the page shows (the heatmap, the metric cards, the answers), the
case-report command runs through the CLI, and an uploaded clip gets an explanation instead of code."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
from test_app import (  # noqa: F401  (fixtures: world, navigation_mode)
    BENCHMARK,
    EXPLORER,
    INTERVENTIONS,
    QUESTIONS,
    _app,
    _arr,
    _fig,
    _run,
    _texts,
    _widget,
    _wav_bytes,
    navigation_mode,
    world,
)

ROOT = Path(__file__).resolve().parents[1]


def _shown_code(at, language: str) -> list[str]:
    return [c.value for c in at.main.code if c.proto.language == language]


def _exec(code: str, monkeypatch) -> dict:
    """Run a page's snippet as a notebook cell would (Figure.show made a no-op); its namespace."""
    import plotly.graph_objects as go

    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: None)
    ns: dict = {}
    exec(compile(code, "<reproduce>", "exec"), ns)  # noqa: S102 - the page's own snippet, under test
    return ns


def test_explorer_snippet_rebuilds_the_page(world, monkeypatch):
    from lsl_core.viz import VALUE_DIGITS

    at = _app(EXPLORER)
    _widget(at.slider, "Layer ℓ").set_value(1)
    _widget(at.radio, "Metric").set_value("distance")
    _widget(at.radio, "Alignment path").set_value("dtw")
    _widget(at.number_input, "Other questions (controls)").set_value(2)  # of 3 others: the choice matters
    _run(at)
    (code,) = _shown_code(at, "python")
    assert "ControlOptions(partners=2)" in code
    assert world["ids"][0] in code and world["roots"]["tiny-step10"] in code and "path='dtw'" in code
    ns = _exec(code, monkeypatch)
    a = ns["a"]
    assert a.path_method == "dtw" and ns["sample"].id == world["ids"][0]
    page = _heatmap_any(at)
    np.testing.assert_allclose(_arr(ns["fig"].to_dict()["data"][0]["z"]), _arr(page["data"][0]["z"]), atol=1e-9)
    np.testing.assert_allclose(_arr(page["data"][0]["z"]), a.dist[1], atol=1e-5)  # layer 1, distance
    assert f"{a.aps_cos:.{VALUE_DIGITS}f}" == [m for m in at.metric if m.label == "APS (cosine)"][0].value
    from ui.controls import delta  # the card's delta: specific alignment and the mismatched mean

    card = [m for m in at.metric if m.label == "APS (cosine)"][0]
    assert not card.delta  # DTW values: the argmax path's controls are not put under them (ui.controls.for_path)
    _widget(at.radio, "Alignment path").set_value("argmax")
    _run(at)
    (code,) = _shown_code(at, "python")
    ns = _exec(code, monkeypatch)
    card = [m for m in at.metric if m.label == "APS (cosine)"][0]
    assert card.delta and card.delta == delta(ns["sc"], "aps_cos")  # the snippet's controls are the page's
    assert delta(sample_controls_with(ns, 3), "aps_cos") != card.delta  # a third partner would show otherwise


def sample_controls_with(ns: dict, partners: int):
    """The snippet's clip controls with another number of partner questions."""
    from lsl_core.analysis_controls import sample_controls
    from lsl_core.metrics.controls import ControlOptions

    return sample_controls(ns["model"], ns["sample"], ns["samples"].questions(), ControlOptions(partners=partners))


def _heatmap_any(at) -> dict:
    """The frames x tokens heatmap whatever its path method."""
    from test_app import _figs

    found = [f for f in _figs(at)
             if any(str(t.get("name", "")).startswith("alignment path i*_j") for t in f["data"])]
    assert found, "no frames x tokens heatmap on the page"
    return found[0]


@pytest.mark.parametrize("frames,pairing,label", [("Bottom-k", "path", "angle:bottom3"),
                                                   ("Random-k", "other", "angle:random3:other")])
def test_interventions_snippet_and_command_give_the_page_answers(world, monkeypatch, tmp_path, frames, pairing,
                                                                 label):
    at = _app(INTERVENTIONS)
    _widget(at.number_input, "Max new tokens").set_value(4)
    _widget(at.checkbox, "Cascade baseline (ASR → LLM)").uncheck()
    _widget(at.radio, "Frames").set_value(frames)
    _widget(at.radio, "Pairing").set_value(pairing)
    _run(at)
    at.button(key="iv_run").click()
    _run(at)
    (code,) = _shown_code(at, "python")
    (command,) = _shown_code(at, "bash")
    assert f"{label!r}" in code and "max_new_tokens=4" in code and "cascade=False" in code
    ns = _exec(code, monkeypatch)
    shown = [i.value for i in at.info][:3]  # text, speech, intervened answer cards
    assert [r["answer"] or "∅ (empty answer)" for r in ns["result"].rows()] == shown
    if pairing == "other":  # edited with the next different question of the set, named in the edited-tokens line
        sample = ns["sample"]
        assert ns["donor"] != sample.question and ns["donor"] in ns["samples"].questions()
        edited = ns["result"].interventions[0]
        assert edited.tokens == [] and edited.token_text and all(t.startswith("other: ") for t in edited.token_text)
        assert "edited tokens: 'other: " in _texts(at)

    args = shlex.split(command)
    assert args[:4] == ["python", "-m", "lsl_core", "report-case"] and "--no-cascade" in args
    from lsl_core.cli import main

    out = tmp_path / "case.html"
    assert main([*args[3:], "--out", str(out)]) == 0
    html = out.read_text(encoding="utf-8")
    for answer in shown:
        assert answer.replace("'", "&#x27;") in html


def test_upload_explains_instead_of_code(world):
    at = _app(EXPLORER)
    _widget(at.sidebar.selectbox, "Sample set").set_value("upload")
    _run(at)
    at.sidebar.file_uploader[0].set_value(("clip.wav", _wav_bytes(1.5), "audio/wav"))
    _widget(at.sidebar.text_input, "Question (what the clip says)").set_value("who wrote hamlet ?")
    _run(at)
    _heatmap_any(at)  # the page itself works on the upload
    assert _shown_code(at, "python") == []
    assert "An uploaded clip has no path to name here" in _texts(at)


def test_paths_inside_the_working_directory_are_relative(monkeypatch):
    from ui import reproduce

    monkeypatch.chdir(ROOT)
    ckpt = ROOT / "assets" / "checkpoints" / "embedded-untrained"
    cmd = reproduce.report_command(ckpt, f"folder:{ROOT / 'my clips'}", "q1", condition="angle:all@2",
                                   max_new=8, cascade=True, path="dtw")
    assert shlex.split(cmd) == ["python", "-m", "lsl_core", "report-case", "--checkpoint",
                                "assets/checkpoints/embedded-untrained", "--samples", "folder:my clips", "--sample",
                                "q1", "--intervention", "angle:all@2", "--tokens", "8", "--path", "dtw"]
    outside = reproduce.explorer_code("/elsewhere/ckpt", "sd-qa-mini", "x", path="argmax", layer=3,
                                      metric="cosine", partners=5)
    assert "load_checkpoint('/elsewhere/ckpt')" in outside and "load_sample_set('sd-qa-mini')" in outside


def test_cka_snippet_rebuilds_the_sample_and_set_matrices(world, monkeypatch):
    from test_app import CKA, _fig

    from lsl_core.analysis import AnalysisOptions, analyze_sample
    from test_app import _model, _sample

    model, s = _model(world), _sample(world, world["ids"][0])
    mats = [analyze_sample(model, s, AnalysisOptions(cka=True, cka_path="distance", cka_path_layer=ell),
                           cache=False).cka for ell in range(model.num_layers + 1)]
    # a path layer whose matrix differs from its neighbour's, so the comparison below can tell layers apart
    layer = next(ell for ell in range(1, len(mats)) if not np.allclose(mats[ell], mats[ell - 1], atol=1e-6))
    at = _app(CKA)
    _widget(at.radio, "Alignment path").set_value("distance")
    _widget(at.slider, "Path taken at layer").set_value(layer)
    _widget(at.number_input, "Samples").set_value(4)
    _run(at)
    at.button(key="cka_run").click()
    _run(at)
    (code,) = _shown_code(at, "python")
    assert f"cka_path='distance', cka_path_layer={layer}," in code
    assert world["ids"][3] in code and world["ids"][4] not in code  # the set: the first 4 samples
    ns = _exec(code, monkeypatch)
    for method in ("argmax", "dtw"):
        page = _fig(at, f"distance {method} path at layer")
        np.testing.assert_allclose(ns["cka"][method], _arr(page["data"][0]["z"]), atol=1e-9)
        np.testing.assert_allclose(ns["null"][f"{method} path: shuffled pairing (null)"][0],  # the null's mean
                                   _arr(page["data"][0]["customdata"])[..., 0], atol=1e-9)
    page_null = {t["name"]: _arr(t["y"]) for t in _fig(at, "with the frame-token pairs shuffled")["data"]}
    for name, (M, _, _) in ns["null"].items():
        np.testing.assert_allclose(np.diagonal(M), page_null[name], atol=1e-9)
    res = ns["res"]
    assert res.n == 4
    np.testing.assert_allclose(res.mean_cka, _arr(_fig(at, "Aligned CKA, mean over 4 samples")["data"][0]["z"]),
                               atol=1e-9)
    [shown] = [t for t in _fig(at, "spread over the 4 samples")["data"]
               if t["name"] == "shuffled pairing (null), mean over 4"]
    np.testing.assert_allclose(np.diagonal(res.mean_cka_null), _arr(shown["y"]), atol=1e-9)


def _gap_fits_shown(at):
    """The page's R² table of GAP vs the alignment means (not the controls section's)."""
    from lsl_core.results import GAP_X

    shown = [d.value for d in at.dataframe if {"metric", "r2"} <= set(d.value.columns)
             and d.value["metric"].isin((*GAP_X, "step")).all()]
    assert len(shown) == 1, "one R² table of GAP vs alignment on the page"
    return shown[0].reset_index(drop=True)


def test_checkpoints_snippet_rebuilds_the_gap_fits(world, monkeypatch, tmp_path):
    import pandas as pd
    from test_app import CHECKPOINTS, _live_alignment

    from lsl_core.viz import display_table

    at = _live_alignment(_app(CHECKPOINTS), 2)
    _widget(at.radio, "Fit one line per").set_value("family")
    _run(at)
    _, code = _shown_code(at, "python")  # the scores across training, then the GAP fits
    assert "analyze_checkpoints(" in code and "by = ('family',)" in code
    assert world["ids"][1] in code and world["ids"][2] not in code  # the live sweep's 2 samples
    ns = _exec(code, monkeypatch)
    fits = ns["fits"]
    assert set(fits["metric"]) - {"step"} and set(fits["metric"]) <= {"seq_cos_mean", "seq_dist_mean", "aps_cos",
                                                                       "aps_dist", "step"}
    assert "step" in set(fits["metric"]) and fits[["r2_lo", "r2_hi", "p_perm", "r2_added"]].notna().any().all()
    pd.testing.assert_frame_equal(display_table(fits).reset_index(drop=True), _gap_fits_shown(at))
    # the snippet's live rows carry the aligned CKA the page draws across training
    from lsl_core.results import checkpoint_means

    means = checkpoint_means(ns["rows"]).set_index("checkpoint")
    drawn = _fig(at, "aligned CKA (speech layer a vs text layer a) across training")["data"]
    for t in drawn:
        col = "cka_null_diag_mean" if t["name"].endswith("shuffled-pairing null") else "cka_diag_mean"
        np.testing.assert_allclose(_arr(t["y"]), means.loc[list(t["text"]), col].to_numpy(), atol=1e-9)

    # the same rows stored as `analyze` writes them: the page reads them, and so does its snippet
    import shutil

    stored = tmp_path / "results"
    shutil.copytree(world["root"] / "results", stored)
    ns["rows"].to_parquet(stored / "analysis.parquet", index=False)
    monkeypatch.setenv("LSL_RESULTS_DIR", str(stored))
    at = _app(CHECKPOINTS)
    assert _widget(at.radio, "Alignment metrics from").value == "stored results"
    _widget(at.radio, "Fit one line per").set_value("family")
    _run(at)
    _, code = _shown_code(at, "python")
    assert "rows = res.alignment" in code and "analyze_checkpoints(" not in code and str(stored) in code
    stored_fits = _exec(code, monkeypatch)["fits"]
    pd.testing.assert_frame_equal(display_table(stored_fits).reset_index(drop=True), _gap_fits_shown(at))
    pd.testing.assert_frame_equal(stored_fits, fits)  # stored or live, the same rows give the same fits


def test_checkpoints_snippet_rebuilds_the_scores_across_training(world, monkeypatch):
    import json

    from test_app import CHECKPOINTS

    at = _app(CHECKPOINTS)
    _widget(at.radio, "Score").set_value("containment")
    _run(at)
    code = _shown_code(at, "python")[0]  # the first snippet: the scores across training
    assert "score_trends(" in code and "'gap_containment'" in code and "with_intervals(" in code
    ns = _exec(code, monkeypatch)
    for col, title in (("gap_containment", "GAP (containment, text − speech) across training"),
                       ("speech_containment", "speech-input containment across training")):
        ours = json.loads(ns["viz"].trend_curves(ns["rows"], col).to_json())["data"]
        page = _fig(at, title)["data"]
        assert [t["name"] for t in ours] == [t["name"] for t in page] and len(ours) >= 2  # one line per trajectory
        for t, pt in zip(ours, page):
            np.testing.assert_allclose(_arr(t["y"]), _arr(pt["y"]), atol=1e-9)
            assert ("error_y" in t) == ("error_y" in pt)
            if "error_y" in t:
                np.testing.assert_allclose(_arr(t["error_y"]["array"]), _arr(pt["error_y"]["array"]), atol=1e-9)
    assert any("error_y" in t for t in ours), "the intervals are what the snippet must rebuild"
    # the agreement curve with its answer-style baseline, drawn by the page when the cascade was evaluated
    ours = json.loads(ns["viz"].trend_curves(ns["rows"], "agreement", baseline="agreement_other_q",
                                             baseline_label="answer style (other questions)").to_json())["data"]
    page = _fig(at, "speech vs text answer agreement")["data"]
    assert [t["name"] for t in ours] == [t["name"] for t in page] and any("answer style" in t["name"] for t in ours)
    for t, pt in zip(ours, page):
        np.testing.assert_allclose(_arr(t["y"]), _arr(pt["y"]), atol=1e-9)


def test_benchmark_draws_the_nulls_across_stored_checkpoints(world, monkeypatch, tmp_path):
    """A second stored run on another checkpoint: the page draws the pairs both runs hold in training order,
    and its snippet rebuilds the same lines and intervals."""
    import json
    import shutil

    from test_app import _model

    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.table1 import evaluate_interventions

    stored = tmp_path / "results"
    shutil.copytree(world["root"] / "results", stored)
    model = _model(world, "tiny-step20")
    rows = evaluate_interventions(model, list(load_sample_set(world["spec"]))[:2],
                                  ["angle:all", "angle:all:shuffled", "angle:all:other"], 4, donors=[QUESTIONS[1]] * 2)
    rows.insert(0, "checkpoint", model.name)
    rows.to_parquet(stored / "later_interventions.parquet", index=False)
    monkeypatch.setenv("LSL_RESULTS_DIR", str(stored))
    at = _app(BENCHMARK)
    page = _fig(at, "Each intervention against its nulls across training (agreement)")
    assert [t["name"] for t in page["data"]] == ["Angle·All vs Angle·All (shuffled pairing)",
                                                "Angle·All vs Angle·All (other question)"]  # held by both runs
    assert all(list(t["x"]) == ["tiny-step10", "tiny-step20"] for t in page["data"])  # by training step
    code = next(c for c in _shown_code(at, "python") if "nulls_across(" in c)
    assert "'tiny-step10': 10" in code and "'tiny-step20': 20" in code
    ns = _exec(code, monkeypatch)
    ours = json.loads(ns["viz"].intervention_nulls_across(ns["across"], "agreement").to_json())["data"]
    for t, pt in zip(ours, page["data"]):
        assert t["name"] == pt["name"]
        np.testing.assert_allclose(_arr(t["y"]), _arr(pt["y"]), atol=1e-9)
        np.testing.assert_allclose(_arr(t["error_y"]["array"]), _arr(pt["error_y"]["array"]), atol=1e-9)
    assert not [s for s in at.selectbox if s.label == "Edit layer ℓ (across training)"]  # one edit layer stored

    # layer sweeps on both checkpoints: one edit layer at a time, ℓ 0 first; the snippet picks the same layer
    from lsl_core.experiments.layer_profile import at_layers

    for name in ("tiny-step10", "tiny-step20"):
        m = _model(world, name)
        sweep = evaluate_interventions(m, list(load_sample_set(world["spec"]))[:2],
                                       at_layers(["angle:all", "angle:all:shuffled"], [0, 1]), 4)
        sweep.insert(0, "checkpoint", m.name)
        sweep.to_parquet(stored / f"sweep-{name}_interventions.parquet", index=False)
    at = _app(BENCHMARK)
    layer = _widget(at.selectbox, "Edit layer ℓ (across training)")
    assert layer.options == ["ℓ 0", "ℓ 1"] and layer.value == 0
    layer.set_value(1)
    _run(at)
    page = _fig(at, "Each intervention against its nulls across training, edits at ℓ 1")
    assert [t["name"] for t in page["data"]] == ["Angle·All @ℓ1 vs Angle·All @ℓ1 (shuffled pairing)"]
    code = next(c for c in _shown_code(at, "python") if "nulls_across(" in c)
    assert "layer=1" in code
    ns = _exec(code, monkeypatch)
    ours = json.loads(ns["viz"].intervention_nulls_across(ns["across"], "agreement").to_json())["data"]
    assert [t["name"] for t in ours] == [t["name"] for t in page["data"]]
    np.testing.assert_allclose(_arr(ours[0]["y"]), _arr(page["data"][0]["y"]), atol=1e-9)


def test_benchmark_draws_interventions_across_layers(world, monkeypatch, tmp_path):
    """A stored layer sweep (table1 --layers): the default run points to it; picked, the page draws each
    intervention across layers against its nulls (an independent paired Δ), and its snippet rebuilds the figure.
    Live, the layers box runs the conditions at each layer; a bad box says what to type and keeps the page."""
    import json
    import shutil

    from test_app import _model

    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.layer_profile import at_layers
    from lsl_core.experiments.table1 import evaluate_interventions

    stored = tmp_path / "results"
    shutil.copytree(world["root"] / "results", stored)
    model = _model(world)
    rows = evaluate_interventions(model, list(load_sample_set(world["spec"]))[:3],
                                  at_layers(["angle:all", "angle:all:shuffled", "length:all"], [0, 1]), 4)
    rows.insert(0, "checkpoint", model.name)
    rows["agreement"] = np.random.default_rng(0).uniform(size=len(rows))  # the tiny model's answers hardly move
    rows.to_parquet(stored / "table1-layers_interventions.parquet", index=False)
    monkeypatch.setenv("LSL_RESULTS_DIR", str(stored))
    at = _app(BENCHMARK)
    assert "Interventions across layers are stored in the run(s) **table1-layers**" in _texts(at)
    run = _widget(at.selectbox, "Checkpoint (stored intervention results)")
    run.set_value(next(o for o in run.options if o.startswith("table1-layers")))
    _run(at)
    fig = _fig(at, "Angle·All across layers")
    assert [t["name"] for t in fig["data"]] == ["Angle·All − unedited speech", "Angle·All − shuffled pairing"]
    own = rows[rows.condition.isin(["angle:all", "angle:all@1"])].set_index(["condition", "sample_id"])["agreement"]
    for t, null in zip(fig["data"], ("original", "angle:all:shuffled")):
        assert [int(c[4]) for c in t["customdata"]] == [0, 1]  # the layer (x is dodged around it)
        for ell, y in zip((0, 1), _arr(t["y"])):  # Δ = mean over samples of condition − comparison, in points
            cond = "angle:all" if ell == 0 else "angle:all@1"
            other = null if null == "original" or ell == 0 else "angle:all@1:shuffled"
            base = rows[rows.condition == other].set_index("sample_id")["agreement"]
            assert y == pytest.approx(100 * (own[cond] - base).mean(), abs=1e-9)
    _widget(at.selectbox, "Intervention across layers").set_value("Length·All")
    _run(at)
    assert [t["name"] for t in _fig(at, "Length·All across layers")["data"]] == ["Length·All − unedited speech"]
    code = next(c for c in _shown_code(at, "python") if "layer_profile(" in c)
    assert "intervention='Length·All'" in code
    ns = _exec(code, monkeypatch)
    ours = json.loads(ns["viz"].intervention_layers(ns["profile"], "agreement", intervention="Length·All")
                      .to_json())["data"]
    page = _fig(at, "Length·All across layers")["data"]
    for t, pt in zip(ours, page):
        np.testing.assert_allclose(_arr(t["y"]), _arr(pt["y"]), atol=1e-9)
        np.testing.assert_allclose(_arr(t["error_y"]["array"]), _arr(pt["error_y"]["array"]), atol=1e-9)

    # live: the box runs the conditions at each layer
    at = _app(BENCHMARK)
    _widget(at.text_input, "Edit layers ℓ").set_value("0, x")
    _run(at)
    assert any("give whole numbers" in e.value for e in at.error) and not at.exception
    _widget(at.text_input, "Edit layers ℓ").set_value("0, 1")
    _widget(at.number_input, "Samples").set_value(1)
    _widget(at.multiselect, "Conditions").set_value(["angle:bottom3"])
    _widget(at.number_input, "Max new tokens").set_value(4)
    _run(at)
    [btn] = [b for b in at.button if b.label.startswith("Run 2 interventions on 1 sample")]  # ℓ 0 and ℓ 1
    btn.click()
    _run(at)
    assert [t["name"] for t in _fig(at, "Angle·Bottom3 across layers")["data"]] == ["Angle·Bottom3 − unedited speech"]
    *_, live = _shown_code(at, "python")
    assert "['angle:bottom3', 'angle:bottom3@1']" in live and "layer_profile(rows)" in live


def _bars(fig: dict) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """(name, heights, error-bar half widths) of each bar trace of a figure's JSON."""
    out = []
    for t in fig["data"]:
        err = t.get("error_y", {}).get("array")
        out.append((t.get("name"), _arr(t["y"]), None if err is None else _arr(err)))
    return out


def _same_bars(ours, page) -> None:
    assert [n for n, *_ in ours] == [n for n, *_ in page]
    for (_, y, e), (_, py, pe) in zip(ours, page):
        np.testing.assert_allclose(y, py, atol=1e-9)
        assert (e is None) == (pe is None)
        if e is not None:
            np.testing.assert_allclose(e, pe, atol=1e-9)


def test_benchmark_snippets_rebuild_scores_and_intervention_tables(world, monkeypatch):
    import json

    at = _app(BENCHMARK)
    scores, stored = _shown_code(at, "python")  # scores per voice, stored Table 1 (live: after a run)
    assert "with_intervals(" in scores and "'tiny-step10'" in scores
    ns = _exec(scores, monkeypatch)
    page = _fig(at, "tiny-step10: text vs speech f1 per voice")
    _same_bars(_bars(json.loads(ns["viz"].scores_by_voice(ns["rows"], "f1").to_json())), _bars(page))
    assert all(e is not None for *_, e in _bars(page))  # the intervals are what the snippet must rebuild

    ns = _exec(stored, monkeypatch)
    assert "table1_with_intervals(" in stored and len(ns["rows"]) == len(ns["iv"])  # one stored run
    # the bars leave the nulls out (they are drawn against their interventions below), and so does the snippet
    assert "without_nulls(t, rows)" in stored
    bars = json.loads(ns["viz"].intervention_bars(ns["without_nulls"](ns["t"], ns["rows"]), "F1").to_json())
    _same_bars(_bars(bars), _bars(_fig(at, "Speech-input F1 under each intervention")))
    shown = list(_fig(at, "Speech-input F1 under each intervention")["data"][0]["x"])
    n_nulls = ns["rows"]["condition"].str.contains("random|:shuffled|:other").groupby(ns["rows"]["condition"]).any()
    assert len(shown) == len(ns["t"]) - int(n_nulls.sum()) > 1 and shown[0] == "Original"
    assert not [c for c in shown if "Random" in c or c.endswith(("(shuffled pairing)", "(other question)"))]
    _widget(at.checkbox, "Bars for the nulls too").check()
    _run(at)
    _, stored_all = _shown_code(at, "python")
    assert "without_nulls" not in stored_all
    ns_all = _exec(stored_all, monkeypatch)
    _same_bars(_bars(json.loads(ns_all["viz"].intervention_bars(ns_all["t"], "F1").to_json())),
               _bars(_fig(at, "Speech-input F1 under each intervention")))
    assert len(_fig(at, "Speech-input F1 under each intervention")["data"][0]["x"]) == len(ns["t"])
    ours = json.loads(ns["viz"].intervention_nulls(ns["nulls"], "agreement").to_json())["data"]
    page = _fig(at, "Each intervention against its nulls (agreement)")["data"]
    assert [t["name"] for t in ours] == [t["name"] for t in page] == ["null: random", "null: shuffled pairing",
                                                                       "null: other question"]
    from lsl_core.metrics import diagnostics

    note = diagnostics.intervention_null_note(ns["nulls"])  # the page names the pairs a null matches
    matched = ((ns["nulls"]["Δ agreement_lo"] <= 0) & (ns["nulls"]["Δ agreement_hi"] >= 0)).any()
    assert (note is not None) == bool(matched)
    if note is not None:
        assert note.message in _texts(at)
    for t, pt in zip(ours, page):
        assert t["y"] == pt["y"]
        np.testing.assert_allclose(_arr(t["x"]), _arr(pt["x"]), atol=1e-9)
        np.testing.assert_allclose(_arr(t["error_x"]["array"]), _arr(pt["error_x"]["array"]), atol=1e-9)

    from test_app import _live_interventions

    _live_interventions(at)
    *_, live = _shown_code(at, "python")
    assert "evaluate_interventions(" in live and "['angle:bottom3']" in live and "max_new_tokens=4" in live
    assert world["ids"][0] in live and world["roots"]["tiny-step10"] in live
    ns = _exec(live, monkeypatch)
    page = _fig(at, "speech-input F1 per condition (1 sample, 95% CI)")
    _same_bars(_bars(json.loads(ns["viz"].intervention_bars(ns["t"], "F1").to_json())), _bars(page))
    assert list(ns["rows"]["condition"]) == ["original", "angle:bottom3"]

    # live with nulls: the first two samples share a question, so the :other null takes the set's next one
    _widget(at.number_input, "Samples").set_value(2)
    _widget(at.multiselect, "Conditions").set_value(["angle:bottom3", "angle:random3", "angle:bottom3:other"])
    _run(at)
    [btn] = [b for b in at.button if b.label.startswith("Run 3 interventions on 2 samples")]
    btn.click()
    _run(at)
    *_, live = _shown_code(at, "python")
    assert "donors_for(" in live and "donors=donors" in live
    ns = _exec(live, monkeypatch)
    assert set(ns["rows"]["donor_question"]) == {QUESTIONS[1]}
    page = _fig(at, "each intervention against its nulls (agreement, 2 samples)")["data"]
    ours = json.loads(ns["viz"].intervention_nulls(ns["nulls"], "agreement").to_json())["data"]
    assert [t["name"] for t in ours] == [t["name"] for t in page] == ["null: random", "null: other question"]
    for t, pt in zip(ours, page):
        np.testing.assert_allclose(_arr(t["x"]), _arr(pt["x"]), atol=1e-9)
    live_bars = _fig(at, "speech-input F1 per condition (2 samples, 95% CI)")  # the live bars leave the nulls out
    assert list(live_bars["data"][0]["x"]) == ["Original", "Angle·Bottom3"] and "without_nulls(t, rows)" in live
    _same_bars(_bars(json.loads(ns["viz"].intervention_bars(ns["without_nulls"](ns["t"], ns["rows"]),
                                                            "F1").to_json())), _bars(live_bars))
