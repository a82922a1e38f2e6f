"""The landing page: what the app shows, where to start, and the default model warming up."""

from __future__ import annotations

import streamlit as st

from ui import context, nav


def render() -> None:
    st.title("Modality Gap Explorer")
    st.markdown(
        "Compare, layer by layer, the hidden states of a **spoken question** with those of its **transcript** "
        "inside an end-to-end speech LLM (speech encoder → adaptor → LLM) — the *modality gap*. "
        "Pick a model and a sample in the sidebar; every page uses them, and the "
        "*Link to this view* in the sidebar reopens the same view."
    )
    st.page_link(nav.EXPLORER, label="Start: open the Sample Explorer", icon=":material/grid_on:")
    for p in nav.PAGES:
        st.page_link(p.path, label=f"{p.title} — {p.what}")
    st.caption("Figures download from their toolbar (camera icon, PNG); tables from the CSV / JSON buttons. "
               "The Sample Explorer, Interventions and Cross-layer CKA pages end with *Reproduce this view in "
               "Python* (the Checkpoints page under its GAP fits, the Benchmark page under its scores and "
               "intervention tables): the same library calls with the current "
               "settings, for a notebook. "
               "The shipped speech is synthetic (espeak-ng voices stand in for accents).")
    sel = context.selection()
    if sel.model_root is None:
        st.info("No model to show: the message in the sidebar says why and what to do.",  # said once, there
                icon=":material/arrow_back:")
        return
    handle = context.require_model(sel)  # warms the process cache while the reader reads
    if handle is not None:
        m = handle.model
        st.success(f"Model ready: **{m.name}** — {m.num_layers} layers, {m.device.type}, "
                   f"loaded in {handle.seconds:.1f} s (once per server process).", icon=":material/check_circle:")
