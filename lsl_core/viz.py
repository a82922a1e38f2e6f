"""Plotly figure builders for the app and notebooks (DESIGN §1: results -> figures -> pages).

Every function takes already computed results (a SampleAnalysis, a CKA matrix, DataFrames) and
returns a `plotly.graph_objects.Figure`; none computes a metric and none imports streamlit.

Conventions shared by every figure:
  - axes carry labels with units ("frame time (s)", "layer ℓ");
  - colour scales have monotone luminance (Viridis / Cividis), so a figure printed in grey still
    reads; categorical series also differ by marker symbol and dash style, not by hue alone;
  - hover shows the exact value, the frame time in seconds and the token text;
  - layer L (hidden_states[L], after the backbone's final norm) is marked in every layer plot;
  - alignment-path cells are diamonds; edited frames / tokens of an intervention are boxed.

Shapes use the fixed letters L (layers; arrays hold L+1 entries), Ts (speech frames), Tt (text tokens).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

Metric = Literal["cosine", "distance"]
TEMPLATE = "plotly_white"
SEQUENTIAL = "Viridis"  # monotone luminance: dark = low, bright = high
CATEGORICAL_SCALE = "Cividis"  # categorical colours are sampled from it, so they also differ in grey
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down", "hexagon")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
FINAL_NORM_NOTE = "after final norm"

# Per-layer metrics of a SampleAnalysis / analysis rows: key -> (axis label, higher is better?)
LAYER_METRICS: dict[str, tuple[str, bool]] = {
    "seq_cos": ("sequence cosine f_cos(h̄ˢ, h̄ᵗ)", True),
    "seq_dist": ("sequence distance ‖h̄ˢ − h̄ᵗ‖₂", False),
    "spearman_cos": ("Spearman ρ(j, i*_j), cosine path", True),
    "spearman_dist": ("Spearman ρ(j, i*_j), distance path", True),
    "consistency": ("consistency (share of tokens, cos = dist path)", True),
}
# Layer-averaged scalars (columns of SampleAnalysis.scalars() / analysis tables)
SCALAR_LABELS: dict[str, str] = {
    "seq_cos_mean": "layer-averaged cosine f̄_cos",
    "seq_dist_mean": "layer-averaged distance f̄_d",
    "aps_cos": "APS (cosine)",
    "aps_dist": "APS (distance)",
    "spearman_cos_mean": "mean Spearman ρ (cosine path)",
    "spearman_dist_mean": "mean Spearman ρ (distance path)",
    "consistency_mean": "mean consistency",
    "gap_f1": "GAP in F1 (text − speech, 0…1)",
    "gap_containment": "GAP in containment (text − speech, 0…1)",
    "speech_f1": "speech-input F1 (0…1)",
    "text_f1": "text-input F1 (0…1)",
    "speech_containment": "speech-input containment (0…1)",
    "text_containment": "text-input containment (0…1)",
    "agreement": "speech/text answer agreement (token F1)",
}


# =============================================================================== helpers
def categorical_colors(n: int) -> list[str]:
    """n colours of increasing luminance (Cividis samples; distinct in grey as well as in colour)."""
    if n <= 0:
        return []
    if n == 1:
        return sample_colorscale(CATEGORICAL_SCALE, [0.35])
    return sample_colorscale(CATEGORICAL_SCALE, list(np.linspace(0.0, 0.72, n)))  # brightest kept readable on white


def token_label(token: str) -> str:
    """A token as an axis tick: surrounding spaces dropped, blank -> '␣', HTML escaped."""
    t = token.strip()
    return html.escape(t, quote=False) if t else "␣"


def _token_hover(token: str, j: int) -> str:
    return f"{html.escape(repr(token), quote=False)} (#{j})"


def _base_layout(fig: go.Figure, title: str, height: int | None = None) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.0, xanchor="left"),
                      margin=dict(l=60, r=20, t=60, b=60), hoverlabel=dict(namelength=-1))
    if height:
        fig.update_layout(height=height)
    return fig


def _edited_sets(edited: Any) -> tuple[list[int], list[int]]:
    """(frames, tokens) from a Mapping {'frames': [...], 'tokens': [...]} or an object with those attributes."""
    if edited is None:
        return [], []
    if isinstance(edited, Mapping):
        frames, tokens = edited.get("frames", ()), edited.get("tokens", ())
    else:
        frames, tokens = getattr(edited, "frames", ()), getattr(edited, "tokens", ())
    return sorted({int(f) for f in frames}), sorted({int(j) for j in tokens})


def _mark_final_layer(fig: go.Figure, L: int, rows_cols: Sequence[tuple[int, int]] | None = None) -> None:
    """A dotted vertical line at layer L in every given subplot; the first one is labelled 'after final norm'."""
    targets = rows_cols or [(None, None)]
    for k, (r, c) in enumerate(targets):
        kw = {} if r is None else dict(row=r, col=c)
        if k == 0:
            kw.update(annotation_text=f"L={L}: {FINAL_NORM_NOTE}", annotation_position="bottom left",
                      annotation_font_size=10, annotation_font_color="#333333")
        fig.add_vline(x=L, line=dict(color="#555555", dash="dot", width=1), **kw)


def _mark_current_layer(fig: go.Figure, layer: int | None, rows_cols: Sequence[tuple[int, int]] | None = None) -> None:
    if layer is None:
        return
    for r, c in rows_cols or [(None, None)]:
        kw = {} if r is None else dict(row=r, col=c)
        fig.add_vline(x=layer, line=dict(color="#000000", dash="dash", width=1), opacity=0.6, **kw)


def _layer_trace(y: np.ndarray, name: str, color: str, symbol: str, dash: str, showlegend: bool = True,
                 hover_label: str | None = None, legendgroup: str | None = None) -> go.Scatter:
    """One curve over layers 0..L; the last point (after final norm) is drawn as an open marker."""
    y = np.asarray(y, dtype=np.float64)
    L = y.shape[0] - 1
    x = np.arange(L + 1)
    sizes = np.full(L + 1, 6.0)
    sizes[-1] = 11.0
    symbols = [symbol] * L + [f"{symbol}-open"]
    note = np.array([""] * L + [f" ({FINAL_NORM_NOTE})"], dtype=object)
    return go.Scatter(
        x=x, y=y, mode="lines+markers", name=name, legendgroup=legendgroup or name, showlegend=showlegend,
        line=dict(color=color, dash=dash, width=2), marker=dict(symbol=symbols, size=sizes, color=color),
        customdata=note,
        hovertemplate=f"{html.escape(name, quote=False)}<br>layer %{{x}}%{{customdata}}<br>"
                      f"{html.escape(hover_label or name, quote=False)} = %{{y:.6f}}<extra></extra>",
    )


# =============================================================================== sample figures
def token_heatmap(analysis, layer: int, metric: Metric = "cosine", edited: Any = None,
                  title: str | None = None) -> go.Figure:
    """The frames x tokens matrix A_ℓ [Ts, Tt] of one layer, with the alignment path as diamonds.

    analysis: a SampleAnalysis (cos/dist [L+1, Ts, Tt], path_cos/path_dist [L+1, Tt], tokens [Tt],
    frame_times [Ts], frame_seconds). x = text tokens (question order), y = speech frame centre time
    (s); hover shows the exact value, the frame's time span and the token. edited: frames and
    tokens changed by an intervention ({'frames': [...], 'tokens': [...]} or an object with those
    attributes) are marked: frames as boxed horizontal bands, tokens as bold starred ticks whose path cells
    are boxed.
    """
    if metric not in ("cosine", "distance"):
        raise ValueError(f"metric must be 'cosine' or 'distance', got {metric!r}")
    A_all = analysis.cos if metric == "cosine" else analysis.dist  # [L+1, Ts, Tt]
    L = A_all.shape[0] - 1
    if not 0 <= layer <= L:
        raise ValueError(f"layer must be in 0..{L}, got {layer}")
    A = np.asarray(A_all[layer], dtype=np.float64)  # [Ts, Tt]
    Ts, Tt = A.shape
    path = np.asarray((analysis.path_cos if metric == "cosine" else analysis.path_dist)[layer], dtype=int)  # [Tt]
    fs = float(analysis.frame_seconds)
    starts = np.asarray(analysis.frame_times, dtype=np.float64)[:Ts]  # [Ts]
    centres = starts + fs / 2.0  # [Ts]
    tokens = list(analysis.tokens)
    frames_edit, tokens_edit = _edited_sets(edited)

    # hover text per cell [Ts, Tt]
    tok_hover = [_token_hover(t, j) for j, t in enumerate(tokens)]
    cell = np.empty((Ts, Tt), dtype=object)
    for i in range(Ts):
        span = f"frame {i}, {starts[i]:.2f}–{starts[i] + fs:.2f} s"
        for j in range(Tt):
            cell[i, j] = f"token {tok_hover[j]}<br>{span}"
    metric_label = "cosine" if metric == "cosine" else "distance (L2)"
    fig = go.Figure()
    fig.add_trace(go.Heatmap(
        z=A, x=np.arange(Tt), y=centres, text=cell, name=metric_label,
        colorscale=SEQUENTIAL, reversescale=(metric == "distance"),  # bright = well aligned in both
        colorbar=dict(title=dict(text=metric_label + (" (bright = close)" if metric == "distance" else ""),
                                 side="right")),
        hovertemplate="%{text}<br>" + metric_label + " = %{z:.6f}<extra></extra>",
    ))
    # alignment path (diamonds): i*_j per token
    fig.add_trace(go.Scatter(
        x=np.arange(Tt), y=centres[path], mode="markers", name="alignment path i*_j",
        marker=dict(symbol="diamond", size=10, color="white", line=dict(color="black", width=1.5)),
        customdata=np.stack([path, starts[path], starts[path] + fs, A[path, np.arange(Tt)]], axis=1),
        text=tok_hover,
        hovertemplate="path: token %{text}<br>frame %{customdata[0]}, %{customdata[1]:.2f}–%{customdata[2]:.2f} s"
                      "<br>" + metric_label + " = %{customdata[3]:.6f}<extra></extra>",
    ))
    # intervention: edited frames as boxed horizontal bands (white under black dashes: visible on any colour),
    # edited tokens as bold starred ticks and boxed path cells
    for f in frames_edit:
        if 0 <= f < Ts:
            y0, y1 = starts[f], starts[f] + fs
            for color, width, dash in (("white", 3, "solid"), ("black", 1.5, "dash")):
                fig.add_shape(type="rect", xref="x", yref="y", x0=-0.5, x1=Tt - 0.5, y0=y0, y1=y1,
                              line=dict(color=color, width=width, dash=dash), fillcolor="rgba(0,0,0,0)")
    if frames_edit or tokens_edit:
        cols = [j for j in tokens_edit if 0 <= j < Tt]
        for color, size, width, show in (("white", 22, 4, False), ("black", 22, 2, True)):
            fig.add_trace(go.Scatter(
                x=cols, y=centres[path[cols]], mode="markers", name="edited frame/token", showlegend=show,
                marker=dict(symbol="square-open", size=size, color=color, line=dict(width=width)),
                hoverinfo="skip",
            ))
    ticks = [f"<b>{token_label(t)}*</b>" if j in tokens_edit else token_label(t) for j, t in enumerate(tokens)]
    fig.update_xaxes(title_text="text token j (question)" + (" — * edited" if tokens_edit else ""),
                     tickmode="array", tickvals=list(range(Tt)), ticktext=ticks, tickangle=-45,
                     range=[-0.5, Tt - 0.5], showgrid=False)
    fig.update_yaxes(title_text="speech frame time (s)", range=[starts[0], starts[-1] + fs], showgrid=False,
                     ticksuffix=" s")
    where = f" ({FINAL_NORM_NOTE})" if layer == L else (" (LLM input)" if layer == 0 else "")
    default_title = f"{metric_label} A<sub>ℓ</sub>[i, j], layer ℓ = {layer} of {L}{where}"
    _base_layout(fig, title or default_title, height=max(380, min(760, 18 * Ts + 160)))
    fig.update_layout(showlegend=True, legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def layer_curves(analysis, current_layer: int | None = None, title: str | None = None) -> go.Figure:
    """Sequence-level cosine and distance of the mean-pooled states across layers (two panels).

    analysis: SampleAnalysis (seq_cos, seq_dist [L+1]). Layer L (after final norm) is an open
    marker behind a dotted line; current_layer, if given, a dashed line.
    """
    return _curves_panels(analysis, ("seq_cos", "seq_dist"), current_layer,
                          title or "Sequence level: mean-pooled speech vs text states across layers")


def tokenwise_curves(analysis, current_layer: int | None = None, title: str | None = None) -> go.Figure:
    """Spearman monotonicity of both paths and their consistency across layers (two panels)."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("path monotonicity (Spearman ρ)", "path consistency"))
    colors = categorical_colors(2)
    L = len(analysis.spearman_cos) - 1
    fig.add_trace(_layer_trace(analysis.spearman_cos, "cosine path", colors[0], "circle", "solid",
                               hover_label="ρ"), row=1, col=1)
    fig.add_trace(_layer_trace(analysis.spearman_dist, "distance path", colors[1], "square", "dash",
                               hover_label="ρ"), row=1, col=1)
    fig.add_trace(_layer_trace(analysis.consistency, "consistency", "#333333", "diamond", "solid",
                               hover_label="share"), row=1, col=2)
    panels = [(1, 1), (1, 2)]
    _mark_final_layer(fig, L, panels)
    _mark_current_layer(fig, current_layer, panels)
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text="Spearman ρ (−1 … 1)", row=1, col=1)
    fig.update_yaxes(title_text="share of tokens (0 … 1)", range=[-0.02, 1.02], row=1, col=2)
    return _base_layout(fig, title or "Token level: alignment-path monotonicity and consistency", height=360)


