"""Figures across checkpoints: per-layer curves per checkpoint, trends over training, GAP scatter with fits."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lsl_core.viz.layout import _base_layout, _layer_trace, _mark_final_layer
from lsl_core.viz.style import (
    DASHES,
    LAYER_METRICS,
    PERCENT_DIGITS,
    SCALAR_LABELS,
    SYMBOLS,
    VALUE_DIGITS,
    SeriesStyle,
    categorical_colors,
    error_bars,
    is_score_column,
    metric_axis_title,
    strategy_style,
)


def checkpoint_curves(df: pd.DataFrame, metric: str, *, label: str = "checkpoint", order: str = "step",
                      title: str | None = None) -> go.Figure:
    """One per-layer curve per checkpoint on one plot (e.g. a training trajectory).

    df: one row per checkpoint with column `label` (name), `order` (e.g. step; sorts and colours
    the curves dark -> bright) and `metric` holding a per-layer sequence [L+1] (lists or arrays,
    e.g. the mean over samples of seq_cos). Line styles also differ, so the plot reads in grey.
    """
    if metric not in df.columns:
        raise ValueError(f"column {metric!r} not in the table; available: {list(df.columns)}")
    rows = df.sort_values(order, kind="stable") if order in df.columns else df
    colors = categorical_colors(len(rows))
    fig = go.Figure()
    L = 0
    for k, (_, r) in enumerate(rows.iterrows()):
        y = np.asarray(r[metric], dtype=np.float64)
        L = max(L, y.shape[0] - 1)
        name = f"{r[label]}" + (f" (step {r[order]})" if order in rows.columns and order != label else "")
        fig.add_trace(_layer_trace(y, name, colors[k], SYMBOLS[k % len(SYMBOLS)], DASHES[k % len(DASHES)],
                                   hover_label=metric))
    _mark_final_layer(fig, L)
    ylabel, _ = LAYER_METRICS.get(metric, (metric, True))
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text=metric_axis_title(metric))
    return _base_layout(fig, title or f"{ylabel} per layer, one curve per checkpoint", height=420)


def agreement_title(rows: pd.DataFrame, voice: str) -> str:
    """Title of the agreement-across-training figure: the cascade's agreement over these checkpoints' rows
    (column cascade_agreement, a share), as its range when the checkpoints' cascades differ."""
    c = 100 * rows["cascade_agreement"].dropna()
    cascade = "–" if c.empty else (f"{c.iloc[0]:.1f} %" if c.max() - c.min() < 0.05
                                   else f"{c.min():.1f}–{c.max():.1f} %")
    return f"speech vs text answer agreement, voice '{voice}', 95% CI (cascade: {cascade})"


def trend_curves(df: pd.DataFrame, y: str, *, x: str = "step", group: str = "trajectory",
                 hover: str = "checkpoint", title: str | None = None, baseline: str | None = None,
                 baseline_label: str = "null baseline") -> go.Figure:
    """A scalar across training: one line per group (e.g. trajectory), points sorted by x (step).

    Each group takes its strategy's style (`strategy_style` of the group name's last '·' part); score
    columns (is_score_column) are drawn in percent; y_lo / y_hi columns, when present, become 95%
    error bars. `baseline`: a column drawn per group as a thin dotted line of the same colour (e.g.
    agreement_other_q, what answer style alone reaches), named '<group> · <baseline_label>'.
    """
    for c in (x, y, *([baseline] if baseline else [])):
        if c not in df.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(df.columns)}")
    groups = list(dict.fromkeys(df[group])) if group in df.columns else [None]
    scale = 100.0 if is_score_column(y) else 1.0
    unit = " %" if scale == 100.0 else ""
    fmt = f".{PERCENT_DIGITS}f" if scale == 100.0 else f".{VALUE_DIGITS}f"
    fig = go.Figure()
    for k, g in enumerate(groups):
        sub = (df if g is None else df[df[group] == g]).sort_values(x, kind="stable")
        st = strategy_style(str(g)) if g is not None else SeriesStyle(categorical_colors(1)[0])
        err = error_bars(sub, y, scale)
        ci_text = ""
        if err is not None:
            ci_text = (f"<br>95% CI [%{{customdata[0]:{fmt}}}, %{{customdata[1]:{fmt}}}]{unit}"
                       " (n = %{customdata[2]})")
        custom = (np.stack([scale * sub[f"{y}_lo"], scale * sub[f"{y}_hi"],
                            sub["n"] if "n" in sub.columns else np.full(len(sub), np.nan)], axis=1)
                  if err is not None else None)
        fig.add_trace(go.Scatter(
            x=sub[x], y=scale * sub[y], mode="lines+markers", name=str(g if g is not None else y),
            line=dict(color=st.color, dash=st.dash, width=2),
            marker=dict(symbol=st.symbol, size=9, color=st.color), error_y=err, customdata=custom,
            text=sub[hover] if hover in sub.columns else None,
            hovertemplate="%{text}<br>" + f"{x} = %{{x}}<br>{y} = %{{y:{fmt}}}{unit}" + ci_text + "<extra></extra>",
        ))
        if baseline:  # same colour as its curve: open markers and its own dash tell it apart in grey too
            fig.add_trace(go.Scatter(
                x=sub[x], y=scale * sub[baseline], mode="lines+markers",
                name=f"{g if g is not None else y} · {baseline_label}",
                line=dict(color=st.color, dash="dot" if st.dash != "dot" else "longdash", width=1),
                marker=dict(symbol=_open_symbol(st.symbol), size=6, color=st.color),
                text=sub[hover] if hover in sub.columns else None,
                hovertemplate="%{text}<br>" + f"{x} = %{{x}}<br>{baseline} ({baseline_label}) = "
                              f"%{{y:{fmt}}}{unit}<extra></extra>"))
    fig.update_xaxes(title_text="training step" if x == "step" else x)
    label = metric_axis_title(y)
    fig.update_yaxes(title_text=label + (" (%)" if scale == 100.0 and "%" not in label and "points" not in label
                                         else ""))
    _base_layout(fig, title or f"{SCALAR_LABELS.get(y, y)} across training", height=420)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0),
                      margin=dict(b=110))
    return fig


