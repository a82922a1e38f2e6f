"""GAP and its OLS fit (R²) against hand cases and the slow reference."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from reference_metrics import ref_ols

from lsl_core.errors import MetricInputError
from lsl_core.metrics import (LinearFit, diagnostics, fit_gap, gap, gap_fits, gap_r2_table, r2_added, r2_added_interval,
                              r2_interval, r2_null)


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


def test_constant_gap_has_no_r2():
    """R² = 1 - SS_res/SS_tot is 0/0 when every checkpoint has the same GAP: refused, not reported as 0."""
    with pytest.raises(MetricInputError, match="same GAP"):
        fit_gap([0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25])
    df = pd.DataFrame({"family": ["f"] * 4 + ["g"] * 4, "strategy": "lora", "aps_cos": [0.1, 0.2, 0.3, 0.4] * 2,
                       "gap": [0.25] * 4 + [0.1, 0.3, 0.2, 0.4]})
    with pytest.raises(MetricInputError, match="family='f'.*same GAP"):
        gap_r2_table(df, "aps_cos")
    assert gap_r2_table(df, "aps_cos", skip_unfit=True)["family"].tolist() == ["g"]
    with pytest.raises(MetricInputError, match="same GAP"):
        r2_added([1.0, -1.0, 1.0, -1.0], [0.3] * 4, [0.0, 1.0, 2.0, 3.0])


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


# ------------------------------------------------------------------ null baselines of an R² over checkpoints
def _ref_r2(x, y) -> float:
    return ref_ols(list(map(float, x)), list(map(float, y)))[2]


def test_r2_interval_equals_a_slow_bootstrap_over_checkpoints():
    rng = np.random.default_rng(5)
    x = np.round(rng.normal(size=7), 1)  # ties: some resamples have < 3 distinct x and are skipped
    y = 0.4 * x + rng.normal(scale=0.5, size=7)
    shuffled = rng.permutation(7)
    order = np.lexsort((y, x))  # checkpoints are resampled in one canonical order: by x, then y
    x, y = x[order], y[order]
    draws = np.random.default_rng(11)
    reps = []
    for _ in range(300):
        i = draws.integers(0, 7, 7)
        if len(set(x[i].tolist())) >= 3:
            reps.append(_ref_r2(x[i], y[i]))
    assert len(reps) < 300  # the skip rule was exercised
    lo, hi = r2_interval(x, y, n_boot=300, seed=11)
    assert (lo, hi) == (pytest.approx(np.quantile(reps, 0.025)), pytest.approx(np.quantile(reps, 0.975)))
    assert r2_interval(x[shuffled], y[shuffled], n_boot=300, seed=11) == (lo, hi)  # however they are listed
    line = np.array([0.1, 0.3, 0.2, 0.7, 0.5])
    assert r2_interval(line, 2.0 - line, n_boot=200) == (pytest.approx(1.0), pytest.approx(1.0))


def test_r2_null_enumerates_every_pairing_of_few_checkpoints():
    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.1, 0.25, 0.2, 0.4])
    null = [_ref_r2(x, y[list(p)]) for p in itertools.permutations(range(4))]
    observed = _ref_r2(x, y)
    null95, p = r2_null(x, y, n_perm=2000)  # 4! = 24 <= 2000: exact
    assert p == pytest.approx(sum(r >= observed - 1e-12 for r in null) / 24)
    assert null95 == pytest.approx(np.quantile(null, 0.95))
    assert r2_null(x[::-1], y[::-1], n_perm=2000) == (null95, p)
    # a perfect line over 4 points: only it and its reverse reach R² = 1
    assert r2_null(x, 3.0 - x)[1] == pytest.approx(2 / 24)


def test_r2_null_samples_pairings_of_many_checkpoints():
    x = np.linspace(0.0, 1.0, 12)
    null95, p = r2_null(x, 0.5 - x, n_perm=999, seed=3)
    assert p == pytest.approx(1 / 1000)  # no random pairing of 12 points fits a line as well as the line
    assert 0.0 < null95 < 0.5  # what an unrelated metric reaches on 12 checkpoints
    zigzag = np.array([0.0, 1.0] * 6)  # no trend with x: most random pairings fit it as well or better
    assert r2_null(x, zigzag, n_perm=999, seed=3)[1] > 0.5
    wavy = np.sin(7 * x)
    assert r2_null(x[::-1], wavy[::-1], n_perm=999, seed=3) == r2_null(x, wavy, n_perm=999, seed=3)  # any order


def test_r2_added_is_what_a_metric_explains_beyond_the_control():
    step = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    wiggle = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    y = 0.1 * step + 0.05 * wiggle
    # step and the wiggle explain y exactly: the wiggle adds all that step leaves
    assert r2_added(wiggle, y, step) == pytest.approx(1.0 - _ref_r2(step, y))
    assert r2_added(2.0 * step + 1.0, y, step) == pytest.approx(0.0, abs=1e-12)  # a metric that is the step
    # independent formula: added R² = (1 - R²(y ~ c)) * partial r² of y and x given c
    rng = np.random.default_rng(2)
    x, c = np.sort(rng.normal(size=9)), rng.normal(size=9)  # sorted by x: the canonical order of resampling
    yy = x + c + rng.normal(size=9)

    def resid(a, b):
        slope, intercept, _ = ref_ols(list(b), list(a))
        return a - (slope * b + intercept)

    partial = np.corrcoef(resid(yy, c), resid(x, c))[0, 1] ** 2
    assert r2_added(x, yy, c) == pytest.approx((1.0 - _ref_r2(c, yy)) * partial)
    # its CI: r2_added over the same bootstrap draws as r2_interval's (< 4 distinct checkpoints skipped)
    draws, reps = np.random.default_rng(4), []
    for _ in range(150):
        i = draws.integers(0, 9, 9)
        if len(set(x[i].tolist())) >= 4:
            reps.append(r2_added(x[i], yy[i], c[i]))
    ci = r2_added_interval(x, yy, c, n_boot=150, seed=4)
    assert ci == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])))
    back = np.arange(9)[::-1]
    assert r2_added_interval(x[back], yy[back], c[back], n_boot=150, seed=4) == ci  # however they are listed
    assert r2_added(x[back], yy[back], c[back]) == pytest.approx(r2_added(x, yy, c))
    with pytest.raises(MetricInputError, match="control has 5 values"):
        r2_added(x, yy, c[:5])


def test_gap_r2_table_and_gap_fits_carry_the_null_baselines():
    df = results_table().assign(step=lambda d: d.groupby(["family", "strategy"]).cumcount() * 100)
    table = gap_r2_table(df, "aps_cos", resamples=200, control="step")
    assert list(table.columns)[-7:] == ["r2_lo", "r2_hi", "r2_null95", "p_perm", "r2_added", "r2_added_lo",
                                        "r2_added_hi"]
    sub = df[(df.family == "qwen") & (df.strategy == "lora")]
    row = table[(table.family == "qwen") & (table.strategy == "lora")].iloc[0]
    assert (row.r2_lo, row.r2_hi) == pytest.approx(r2_interval(sub.aps_cos, sub.gap, 200))
    assert (row.r2_null95, row.p_perm) == pytest.approx(r2_null(sub.aps_cos, sub.gap, 200))
    assert row.r2_added == pytest.approx(r2_added(sub.aps_cos, sub.gap, sub.step))
    assert (row.r2_added_lo, row.r2_added_hi) == pytest.approx(r2_added_interval(sub.aps_cos, sub.gap, sub.step, 200))
    fits = gap_fits(df, ["aps_cos", "missing_metric"], resamples=200)
    assert fits["metric"].tolist() == ["aps_cos"] * 3 + ["step"] * 3  # metrics present, then the baseline
    assert fits[fits.metric == "step"]["r2_added"].isna().all()
    pd.testing.assert_frame_equal(fits[fits.metric == "aps_cos"].reset_index(drop=True), table)
    assert "step" not in set(gap_fits(df.drop(columns="step"), ["aps_cos"], resamples=0)["metric"])
    with pytest.raises(MetricInputError, match="no control column 'epoch'"):
        gap_r2_table(df, "aps_cos", control="epoch")


def test_r2_null_note_names_the_fits_at_their_null():
    fits = pd.DataFrame({"family": ["f", "f", "f"], "strategy": ["lora"] * 3,
                         "metric": ["aps_cos", "seq_cos_mean", "step"], "r2": [0.9, 0.2, 0.8], "p_perm": [0.01, 0.4, 0.02], "r2_added": [0.2, 0.01, np.nan]})
    note = diagnostics.r2_null_note(fits)
    assert note.code == "r2_null"
    assert "1 of 2 fits are within their permutation null" in note.message and "seq_cos_mean (f · lora)" in note.message
    assert "1 of 2 add under" in note.message and "aps_cos (f" not in note.message
    assert diagnostics.r2_null_note(fits.iloc[[0, 2]]) is None  # every fit clears both
    assert diagnostics.r2_null_note(fits.drop(columns=["p_perm"])) is None  # no null columns: nothing to say


# ------------------------------------------------------------------ review: undefined R² is left out, not counted as 0
def _ref_r2_design(y, *cols) -> float:
    """R² of the least-squares fit of y on [1, *cols] (numpy lstsq: an independent formulation)."""
    y = np.asarray(y, dtype=np.float64)
    a = np.column_stack([np.ones_like(y), *[np.asarray(c, dtype=np.float64) for c in cols]])
    res = y - a @ np.linalg.lstsq(a, y, rcond=None)[0]
    return 1.0 - float(res @ res) / float(((y - y.mean()) ** 2).sum())


def test_r2_interval_leaves_out_resamples_whose_gap_is_constant():
    """Most checkpoints share one GAP value (the answerable GAP of the shipped zoo: 13 of 16 at 100 %): a resample of
    only those has no R² (0/0) and is left out, as a resample with < 3 distinct x is; it is not an R² of 0."""
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    y = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.8])
    draws, reps, undefined = np.random.default_rng(7), [], 0
    for _ in range(400):
        i = draws.integers(0, 8, 8)
        if len(set(x[i].tolist())) < 3:
            continue
        if len(set(y[i].tolist())) == 1:
            undefined += 1
            continue
        reps.append(_ref_r2(x[i], y[i]))
    assert undefined > 0.025 * 400  # enough undefined resamples to pin the lower end at 0 if counted as R² 0
    lo, hi = r2_interval(x, y, n_boot=400, seed=7)
    assert (lo, hi) == (pytest.approx(np.quantile(reps, 0.025)), pytest.approx(np.quantile(reps, 0.975)))
    assert lo > 0.0


def test_r2_added_needs_four_checkpoints_and_its_ci_skips_saturated_resamples():
    """GAP ~ 1 + step + x has three coefficients: it passes through any 3 points, so on 3 checkpoints (or a
    resample of 3 distinct ones) 'what x adds' is 1 - R²(GAP ~ step) whatever x is. Such fits are refused / left
    out."""
    x3, y3, c3 = np.array([0.3, 0.1, 0.2]), np.array([0.5, 0.9, 0.4]), np.array([0.0, 1.0, 2.0])
    assert _ref_r2_design(y3, c3, x3) == pytest.approx(1.0)  # saturated
    with pytest.raises(MetricInputError, match="at least 4 checkpoints"):
        r2_added(x3, y3, c3)
    with pytest.raises(MetricInputError, match="at least 4 checkpoints"):
        r2_added_interval(x3, y3, c3)
    df = pd.DataFrame({"aps_cos": x3, "gap": y3, "step": c3})
    row = gap_r2_table(df, "aps_cos", by=(), resamples=50, control="step").iloc[0]
    assert row["r2"] == pytest.approx(_ref_r2(x3, y3)) and np.isnan(row["r2_added"])
    assert np.isnan(row["r2_added_lo"]) and np.isnan(row["r2_added_hi"])
    # five checkpoints: about half of the resamples hold only 3 distinct ones
    x = np.array([0.1, 0.25, 0.3, 0.45, 0.6])
    c = np.array([0.0, 1.0, 3.0, 2.0, 4.0])
    y = np.array([0.9, 0.7, 0.75, 0.4, 0.5])
    assert r2_added(x, y, c) == pytest.approx(_ref_r2_design(y, c, x) - _ref_r2_design(y, c))
    draws, reps, saturated = np.random.default_rng(3), [], 0
    for _ in range(300):
        i = draws.integers(0, 5, 5)
        k = len(set(i.tolist()))
        if k < 3:
            continue
        if k == 3:
            saturated += 1
            continue
        reps.append(_ref_r2_design(y[i], c[i], x[i]) - _ref_r2_design(y[i], c[i]))
    assert saturated > 0.025 * 300
    lo, hi = r2_added_interval(x, y, c, n_boot=300, seed=3)
    assert (lo, hi) == (pytest.approx(np.quantile(reps, 0.025), abs=1e-12),
                        pytest.approx(np.quantile(reps, 0.975), abs=1e-12))
