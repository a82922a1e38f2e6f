"""Cross-layer CKA: linear CKA between speech layer a (frames aligned to tokens by the path) and text
layer b, for the selected sample and averaged over a set; plus the unaligned mean-pooled variant."""

import streamlit as st

from lsl_core import viz
from lsl_core.analysis import AnalysisOptions
from lsl_core.metrics import diagnostics
from ui import context, errors, export, loaders, notes, state, tables

PATHS = ("cosine", "distance")


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
        pair_note = diagnostics.cka_note(len(a.tokens))
        path_notes = [n for n in diagnostics.layer_notes(a, int(path_layer), path) if n.code == "collapsed_path"]
        if a.cka is None:
            st.warning(f"CKA is undefined for this sample: {a.cka_note}", icon=":material/block:")
        else:
            export.figure(viz.cka_heatmap(a.cka, viz.sample_title(a, f"Aligned cross-layer CKA ({path} path at layer "
                                                                     f"{path_layer}, {len(a.tokens)} token pairs)")),
                          f"cka_{a.model}_{sample.id}_path{path_layer}_{path}", key="fig_cka_sample")
            notes.show([pair_note] + path_notes)
            if path_notes:
                st.caption("With a collapsed path, most speech rows of the CKA input repeat one or two frames.")
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
        notes.show(res.notes)
        cols = st.columns(2)
        spread = {}
        with cols[0]:
            if res.mean_cka is None:
                st.info("No sample had enough aligned pairs for CKA.")
            else:
                n_cka = getattr(res, "mean_cka_n", res.n)
                export.figure(viz.cka_heatmap(res.mean_cka, f"Aligned CKA, mean over {n_cka} samples — {handle.name} "
                                              "(hover: 95% bootstrap interval)", low=res.mean_cka_low,
                                              high=res.mean_cka_high, spread="95% bootstrap interval over samples"),
                              f"cka_mean_{handle.name}", key="fig_cka_mean", columns=2)
                export.table(tables.matrix_table(res.mean_cka), "cka_mean", show=False)
                if res.mean_cka_low is not None:
                    spread[f"aligned, mean over {n_cka}"] = (res.mean_cka, res.mean_cka_low, res.mean_cka_high)
        with cols[1]:
            if res.pooled_cka is None:
                st.info("The pooled (unaligned) CKA needs at least 4 samples.")
            else:
                export.figure(viz.cka_heatmap(res.pooled_cka, f"Mean-pooled CKA across {res.n} samples (unaligned) — "
                                              f"{handle.name} (hover: 95% interval)", low=res.pooled_cka_low,
                                              high=res.pooled_cka_high, spread="± 1.96 jackknife SE over samples"),
                              f"cka_pooled_{handle.name}", key="fig_cka_pooled", columns=2)
                export.table(tables.matrix_table(res.pooled_cka), "cka_pooled", show=False)
                if res.pooled_cka_low is not None:
                    spread[f"pooled over {res.pooled_cka_spread_n}"] = (res.pooled_cka, res.pooled_cka_low,
                                                                         res.pooled_cka_high)
        if spread:
            export.figure(viz.cka_spread(spread, f"{handle.name}: CKA of speech layer a with text layer a, and its "
                                                 f"spread over the {res.n} samples"), f"cka_spread_{handle.name}",
                          key="fig_cka_spread")
            st.caption("Bands: aligned CKA, 95% bootstrap interval of the mean over samples; pooled CKA, ± 1.96 "
                       "jackknife standard errors over samples (a bootstrap would repeat samples, which biases HSIC).")


main()
