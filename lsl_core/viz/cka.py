"""CKA figures: the speech-layer x text-layer matrix, its stability across samples and its spread."""

from __future__ import annotations

import html
from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lsl_core.viz.layout import _base_layout, _mark_final_layer
from lsl_core.viz.style import (
    DASHES,
    FINAL_NORM_NOTE,
    SEQUENTIAL,
    SYMBOLS,
    VALUE_DIGITS,
    SeriesStyle,
    _rgba,
    categorical_colors,
)


def cka_heatmap(matrix: np.ndarray, title: str, *, x_label: str = "text layer b",
                y_label: str = "speech layer a", band: np.ndarray | None = None, low: np.ndarray | None = None,
                high: np.ndarray | None = None, spread: str = "95% interval",
                null: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> go.Figure:
    """Cross-layer CKA [L+1, L+1] (speech layer a = rows, text layer b = columns), colour fixed to 0..1.

    band: optional [L+1] text layer b*(a) per speech layer (metrics.stability.band_location), drawn
    as open circles joined by a line. low / high [L+1, L+1], when given, are each cell's interval over
    samples, shown in the hover. null: (mean, 97.5th percentile, p) [L+1, L+1] each of the shuffled-pairing
    null (metrics.cka.cka_pairing_null), shown in the hover.
    """
    M = np.asarray(matrix, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"CKA matrix must be 2-D, got shape {M.shape}")
    La, Lb = M.shape[0] - 1, M.shape[1] - 1
    layers, extra = [], ""
    if low is not None and high is not None:
        layers += [low, high]
        extra += f"<br>{spread}: [%{{customdata[0]:.{VALUE_DIGITS}f}}, %{{customdata[1]:.{VALUE_DIGITS}f}}]"
    if null is not None:
        k = len(layers)
        layers += list(null)
        extra += (f"<br>shuffled-pairing null: mean %{{customdata[{k}]:.{VALUE_DIGITS}f}}, 97.5th percentile "
                  f"%{{customdata[{k + 1}]:.{VALUE_DIGITS}f}}; p = %{{customdata[{k + 2}]:.4f}}")
    custom = np.stack([np.asarray(v, dtype=np.float64) for v in layers], axis=-1) if layers else None
    fig = go.Figure(go.Heatmap(
        z=M, x=np.arange(Lb + 1), y=np.arange(La + 1), colorscale=SEQUENTIAL, zmin=0.0, zmax=1.0,
        colorbar=dict(title=dict(text="linear CKA", side="right")), customdata=custom,
        hovertemplate=f"{y_label} %{{y}}<br>{x_label} %{{x}}<br>CKA = %{{z:.6f}}{extra}<extra></extra>",
    ))
    fig.add_shape(type="line", x0=-0.5, y0=-0.5, x1=Lb + 0.5, y1=La + 0.5,
                  line=dict(color="white", width=1, dash="dot"))
    if band is not None:
        band = np.asarray(band, dtype=int)
        fig.add_trace(go.Scatter(
            x=band, y=np.arange(La + 1), mode="lines+markers", name="band b*(a) = argmax_b CKA",
            line=dict(color="white", width=1), marker=dict(symbol="circle-open", size=8, color="white",
                                                           line=dict(width=2)),
            customdata=M[np.arange(La + 1), band],
            hovertemplate=f"{y_label} %{{y}}: most similar {x_label} %{{x}}<br>CKA = %{{customdata:.6f}}"
                          "<extra></extra>"))
        fig.update_layout(showlegend=True, legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0.0))
    fig.update_xaxes(title_text=f"{x_label} (ℓ; {Lb} = {FINAL_NORM_NOTE})", dtick=max(1, Lb // 10),
                     range=[-0.5, Lb + 0.5], constrain="domain")
    fig.update_yaxes(title_text=f"{y_label} (ℓ; {La} = {FINAL_NORM_NOTE})", dtick=max(1, La // 10),
                     range=[-0.5, La + 0.5], scaleanchor="x", constrain="domain")
    return _base_layout(fig, title, height=520)


def cka_stability(summary, title: str | None = None) -> go.Figure:
    """How alike the CKA matrices of several configurations are (metrics.stability.StabilitySummary):
    left, Pearson r between every pair of matrices [C, C]; right, the band location b*(a) per speech
    layer for each configuration (reference first, thick) with the diagonal a = b dotted."""
    labels = [html.escape(x, quote=False) for x in summary.labels]
    C = len(labels)
    R = np.asarray(summary.correlation, dtype=np.float64)  # [C, C]
    band = np.asarray(summary.band, dtype=int)  # [C, L+1]
    L = band.shape[1] - 1
    short = [f"C{k + 1}" for k in range(C)]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.42, 0.58], horizontal_spacing=0.14,
                        subplot_titles=("Pearson r between CKA matrices", "band location b*(a) = argmax_b CKA[a, b]"))
    full = np.array([[f"{short[p]} {labels[p]}<br>vs {short[q]} {labels[q]}" for q in range(C)] for p in range(C)],
                    dtype=object)
    fig.add_trace(go.Heatmap(
        z=R, x=short, y=short, text=full, colorscale=SEQUENTIAL, zmin=-1.0, zmax=1.0, name="Pearson r",
        colorbar=dict(title=dict(text="Pearson r", side="right"), x=0.40, len=0.9),
        hovertemplate="%{text}<br>r = %{z:.6f}<extra></extra>"), row=1, col=1)
    colors = categorical_colors(C)
    agree = np.asarray(summary.band_agreement, dtype=np.float64)
    for k in range(C):
        fig.add_trace(go.Scatter(
            x=np.arange(L + 1), y=band[k], mode="lines+markers",
            name=f"{short[k]}: {labels[k]}" + (" (reference)" if k == 0 else f" — band agrees on {100 * agree[k]:.0f} %"),
            line=dict(color=colors[k], dash=DASHES[k % len(DASHES)], width=3 if k == 0 else 1.5),
            marker=dict(symbol=SYMBOLS[k % len(SYMBOLS)], size=7, color=colors[k]),
            hovertemplate=f"{short[k]} {labels[k]}<br>speech layer %{{x}} → text layer %{{y}}<extra></extra>"),
            row=1, col=2)
    fig.add_trace(go.Scatter(x=[0, L], y=[0, L], mode="lines", name="a = b", showlegend=False,
                             line=dict(color="#555555", dash="dot", width=1), hoverinfo="skip"), row=1, col=2)
    fig.update_xaxes(title_text="configuration", row=1, col=1)
    fig.update_yaxes(title_text="configuration", autorange="reversed", row=1, col=1)
    fig.update_xaxes(title_text=f"speech layer a (ℓ; {L} = {FINAL_NORM_NOTE})", row=1, col=2)
    fig.update_yaxes(title_text="most similar text layer b* (ℓ)", row=1, col=2)
    _base_layout(fig, title or f"Stability of the cross-layer CKA across {C} configurations "
                              f"(band agreement within ±{summary.tolerance} layer)", height=520)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0.0),
                      margin=dict(b=60 + 22 * C))
    return fig


