"""The modality GAP and its relation to alignment (DESIGN §3).

    GAP = M^t - M^s            benchmark score on text input minus on speech input, same model
    GAP ~ slope * x + intercept    ordinary least squares over checkpoints, x = f̄ or APS
    R² = 1 - SS_res / SS_tot

A negative slope with high R² says: the better speech and text align, the smaller the gap.

Checkpoints of one training run are not independent draws: anything that improves with training fits
the GAP of that run, so an R² is read next to its null baselines (`gap_r2_table(resamples=...,
control="step")`):

    r2_interval   percentile bootstrap 95% CI of R² over checkpoints
    r2_null       the R² that GAP reaches with a randomly re-paired metric (95th percentile) and the
                  permutation p-value of the observed R²
    r2_added      R²(GAP ~ control + x) - R²(GAP ~ control): what x explains beyond a control such as
                  the training step (the GAP's own trend with training); its CI: r2_added_interval

R² is undefined (0/0) when every checkpoint has the same GAP: fit_gap refuses it, and a bootstrap resample
whose GAP is constant is left out of an interval (as one with < 3 distinct x is), never counted as R² = 0.
"The same" allows float rounding (`_constant`: a spread within 1e-12 of the GAP's size), so that GAPs such as
0.5 - 0.2 and 0.7 - 0.4 (equal but for the last bit) never give an R² of rounding noise.

Statistics in float64 (numpy).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lsl_core.errors import MetricInputError
from lsl_core.metrics.stats import N_BOOT, SEED

MIN_POINTS = 3  # a line through 2 points always fits perfectly (R² = 1 says nothing)
MIN_ADDED_POINTS = 4  # GAP ~ 1 + control + x passes through any 3 points (its R² = 1 says nothing)
CONSTANT_REL = 1e-12  # values whose spread is at most this fraction of their size are one value (float rounding)


def _constant(ss: Any, v: np.ndarray) -> Any:
    """Is a column constant up to rounding? ss = its centred sum of squares ([B] or scalar), v its values ([B, n]
    or [n]): ss <= n (CONSTANT_REL * max|v|)^2. GAPs of 0.3 written as 0.5 - 0.2 and 0.7 - 0.4 differ in the last
    bit; an R² of that difference would be rounding noise (and an exactly constant column gives ss = 0)."""
    v = np.asarray(v, dtype=np.float64)
    return ss <= v.shape[-1] * (CONSTANT_REL * np.abs(v).max(axis=-1)) ** 2


def is_constant(values: Any) -> bool:
    """Are these values ([n]) one value up to float rounding (the rule every R² here uses)?"""
    v = np.asarray(values, dtype=np.float64).ravel()
    return v.size > 0 and bool(_constant(float(((v - v.mean()) ** 2).sum()), v))


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
    r2: float  # in [0, 1]; a constant gap (SS_tot = 0, R² undefined) is refused by fit_gap
    n: int


def fit_gap(x: Any, gap: Any) -> LinearFit:
    """Regress the GAP on an alignment metric: x [n], gap [n] -> LinearFit (float64 OLS).

    Raises MetricInputError for mismatched lengths, NaN/inf, n < 3, a constant x (no slope) or a
    constant gap (R² = 1 - SS_res/SS_tot is 0/0: nothing to explain, not "explains nothing").
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
    if _constant(sxx, xv):
        raise MetricInputError(
            f"All {n} checkpoints have the same metric value ({xv[0]:.6g}); a slope cannot be fitted. "
            "Use checkpoints that differ in alignment, or another metric."
        )
    ss_tot = float(dy @ dy)
    if _constant(ss_tot, yv):
        raise MetricInputError(
            f"All {n} checkpoints have the same GAP ({yv[0]:.6g}); R² is undefined (there is no variation to "
            "explain). Use checkpoints whose GAP differs, or another GAP."
        )
    slope = float(dx @ dy) / sxx
    intercept = float(yv.mean() - slope * xv.mean())
    residual = yv - (slope * xv + intercept)
    r2 = 1.0 - float(residual @ residual) / ss_tot
    return LinearFit(slope=slope, intercept=intercept, r2=r2, n=n)


