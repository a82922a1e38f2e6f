"""The modality GAP and its relation to alignment (DESIGN §3).

    GAP = M^t - M^s            benchmark score on text input minus on speech input, same model
    GAP ~ slope * x + intercept    ordinary least squares over checkpoints, x = f̄ or APS
    R² = 1 - SS_res / SS_tot

A negative slope with high R² says: the better speech and text align, the smaller the gap.
Statistics in float64 (numpy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lsl_core.errors import MetricInputError

MIN_POINTS = 3  # a line through 2 points always fits perfectly (R² = 1 says nothing)


def gap(text_score: Any, speech_score: Any) -> Any:
    """GAP = text_score - speech_score, elementwise.

    Scalars, numpy arrays, pandas Series/columns and torch tensors keep their type
    (Series align on their index); lists/tuples become numpy arrays.
    """
    if isinstance(text_score, (list, tuple)):
        text_score = np.asarray(text_score, dtype=np.float64)
    if isinstance(speech_score, (list, tuple)):
        speech_score = np.asarray(speech_score, dtype=np.float64)
    shape_t, shape_s = np.shape(text_score), np.shape(speech_score)
    if shape_t and shape_s and shape_t != shape_s:
        raise MetricInputError(
            f"Text scores {shape_t} and speech scores {shape_s} differ in shape; "
            "pair each text score with the speech score of the same model and subset."
        )
    return text_score - speech_score


@dataclass(frozen=True)
class LinearFit:
    """OLS fit gap ≈ slope * x + intercept over n points; r2 = 1 - SS_res/SS_tot."""

    slope: float
    intercept: float
    r2: float  # 0.0 by convention when the gap is constant (SS_tot = 0: nothing to explain)
    n: int


def fit_gap(x: Any, gap: Any) -> LinearFit:
    """Regress the GAP on an alignment metric: x [n], gap [n] -> LinearFit (float64 OLS).

    Raises MetricInputError for mismatched lengths, NaN/inf, n < 3 or a constant x (no slope).
    A constant gap gives slope 0, intercept = the gap and r2 = 0.0 (not NaN).
    """
    xv = np.asarray(x, dtype=np.float64).reshape(-1)
    yv = np.asarray(gap, dtype=np.float64).reshape(-1)
    if xv.shape != yv.shape:
        raise MetricInputError(
            f"x has {xv.size} values but gap has {yv.size}; give one metric value and one GAP per checkpoint."
        )
    if not (np.isfinite(xv).all() and np.isfinite(yv).all()):
        raise MetricInputError("x or gap contains NaN/inf; drop checkpoints whose metric or scores are missing.")
    n = int(xv.size)
    if n < MIN_POINTS:
        raise MetricInputError(
            f"A GAP fit needs at least {MIN_POINTS} checkpoints, got {n}; evaluate more checkpoints."
        )
    dx, dy = xv - xv.mean(), yv - yv.mean()
    sxx = float(dx @ dx)
    if sxx <= (1e-12 * float(np.abs(xv).max())) ** 2 * n:
        raise MetricInputError(
            f"All {n} checkpoints have the same metric value ({xv[0]:.6g}); a slope cannot be fitted. "
            "Use checkpoints that differ in alignment, or another metric."
        )
    slope = float(dx @ dy) / sxx
    intercept = float(yv.mean() - slope * xv.mean())
    ss_tot = float(dy @ dy)
    residual = yv - (slope * xv + intercept)
    r2 = 0.0 if ss_tot == 0.0 else 1.0 - float(residual @ residual) / ss_tot
    return LinearFit(slope=slope, intercept=intercept, r2=r2, n=n)


def gap_r2_table(
    df: pd.DataFrame,
    metric: str,
    gap: str = "gap",
    by: Sequence[str] = ("family", "strategy"),
    skip_unfit: bool = False,
) -> pd.DataFrame:
    """One OLS fit of column `gap` on column `metric` per group of `by` (rows = checkpoints).

    -> DataFrame with columns [*by, "metric", "n", "slope", "intercept", "r2"], one row per group
    in sorted group order; the "metric" column holds the metric's column name, so tables of
    several metrics can be concatenated. A group that cannot be fitted (n < 3, constant metric,
    NaN) raises MetricInputError naming the group, or is left out with skip_unfit=True.
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in (*by, metric, gap) if c not in df.columns]
    if missing:
        raise MetricInputError(
            f"The results table has no column(s) {missing}; available: {list(df.columns)}. "
            "Pick the metric and grouping from those columns."
        )
    columns = [*by, "metric", "n", "slope", "intercept", "r2"]
    groups = [((), df)] if not by else df.groupby(by, sort=True, dropna=False)
    rows = []
    for key, group in groups:
        key = key if isinstance(key, tuple) else (key,)
        try:
            fit = fit_gap(group[metric].to_numpy(), group[gap].to_numpy())
        except MetricInputError as exc:
            if skip_unfit:
                continue
            label = ", ".join(f"{c}={k!r}" for c, k in zip(by, key)) or "all rows"
            raise MetricInputError(f"Group {label}: {exc}") from None
        rows.append([*key, metric, fit.n, fit.slope, fit.intercept, fit.r2])
    return pd.DataFrame(rows, columns=columns)