def _curves_panels(analysis, keys: Sequence[str], current_layer: int | None, title: str) -> go.Figure:
    fig = make_subplots(rows=1, cols=len(keys), horizontal_spacing=0.12,
                        subplot_titles=[LAYER_METRICS[k][0] for k in keys])
    L = len(getattr(analysis, keys[0])) - 1
    colors = categorical_colors(len(keys))
    for c, (key, color, symbol) in enumerate(zip(keys, colors, SYMBOLS), start=1):
        fig.add_trace(_layer_trace(getattr(analysis, key), LAYER_METRICS[key][0], color, symbol, "solid",
                                   showlegend=False), row=1, col=c)
        fig.update_yaxes(title_text="cosine (−1 … 1)" if key.endswith("cos") else "L2 distance (model units)",
                         row=1, col=c)
    panels = [(1, c) for c in range(1, len(keys) + 1)]
    _mark_final_layer(fig, L, panels)
    _mark_current_layer(fig, current_layer, panels)
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    return _base_layout(fig, title, height=360)


# =============================================================================== checkpoints
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
    fig.update_yaxes(title_text=ylabel)
    return _base_layout(fig, title or f"{ylabel} per layer, one curve per checkpoint", height=420)


def trend_curves(df: pd.DataFrame, y: str, *, x: str = "step", group: str = "trajectory",
                 hover: str = "checkpoint", title: str | None = None) -> go.Figure:
    """A scalar across training: one line per group (e.g. trajectory), points sorted by x (step)."""
    for c in (x, y):
        if c not in df.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(df.columns)}")
    groups = list(dict.fromkeys(df[group])) if group in df.columns else [None]
    colors = categorical_colors(len(groups))
    fig = go.Figure()
    for k, g in enumerate(groups):
        sub = (df if g is None else df[df[group] == g]).sort_values(x, kind="stable")
        fig.add_trace(go.Scatter(
            x=sub[x], y=sub[y], mode="lines+markers", name=str(g if g is not None else y),
            line=dict(color=colors[k], dash=DASHES[k % len(DASHES)], width=2),
            marker=dict(symbol=SYMBOLS[k % len(SYMBOLS)], size=9, color=colors[k]),
            text=sub[hover] if hover in sub.columns else None,
            hovertemplate="%{text}<br>" + f"{x} = %{{x}}<br>{y} = %{{y:.6f}}<extra></extra>",
        ))
    fig.update_xaxes(title_text="training step" if x == "step" else x)
    fig.update_yaxes(title_text=SCALAR_LABELS.get(y, y))
    _base_layout(fig, title or f"{SCALAR_LABELS.get(y, y)} across training", height=420)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0),
                      margin=dict(b=110))
    return fig


