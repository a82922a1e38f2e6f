"""Control figures (lsl_core.viz): they draw exactly the given controls, with labelled axes, the chance
level, a CI band, the final-norm layer marked and hover carrying the exact value and the partner question."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lsl_core import viz
from lsl_core.analysis_controls import SampleControls
from lsl_core.metrics.controls import METRIC_NAMES, SCORERS


def _sample_controls(L=3, K=2, seed=0) -> SampleControls:
    rng = np.random.default_rng(seed)
    M = len(METRIC_NAMES)
    return SampleControls(
        sample_id="s", metrics=METRIC_NAMES, partner_questions=[f"other question {k}?" for k in range(K)],
        matched=rng.uniform(0, 1, (M, L + 1)), mismatched=rng.uniform(0, 1, (K, M, L + 1)),
        silence=rng.uniform(0, 1, (M, L + 1)), shuffled=rng.uniform(0, 1, (M, L + 1)),
        permutation=np.array([1, 0]), silence_seconds=1.25, retrieval=np.zeros((len(SCORERS), 3, L + 1)))


def _controls_rows(checkpoints=(("a", 10), ("b", 20)), L=3) -> pd.DataFrame:
    rows = []
    for k, (name, step) in enumerate(checkpoints):
        for layer in [*range(L + 1), -1]:
            for scorer in SCORERS:
                rows.append(dict(table="retrieval", scorer=scorer, layer=layer, top1=0.1 * (layer + 1) + k / 10,
                                 top5=0.5, mrr=0.3, chance_top1=0.05, chance_top5=0.25, chance_mrr=0.18,
                                 checkpoint=name, step=step, candidates=20))
            rows.append(dict(table="specific", metric="seq_cos", layer=layer, matched=0.6, mismatched=0.5,
                             specific=0.01 * layer + k, ci_low=0.01 * layer + k - 0.02, ci_high=0.01 * layer + k + 0.03,
                             checkpoint=name, step=step))
    return pd.DataFrame(rows)


def test_control_curves_draw_each_condition_and_every_partner():
    sc = _sample_controls()
    fig = viz.control_curves(sc, "aps_cos", current_layer=1)
    m = METRIC_NAMES.index("aps_cos")
    by_name = {t.name: t for t in fig.data if t.legendgroup != "partners"}
    np.testing.assert_allclose(by_name["this clip, own transcript"].y, sc.matched[m])
    np.testing.assert_allclose(by_name["mismatched: mean of 2 other questions"].y, sc.mismatched[:, m].mean(0))
    np.testing.assert_allclose(by_name["silence (1.25 s of zeros)"].y, sc.silence[m])
    np.testing.assert_allclose(by_name["shuffled frames (same clip)"].y, sc.shuffled[m])
    partners = [t for t in fig.data if t.legendgroup == "partners"]
    assert len(partners) == 2 and "other question 1?" in partners[1].hovertemplate
    np.testing.assert_allclose(partners[1].y, sc.mismatched[1, m])
    assert "layer" in fig.layout.xaxis.title.text and "−1 … 1" in fig.layout.yaxis.title.text
    assert any("after final norm" in (a.text or "") for a in fig.layout.annotations)
    assert len({t.line.dash for t in by_name.values()}) == 4  # conditions differ by dash, not hue alone


def test_retrieval_curves_one_line_per_checkpoint_with_chance():
    df = _controls_rows()
    fig = viz.retrieval_curves(df, "seq_cos", "top1")
    assert [t.name for t in fig.data] == ["a (step 10)", "b (step 20)"]
    np.testing.assert_allclose(fig.data[1].y, [0.2, 0.3, 0.4, 0.5])  # layer -1 (the mean row) is not drawn
    assert "top-1 accuracy" in fig.data[0].hovertemplate and "%{y:.6f}" in fig.data[0].hovertemplate
    chance = [s for s in fig.layout.shapes if s.y0 == s.y1]
    assert len(chance) == 1 and chance[0].y0 == pytest.approx(0.05)
    assert any("chance 0.050 (Nc = 20)" in (a.text or "") for a in fig.layout.annotations)
    assert fig.layout.yaxis.range == (-0.02, 1.02) and "layer" in fig.layout.xaxis.title.text
    with pytest.raises(ValueError, match="analyze --controls"):
        viz.retrieval_curves(df.drop(columns=["top1"]), "seq_cos", "top1")


def test_specific_curves_show_the_ci_band_and_zero():
    df = _controls_rows()
    fig = viz.specific_curves(df, "seq_cos")
    bands = [t for t in fig.data if t.fill == "toself"]
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert len(bands) == 2 and len(lines) == 2
    np.testing.assert_allclose(lines[0].y, [0.0, 0.01, 0.02, 0.03])
    np.testing.assert_allclose(bands[0].y, [0.03, 0.04, 0.05, 0.06, 0.01, 0.0, -0.01, -0.02])  # high, then low reversed
    assert "95% CI" in lines[0].hovertemplate and "rgba(" in bands[0].fillcolor
    assert any(s.y0 == 0 and s.y1 == 0 for s in fig.layout.shapes)
    assert "matched − mismatched" in fig.layout.yaxis.title.text
