"""Cross-layer CKA: linear CKA between speech layer a (frames aligned to tokens by the path) and text
layer b, for the selected sample and averaged over a set; plus the unaligned mean-pooled variant. The
argmax path and the monotone DTW path side by side, and how stable the matrices and their band are
across analysis configurations (path method, metric, path layer, aligned vs pooled)."""

import streamlit as st

from lsl_core import viz
from lsl_core.analysis import AnalysisOptions
from lsl_core.metrics import diagnostics
from lsl_core.metrics.cka import MIN_PAIRS, NULL_PERMUTATIONS
from lsl_core.metrics.stability import band_agreement, band_location, matrix_correlation
from lsl_core.metrics.tokenwise import METRICS
from ui import context, errors, export, loaders, notes, reproduce, state, tables

PATHS = METRICS  # the alignment path is chosen by cosine or by distance
CKA_NULL_CAPTION = (f"Null: each text token paired with the path frame of another token ({NULL_PERMUTATIONS} random "
                    "re-pairings, never the identity; every one for 4-5 tokens); both sides keep their own geometry. "
                    "Linear CKA of a few tokens in hundreds of dimensions is high even for unrelated pairs, so read "
                    "the aligned CKA against this band; the heatmaps' hover gives each cell's null and permutation p.")


def _request(ids: tuple, options_key: str, model: str) -> None:
    st.session_state["cka_request"] = {"ids": ids, "options": options_key, "model": model}


def _request_stability(ids: tuple, model: str) -> None:
    st.session_state["cka_stability_request"] = {"ids": ids, "model": model}


def _sample_side_by_side(handle, sel, sample, metric: str, path_layer: int) -> None:
    """Aligned CKA of this sample with the argmax path and with the DTW path, same metric and path layer."""
    cols = st.columns(2)
    found, analyses = {}, {}
    for col, method in zip(cols, ("argmax", "dtw")):
        options = AnalysisOptions(cka=True, cka_path=metric, cka_path_layer=int(path_layer), path=method)
        with col:
            a = context.analysis(handle, sel, sample, options)
            if a is None:
                continue
            if a.cka is None:
                st.warning(f"CKA is undefined for this sample: {a.cka_note}")
                continue
            found[method], analyses[method] = a.cka, a
            null = None if a.cka_null_mean is None else (a.cka_null_mean, a.cka_null_high, a.cka_null_p)
            export.figure(viz.cka_heatmap(a.cka, f"Aligned cross-layer CKA — {sample.id} ({metric} {method} path at "
                                                 f"layer {path_layer})", band=band_location(a.cka), null=null),
                          f"cka_{sample.id}_{method}", key=f"fig_cka_sample_{method}")
            export.table(tables.matrix_table(a.cka), f"cka_{sample.id}_{method}", show=False,
                         caption="CKA matrix (long form)")
    if len(found) == 2:
        r = matrix_correlation(found["argmax"], found["dtw"])
        same = band_agreement(found["argmax"], found["dtw"])
        st.caption(f"argmax vs DTW for this sample: Pearson r of the matrices = {r:.4f}; the band (most similar text "
                   f"layer per speech layer) is the same for {100 * same:.0f} % of the speech layers.")
    _sample_null(sample, analyses, metric, int(path_layer))


def _sample_null(sample, analyses: dict, metric: str, path_layer: int) -> None:
    """The diagonal of each path's CKA beside its shuffled-pairing null (mean and central 95% of the pairings)."""
    curves = {}
    for method, a in analyses.items():
        if a.cka_null_mean is None:
            continue
        curves[f"{method} path: aligned CKA"] = (a.cka, None, None)
        curves[f"{method} path: shuffled pairing (null)"] = (a.cka_null_mean, a.cka_null_low, a.cka_null_high)
    if not curves:
        return
    export.figure(viz.cka_spread(curves, f"{sample.id}: CKA of speech layer a with text layer a, and what the same "
                                         f"states give with the frame-token pairs shuffled ({metric} path at layer "
                                         f"{path_layer})"), f"cka_null_{sample.id}", key="fig_cka_sample_null")
    st.caption(CKA_NULL_CAPTION)
    notes.show([diagnostics.cka_null_note(a.cka, a.cka_null_high, f"the {method} path")
                for method, a in analyses.items()])


def _stability(handle, sel, ids: tuple) -> None:
    """The CKA of the set under every configuration of the default grid, and how alike they are."""
    st.header("Stability across analysis configurations")
    st.caption("The aligned CKA recomputed with the argmax and the DTW path, the cosine and the distance matrix, "
               "the path of the middle layer, of each speech layer itself and of the quarter layers, and the "
               "unaligned pooled variant. Seed 000 reports that the alignment band is stable across such choices.")
    st.button(f"Compute stability over {len(ids)} samples", on_click=_request_stability, args=(ids, handle.key),
              key="cka_stability_run")
    req = st.session_state.get("cka_stability_request")
    if not req or req != {"ids": ids, "model": handle.key}:  # pressed for these samples and this model
        st.caption("Press the button (one speech + one text forward per sample, then every configuration).")
        return
    with errors.guard("Stability"):
        res = loaders.stability(handle.key, sel.set_spec, ids, handle.model, sel.sample_set.filter(ids=ids))
        for e in res.errors:
            st.warning(e)
        if res.summary is None:
            st.info("No configuration gave a CKA matrix: use questions with at least 4 tokens and at least 4 samples.")
            return
        export.figure(viz.cka_stability(res.summary), "cka_stability", key="fig_cka_stability")
        export.table(res.summary.table(), "cka_stability", caption="One row per configuration, reference first.")
        pair = [k for k in ("argmax · cosine · path@middle", "dtw · cosine · path@middle") if res.matrices.get(k) is not None]
        if len(pair) == 2:
            st.subheader(f"Mean over {res.n} samples: argmax vs DTW path (cosine, middle layer)")
            cols = st.columns(2)
            for col, k in zip(cols, pair):
                with col:
                    M = res.matrices[k]
                    export.figure(viz.cka_heatmap(M, f"Aligned CKA, {k}, mean over {res.n} samples",
                                                  band=band_location(M)),
                                  f"cka_set_{k.split(' ')[0]}", key=f"fig_cka_set_{k.split(' ')[0]}")