def gap_scatter(df: pd.DataFrame, x: str, fits: pd.DataFrame | None = None, *, gap: str = "gap",
                by: Sequence[str] = ("family", "strategy"), label: str = "checkpoint",
                gap_label: str = "GAP (text − speech score)", title: str | None = None) -> go.Figure:
    """GAP against an alignment metric, one point per checkpoint, with one OLS line per group.

    df: one row per checkpoint with columns x, gap, `label` and the `by` columns. fits: the output of
    metrics.gap.gap_r2_table (columns *by, slope, intercept, r2, n); each group's line is drawn over
    its x range and its R² is shown in the legend. Groups differ in marker symbol, dash and luminance;
    legend names show only the `by` values that differ between groups.
    """
    by = [c for c in by if c in df.columns]
    keys = [tuple(r) for r in df[by].drop_duplicates().itertuples(index=False)] if by else [()]
    varying = [i for i, c in enumerate(by) if df[c].nunique() > 1] or list(range(len(by)))
    colors = categorical_colors(len(keys))
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
        legend = name + (f": R² = {fit_row['r2']:.3f} (n = {int(fit_row['n'])})" if fit_row is not None
                         else " (no fit: < 3 checkpoints or constant x)")
        fig.add_trace(go.Scatter(
            x=sub[x], y=sub[gap], mode="markers", name=legend, legendgroup=name,
            marker=dict(symbol=SYMBOLS[k % len(SYMBOLS)], size=11, color=colors[k], line=dict(color="black", width=1)),
            text=sub[label] if label in sub.columns else None,
            hovertemplate="%{text}<br>" + f"{html.escape(SCALAR_LABELS.get(x, x), quote=False)} = %{{x:.6f}}<br>"
                          "GAP = %{y:.4f}<extra></extra>",
        ))
        if fit_row is not None and len(sub):
            xs = np.linspace(float(sub[x].min()), float(sub[x].max()), 20)
            fig.add_trace(go.Scatter(
                x=xs, y=fit_row["slope"] * xs + fit_row["intercept"], mode="lines", legendgroup=name,
                name=f"fit {name}", showlegend=False,
                line=dict(color=colors[k], dash=DASHES[(k + 1) % len(DASHES)], width=2),
                hovertemplate=f"fit {html.escape(name, quote=False)}: GAP = {fit_row['slope']:.4g}·x "
                              f"+ {fit_row['intercept']:.4g}, R² = {fit_row['r2']:.3f}<extra></extra>",
            ))
    fig.update_xaxes(title_text=SCALAR_LABELS.get(x, x))
    fig.update_yaxes(title_text=gap_label)
    _base_layout(fig, title or f"GAP vs {SCALAR_LABELS.get(x, x)}", height=460)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0),
                      margin=dict(b=120))
    return fig


