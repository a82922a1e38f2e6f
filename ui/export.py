"""Every figure downloadable (Plotly's toolbar: PNG at 2x, named) and every table as CSV and JSON.

Shown tables go through lsl_core.viz.display_table (scores in percent, consistent rounding); the CSV / JSON
downloads keep the exact values and the original column names."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from lsl_core import viz


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "figure"


def figure(fig, name: str, *, key: str | None = None, columns: int = 1) -> None:
    """Show a Plotly figure as built (theme=None keeps its grey-safe colours); the toolbar saves a PNG.

    columns: how many figures share the row; the title is re-wrapped to the narrower width (it sits in
    its own band under the toolbar, so the toolbar never covers it).
    """
    if columns > 1:
        viz.fit_title(fig, max(24, viz.TITLE_MAX_CHARS // columns + 6))
    st.plotly_chart(
        fig, width="stretch", theme=None, key=key or f"fig_{_slug(name)}",
        config={"displaylogo": False, "displayModeBar": True,
                "toImageButtonOptions": {"format": "png", "filename": _slug(name), "scale": 2}},
    )


def table(df: pd.DataFrame, name: str, *, show: bool = True, height: int | str = "auto",
          caption: str | None = None, percents: tuple[str, ...] = ()) -> None:
    """A table with CSV and JSON download buttons (list-valued cells stay lists in the JSON).

    The shown table is viz.display_table(df): score fractions in percent, columns in `percents` already
    in percent, every float rounded; the downloads hold df unchanged.
    """
    if show:
        st.dataframe(viz.display_table(df, percents=percents), hide_index=True, height=height)
    slug = _slug(name)
    c1, c2, c3 = st.columns([1, 1, 4])
    icon = ":material/download:"
    c1.download_button("CSV", df.to_csv(index=False).encode(), file_name=f"{slug}.csv", mime="text/csv",
                       key=f"dl_csv_{slug}", on_click="ignore", icon=icon)
    c2.download_button("JSON", df.to_json(orient="records", indent=1, force_ascii=False).encode(),
                       file_name=f"{slug}.json", mime="application/json", key=f"dl_json_{slug}", on_click="ignore",
                       icon=icon)
    if caption:
        c3.caption(caption)
