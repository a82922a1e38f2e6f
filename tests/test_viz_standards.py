"""The figure standard on EVERY public figure builder of lsl_core.viz: "Plotly, labelled axes and units, colour
scales that read in grey, hover that shows the exact value, frame time and token text", plus a title.

The builders are enumerated from lsl_core.viz (its __all__ and every viz module's namespace), so a new builder
without a case below fails `test_every_public_figure_builder_has_a_case`. Each case builds a figure from the
small synthetic fixtures of tests/test_viz*.py; four checks read it:
  (a) axes: every visible x/y axis (subplots too) and every colour bar has a title; a quantitative one names its
      unit or scale (UNIT_MARKERS), an L2 distance in "model units";
  (b) grey: every colour scale is strictly monotone in relative luminance; two series in one legend differ by
      dash / marker symbol / bar pattern, or by at least GREY_STEP in lightness;
  (c) hover: every trace that shows data has a hovertemplate naming its value at full precision, at
      >= VALUE_DIGITS decimals, or at PERCENT_DIGITS decimals followed by its unit (% or points); a trace drawn
      over a heatmap shows the heatmap's value at its cell; heatmaps over speech frames show each cell's frame
      time and token text; hoverinfo="skip" only for the decorations listed in SKIP_HOVER;
  (d) the figure has a title.
Each check returns the problems it found (a list of strings), so the last tests here feed it broken figures
and assert that it complains: the checks can fail.
"""

from __future__ import annotations

import html
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.colors import hex_to_rgb
from plotly.subplots import make_subplots

import lsl_core.viz
from lsl_core import viz
from lsl_core.metrics.controls import METRIC_NAMES, RETRIEVAL_STATS, SCORERS
from lsl_core.metrics.gap import gap_r2_table
from lsl_core.metrics.stability import band_location, stability_summary
from test_viz import _analysis, _lens
from test_viz_controls import _controls_rows, _sample_controls

# =============================================================================== what the standard asks
# An axis title names its unit or scale when it holds one of these (checked on quantitative axes and colour bars).
UNIT_MARKERS = ("(s)", "%", "points", "cosine", "model units", "ρ", "Pearson r", "CKA", "share", "0 … 1", "−1 … 1",
                "layer", "step", "×", "rank", "log", "SDs")
# Two series are told apart in grey by lightness alone only when their CIE L* differ by at least this (L* runs
# 0..100; the project's categorical colours step by ≥ 10 for up to 6 series): a design tolerance, not a measurement.
GREY_STEP = 5.0
# The only traces allowed hoverinfo="skip": decorations whose numbers another trace's hover already gives.
# builder -> {trace name: why}. A CI band (fill="toself") is covered by a rule in _hover_problems instead: its
# interval must be in the hover of the line of its legendgroup.
SKIP_HOVER: dict[str, dict[str, str]] = {
    "token_heatmap": {"edited frame/token": "outline boxes around path cells; the path diamond under each box "
                                            "carries the value, frame time and token"},
    "cka_stability": {"a = b": "the reference diagonal a = b: no data, a guide for the eye"},
}
# Builders in __all__ that return a Figure but build none: they re-title a figure they are given.
FIGURE_MODIFIERS = {"fit_title": "re-wraps the title of a figure it is given",
                    "place_title": "moves the title of a figure it is given into its band"}


# =============================================================================== colour arithmetic
def _rgb(color: str) -> tuple[float, float, float]:
    c = color.strip()
    if c.startswith("#"):
        return tuple(float(v) for v in hex_to_rgb(c))
    inner = c[c.index("(") + 1: c.index(")")].split(",")
    r, g, b = (float(v) for v in inner[:3])
    if c.startswith("rgba") and len(inner) == 4:  # translucent: as seen over the white plot background
        a = float(inner[3])
        r, g, b = (a * v + (1 - a) * 255.0 for v in (r, g, b))
    return r, g, b


def _relative_luminance(color: str) -> float:
    """WCAG relative luminance Y (0 = black, 1 = white) of an sRGB colour."""
    def lin(v: float) -> float:
        s = v / 255.0
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4
    r, g, b = _rgb(color)
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def _lightness(color: str) -> float:
    """CIE L* (0..100, perceptually even) of a colour: what a grey print keeps of it."""
    y = _relative_luminance(color)
    return 116.0 * y ** (1 / 3) - 16.0 if y > 216 / 24389 else y * 24389 / 27


# =============================================================================== the checks
def _axes(fig: go.Figure) -> dict[str, object]:
    """Every x/y axis of the figure ('xaxis', 'yaxis2', ...): those in the layout and those a trace uses."""
    names = {k for k in fig.layout.to_plotly_json() if re.fullmatch(r"[xy]axis\d*", k)}
    for t in fig.data:
        for ref in (getattr(t, "xaxis", None) or "x", getattr(t, "yaxis", None) or "y"):
            names.add(f"{ref[0]}axis{ref[1:]}")
    return {n: fig.layout[n] for n in sorted(names)}


def _on_axis(t, name: str) -> bool:
    letter, ref = name[0], name[0] + name[5:]
    return (getattr(t, f"{letter}axis", None) or letter) == ref


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _quantitative(fig: go.Figure, name: str, axis) -> bool:
    """An axis holding numbers (not categories, not ticks labelled with tokens)."""
    if axis.type == "category" or (axis.tickmode == "array" and axis.ticktext):
        return False
    letter = name[0]
    for t in fig.data:
        if not _on_axis(t, name):
            continue
        values = getattr(t, letter, None)
        if values is not None and len(values) and not all(_is_number(v) for v in np.asarray(values, dtype=object)):
            return False
    return True


