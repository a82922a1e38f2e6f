"""lsl_core.viz: figures show exactly the numbers they are given, with labelled axes, grey-safe colours,
hover text carrying value / time / token, the final-norm layer marked and edits highlighted."""

from __future__ import annotations

import re
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from plotly.colors import hex_to_rgb, sample_colorscale, unlabel_rgb

from lsl_core import viz
from lsl_core.metrics.gap import gap_r2_table


def _analysis(L=3, Ts=6, Tt=4, seed=0):
    """A SampleAnalysis-shaped record with hand-set arrays (the figures only read attributes)."""
    rng = np.random.default_rng(seed)
    cos = rng.uniform(-1, 1, (L + 1, Ts, Tt)).astype(np.float32)
    dist = rng.uniform(0, 5, (L + 1, Ts, Tt)).astype(np.float32)
    return SimpleNamespace(
        cos=cos, dist=dist, path_cos=cos.argmax(1), path_dist=dist.argmin(1),
        tokens=["When", " was", " it", "?"][:Tt], frame_times=np.arange(Ts) * 0.1, frame_seconds=0.1,
        seq_cos=np.linspace(0.1, 0.4, L + 1), seq_dist=np.linspace(3, 1, L + 1),
        spearman_cos=np.linspace(-0.5, 0.5, L + 1), spearman_dist=np.linspace(0.5, -0.5, L + 1),
        consistency=np.linspace(0, 1, L + 1),
    )


def _luminance(color: str) -> float:
    r, g, b = hex_to_rgb(color) if color.startswith("#") else unlabel_rgb(color)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def test_heatmap_shows_the_layer_matrix_path_and_hover():
    a = _analysis()
    fig = viz.token_heatmap(a, 2, "cosine")
    hm, path = fig.data[0], fig.data[1]
    np.testing.assert_array_equal(hm.z, a.cos[2])
    np.testing.assert_allclose(hm.y, a.frame_times + 0.05)  # frame centres in seconds
    assert list(fig.layout.xaxis.ticktext) == ["When", "was", "it", "?"]
    assert fig.layout.yaxis.title.text == "speech frame time (s)" and "token" in fig.layout.xaxis.title.text
    assert not hm.reversescale and _monotone_in_grey(hm.colorscale)  # bright = well aligned, readable in grey
    assert "%{z:.6f}" in hm.hovertemplate and "' was' (#1)" in hm.text[0][1] and "0.00–0.10 s" in hm.text[0][1]
    assert path.marker.symbol == "diamond"
    np.testing.assert_allclose(path.y, a.frame_times[a.path_cos[2]] + 0.05)
    np.testing.assert_allclose(path.customdata[:, 3], a.cos[2][a.path_cos[2], np.arange(4)], rtol=1e-6)
    assert "layer ℓ = 2 of 3" in fig.layout.title.text and "final norm" not in fig.layout.title.text
    assert not fig.layout.shapes


def test_heatmap_distance_final_layer_and_bad_layer():
    a = _analysis()
    fig = viz.token_heatmap(a, 3, "distance")
    np.testing.assert_array_equal(fig.data[0].z, a.dist[3])
    assert fig.data[0].reversescale  # bright = close, as for cosine
    np.testing.assert_allclose(fig.data[1].y, a.frame_times[a.path_dist[3]] + 0.05)
    assert "after final norm" in fig.layout.title.text
    assert "LLM input" in viz.token_heatmap(a, 0).layout.title.text
    with pytest.raises(ValueError, match="layer"):
        viz.token_heatmap(a, 4)
    with pytest.raises(ValueError, match="metric"):
        viz.token_heatmap(a, 1, "dot")