# =============================================================================== CKA
def cka_heatmap(matrix: np.ndarray, title: str, *, x_label: str = "text layer b",
                y_label: str = "speech layer a") -> go.Figure:
    """Cross-layer CKA [L+1, L+1] (speech layer a = rows, text layer b = columns), colour fixed to 0..1."""
    M = np.asarray(matrix, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"CKA matrix must be 2-D, got shape {M.shape}")
    La, Lb = M.shape[0] - 1, M.shape[1] - 1
    fig = go.Figure(go.Heatmap(
        z=M, x=np.arange(Lb + 1), y=np.arange(La + 1), colorscale=SEQUENTIAL, zmin=0.0, zmax=1.0,
        colorbar=dict(title=dict(text="linear CKA", side="right")),
        hovertemplate=f"{y_label} %{{y}}<br>{x_label} %{{x}}<br>CKA = %{{z:.6f}}<extra></extra>",
    ))
    fig.add_shape(type="line", x0=-0.5, y0=-0.5, x1=Lb + 0.5, y1=La + 0.5,
                  line=dict(color="white", width=1, dash="dot"))
    fig.update_xaxes(title_text=f"{x_label} (ℓ; {Lb} = {FINAL_NORM_NOTE})", dtick=max(1, Lb // 10),
                     range=[-0.5, Lb + 0.5], constrain="domain")
    fig.update_yaxes(title_text=f"{y_label} (ℓ; {La} = {FINAL_NORM_NOTE})", dtick=max(1, La // 10),
                     range=[-0.5, La + 0.5], scaleanchor="x", constrain="domain")
    return _base_layout(fig, title, height=520)


# =============================================================================== benchmark
def scores_by_voice(df: pd.DataFrame, metric: str = "f1", *, voice: str = "voice",
                    title: str | None = None) -> go.Figure:
    """Text vs speech score per voice (grouped bars, percent) and the GAP per voice (second panel).

    df: one row per voice with columns text_<metric>, speech_<metric> and optionally gap_<metric>
    (fractions 0..1, as lsl_core.evaluate.summarize writes them).
    """
    t, s, g = f"text_{metric}", f"speech_{metric}", f"gap_{metric}"
    for c in (voice, t, s):
        if c not in df.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(df.columns)}")
    voices = [str(v) for v in df[voice]]
    gaps = df[g] if g in df.columns else df[t] - df[s]
    dark, light = categorical_colors(2)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        subplot_titles=(f"{metric} on text vs speech input", f"GAP = text − speech ({metric})"))
    n = df["n"].tolist() if "n" in df.columns else [None] * len(df)
    fig.add_trace(go.Bar(x=voices, y=100 * df[t], name="text input", marker=dict(color=dark), customdata=n,
                         hovertemplate="%{x}<br>text " + metric + " = %{y:.2f} %<br>n = %{customdata}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=voices, y=100 * df[s], name="speech input",
                         marker=dict(color=light, pattern=dict(shape="/", fgcolor="#333333")), customdata=n,
                         hovertemplate="%{x}<br>speech " + metric
                                       + " = %{y:.2f} %<br>n = %{customdata}<extra></extra>"),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=voices, y=100 * gaps, name="GAP",
                         marker=dict(color="#7f7f7f", line=dict(color="black", width=1)),
                         hovertemplate="%{x}<br>GAP = %{y:.2f} points<extra></extra>"), row=1, col=2)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="voice / accent")
    fig.update_yaxes(title_text=f"{metric} (%)", row=1, col=1)
    fig.update_yaxes(title_text="GAP (percentage points)", row=1, col=2)
    return _base_layout(fig, title or f"Text vs speech {metric} per voice", height=420)