def _unit_problem(where: str, title: str) -> str | None:
    lower = title.lower().replace("distance path", "")  # the path picked by distance is not a distance
    if "distance" in lower and "standardized" not in lower and "model units" not in title:
        return f"{where} '{title}' is an L2 distance without '(model units)'"
    if not any(m in title for m in UNIT_MARKERS):
        return f"{where} '{title}' names no unit or scale"
    return None


def _axis_problems(fig: go.Figure, case: Case) -> list[str]:
    out = []
    for name, axis in _axes(fig).items():
        if axis.visible is False:
            continue
        # a shared axis (make_subplots(shared_yaxes=True)) matches its partner and hides its tick labels: the
        # same axis drawn again beside it, titled once on the partner
        if axis.matches and axis.showticklabels is False:
            continue
        title = axis.title.text or ""
        if not re.sub(r"<[^>]+>", "", title).strip():
            out.append(f"{name} has no title")
        elif _quantitative(fig, name, axis) and (p := _unit_problem(name, title)):
            out.append(p)
    for t in fig.data:
        if t.type in ("heatmap", "contour") and t.showscale is not False:
            title = t.colorbar.title.text or ""
            if not title.strip():
                out.append(f"colour bar of {t.name!r} has no title")
            elif p := _unit_problem(f"colour bar of {t.name!r}", title):
                out.append(p)
    return out


def _scales(t) -> list[tuple[str, object]]:
    out = []
    if t.type in ("heatmap", "contour", "histogram2d", "histogram2dcontour", "surface"):
        out.append((f"{t.type} {t.name!r}", t.colorscale))
    marker = getattr(t, "marker", None)
    if marker is not None:
        color = marker.color
        numeric = color is not None and not isinstance(color, str) and np.ndim(color) > 0 and all(
            _is_number(v) for v in np.asarray(color, dtype=object).ravel())
        if marker.colorscale is not None or numeric:
            out.append((f"marker colours of {t.name!r}", marker.colorscale))
    return out


def _colour_scale_problems(scale, where: str) -> list[str]:
    if scale is None:
        return [f"{where}: continuous colours with the template's default scale (none chosen)"]
    lum = [_relative_luminance(c) for _, c in scale]
    steps = np.diff(lum)
    if not (np.all(steps > 0) or np.all(steps < 0)):
        return [f"{where}: colour scale not strictly monotone in luminance ({[round(v, 3) for v in lum]})"]
    return []


def _trace_colour(t) -> str | None:
    """The one colour a series is drawn in (None when it varies per point)."""
    if t.type == "scatter" and t.fill in ("toself", "tonexty", "tozeroy", "tozerox"):
        c = t.fillcolor
    elif t.type == "scatter" and "lines" in (t.mode or "lines"):
        c = t.line.color
    else:
        c = t.marker.color if getattr(t, "marker", None) is not None else None
    return c if isinstance(c, str) else None


def _grey_key(t) -> tuple:
    """What tells a series apart without colour: dash, marker symbol, bar pattern, fill."""
    mode = (t.mode or "lines") if t.type == "scatter" else ""
    dash = (t.line.dash or "solid") if t.type == "scatter" and "lines" in mode else ""
    symbol = ""
    if t.type == "scatter" and "markers" in mode:
        s = t.marker.symbol
        symbol = str(s if s is None or isinstance(s, str) else s[0]) if s is not None else "circle"
    pattern = ""
    if t.type == "bar" and t.marker.pattern is not None and t.marker.pattern.shape is not None:
        p = t.marker.pattern.shape
        pattern = p if isinstance(p, str) else tuple(p)
    return t.type, dash, symbol, pattern, t.fill if t.type == "scatter" else None


def _grey_problems(fig: go.Figure, case: Case) -> list[str]:
    out = []
    for t in fig.data:
        for where, scale in _scales(t):
            out += _colour_scale_problems(scale, where)
    legend = [t for t in fig.data if t.showlegend is not False and t.type not in ("heatmap", "contour")]
    if len(legend) < 2 or fig.layout.showlegend is False:
        return out
    for i, a in enumerate(legend):
        for b in legend[i + 1:]:
            if _grey_key(a) != _grey_key(b):
                continue
            ca, cb = _trace_colour(a), _trace_colour(b)
            if ca is None or cb is None or abs(_lightness(ca) - _lightness(cb)) < GREY_STEP:
                out.append(f"legend series {a.name!r} and {b.name!r} share dash/symbol/pattern {_grey_key(a)[1:]} "
                           f"and differ by less than {GREY_STEP} L* in grey ({ca} vs {cb})")
    return out


_PLACEHOLDER = re.compile(r"%\{(\w+)(\[\d+\])?(?::([^}]*))?\}")
_NUMBER = re.compile(r"[-−+]?\d+(?:,\d{3})*(?:\.\d+)?")
_TIME = re.compile(r"(?:\d+\.\d+|%\{[^}]+\})(?:\s*–\s*(?:\d+\.\d+|%\{[^}]+\}))?\s*s\b")


def _format_ok(template: str, m: re.Match) -> bool:
    """A placeholder's format shows the value at full precision, at >= VALUE_DIGITS decimals, or at
    PERCENT_DIGITS decimals followed by its unit."""
    fmt = m.group(3)
    if not fmt:
        return True
    d = re.search(r"\.(\d+)([a-z%])", fmt)
    if d is None:
        return True  # no precision given: d3-format prints the number in full
    digits, kind = int(d.group(1)), d.group(2)
    if kind in "gr":  # significant digits
        return digits >= viz.VALUE_DIGITS + 1
    if digits >= viz.VALUE_DIGITS:
        return True
    return digits >= viz.PERCENT_DIGITS and re.match(r"\s*(%|points)", template[m.end():]) is not None


