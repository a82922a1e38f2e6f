"""Diagnostics beside the numbers they qualify: lsl_core.metrics.diagnostics.Note -> one line on the page."""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

ICONS = {"collapsed_path": ":material/compress:", "spearman_undefined": ":material/functions:",
         "cka_undefined": ":material/block:", "cka_few_pairs": ":material/scatter_plot:",
         "small_n": ":material/group:", "short_speech": ":material/graphic_eq:", "r2_null": ":material/shuffle:",
         "cka_null": ":material/shuffle:", "intervention_null": ":material/shuffle:"}

# what the null-baseline columns of a GAP-vs-alignment fit table mean (metrics.gap.gap_fits)
GAP_FITS = ("r2_lo, r2_hi: bootstrap 95% CI of R² over checkpoints. r2_null95: the R² that 95% of random "
            "re-pairings of the GAP with the metric stay below; p_perm: the share of re-pairings that reach the "
            "observed R² (exact for up to 6 checkpoints). Checkpoints of one run are not independent: the GAP and "
            "every metric trend with training, so the **step** row fits training progress alone and r2_added is "
            "what a metric explains beyond it, R²(GAP ~ step + x) − R²(GAP ~ step).")


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