def _r2_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R² of one-predictor OLS fits, row by row: x [B, n], y [B, n] -> [B] (= squared Pearson r;
    NaN where x or y is constant up to rounding (`_constant`): R² undefined)."""
    dx = x - x.mean(axis=1, keepdims=True)
    dy = y - y.mean(axis=1, keepdims=True)
    sxx, syy, sxy = (dx * dx).sum(1), (dy * dy).sum(1), (dx * dy).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = sxy * sxy / (sxx * syy)
    r2[_constant(syy, y) | _constant(sxx, x)] = np.nan
    return np.clip(r2, 0.0, 1.0)


def _pairs(x: Any, y: Any, *more: np.ndarray) -> tuple[np.ndarray, ...]:
    """x, y (and more columns [n]) -> float64 [n] each, checked as fit_gap checks them (n >= 3, finite, x not
    constant), in one canonical order (by x, then y, then the rest), so that resampling gives the same
    interval and p-value however the checkpoints are listed."""
    fit_gap(x, y)
    cols = [np.asarray(v, dtype=np.float64).reshape(-1) for v in (x, y, *more)]
    order = np.lexsort(cols[::-1])
    return tuple(v[order] for v in cols)


def _distinct(v: np.ndarray) -> np.ndarray:
    """[B, n] -> [B]: how many distinct values each row holds."""
    return 1 + (np.diff(np.sort(v, axis=1), axis=1) != 0).sum(axis=1)


def _resamples(x: np.ndarray, n_boot: int, seed: int, min_checkpoints: int = 0) -> np.ndarray:
    """Bootstrap resamples of n checkpoints: [B, n] indices, one `rng.integers(0, n, n)` per resample
    (seeded), keeping those with at least 3 distinct x (a slope needs them) and min_checkpoints distinct
    checkpoints (a fit with more coefficients needs more)."""
    n = x.size
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(0, n, n) for _ in range(n_boot)]) if n_boot else np.zeros((0, n), int)
    keep = (_distinct(x[idx]) >= MIN_POINTS) & (_distinct(idx) >= min_checkpoints)
    return idx[keep]


def _interval(values: np.ndarray) -> tuple[float, float]:
    """Percentile 95% interval of the defined (finite) replicates; (NaN, NaN) when there are none."""
    values = values[np.isfinite(values)]
    if not values.size:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [0.025, 0.975])
    return float(lo), float(hi)


def r2_interval(x: Any, gap: Any, n_boot: int = N_BOOT, seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the fit's R² over checkpoints: x [n], gap [n] -> (lo, hi).

    Each resample draws n checkpoints with replacement (`rng.integers(0, n, n)` per resample, seeded);
    resamples with fewer than 3 distinct x (no slope) or a constant GAP (no R²) are skipped; (NaN, NaN)
    when none is left.
    """
    xv, yv = _pairs(x, gap)
    idx = _resamples(xv, n_boot, seed)
    return _interval(_r2_rows(xv[idx], yv[idx]))


def r2_null(x: Any, gap: Any, n_perm: int = N_BOOT, seed: int = SEED) -> tuple[float, float]:
    """The R² a metric unrelated to the GAP reaches on these checkpoints: GAP re-paired with x at random.

    x [n], gap [n] -> (null95, p): the 95th percentile of the permutation R² and the permutation p-value
    of the observed R² (share of pairings whose R² is at least as high). Every pairing is enumerated
    when n! <= n_perm (exact p, the observed pairing included); otherwise n_perm random ones, p =
    (1 + hits) / (1 + n_perm). Exchangeable checkpoints are assumed: along one run both x and GAP
    trend with training, so read p next to `r2_added(..., control=step)`.
    """
    xv, yv = _pairs(x, gap)
    n = xv.size
    observed = float(_r2_rows(xv[None], yv[None])[0])
    if math.factorial(n) <= n_perm:
        perms = np.array(list(itertools.permutations(range(n))))
        null = _r2_rows(np.broadcast_to(xv, perms.shape), yv[perms])
        p = float(np.mean(null >= observed - 1e-12))
    else:
        rng = np.random.default_rng(seed)
        perms = rng.permuted(np.tile(np.arange(n), (n_perm, 1)), axis=1)
        null = _r2_rows(np.broadcast_to(xv, perms.shape), yv[perms])
        p = float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_perm))
    return float(np.quantile(null, 0.95)), p