def _value_shown(template: str, var: str, column: int | None = None) -> str | None:
    """None when the template shows %{var} (or %{customdata[column]}) at an accepted precision, else why not."""
    wanted = None if column is None else ("" if column == -1 else f"[{column}]")  # -1: a 1-D customdata
    hits = [m for m in _PLACEHOLDER.finditer(template)
            if m.group(1) == var and (wanted is None or (m.group(2) or "") == wanted)]
    if not hits:
        return "does not show its value"
    bad = [m.group(0) for m in hits if not _format_ok(template, m)]
    return f"shows its value at too few digits ({bad})" if bad else None


def _text_states(text: str, value: float) -> bool:
    """The cell text states `value`: a number in it rounds to it at >= VALUE_DIGITS decimals, or is it exactly."""
    for s in _NUMBER.findall(text):
        num = float(s.replace(",", "").replace("−", "-"))
        decimals = len(s.split(".")[1]) if "." in s else 0
        if decimals >= viz.VALUE_DIGITS and abs(num - value) <= 0.5 * 10 ** -decimals + 1e-12:
            return True
        if decimals == 0 and abs(value - round(value)) < 1e-9 and num == round(value):
            return True
    return False


def _cell_texts(t) -> tuple[np.ndarray, np.ndarray]:
    """A heatmap's hover text per cell (its template with %{text} filled in) and its z."""
    z = np.asarray(t.z, dtype=np.float64)
    text = np.asarray(t.text, dtype=object) if t.text is not None else np.full(z.shape, "", dtype=object)
    filled = np.vectorize(lambda s: (t.hovertemplate or "").replace("%{text}", str(s)), otypes=[object])(text)
    return filled, z


def _frame_time_axis(fig: go.Figure, t) -> bool:
    titles = [(fig.layout[f"{k}axis{(getattr(t, f'{k}axis', None) or k)[1:]}"].title.text or "") for k in "xy"]
    return any("time (s)" in s for s in titles)


def _hover_problems(fig: go.Figure, case: Case) -> list[str]:
    out = []
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    hover_by_group = {}
    for t in fig.data:
        if t.legendgroup is not None and t.hovertemplate:
            hover_by_group.setdefault(t.legendgroup, []).append(t.hovertemplate)
    for t in fig.data:
        who = f"{t.type} {t.name!r}"
        if t.hoverinfo in ("skip", "none"):
            if t.type == "scatter" and t.fill == "toself":  # a CI band: its line's hover must give the interval
                if not any(re.search(r"CI|interval", h) for h in hover_by_group.get(t.legendgroup, [])):
                    out.append(f"{who}: a band without hover whose line does not state the interval")
            elif t.name not in SKIP_HOVER.get(case.builder, {}):
                out.append(f"{who}: hoverinfo={t.hoverinfo!r} on a trace that shows data (not an exempt decoration)")
            continue
        template = t.hovertemplate or ""
        if not template:
            out.append(f"{who}: no hovertemplate (Plotly's default hover)")
            continue
        if t.type == "heatmap":
            if "%{z" in template:
                if p := _value_shown(template, "z"):
                    out.append(f"{who}: {p}")
            else:
                cells, z = _cell_texts(t)
                shown = case.z_shown(z)
                missing = [(r, c) for r, c in np.ndindex(z.shape) if not _text_states(cells[r, c], shown[r, c])]
                if missing:
                    out.append(f"{who}: hover text of cells {missing[:3]} does not state the exact value")
            if _frame_time_axis(fig, t):
                out += _frames_tokens_problems(t, case, who)
            continue
        under = [h for h in heatmaps if (h.xaxis, h.yaxis) == (t.xaxis, t.yaxis)]
        if under:  # a trace over a heatmap (path, band): it shows the heatmap's value at its cells
            out += _overlay_problems(t, under[0], who)
            if _frame_time_axis(fig, under[0]):
                out += _frames_tokens_problems(t, case, who)
            continue
        horizontal = getattr(t, "orientation", None) == "h" or (
            t.y is not None and len(t.y) and not all(_is_number(v) for v in np.asarray(t.y, dtype=object)))
        if p := _value_shown(template, "x" if horizontal else "y"):
            out.append(f"{who}: {p}")
    return out


def _overlay_problems(t, hm, who: str) -> list[str]:
    """A scatter drawn over heatmap hm must show hm's value at each of its points' cells (from its customdata)."""
    hx, hy, z = np.asarray(hm.x, dtype=float), np.asarray(hm.y, dtype=float), np.asarray(hm.z, dtype=float)
    cells = np.array([z[int(np.abs(hy - y).argmin()), int(np.abs(hx - x).argmin())]
                      for x, y in zip(np.asarray(t.x, dtype=float), np.asarray(t.y, dtype=float))])
    custom = np.asarray(t.customdata, dtype=np.float64) if t.customdata is not None else np.empty((len(cells), 0))
    columns = [(-1, custom)] if custom.ndim == 1 else [(k, custom[:, k]) for k in range(custom.shape[1])]
    for k, col in columns:
        if col.shape == cells.shape and np.allclose(col, cells, rtol=1e-6):
            p = _value_shown(t.hovertemplate or "", "customdata", k)
            return [f"{who}: {p} (the heatmap's value at its cells)"] if p else []
    return [f"{who}: drawn over the heatmap but its hover does not carry the heatmap's value"]