def test_heatmap_highlights_edited_frames_and_tokens():
    a = _analysis()
    f1 = int(a.path_cos[1][1])  # token 1's path frame at layer 1
    other = next(f for f in range(len(a.frame_times)) if f != f1)
    fig = viz.token_heatmap(a, 1, edited={"frames": [f1, other], "tokens": [1]})
    frame_bands = [s for s in fig.layout.shapes if s.x0 == -0.5 and s.x1 == 3.5]
    assert len(frame_bands) == len(fig.layout.shapes) == 4  # each band drawn white under black dashes
    assert {round(s.y0, 6) for s in frame_bands} == {round(a.frame_times[f1], 6), round(a.frame_times[other], 6)}
    assert fig.layout.xaxis.ticktext[1] == "<b>was*</b>" and "edited" in fig.layout.xaxis.title.text
    boxes = [t for t in fig.data if t.name == "edited frame/token"]
    assert len(boxes) == 2 and [t.showlegend for t in boxes] == [False, True]
    assert list(boxes[1].x) == [1] and boxes[1].marker.symbol == "square-open"
    np.testing.assert_allclose(boxes[1].y, [a.frame_times[a.path_cos[1][1]] + 0.05])
    same = viz.token_heatmap(a, 1, edited=SimpleNamespace(frames=[f1, other], tokens=[1]))  # attribute form
    assert len(same.layout.shapes) == len(fig.layout.shapes)
    # a path cell whose frame the edit left alone (another path than the edit's) is not boxed; the token keeps its *
    off = viz.token_heatmap(a, 1, edited={"frames": [other], "tokens": [1]})
    assert [list(t.x) for t in off.data if t.name == "edited frame/token"] == [[], []]
    assert off.layout.xaxis.ticktext[1] == "<b>was*</b>"


def test_layer_curves_mark_final_layer_and_current_layer():
    a = _analysis(L=5)
    fig = viz.layer_curves(a, current_layer=2)
    np.testing.assert_allclose(fig.data[0].y, a.seq_cos)
    np.testing.assert_allclose(fig.data[1].y, a.seq_dist)
    assert fig.data[0].marker.symbol[-1].endswith("-open") and fig.data[0].marker.size[-1] > fig.data[0].marker.size[0]
    assert list(fig.data[0].customdata)[-1] == " (after final norm)"
    assert any("after final norm" in (an.text or "") for an in fig.layout.annotations)
    xs = sorted({s.x0 for s in fig.layout.shapes})
    assert xs == [2, 5]  # the current layer and the final layer
    assert "layer" in fig.layout.xaxis.title.text
    tw = viz.tokenwise_curves(a, current_layer=1)
    np.testing.assert_allclose(tw.data[2].y, a.consistency)


def test_checkpoint_curves_one_line_per_checkpoint_ordered_by_step():
    df = pd.DataFrame({"checkpoint": ["c", "a", "b"], "step": [300, 100, 200],
                       "seq_cos": [[0.3, 0.3, 0.3], [0.1, 0.1, 0.1], [0.2, 0.2, 0.2]]})
    fig = viz.checkpoint_curves(df, "seq_cos")
    assert [t.name for t in fig.data] == ["a (step 100)", "b (step 200)", "c (step 300)"]
    np.testing.assert_allclose(fig.data[2].y, [0.3] * 3)
    assert len({t.line.dash for t in fig.data}) == 3 and len({t.line.color for t in fig.data}) == 3
    lum = [_luminance(t.line.color) for t in fig.data]
    assert lum == sorted(lum)  # later steps brighter: readable in grey
    with pytest.raises(ValueError, match="seq_dist"):
        viz.checkpoint_curves(df, "seq_dist")


