"""Sample Explorer: audio, question, ASR transcript, answers; the frames × tokens matrix of one layer with
the alignment path; sequence-level curves across layers; APS, Spearman and consistency, each with its
controls (other questions, silence, shuffled frames)."""

import streamlit as st

from lsl_core import viz
from ui import context, controls, export, links, state, tables

METRICS = ("cosine", "distance")


def main() -> None:
    st.title("Sample Explorer")
    sel = context.selection()
    view = context.sample_view(sel)
    if view is None:
        return
    sample, handle, slot, a = view
    L = a.num_layers

    links.seed("ex_layer", "layer", int, lambda v: 0 <= v <= L)
    links.seed("ex_metric", "metric", str, lambda v: v in METRICS)
    c1, c2 = st.columns([4, 1])
    layer = c1.slider("Layer ℓ", 0, L, value=state.integer("ex_layer", 0, L, L // 2), key="ex_layer",
                      persist_state="session",
                      help=f"0 = LLM input (adaptor output / token embeddings); {L} = after the final norm.")
    metric = c2.radio("Metric", METRICS, index=state.choice("ex_metric", METRICS), key="ex_metric", horizontal=True,
                      persist_state="session",
                      help="cosine f_cos(x, y) or Euclidean distance ‖x − y‖₂ of a speech frame and a token.")
    links.want(layer=layer, metric=metric)

    export.figure(viz.token_heatmap(a, layer, metric), f"heatmap_{sample.id}_layer{layer}_{metric}",
                  key="fig_heatmap")
    k = st.number_input("Other questions (controls)", 1, 20, value=state.integer("ex_partners", 1, 20, 5),
                        key="ex_partners", help="Each metric is also computed for this clip against K other "
                        "questions of the sample set; the delta under each value is the specific alignment.")
    sc = controls.sample_controls(handle, sel, sample, int(k))
    sp_key = "spearman_cos" if metric == "cosine" else "spearman_dist"
    m = st.columns(5)
    m[0].metric("APS (cosine)", f"{a.aps_cos:.4f}", help="Mean cosine along the path over layers 1..L and tokens.",
                delta=controls.delta(sc, "aps_cos"), delta_color=controls.delta_color("aps_cos"))
    m[1].metric("APS (distance)", f"{a.aps_dist:.4f}", help="Mean distance along the path over layers 1..L.",
                delta=controls.delta(sc, "aps_dist"), delta_color=controls.delta_color("aps_dist"))
    sp = a.spearman_cos if metric == "cosine" else a.spearman_dist
    m[2].metric(f"Spearman ρ, layer {layer}", f"{sp[layer]:.3f}",
                help=f"Monotonicity of the {metric} path: Spearman ρ between token order j and frame i*_j.",
                delta=controls.delta(sc, sp_key, layer), delta_color=controls.delta_color(sp_key))
    m[3].metric(f"Consistency, layer {layer}", f"{a.consistency[layer]:.3f}",
                help="Share of tokens whose cosine and distance paths pick the same frame.",
                delta=controls.delta(sc, "consistency", layer), delta_color=controls.delta_color("consistency"))
    m[4].metric("Frames × tokens", f"{a.cos.shape[1]} × {a.cos.shape[2]}",
                help=f"Ts speech frames ({a.frame_seconds * 1000:.0f} ms each) × Tt question tokens.")

    export.figure(viz.layer_curves(a, current_layer=layer), f"sequence_curves_{sample.id}", key="fig_seq")
    export.figure(viz.tokenwise_curves(a, current_layer=layer), f"tokenwise_curves_{sample.id}", key="fig_tok")
    controls.explorer_section(sc, layer, sample)
    with st.expander("Tables: per-layer metrics and the alignment path"):
        st.markdown("**Per layer**")
        export.table(tables.layer_table(a), f"layers_{sample.id}")
        st.markdown(f"**Alignment path, layer {layer}, {metric}**")
        export.table(tables.path_table(a, layer, metric), f"path_{sample.id}_layer{layer}_{metric}")
    context.fill_transcript(slot, handle, sel, sample)


main()
