"""Uncertainty of aggregates: the percentile bootstrap, one function for every bar and score in the app.

    resample:  idx_b = n indices drawn with replacement from 0..n-1,  b = 1..B     (B = N_BOOT)
    replicate: θ_b = statistic(values[idx_b])                                    (default: the mean)
    interval:  [q_{(1-level)/2}(θ_b), q_{(1+level)/2}(θ_b)]  around  θ = statistic(values)

Deterministic: the draws come from numpy's default_rng(seed) (SEED unless given), so a page,
a CLI and a test print the same interval for the same numbers. A paired difference (GAP = text −
speech on the same samples, Δ = condition − Original on the same samples) is bootstrapped as the
mean of the per-sample differences, which keeps the pairing.

The pooled cross-layer CKA gets its spread from the delete-one jackknife instead
(`pooled_cka_interval`; a bootstrap resample repeats samples, which biases HSIC upwards).

Conventions: rows holding NaN (e.g. F1 without reference answers) are dropped before resampling
and `n` counts the rows used; an infinite value raises; n = 1 gives a zero-width interval (flag it with
`diagnostics.small_n`); n = 0 raises. The percentile interval undercovers a little for very small n
(about 0.90 at n = 10 for a normal mean); `tests/test_stats.py` measures its coverage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lsl_core.errors import MetricInputError

N_BOOT = 2000  # bootstrap replicates (the interval ends move by < 1% of the width between seeds at this B)
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval; arrays when the statistic returns an array."""

    estimate: float | np.ndarray
    low: float | np.ndarray
    high: float | np.ndarray
    n: int  # rows used (NaN rows dropped)
    level: float = LEVEL

    @property
    def half_width(self) -> float | np.ndarray:
        return (np.asarray(self.high) - np.asarray(self.low)) / 2.0