def _open_symbol(symbol: str) -> str:
    """The open (outlined) variant of a Plotly marker symbol: 'square' -> 'square-open'."""
    return symbol if "-open" in symbol else f"{symbol}-open"


def _r2_ci(fit_row) -> str:
    """' [lo, hi], null 95% q' of a fit row with gap_r2_table's null columns, else ''."""
    if "r2_lo" not in fit_row or pd.isna(fit_row["r2_lo"]):
        return ""
    return f" [{fit_row['r2_lo']:.2f}, {fit_row['r2_hi']:.2f}], null 95% {fit_row['r2_null95']:.2f}"


def gap_scatter(df: pd.DataFrame, x: str, fits: pd.DataFrame | None = None, *, gap: str = "gap",
                by: Sequence[str] = ("family", "strategy"), label: str = "checkpoint",
                gap_label: str = "GAP (text − speech score, percentage points)", title: str | None = None,
                gap_scale: float = 100.0) -> go.Figure:
    """GAP against an alignment metric, one point per checkpoint, with one OLS line per group.

    df: one row per checkpoint with columns x, gap, `label` and the `by` columns. fits: the output of
    metrics.gap.gap_r2_table (columns *by, slope, intercept, r2, n); each group's line is drawn over
    its x range and its R² is shown in the legend (with its bootstrap CI and permutation null when fits
    has them: gap_r2_table(resamples=...)). Groups take their strategy's style (strategy_style);
    legend names show only the `by` values that differ between groups. gap_scale: the GAP (a
    difference of fractions) is drawn in percentage points (100); R² does not depend on it.
    """
    by = [c for c in by if c in df.columns]
    keys = [tuple(r) for r in df[by].drop_duplicates().itertuples(index=False)] if by else [()]
    varying = [i for i, c in enumerate(by) if df[c].nunique() > 1] or list(range(len(by)))
    if "strategy" in by:
        styles = [strategy_style(str(key[by.index("strategy")])) for key in keys]
    else:
        styles = [SeriesStyle(c, SYMBOLS[k % len(SYMBOLS)], DASHES[k % len(DASHES)])
                  for k, c in enumerate(categorical_colors(len(keys)))]
    points = gap_scale == 100.0
    gap_fmt = f".{PERCENT_DIGITS}f" if points else f".{VALUE_DIGITS}f"  # percentage points, else the given scale
    gap_unit = " points" if points else ""
    fig = go.Figure()
    for k, key in enumerate(keys):
        mask = np.ones(len(df), dtype=bool)
        for c, v in zip(by, key):
            mask &= (df[c] == v).to_numpy()
        sub = df[mask]
        name = " · ".join(str(key[i]) for i in varying) or "all checkpoints"
        fit_row = None
        if fits is not None and len(fits):
            fm = np.ones(len(fits), dtype=bool)
            for c, v in zip(by, key):
                if c in fits.columns:
                    fm &= (fits[c] == v).to_numpy()
            if fm.any():
                fit_row = fits[fm].iloc[0]
        legend = name + (f": R² = {fit_row['r2']:.3f}{_r2_ci(fit_row)} (n = {int(fit_row['n'])})"
                         if fit_row is not None else " (no fit: < 3 checkpoints or constant x)")
        fig.add_trace(go.Scatter(
            x=sub[x], y=gap_scale * sub[gap], mode="markers", name=legend, legendgroup=name,
            marker=dict(symbol=styles[k].symbol, size=11, color=styles[k].color, line=dict(color="black", width=1)),
            text=sub[label] if label in sub.columns else None,
            hovertemplate="%{text}<br>" + f"{html.escape(SCALAR_LABELS.get(x, x), quote=False)} = %{{x:.6f}}<br>"
                          f"GAP = %{{y:{gap_fmt}}}{gap_unit}<extra></extra>",
        ))
        if fit_row is not None and len(sub):
            xs = np.linspace(float(sub[x].min()), float(sub[x].max()), 20)
            fig.add_trace(go.Scatter(
                x=xs, y=gap_scale * (fit_row["slope"] * xs + fit_row["intercept"]), mode="lines", legendgroup=name,
                name=f"fit {name}", showlegend=False,
                line=dict(color=styles[k].color, dash=styles[k].dash, width=2),
                hovertemplate=f"fit {html.escape(name, quote=False)}: GAP = {gap_scale * fit_row['slope']:.4g}·x "
                              f"+ {gap_scale * fit_row['intercept']:.4g}{gap_unit}, R² = {fit_row['r2']:.3f}"
                              f"<br>at x = %{{x:.6f}}: GAP = %{{y:{gap_fmt}}}{gap_unit}<extra></extra>",
            ))
    fig.update_xaxes(title_text=metric_axis_title(x))
    fig.update_yaxes(title_text=gap_label)
    _base_layout(fig, title or f"GAP vs {SCALAR_LABELS.get(x, x)}", height=460)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0),
                      margin=dict(b=120))
    return fig
