"""Sample Explorer: audio, question, ASR transcript, answers; the frames × tokens matrix of one layer with
the alignment path (argmax or monotone DTW); sequence-level curves, token norms and the standardized
distance across layers; APS, Spearman and consistency, each with its controls (other questions, silence,
shuffled frames); the logit lens over the speech frames."""

import streamlit as st

from lsl_core import viz
from lsl_core.analysis import AnalysisOptions
from lsl_core.metrics import diagnostics
from lsl_core.metrics.tokenwise import METRICS
from ui import alignment, context, controls, errors, export, links, loaders, notes, reproduce, state, tables

LENS_TOP_K = 5


def _layer_range(fig, lo: int, hi: int):
    """Show only layers lo..hi on a layer-axis figure (layout only; the data stay whole)."""
    fig.update_xaxes(range=[lo - 0.5, hi + 0.5])
    return fig


def _layer_filter(L: int) -> tuple[int, int]:
    """The session's layer range (lo, hi) if it fits this model, else all layers."""
    v = st.session_state.get("ex_layers")
    if not (isinstance(v, (tuple, list)) and len(v) == 2 and 0 <= v[0] <= v[1] <= L):
        st.session_state.pop("ex_layers", None)
        return 0, L
    return int(v[0]), int(v[1])


def _logit_lens(handle, sel, sample, a, metric: str, path: str, lo: int, hi: int) -> None:
    """The logit-lens grid (frames x layers) for the layers lo..hi of the layer filter, on request."""
    L = a.num_layers
    st.header("Logit lens")
    links.seed("ex_lens", "lens", lambda v: v != "0")
    on = st.toggle("Read every layer through the final norm and LM head", value=bool(state.value("ex_lens", False)),
                   key="ex_lens", persist_state="session",
                   help="softmax(W_U · norm(h_ℓ,i)) for each speech frame and text token: which vocabulary tokens "
                        "each layer's state points to. Costs one [T, d] × [d, V] product per layer.")
    links.want(lens="1" if on else None)
    if not on:
        st.caption("Switch on to see which words the speech frames “mean” at each layer (top-1 token per cell, "
                   "colour = rank of the aligned text token).")
        return
    c1, c2 = st.columns([3, 2])
    sources = ["each layer's own alignment", *[f"layer {l}" for l in range(L + 1)]]
    fixed = c2.selectbox("Aligned token taken from", sources, index=state.choice("ex_lens_align", sources),
                         key="ex_lens_align", persist_state="session",
                         help=f"Which layer's {path} alignment pairs each frame with a text token (the rank's target).")
    c1.caption(f"Layers {lo}–{hi} (the layer filter above) · top-{LENS_TOP_K} per position · frames paired with "
               f"tokens by the {path} {metric} alignment.")
    align_layer = None if fixed.startswith("each") else int(fixed.split()[-1])
    with errors.guard("Logit lens"):
        with st.spinner(f"Logit lens over layers {lo}–{hi} …"):
            lens = loaders.lens(handle.key, context.sample_key(sel, sample), LENS_TOP_K, tuple(range(lo, hi + 1)),
                                path, metric, align_layer, handle.model, sample)
        export.figure(viz.lens_grid(lens), f"logit_lens_{sample.id}", key="fig_lens")
        with st.expander("Logit lens over the text tokens, and the exact table"):
            export.figure(viz.lens_grid(lens, "text"), f"logit_lens_text_{sample.id}", key="fig_lens_text")
            export.table(lens.table(), f"logit_lens_{sample.id}_layers{lo}-{hi}", show=False,
                         caption="Every layer × frame: top tokens, rank and probability of the aligned token.")