def _frames_tokens_problems(t, case: Case, who: str) -> list[str]:
    """Hover over speech frames names the frame time (s) and the token text."""
    if not case.tokens:
        return [f"{who}: over speech frames, but the case names no tokens to look for"]
    quoted = [html.escape(repr(tok), quote=False) for tok in case.tokens]
    if t.type == "heatmap":
        cells, _ = _cell_texts(t)
        token_ticks = t.x is not None and len(case.tokens) == np.shape(t.z)[1]  # columns = tokens j
        texts = [(cells[r, c], quoted[c] if token_ticks and case.token_columns else None)
                 for r, c in np.ndindex(cells.shape)]
    else:
        points = t.text if t.text is not None else [""] * len(t.x)
        texts = [((t.hovertemplate or "").replace("%{text}", str(s)),
                  quoted[int(x)] if case.token_columns else None) for s, x in zip(points, t.x)]
    out = []
    for s, want in texts:
        if not _TIME.search(s):
            out.append(f"{who}: hover {s!r} has no frame time in seconds")
        elif (want is not None and want not in s) or (want is None and not any(q in s for q in quoted)):
            out.append(f"{who}: hover {s!r} does not name the token" + (f" {want}" if want else ""))
        if out:
            break
    return out


def _title_problems(fig: go.Figure, case: Case) -> list[str]:
    text = re.sub(r"<[^>]+>", " ", fig.layout.title.text or "").strip()
    return [] if text else ["the figure has no title"]


CHECKS = {"axes": _axis_problems, "grey": _grey_problems, "hover": _hover_problems, "title": _title_problems}


# =============================================================================== the builders and their cases
@dataclass(frozen=True)
class Case:
    builder: str
    id: str
    build: Callable[[], go.Figure]
    tokens: tuple[str, ...] = ()  # a figure over speech frames: the token texts its hover must name
    token_columns: bool = False  # the heatmap's columns are these tokens in order (hover must name its own)
    # what a heatmap cell's hover states of its colour value z (e.g. the rank when the colour is log10 rank)
    z_shown: Callable[[np.ndarray], np.ndarray] = field(default=lambda z: z)


def _figure_builders() -> dict[str, Callable]:
    """Every public function of lsl_core.viz that builds a Figure: exported in __all__, or public in a viz module."""
    found = {}
    modules = [m for m in vars(lsl_core.viz).values()
               if inspect.ismodule(m) and m.__name__.startswith("lsl_core.viz.")]
    candidates = [(n, getattr(viz, n)) for n in viz.__all__]
    candidates += [(n, f) for m in modules for n, f in vars(m).items()
                   if inspect.isfunction(f) and f.__module__ == m.__name__]
    for name, fn in candidates:
        if name.startswith("_") or not inspect.isfunction(fn):
            continue
        if typing.get_type_hints(fn).get("return") is go.Figure and name not in FIGURE_MODIFIERS:
            found[name] = fn
    return found


def _rich_analysis(**kw) -> SimpleNamespace:
    a = _analysis(**kw)
    L = a.cos.shape[0] - 1
    a.model, a.sample_id = "lora-step0400", "q7__en-gb"
    a.norm_speech, a.norm_text = np.geomspace(1, 100, L + 1), np.geomspace(2, 50, L + 1)
    a.std_dist = np.linspace(0.1, 1, L + 1)
    a.collapsed_cos = np.arange(L + 1) % 2 == 0
    a.spearman_undefined_dist = np.arange(L + 1) == L
    return a


TOKENS = tuple(_analysis().tokens)
LENS_TOKENS = tuple(_lens().tokens)


def _checkpoint_table(metric: str) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({"checkpoint": ["c", "a", "b"], "step": [300, 100, 200],
                         metric: [rng.uniform(0, 1, 4) for _ in range(3)]})


def _trend_table() -> pd.DataFrame:
    """Three trajectories (strategies none / frozen / lora) x two steps, every SCALAR_LABELS column with CIs."""
    rng = np.random.default_rng(2)
    rows = pd.DataFrame({"trajectory": ["f · none"] * 2 + ["f · frozen"] * 2 + ["f · lora"] * 2,
                         "family": "f", "strategy": ["none"] * 2 + ["frozen"] * 2 + ["lora"] * 2,
                         "step": [0, 100] * 3, "checkpoint": [f"k{i}" for i in range(6)], "n": 12})
    for key in viz.SCALAR_LABELS:
        v = rng.uniform(0.1, 0.9, 6)
        rows[key], rows[f"{key}_lo"], rows[f"{key}_hi"] = v, v - 0.05, v + 0.05
    rows["agreement_other_q"] = rng.uniform(0, 0.2, 6)
    return rows


def _gap_table() -> tuple[pd.DataFrame, pd.DataFrame]:
    df = pd.DataFrame({"checkpoint": list("abcdef"), "family": ["f"] * 6, "strategy": ["lora"] * 4 + ["frozen"] * 2,
                       "step": [1, 2, 3, 4, 1, 2], "gap": [0.5, 0.42, 0.3, 0.1, 0.4, 0.35]})
    rng = np.random.default_rng(3)
    for key in viz.SCALAR_LABELS:
        df[key] = rng.uniform(0, 1, 6)
    return df, df


def _cka_matrix(L=3, seed=0) -> np.ndarray:
    return np.clip(np.eye(L + 1) * 0.7 + np.random.default_rng(seed).uniform(0, 0.3, (L + 1, L + 1)), 0, 1)


