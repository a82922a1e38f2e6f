"""Plotly figure builders for the app and notebooks (DESIGN §1: results -> figures -> pages).

Every function takes already computed results (a SampleAnalysis, a CKA matrix, DataFrames) and
returns a `plotly.graph_objects.Figure`; none computes a metric and none imports streamlit.

Conventions shared by every figure:
  - axes carry labels with units ("frame time (s)", "layer ℓ");
  - colour scales have monotone luminance (Viridis / Cividis), so a figure printed in grey still
    reads; categorical series also differ by marker symbol and dash style, not by hue alone;
  - hover shows the exact value, the frame time in seconds and the token text;
  - layer L (hidden_states[L], after the backbone's final norm) is marked in every layer plot;
  - alignment-path cells are diamonds; edited frames / tokens of an intervention are boxed;
  - ONE style (section "the figure style" below): a colour + marker + dash + bar pattern per training
    strategy and per condition (text, speech, cascade, each intervention), used by every chart; scores
    in percent everywhere (PERCENT_DIGITS decimals), other values VALUE_DIGITS; titles sit below the
    Plotly toolbar's row (TITLE_TOP_PX) and wrap, so the toolbar never covers them; sample figures
    name model, sample and layer in their title (it is the exported PNG's title too).

Shapes use the fixed letters L (layers; arrays hold L+1 entries), Ts (speech frames), Tt (text tokens).
"""

from __future__ import annotations

import html
import math
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
    "gap_f1": "GAP in F1 (text − speech, points)",
    "gap_containment": "GAP in containment (text − speech, points)",
    "speech_f1": "speech-input F1 (%)",
    "text_f1": "text-input F1 (%)",
    "speech_containment": "speech-input containment (%)",
    "text_containment": "text-input containment (%)",
    "agreement": "speech/text answer agreement (token F1, %)",
    "cascade_agreement": "cascade/text answer agreement (token F1, %)",
    "gap_answerable": "answerable GAP: 1 − speech containment where text contains (%)",
}



# =============================================================================== the figure style
@dataclass(frozen=True)
class SeriesStyle:
    """How one named series looks on every chart: line/marker colour, marker symbol, dash, bar fill pattern."""

    color: str
    symbol: str = "circle"
    dash: str = "solid"
    pattern: str = ""  # Plotly bar pattern shape ("" = solid fill)


def _cividis(x: float) -> str:
    return sample_colorscale(CATEGORICAL_SCALE, [x])[0]


# training strategies (manifest.strategy); luminance rises with how much is trained, so grey still separates them
STRATEGY_STYLES: dict[str, SeriesStyle] = {
    "none": SeriesStyle("#555555", "x", "dot"),
    "frozen": SeriesStyle(_cividis(0.0), "circle", "solid"),
    "lora": SeriesStyle(_cividis(0.55), "square", "dash"),
    "full": SeriesStyle(_cividis(0.8), "diamond", "dashdot"),
}
# answer conditions: inputs and interventions (by op; the target picks the pattern/marker)
CONDITION_STYLES: dict[str, SeriesStyle] = {
    "text": SeriesStyle(_cividis(0.0), "circle", "solid", ""),
    "speech": SeriesStyle(_cividis(0.72), "square", "dash", "/"),  # = "original" (unedited speech)
    "cascade": SeriesStyle("#8c8c8c", "triangle-up", "dot", "x"),
    "angle": SeriesStyle(_cividis(0.25), "diamond", "dashdot", ""),
    "length": SeriesStyle(_cividis(0.45), "star", "longdash", ""),
    "calibrate": SeriesStyle(_cividis(0.6), "hexagon", "longdashdot", ""),
    "gap": SeriesStyle("#7f7f7f", "cross", "solid", ""),
}
_TARGET_PATTERN = {"bottom": ".", "all": "", "frames": "-", "span": "|"}
_CONDITION_ALIASES = {"original": "speech", "speech input": "speech", "text input": "text",
                      "cascade (asr → llm)": "cascade"}
