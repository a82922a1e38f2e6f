"""Diagnostics beside the numbers they qualify: lsl_core.metrics.diagnostics.Note -> one line on the page."""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

ICONS = {"collapsed_path": ":material/compress:", "spearman_undefined": ":material/functions:",
         "cka_undefined": ":material/block:", "cka_few_pairs": ":material/scatter_plot:",
         "small_n": ":material/group:", "short_speech": ":material/graphic_eq:"}


def show(notes: Iterable, where=None) -> None:
    """Each note once: warnings as st.warning, informational notes as a caption with their icon."""
    where = where or st
    for n in notes:
        if n is None:
            continue
        icon = ICONS.get(n.code, ":material/info:")
        if n.severity == "warning":
            where.warning(n.message, icon=icon)
        else:
            where.caption(f"{icon} {n.message}")