def _nulls_table() -> pd.DataFrame:
    rows = [("Angle·Bottom3", "Angle·Random3", "least-aligned tokens vs random ones"),
            ("Angle·Bottom3", "Angle·Bottom3 · shuffled pairing", "each frame's own token"),
            ("Angle·All", "Angle·All · other question", "the question's own transcript"),
            ("Length·Bottom3", "Length·Random3", "least-aligned tokens vs random ones"),
            ("Calibrate·All", "Calibrate·All · other question", "the question's own transcript")]
    d = np.array([2.5, -1.0, 4.0, 0.5, 1.5])
    return pd.DataFrame({"condition": [r[0] for r in rows], "null": [r[1] for r in rows],
                         "tests": [r[2] for r in rows], "layer": 0, "Δ agreement": d, "Δ agreement_lo": d - 2,
                         "Δ agreement_hi": d + 2, "n": 20})


def _across_table() -> pd.DataFrame:
    t = _nulls_table()
    parts = [t.assign(checkpoint=c, step=s, **{"Δ agreement": t["Δ agreement"] + k}) for k, (c, s) in
             enumerate((("step0100", 100), ("step0200", 200), ("step0400", 400)))]
    return pd.concat(parts, ignore_index=True)


def _profile_table() -> pd.DataFrame:
    rows = []
    for layer in (0, 2, 4):
        for v, tests in (("unedited speech", ""), ("shuffled pairing", "each frame's own token"),
                         ("other question", "the question's own transcript")):
            d = 0.5 * layer + len(v) / 10
            rows.append(dict(intervention="Angle·All", layer=layer, versus=v, tests=tests, **{
                "Δ agreement": d, "Δ agreement_lo": d - 1, "Δ agreement_hi": d + 1}, n=10))
    return pd.DataFrame(rows)


def _subset_tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [dict(subset=s, modality=m, metric=mt, score=sc, ci_low=sc - 3, ci_high=sc + 3, n=40)
            for s, mt in (("sd-qa", "containment"), ("mmsu", "accuracy"))
            for m, sc in (("text", 60.0), ("speech", 35.0), ("cascade", 50.0))]
    gap = pd.DataFrame({"subset": ["sd-qa", "mmsu", "overall"], "gap": [25.0, 20.0, 22.5],
                        "gap_ci_low": [20.0, 15.0, 19.0], "gap_ci_high": [30.0, 25.0, 26.0], "n": [40, 40, 80]})
    return pd.DataFrame(rows), gap


def _hearing_table() -> pd.DataFrame:  # as in test_viz.test_hearing_bars_panels_groups_intervals_and_grey_order
    return pd.DataFrame({"checkpoint": ["a"] * 6 + ["a: Whisper ASR"] * 6,
                         "voices": (["seen"] * 3 + ["unseen"] * 3) * 2,
                         "words": ["question", "other", "never"] * 4,
                         "spoken": [10, 3, 4, 5, 2, 2] * 2, "questions": [3, 2, 2, 3, 1, 1] * 2,
                         "recall": [0.7, 0.5, 0.25, 0.4, 0.3, 0.0, 0.8, 0.6, 0.5, 0.6, 0.4, 0.5],
                         "lo": [0.5, 0.3, 0.0, 0.2, 0.1, 0.0] * 2, "hi": [0.9, 0.7, 0.5, 0.6, 0.5, 0.0] * 2})


def _exposure_table() -> pd.DataFrame:  # as in test_viz.test_hearing_exposure_lines_per_checkpoint_...
    return pd.DataFrame({"checkpoint": ["a"] * 4 + ["a: Whisper ASR"] * 2,
                         "voices": ["seen", "seen", "unseen", "unseen", "seen", "seen"],
                         "bin": [3, 0, 0, 3, 0, 3], "exposure": ["30–99", "0", "0", "30–99", "0", "30–99"],
                         "distinct": [2, 4, 3, 2, 4, 2], "spoken": [4, 6, 3, 2, 6, 4], "questions": [2, 3, 2, 1, 3, 2],
                         "recall": [0.75, 0.0, 0.0, 0.5, 0.5, 0.8], "lo": [0.5, 0.0, 0.0, 0.3, 0.2, 0.6],
                         "hi": [1.0, 0.0, 0.0, 0.7, 0.8, 1.0], "chance": [0.25, 0.0, 0.1, 0.2, 0.0, 0.1]})


def _ceiling_table() -> pd.DataFrame:  # as in test_viz.test_closed_vocab_bars_...
    return pd.DataFrame({"condition": ["end-to-end speech"] * 2 + ["typed question, never-spoken words dropped"] * 2,
                         "voice": ["seen", "en-gb-scotland"] * 2, "closed_share": [0.0, 0.0, 0.2, 0.2],
                         "agreement": [0.2, 0.18, 0.4, 0.4], "cascade_agreement": [0.4, 0.3, 0.4, 0.3],
                         "ratio": [0.5, 0.6, 1.0, 4 / 3], "ratio_lo": [0.4, 0.5, 0.8, 1.1],
                         "ratio_hi": [0.6, 0.7, 1.2, 1.5]})


def _specific_rows(metric: str) -> pd.DataFrame:
    rows = _controls_rows()
    return rows.assign(metric=np.where(rows["table"] == "specific", metric, rows.get("metric")))