def test_gap_scatter_draws_the_fit_and_its_r2():
    df = pd.DataFrame({"checkpoint": list("abcdef"), "family": ["f"] * 6, "strategy": ["lora"] * 4 + ["frozen"] * 2,
                       "step": [1, 2, 3, 4, 1, 2], "aps_cos": [0.1, 0.2, 0.3, 0.5, 0.2, 0.3],
                       "gap": [0.5, 0.42, 0.3, 0.1, 0.4, 0.35]})
    fits = gap_r2_table(df, "aps_cos", skip_unfit=True)
    fig = viz.gap_scatter(df, "aps_cos", fits)
    lora_pts = [t for t in fig.data if t.mode == "markers" and t.name.startswith("lora")][0]
    np.testing.assert_allclose(lora_pts.x, [0.1, 0.2, 0.3, 0.5])
    r2 = float(fits.loc[fits["strategy"] == "lora", "r2"].iloc[0])
    assert f"R² = {r2:.3f} (n = 4)" in lora_pts.name
    line = [t for t in fig.data if t.mode == "lines"][0]
    row = fits[fits["strategy"] == "lora"].iloc[0]
    np.testing.assert_allclose(line.y, 100 * (row["slope"] * np.asarray(line.x) + row["intercept"]))  # points
    np.testing.assert_allclose(lora_pts.y, [50, 42, 30, 10])  # GAP drawn in percentage points
    frozen = [t for t in fig.data if t.name.startswith("frozen")][0]
    assert "no fit" in frozen.name  # 2 checkpoints cannot be fitted
    assert fig.layout.xaxis.title.text == "APS (cosine; −1 … 1)" and "GAP" in fig.layout.yaxis.title.text
    # with the null baselines (gap_r2_table(resamples=...)) the legend carries the CI and the null
    nulls = gap_r2_table(df, "aps_cos", skip_unfit=True, resamples=100).iloc[0]
    named = viz.gap_scatter(df, "aps_cos", gap_r2_table(df, "aps_cos", skip_unfit=True, resamples=100))
    lora_pts = [t for t in named.data if t.mode == "markers" and t.name.startswith("lora")][0]
    assert (f"R² = {r2:.3f} [{nulls['r2_lo']:.2f}, {nulls['r2_hi']:.2f}], null 95% {nulls['r2_null95']:.2f} "
            "(n = 4)") in lora_pts.name


def test_cka_heatmap_fixed_scale_and_final_layer_labels():
    M = np.eye(4) * 0.9 + 0.05
    fig = viz.cka_heatmap(M, "CKA")
    np.testing.assert_array_equal(fig.data[0].z, M)
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0.0, 1.0)
    assert "speech layer" in fig.layout.yaxis.title.text and "3 = after final norm" in fig.layout.xaxis.title.text
    assert "CKA = %{z:.6f}" in fig.data[0].hovertemplate


def test_scores_by_voice_in_percent_with_gap_panel():
    df = pd.DataFrame({"voice": ["usa", "gbr"], "text_f1": [0.8, 0.6], "speech_f1": [0.5, 0.2],
                       "gap_f1": [0.3, 0.4], "n": [10, 12]})
    fig = viz.scores_by_voice(df, "f1")
    bars = {t.name: np.asarray(t.y) for t in fig.data}
    np.testing.assert_allclose(bars["text input"], [80, 60])
    np.testing.assert_allclose(bars["speech input"], [50, 20])
    np.testing.assert_allclose(bars["GAP"], [30, 40])
    assert fig.data[1].marker.pattern.shape == "/"  # speech bars differ by pattern, not only colour


def test_hearing_bars_panels_groups_intervals_and_grey_order():
    t = pd.DataFrame({"checkpoint": ["a"] * 6 + ["a: Whisper ASR"] * 6,
                      "voices": (["seen"] * 3 + ["unseen"] * 3) * 2,
                      "words": ["question", "other", "never"] * 4,
                      "spoken": [10, 0, 4, 5, 0, 2] * 2, "questions": [3, 0, 2, 3, 0, 1] * 2,
                      "recall": [0.7, np.nan, 0.25, 0.4, np.nan, 0.0, 0.8, np.nan, 0.5, 0.6, np.nan, 0.5],
                      "lo": [0.5, np.nan, 0.0, 0.2, np.nan, 0.0] * 2, "hi": [0.9, np.nan, 0.5, 0.6, np.nan, 0.0] * 2})
    fig = viz.hearing_bars(t)
    # groups with no spoken word are left out; one trace per (panel, group), the legend once per group
    assert [tr.name for tr in fig.data] == ["words of a training question", "words never spoken in training"] * 2
    assert [tr.showlegend for tr in fig.data] == [True, True, False, False]
    np.testing.assert_allclose(fig.data[1].y, [25.0, 50.0])  # seen voices, never-spoken words, in percent
    np.testing.assert_allclose(fig.data[1].error_y.array, [25.0, 0.0])  # hi - recall, in points
    np.testing.assert_allclose(fig.data[1].error_y.arrayminus, [25.0, 50.0])
    assert "words spoken in" in fig.data[0].hovertemplate and "95% CI" in fig.data[0].hovertemplate
    assert fig.layout.yaxis.title.text == "word recall (%)" and fig.layout.xaxis.title.text
    assert _luminance(fig.data[0].marker.color) < _luminance(fig.data[1].marker.color)  # readable in grey
    assert fig.data[1].marker.pattern.shape == "x"
    with pytest.raises(ValueError, match="recall"):
        viz.hearing_bars(t.drop(columns="recall"))


