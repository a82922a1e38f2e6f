"""Cross-layer CKA: linear CKA between speech layer a (frames aligned to tokens by the path) and text
layer b, for the selected sample and averaged over a set; plus the unaligned mean-pooled variant."""

import streamlit as st

from lsl_core import viz
from lsl_core.analysis import AnalysisOptions
from lsl_core.metrics.cka import MIN_PAIRS
from lsl_core.metrics.tokenwise import METRICS
from ui import context, errors, export, loaders, state, tables

PATHS = METRICS  # the alignment path is chosen by cosine or by distance


def _request(ids: tuple, options_key: str) -> None:
    st.session_state["cka_request"] = {"ids": ids, "options": options_key}


def main() -> None:
    st.title("Cross-layer CKA")
    st.caption("Rows: speech layer a; columns: text layer b. Aligned CKA pairs each text token j with its path "
               "frame i*_j; the pooled variant compares mean-pooled states across samples (no alignment).")
    sel = context.selection()
    sample = context.require_sample(sel)
    if sample is None:
        return
    handle = context.require_model(sel)
    if handle is None:
        return
    L = handle.model.num_layers
    c1, c2 = st.columns([1, 3])
    path = c1.radio("Alignment path", PATHS, index=state.choice("cka_path", PATHS), key="cka_path", horizontal=True,
                    persist_state="session")
    path_layer = c2.slider("Path taken at layer", 0, L, value=state.integer("cka_layer", 0, L, L // 2), key="cka_layer",
                           persist_state="session",
                           help="The layer whose alignment path pairs frames with tokens (default: the middle layer).")
    options = AnalysisOptions(cka=True, cka_path=path, cka_path_layer=int(path_layer))

    st.header(f"This sample: {sample.question}")
    a = context.analysis(handle, sel, sample, options)
    if a is not None:
        if a.cka is None:
            st.warning(f"CKA is undefined for this sample: {a.cka_note}")
        else:
            export.figure(viz.cka_heatmap(a.cka, f"Aligned cross-layer CKA — {sample.id} ({path} path at layer "
                                                 f"{path_layer})"), f"cka_{sample.id}", key="fig_cka_sample")
            export.table(tables.matrix_table(a.cka), f"cka_{sample.id}", show=False, caption="CKA matrix (long form)")

    st.header("Averaged over a set")
    if sel.sample_set is None or sel.upload is not None:
        st.info("Choose a sample set (not an upload) in the sidebar to average over several samples.")
        return
    n_max = len(sel.sample_set)
    c1, c2 = st.columns([1, 3])
    n = c1.number_input("Samples", 1, n_max, value=state.integer("cka_n", 1, n_max, min(8, n_max)), key="cka_n",
                        help="The first n samples of the sidebar's filtered set.")
    ids = tuple(sel.sample_set.ids()[: int(n)])
    c2.button(f"Compute over {len(ids)} samples", type="primary", on_click=_request, args=(ids, options.key()),
              key="cka_run")
    req = st.session_state.get("cka_request")
    if not req or req["ids"] != ids or req["options"] != options.key():
        st.caption("Press the button to average over the set (cached; a few seconds per new sample on a CPU).")
        return
    with errors.guard("Set analysis"):
        subset = sel.sample_set.filter(ids=ids)
        res = loaders.set_analysis(handle.key, sel.set_spec, ids, options.key(), handle.model, subset, options)
        for e in res.errors:
            st.warning(e)
        cols = st.columns(2)
        with cols[0]:
            if res.mean_cka is None:
                st.info("No sample had enough aligned pairs for CKA.")
            else:
                export.figure(viz.cka_heatmap(res.mean_cka, f"Aligned CKA, mean over {res.n} samples"),
                              "cka_mean", key="fig_cka_mean")
                export.table(tables.matrix_table(res.mean_cka), "cka_mean", show=False)
        with cols[1]:
            if res.pooled_cka is None:
                st.info(f"The pooled (unaligned) CKA needs at least {MIN_PAIRS} samples.")
            else:
                export.figure(viz.cka_heatmap(res.pooled_cka, f"Mean-pooled CKA across {res.n} samples (unaligned)"),
                              "cka_pooled", key="fig_cka_pooled")
                export.table(tables.matrix_table(res.pooled_cka), "cka_pooled", show=False)


main()