def _cases() -> list[Case]:
    c: list[Case] = []
    heat = dict(tokens=TOKENS, token_columns=True)
    c += [Case("token_heatmap", "cosine", lambda: viz.token_heatmap(_rich_analysis(), 1, "cosine"), **heat),
          Case("token_heatmap", "distance-final", lambda: viz.token_heatmap(_rich_analysis(), 3, "distance"), **heat),
          Case("token_heatmap", "edited", lambda: viz.token_heatmap(
              _rich_analysis(), 1, edited={"frames": [int(_analysis().path_cos[1][1]), 0], "tokens": [1]}), **heat),
          Case("token_heatmap", "binned", lambda: viz.token_heatmap(_rich_analysis(L=2, Ts=600, seed=3), 1), **heat),
          Case("token_heatmap", "binned-distance",
               lambda: viz.token_heatmap(_rich_analysis(L=2, Ts=600, seed=3), 1, "distance"), **heat),
          Case("layer_curves", "current", lambda: viz.layer_curves(_rich_analysis(L=5), current_layer=2)),
          Case("tokenwise_curves", "flags", lambda: viz.tokenwise_curves(_rich_analysis(L=5), current_layer=1)),
          Case("norm_curves", "plain", lambda: viz.norm_curves(_rich_analysis(L=4), current_layer=2))]
    rank = dict(z_shown=lambda z: 10.0 ** z)  # lens colour = log10(rank); its hover states the rank itself
    c += [Case("lens_grid", "speech", lambda: viz.lens_grid(_lens()), tokens=LENS_TOKENS, **rank),
          Case("lens_grid", "speech-binned", lambda: viz.lens_grid(_lens(Ts=500, V=50_000, seed=2)),
               tokens=LENS_TOKENS, **rank),
          Case("lens_grid", "text", lambda: viz.lens_grid(_lens(), "text"), **rank)]
    c += [Case("checkpoint_curves", k, lambda k=k: viz.checkpoint_curves(_checkpoint_table(k), k))
          for k in viz.LAYER_METRICS]
    c += [Case("trend_curves", k, lambda k=k: viz.trend_curves(_trend_table(), k)) for k in viz.SCALAR_LABELS]
    c += [Case("trend_curves", "baseline", lambda: viz.trend_curves(
        _trend_table(), "agreement", baseline="agreement_other_q", baseline_label="answer style"))]
    alignment = [k for k in viz.SCALAR_LABELS if not viz.is_score_column(k)]
    c += [Case("gap_scatter", k, lambda k=k: viz.gap_scatter(_gap_table()[0], k, gap_r2_table(
        _gap_table()[0], k, skip_unfit=True))) for k in alignment]
    c += [Case("gap_scatter", "fractions", lambda: viz.gap_scatter(
        _gap_table()[0], "aps_cos", None, gap_scale=1.0, gap_label="GAP (text − speech, fraction 0 … 1)"))]
    M = _cka_matrix()
    c += [Case("cka_heatmap", "plain", lambda: viz.cka_heatmap(M, "cross-layer CKA")),
          Case("cka_heatmap", "band-interval-null", lambda: viz.cka_heatmap(
              M, "cross-layer CKA", band=band_location(M), low=M - 0.1, high=M + 0.1,
              null=(M * 0.2, M * 0.3, np.full_like(M, 0.01)))),
          Case("cka_stability", "three", lambda: viz.cka_stability(stability_summary(
              {"argmax · cosine": M, "dtw · cosine": _cka_matrix(seed=1), "argmax · distance": M[:, ::-1]}))),
          Case("cka_spread", "two-bands", lambda: viz.cka_spread(
              {"pooled": (M, M - 0.1, M + 0.1), "shuffled-pairing null": (M * 0.3, M * 0.2, M * 0.4)}, "spread"))]
    voices = pd.DataFrame({"voice": ["usa", "gbr"], "text_f1": [0.8, 0.6], "speech_f1": [0.5, 0.2],
                           "gap_f1": [0.3, 0.4], "n": [10, 12]})
    for col in ("text_f1", "speech_f1", "gap_f1"):
        voices[f"{col}_lo"], voices[f"{col}_hi"] = voices[col] - 0.05, voices[col] + 0.05
    table1 = pd.DataFrame({"F1": [10.0, 12.5, 11.0], "Δ F1": [0.0, 2.5, 1.0], "F1_lo": [8.0, 10.0, 9.0],
                           "F1_hi": [12.0, 15.0, 13.0], "n": [20, 20, 20]},
                          index=pd.Index(["Original", "Angle·Bottom3", "Length·All"]))
    c += [Case("scores_by_voice", "f1", lambda: viz.scores_by_voice(voices, "f1")),
          Case("intervention_bars", "table1", lambda: viz.intervention_bars(table1)),
          Case("intervention_nulls", "five", lambda: viz.intervention_nulls(_nulls_table())),
          Case("intervention_nulls_across", "three-checkpoints",
               lambda: viz.intervention_nulls_across(_across_table())),
          Case("intervention_layers", "angle-all", lambda: viz.intervention_layers(_profile_table())),
          Case("subset_scores", "two-subsets", lambda: viz.subset_scores(*_subset_tables()))]
    c += [Case("control_curves", m, lambda m=m: viz.control_curves(_sample_controls(), m, current_layer=1))
          for m in METRIC_NAMES]
    c += [Case("retrieval_curves", f"{s}-{st}", lambda s=s, st=st: viz.retrieval_curves(_controls_rows(), s, st))
          for s in SCORERS for st in RETRIEVAL_STATS]
    c += [Case("specific_curves", m, lambda m=m: viz.specific_curves(_specific_rows(m), m)) for m in METRIC_NAMES]
    c += [Case("hearing_bars", "seen-unseen", lambda: viz.hearing_bars(_hearing_table())),
          Case("hearing_exposure", "seen-unseen", lambda: viz.hearing_exposure(_exposure_table())),
          Case("closed_vocab_bars", "ceiling", lambda: viz.closed_vocab_bars(_ceiling_table(), "en-gb-scotland"))]
    return c