PERCENT_DIGITS = 1  # scores (F1, containment, agreement, GAP) are shown as percent with 1 decimal
VALUE_DIGITS = 3  # cosines, Spearman ρ, CKA, consistency, shares
DISTANCE_DIGITS = 2  # L2 distances (model units, often > 100)
TITLE_TOP_PX = 34  # the title starts below the toolbar's row (Plotly's mode bar is ~28 px high at the top)
TITLE_FONT_PX = 16
TITLE_LINE_PX = 21  # Plotly's line spacing (1.3 em) at TITLE_FONT_PX
TITLE_MAX_CHARS = 72  # wrap longer titles; export.figure passes fewer for figures in columns
_SCORE_COLUMN = re.compile(r"^(text_|speech_|gap_|cascade_)?(containment|f1|em|pedant|agreement(_other_q)?|"
                           r"answerable)(_lo|_hi)?$", re.IGNORECASE)


def _fallback_style(name: str) -> SeriesStyle:
    """A stable style for a name the tables do not list (same name -> same style in every chart and run)."""
    k = zlib.crc32(name.encode())
    return SeriesStyle(_cividis((k % 7) / 8.0), SYMBOLS[k % len(SYMBOLS)], DASHES[(k // 7) % len(DASHES)])


def strategy_style(strategy: str) -> SeriesStyle:
    """The style of a training strategy ('none', 'frozen', 'lora', 'full'; 'family · strategy' also works)."""
    key = str(strategy).split("·")[-1].strip().lower()
    return STRATEGY_STYLES.get(key) or _fallback_style(key)


def condition_style(condition: str) -> SeriesStyle:
    """The style of an answer condition: 'text', 'speech'/'Original', 'cascade', or an intervention given
    as a label ('angle:bottom3@0', composed 'a+b' takes its first part) or a title ('Angle·Bottom3')."""
    key = str(condition).strip().lower()
    key = _CONDITION_ALIASES.get(key, key)
    if key in CONDITION_STYLES:
        return CONDITION_STYLES[key]
    parts = re.split(r"[:·]", key.split("+")[0].strip(), maxsplit=1)  # op, rest ('bottom3@0', 'Bottom3 @ℓ1')
    base = CONDITION_STYLES.get(parts[0].strip())
    if base is None:
        return _fallback_style(key)
    m = re.match(r"\s*([a-z]+)", parts[1]) if len(parts) > 1 else None
    target = m.group(1) if m else ""
    return SeriesStyle(base.color, base.symbol, base.dash, _TARGET_PATTERN.get(target, base.pattern))


def is_score_column(name: str) -> bool:
    """Columns holding fractions 0..1 that the UI shows in percent (F1, containment, EM, agreement, GAP...)."""
    return bool(_SCORE_COLUMN.match(str(name)))


def percent(x: float, digits: int = PERCENT_DIGITS) -> str:
    """A fraction as the UI shows it: 0.2513 -> '25.1 %' ('–' for NaN/None)."""
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return f"{100.0 * float(x):.{digits}f} %"


def display_table(df: pd.DataFrame, *, fractions: Sequence[str] | None = None, percents: Sequence[str] = ()
                  ) -> pd.DataFrame:
    """A table as the UI shows it: score fractions -> percent ('… (%)'), every float rounded consistently.

    fractions: columns holding 0..1 scores (default: every column is_score_column recognises);
    percents: columns already in percent (e.g. Table 1). Percent columns get PERCENT_DIGITS decimals,
    distances DISTANCE_DIGITS, other floats VALUE_DIGITS. Downloads keep the exact values.
    """
    out = df.copy()
    base = lambda c: re.sub(r"_(lo|hi)$", "", str(c))  # noqa: E731  an interval end is in its column's unit
    percents = {c for c in out.columns if c in percents or base(c) in percents}
    fractions = ([c for c in out.columns if is_score_column(c) and c not in percents] if fractions is None
                 else list(fractions))
    renames = {}
    for c in out.columns:
        if c in fractions or c in percents:
            if not pd.api.types.is_numeric_dtype(out[c]):
                continue
            out[c] = (out[c] * (100.0 if c in fractions else 1.0)).round(PERCENT_DIGITS)
            if "%" not in str(c):
                renames[c] = f"{c} (%)"
        elif pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(DISTANCE_DIGITS if "dist" in str(c) else VALUE_DIGITS)
    return out.rename(columns=renames)


def wrap_title(text: str, max_chars: int = TITLE_MAX_CHARS) -> str:
    """Break a title at spaces into lines of <= max_chars (HTML <br>); existing <br> breaks are kept."""
    lines = []
    for part in str(text).split("<br>"):
        line = ""
        for word in part.split(" "):
            if line and len(_strip_tags(line)) + 1 + len(_strip_tags(word)) > max_chars:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "<br>".join(lines)


def _strip_tags(s: str) -> str:
    return re.sub(r"<[^>]+>", "", s)


def fit_title(fig: go.Figure, max_chars: int = TITLE_MAX_CHARS) -> go.Figure:
    """Re-wrap a figure's title for a narrower column and grow its top margin to match (in place)."""
    title = fig.layout.title.text or ""
    place_title(fig, wrap_title(title.replace("<br>", " "), max_chars))
    return fig


def place_title(fig: go.Figure, text: str | None = None) -> go.Figure:
    """Put the title in its own band: its first line starts TITLE_TOP_PX below the figure's top edge (under
    the toolbar's row) and the top margin grows with its lines, a legend or panel titles above the plot,
    so nothing overlaps. Plotly centres a multi-line title on its anchor (it moves the block up by half
    of the extra lines), which the top padding undoes. Call it after the legend and annotations are set;
    export.figure calls it again (through fit_title) when it re-wraps for a column."""
    text = (fig.layout.title.text or "") if text is None else text
    lines = text.count("<br>") + 1 if text else 0
    lg = fig.layout.legend
    legend_on_top = bool(fig.layout.showlegend is not False and lg is not None and lg.y is not None and lg.y >= 1.0)
    subtitles = any(a.text and a.yref == "paper" and a.y is not None and a.y >= 1.0
                    for a in fig.layout.annotations or ())  # make_subplots' panel titles sit there
    below = 10 + (30 if legend_on_top else 0) + (24 if subtitles else 0)  # px between title and plot area
    fig.update_layout(
        title=dict(text=text, x=0.0, xanchor="left", xref="container", y=1.0, yref="container", yanchor="top",
                   pad=dict(l=12, t=TITLE_TOP_PX + math.ceil(TITLE_LINE_PX * max(0, lines - 1) / 2), b=0),
                   font=dict(size=TITLE_FONT_PX)),
        margin_t=TITLE_TOP_PX + TITLE_LINE_PX * lines + below)
    return fig


def sample_title(analysis, what: str) -> str:
    """'<model> · sample <id>' over 'what' (two lines): the title a sample figure and its exported PNG carry."""
    model = getattr(analysis, "model", "") or ""
    sid = getattr(analysis, "sample_id", "") or ""
    who = " · ".join(x for x in (model, f"sample {sid}" if sid else "") if x)
    return f"{who}<br>{what}" if who else what


def error_bars(df: pd.DataFrame, column: str, scale: float = 1.0) -> dict | None:
    """Plotly error_y for `column` from its column_lo / column_hi (95% interval), or None when absent."""
    lo, hi = f"{column}_lo", f"{column}_hi"
    if lo not in df.columns or hi not in df.columns:
        return None
    y = df[column].to_numpy(dtype=np.float64)
    return dict(type="data", symmetric=False, array=scale * (df[hi].to_numpy(dtype=np.float64) - y),
                arrayminus=scale * (y - df[lo].to_numpy(dtype=np.float64)), thickness=1.5, width=4,
                color="#222222")


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


# =============================================================================== sample figures
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
            colorbar=dict(title=dict(text=metric_label + (" (bright = close)" if metric == "distance" else ""),
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
            colorbar=dict(title=dict(text=f"{metric_label}, best of {bins[0][1] - bins[0][0]} frames"
                                          + (" (bright = close)" if metric == "distance" else ""), side="right")),
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
                hovertemplate=f"layer %{{x}}: {name} path, {label}<extra></extra>"), row=1, col=1)
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
        if baseline:
            fig.add_trace(go.Scatter(
                x=sub[x], y=scale * sub[baseline], mode="lines+markers",
                name=f"{g if g is not None else y} · {baseline_label}",
                line=dict(color=st.color, dash="dot", width=1), marker=dict(symbol=st.symbol, size=5, color=st.color),
                text=sub[hover] if hover in sub.columns else None,
                hovertemplate="%{text}<br>" + f"{x} = %{{x}}<br>{baseline} ({baseline_label}) = "
                              f"%{{y:{fmt}}}{unit}<extra></extra>"))
    fig.update_xaxes(title_text="training step" if x == "step" else x)
    label = SCALAR_LABELS.get(y, y)
    fig.update_yaxes(title_text=label + (" (%)" if scale == 100.0 and "%" not in label and "points" not in label
                                         else ""))
    _base_layout(fig, title or f"{SCALAR_LABELS.get(y, y)} across training", height=420)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.22, xanchor="left", x=0.0),
                      margin=dict(b=110))
    return fig


def gap_scatter(df: pd.DataFrame, x: str, fits: pd.DataFrame | None = None, *, gap: str = "gap",
                by: Sequence[str] = ("family", "strategy"), label: str = "checkpoint",
                gap_label: str = "GAP (text − speech score, percentage points)", title: str | None = None,
                gap_scale: float = 100.0) -> go.Figure:
    """GAP against an alignment metric, one point per checkpoint, with one OLS line per group.

    df: one row per checkpoint with columns x, gap, `label` and the `by` columns. fits: the output of
    metrics.gap.gap_r2_table (columns *by, slope, intercept, r2, n); each group's line is drawn over
    its x range and its R² is shown in the legend. Groups take their strategy's style (strategy_style);
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
            x=sub[x], y=gap_scale * sub[gap], mode="markers", name=legend, legendgroup=name,
            marker=dict(symbol=styles[k].symbol, size=11, color=styles[k].color, line=dict(color="black", width=1)),
            text=sub[label] if label in sub.columns else None,
            hovertemplate="%{text}<br>" + f"{html.escape(SCALAR_LABELS.get(x, x), quote=False)} = %{{x:.6f}}<br>"
                          f"GAP = %{{y:.{PERCENT_DIGITS}f}}{' points' if gap_scale == 100.0 else ''}"
                          "<extra></extra>",
        ))
        if fit_row is not None and len(sub):
            xs = np.linspace(float(sub[x].min()), float(sub[x].max()), 20)
            fig.add_trace(go.Scatter(
                x=xs, y=gap_scale * (fit_row["slope"] * xs + fit_row["intercept"]), mode="lines", legendgroup=name,
                name=f"fit {name}", showlegend=False,
                line=dict(color=styles[k].color, dash=styles[k].dash, width=2),
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
                y_label: str = "speech layer a", band: np.ndarray | None = None, low: np.ndarray | None = None,
                high: np.ndarray | None = None, spread: str = "95% interval") -> go.Figure:
    """Cross-layer CKA [L+1, L+1] (speech layer a = rows, text layer b = columns), colour fixed to 0..1.

    band: optional [L+1] text layer b*(a) per speech layer (metrics.stability.band_location), drawn
    as open circles joined by a line. low / high [L+1, L+1], when given, are each cell's interval over
    samples, shown in the hover.
    """
    M = np.asarray(matrix, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"CKA matrix must be 2-D, got shape {M.shape}")
    La, Lb = M.shape[0] - 1, M.shape[1] - 1
    custom, extra = None, ""
    if low is not None and high is not None:
        custom = np.stack([np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)], axis=-1)
        extra = f"<br>{spread}: [%{{customdata[0]:.{VALUE_DIGITS}f}}, %{{customdata[1]:.{VALUE_DIGITS}f}}]"
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
    fig.update_yaxes(title_text="RMS standardized mean difference", rangemode="tozero", row=1, col=2)
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


def cka_spread(curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], title: str) -> go.Figure:
    """The diagonal CKA[a, a] (speech layer a vs text layer a) of one or more CKA matrices with a band for
    their spread over samples: curves = {name: (matrix, low, high)}, each [L+1, L+1]."""
    fig = go.Figure()
    L = 0
    for k, (name, (M, lo, hi)) in enumerate(curves.items()):
        d, dl, dh = (np.diagonal(np.asarray(m, dtype=np.float64)) for m in (M, lo, hi))
        L = max(L, d.shape[0] - 1)
        st = SeriesStyle(categorical_colors(max(2, len(curves)))[k], SYMBOLS[k], DASHES[k])
        x = np.arange(d.shape[0])
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([dh, dl[::-1]]), fill="toself",
                                 fillcolor="rgba(120,120,120,0.25)", line=dict(width=0), hoverinfo="skip",
                                 name=f"{name}: 95% interval", legendgroup=name))
        fig.add_trace(go.Scatter(
            x=x, y=d, mode="lines+markers", name=name, legendgroup=name,
            line=dict(color=st.color, dash=st.dash, width=2), marker=dict(symbol=st.symbol, size=7, color=st.color),
            customdata=np.stack([dl, dh], axis=1),
            hovertemplate=f"{html.escape(name, quote=False)}<br>layer %{{x}}<br>CKA = %{{y:.6f}}<br>95% interval "
                          f"[%{{customdata[0]:.{VALUE_DIGITS}f}}, %{{customdata[1]:.{VALUE_DIGITS}f}}]<extra></extra>",
        ))
    _mark_final_layer(fig, L)
    fig.update_xaxes(title_text="layer a = b (speech layer vs the same text layer)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text="linear CKA (0 … 1)")
    _base_layout(fig, title, height=400)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0), margin=dict(b=110))
    return fig


# =============================================================================== benchmark
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


def _controls_curves(df: pd.DataFrame, column: str, value: str, table: str, label: str,
                     order: str) -> tuple[pd.DataFrame, list]:
    """The rows of one `analyze --controls` table for df[column] == value at layers >= 0, and one curve key
    (df[label]) per checkpoint in `order` (the step), first appearance kept."""
    rows = df[(df[column] == value) & (df["layer"] >= 0)]
    if "table" in rows.columns:
        rows = rows[rows["table"] == table]
    keys = list(dict.fromkeys(rows.sort_values(order, kind="stable")[label] if order in rows.columns else rows[label]))
    return rows, keys


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
    rows, keys = _controls_curves(df, "scorer", scorer, "retrieval", label, order)
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

    rows, keys = _controls_curves(df, "metric", metric, "specific", label, order)
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


WORD_GROUP_STYLES = {  # hearing's word groups: dark solid / mid hatched / light crossed (distinct in grey)
    "question": SeriesStyle(_cividis(0.0), "circle", "solid", ""),
    "other": SeriesStyle(_cividis(0.4), "square", "dash", "/"),
    "never": SeriesStyle(_cividis(0.8), "diamond", "dot", "x"),
}
WORD_GROUP_LABELS = {"question": "words of a training question", "other": "words only in other training text",
                     "never": "words never spoken in training"}


def hearing_bars(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Word recall of each checkpoint's speech path (and Whisper transcript) by word group: one panel per voice
    group (seen, unseen), grouped bars per checkpoint with 95% intervals, in percent.

    table: lsl_core.experiments.hearing.recall_tables (columns checkpoint, voices, words, spoken, questions,
    recall, lo, hi; fractions). Groups with no spoken word are left out.
    """
    for c in ("checkpoint", "voices", "words", "recall", "lo", "hi", "spoken"):
        if c not in table.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(table.columns)}")
    panels = [v for v in ("seen", "unseen") if v in set(table["voices"])]
    fig = make_subplots(rows=1, cols=max(len(panels), 1), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"{v} voice{'s' if v == 'seen' else ''}" for v in panels])
    d = PERCENT_DIGITS
    for k, vg in enumerate(panels, start=1):
        for g, st in WORD_GROUP_STYLES.items():
            r = table[(table["voices"] == vg) & (table["words"] == g) & (table["spoken"] > 0)]
            if r.empty:
                continue
            r = r.assign(recall_lo=r["lo"], recall_hi=r["hi"])
            extra = np.stack([r["spoken"].to_numpy(), r.get("questions", r["spoken"]).to_numpy(),
                              100 * r["lo"].to_numpy(), 100 * r["hi"].to_numpy()], axis=1)
            fig.add_trace(go.Bar(
                x=[str(c) for c in r["checkpoint"]], y=100 * r["recall"], name=WORD_GROUP_LABELS[g],
                legendgroup=g, showlegend=k == 1, error_y=error_bars(r, "recall", 100.0), customdata=extra,
                marker=dict(color=st.color, line=dict(color="black", width=1),
                            pattern=dict(shape=st.pattern, fgcolor="#333333") if st.pattern else None),
                hovertemplate=f"%{{x}}, {vg} voices<br>{WORD_GROUP_LABELS[g]}: recall %{{y:.{d}f}} %"
                              f"<br>95% CI [%{{customdata[2]:.{d}f}}, %{{customdata[3]:.{d}f}}]"
                              "<br>%{customdata[0]} words spoken in %{customdata[1]} questions<extra></extra>"),
                row=1, col=k)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="checkpoint (speech path) or its Whisper transcript")
    fig.update_yaxes(title_text="word recall (%)", range=[0, 100], row=1, col=1)
    _base_layout(fig, title or "What the speech path hears: recall of the spoken question's words", height=460)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0.0),
                      margin=dict(b=150))
    return fig


