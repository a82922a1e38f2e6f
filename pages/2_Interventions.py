"""Interventions: edit speech frames at layer ℓ during prefill (angle / length / calibration of the
Bottom-k, All or Random-k path frames; the path's own pairing or a null: shuffled pairing, another
question), regenerate, and compare text, speech, cascade and intervened answers."""

import dataclasses

import streamlit as st

from lsl_core import viz
from lsl_core.errors import LSLError
from lsl_core.experiments.table1 import donors_for
from lsl_core.interventions import (OPERATIONS, PAIRINGS, PATH_METRICS, Intervention, intervention_nulls, needs_donor,
                                    ops_help)
from lsl_core.metrics import diagnostics
from lsl_core.model.families import capabilities, transcript_source
from ui import context, errors, export, links, loaders, notes, reproduce, state, tables

OPS = tuple(OPERATIONS)  # the registry's ops, in its order
TARGETS = {"Bottom-k": "bottom", "All": "all", "Random-k": "random"}  # radio label -> Intervention.target
PAIRING_LABELS = {"path": "path (own token)", "shuffled": "shuffled pairing (null)", "other": "other question (null)"}


def _seed_from_link(L: int, Tt: int, here: str) -> None:
    """A link with ?iv=angle:bottom3@0 sets the controls and runs that intervention (once per session); a k beyond
    the question's Tt tokens is taken as Tt, in the controls and in the run alike."""
    if not links.seed_once("iv"):
        return
    raw = st.query_params.get("iv")
    if not raw:
        return
    try:
        iv = Intervention.parse(raw)
        why = (f"this page edits {', '.join(TARGETS)} frames" if iv.target not in TARGETS.values() else
               f"this model's edit layers are 0..{L - 1}" if iv.layer >= L else None)
    except LSLError as exc:
        why = str(exc)
    if why:
        st.warning(f"This link's iv={raw!r} is not valid here ({why}), so nothing is run; fix or remove 'iv' in "
                   "the link, or choose an intervention below and press Regenerate.", icon=":material/link_off:")
        return
    if iv.target in ("bottom", "random"):
        iv = dataclasses.replace(iv, k=min(max(1, iv.k), max(1, Tt)))
        st.session_state["iv_k"] = iv.k
    st.session_state.update(iv_op=iv.op, iv_target=next(k for k, v in TARGETS.items() if v == iv.target),
                            iv_layer=iv.layer, iv_metric=iv.metric, iv_pairing=iv.pairing,
                            iv_applied={"label": iv.label(), "for": here})


def _apply(label: str, here: str, nulls: tuple[str, ...] = (), donor: str | None = None) -> None:
    """Regenerate: run `label` (and its `nulls`, with the other-question `donor`) for this model + sample (a user
    selection, kept until the next press)."""
    st.session_state["iv_applied"] = {"label": label, "for": here, "nulls": tuple(nulls), "donor": donor}


def _case_report_button(sel, handle, sample, a, result: dict, applied: str, shown, max_new: int, cascade: bool) -> None:
    """One click: the shown case (audio, question, answers, heatmap, curves, metrics) as one offline HTML file."""
    from lsl_core.case_report import case_report_html

    command = None
    if sel.set_spec and sel.upload is None:
        command = reproduce.report_command(handle.path, sel.set_spec, sample.id, condition=applied, max_new=max_new,
                                           cascade=cascade and handle.model.has_asr, path=a.path_method)

    def build() -> str:  # runs only when the button is clicked
        return case_report_html(sample, a, result, condition=applied, layer=shown.layer, metric=shown.metric,
                                model_name=handle.name, digest=handle.model.digest, command=command)

    slug = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"case_{sample.id}_{applied}")
    st.download_button("Case report (HTML)", build, file_name=f"{slug}.html", mime="text/html", key="iv_report",
                       on_click="ignore", icon=":material/description:",
                       help="A self-contained HTML file of this case: audio, question, answers side by side, the "
                            "heatmap with the path and the edited frames, curves and metrics. Opens offline.")