def intervention_bars(table: pd.DataFrame, metric: str = "F1", *, title: str | None = None) -> go.Figure:
    """Table 1 (lsl_core.intervention_eval.table1) as bars: one bar per condition, Original first (percent)."""
    if metric not in table.columns:
        raise ValueError(f"column {metric!r} not in the table; available: {list(table.columns)}")
    names = [str(i) for i in table.index]
    colors = categorical_colors(len(names))
    fig = go.Figure(go.Bar(
        x=names, y=table[metric], marker=dict(color=colors, line=dict(color="black", width=1)),
        customdata=table[f"Δ {metric}"] if f"Δ {metric}" in table.columns else None,
        hovertemplate="%{x}<br>" + metric + " = %{y:.2f} %" + ("<br>Δ vs Original = %{customdata:+.2f}"
                                                                 if f"Δ {metric}" in table.columns else "")
                      + "<extra></extra>",
    ))
    fig.update_xaxes(title_text="condition (intervention at the LLM input unless @ℓ)")
    fig.update_yaxes(title_text=f"{metric} (%)")
    return _base_layout(fig, title or f"Speech-input {metric} under each intervention", height=380)



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
    colors = categorical_colors(len(mods))
    patterns = {"text": "", "speech": "/", "cascade": "."}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.62, 0.38], horizontal_spacing=0.1,
                        subplot_titles=("headline score per subset (95% CI)", "GAP = text − speech (95% CI)"))
    for m, color in zip(mods, colors):
        d = summary[summary["modality"] == m].set_index("subset").reindex(subsets)
        fig.add_trace(go.Bar(
            x=subsets, y=d["score"], name=f"{m} input",
            marker=dict(color=color, pattern=dict(shape=patterns[m], fgcolor="#333333")),
            error_y=dict(type="data", symmetric=False, array=d["ci_high"] - d["score"],
                         arrayminus=d["score"] - d["ci_low"], color="#222222"),
            customdata=np.stack([d["metric"].fillna(""), d["n"].fillna(0), d["ci_low"], d["ci_high"]], axis=1),
            hovertemplate="%{x}<br>" + m + " %{customdata[0]} = %{y:.2f} %<br>95% CI [%{customdata[2]:.2f}, "
                          "%{customdata[3]:.2f}]<br>n = %{customdata[1]}<extra></extra>"), row=1, col=1)
    g = gap.set_index("subset").reindex([*subsets, "overall"]).dropna(subset=["gap"])
    fig.add_trace(go.Bar(
        x=list(g.index), y=g["gap"], name="GAP", marker=dict(color="#7f7f7f", line=dict(color="black", width=1)),
        error_y=dict(type="data", symmetric=False, array=g["gap_ci_high"] - g["gap"],
                     arrayminus=g["gap"] - g["gap_ci_low"], color="#222222"),
        customdata=np.stack([g["n"], g["gap_ci_low"], g["gap_ci_high"]], axis=1),
        hovertemplate="%{x}<br>GAP = %{y:.2f} points<br>95% CI [%{customdata[1]:.2f}, %{customdata[2]:.2f}]"
                      "<br>n = %{customdata[0]}<extra></extra>"), row=1, col=2)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="VoiceBench subset")
    fig.update_yaxes(title_text="score (%)", row=1, col=1)
    fig.update_yaxes(title_text="GAP (percentage points)", row=1, col=2)
    return _base_layout(fig, title or "VoiceBench: text vs speech per subset", height=440)