def bootstrap_indices(n: int, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """The resampling scheme: [n_boot, n] indices drawn uniformly with replacement from 0..n-1."""
    if n <= 0:
        raise MetricInputError("A bootstrap needs at least one value; the group is empty.")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _finite_rows(v: np.ndarray) -> np.ndarray:
    """[n] bool: the rows (first axis) that hold no NaN."""
    if v.dtype.kind not in "fc" or v.size == 0:
        return np.ones(v.shape[0], dtype=bool)
    return ~np.isnan(v.reshape(v.shape[0], -1)).any(axis=1)


def _labels_in_order(labels: np.ndarray) -> np.ndarray:
    """[n] labels -> [n] group index 0..G-1, groups numbered in order of first appearance (as a pandas
    groupby(sort=False) lists them, so a cluster bootstrap draws what a bootstrap of those group means draws)."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inv.ravel()]


def bootstrap_ci(values, statistic: Callable[[np.ndarray], np.ndarray | float] | None = None, *,
                 n_boot: int = N_BOOT, level: float = LEVEL, seed: int = SEED, groups=None) -> Interval:
    """Percentile bootstrap interval of `statistic` over the rows of `values`.

    values: [n] or [n, ...] (rows = independent samples; NaN rows dropped). statistic(rows [m, ...])
    -> float or array [...]; None = the mean over rows (vectorised over all replicates). To bootstrap
    a statistic of items held elsewhere (e.g. pooled CKA from Gram matrices), pass values = arange(n)
    and a statistic of the resampled index array. groups [n] (labels; only with the mean): resample
    whole groups, a cluster bootstrap for rows that are not independent (the voices of one question);
    a replicate is the mean over the drawn groups' rows, groups numbered in order of first appearance.
    One row per group: the ordinary bootstrap, draw for draw; groups of equal size: the bootstrap of the
    group means (in that order), draw for draw.
    """
    if not 0.0 < level < 1.0:
        raise MetricInputError(f"bootstrap_ci: level must be in (0, 1), got {level}.")
    if n_boot < 1:
        raise MetricInputError(f"bootstrap_ci: n_boot must be positive, got {n_boot}.")
    raw = np.asarray(values)
    if raw.ndim == 0:
        raise MetricInputError("bootstrap_ci needs an array of values, one row per sample; got a scalar.")
    keep = _finite_rows(raw)
    v = raw[keep]
    n = v.shape[0]
    if n == 0:
        raise MetricInputError("A bootstrap needs at least one value; the group is empty.")
    if v.dtype.kind in "fc" and np.isinf(v).any():  # a NaN is missing (dropped); an infinite value is an error
        raise MetricInputError("bootstrap_ci: the values hold an infinite number (a score divided by zero?); "
                               "fix or drop those rows (NaN rows are left out).")
    if groups is not None:
        if statistic is not None:
            raise MetricInputError("bootstrap_ci: groups (a cluster bootstrap) work with the mean only.")
        if np.shape(groups) != raw.shape[:1]:
            raise MetricInputError(f"bootstrap_ci: groups need one label per row ({raw.shape[0]}), got shape "
                                   f"{np.shape(groups)}.")
    if statistic is None:
        v = v.astype(np.float64)
        estimate = v.mean(axis=0)
        inv = np.arange(n) if groups is None else _labels_in_order(np.asarray(groups)[keep])  # [n] group of row
        g = int(inv.max()) + 1
        idx = bootstrap_indices(g, n_boot, seed)  # [B, G] groups drawn
        counts = np.bincount((np.arange(n_boot)[:, None] * g + idx).ravel(), minlength=n_boot * g)
        counts = counts.reshape(n_boot, g).astype(np.float64)[:, inv]  # [B, n] how often each row was drawn
        reps = (counts @ v.reshape(n, -1) / counts.sum(axis=1, keepdims=True)).reshape(n_boot, *v.shape[1:])
    else:
        idx = bootstrap_indices(n, n_boot, seed)  # [B, n]
        estimate = np.asarray(statistic(v), dtype=np.float64)
        reps = np.stack([np.asarray(statistic(v[i]), dtype=np.float64) for i in idx])  # [B, ...]
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [alpha, 1.0 - alpha], axis=0)
    if statistic is None:  # a mean lies within [min, max]: removes the matmul's rounding (constants stay exact)
        low, high = np.maximum(low, v.min(axis=0)), np.minimum(high, v.max(axis=0))
    low, high = np.minimum(low, estimate), np.maximum(high, estimate)
    as_out = (lambda x: float(x)) if np.ndim(estimate) == 0 else (lambda x: np.asarray(x))  # noqa: E731
    return Interval(as_out(estimate), as_out(low), as_out(high), int(n), level)


def grouped_ci(df, columns: Sequence[str], by: Sequence[str] = (), *, n_boot: int = N_BOOT,
               level: float = LEVEL, seed: int = SEED, cluster: str | None = None):
    """Mean and bootstrap interval of each column per group: -> DataFrame with by..., n, col, col_lo, col_hi.

    Groups keep their order of first appearance; `n` is the group size (each column drops its own NaNs).
    cluster: a column whose equal values are resampled together (e.g. "question": the voices of one
    question are not independent draws); None = rows independent.
    """
    import pandas as pd

    by = [b for b in by]
    missing = [c for c in [*columns, *by, *([cluster] if cluster else [])] if c not in df.columns]
    if missing:
        raise MetricInputError(f"grouped_ci: column(s) {missing} not in the table; available {list(df.columns)}.")
    groups = df.groupby(by, sort=False, dropna=False) if by else [((), df)]
    out = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        rec = dict(zip(by, key))
        rec["n"] = len(g)
        for c in columns:
            vals = g[c].to_numpy(dtype=np.float64)
            if np.isnan(vals).all():
                rec[c] = rec[f"{c}_lo"] = rec[f"{c}_hi"] = np.nan
                continue
            ci = bootstrap_ci(vals, n_boot=n_boot, level=level, seed=seed,
                              groups=None if cluster is None else g[cluster].to_numpy())
            rec[c], rec[f"{c}_lo"], rec[f"{c}_hi"] = ci.estimate, ci.low, ci.high
        out.append(rec)
    return pd.DataFrame(out)


# =============================================================================== pooled CKA


def pooled_cka_interval(xs, yt, estimate=None, *, level: float = LEVEL, groups=None) -> Interval:
    """Spread over samples of the mean-pooled cross-layer CKA: estimate ± z·SE, SE from the delete-one jackknife.

    xs [L+1, N, d] pooled speech states, yt [L+1, N, d] pooled text states (row n = the same sample).
    The statistic is the pooled CKA with the unbiased HSIC estimator over the N samples (what
    `cka.MinibatchCKA` computes for one batch); estimate: the matrix the view shows ([L+1, L+1];
    default that statistic). Why not the bootstrap here: a resample repeats samples, and a repeated
    sample enters the off-diagonal Gram terms as a perfect match, which shifts every replicate of
    an HSIC estimate upwards; the jackknife leaves one sample out and never repeats one. groups [N]
    (labels, e.g. the question of each clip): leave one group out instead (the delete-a-group jackknife,
    for samples that are not independent); one sample per group is the plain jackknife.
    """
    import torch
    from scipy.stats import norm

    from lsl_core.metrics.cka import MIN_PAIRS, _unbiased_hsic_matrix

    X = torch.as_tensor(np.asarray(xs, dtype=np.float64))
    Y = torch.as_tensor(np.asarray(yt, dtype=np.float64))
    if X.ndim != 3 or Y.ndim != 3 or X.shape[1] != Y.shape[1]:
        raise MetricInputError(f"pooled_cka_interval needs xs, yt of shape [L+1, N, d] with the same N; got "
                               f"{tuple(X.shape)} and {tuple(Y.shape)}.")
    n = X.shape[1]
    if n < MIN_PAIRS + 1:  # every leave-one-out set needs MIN_PAIRS samples
        raise MetricInputError(f"The spread of pooled CKA needs at least {MIN_PAIRS + 1} samples, got {n}.")
    inv = np.arange(n) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    if inv.shape != (n,):
        raise MetricInputError(f"pooled_cka_interval: groups need one label per sample ({n}), got shape "
                               f"{np.shape(groups)}.")
    g = int(inv.max()) + 1
    if g < 2 or n - np.bincount(inv).max() < MIN_PAIRS:
        raise MetricInputError(f"The spread of pooled CKA over groups needs at least 2 groups and {MIN_PAIRS} "
                               f"samples outside each; got {g} groups of {n} samples.")
    X, Y = X - X.mean(dim=1, keepdim=True), Y - Y.mean(dim=1, keepdim=True)  # rounding only (HSIC_1 is shift-free)
    K = torch.bmm(X, X.transpose(1, 2))  # [A, N, N] linear Grams
    G = torch.bmm(Y, Y.transpose(1, 2))  # [B, N, N]

    def cka(keep: torch.Tensor) -> np.ndarray:
        k, g = K[:, keep][:, :, keep], G[:, keep][:, :, keep]
        xy = _unbiased_hsic_matrix(k, g)  # [A, B]
        xx = torch.diagonal(_unbiased_hsic_matrix(k, k))  # [A]
        yy = torch.diagonal(_unbiased_hsic_matrix(g, g))  # [B]
        ok = (xx > 0)[:, None] & (yy > 0)[None, :]
        den = torch.sqrt(torch.where(ok, xx[:, None] * yy[None, :], torch.ones_like(xy)))
        return torch.where(ok, xy / den, torch.zeros_like(xy)).numpy()

    full = cka(torch.arange(n))
    loo = np.stack([cka(torch.from_numpy(np.flatnonzero(inv != k))) for k in range(g)])  # [G, A, B] leave out k
    se = np.sqrt((g - 1) / g * ((loo - loo.mean(axis=0)) ** 2).sum(axis=0))  # jackknife standard error
    est = full if estimate is None else np.asarray(estimate, dtype=np.float64)
    z = float(norm.ppf(0.5 + level / 2.0))
    return Interval(est, est - z * se, est + z * se, int(n), level)


# =============================================================================== the app's aggregates
def summary_intervals(samples, scores: Sequence[str] = ("f1", "containment"), *, n_boot: int = N_BOOT,
                      seed: int = SEED):
    """95% intervals for evaluate's checkpoint x voice summary, from its per-sample rows.

    samples: one row per checkpoint x sample (columns checkpoint, voice, unseen, text_<s>, speech_<s>).
    Groups as `evaluate.summarize`: each voice, "seen" (unseen == False) and "all". Per group and
    score: text_<s>, speech_<s> and gap_<s> = mean(text − speech) on the same samples (paired), each
    with _lo / _hi; n = samples. Fractions 0..1, like the summary. With a `question` column the
    intervals are over questions (a question's voices drawn together, as evaluate's headline does).
    """
    import pandas as pd

    df = samples.copy()
    cols = []
    for sc in scores:
        if f"text_{sc}" in df.columns and f"speech_{sc}" in df.columns:
            df[f"gap_{sc}"] = df[f"text_{sc}"] - df[f"speech_{sc}"]
            cols += [f"text_{sc}", f"speech_{sc}", f"gap_{sc}"]
    if "agreement" in df.columns:
        cols.append("agreement")
    parts = [df]
    if "unseen" in df.columns:
        parts.append(df[~df["unseen"].astype(bool)].assign(voice="seen"))
    parts.append(df.assign(voice="all"))
    pooled = pd.concat([p for p in parts if len(p)], ignore_index=True)
    by = [c for c in ("checkpoint", "voice") if c in pooled.columns]
    return grouped_ci(pooled, cols, by, n_boot=n_boot, seed=seed,
                      cluster="question" if "question" in pooled.columns else None)


# Table 1's score columns (per-sample rows) -> their names in its tables
TABLE1_METRIC_NAMES = {"containment": "containment", "f1": "F1", "agreement": "agreement"}
# paired_delta's keys: per metric Δ <name>, its interval, then n
PAIRED_DELTA_COLUMNS = (*(f"Δ {n}{x}" for n in TABLE1_METRIC_NAMES.values() for x in ("", "_lo", "_hi")), "n")


def paired_delta(a, b, *, scale: float = 100.0, n_boot: int = N_BOOT, seed: int = SEED) -> dict:
    """Condition a − condition b on the samples both have: a, b per-sample rows (pandas, indexed by sample_id, one
    row per sample) with Table 1's score columns. Per metric (percent: scale) the mean paired difference
    Δ <name>, its 95% bootstrap interval (Δ <name>_lo / _hi, bootstrap_ci of the per-sample differences) and n
    (PAIRED_DELTA_COLUMNS); NaN where no sample has both scores."""
    common = a.index.intersection(b.index)
    rec: dict = {}
    for col, name in TABLE1_METRIC_NAMES.items():
        diff = scale * (a.loc[common, col].to_numpy(dtype=np.float64) - b.loc[common, col].to_numpy(dtype=np.float64))
        ok = ~np.isnan(diff)
        ci = bootstrap_ci(diff[ok], n_boot=n_boot, seed=seed) if ok.any() else None
        rec[f"Δ {name}"] = ci.estimate if ci else np.nan
        rec[f"Δ {name}_lo"], rec[f"Δ {name}_hi"] = (ci.low, ci.high) if ci else (np.nan, np.nan)
    rec["n"] = len(common)
    return rec


def condition_intervals(rows, columns: Sequence[str] = ("containment", "f1", "agreement"), *,
                        names: dict | None = None, baseline: str = "original", scale: float = 100.0,
                        n_boot: int = N_BOOT, seed: int = SEED):
    """95% intervals for Table 1 (intervention_eval.table1) from its per-sample rows.

    rows: one row per sample x condition (columns sample_id, condition, title, *columns). Returns one
    row per condition title (table1's index, baseline first) with <name>_lo / _hi and Δ <name>_lo /
    _hi, in percent (scale): the mean of the condition's rows, and the mean of per-sample differences
    condition − baseline (paired on sample_id).
    """
    import pandas as pd

    names = names or TABLE1_METRIC_NAMES
    order = [baseline] + [c for c in dict.fromkeys(rows["condition"]) if c != baseline]
    base = rows[rows["condition"] == baseline].set_index("sample_id")
    out = []
    for cond in order:
        sub = rows[rows["condition"] == cond]
        if sub.empty:
            continue
        rec = {"condition": sub["title"].iloc[0] if "title" in sub.columns else cond}
        for col in columns:
            if col not in sub.columns:
                continue
            nm = names.get(col, col)
            ci = bootstrap_ci(scale * sub[col].to_numpy(dtype=np.float64), n_boot=n_boot, seed=seed) \
                if sub[col].notna().any() else None
            rec[f"{nm}_lo"], rec[f"{nm}_hi"] = (ci.low, ci.high) if ci else (np.nan, np.nan)
            paired = sub.set_index("sample_id")[col] - base[col].reindex(sub["sample_id"]).to_numpy()
            ci = bootstrap_ci(scale * paired.to_numpy(dtype=np.float64), n_boot=n_boot, seed=seed) \
                if paired.notna().any() else None
            rec[f"Δ {nm}_lo"], rec[f"Δ {nm}_hi"] = (ci.low, ci.high) if ci else (np.nan, np.nan)
        out.append(rec)
    return pd.DataFrame(out).set_index("condition")


__all__ = ["N_BOOT", "LEVEL", "SEED", "Interval", "bootstrap_indices", "bootstrap_ci", "grouped_ci",
           "pooled_cka_interval", "summary_intervals", "condition_intervals", "TABLE1_METRIC_NAMES",
           "PAIRED_DELTA_COLUMNS", "paired_delta"]