def main() -> None:
    st.title("Cross-layer CKA")
    st.caption("Rows: speech layer a; columns: text layer b. Aligned CKA pairs each text token j with its path "
               "frame i*_j; the pooled variant compares mean-pooled states across samples (no alignment). "
               "Circles mark the band: the most similar text layer for each speech layer.")
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
                    persist_state="session", help="The token matrix the path is found on (argmax and DTW alike).")
    path_layer = c2.slider("Path taken at layer", 0, L, value=state.integer("cka_layer", 0, L, L // 2), key="cka_layer",
                           persist_state="session",
                           help="The layer whose alignment path pairs frames with tokens (default: the middle layer).")
    options = AnalysisOptions(cka=True, cka_path=path, cka_path_layer=int(path_layer))

    st.header(f"This sample: {sample.question}")
    _sample_side_by_side(handle, sel, sample, path, int(path_layer))
    a = context.analysis(handle, sel, sample, options)
    if a is not None:
        path_notes = [n for n in diagnostics.layer_notes(a, int(path_layer), path) if n.code == "collapsed_path"]
        notes.show([diagnostics.cka_note(len(a.tokens))] + path_notes)
        if path_notes:
            st.caption("With a collapsed path, most speech rows of the CKA input repeat one or two frames.")

    st.header("Averaged over a set")
    if sel.sample_set is None or sel.upload is not None:
        st.info("Choose a sample set (not an upload) in the sidebar to average over several samples.")
        reproduce.cka(sel, handle, sample, path_metric=path, path_layer=int(path_layer), set_ids=None)
        return
    n_max = len(sel.sample_set)
    c1, c2 = st.columns([1, 3])
    n = c1.number_input("Samples", 1, n_max, value=state.integer("cka_n", 1, n_max, min(8, n_max)), key="cka_n",
                        persist_state="session",
                        help="The first n samples of the sidebar's filtered set.")
    ids = tuple(sel.sample_set.ids()[: int(n)])
    c2.button(f"Compute over {len(ids)} samples", type="primary", on_click=_request,
              args=(ids, options.key(), handle.key),
              key="cka_run")
    req = st.session_state.get("cka_request")
    if not req or req != {"ids": ids, "options": options.key(), "model": handle.key}:  # pressed for this view
        st.caption("Press the button to average over the set (cached; a few seconds per new sample on a CPU).")
    else:
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
                                                  high=res.mean_cka_high,
                                                  spread="95% bootstrap interval over questions"),
                                  f"cka_mean_{handle.name}", key="fig_cka_mean", columns=2)
                    export.table(tables.matrix_table(res.mean_cka), "cka_mean", show=False)
                    if res.mean_cka_low is not None:
                        spread[f"aligned, mean over {n_cka}"] = (res.mean_cka, res.mean_cka_low, res.mean_cka_high)
                    else:
                        st.caption("No interval: these samples hold one question, and its voices say nothing of "
                                   "other questions; include samples of two or more questions.")
                    if res.mean_cka_null is not None:
                        spread[f"shuffled pairing (null), mean over {n_cka}"] = (
                            res.mean_cka_null, res.mean_cka_null_low, res.mean_cka_null_high)
            with cols[1]:
                if res.pooled_cka is None:
                    st.info(f"The pooled (unaligned) CKA needs at least {MIN_PAIRS} samples.")
                else:
                    export.figure(viz.cka_heatmap(res.pooled_cka, f"Mean-pooled CKA across {res.n} samples (unaligned) — "
                                                  f"{handle.name} (hover: 95% interval)", low=res.pooled_cka_low,
                                                  high=res.pooled_cka_high,
                                                  spread="± 1.96 jackknife SE over questions"),
                                  f"cka_pooled_{handle.name}", key="fig_cka_pooled", columns=2)
                    export.table(tables.matrix_table(res.pooled_cka), "cka_pooled", show=False)
                    if res.pooled_cka_low is not None:
                        spread[f"pooled over {res.pooled_cka_spread_n}"] = (res.pooled_cka, res.pooled_cka_low,
                                                                             res.pooled_cka_high)
            if spread:
                export.figure(viz.cka_spread(spread, f"{handle.name}: CKA of speech layer a with text layer a, and its "
                                                     f"spread over the {res.n} samples"), f"cka_spread_{handle.name}",
                              key="fig_cka_spread")
                st.caption("Bands: aligned CKA, 95% bootstrap interval of the mean over questions (the voices of "
                           "a question drawn together: they are not independent); shuffled pairing, the same for the "
                           "mean of each sample's null (its frame-token pairs re-paired at random); pooled CKA, ± 1.96 "
                           "jackknife standard errors leaving one question out at a time (a bootstrap would repeat "
                           "samples, which biases HSIC).")
    _stability(handle, sel, ids)
    reproduce.cka(sel, handle, sample, path_metric=path, path_layer=int(path_layer), set_ids=ids)


main()