# =============================================================================== controls (issue 15)
# control metric -> (axis label with units); see lsl_core.metrics.controls.METRICS
CONTROL_AXES: dict[str, str] = {
    "seq_cos": "sequence cosine (−1 … 1)",
    "seq_dist": "sequence L2 distance (model units)",
    "aps_cos": "path cosine, mean over tokens (−1 … 1)",
    "aps_dist": "path L2 distance, mean over tokens (model units)",
    "spearman_cos": "Spearman ρ of the cosine path (−1 … 1)",
    "spearman_dist": "Spearman ρ of the distance path (−1 … 1)",
    "consistency": "consistency (share of tokens, 0 … 1)",
    "cka": "aligned CKA, speech layer = text layer (0 … 1)",
}
RETRIEVAL_LABELS = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "mrr": "mean reciprocal rank"}


def _rgba(color: str, alpha: float) -> str:
    """'rgb(r, g, b)' or '#rrggbb' -> 'rgba(r, g, b, alpha)' (a translucent band of a line's colour)."""
    if color.startswith("#"):
        r, g, b = (int(color[k: k + 2], 16) for k in (1, 3, 5))
    else:
        r, g, b = (int(float(v)) for v in color[color.index("(") + 1: color.index(")")].split(",")[:3])
    return f"rgba({r}, {g}, {b}, {alpha})"