def cka_spread(curves: Mapping[str, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]], title: str
               ) -> go.Figure:
    """The diagonal CKA[a, a] (speech layer a vs text layer a) of one or more CKA matrices with a band for
    their spread: curves = {name: (matrix, low, high)}, each [L+1, L+1] (low, high None: no band), e.g. the
    spread over samples, or the central 95% of a shuffled-pairing null."""
    fig = go.Figure()
    L = 0
    for k, (name, (M, lo, hi)) in enumerate(curves.items()):
        d = np.diagonal(np.asarray(M, dtype=np.float64))
        L = max(L, d.shape[0] - 1)
        st = SeriesStyle(categorical_colors(max(2, len(curves)))[k], SYMBOLS[k % len(SYMBOLS)], DASHES[k % len(DASHES)])
        x = np.arange(d.shape[0])
        hover = f"{html.escape(name, quote=False)}<br>layer %{{x}}<br>CKA = %{{y:.6f}}"
        custom = None
        if lo is not None and hi is not None:
            dl, dh = (np.diagonal(np.asarray(m, dtype=np.float64)) for m in (lo, hi))
            fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([dh, dl[::-1]]), fill="toself",
                                     fillcolor=_rgba(st.color, 0.18), line=dict(width=0), hoverinfo="skip",
                                     name=f"{name}: 95% interval", legendgroup=name))
            custom = np.stack([dl, dh], axis=1)
            hover += f"<br>95% interval [%{{customdata[0]:.{VALUE_DIGITS}f}}, %{{customdata[1]:.{VALUE_DIGITS}f}}]"
        fig.add_trace(go.Scatter(
            x=x, y=d, mode="lines+markers", name=name, legendgroup=name,
            line=dict(color=st.color, dash=st.dash, width=2), marker=dict(symbol=st.symbol, size=7, color=st.color),
            customdata=custom, hovertemplate=hover + "<extra></extra>",
        ))
    _mark_final_layer(fig, L)
    fig.update_xaxes(title_text="layer a = b (speech layer vs the same text layer)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text="linear CKA (0 … 1)")
    _base_layout(fig, title, height=400)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0), margin=dict(b=110))
    return fig