_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "star", "hexagon", "triangle-down")


def hearing_exposure(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Word recall by exposure (the dose-response of hearing): one panel per voice group (seen, unseen); x = bins
    of training clips that spoke the word (0 = never), y = recall in %, one line per checkpoint with its 95%
    intervals (Whisper transcripts dashed), each bin's chance (the word in other questions' outputs) as a
    horizontal tick in the series' colour.

    table: lsl_core.experiments.hearing.exposure_tables (columns checkpoint, voices, bin, exposure, distinct,
    spoken, questions, recall, lo, hi, chance; fractions).
    """
    from lsl_core.experiments.hearing import ASR_SUFFIX

    for c in ("checkpoint", "voices", "bin", "exposure", "recall", "lo", "hi", "spoken"):
        if c not in table.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(table.columns)}")
    panels = [v for v in ("seen", "unseen") if v in set(table["voices"])]
    fig = make_subplots(rows=1, cols=max(len(panels), 1), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"{v} voice{'s' if v == 'seen' else ''}" for v in panels])
    order = table.drop_duplicates("bin").sort_values("bin")["exposure"].tolist()
    names = list(dict.fromkeys(table["checkpoint"]))
    colors = categorical_colors(len(names))
    d = PERCENT_DIGITS
    for k, vg in enumerate(panels, start=1):
        for i, name in enumerate(names):
            r = table[(table["checkpoint"] == name) & (table["voices"] == vg) & (table["spoken"] > 0)].sort_values("bin")
            if r.empty:
                continue
            asr = str(name).endswith(ASR_SUFFIX)
            ch = r["chance"].to_numpy(dtype=float) if "chance" in r.columns else np.full(len(r), np.nan)
            extra = np.stack([r["spoken"].to_numpy(), r.get("distinct", r["spoken"]).to_numpy(),
                              r.get("questions", r["spoken"]).to_numpy(), 100 * r["lo"].to_numpy(),
                              100 * r["hi"].to_numpy(), 100 * ch], axis=1)
            fig.add_trace(go.Scatter(
                x=r["exposure"], y=100 * r["recall"], name=str(name), legendgroup=str(name), showlegend=k == 1,
                mode="lines+markers", customdata=extra,
                line=dict(color=colors[i], dash="dash" if asr else "solid", width=2),
                marker=dict(symbol=_SYMBOLS[i % len(_SYMBOLS)], size=8, color=colors[i],
                            line=dict(color="black", width=1)),
                error_y=error_bars(r.assign(recall_lo=r["lo"], recall_hi=r["hi"]), "recall", 100.0),
                hovertemplate=f"{html.escape(str(name))}, {vg} voices<br>words spoken in %{{x}} training clips: "
                              f"recall %{{y:.{d}f}} %<br>95% CI [%{{customdata[3]:.{d}f}}, %{{customdata[4]:.{d}f}}]"
                              f"<br>chance (other questions' outputs) %{{customdata[5]:.{d}f}} %"
                              "<br>%{customdata[0]} words spoken (%{customdata[1]} distinct) in %{customdata[2]} "
                              "questions<extra></extra>"), row=1, col=k)
            if np.isfinite(ch).any():
                fig.add_trace(go.Scatter(
                    x=r["exposure"], y=100 * ch, name="chance", legendgroup=str(name), showlegend=False,
                    mode="markers", marker=dict(symbol="line-ew-open", size=16, color=colors[i], line=dict(width=2)),
                    hovertemplate=f"{html.escape(str(name))}, {vg} voices<br>%{{x}} training clips: chance "
                                  f"%{{y:.{d}f}} % (the word in other questions' outputs)<extra></extra>"),
                    row=1, col=k)
    fig.update_xaxes(title_text="training clips that spoke the word", type="category", categoryorder="array",
                     categoryarray=order)
    fig.update_yaxes(title_text="word recall (%)", range=[0, 100], row=1, col=1)
    _base_layout(fig, title or "Recall by exposure: how often training spoke a word vs how often it is heard "
                               "(ticks: chance)", height=460)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0.0),
                      margin=dict(b=150))
    return fig


VOICE_GROUP_STYLES = {  # seen / unseen voices as bars: dark solid / light hatched (distinct in grey)
    "seen": SeriesStyle(_cividis(0.1), "circle", "solid", ""),
    "unseen": SeriesStyle(_cividis(0.75), "diamond", "dash", "/"),
}


def closed_vocab_bars(table: pd.DataFrame, unseen_voice: str, title: str | None = None,
                      share: str = "words closed") -> go.Figure:
    """The closed-vocabulary ceiling: one horizontal bar per condition and voice group, x = agreement with the
    text answers as a multiple of the cascade's on the same clips (95% intervals), the cascade at 1.

    table: lsl_core.experiments.closed_vocab.ceiling_table (columns condition, voice, closed_share, agreement,
    cascade_agreement, ratio, ratio_lo, ratio_hi; fractions; voice "seen" or the unseen voice's name), or
    closed_vocab.coverage_table (share = "words never spoken": what closed_share counts there, in the hover).
    """
    for c in ("condition", "voice", "closed_share", "agreement", "cascade_agreement", "ratio"):
        if c not in table.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(table.columns)}")
    order = list(dict.fromkeys(table["condition"]))[::-1]  # first condition on top
    fig = go.Figure()
    d = PERCENT_DIGITS
    for group, voice in (("seen", "seen"), ("unseen", unseen_voice)):
        r = table[table["voice"] == voice].set_index("condition").reindex(order).dropna(subset=["ratio"])
        if r.empty:
            continue
        r = r.reset_index()
        st = VOICE_GROUP_STYLES[group]
        extra = np.stack([100 * r["agreement"], 100 * r["cascade_agreement"], 100 * r["closed_share"],
                          r.get("ratio_lo", r["ratio"]), r.get("ratio_hi", r["ratio"])], axis=1)
        err = error_bars(r, "ratio")
        fig.add_trace(go.Bar(
            y=r["condition"], x=r["ratio"], orientation="h", name=f"{group} voice{'s' if group == 'seen' else ''}"
            + (f" ({voice})" if group == "unseen" else ""), customdata=extra,
            error_x=err, marker=dict(color=st.color, line=dict(color="black", width=1),
                                     pattern=dict(shape=st.pattern, fgcolor="#333333") if st.pattern else None),
            hovertemplate=f"%{{y}}, {group} voices<br>%{{x:.2f}}× the cascade, 95% CI [%{{customdata[3]:.2f}}, "
                          f"%{{customdata[4]:.2f}}]<br>agreement %{{customdata[0]:.{d}f}} % (cascade "
                          f"%{{customdata[1]:.{d}f}} %)<br>{share} %{{customdata[2]:.0f}} %<extra></extra>"))
    fig.add_vline(x=1.0, line=dict(color="#222222", dash="dash", width=1.5), annotation_text="the cascade",
                  annotation_position="top")
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="agreement with the text answers, × the cascade's on the same clips",
                     rangemode="tozero")
    fig.update_yaxes(title_text="what answers", categoryorder="array", categoryarray=order)
    _base_layout(fig, title or "The closed-vocabulary ceiling: questions with the unknown words dropped or "
                               "replaced, answered by the same LLM", height=160 + 48 * len(order))
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.25, xanchor="left", x=0.0),
                      margin=dict(l=330, b=140))
    return fig


__all__ = ["cka_stability", "norm_curves", "lens_grid", "frame_bins", "MAX_HEATMAP_ROWS",
           "token_heatmap", "layer_curves", "tokenwise_curves", "checkpoint_curves", "trend_curves", "gap_scatter",
           "cka_heatmap", "cka_spread", "scores_by_voice", "intervention_bars", "subset_scores", "categorical_colors",
           "token_label", "LAYER_METRICS", "SCALAR_LABELS", "SeriesStyle", "STRATEGY_STYLES", "CONDITION_STYLES",
           "strategy_style", "condition_style", "is_score_column", "percent", "display_table", "wrap_title", "fit_title",
           "sample_title", "error_bars", "PERCENT_DIGITS", "VALUE_DIGITS", "DISTANCE_DIGITS",
           "control_curves", "retrieval_curves", "specific_curves", "CONTROL_AXES", "hearing_bars",
           "WORD_GROUP_STYLES", "hearing_exposure", "VOICE_GROUP_STYLES", "closed_vocab_bars"]