CASES = _cases()
_FIGURES: dict[str, go.Figure] = {}


def _figure(case: Case) -> go.Figure:
    key = f"{case.builder}[{case.id}]"
    if key not in _FIGURES:
        _FIGURES[key] = case.build()
    return _FIGURES[key]


# =============================================================================== the tests
def test_every_public_figure_builder_has_a_case():
    builders = _figure_builders()
    assert len(builders) >= 20  # the enumeration itself works (it found the page figures)
    assert set(builders) <= set(viz.__all__), "a figure builder is not re-exported by lsl_core.viz"
    covered = {c.builder for c in CASES}
    assert set(builders) - covered == set(), "figure builders without a case in test_viz_standards.CASES"
    assert covered - set(builders) == set(), "cases for names that are not public figure builders"
    for name in FIGURE_MODIFIERS:  # the exemption holds only while they take the figure they return
        first = next(iter(inspect.signature(getattr(viz, name)).parameters.values()))
        assert typing.get_type_hints(getattr(viz, name))[first.name] is go.Figure


@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.builder}[{c.id}]")
def test_figure_meets_the_standard(case: Case, check: str):
    fig = _figure(case)
    assert isinstance(fig, go.Figure)
    assert len(fig.data) > 0, "the case draws nothing: it would check nothing"
    problems = CHECKS[check](fig, case)
    assert not problems, f"{case.builder}[{case.id}]:\n  " + "\n  ".join(problems)


# ------------------------------------------------------------------------------- the checks can fail
_BARE = Case("broken", "broken", lambda: go.Figure())


def _line(y, name: str, color: str = "rgb(0, 34, 78)", dash: str = "solid", symbol: str = "circle",
          template: str = "layer %{x}<br>v = %{y:.6f}<extra></extra>") -> go.Scatter:
    return go.Scatter(x=np.arange(len(y)), y=y, name=name, mode="lines+markers", line=dict(color=color, dash=dash),
                      marker=dict(symbol=symbol, color=color), hovertemplate=template)


def _good() -> go.Figure:
    fig = go.Figure([_line([0.1, 0.2, 0.3], "a"), _line([0.3, 0.2, 0.1], "b", dash="dash", symbol="square")])
    fig.update_layout(title="t", xaxis_title="layer ℓ", yaxis_title="cosine (−1 … 1)")
    return fig


def test_the_checks_pass_a_figure_that_meets_the_standard():
    fig = _good()
    assert {k: check(fig, _BARE) for k, check in CHECKS.items()} == {k: [] for k in CHECKS}


def test_the_axis_check_fails_on_missing_titles_units_and_subplot_axes():
    fig = _good().update_layout(xaxis_title="")
    assert any("xaxis has no title" in p for p in _axis_problems(fig, _BARE))
    fig = _good().update_layout(yaxis_title="sequence distance ‖h̄ˢ − h̄ᵗ‖₂")  # a distance without its unit
    assert any("model units" in p for p in _axis_problems(fig, _BARE))
    fig = _good().update_layout(yaxis_title="mean consistency")  # quantitative, no unit or scale
    assert any("names no unit" in p for p in _axis_problems(fig, _BARE))
    sub = make_subplots(rows=1, cols=2)
    sub.add_trace(_line([1, 2], "a"), row=1, col=1)
    sub.add_trace(_line([1, 2], "b"), row=1, col=2)
    sub.update_xaxes(title_text="layer ℓ").update_yaxes(title_text="cosine", row=1, col=1)
    assert [p for p in _axis_problems(sub, _BARE)] == ["yaxis2 has no title"]
    heat = go.Figure(go.Heatmap(z=[[0.1, 0.2]], colorscale="Viridis", hovertemplate="%{z:.6f}"))
    heat.update_layout(xaxis_title="text token j", yaxis_title="layer ℓ")
    assert any("colour bar" in p for p in _axis_problems(heat, _BARE))


def test_the_grey_check_fails_on_rainbow_scales_and_series_only_hue_tells_apart():
    jet = go.Figure(go.Heatmap(z=[[0.0, 1.0]], colorscale="Jet"))
    assert any("not strictly monotone" in p for p in _grey_problems(jet, _BARE))
    viridis = go.Figure(go.Heatmap(z=[[0.0, 1.0]], colorscale="Viridis", reversescale=True))
    assert _grey_problems(viridis, _BARE) == []
    dots = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="markers", marker=dict(color=[0.2, 0.9])))
    assert any("default scale" in p for p in _grey_problems(dots, _BARE))
    same = go.Figure([_line([1, 2], "a"), _line([2, 1], "b")])  # same colour, dash and symbol
    assert any("'a' and 'b'" in p for p in _grey_problems(same, _BARE))
    # red and green of about the same lightness: apart in colour, not in grey
    red, green = "rgb(220, 50, 47)", "rgb(60, 140, 60)"
    assert abs(_lightness(red) - _lightness(green)) < GREY_STEP
    hue = go.Figure([_line([1, 2], "a", color=red), _line([2, 1], "b", color=green)])
    assert any("'a' and 'b'" in p for p in _grey_problems(hue, _BARE))
    light = go.Figure([_line([1, 2], "a"), _line([2, 1], "b", color="rgb(201, 184, 101)")])  # dark vs light
    assert _grey_problems(light, _BARE) == []