def _r2_added_rows(x: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """R²(y ~ 1 + c + x) - R²(y ~ 1 + c), row by row: x, y, c [B, n] -> [B] in [0, 1].

    With x and y residualised on c (rx, ry; centred), the added R² is (rx . ry)^2 / (rx . rx) / SS_tot(y):
    0 where x is (numerically) a linear function of c; NaN where x or y is constant up to rounding (R² undefined).
    """
    flat = _constant(((y - y.mean(axis=1, keepdims=True)) ** 2).sum(1), y)  # [B]
    flat_x = _constant(((x - x.mean(axis=1, keepdims=True)) ** 2).sum(1), x)  # [B]
    x, y, c = (v - v.mean(axis=1, keepdims=True) for v in (x, y, c))
    scc = (c * c).sum(1)
    safe = np.where(scc > 0.0, scc, 1.0)
    rx = x - ((x * c).sum(1) / safe * (scc > 0.0))[:, None] * c
    ry = y - ((y * c).sum(1) / safe * (scc > 0.0))[:, None] * c
    sxx, syy, rxx = (x * x).sum(1), (y * y).sum(1), (rx * rx).sum(1)
    ok = ~flat & (rxx > 1e-12 * sxx)
    with np.errstate(divide="ignore", invalid="ignore"):
        added = np.where(ok, (rx * ry).sum(1) ** 2 / np.where(ok, rxx * syy, 1.0), 0.0)
    added[flat | flat_x] = np.nan
    return np.clip(added, 0.0, 1.0)


def _control(control: Any, x: np.ndarray) -> np.ndarray:
    """The control column [n], checked: one finite value per checkpoint, and n >= MIN_ADDED_POINTS."""
    cv = np.asarray(control, dtype=np.float64).reshape(-1)
    if cv.shape != x.shape or not np.isfinite(cv).all():
        raise MetricInputError(f"control has {cv.size} values (or NaN/inf) for {x.size} checkpoints; "
                               "give one finite control value per checkpoint.")
    if x.size < MIN_ADDED_POINTS:
        raise MetricInputError(f"What a metric adds beyond a control needs at least {MIN_ADDED_POINTS} checkpoints, "
                               f"got {x.size}: GAP ~ control + metric passes through any 3 points.")
    return cv


def r2_added(x: Any, gap: Any, control: Any) -> float:
    """R² that x adds to an OLS of the GAP on `control` (e.g. the training step): x, gap, control [n] ->
    R²(gap ~ 1 + control + x) - R²(gap ~ 1 + control), in [0, 1]. Needs n >= 4 (MIN_ADDED_POINTS) and a
    GAP that varies (MetricInputError otherwise).

    Near 0: x explains nothing the GAP's own trend with the control does not; near R²(gap ~ x): the
    control explains none of what x does.
    """
    xv, yv, cv = _pairs(x, gap, _control(control, np.asarray(x, dtype=np.float64).reshape(-1)))
    return float(_r2_added_rows(xv[None], yv[None], cv[None])[0])


def r2_added_interval(x: Any, gap: Any, control: Any, n_boot: int = N_BOOT, seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of `r2_added` over checkpoints -> (lo, hi): the draws of r2_interval, keeping
    those with at least 4 distinct checkpoints (fewer fit GAP ~ control + x exactly) and a GAP that varies."""
    xv, yv, cv = _pairs(x, gap, _control(control, np.asarray(x, dtype=np.float64).reshape(-1)))
    idx = _resamples(xv, n_boot, seed, MIN_ADDED_POINTS)
    return _interval(_r2_added_rows(xv[idx], yv[idx], cv[idx]))


def gap_r2_table(
    df: pd.DataFrame,
    metric: str,
    gap: str = "gap",
    by: Sequence[str] = ("family", "strategy"),
    skip_unfit: bool = False,
    *,
    resamples: int = 0,
    control: str | None = None,
    seed: int = SEED,
) -> pd.DataFrame:
    """One OLS fit of column `gap` on column `metric` per group of `by` (rows = checkpoints).

    -> DataFrame with columns [*by, "metric", "n", "slope", "intercept", "r2"], one row per group
    in sorted group order; the "metric" column holds the metric's column name, so tables of
    several metrics can be concatenated. A group that cannot be fitted (n < 3, constant metric,
    NaN) raises MetricInputError naming the group, or is left out with skip_unfit=True.

    Null baselines: resamples > 0 adds r2_lo, r2_hi (`r2_interval`) and r2_null95, p_perm (`r2_null`),
    each with that many resamples; control (a column, e.g. "step") adds r2_added (`r2_added`; NaN on
    the control's own row, and where the group has fewer than 4 checkpoints) and, with resamples, its CI
    r2_added_lo, r2_added_hi (`r2_added_interval`).
    """
    by = [by] if isinstance(by, str) else list(by)
    missing = [c for c in (*by, metric, gap) if c not in df.columns]
    if missing:
        raise MetricInputError(
            f"The results table has no column(s) {missing}; available: {list(df.columns)}. "
            "Pick the metric and grouping from those columns."
        )
    if control is not None and control not in df.columns:
        raise MetricInputError(f"The results table has no control column {control!r}; available: "
                               f"{list(df.columns)}.")
    columns = [*by, "metric", "n", "slope", "intercept", "r2"]
    columns += ["r2_lo", "r2_hi", "r2_null95", "p_perm"] if resamples > 0 else []
    columns += ["r2_added"] if control is not None else []
    columns += ["r2_added_lo", "r2_added_hi"] if control is not None and resamples > 0 else []
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
        row = [*key, metric, fit.n, fit.slope, fit.intercept, fit.r2]
        x, y = group[metric].to_numpy(), group[gap].to_numpy()
        if resamples > 0:
            row += [*r2_interval(x, y, resamples, seed), *r2_null(x, y, resamples, seed)]
        if control is not None:
            c = group[control].to_numpy()
            own = control == metric or fit.n < MIN_ADDED_POINTS  # the baseline's own row, or a saturated fit
            row.append(float("nan") if own else r2_added(x, y, c))
            if resamples > 0:
                row += [float("nan")] * 2 if own else [*r2_added_interval(x, y, c, resamples, seed)]
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def gap_fits(
    df: pd.DataFrame,
    metrics: Sequence[str],
    gap: str = "gap",
    by: Sequence[str] = ("family", "strategy"),
    *,
    control: str | None = "step",
    resamples: int = N_BOOT,
    seed: int = SEED,
) -> pd.DataFrame:
    """GAP vs each alignment metric with its null baselines, as the Checkpoints page shows them.

    df: one row per checkpoint (results.gap_table). -> gap_r2_table rows of every metric present in df,
    then the control's own fit (the baseline: how much of the GAP training progress alone explains),
    with r2_lo/r2_hi/r2_null95/p_perm (`resamples`) and r2_added over the control; groups that cannot be
    fitted are left out. Without a `control` column in df the control is dropped.
    """
    control = control if control is not None and control in df.columns else None
    xs = [m for m in metrics if m in df.columns and m != control] + ([control] if control else [])
    tables = [gap_r2_table(df, x, gap, by, skip_unfit=True, resamples=resamples, control=control, seed=seed)
              for x in xs]
    if not tables:
        return pd.DataFrame()
    return pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)
