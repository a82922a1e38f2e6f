"""Every figure downloadable (Plotly's toolbar: PNG at 2x, named) and every table as CSV and JSON.

Shown tables go through lsl_core.viz.display_table (scores in percent, consistent rounding); the CSV / JSON
downloads keep the exact values (every float round-trips) and the original column names, except that columns
already in percent get ' (%)' as the shown table gives them (score fractions stay 0..1 under their own name)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import streamlit as st

from lsl_core import viz


_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_MAX_STEM = 100  # well under every file system's 255, with room for the extension and a browser's " (1)"


def _slug(name: str) -> str:
    """A file stem safe on every OS: ASCII letters, digits, '.', '_', '-'; not hidden, not a Windows device name,
    no trailing dot, at most _MAX_STEM characters."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._-")[:_MAX_STEM].rstrip("._-") or "figure"
    first, dot, rest = s.partition(".")
    return f"{first}_{dot}{rest}" if first.lower() in _WINDOWS_RESERVED else s  # 'aux.csv' is reserved too


def file_name(name: str, ext: str) -> str:
    """The download's file name for `name` (any text: sample ids, conditions like 'angle:bottom3')."""
    return f"{_slug(name)}.{ext}"


def _flag_percents(df: pd.DataFrame, percents: tuple[str, ...]) -> pd.DataFrame:
    """Columns already in percent (and their _lo / _hi ends) named '<name> (%)' unless the name says so."""
    base = lambda c: re.sub(r"_(lo|hi)$", "", str(c))  # noqa: E731  an interval end is in its column's unit
    renames = {c: f"{c} (%)" for c in df.columns
               if (c in percents or base(c) in percents) and "%" not in str(c)}
    return df.rename(columns=renames) if renames else df


def csv_bytes(df: pd.DataFrame, percents: tuple[str, ...] = ()) -> bytes:
    """The CSV download: exact values (pandas writes the shortest repr that round-trips), UTF-8."""
    return _flag_percents(df, percents).to_csv(index=False).encode("utf-8")


def _plain(v):
    """A cell as JSON: floats exact (Python's repr round-trips), NaN/inf -> null, arrays -> lists."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in (v.tolist() if isinstance(v, np.ndarray) else v)]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if v is pd.NaT or (not isinstance(v, (list, dict)) and pd.api.types.is_scalar(v) and pd.isna(v)):
        return None
    if isinstance(v, (pd.Timestamp, pd.Timedelta)):
        return v.isoformat()
    return str(v)


def json_bytes(df: pd.DataFrame, percents: tuple[str, ...] = ()) -> bytes:
    """The JSON download: one object per row, every float exact (DataFrame.to_json rounds to 10 digits and
    writes 3e-12 as 0.0), missing values as null, list-valued cells as lists."""
    out = _flag_percents(df, percents)
    rows = [{str(k): _plain(v) for k, v in zip(out.columns, rec)} for rec in out.itertuples(index=False, name=None)]
    return json.dumps(rows, indent=1, ensure_ascii=False, allow_nan=False).encode("utf-8")


def figure(fig, name: str, *, key: str | None = None, columns: int = 1) -> None:
    """Show a Plotly figure as built (theme=None keeps its grey-safe colours); the toolbar saves a PNG.

    columns: how many figures share the row; the title is re-wrapped to the narrower width (it sits in
    its own band under the toolbar, so the toolbar never covers it).
    """
    if columns > 1:
        viz.fit_title(fig, max(24, viz.TITLE_MAX_CHARS // columns + 6))
    st.plotly_chart(
        fig, width="stretch", theme=None, key=key or f"fig_{name}",  # the full name: truncated slugs could clash
        config={"displaylogo": False, "displayModeBar": True,
                "toImageButtonOptions": {"format": "png", "filename": _slug(name), "scale": 2}},
    )


def table(df: pd.DataFrame, name: str, *, show: bool = True, height: int | str = "auto",
          caption: str | None = None, percents: tuple[str, ...] = ()) -> None:
    """A table with CSV and JSON download buttons (list-valued cells stay lists in the JSON).

    The shown table is viz.display_table(df): score fractions in percent, columns in `percents` already
    in percent, every float rounded; the downloads hold df's exact values (csv_bytes, json_bytes).
    """
    if show:
        st.dataframe(viz.display_table(df, percents=percents), hide_index=True, height=height)
    slug = _slug(name)
    c1, c2, c3 = st.columns([1, 1, 4])
    icon = ":material/download:"
    c1.download_button("CSV", csv_bytes(df, percents), file_name=f"{slug}.csv", mime="text/csv",
                       key=f"dl_csv_{name}", on_click="ignore", icon=icon)  # keyed by name: two names never clash
    c2.download_button("JSON", json_bytes(df, percents), file_name=f"{slug}.json", mime="application/json",
                       key=f"dl_json_{name}", on_click="ignore", icon=icon)
    if caption:
        c3.caption(caption)