def test_closed_vocab_bars_one_bar_per_condition_and_voice_group_with_intervals():
    t = pd.DataFrame({"condition": ["end-to-end speech"] * 2 + ["typed question, never-spoken words dropped"] * 2,
                      "voice": ["seen", "en-gb-scotland"] * 2, "closed_share": [0.0, 0.0, 0.2, 0.2],
                      "agreement": [0.2, 0.18, 0.4, 0.4], "cascade_agreement": [0.4, 0.3, 0.4, 0.3],
                      "ratio": [0.5, 0.6, 1.0, 4 / 3], "ratio_lo": [0.4, 0.5, 0.8, 1.1],
                      "ratio_hi": [0.6, 0.7, 1.2, 1.5]})
    fig = viz.closed_vocab_bars(t, "en-gb-scotland")
    assert [tr.name for tr in fig.data] == ["seen voices", "unseen voice (en-gb-scotland)"]
    # conditions bottom-up so the first (the speech path) is on top; x = the ratio, error bars from its CI
    assert list(fig.data[1].y) == ["typed question, never-spoken words dropped", "end-to-end speech"]
    np.testing.assert_allclose(fig.data[1].x, [4 / 3, 0.6])
    np.testing.assert_allclose(fig.data[1].error_x.array, [1.5 - 4 / 3, 0.1])
    np.testing.assert_allclose(fig.data[1].error_x.arrayminus, [4 / 3 - 1.1, 0.1])
    np.testing.assert_allclose(fig.data[0].customdata[:, :3], [[40, 40, 20], [20, 40, 0]])  # percent
    assert "× the cascade" in fig.data[0].hovertemplate and "words closed" in fig.data[0].hovertemplate
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert any(s.x0 == 1.0 for s in fig.layout.shapes)  # the cascade's own level
    assert _luminance(fig.data[0].marker.color) < _luminance(fig.data[1].marker.color)  # readable in grey
    assert fig.data[1].marker.pattern.shape == "/"
    with pytest.raises(ValueError, match="ratio"):
        viz.closed_vocab_bars(t.drop(columns="ratio"), "en-gb-scotland")


def test_hearing_exposure_lines_per_checkpoint_bins_in_order_and_chance_ticks():
    t = pd.DataFrame({"checkpoint": ["a"] * 4 + ["a: Whisper ASR"] * 2,
                      "voices": ["seen", "seen", "unseen", "unseen", "seen", "seen"],
                      "bin": [3, 0, 0, 3, 0, 3], "exposure": ["30–99", "0", "0", "30–99", "0", "30–99"],
                      "distinct": [2, 4, 3, 2, 4, 2], "spoken": [4, 6, 3, 2, 6, 4], "questions": [2, 3, 2, 1, 3, 2],
                      "recall": [0.75, 0.0, 0.0, 0.5, 0.5, 0.8], "lo": [0.5, 0.0, 0.0, np.nan, 0.2, 0.6],
                      "hi": [1.0, 0.0, 0.0, np.nan, 0.8, 1.0], "chance": [0.25, 0.0, np.nan, np.nan, 0.0, 0.1]})
    fig = viz.hearing_exposure(t)
    lines = [tr for tr in fig.data if tr.mode == "lines+markers"]
    ticks = [tr for tr in fig.data if tr.mode == "markers"]
    # a line per (checkpoint, panel): bins sorted by exposure, recall in percent, the legend once per checkpoint
    assert [(tr.name, tr.showlegend) for tr in lines] == [("a", True), ("a: Whisper ASR", True), ("a", False)]
    assert list(lines[0].x) == ["0", "30–99"]
    np.testing.assert_allclose(lines[0].y, [0.0, 75.0])
    np.testing.assert_allclose(lines[0].error_y.array, [0.0, 25.0])
    assert lines[1].line.dash == "dash" and lines[0].line.dash == "solid"  # the transcript differs by dash
    np.testing.assert_allclose(ticks[0].y, [0.0, 25.0])  # chance of "a", seen voices
    assert len(ticks) == 2  # the unseen panel of "a" has no finite chance: no ticks
    assert list(fig.layout.xaxis.categoryarray) == ["0", "30–99"]
    assert "training clips" in fig.layout.xaxis.title.text and fig.layout.yaxis.title.text == "word recall (%)"
    assert "chance" in lines[0].hovertemplate and "95% CI" in lines[0].hovertemplate
    assert _luminance(lines[0].line.color) < _luminance(lines[1].line.color)  # readable in grey
    with pytest.raises(ValueError, match="bin"):
        viz.hearing_exposure(t.drop(columns="bin"))