def test_the_hover_check_fails_on_skipped_rounded_or_missing_values():
    skip = _good()
    skip.data[1].hoverinfo = "skip"
    assert any("hoverinfo='skip'" in p for p in _hover_problems(skip, _BARE))
    rounded = go.Figure(_line([0.5, 0.6], "ratio", template="%{y:.2f}× the cascade<extra></extra>"))
    assert any("too few digits" in p for p in _hover_problems(rounded, _BARE))
    percent = go.Figure(_line([50.0, 60.0], "F1", template="F1 = %{y:.1f} %<extra></extra>"))
    assert _hover_problems(percent, _BARE) == []  # PERCENT_DIGITS with its unit stated
    no_value = go.Figure(_line([0.5, 0.6], "flag", template="layer %{x}: collapsed path<extra></extra>"))
    assert any("does not show its value" in p for p in _hover_problems(no_value, _BARE))
    default = go.Figure(go.Scatter(x=[0, 1], y=[0.5, 0.6], name="plain"))
    assert any("no hovertemplate" in p for p in _hover_problems(default, _BARE))


def test_the_hover_check_wants_frame_time_and_token_on_frames_by_tokens_heatmaps():
    case = Case("broken", "frames", lambda: go.Figure(), tokens=("When", " was"), token_columns=True)
    z = np.array([[0.1, 0.2], [0.3, 0.4]])
    good_text = [[f"token {html.escape(repr(t), quote=False)} (#{j})<br>frame {i}, {i / 10:.2f}–{(i + 1) / 10:.2f} s"
                  for j, t in enumerate(case.tokens)] for i in range(2)]

    def heat(text, template="%{text}<br>cosine = %{z:.6f}<extra></extra>") -> go.Figure:
        fig = go.Figure(go.Heatmap(z=z, x=[0, 1], y=[0.05, 0.15], text=text, hovertemplate=template))
        return fig.update_layout(xaxis_title="text token j", yaxis_title="speech frame time (s)")

    assert _hover_problems(heat(good_text), case) == []
    no_token = [[s.split("<br>")[1] for s in row] for row in good_text]
    assert any("does not name the token" in p for p in _hover_problems(heat(no_token), case))
    no_time = [[s.split("<br>")[0] for s in row] for row in good_text]
    assert any("no frame time" in p for p in _hover_problems(heat(no_time), case))
    swapped = [row[::-1] for row in good_text]  # each cell names the other column's token
    assert any("does not name the token" in p for p in _hover_problems(heat(swapped), case))
    assert any("exact value" in p for p in _hover_problems(heat(good_text, "%{text}<extra></extra>"), case))


def test_the_title_check_fails_without_a_title():
    assert _title_problems(_good().update_layout(title=None), _BARE) == ["the figure has no title"]
    assert _title_problems(_good().update_layout(title="<b></b>"), _BARE) == ["the figure has no title"]


def test_the_checks_fail_on_real_figures_put_back_as_they_were_before_the_audit():
    """The shortfalls this audit fixed, restored on the builders' own figures: each check names them."""
    case = next(c for c in CASES if (c.builder, c.id) == ("token_heatmap", "cosine"))
    fig = case.build()
    fig.data[0].text = [[s.split("<br>")[1] for s in row] for row in fig.data[0].text]  # frame time, no token
    assert any("does not name the token" in p for p in _hover_problems(fig, case))
    fig = case.build()
    fig.data[1].hovertemplate = "path: token %{text}<br>frame %{customdata[0]}<extra></extra>"  # value dropped
    assert any("heatmap's value" in p for p in _hover_problems(fig, case))
    fig = viz.token_heatmap(_rich_analysis(), 3, "distance")
    fig.data[0].colorbar.title.text = "distance (L2) (bright = close)"  # the old colour bar: no unit
    assert any("model units" in p for p in _axis_problems(fig, case))
    base = next(c for c in CASES if (c.builder, c.id) == ("trend_curves", "baseline"))
    fig = base.build()
    for t in fig.data:  # the old baseline: filled markers and a dotted line, like strategy "none"'s own curve
        if t.name.endswith("answer style"):
            t.marker.symbol, t.line.dash = t.marker.symbol.replace("-open", ""), "dot"
    assert any("'f · none' and 'f · none · answer style'" in p for p in _grey_problems(fig, base))
    ceiling = next(c for c in CASES if c.builder == "closed_vocab_bars")
    fig = ceiling.build()
    fig.data[0].hovertemplate = fig.data[0].hovertemplate.replace(f"%{{x:.{viz.VALUE_DIGITS}f}}", "%{x:.2f}")
    assert any("too few digits" in p for p in _hover_problems(fig, ceiling))
    flags = next(c for c in CASES if c.builder == "tokenwise_curves")
    fig = flags.build()
    marked = [t for t in fig.data if "collapsed path" in (t.name or "")]
    assert marked
    marked[0].hovertemplate = "layer %{x}: cosine path, collapsed path<extra></extra>"
    assert any("does not show its value" in p for p in _hover_problems(fig, flags))


def test_a_new_figure_builder_without_a_case_is_found(monkeypatch):
    import lsl_core.viz.sample as sample

    def new_figure(analysis) -> go.Figure:
        return go.Figure()

    new_figure.__module__ = sample.__name__
    monkeypatch.setattr(sample, "new_figure", new_figure, raising=False)
    assert "new_figure" in _figure_builders()
    assert "new_figure" not in {c.builder for c in CASES}  # so test_every_public_figure_builder_has_a_case fails
