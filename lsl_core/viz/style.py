"""The one figure style: colour, marker, dash and bar pattern per strategy and condition, number formats,
titles, axis labels of the per-layer metrics (every chart in the package takes its look from here)."""

from __future__ import annotations

import html
import math
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

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
    "cka_diag_mean": "aligned CKA, layer a vs a (mean of 1..L)",
    "cka_null_diag_mean": "shuffled-pairing null of the aligned CKA",
    "cka_above_null_frac": "share of layers with CKA above its null",
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
# The unit or scale of a metric whose label above leaves it out (the labels stay short: cards, tables, legends);
# an axis of that metric names it (metric_axis_title). Scores already say "%" or "points" in their labels.
METRIC_UNITS: dict[str, str] = {
    "seq_cos": "−1 … 1", "seq_dist": "model units", "spearman_cos": "−1 … 1", "spearman_dist": "−1 … 1",
    "seq_cos_mean": "−1 … 1", "seq_dist_mean": "model units", "aps_cos": "−1 … 1", "aps_dist": "model units",
    "spearman_cos_mean": "−1 … 1", "spearman_dist_mean": "−1 … 1",
    "consistency_mean": "share of tokens, 0 … 1",
    "cka_diag_mean": "0 … 1", "cka_null_diag_mean": "0 … 1", "cka_above_null_frac": "0 … 1",
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
P_DIGITS = 4  # p-values (p, p_*): a permutation p of 1/2001 must not read as 0
SLOPE_SIGNIFICANT = 3  # fitted slopes span orders of magnitude (per training step ~1e-6): significant digits
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


def metric_axis_title(key: str) -> str:
    """The axis title of a per-layer metric or layer-averaged scalar: its label (SCALAR_LABELS, LAYER_METRICS,
    else the key) with its unit or scale (METRIC_UNITS): 'APS (distance; model units)', 'mean consistency
    (share of tokens, 0 … 1)'."""
    label = SCALAR_LABELS.get(key) or LAYER_METRICS.get(key, (key, True))[0]
    unit = METRIC_UNITS.get(key)
    if not unit or unit in label:
        return label
    return f"{label[:-1]}; {unit})" if label.endswith(")") else f"{label} ({unit})"


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
    distances DISTANCE_DIGITS, p-values (p, p_*) P_DIGITS, slopes SLOPE_SIGNIFICANT significant digits,
    other floats VALUE_DIGITS. Downloads keep the exact values.
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
        elif pd.api.types.is_float_dtype(out[c]) and str(c) == "slope":
            out[c] = out[c].map(lambda v: float(f"{v:.{SLOPE_SIGNIFICANT}g}") if pd.notna(v) else v)
        elif pd.api.types.is_float_dtype(out[c]) and (str(c) == "p" or str(c).startswith("p_")):
            out[c] = out[c].round(P_DIGITS)
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


def _rgba(color: str, alpha: float) -> str:
    """'rgb(r, g, b)' or '#rrggbb' -> 'rgba(r, g, b, alpha)' (a translucent band of a line's colour)."""
    if color.startswith("#"):
        r, g, b = (int(color[k: k + 2], 16) for k in (1, 3, 5))
    else:
        r, g, b = (int(float(v)) for v in color[color.index("(") + 1: color.index(")")].split(",")[:3])
    return f"rgba({r}, {g}, {b}, {alpha})"