def control_curves(controls, metric: str, current_layer: int | None = None, title: str | None = None) -> go.Figure:
    """One clip's metric per layer against its controls (lsl_core.analysis_controls.SampleControls).

    Lines: the clip with its own transcript (matched), with each of the K other questions (thin,
    hover names the question), their mean (mismatched), an all-zero clip of the same length
    (silence) and the clip with its frames in a shuffled order (shuffled frames).
    """
    from lsl_core.metrics.controls import METRICS

    L = controls.matched.shape[-1] - 1
    m = controls.metrics.index(metric)
    label = METRICS[metric][0]
    fig = go.Figure()
    x = np.arange(L + 1)
    for k, q in enumerate(controls.partner_questions):
        fig.add_trace(go.Scatter(
            x=x, y=controls.mismatched[k, m], mode="lines", name="each other question", legendgroup="partners",
            showlegend=k == 0, line=dict(color="#b0b0b0", width=1),
            hovertemplate=f"other question: {html.escape(q, quote=False)}<br>layer %{{x}}<br>{label} = "
                          "%{y:.6f}<extra></extra>"))
    colors = categorical_colors(4)
    fig.add_trace(_layer_trace(controls.curve(metric, "mismatched"), f"mismatched: mean of {len(controls.partner_questions)} "
                               "other questions", colors[1], "square", "dash", hover_label=label))
    fig.add_trace(_layer_trace(controls.curve(metric, "silence"), f"silence ({controls.silence_seconds:.2f} s of zeros)",
                               colors[2], "triangle-up", "dot", hover_label=label))
    fig.add_trace(_layer_trace(controls.curve(metric, "shuffled"), "shuffled frames (same clip)", colors[3], "x",
                               "dashdot", hover_label=label))
    fig.add_trace(_layer_trace(controls.curve(metric, "matched"), "this clip, own transcript", colors[0], "circle",
                               "solid", hover_label=label))
    _mark_final_layer(fig, L)
    _mark_current_layer(fig, current_layer)
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text=CONTROL_AXES.get(metric, metric))
    _base_layout(fig, title or f"Controls: {label} per layer, own transcript vs other questions, silence, "
                               "shuffled frames", height=420)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0), margin=dict(b=110))
    return fig


def retrieval_curves(df: pd.DataFrame, scorer: str = "seq_cos", stat: str = "top1", *, label: str = "checkpoint",
                     order: str = "step", title: str | None = None) -> go.Figure:
    """Speech -> text retrieval per layer, one curve per checkpoint, with the chance level.

    df: rows of `analyze --controls` (lsl_core.analysis_controls.controls_table) with table ==
    "retrieval": columns scorer, layer (>= 0 drawn; -1 = layer-averaged, skipped), `stat`,
    chance_<stat>, `label`, `order`.
    """
    need = {"scorer", "layer", stat, f"chance_{stat}", label}
    if not need <= set(df.columns):
        raise ValueError(f"retrieval table lacks {sorted(need - set(df.columns))}; write it with analyze --controls")
    rows = df[(df["scorer"] == scorer) & (df["layer"] >= 0)]
    if "table" in rows.columns:
        rows = rows[rows["table"] == "retrieval"]
    keys = list(dict.fromkeys(rows.sort_values(order, kind="stable")[label] if order in rows.columns else rows[label]))
    colors = categorical_colors(len(keys))
    fig = go.Figure()
    L = 0
    scorer_name = {"seq_cos": "sequence cosine", "aps_cos": "APS (cosine path)"}.get(scorer, scorer)
    for k, name in enumerate(keys):
        sub = rows[rows[label] == name].sort_values("layer")
        y = np.full(int(sub["layer"].max()) + 1, np.nan)
        y[sub["layer"].to_numpy(dtype=int)] = sub[stat].to_numpy(dtype=np.float64)
        L = max(L, y.shape[0] - 1)
        step = f" (step {sub[order].iloc[0]})" if order in sub.columns and order != label else ""
        fig.add_trace(_layer_trace(y, f"{name}{step}", colors[k], SYMBOLS[k % len(SYMBOLS)], DASHES[k % len(DASHES)],
                                   hover_label=RETRIEVAL_LABELS.get(stat, stat)))
    if len(rows):
        chance = float(rows[f"chance_{stat}"].mean())
        nc = f" (Nc = {int(rows['candidates'].iloc[0])})" if "candidates" in rows.columns else ""
        fig.add_hline(y=chance, line=dict(color="#000000", dash="dot", width=1.5),
                      annotation_text=f"chance {chance:.3f}{nc}", annotation_position="top right")
    _mark_final_layer(fig, L)
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text=f"{RETRIEVAL_LABELS.get(stat, stat)} of the own transcript (0 … 1)",
                     range=[-0.02, 1.02])
    return _base_layout(fig, title or f"Speech → text retrieval per layer: {RETRIEVAL_LABELS.get(stat, stat)} by "
                                      f"{scorer_name}", height=440)


