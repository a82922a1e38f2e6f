"""Figure scaffolding shared by the figure modules: base layout, frame binning of long clips, layer markers."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from lsl_core.viz.style import FINAL_NORM_NOTE, TEMPLATE, TITLE_LINE_PX, place_title, wrap_title


def _base_layout(fig: go.Figure, title: str, height: int | None = None, legend_on_top: bool = False) -> go.Figure:
    """Template, hover, and the title in its own band under the toolbar's row (never covered by it)."""
    text = wrap_title(title)
    fig.update_layout(template=TEMPLATE, margin=dict(l=60, r=20, b=60), hoverlabel=dict(namelength=-1))
    if legend_on_top:  # the builder sets its legend later: reserve the band now
        fig.update_layout(legend=dict(y=1.0, yanchor="bottom"))
    place_title(fig, text)
    if height:
        fig.update_layout(height=height + TITLE_LINE_PX * text.count("<br>"))
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


MAX_HEATMAP_ROWS = 240  # frames drawn one per row up to this; longer clips are binned (about 2 px per row)


def frame_bins(n_frames: int, max_rows: int = MAX_HEATMAP_ROWS) -> list[tuple[int, int]] | None:
    """Consecutive frame bins [lo, hi) of equal size (the last may be shorter) so that at most max_rows
    rows are drawn; None when every frame gets its own row."""
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if n_frames <= max_rows:
        return None
    size = -(-n_frames // max_rows)  # ceil
    return [(lo, min(n_frames, lo + size)) for lo in range(0, n_frames, size)]


def _bin_rows(A: np.ndarray, bins: list[tuple[int, int]], higher_is_better: bool
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin of rows and per column: the best value, the row holding it (first on ties), the mean.

    A [Ts, T] -> ([nb, T] best, [nb, T] int row index into A, [nb, T] mean).
    """
    best = np.empty((len(bins), A.shape[1]))
    where = np.empty((len(bins), A.shape[1]), dtype=int)
    mean = np.empty((len(bins), A.shape[1]))
    for r, (lo, hi) in enumerate(bins):
        block = A[lo:hi]  # [b, T]
        k = block.argmax(axis=0) if higher_is_better else block.argmin(axis=0)  # [T]
        best[r], where[r], mean[r] = block[k, np.arange(A.shape[1])], lo + k, block.mean(axis=0)
    return best, where, mean


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
