"""Benchmark figures: scores per voice / subset, intervention bars, each intervention against its nulls (across
training and across layers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lsl_core.viz.layout import _base_layout
from lsl_core.viz.style import PERCENT_DIGITS, condition_style, error_bars


def scores_by_voice(df: pd.DataFrame, metric: str = "f1", *, voice: str = "voice",
                    title: str | None = None) -> go.Figure:
    """Text vs speech score per voice (grouped bars, percent) and the GAP per voice (second panel).

    df: one row per voice with columns text_<metric>, speech_<metric> and optionally gap_<metric>
    (fractions 0..1, as lsl_core.experiments.evaluate.summarize writes them); <column>_lo / _hi columns, when
    present (stats.summary_intervals), are drawn as 95% error bars.
    """
    t, s, g = f"text_{metric}", f"speech_{metric}", f"gap_{metric}"
    for c in (voice, t, s):
        if c not in df.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(df.columns)}")
    df = df if g in df.columns else df.assign(**{g: df[t] - df[s]})
    voices = [str(v) for v in df[voice]]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        subplot_titles=(f"{metric} on text vs speech input", f"GAP = text − speech ({metric})"))
    n = df["n"].to_numpy() if "n" in df.columns else np.full(len(df), np.nan)
    d = PERCENT_DIGITS
    for col, name, key, panel, unit in ((t, "text input", "text", 1, "%"), (s, "speech input", "speech", 1, "%"),
                                        (g, "GAP", "gap", 2, "points")):
        st = condition_style(key)
        err = error_bars(df, col, 100.0)
        lo = 100 * df[f"{col}_lo"].to_numpy() if err else np.full(len(df), np.nan)
        hi = 100 * df[f"{col}_hi"].to_numpy() if err else np.full(len(df), np.nan)
        ci = f"<br>95% CI [%{{customdata[1]:.{d}f}}, %{{customdata[2]:.{d}f}}]" if err else ""
        fig.add_trace(go.Bar(
            x=voices, y=100 * df[col], name=name, error_y=err, customdata=np.stack([n, lo, hi], axis=1),
            marker=dict(color=st.color, line=dict(color="black", width=1),
                        pattern=dict(shape=st.pattern, fgcolor="#333333") if st.pattern else None),
            hovertemplate=f"%{{x}}<br>{name} {metric} = %{{y:.{d}f}} {unit}{ci}<br>n = %{{customdata[0]}}"
                          "<extra></extra>"), row=1, col=panel)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="voice / accent")
    fig.update_yaxes(title_text=f"{metric} (%)", row=1, col=1)
    fig.update_yaxes(title_text="GAP (percentage points)", row=1, col=2)
    return _base_layout(fig, title or f"Text vs speech {metric} per voice", height=420)


def intervention_bars(table: pd.DataFrame, metric: str = "F1", *, title: str | None = None) -> go.Figure:
    """Table 1 (lsl_core.experiments.table1.table1) as bars: one bar per condition, Original first (percent).

    Each bar takes its condition's style (condition_style: colour per op, pattern per target);
    `metric`_lo / _hi columns (stats.condition_intervals) become 95% error bars.
    """
    if metric not in table.columns:
        raise ValueError(f"column {metric!r} not in the table; available: {list(table.columns)}")
    names = [str(i) for i in table.index]
    styles = [condition_style(nm) for nm in names]
    err = error_bars(table, metric)
    d = PERCENT_DIGITS
    cols = [table[f"Δ {metric}"] if f"Δ {metric}" in table.columns else pd.Series(np.nan, index=table.index)]
    cols += [table[f"{metric}_lo"], table[f"{metric}_hi"]] if err else [pd.Series(np.nan, index=table.index)] * 2
    cols += [table["n"] if "n" in table.columns else pd.Series(np.nan, index=table.index)]
    fig = go.Figure(go.Bar(
        x=names, y=table[metric], error_y=err,
        marker=dict(color=[st.color for st in styles], line=dict(color="black", width=1),
                    pattern=dict(shape=[st.pattern for st in styles], fgcolor="#333333")),
        customdata=np.stack([c.to_numpy(dtype=np.float64) for c in cols], axis=1),
        hovertemplate="%{x}<br>" + metric + f" = %{{y:.{d}f}} %"
                      + (f"<br>Δ vs Original = %{{customdata[0]:+.{d}f}}" if f"Δ {metric}" in table.columns else "")
                      + (f"<br>95% CI [%{{customdata[1]:.{d}f}}, %{{customdata[2]:.{d}f}}]" if err else "")
                      + "<br>n = %{customdata[3]}<extra></extra>",
    ))
    fig.update_xaxes(title_text="condition (intervention at the LLM input unless @ℓ)")
    fig.update_yaxes(title_text=f"{metric} (%)")
    return _base_layout(fig, title or f"Speech-input {metric} under each intervention", height=380)



NULL_SYMBOLS = {"Random": "diamond", "shuffled pairing": "square", "other question": "x"}  # marker per null kind


def intervention_nulls(table: pd.DataFrame, metric: str = "agreement", *, title: str | None = None) -> go.Figure:
    """Each intervention against its nulls (lsl_core.experiments.table1.table1_nulls) as a forest plot.

    One row per (condition, null) pair: the paired Δ = condition − null in percentage points with its 95%
    interval (Δ <metric>_lo / _hi) as a horizontal error bar; a vertical line at 0 (the null does as well).
    Colour = the condition's op (condition_style), marker = the null's kind; hover shows both names, what
    the null breaks, the exact Δ, its interval and n.
    """
    col = f"Δ {metric}"
    for c in ("condition", "null", "tests", col, f"{col}_lo", f"{col}_hi", "n"):
        if c not in table.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(table.columns)}")
    d = PERCENT_DIGITS
    fig = go.Figure()
    labels = [f"{c} vs {n}" for c, n in zip(table["condition"], table["null"])]
    for kind, symbol in NULL_SYMBOLS.items():
        rows = table[[kind in str(n) for n in table["null"]]]
        if rows.empty:
            continue
        ys = [f"{c} vs {n}" for c, n in zip(rows["condition"], rows["null"])]
        fig.add_trace(go.Scatter(
            x=rows[col], y=ys, mode="markers", name=f"null: {kind.lower()}",
            marker=dict(symbol=symbol, size=11, color=[condition_style(c).color for c in rows["condition"]],
                        line=dict(color="black", width=1)),
            error_x=dict(type="data", symmetric=False, array=rows[f"{col}_hi"] - rows[col],
                         arrayminus=rows[col] - rows[f"{col}_lo"], color="#222222"),
            customdata=np.stack([rows["tests"], rows[f"{col}_lo"], rows[f"{col}_hi"], rows["n"]], axis=1),
            hovertemplate="%{y}<br>breaks: %{customdata[0]}<br>Δ " + metric + f" = %{{x:+.{d}f}} points"
                          f"<br>95% CI [%{{customdata[1]:+.{d}f}}, %{{customdata[2]:+.{d}f}}]"
                          "<br>n = %{customdata[3]}<extra></extra>"))
    fig.add_vline(x=0.0, line=dict(color="#555555", dash="dash", width=1))
    fig.update_yaxes(title_text="intervention vs its null", categoryorder="array", categoryarray=labels[::-1])
    fig.update_xaxes(title_text=f"Δ {metric} = intervention − null (percentage points, 95% CI)")
    return _base_layout(fig, title or f"Each intervention against its nulls ({metric})",
                        height=max(320, 60 + 34 * len(table)))


def intervention_nulls_across(table: pd.DataFrame, metric: str = "agreement", *,
                              title: str | None = None) -> go.Figure:
    """Each intervention against its nulls across checkpoints (lsl_core.experiments.table1.nulls_across).

    x = checkpoint, in the table's order (by training step); one line per (intervention, null) pair: the paired
    Δ = intervention − null in percentage points with its 95% interval as error bars, a dashed line at 0 (the
    null does as well). Colour = the intervention's op (condition_style), dashes = a Bottom-k intervention (solid:
    All), marker = the null's kind; hover shows
    the checkpoint and its step, both names, what the null breaks, the exact Δ, its interval and n.
    """
    col = f"Δ {metric}"
    for c in ("checkpoint", "step", "condition", "null", "tests", col, f"{col}_lo", f"{col}_hi", "n"):
        if c not in table.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(table.columns)}")
    d = PERCENT_DIGITS
    order = list(dict.fromkeys(table["checkpoint"]))
    fig = go.Figure()
    for (cond, null), g in table.groupby(["condition", "null"], sort=False):
        g = g.set_index("checkpoint").reindex([c for c in order if c in set(g["checkpoint"])]).reset_index()
        kind = next((k for k in NULL_SYMBOLS if k in str(null)), "")
        fig.add_trace(go.Scatter(
            x=g["checkpoint"], y=g[col], mode="lines+markers", name=f"{cond} vs {null}",
            line=dict(color=condition_style(cond).color, width=2, dash="dash" if "Bottom" in str(cond) else "solid"),
            marker=dict(symbol=NULL_SYMBOLS.get(kind, "circle"), size=10, color=condition_style(cond).color,
                        line=dict(color="black", width=1)),
            error_y=dict(type="data", symmetric=False, array=g[f"{col}_hi"] - g[col],
                         arrayminus=g[col] - g[f"{col}_lo"], color="#222222"),
            customdata=np.stack([g["step"], g["tests"], g[f"{col}_lo"], g[f"{col}_hi"], g["n"]], axis=1),
            hovertemplate="%{x} (step %{customdata[0]})<br>" + f"{cond} vs {null}<br>breaks: %{{customdata[1]}}"
                          f"<br>Δ {metric} = %{{y:+.{d}f}} points<br>95% CI [%{{customdata[2]:+.{d}f}}, "
                          f"%{{customdata[3]:+.{d}f}}]<br>n = %{{customdata[4]}}<extra></extra>"))
    fig.add_hline(y=0.0, line=dict(color="#555555", dash="dash", width=1))
    fig.update_xaxes(title_text="checkpoint (by training step)", categoryorder="array", categoryarray=order)
    fig.update_yaxes(title_text=f"Δ {metric} vs null (points, 95% CI)")  # short: it runs along the plot's height
    _base_layout(fig, title or f"Each intervention against its nulls across training ({metric})", height=460)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.25, xanchor="left", x=0.0), margin=dict(b=130))
    return fig


# layer_profile's comparisons (experiments.layer_profile.VERSUS' names): (marker, dash) each, distinct without
# colour; the unedited answer solid circles
VERSUS_MARKS = {"unedited speech": ("circle", "solid"), "random tokens": (NULL_SYMBOLS["Random"], "dot"),
                "shuffled pairing": (NULL_SYMBOLS["shuffled pairing"], "dash"),
                "other question": (NULL_SYMBOLS["other question"], "dashdot")}


def intervention_layers(profile: pd.DataFrame, metric: str = "agreement", *, intervention: str | None = None,
                        title: str | None = None) -> go.Figure:
    """One intervention across the layers it was run at (lsl_core.experiments.layer_profile.layer_profile).

    x = edit layer ℓ (the comparisons drawn side by side around each layer's tick); one line per comparison: the
    intervention against the unedited speech answer and against each of its nulls at the same layer, y = the
    paired Δ <metric> in percentage points with its 95% interval as error bars, a dashed line at 0.
    `intervention`: its title (default: the profile's first). Colour = comparison (Cividis, distinct in grey)
    with its own marker and dash (VERSUS_MARKS); hover shows the layer, both sides, what the null breaks (for a
    null), the exact Δ, its interval and n.
    """
    from lsl_core.viz.style import categorical_colors

    col = f"Δ {metric}"
    for c in ("intervention", "layer", "versus", "tests", col, f"{col}_lo", f"{col}_hi", "n"):
        if c not in profile.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(profile.columns)}")
    if profile.empty:
        raise ValueError("the profile is empty: no intervention was run at two or more layers")
    name = intervention or str(profile["intervention"].iloc[0])
    t = profile[profile["intervention"] == name]
    if t.empty:
        raise ValueError(f"intervention {name!r} not in the profile; available: "
                         f"{list(dict.fromkeys(profile['intervention']))}")
    d = PERCENT_DIGITS
    fig = go.Figure()
    versus = list(dict.fromkeys(t["versus"]))
    layers = sorted(set(t["layer"]))
    step = min((b - a for a, b in zip(layers, layers[1:])), default=1)
    for k, (v, colour) in enumerate(zip(versus, categorical_colors(len(versus)))):
        g = t[t["versus"] == v].sort_values("layer")
        symbol, dash = VERSUS_MARKS.get(v, ("circle", "solid"))
        breaks = "<br>breaks: %{customdata[0]}" if (g["tests"] != "").any() else ""  # nulls name what they break
        dodge = (k - (len(versus) - 1) / 2) * 0.12 * step  # side by side at each layer, so intervals do not overlap
        fig.add_trace(go.Scatter(
            x=g["layer"] + dodge, y=g[col], mode="lines+markers", name=f"{name} − {v}",
            line=dict(color=colour, width=2, dash=dash),
            marker=dict(symbol=symbol, size=10, color=colour, line=dict(color="black", width=1)),
            error_y=dict(type="data", symmetric=False, array=g[f"{col}_hi"] - g[col],
                         arrayminus=g[col] - g[f"{col}_lo"], color=colour),
            customdata=np.stack([g["tests"], g[f"{col}_lo"], g[f"{col}_hi"], g["n"], g["layer"]], axis=1),
            hovertemplate=f"{name} @ℓ%{{customdata[4]}} vs {v}" + breaks + f"<br>Δ {metric} = %{{y:+.{d}f}} points"
                          f"<br>95% CI [%{{customdata[1]:+.{d}f}}, %{{customdata[2]:+.{d}f}}]"
                          "<br>n = %{customdata[3]}<extra></extra>"))
    fig.add_hline(y=0.0, line=dict(color="#555555", dash="dash", width=1))
    fig.update_xaxes(title_text="edit layer ℓ (input of decoder layer ℓ; 0 = the LLM input)",
                     tickmode="array", tickvals=layers)
    fig.update_yaxes(title_text=f"Δ {metric} (points, 95% CI)")
    _base_layout(fig, title or f"{name} across layers: Δ {metric} against the unedited answer and its nulls",
                 height=440)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0), margin=dict(b=120))
    return fig


def subset_scores(summary: pd.DataFrame, gap: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """VoiceBench per subset: headline score per modality with 95% CIs (left), GAP = text - speech with
    its paired CI, per subset and overall (right).

    summary: one checkpoint's rows of the run's summary table (subset, modality, metric, score,
    ci_low, ci_high, n; scores in %). gap: its rows of the gap table (subset incl. "overall", gap,
    gap_ci_low, gap_ci_high, n).
    """
    for c in ("subset", "modality", "score", "ci_low", "ci_high"):
        if c not in summary.columns:
            raise ValueError(f"column {c!r} not in the summary table; available: {list(summary.columns)}")
    subsets = list(dict.fromkeys(summary["subset"]))
    mods = [m for m in ("text", "speech", "cascade") if m in set(summary["modality"])]
    styles = [condition_style(m) for m in mods]  # the one style per condition (text, speech, cascade)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        subplot_titles=("headline score per subset (95% CI)", "GAP = text − speech (95% CI)"))
    for m, st in zip(mods, styles):
        d = summary[summary["modality"] == m].set_index("subset").reindex(subsets)
        fig.add_trace(go.Bar(
            x=subsets, y=d["score"], name=f"{m} input",
            marker=dict(color=st.color, line=dict(color="black", width=1),
                        pattern=dict(shape=st.pattern, fgcolor="#333333")),
            error_y=dict(type="data", symmetric=False, array=d["ci_high"] - d["score"],
                         arrayminus=d["score"] - d["ci_low"], color="#222222"),
            customdata=np.stack([d["metric"].fillna(""), d["n"].fillna(0), d["ci_low"], d["ci_high"]], axis=1),
            hovertemplate="%{x}<br>" + m + f" %{{customdata[0]}} = %{{y:.{PERCENT_DIGITS}f}} %<br>95% CI "
                          f"[%{{customdata[2]:.{PERCENT_DIGITS}f}}, %{{customdata[3]:.{PERCENT_DIGITS}f}}]"
                          "<br>n = %{customdata[1]}<extra></extra>"), row=1, col=1)
    g = gap.set_index("subset").reindex([*subsets, "overall"]).dropna(subset=["gap"])
    fig.add_trace(go.Bar(
        x=list(g.index), y=g["gap"], name="GAP",
        marker=dict(color=condition_style("gap").color, line=dict(color="black", width=1)),
        error_y=dict(type="data", symmetric=False, array=g["gap_ci_high"] - g["gap"],
                     arrayminus=g["gap"] - g["gap_ci_low"], color="#222222"),
        customdata=np.stack([g["n"], g["gap_ci_low"], g["gap_ci_high"]], axis=1),
        hovertemplate=f"%{{x}}<br>GAP = %{{y:.{PERCENT_DIGITS}f}} points<br>95% CI [%{{customdata[1]:.{PERCENT_DIGITS}f}}, "
                      f"%{{customdata[2]:.{PERCENT_DIGITS}f}}]<br>n = %{{customdata[0]}}<extra></extra>"), row=1, col=2)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="VoiceBench subset")
    fig.update_yaxes(title_text="score (%)", row=1, col=1)
    fig.update_yaxes(title_text="GAP (percentage points)", row=1, col=2)
    return _base_layout(fig, title or "VoiceBench: text vs speech per subset", height=440)
