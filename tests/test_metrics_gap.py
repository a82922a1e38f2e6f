"""GAP and its OLS fit (R²) against hand cases and the slow reference."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from reference_metrics import ref_ols

from lsl_core.errors import MetricInputError
from lsl_core.metrics import LinearFit, fit_gap, gap, gap_r2_table


def test_gap_is_text_minus_speech_vectorized():
    assert gap(0.8, 0.5) == pytest.approx(0.3)
    np.testing.assert_allclose(gap(np.array([0.9, 0.7]), np.array([0.4, 0.8])), [0.5, -0.1])
    np.testing.assert_allclose(gap([1.0, 2.0], [0.5, 0.5]), [0.5, 1.5])
    series = gap(pd.Series([0.9, 0.6], name="t"), pd.Series([0.3, 0.6], name="s"))
    assert isinstance(series, pd.Series)
    np.testing.assert_allclose(series.to_numpy(), [0.6, 0.0])
    torch.testing.assert_close(gap(torch.tensor([3.0]), torch.tensor([1.0])), torch.tensor([2.0]))
    with pytest.raises(MetricInputError, match="differ in shape"):
        gap(np.ones(3), np.ones(2))


def test_perfect_line_has_r2_one():
    x = np.array([0.1, 0.4, 0.2, 0.9, 0.5])
    fit = fit_gap(x, -2.0 * x + 0.7)
    assert fit == LinearFit(slope=pytest.approx(-2.0), intercept=pytest.approx(0.7), r2=pytest.approx(1.0), n=5)


def test_hand_case():
    # x = [0, 1, 2], gap = [0, 2, 1]: slope 1/2, intercept 1/2, residuals [-1/2, 1, -1/2]
    # SS_res = 1.5, SS_tot = 2 -> R² = 0.25
    fit = fit_gap([0.0, 1.0, 2.0], [0.0, 2.0, 1.0])
    assert (fit.slope, fit.intercept, fit.r2, fit.n) == (pytest.approx(0.5), pytest.approx(0.5), pytest.approx(0.25), 3)


@pytest.mark.parametrize(("n", "seed"), [(3, 0), (4, 1), (10, 2), (57, 3)])
def test_fit_matches_reference(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 0.3 - 1.7 * x + rng.normal(scale=0.8, size=n)
    slope, intercept, r2 = ref_ols(x.tolist(), y.tolist())
    fit = fit_gap(x, y)
    assert fit.slope == pytest.approx(slope, rel=1e-9)
    assert fit.intercept == pytest.approx(intercept, rel=1e-9, abs=1e-12)
    assert fit.r2 == pytest.approx(r2, rel=1e-9, abs=1e-12)
    assert 0.0 <= fit.r2 <= 1.0


def test_constant_gap_gives_r2_zero():
    fit = fit_gap([0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25])
    assert fit.r2 == 0.0 and fit.slope == 0.0 and fit.intercept == pytest.approx(0.25)


def test_fit_errors():
    with pytest.raises(MetricInputError, match="at least 3 checkpoints, got 2"):
        fit_gap([0.1, 0.2], [1.0, 2.0])
    with pytest.raises(MetricInputError, match="same metric value"):
        fit_gap([0.1, 0.1, 0.1], [1.0, 2.0, 3.0])
    with pytest.raises(MetricInputError, match="NaN"):
        fit_gap([0.1, float("nan"), 0.3], [1.0, 2.0, 3.0])
    with pytest.raises(MetricInputError, match="one metric value and one GAP"):
        fit_gap([0.1, 0.2, 0.3], [1.0, 2.0])


def test_linear_fit_is_frozen():
    fit = fit_gap([0.0, 1.0, 2.0], [1.0, 0.0, 2.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.r2 = 1.0  # type: ignore[misc]


def results_table() -> pd.DataFrame:
    """Checkpoints of two families x strategies with known lines."""
    rows = []
    lines = [("qwen", "lora", -1.0, 0.5), ("qwen", "full", -3.0, 0.9), ("smol", "lora", 2.0, 0.0)]
    for family, strategy, slope, intercept in lines:
        for step, aps in enumerate([0.1, 0.3, 0.2, 0.6]):
            gap_value = slope * aps + intercept
            rows.append({"family": family, "strategy": strategy, "step": step, "aps_cos": aps, "gap": gap_value})
    rows[0]["gap"] += 0.05  # one imperfect point in (qwen, lora)
    return pd.DataFrame(rows)


def test_gap_r2_table_groups_and_matches_fit_gap():
    df = results_table()
    table = gap_r2_table(df, "aps_cos")
    assert list(table.columns) == ["family", "strategy", "metric", "n", "slope", "intercept", "r2"]
    assert table[["family", "strategy"]].values.tolist() == [["qwen", "full"], ["qwen", "lora"], ["smol", "lora"]]
    assert (table["metric"] == "aps_cos").all() and (table["n"] == 4).all()
    full = table.iloc[0]
    assert (full.slope, full.intercept, full.r2) == (pytest.approx(-3.0), pytest.approx(0.9), pytest.approx(1.0))
    lora = table.iloc[1]
    sub = df[(df.family == "qwen") & (df.strategy == "lora")]
    slope, intercept, r2 = ref_ols(sub.aps_cos.tolist(), sub.gap.tolist())
    assert (lora.slope, lora.intercept, lora.r2) == (pytest.approx(slope), pytest.approx(intercept), pytest.approx(r2))
    assert lora.r2 < 1.0


def test_gap_r2_table_other_groupings():
    df = results_table()
    by_family = gap_r2_table(df, "aps_cos", by=["family"])
    assert by_family["family"].tolist() == ["qwen", "smol"] and by_family["n"].tolist() == [8, 4]
    overall = gap_r2_table(df, "aps_cos", by=())
    assert list(overall.columns) == ["metric", "n", "slope", "intercept", "r2"] and overall["n"].tolist() == [12]
    renamed = gap_r2_table(df.rename(columns={"gap": "delta"}), "aps_cos", gap="delta", by="family")
    np.testing.assert_allclose(renamed["r2"], by_family["r2"])


def test_gap_r2_table_errors_and_skip():
    df = results_table()
    with pytest.raises(MetricInputError, match="no column"):
        gap_r2_table(df, "aps_dist")
    small = pd.concat([df, pd.DataFrame([{"family": "tiny", "strategy": "lora", "aps_cos": 0.1, "gap": 0.2}])])
    with pytest.raises(MetricInputError, match="family='tiny'.*at least 3 checkpoints"):
        gap_r2_table(small, "aps_cos")
    assert "tiny" not in gap_r2_table(small, "aps_cos", skip_unfit=True)["family"].tolist()