def main() -> None:
    st.title("Sample Explorer")
    sel = context.selection()
    path = alignment.current()
    view = context.sample_view(sel, AnalysisOptions(path=path))
    if view is None:
        return
    sample, handle, slot, a = view
    L = a.num_layers

    links.seed("ex_layer", "layer", int, lambda v: 0 <= v <= L)
    links.seed("ex_metric", "metric", str, lambda v: v in METRICS)
    c1, c2, c3 = st.columns([4, 1, 1])
    layer = c1.slider("Layer ℓ", 0, L, value=state.integer("ex_layer", 0, L, L // 2), key="ex_layer",
                      persist_state="session",
                      help=f"0 = LLM input (adaptor output / token embeddings); {L} = after the final norm.")
    metric = c2.radio("Metric", METRICS, index=state.choice("ex_metric", METRICS), key="ex_metric", horizontal=True,
                      persist_state="session",
                      help="cosine f_cos(x, y) or Euclidean distance ‖x − y‖₂ of a speech frame and a token.")
    path = alignment.radio(c3)
    links.want(layer=layer, metric=metric)

    export.figure(viz.token_heatmap(a, layer, metric), f"heatmap_{a.model}_{sample.id}_layer{layer}_{metric}",
                  key="fig_heatmap")
    layer_notes = diagnostics.layer_notes(a, layer, metric)  # collapsed path / undefined Spearman at this layer
    codes = {n.code for n in layer_notes}
    k = st.number_input("Other questions (controls)", 1, 20, value=state.integer("ex_partners", 1, 20, 5),
                        key="ex_partners",
                        persist_state="session", help="Each metric is also computed for this clip against K other "
                        "questions of the sample set; the delta under each value is the specific alignment.")
    sc = controls.sample_controls(handle, sel, sample, int(k))
    card_sc = controls.for_path(sc, a.path_method)  # the cards' deltas only where the controls share the path
    sp_key = "spearman_cos" if metric == "cosine" else "spearman_dist"
    m = st.columns(5)
    v, d = viz.VALUE_DIGITS, viz.DISTANCE_DIGITS
    m[0].metric("APS (cosine)", f"{a.aps_cos:.{v}f}", help="Mean cosine along the path over layers 1..L and tokens.",
                delta=controls.delta(card_sc, "aps_cos"), delta_color=controls.delta_color("aps_cos"))
    m[1].metric("APS (distance)", f"{a.aps_dist:.{d}f}", help="Mean distance along the path over layers 1..L.",
                delta=controls.delta(card_sc, "aps_dist"), delta_color=controls.delta_color("aps_dist"))
    sp = a.spearman_cos if metric == "cosine" else a.spearman_dist
    m[2].metric(f"Spearman ρ, layer {layer}", "undefined" if "spearman_undefined" in codes else f"{sp[layer]:.{v}f}",
                help=f"Monotonicity of the {metric} path: Spearman ρ between token order j and frame i*_j."
                     + (" Undefined here: a constant path (stored as 0)." if "spearman_undefined" in codes else ""),
                delta=controls.delta(card_sc, sp_key, layer), delta_color=controls.delta_color(sp_key))
    m[3].metric(f"Consistency, layer {layer}", f"{a.consistency[layer]:.{v}f}",
                help="Share of tokens whose cosine and distance paths pick the same frame.",
                delta=controls.delta(card_sc, "consistency", layer), delta_color=controls.delta_color("consistency"))
    m[4].metric("Frames × tokens", f"{a.cos.shape[1]} × {a.cos.shape[2]}",
                help=f"Ts speech frames ({a.frame_seconds * 1000:.0f} ms each) × Tt question tokens.")
    notes.show(layer_notes)
    notes.show(diagnostics.sample_notes(a))

    lo, hi = st.select_slider("Layer filter (curves and logit lens)", options=list(range(L + 1)),
                              value=_layer_filter(L), key="ex_layers",
                              persist_state="session",
                              help="Show and compute only these layers (the logit lens costs one product per layer).")
    export.figure(_layer_range(viz.layer_curves(a, current_layer=layer), lo, hi), f"sequence_curves_{a.model}_{sample.id}",
                  key="fig_seq")
    export.figure(_layer_range(viz.tokenwise_curves(a, current_layer=layer), lo, hi), f"tokenwise_curves_{a.model}_{sample.id}",
                  key="fig_tok")
    if a.std_dist is not None:
        export.figure(_layer_range(viz.norm_curves(a, current_layer=layer), lo, hi), f"norm_curves_{a.model}_{sample.id}",
                      key="fig_norms")
    controls.explorer_section(sc, layer, sample, a.path_method)
    with st.expander("Tables: per-layer metrics, the alignment path, the matrix of this layer"):
        st.markdown("**Per layer**")
        export.table(tables.layer_table(a), f"layers_{sample.id}")
        st.markdown(f"**Alignment path ({path}), layer {layer}, {metric}**")
        export.table(tables.path_table(a, layer, metric), f"path_{sample.id}_layer{layer}_{metric}_{path}")
        st.markdown(f"**Frames × tokens at layer {layer} ({metric}), exact values**")
        export.table(tables.layer_matrix_table(a, layer, metric), f"matrix_{sample.id}_layer{layer}_{metric}",
                     show=False, caption=f"{a.cos.shape[1] * a.cos.shape[2]} rows: frame, time, token, value.")
    _logit_lens(handle, sel, sample, a, metric, path, lo, hi)
    reproduce.explorer(sel, handle, sample, a, layer=layer, metric=metric, partners=int(k))
    context.fill_transcript(slot, handle, sel, sample)


main()