def main() -> None:
    st.title("Interventions")
    sel = context.selection()
    view = context.sample_view(sel)
    if view is None:
        return
    sample, handle, slot, a = view
    L, Tt = a.num_layers, len(a.tokens)
    here = f"{handle.key}|{context.sample_key(sel, sample)}"  # answers belong to one model + sample
    _seed_from_link(L, Tt, here)
    links.seed("iv_max_new", "tokens", int, lambda v: 4 <= v <= 128)
    links.seed("iv_cascade", "cascade", lambda v: v != "0")

    # ---------------------------------------------------------------- controls (user selections)
    keep = "session"  # the controls keep their values across page switches
    c = st.columns([2, 2, 1, 3, 2])
    op = c[0].radio("Operation", OPS, index=state.choice("iv_op", OPS), key="iv_op", help=ops_help().replace("\n", "  \n"),
                    persist_state=keep)
    targets = tuple(TARGETS)
    target = c[1].radio("Frames", targets, index=state.choice("iv_target", targets), key="iv_target",
                        persist_state=keep,
                        help="Bottom-k: the path frames i*_j of the k tokens with the lowest path score at layer ℓ. "
                             "All: the path frames of every token. Random-k: the path frames of k tokens drawn at "
                             "random (fixed per sample): the null of Bottom-k.")
    k = c[2].number_input("k", 1, max(1, Tt), value=state.integer("iv_k", 1, max(1, Tt), 3), key="iv_k",
                          disabled=target == "All", persist_state=keep,
                          help="Number of tokens (Bottom3 = the 3 least aligned, Random3 = 3 at random).")
    layer = c[3].slider("Edit layer ℓ", 0, max(1, L - 1), value=state.integer("iv_layer", 0, max(0, L - 1), 0),
                        key="iv_layer", persist_state=keep,
                        help="Input of decoder layer ℓ (0 = the LLM input embeddings), during prefill only; "
                             "the KV cache carries the edit into decoding.")
    metric = c[4].radio("Path metric", PATH_METRICS, index=state.choice("iv_metric", PATH_METRICS), key="iv_metric",
                        persist_state=keep, help="Which alignment path picks the frames and the bottom-k tokens.")
    # pairing "other": the next different question of the sample set; for an uploaded clip, one the user types
    if sel.sample_set is not None and sel.upload is None and sel.set_spec:
        donor = donors_for(loaders.sample_set(sel.set_spec), [sample.id])[0]
    else:
        donor = st.text_input("Another question (for the other-question null)", value=state.value("iv_donor", ""),
                              key="iv_donor", persist_state=keep, placeholder="e.g. What is the capital of Peru?",
                              help="The other-question pairing edits the clip's path frames with this question's "
                                   "transcript states (its own path, tokens and states): a null that keeps the "
                                   "edit and breaks the question. Any question other than the clip's.").strip() or None
    per_frame = OPERATIONS[op].inputs == "targets"
    pairings = tuple(p for p in PAIRINGS if (p != "shuffled" or per_frame) and (p != "other" or donor))
    pairing = st.radio("Pairing", pairings, index=state.choice("iv_pairing", pairings), key="iv_pairing",
                       format_func=PAIRING_LABELS.get, horizontal=True, persist_state=keep,
                       help="Which text state each edited frame takes. path: its own token's (the paper's "
                            "interventions). shuffled pairing: another token of the same question, re-paired at "
                            "random (only for per-frame ops). other question: the path, tokens and states of "
                            "another question: the sample set's next different one, or the one typed for a clip"
                            + (f" ({donor!r})" if donor else "; type one above") + ".")
    c2 = st.columns([2, 2, 2, 2, 4])
    max_new = c2[0].number_input("Max new tokens", 4, 128, value=state.integer("iv_max_new", 4, 128, 24),
                                 key="iv_max_new", persist_state=keep)
    casc_cap = capabilities(handle.model)["cascade"]
    cascade = c2[1].checkbox("Cascade baseline (ASR → LLM)", value=bool(state.value("iv_cascade", True)),
                             key="iv_cascade", disabled=not casc_cap, persist_state=keep,
                             help=(f"Transcript by {transcript_source(handle.model)}, answered as typed text."
                                   if casc_cap else f"Not available: {casc_cap.reason}."))
    iv = Intervention(op=op, target=TARGETS[target], k=int(k), layer=int(layer), metric=metric, pairing=pairing)
    nulls = tuple(n for n, _ in intervention_nulls(iv) if donor or Intervention.parse(n).pairing != "other")
    with_nulls = c2[2].checkbox("Also its nulls", value=bool(state.value("iv_with_nulls", False)),
                                key="iv_with_nulls", disabled=not nulls, persist_state=keep,
                                help="Generate the same edit with one ingredient broken, on this sample: "
                                     + (", ".join(f"`{n}`" for n in nulls) if nulls else
                                        "none for a null or composed condition") + " (docs/controls.md).")
    c2[3].button("Regenerate", type="primary", on_click=_apply,
                 args=(iv.label(), here, nulls if with_nulls else (), donor), key="iv_run",
                 help="Generate the text, speech, cascade and intervened answers with these settings.")
    run = st.session_state.get("iv_applied") or {}
    applied = run.get("label") if run.get("for") == here else None
    applied_nulls = tuple(run.get("nulls", ())) if applied else ()
    applied_donor = run.get("donor", donor) if applied else None  # a link's run takes the current donor
    if applied and applied != iv.label():
        c2[4].caption(f"Showing **{applied}**; the settings changed to **{iv.label()}** — press Regenerate.")
    elif applied and applied_donor != donor and needs_donor((applied, *applied_nulls)):
        c2[4].caption(f"Showing **{applied}** with the other question {applied_donor!r}; it changed to "
                      f"{donor!r} — press Regenerate.")
    else:
        c2[4].caption(f"Intervention: **{iv.title()}** (`{iv.label()}`)")
    links.want(iv=applied, tokens=int(max_new) if applied else None,
               cascade="0" if applied and not cascade else None)

    # ---------------------------------------------------------------- results
    result = None
    if applied:
        try:  # the shared server batches this request with other sessions'; a progress bar shows the queue
            skey = context.sample_key(sel, sample)
            result = loaders.side_by_side(handle.key, skey, (applied, *applied_nulls), int(max_new),
                                          bool(cascade and handle.model.has_asr), handle.model, sample,
                                          loaders.known_transcript(handle.key, skey), applied_donor,
                                          tuple(sample.answers))  # scored against the references typed now
        except Exception as exc:  # noqa: BLE001
            errors.show(exc, "Generation failed")
    else:
        st.info("Choose an intervention and press **Regenerate** to see the answers side by side"
                + (" for this sample." if run else "."))

    shown = Intervention.parse(applied) if applied else iv
    edited = None
    if result is not None:
        cards = [r for r in result["rows"] if r["condition"] not in applied_nulls]
        cols = st.columns(len(cards))
        for col, r in zip(cols, cards):
            with col:
                st.markdown(f"**{r['title']}**")
                st.markdown(tables.mark_md(r["containment"]))
                st.info(r["answer"] or "∅ (empty answer)")
                st.caption(f"F1 vs references {viz.percent(r['f1'])} · agreement with text answer "
                           f"{viz.percent(r['agreement'])}")
                if r["frames"]:
                    st.caption("edited tokens: " + ", ".join(repr(t) for t in r["token_text"])
                               + " · frames at " + ", ".join(f"{t:.2f} s" for t in r["frame_times"]))
        if result["transcript"] is not None:
            st.markdown(f"**Cascade transcript (ASR):** {result['transcript'] or '∅'}")
        if result.get("batch_size", 0) > 1:
            st.caption(f"Generated on the shared server in one batch with {result['batch_size'] - 1} other "
                       f"session request(s) (batch #{result['batch_id']}); greedy answers, each session gets its own.")
        edited = next((r for r in result["rows"] if r["condition"] == applied), None)
        if applied_nulls and edited is not None:
            st.markdown(f"**{edited['title']} against its nulls on this sample** — the same edit with one "
                        "ingredient broken; one sample says little, the Benchmark page runs them over a set.")
            export.table(tables.nulls_table(result, applied), f"nulls_{sample.id}_{applied}",
                         percents=("agreement with text answer (%)", "Δ agreement, intervention − null (%)"))
        with st.expander("Answers table"):
            export.table(tables.answers_table(result), f"answers_{sample.id}_{applied}",
                         percents=("F1 vs references (%)", "agreement with text answer (%)"))

    if result is not None and edited is not None:
        _case_report_button(sel, handle, sample, a, result, applied, shown, int(max_new), bool(cascade))

    title = (viz.sample_title(a, f"Edited at layer ℓ = {shown.layer} ({shown.metric} path): boxed frames/tokens "
                                 "were moved") if edited else None)
    export.figure(viz.token_heatmap(a, shown.layer, shown.metric, edited=edited, title=title),
                  f"heatmap_{a.model}_{sample.id}_{shown.label()}", key="fig_iv_heatmap")
    notes.show(diagnostics.layer_notes(a, shown.layer, shown.metric))
    reproduce.interventions(sel, handle, sample, a, condition=shown.label(), max_new=int(max_new),
                            cascade=bool(cascade and handle.model.has_asr),
                            nulls=applied_nulls if shown.label() == applied else ())
    context.fill_transcript(slot, handle, sel, sample)


main()
