"""Figures of one sample: the frames x tokens heatmap with its alignment path, per-layer curves, norms,
the logit lens grid."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lsl_core.viz.layout import (
    MAX_HEATMAP_ROWS,
    _base_layout,
    _bin_rows,
    _edited_sets,
    _layer_trace,
    _mark_current_layer,
    _mark_final_layer,
    frame_bins,
)
from lsl_core.viz.style import (
    FINAL_NORM_NOTE,
    LAYER_METRICS,
    SEQUENTIAL,
    SYMBOLS,
    Metric,
    _token_hover,
    categorical_colors,
    sample_title,
    token_label,
)


def token_heatmap(analysis, layer: int, metric: Metric = "cosine", edited: Any = None,
                  title: str | None = None, max_rows: int = MAX_HEATMAP_ROWS) -> go.Figure:
    """The frames x tokens matrix A_ℓ [Ts, Tt] of one layer, with the alignment path as diamonds.

    analysis: a SampleAnalysis (cos/dist [L+1, Ts, Tt], path_cos/path_dist [L+1, Tt], tokens [Tt],
    frame_times [Ts], frame_seconds). x = text tokens (question order), y = speech frame centre time
    (s); hover shows the exact value, the frame's time span and the token. edited: frames and
    tokens changed by an intervention ({'frames': [...], 'tokens': [...]} or an object with those
    attributes) are marked: frames as boxed horizontal bands, tokens as bold starred ticks whose path cells
    are boxed. Long clips (Ts > max_rows) are drawn in bins of consecutive frames (`frame_bins`): a
    cell's colour is the best value in its bin (so the path stays visible), its hover gives the exact
    best value, the frame holding it and the bin mean; path diamonds and edited frames keep exact times.
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

    # hover text per cell [Ts, Tt] (or per bin of frames for long clips)
    tok_hover = [_token_hover(t, j) for j, t in enumerate(tokens)]
    metric_label = "cosine" if metric == "cosine" else "distance (L2)"
    scale_label = "cosine" if metric == "cosine" else "L2 distance (model units)"  # the colour bar's unit
    bins = frame_bins(Ts, max_rows)
    fig = go.Figure()
    if bins is None:
        cell = np.empty((Ts, Tt), dtype=object)
        for i in range(Ts):
            span = f"frame {i}, {starts[i]:.2f}–{starts[i] + fs:.2f} s"
            for j in range(Tt):
                cell[i, j] = f"token {tok_hover[j]}<br>{span}"
        fig.add_trace(go.Heatmap(
            z=A, x=np.arange(Tt), y=centres, text=cell, name=metric_label,
            colorscale=SEQUENTIAL, reversescale=(metric == "distance"),  # bright = well aligned in both
            colorbar=dict(title=dict(text=scale_label + (", bright = close" if metric == "distance" else ""),
                                     side="right")),
            hovertemplate="%{text}<br>" + metric_label + " = %{z:.6f}<extra></extra>",
        ))
    else:
        best, where, mean = _bin_rows(A, bins, higher_is_better=metric == "cosine")  # [nb, Tt] each
        cell = np.empty(best.shape, dtype=object)
        for r, (lo, hi) in enumerate(bins):
            span = f"frames {lo}–{hi - 1}, {starts[lo]:.2f}–{starts[hi - 1] + fs:.2f} s"
            for j in range(Tt):
                k = int(where[r, j])
                cell[r, j] = (f"token {tok_hover[j]}<br>{span}<br>best: frame {k} ({starts[k]:.2f} s), "
                              f"{metric_label} = {best[r, j]:.6f}<br>bin mean = {mean[r, j]:.6f}")
        bin_centres = np.array([(starts[lo] + starts[hi - 1] + fs) / 2.0 for lo, hi in bins])  # [nb]
        fig.add_trace(go.Heatmap(
            z=best, x=np.arange(Tt), y=bin_centres, text=cell, name=metric_label,
            colorscale=SEQUENTIAL, reversescale=(metric == "distance"),
            colorbar=dict(title=dict(text=f"{scale_label}, best of {bins[0][1] - bins[0][0]} frames"
                                          + (", bright = close" if metric == "distance" else ""), side="right")),
            hovertemplate="%{text}<extra></extra>",
        ))
    # alignment path (diamonds): i*_j per token
    method = str(getattr(analysis, "path_method", "argmax"))  # SampleAnalysis: "argmax" or "dtw"
    fig.add_trace(go.Scatter(
        x=np.arange(Tt), y=centres[path], mode="markers",
        name="alignment path i*_j" + ("" if method == "argmax" else f" ({method})"),
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
        # a token's path cell is boxed only where its frame was edited: the interventions take the argmax path of
        # the unedited states, so a DTW path can put an edited token's cell on a frame the edit left alone
        cols = [j for j in tokens_edit if 0 <= j < Tt and (not frames_edit or int(path[j]) in frames_edit)]
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
    if method != "argmax":
        default_title += f", {method} path"
    if bins is not None:
        default_title += f" — {Ts} frames shown in {len(bins)} bins (hover and export exact)"
    default_title = sample_title(analysis, default_title)
    rows = Ts if bins is None else len(bins)
    _base_layout(fig, title or default_title, height=max(380, min(760, 18 * rows + 160)), legend_on_top=True)
    fig.update_layout(showlegend=True, legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def layer_curves(analysis, current_layer: int | None = None, title: str | None = None) -> go.Figure:
    """Sequence-level cosine and distance of the mean-pooled states across layers (two panels).

    analysis: SampleAnalysis (seq_cos, seq_dist [L+1]). Layer L (after final norm) is an open
    marker behind a dotted line; current_layer, if given, a dashed line.
    """
    return _curves_panels(analysis, ("seq_cos", "seq_dist"), current_layer,
                          title or sample_title(analysis, "Sequence level: mean-pooled speech vs text states, "
                                                          f"layers 0–{len(analysis.seq_cos) - 1}"))


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
    # diagnostics beside the numbers: layers whose path is collapsed, and where ρ is undefined (drawn as 0)
    for key, rho, color, name in (("cos", analysis.spearman_cos, colors[0], "cosine"),
                                  ("dist", analysis.spearman_dist, colors[1], "distance")):
        collapsed = getattr(analysis, f"collapsed_{key}", None)
        undefined = getattr(analysis, f"spearman_undefined_{key}", None)
        for flags, symbol, label in ((collapsed, "square-open", "collapsed path"),
                                     (undefined, "x-thin-open", "ρ undefined (constant path), drawn as 0")):
            if flags is None or not np.asarray(flags).any():
                continue
            ls = np.nonzero(np.asarray(flags))[0]
            fig.add_trace(go.Scatter(
                x=ls, y=np.asarray(rho)[ls], mode="markers", name=f"{name} path: {label}",
                marker=dict(symbol=symbol, size=15, color=color, line=dict(width=2, color=color)),
                hovertemplate=f"layer %{{x}}: {name} path, {label}<br>ρ = %{{y:.6f}}<extra></extra>"), row=1, col=1)
    panels = [(1, 1), (1, 2)]
    _mark_final_layer(fig, L, panels)
    _mark_current_layer(fig, current_layer, panels)
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text="Spearman ρ (−1 … 1)", row=1, col=1)
    fig.update_yaxes(title_text="share of tokens (0 … 1)", range=[-0.02, 1.02], row=1, col=2)
    return _base_layout(fig, title or sample_title(analysis, "Token level: alignment-path monotonicity and "
                                                             f"consistency, layers 0–{L}"), height=360)


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


def norm_curves(analysis, current_layer: int | None = None, title: str | None = None) -> go.Figure:
    """Per-layer mean token norm of each span (log scale) and the standardized distance d~ (two panels).

    analysis: SampleAnalysis with norm_speech, norm_text, std_dist [L+1] (metrics.norms).
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("mean token norm ‖h‖₂ per span", "standardized distance d̃ of the spans"))
    dark, light = categorical_colors(2)
    L = len(analysis.std_dist) - 1
    fig.add_trace(_layer_trace(analysis.norm_speech, "speech frames", dark, "circle", "solid", hover_label="‖h‖₂"),
                  row=1, col=1)
    fig.add_trace(_layer_trace(analysis.norm_text, "text tokens", light, "square", "dash", hover_label="‖h‖₂"),
                  row=1, col=1)
    fig.add_trace(_layer_trace(analysis.std_dist, "standardized distance", "#333333", "diamond", "solid",
                               hover_label="d̃", showlegend=False), row=1, col=2)
    panels = [(1, 1), (1, 2)]
    _mark_final_layer(fig, L, panels)
    _mark_current_layer(fig, current_layer, panels)
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text="mean L2 norm (model units, log)", type="log", row=1, col=1)
    fig.update_yaxes(title_text="RMS standardized mean difference (pooled SDs)", rangemode="tozero", row=1, col=2)
    return _base_layout(fig, title or "Token norms and standardized distance across layers", height=360)


def lens_grid(lens, span: Literal["speech", "text"] = "speech", *, max_cols: int = MAX_HEATMAP_ROWS,
              label_cells: int = 60, title: str | None = None) -> go.Figure:
    """Logit lens as a grid: positions (speech frames in time, or text tokens) x layers read.

    lens: analysis.LensAnalysis. Each cell shows the decoded top-1 token; its colour is the rank of
    the aligned text token (speech) or of the token itself (text) in that position's distribution,
    log scale, bright = rank 1. Hover: exact rank and probability, the aligned token, the top-k with
    probabilities. Long clips (more than max_cols frames) are binned: a cell shows the bin's frame
    with the best rank, named in the hover. Cell labels are drawn when at most label_cells columns.
    """
    if span not in ("speech", "text"):
        raise ValueError(f"span must be 'speech' or 'text', got {span!r}")
    layers = np.asarray(lens.layers, dtype=int)  # [n]
    L, V = int(lens.num_layers), int(lens.vocab_size)
    speech = span == "speech"
    rank = np.asarray(lens.speech_rank if speech else lens.text_rank, dtype=np.int64)  # [n, T]
    top = lens.speech_top if speech else lens.text_top  # [n, T, k] strings
    probs = np.asarray(lens.speech_top_probs if speech else lens.text_top_probs, dtype=np.float64)  # [n, T, k]
    n, T = rank.shape
    fs = float(lens.frame_seconds)
    starts = np.asarray(lens.frame_times, dtype=np.float64)
    bins = frame_bins(T, max_cols) if speech else None
    cols = [(i, i + 1) for i in range(T)] if bins is None else bins
    z = np.empty((n, len(cols)))
    label = np.empty((n, len(cols)), dtype=object)
    hover = np.empty((n, len(cols)), dtype=object)
    for r in range(n):
        note = f" ({FINAL_NORM_NOTE})" if layers[r] == L else (" (LLM input)" if layers[r] == 0 else "")
        for c, (lo, hi) in enumerate(cols):
            i = lo + int(rank[r, lo:hi].argmin())  # the best-ranked position of the bin (itself if unbinned)
            tops = ", ".join(f"{html.escape(repr(t), quote=False)} {p:.3f}" for t, p in zip(top[r, i], probs[r, i]))
            if speech:
                j = int(lens.frame_token[r, i])
                where = (f"frame {i}, {starts[i]:.2f}–{starts[i] + fs:.2f} s" if hi - lo == 1 else
                         f"frames {lo}–{hi - 1} ({starts[lo]:.2f}–{starts[hi - 1] + fs:.2f} s), best: frame {i}")
                target = f"aligned token {_token_hover(lens.tokens[j], j)}"
                extra = f", p = {float(lens.speech_prob[r, i]):.3g}"
            else:
                where, target, extra = f"token {_token_hover(lens.tokens[i], i)}", "the token itself", ""
            z[r, c] = np.log10(rank[r, i])
            label[r, c] = token_label(str(top[r, i][0]))
            hover[r, c] = (f"layer {layers[r]}{note}<br>{where}<br>{target}: rank {rank[r, i]} of {V}{extra}"
                           f"<br>top-{len(top[r, i])}: {tops}")
    if speech:
        x = np.array([(starts[lo] + starts[hi - 1] + fs) / 2.0 for lo, hi in cols])
        x_title = "speech frame time (s)" + (f" — {T} frames in {len(cols)} bins (hover exact)" if bins else "")
    else:
        x, x_title = np.arange(T), "text token j (question)"
    zmax = max(1.0, float(np.log10(V)))
    ticks = list(range(0, int(zmax) + 1))
    target_name = "aligned text token" if speech else "token itself"
    fig = go.Figure(go.Heatmap(
        z=z, x=x, y=layers, text=hover, customdata=label, name="logit lens",
        texttemplate="%{customdata}" if len(cols) <= label_cells else None, textfont=dict(size=9),
        colorscale=SEQUENTIAL, reversescale=True, zmin=0.0, zmax=zmax,
        colorbar=dict(title=dict(text=f"rank of the {target_name} (log; bright = 1)", side="right"),
                      tickvals=ticks, ticktext=[f"{10 ** v:,}" for v in ticks]),
        hovertemplate="%{text}<extra></extra>"))
    if not speech:
        fig.update_xaxes(tickmode="array", tickvals=list(range(T)), ticktext=[token_label(t) for t in lens.tokens],
                         tickangle=-45)
    fig.update_xaxes(title_text=x_title, showgrid=False)
    fig.update_yaxes(title_text=f"layer ℓ ({L} = {FINAL_NORM_NOTE})", showgrid=False)
    what = "speech frames" if speech else "text tokens"
    default = (f"Logit lens over the {what}: top-1 token per cell, colour = rank of the {target_name}"
               + (f" ({lens.alignment})" if speech else ""))
    return _base_layout(fig, title or default, height=max(320, min(900, 22 * n + 180)))