def test_intervention_bars_and_trend_curves():
    t = pd.DataFrame({"F1": [10.0, 12.5], "Δ F1": [0.0, 2.5]}, index=pd.Index(["Original", "Angle·Bottom3"]))
    fig = viz.intervention_bars(t)
    assert list(fig.data[0].x) == ["Original", "Angle·Bottom3"] and list(fig.data[0].y) == [10.0, 12.5]
    df = pd.DataFrame({"trajectory": ["x", "x", "y"], "step": [2, 1, 1], "consistency_mean": [0.5, 0.2, 0.3],
                       "checkpoint": ["x2", "x1", "y1"]})
    tr = viz.trend_curves(df, "consistency_mean")
    assert [t.name for t in tr.data] == ["x", "y"] and list(tr.data[0].x) == [1, 2]
    assert tr.layout.xaxis.title.text == "training step"


def _monotone_in_grey(colorscale) -> bool:
    """The luminance of a figure's colour scale rises from its low end to its high end."""
    colors = [c for _, c in colorscale] if not isinstance(colorscale, str) else None
    lum = [_luminance(c) for c in (colors or sample_colorscale(colorscale, list(np.linspace(0, 1, 11))))]
    return all(b > a for a, b in zip(lum, lum[1:]))


def test_the_figures_colour_scales_read_in_grey():
    """The scales viz actually puts on its heatmaps (not a Plotly preset named in the test)."""
    a = _analysis()
    for fig in (viz.token_heatmap(a, 1, "cosine"), viz.token_heatmap(a, 1, "distance"),
                viz.cka_heatmap(np.eye(4), "CKA")):
        assert _monotone_in_grey(fig.data[0].colorscale), fig.layout.title.text
    cat = [_luminance(c) for c in viz.categorical_colors(6)]
    assert all(b > a for a, b in zip(cat, cat[1:]))


def test_viz_does_not_import_streamlit():
    code = "import sys, lsl_core.viz, lsl_core.results; assert 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- issue 13: long clips, lens, stability
def test_long_clip_heatmap_bins_frames_and_keeps_exact_values_in_hover():
    a = _analysis(L=2, Ts=600, Tt=4, seed=3)
    assert viz.frame_bins(240) is None and viz.frame_bins(241)[0] == (0, 2) and viz.frame_bins(600)[-1] == (597, 600)
    fig = viz.token_heatmap(a, 1, "cosine")
    hm, path = fig.data[0], fig.data[1]
    bins = viz.frame_bins(600)
    assert len(bins) == 200 and np.shape(hm.z) == (200, 4)  # 600 frames in bins of 3
    block = a.cos[1][3:6]  # the second bin, frames 3..5
    np.testing.assert_allclose(hm.z[1], block.max(axis=0))
    k = int(block[:, 2].argmax())
    assert f"best: frame {3 + k} ({(3 + k) * 0.1:.2f} s), cosine = {block[k, 2]:.6f}" in hm.text[1][2]
    assert f"bin mean = {block[:, 2].mean():.6f}" in hm.text[1][2]
    np.testing.assert_allclose(path.y, a.frame_times[a.path_cos[1]] + 0.05)  # the path keeps exact frame times
    assert "600 frames shown in 200 bins" in fig.layout.title.text
    dist = viz.token_heatmap(a, 1, "distance")
    np.testing.assert_allclose(dist.data[0].z[1], a.dist[1][3:6].min(axis=0))  # best = smallest distance
    exact = viz.token_heatmap(a, 1, "cosine", max_rows=600)
    np.testing.assert_array_equal(exact.data[0].z, a.cos[1])


def test_heatmap_names_the_dtw_path():
    a = _analysis()
    a.path_method = "dtw"
    fig = viz.token_heatmap(a, 1, "cosine")
    assert fig.data[1].name == "alignment path i*_j (dtw)" and "dtw path" in fig.layout.title.text