def specific_curves(df: pd.DataFrame, metric: str = "seq_cos", *, label: str = "checkpoint", order: str = "step",
                    title: str | None = None) -> go.Figure:
    """Specific alignment (matched − mean mismatched) per layer with its 95% CI band, one curve per checkpoint.

    df: `analyze --controls` rows with table == "specific": columns metric, layer, specific, ci_low,
    ci_high, `label`, `order` (layer -1, the layer average, is skipped).
    """
    need = {"metric", "layer", "specific", "ci_low", "ci_high", label}
    if not need <= set(df.columns):
        raise ValueError(f"specific-alignment table lacks {sorted(need - set(df.columns))}; write it with analyze "
                         "--controls")
    from lsl_core.metrics.controls import METRICS

    rows = df[(df["metric"] == metric) & (df["layer"] >= 0)]
    if "table" in rows.columns:
        rows = rows[rows["table"] == "specific"]
    keys = list(dict.fromkeys(rows.sort_values(order, kind="stable")[label] if order in rows.columns else rows[label]))
    colors = categorical_colors(len(keys))
    fig = go.Figure()
    L = 0
    for k, name in enumerate(keys):
        sub = rows[rows[label] == name].sort_values("layer")
        x = sub["layer"].to_numpy(dtype=int)
        L = max(L, int(x.max()))
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]),
                                 y=np.concatenate([sub["ci_high"].to_numpy(), sub["ci_low"].to_numpy()[::-1]]),
                                 fill="toself", fillcolor=_rgba(colors[k], 0.18), line=dict(width=0),
                                 hoverinfo="skip", showlegend=False, legendgroup=str(name)))
        step = f" (step {sub[order].iloc[0]})" if order in sub.columns and order != label else ""
        fig.add_trace(go.Scatter(
            x=x, y=sub["specific"], mode="lines+markers", name=f"{name}{step}", legendgroup=str(name),
            line=dict(color=colors[k], dash=DASHES[k % len(DASHES)], width=2),
            marker=dict(symbol=SYMBOLS[k % len(SYMBOLS)], size=6, color=colors[k]),
            customdata=np.stack([sub["ci_low"], sub["ci_high"], sub.get("matched", sub["specific"]),
                                 sub.get("mismatched", sub["specific"])], axis=-1),
            hovertemplate=f"{html.escape(str(name), quote=False)}<br>layer %{{x}}<br>specific = %{{y:+.6f}}"
                          "<br>95% CI [%{customdata[0]:+.6f}, %{customdata[1]:+.6f}]<br>matched %{customdata[2]:.6f}"
                          " · mismatched %{customdata[3]:.6f}<extra></extra>"))
    fig.add_hline(y=0.0, line=dict(color="#000000", width=1))
    _mark_final_layer(fig, L)
    better = "higher" if METRICS.get(metric, ("", True))[1] else "lower (below 0 = own transcript closer)"
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text=f"specific alignment: matched − mismatched ({CONTROL_AXES.get(metric, metric)})")
    return _base_layout(fig, title or f"Specific alignment per layer: {METRICS.get(metric, (metric,))[0]} "
                                      f"(95% CI band; better: {better})", height=440)


__all__ = ["token_heatmap", "layer_curves", "tokenwise_curves", "checkpoint_curves", "trend_curves", "gap_scatter",
           "cka_heatmap", "scores_by_voice", "intervention_bars", "subset_scores", "categorical_colors", "token_label",
           "control_curves", "retrieval_curves", "specific_curves", "LAYER_METRICS", "SCALAR_LABELS", "CONTROL_AXES"]