def _lens(n_layers=3, Ts=5, Tt=3, k=2, V=1000, seed=0):
    rng = np.random.default_rng(seed)
    words = np.array(["the", " cap", "ital", "?", " of"], dtype=object)
    return SimpleNamespace(
        layers=np.arange(n_layers), num_layers=n_layers - 1, vocab_size=V, tokens=[" what", " is", " it"][:Tt],
        frame_times=np.arange(Ts) * 0.1, frame_seconds=0.1, alignment="dtw cosine path, each layer's own",
        frame_token=np.minimum(np.arange(Ts) // 2, Tt - 1)[None].repeat(n_layers, 0),
        speech_rank=rng.integers(1, V, (n_layers, Ts)), speech_prob=rng.uniform(0, 1, (n_layers, Ts)),
        speech_top=rng.choice(words, (n_layers, Ts, k)), speech_top_probs=rng.uniform(0, 1, (n_layers, Ts, k)),
        text_rank=rng.integers(1, V, (n_layers, Tt)), text_top=rng.choice(words, (n_layers, Tt, k)),
        text_top_probs=rng.uniform(0, 1, (n_layers, Tt, k)))


def test_lens_grid_shows_top_token_and_rank_colour():
    lens = _lens()
    fig = viz.lens_grid(lens)
    hm = fig.data[0]
    np.testing.assert_allclose(hm.z, np.log10(lens.speech_rank))
    assert hm.reversescale and hm.zmin == 0 and hm.zmax == pytest.approx(3.0)  # rank 1 bright, up to log10(V)
    assert hm.customdata[1][3] == viz.token_label(lens.speech_top[1, 3, 0]) and hm.texttemplate == "%{customdata}"
    j = lens.frame_token[1, 3]
    assert f"rank {lens.speech_rank[1, 3]} of 1000" in hm.text[1][3] and f"{lens.tokens[j]!r}" in hm.text[1][3]
    assert "frame 3, 0.30–0.40 s" in hm.text[1][3] and "after final norm" in hm.text[2][0]
    assert "layer" in fig.layout.yaxis.title.text and "time (s)" in fig.layout.xaxis.title.text
    text = viz.lens_grid(lens, "text")
    np.testing.assert_allclose(text.data[0].z, np.log10(lens.text_rank))
    assert list(text.layout.xaxis.ticktext) == ["what", "is", "it"]


def test_lens_grid_bins_long_clips():
    lens = _lens(Ts=500, V=50_000, seed=2)
    fig = viz.lens_grid(lens)
    bins = viz.frame_bins(500)
    assert np.shape(fig.data[0].z) == (3, len(bins)) and fig.data[0].texttemplate is None  # no labels on 250 columns
    lo, hi = bins[7]
    best = lo + int(lens.speech_rank[0, lo:hi].argmin())
    assert fig.data[0].z[0][7] == pytest.approx(np.log10(lens.speech_rank[0, best]))
    assert f"best: frame {best}" in fig.data[0].text[0][7]


def test_norm_curves_and_stability_figures():
    a = _analysis(L=4)
    a.norm_speech, a.norm_text, a.std_dist = np.geomspace(1, 100, 5), np.geomspace(2, 50, 5), np.linspace(0.1, 1, 5)
    fig = viz.norm_curves(a, current_layer=2)
    np.testing.assert_allclose(fig.data[0].y, a.norm_speech)
    np.testing.assert_allclose(fig.data[2].y, a.std_dist)
    assert fig.layout.yaxis.type == "log" and "norm" in fig.layout.yaxis.title.text

    from lsl_core.metrics.stability import band_location, stability_summary

    M = np.array([[0.9, 0.2, 0.1], [0.3, 0.8, 0.4], [0.1, 0.5, 0.6]])
    s = stability_summary({"argmax · cosine · path@middle": M, "dtw · cosine · path@middle": M[:, ::-1]})
    fig = viz.cka_stability(s)
    np.testing.assert_allclose(fig.data[0].z, s.correlation)
    assert list(fig.data[1].y) == [0, 1, 2] and list(fig.data[2].y) == [2, 1, 0]
    assert "reference" in fig.data[1].name and "33 %" in fig.data[2].name
    band = viz.cka_heatmap(M, "t", band=band_location(M))
    assert list(band.data[1].x) == [0, 1, 2] and list(band.data[1].customdata) == [0.9, 0.8, 0.6]


# ============================================================================ the one figure style
def test_one_style_per_strategy_and_condition_across_charts():
    """A strategy / condition looks the same on every chart, and the styles differ in grey too."""
    df = pd.DataFrame({"trajectory": ["f · lora", "f · lora", "f · frozen"], "step": [1, 2, 1],
                       "gap_f1": [0.1, 0.05, 0.2], "checkpoint": ["l1", "l2", "z1"], "family": "f",
                       "strategy": ["lora", "lora", "frozen"], "aps_cos": [0.5, 0.6, 0.4], "gap": [0.1, 0.05, 0.2]})
    tr = viz.trend_curves(df, "gap_f1")
    sc = viz.gap_scatter(df, "aps_cos", by=("family", "strategy"))
    for name in ("lora", "frozen"):
        st = viz.strategy_style(name)
        line = [t for t in tr.data if t.name.endswith(name)][0]
        pts = [t for t in sc.data if t.name.startswith(name)][0]
        assert line.line.color == pts.marker.color == st.color and line.marker.symbol == pts.marker.symbol == st.symbol
    lum = {k: _luminance(v.color) for k, v in viz.STRATEGY_STYLES.items()}
    assert len({round(x) for x in lum.values()}) == len(lum)
    assert len({v.symbol for v in viz.STRATEGY_STYLES.values()}) == len(viz.STRATEGY_STYLES)
    # conditions: labels and titles of one intervention share colour and pattern; ops differ
    assert viz.condition_style("angle:bottom3@0") == viz.condition_style("Angle·Bottom3")
    assert viz.condition_style("Original") == viz.condition_style("speech")
    assert viz.condition_style("angle:all").pattern != viz.condition_style("angle:bottom3").pattern
    assert viz.condition_style("angle:all").color != viz.condition_style("length:all").color
    assert viz.condition_style("mystery") == viz.condition_style("mystery")  # stable fallback
    t = pd.DataFrame({"F1": [10.0, 12.5]}, index=pd.Index(["Original", "Angle·Bottom3"]))
    bars = viz.intervention_bars(t)
    sv = viz.scores_by_voice(pd.DataFrame({"voice": ["a"], "text_f1": [0.5], "speech_f1": [0.2]}))
    speech_bar = [b for b in sv.data if b.name == "speech input"][0]
    assert bars.data[0].marker.color[0] == speech_bar.marker.color == viz.condition_style("speech").color


def test_scores_in_percent_with_error_bars_and_rounded_tables():
    df = pd.DataFrame({"trajectory": ["f · lora"] * 2, "step": [1, 2], "speech_f1": [0.25, 0.3],
                       "speech_f1_lo": [0.2, 0.1], "speech_f1_hi": [0.3, 0.45], "n": [4, 4], "checkpoint": ["a", "b"]})
    fig = viz.trend_curves(df, "speech_f1")
    np.testing.assert_allclose(fig.data[0].y, [25, 30])
    np.testing.assert_allclose(fig.data[0].error_y.array, [5, 15])
    np.testing.assert_allclose(fig.data[0].error_y.arrayminus, [5, 20])
    assert "(%)" in fig.layout.yaxis.title.text and "95% CI" in fig.data[0].hovertemplate
    with_style = viz.trend_curves(df.assign(agreement=[0.2, 0.3], agreement_other_q=[0.15, 0.05]), "agreement",
                                  baseline="agreement_other_q", baseline_label="answer style")
    assert [d.name for d in with_style.data] == ["f · lora", "f · lora · answer style"]
    np.testing.assert_allclose(with_style.data[1].y, [15, 5])  # percent, like the curve it belongs to
    assert with_style.data[1].line.dash == "dot" and with_style.data[1].line.color == with_style.data[0].line.color
    assert "agreement_other_q" in with_style.data[1].hovertemplate and list(with_style.data[1].text) == ["a", "b"]
    with pytest.raises(ValueError, match="agreement_other_q"):
        viz.trend_curves(df, "speech_f1", baseline="agreement_other_q")
    t = pd.DataFrame({"F1": [10.0, 12.5], "F1_lo": [5.0, 6.0], "F1_hi": [15.0, 20.0]}, index=["Original", "Angle·All"])
    b = viz.intervention_bars(t)
    np.testing.assert_allclose(b.data[0].error_y.array, [5, 7.5])
    shown = viz.display_table(pd.DataFrame({"speech_f1": [0.123456], "seq_dist_mean": [201.3056],
                                            "aps_cos": [0.5555555], "F1": [11.1111]}), percents=["F1"])
    assert shown.to_dict("records") == [{"speech_f1 (%)": 12.3, "seq_dist_mean": 201.31, "aps_cos": 0.556,
                                         "F1 (%)": 11.1}]
    assert viz.percent(0.2513) == "25.1 %" and viz.percent(float("nan")) == "–"
    fits = viz.display_table(pd.DataFrame({"slope": [-3.4567e-06, -0.19783], "p_perm": [1 / 2001, 0.25],
                                           "r2": [0.5, 0.25]}))
    assert fits.to_dict("list") == {"slope": [-3.46e-06, -0.198], "p_perm": [0.0005, 0.25], "r2": [0.5, 0.25]}


def test_titles_sit_below_the_toolbar_and_name_model_sample_layer():
    a = _analysis()
    a.model, a.sample_id = "lora-step0400", "q7__en-gb"
    fig = viz.token_heatmap(a, 2)
    t = fig.layout.title
    assert "lora-step0400" in t.text and "q7__en-gb" in t.text and "layer ℓ = 2" in t.text

    def band(f) -> tuple[float, float]:  # (first line top, free px between the title block and the plot area)
        tt = f.layout.title
        assert tt.yref == "container" and tt.y == 1.0 and tt.yanchor == "top"
        lines = tt.text.count("<br>") + 1
        top = tt.pad.t - viz.TITLE_LINE_PX * (lines - 1) / 2  # Plotly centres extra lines on the anchor
        return top, f.layout.margin.t - top - viz.TITLE_LINE_PX * lines

    top, gap = band(fig)
    assert top >= viz.TITLE_TOP_PX and gap >= 30  # below the toolbar's row; room for the legend above the plot
    narrow = viz.fit_title(viz.layer_curves(a), 30)
    assert all(len(re.sub("<[^>]+>", "", ln)) <= 30 for ln in narrow.layout.title.text.split("<br>"))
    top, gap = band(narrow)
    assert narrow.layout.title.text.count("<br>") >= 3 and top >= viz.TITLE_TOP_PX and gap >= 24  # panel titles
    assert "lora-step0400" in narrow.layout.title.text.replace("<br>", " ")


def test_cka_spread_band_and_hover_interval():
    M = np.eye(3) * 0.8
    fig = viz.cka_heatmap(M, "t", low=M - 0.1, high=M + 0.1)
    np.testing.assert_allclose(np.asarray(fig.data[0].customdata)[1, 1], [0.7, 0.9])
    assert "95% interval" in fig.data[0].hovertemplate
    sp = viz.cka_spread({"pooled": (M, M - 0.1, M + 0.1)}, "spread")
    band, line = sp.data
    np.testing.assert_allclose(line.y, [0.8, 0.8, 0.8])
    np.testing.assert_allclose(band.y, [0.9, 0.9, 0.9, 0.7, 0.7, 0.7])


def test_agreement_title_gives_the_cascades_range_when_checkpoints_differ():
    """The cascade runs through each checkpoint's own LLM (a LoRA changes it): one value when they agree, their
    range when they differ (a mean over checkpoints named no cascade that was run)."""
    import pandas as pd

    from lsl_core.viz import agreement_title

    same = pd.DataFrame({"cascade_agreement": [0.43, 0.43, float("nan")]})
    assert agreement_title(same, "all") == "speech vs text answer agreement, voice 'all', 95% CI (cascade: 43.0 %)"
    apart = pd.DataFrame({"cascade_agreement": [0.362, 0.398, 0.441]})
    assert agreement_title(apart, "en-gb").endswith("(cascade: 36.2–44.1 %)")
    assert agreement_title(pd.DataFrame({"cascade_agreement": [float("nan")]}), "x").endswith("(cascade: –)")
