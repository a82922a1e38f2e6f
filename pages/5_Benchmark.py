"""Benchmark: VoiceBench text vs speech per subset (scores with CIs, GAP, failure shares, "text right,
speech wrong" cases linking to the Explorer), text vs speech per voice from the sd-qa evaluation, a case
browser, and the intervention table (stored, or run live on a few samples)."""

from urllib.parse import urlencode

import streamlit as st

from lsl_core import viz
from lsl_core.errors import LSLError
from lsl_core.experiments.layer_profile import at_layers, has_profile
from lsl_core.experiments.pages import PAGES
from lsl_core.experiments.table1 import RESULTS_NAME, TABLE1_INTERVENTIONS, TABLE1_NULLS, donors_for, without_nulls
from lsl_core.experiments.voicebench_scores import RUN_COMMAND, disagreement_cases
from lsl_core.interventions import is_null
from lsl_core.metrics import diagnostics
from lsl_core.results import EVALUATE_COMMAND
from ui import config, context, errors, export, loaders, nav, notes, reproduce, sidebar, state, tables

CASE_COLUMNS = ["sample_id", "voice", "question", "references", "text_answer", "speech_answer", "outcome",
                "text_f1", "speech_f1", "agreement"]


def _open_in_explorer(checkpoint_root: str | None, sample_id: str) -> None:
    """Button callback: ask the sidebar to select the case's model and sample, then go to the explorer."""
    sidebar.select(model_root=checkpoint_root, sample_id=sample_id)
    st.session_state["_goto_explorer"] = True


def _open_vb_case(checkpoint_root: str | None, set_spec: str, sample_id: str) -> None:
    """Button callback: select the run's sample set, the case's model and sample, then go to the explorer."""
    sidebar.select(model_root=checkpoint_root, sample_id=sample_id, set_spec=set_spec)
    st.session_state["_goto_explorer"] = True


def _run_set_spec(meta: dict) -> str:
    """The sample-set spec that reloads the run's samples in the sidebar (same ids)."""
    data = str(meta.get("data") or "")
    as_subset = (meta.get("config") or {}).get("as_subset")
    return data if as_subset or not data else f"voicebench:{data}"


def _explorer_link(checkpoint: str, set_spec: str, sample_id: str) -> str:
    return "Sample_Explorer?" + urlencode({"model": checkpoint, "set": set_spec, "sample": sample_id})


def _voicebench(sel) -> None:
    st.header("VoiceBench: text vs speech per subset")
    folder = st.text_input("VoiceBench results folder", value=state.value("bm_vb_dir",
                                                                        str(config.results_dir() / "voicebench")),
                           key="bm_vb_dir",
                           persist_state="session", help="The --out folder of `python -m lsl_core voicebench`.")
    vb = loaders.voicebench_results(folder.strip())
    if vb.empty:
        st.info("No VoiceBench results here. " + " ".join(vb.notes[:1])
                + f"\n\nWrite them with `{RUN_COMMAND}` (commands for the papers' tables: docs/voicebench.md).")
        return
    for note in vb.notes:
        st.caption(note)
    names = list(dict.fromkeys(vb.gap["checkpoint"]))
    all_subsets = [x for x in dict.fromkeys(vb.gap["subset"]) if x != "overall"]
    c1, c2 = st.columns([2, 3])
    ck = c1.selectbox("Checkpoint", names, index=state.choice("bm_vb_ck", names, sel.model_name), key="bm_vb_ck",
                      persist_state="session")
    picked = c2.multiselect("Subsets", all_subsets, default=state.subset("bm_vb_subsets", all_subsets, all_subsets),
                            key="bm_vb_subsets", persist_state="session", placeholder="all subsets")
    picked = picked or all_subsets
    summ = vb.summary[(vb.summary["checkpoint"] == ck) & vb.summary["subset"].isin(picked)]
    gap = vb.gap[(vb.gap["checkpoint"] == ck) & vb.gap["subset"].isin([*picked, "overall"])]
    over = vb.gap[(vb.gap["checkpoint"] == ck) & (vb.gap["subset"] == "overall")]
    meta = vb.meta or {}
    st.caption(f"Data: {meta.get('data', '?')} · {meta.get('max_new_tokens', '?')} new tokens, greedy · scores in %, "
               "95% bootstrap CIs over samples · overall = sample-weighted over "
               f"{over['subsets'].iloc[0] if len(over) and 'subsets' in over else 'all'} (every subset of the run).")
    with errors.guard("VoiceBench figure"):
        export.figure(viz.subset_scores(summ, gap, title=f"{ck}: text vs speech per VoiceBench subset"),
                      f"voicebench_{ck}", key="fig_vb")
    if "n" in summ.columns and len(summ):
        notes.show([diagnostics.small_n_note(int(summ["n"].min()), "a subset's score")])
    cols = [c for c in ("subset", "n", "text", "speech", "cascade", "gap", "gap_ci_low", "gap_ci_high",
                        "gap_cascade") if c in gap.columns]
    export.table(gap[cols].dropna(axis=1, how="all"), f"voicebench_gap_{ck}")
    fail = [c for c in summ.columns if c.startswith("fail_")]
    shown = summ[["subset", "modality", "metric", "score", "ci_low", "ci_high", "n", *fail]].rename(
        columns={c: c[5:] + " (% of answers)" for c in fail})
    st.subheader("Scores and failure shares")
    st.caption("no_letter: multiple-choice answers naming no option; unparsed: BBH answers no rule could read. "
               "Both count as wrong (never guessed). AdvBench's score is its refusal rate.")
    export.table(shown, f"voicebench_summary_{ck}")
    if vb.r2 is not None and len(vb.r2):
        st.subheader("R² of GAP on alignment metrics across checkpoints")
        export.table(vb.r2, "voicebench_r2", height=260)
    _vb_cases(vb, sel, ck, picked, _run_set_spec(meta))


def _vb_cases(vb, sel, ck: str, picked: list, set_spec: str) -> None:
    st.subheader("“Text right, speech wrong” cases")
    if vb.scores is None:
        st.info("No per-sample scores in the results folder; rerun with --score-only.")
        return
    mods = [m for m in ("speech", "cascade") if m in set(vb.scores["modality"])]
    c1, c2 = st.columns(2)
    subset = c1.selectbox("Subset", picked, index=state.choice("bm_vb_case_subset", picked), key="bm_vb_case_subset",
                          persist_state="session")
    wrong = c2.radio("Wrong on", mods, index=state.choice("bm_vb_wrong", mods), horizontal=True, key="bm_vb_wrong",
                     persist_state="session")
    cases = disagreement_cases(vb.scores, ck, subset, wrong=wrong)
    st.caption(f"{len(cases)} samples of {subset} answered right from text and wrong from {wrong} by {ck}.")
    if cases.empty:
        return
    cases = cases.assign(explorer=[_explorer_link(ck, set_spec, i) for i in cases["sample_id"]])
    st.dataframe(cases, hide_index=True, height=260, key="bm_vb_cases_table",
                 column_config={"explorer": st.column_config.LinkColumn("Explorer", display_text="open")})
    export.table(cases, f"voicebench_cases_{ck}_{subset}", show=False, caption="cases")
    ids = list(cases["sample_id"])
    case = st.selectbox("Case", ids, index=state.choice("bm_vb_case", ids), key="bm_vb_case", persist_state="session",
                        format_func=lambda i: f"{i} · {cases.loc[cases['sample_id'] == i, 'prompt'].iloc[0][:80]}")
    r = cases[cases["sample_id"] == case].iloc[0]
    a, b = st.columns(2)
    a.markdown("**Text answer** ✓")
    a.info(r["text_answer"] or "∅")
    b.markdown(f"**{wrong.capitalize()} answer** ✗")
    b.info(r[f"{wrong}_answer"] or "∅")
    st.caption(f"Reference: {r['references'] or '–'}")
    root = next((m.root for m in sel.manifests if m.name == ck), None)
    opens = bool(set_spec) and sidebar.opens(set_spec)
    st.button("Open this case in the Sample Explorer", on_click=_open_vb_case, args=(root, set_spec, case),
              key="bm_vb_open", disabled=not opens,
              help="Selects the run's sample set, this checkpoint (when it is in the sidebar's zoo) and the sample."
              if opens else f"The run's sample set '{set_spec or '?'}' is not one the sidebar opens (sd-qa-mini, "
                            "voicebench:<folder>, folder:<folder>).")


def _request_iv(ids: tuple, conds: tuple, max_new: int, model: str | None) -> None:
    st.session_state["bm_iv_request"] = {"ids": ids, "conds": conds, "max_new": max_new, "model": model}


def _scores(res, sel) -> None:
    st.header("sd-qa: text vs speech per voice")
    if res.summary is None:
        st.info("No evaluation results: " + " ".join(res.notes[:1]) + f"\n\nWrite them with `{EVALUATE_COMMAND}`.")
        return
    names = list(dict.fromkeys(res.summary["checkpoint"]))
    c1, c2 = st.columns([3, 1])
    ck = c1.selectbox("Checkpoint", names, index=state.choice("bm_ck", names, sel.model_name), key="bm_ck",
                      persist_state="session")
    metric = c2.radio("Score", ("f1", "containment"), index=state.choice("bm_metric", ("f1", "containment")),
                      horizontal=True, key="bm_metric", persist_state="session")
    rows = loaders.with_intervals(res.summary[res.summary["checkpoint"] == ck], res)  # + 95% bootstrap intervals
    export.figure(viz.scores_by_voice(rows, metric, title=f"{ck}: text vs speech {metric} per voice, 95% CI "
                                      "('seen' = training voices, 'all' = every voice)"),
                  f"scores_by_voice_{ck}_{metric}", key="fig_scores")
    if "n" in rows.columns and len(rows):
        notes.show([diagnostics.small_n_note(int(rows["n"].min()), "a voice's score")])
    export.table(rows, f"summary_{ck}")
    reproduce.benchmark(res.folder, ck, metric)
    _cases(res, sel, ck)


def _cases(res, sel, ck: str) -> None:
    st.header("Case browser")
    if res.samples is None:
        st.info("No per-sample results: " + " ".join(n for n in res.notes if "_samples" in n))
        return
    df = res.samples[res.samples["checkpoint"] == ck]
    if df.empty:
        st.info(f"No per-sample results for {ck}.")
        return
    df = df.assign(outcome=tables.outcome(df))
    c1, c2, c3 = st.columns([2, 2, 3])
    outcome = c1.selectbox("Outcome", tables.OUTCOMES, index=state.choice("bm_outcome", tables.OUTCOMES),
                           key="bm_outcome",
                           persist_state="session", help="Right = a gold answer is contained in the answer.")
    all_voices = list(dict.fromkeys(df["voice"]))
    voices = c2.multiselect("Voices", all_voices, default=state.subset("bm_voices", all_voices), key="bm_voices",
                            persist_state="session",
                            placeholder="all voices")
    text = c3.text_input("Search question / answers", value=state.value("bm_search", ""), key="bm_search",
                         persist_state="session")
    if outcome != "all":
        df = df[df["outcome"] == outcome]
    if voices:
        df = df[df["voice"].isin(voices)]
    if text.strip():
        t = text.strip().lower()
        df = df[df["question"].str.lower().str.contains(t, regex=False)
                | df["text_answer"].str.lower().str.contains(t, regex=False)
                | df["speech_answer"].str.lower().str.contains(t, regex=False)]
    st.caption(f"{len(df)} cases")
    export.table(df[[c for c in CASE_COLUMNS if c in df.columns]], f"cases_{ck}", height=260)
    if df.empty:
        return
    ids = list(df["sample_id"])
    case = st.selectbox("Case", ids, index=state.choice("bm_case", ids), key="bm_case", persist_state="session",
                        format_func=lambda i: f"{df.loc[df['sample_id'] == i, 'question'].iloc[0]} · "
                                              f"{df.loc[df['sample_id'] == i, 'voice'].iloc[0]}")
    r = df[df["sample_id"] == case].iloc[0]
    c1, c2 = st.columns(2)
    c1.markdown(f"**Text answer** {tables.mark_md(r.get('text_containment'))}")
    c1.info(r["text_answer"] or "∅")
    c2.markdown(f"**Speech answer** {tables.mark_md(r.get('speech_containment'))}")
    c2.info(r["speech_answer"] or "∅")
    st.caption(f"References: {r.get('references', '')}")
    root = next((m.root for m in sel.manifests if m.name == ck), None)
    if root is None and sel.model_name:
        st.caption(f"{ck} is not among the checkpoints in the sidebar, so the Explorer opens this case with "
                   f"{sel.model_name}; add {ck}'s folder under “Add a model folder” to see its own states.")
    in_set = sel.full_set is not None and case in sel.full_set
    st.button("Open this case in the Sample Explorer", on_click=_open_in_explorer, args=(root, case),
              disabled=not in_set, key="bm_open",
              help=None if in_set else "The case's sample is not in the sidebar's sample set; select that set first.")


def _n(n: int) -> str:
    return f"{n} sample{'s' if n != 1 else ''}"


_T1_PERCENT = ("containment", "F1", "agreement", "Δ containment", "Δ F1", "Δ agreement")  # table1 is in percent


def _nulls(t, key: str, title: str | None = None) -> None:
    """Each intervention against its nulls (random tokens, shuffled pairing, another question; table1_nulls `t`),
    when they were run."""
    if t.empty:
        st.caption("No null was run with these conditions: add Random3, :shuffled or :other conditions "
                   f"({', '.join(TABLE1_NULLS[:3])}, …) to see whether the path, its pairing and the question matter.")
        return
    st.markdown("**Each intervention against its nulls** — the same edit with one ingredient broken: random tokens "
                "instead of the least aligned, each frame given another token's state (shuffled pairing), or "
                "another question's transcript. Δ = intervention − null; an interval that holds 0 means the null "
                "does as well.")
    export.figure(viz.intervention_nulls(t, "agreement", title=title), f"interventions_nulls_{key}",
                  key=f"fig_iv_nulls_{key}")
    notes.show([diagnostics.intervention_null_note(t, "agreement")])
    export.table(t, f"interventions_nulls_{key}", percents=tuple(c for c in t.columns if c.startswith("Δ")))


def _layers(t, key: str) -> str | None:
    """The interventions run at two or more layers (layer_profile `t`): Δ across layers against the unedited answer
    and the nulls run at the same layer. -> the intervention shown, None when there is none."""
    if t.empty:
        return None
    names = list(dict.fromkeys(t["intervention"]))
    st.markdown("**Across layers** — the same edit at the input of decoder layer ℓ (0 = the LLM input, as in the "
                "paper), against the unedited speech answer and against its nulls run at that layer: where the "
                "line against a null leaves 0, the ingredient that null breaks matters at that depth.")
    pick = (st.selectbox("Intervention across layers", names, index=state.choice(f"bm_iv_layers_{key}", names),
                         key=f"bm_iv_layers_{key}", persist_state="session") if len(names) > 1 else names[0])
    export.figure(viz.intervention_layers(t, "agreement", intervention=pick), f"interventions_layers_{key}",
                  key=f"fig_iv_layers_{key}")
    export.table(t, f"interventions_layers_{key}", show=False, caption="Δ per intervention, layer and comparison",
                 percents=tuple(c for c in t.columns if c.startswith("Δ")))
    return pick


def _nulls_across(res, steps: dict) -> None:
    """The nulls of every stored run across its checkpoints (the pairs run on two or more), ordered by step."""
    if "checkpoint" not in res.interventions.columns:
        return
    with errors.guard("Interventions against their nulls across training"):
        t = loaders.nulls_across(res, steps)  # table1.nulls_across, pairs on >= 2 checkpoints
        if t.empty:
            return
        st.markdown(f"**Across training** — the interventions and nulls stored for {t['checkpoint'].nunique()} "
                    "checkpoints (x in training order): where a line leaves 0, the ingredient its null breaks "
                    "starts to matter.")
        layers = sorted(set(t["layer"]))
        layer = None
        if len(layers) > 1:  # layer sweeps stored on several checkpoints: one edit layer at a time
            layer = st.selectbox("Edit layer ℓ (across training)", layers, index=state.choice("bm_iv_across_layer",
                                 layers), key="bm_iv_across_layer",
                                 persist_state="session", format_func=lambda ell: f"ℓ {ell}",
                                 help="The runs hold these edit layers on two or more checkpoints; 0 = the LLM input, "
                                      "the paper's.")
            t = t[t["layer"] == layer]
        title = None if layer is None else f"Each intervention against its nulls across training, edits at ℓ {layer}"
        export.figure(viz.intervention_nulls_across(t, "agreement", title=title), "interventions_nulls_across",
                      key="fig_iv_nulls_across")
        export.table(t, "interventions_nulls_across", show=False, caption="Δ per checkpoint",
                     percents=tuple(c for c in t.columns if c.startswith("Δ")))
        reproduce.nulls_across(res.folder, steps, layer)


def _bars(rows, t, key: str) -> tuple:
    """Table 1 `t` of `rows` for the bar chart: the nulls (drawn against their interventions under it) only on
    request. -> (table, whether it holds the nulls)."""
    if not rows["condition"].map(is_null).any():
        return t, True
    with_nulls = st.checkbox("Bars for the nulls too", value=bool(state.value(key, False)), key=key,
                             persist_state="session",
                             help="The bar chart holds the interventions; their nulls are drawn against them in the "
                                  "forest plot below (and all are in the table).")
    return (t if with_nulls else without_nulls(t, rows)), with_nulls


def _interventions(res, sel) -> None:
    st.header("Interventions (speech input)")
    if res.interventions is not None:
        iv = res.interventions
        if "checkpoint" in iv.columns:
            run = iv["results"] + " · " + iv["checkpoint"] if "results" in iv.columns else iv["checkpoint"]
            # one entry per results file x checkpoint (runs are not mixed); the shipped Table 1 run first
            names = sorted(dict.fromkeys(run), key=lambda n: not n.startswith(f"{RESULTS_NAME} · "))
            ck = st.selectbox("Checkpoint (stored intervention results)", names, index=state.choice("bm_iv_ck", names),
                              key="bm_iv_ck", persist_state="session")
            iv = iv[run == ck]
        null_bars, layers = True, None
        with errors.guard("Intervention table"):
            tables = loaders.intervention_tables(iv)  # table1_with_intervals, table1_nulls, layer_profile
            t = tables["table1"]  # + 95% bootstrap intervals per condition and Δ (paired on samples)
            n = int(t["n"].min())
            bars, null_bars = _bars(iv, t, "bm_iv_null_bars")
            export.figure(viz.intervention_bars(bars, "F1", title=f"Speech-input F1 under each intervention "
                                                f"({_n(n)}, 95% CI)"), "interventions_stored", key="fig_iv_stored")
            notes.show([diagnostics.small_n_note(int(t["n"].min()), "the differences between conditions")])
            export.table(t.reset_index(), "interventions_table1_stored", percents=_T1_PERCENT)
            _nulls(tables["nulls"], "stored")
            layers = _layers(tables["layers"], "stored")
            if layers is None and "results" in res.interventions.columns:  # say where a stored layer run is
                deep = [r for r, g in res.interventions.groupby("results")["condition"] if has_profile(list(g))]
                if deep:
                    st.caption("Interventions across layers are stored in the run(s) "
                               + ", ".join(f"**{r}**" for r in deep) + ": pick one above.")
        picked = (iv["results"].iloc[0] if {"results", "checkpoint"} <= set(iv.columns) else None,
                  iv["checkpoint"].iloc[0] if "checkpoint" in iv.columns else None)
        reproduce.table1(results=res.folder, run=picked, null_bars=null_bars, layers=layers)
        _nulls_across(res, {m.name: m.step for m in sel.manifests})
    else:
        st.caption(f"No stored intervention results (write them with `{PAGES['interventions'].command}`, or "
                   "`python -m lsl_core evaluate ... --intervention angle:bottom3`); run them live below.")
    st.subheader("Run on the current model")
    if sel.sample_set is None or sel.upload is not None:
        st.info("Choose a sample set in the sidebar to run the intervention benchmark live.")
        return
    n_max = len(sel.sample_set)
    if not n_max:  # the sidebar's filters match no sample (it says so there too)
        st.info(sel.set_hint or "No sample of the sidebar's set matches its filters; widen them.")
        return
    c1, c2, c3 = st.columns([1, 1, 3])
    n = c1.number_input("Samples", 1, n_max, value=state.integer("bm_iv_n", 1, n_max, min(2, n_max)), key="bm_iv_n",
                        persist_state="session",
                        help="First n samples of the sidebar's filtered set.")
    max_new = c2.number_input("Max new tokens", 4, 64, value=state.integer("bm_iv_max_new", 4, 64, 16),
                              key="bm_iv_max_new", persist_state="session")
    choices = TABLE1_INTERVENTIONS + TABLE1_NULLS
    conds = c3.multiselect("Conditions", list(choices),
                           default=state.subset("bm_iv_conds", choices, TABLE1_INTERVENTIONS[:2]),
                           key="bm_iv_conds", persist_state="session",
                           help="The seed paper's Table 1 rows, then their nulls (random3: k random "
                                "tokens; :shuffled: each frame another token's state; :other: "
                                "another question of these samples).")
    layers_text = st.text_input("Edit layers ℓ", value=state.value("bm_iv_layers", "0"), key="bm_iv_layers",
                                persist_state="session",
                                help="The input of which decoder layers to edit (0 = the LLM input, as in the paper), "
                                     "separated by commas, e.g. 0, 4, 8: each condition runs at each layer, and the "
                                     "page draws each intervention across layers against its nulls.")
    try:
        layers = [int(x) for x in layers_text.replace(" ", "").split(",") if x]
        if not layers:
            raise ValueError
        if layers != [0]:
            conds = at_layers(conds, layers)
    except (ValueError, LSLError) as exc:
        st.error(f"Edit layers: {exc if isinstance(exc, LSLError) else repr(layers_text)} — give whole numbers "
                 "≥ 0 separated by commas (e.g. 0, 4, 8), and single conditions (not composed ones).")
        return
    ids = tuple(sel.sample_set.ids()[: int(n)])
    st.button(f"Run {len(conds)} interventions on {_n(len(ids))}", type="primary", key="bm_iv_run",
              on_click=_request_iv, args=(ids, tuple(conds), int(max_new), sel.model_root), disabled=not conds)
    req = st.session_state.get("bm_iv_request")
    if not req or req != {"ids": ids, "conds": tuple(conds), "max_new": int(max_new), "model": sel.model_root}:
        st.caption("Greedy answers for the unedited speech input and each condition (about 10 s per answer on a CPU "
                   "for the shipped model).")
        return
    handle = context.require_model(sel)
    if handle is None:
        return
    null_bars, layers = True, None
    with errors.guard("Intervention benchmark"):
        subset = sel.sample_set.filter(ids=ids)
        donors = tuple(donors_for(loaders.sample_set(sel.set_spec), ids))  # for the pairing-"other" nulls
        rows = loaders.intervention_rows(handle.key, sel.set_spec, ids, tuple(conds), int(max_new), handle.model,
                                         subset, donors)
        tables = loaders.intervention_tables(rows)
        t = tables["table1"]
        bars, null_bars = _bars(rows, t, "bm_iv_live_null_bars")
        export.figure(viz.intervention_bars(bars, "F1", title=f"{handle.name}: speech-input F1 per condition "
                                            f"({_n(len(ids))}, 95% CI)"), "interventions_live", key="fig_iv_live")
        notes.show([diagnostics.small_n_note(len(ids), "the differences between conditions")])
        export.table(t.reset_index(), "interventions_table1", percents=_T1_PERCENT)
        _nulls(tables["nulls"], "live", f"{handle.name}: each intervention against its nulls (agreement, "
               f"{_n(len(ids))})")
        layers = _layers(tables["layers"], "live")
        export.table(rows, "interventions_per_sample", show=False, caption="per-sample answers")
    reproduce.table1(live=(handle.path, sel.set_spec, list(ids), list(conds), int(max_new)), null_bars=null_bars,
                     layers=layers)


def main() -> None:
    st.title("Benchmark")
    if st.session_state.pop("_goto_explorer", False):
        st.switch_page(nav.EXPLORER)
    sel = context.selection()
    _voicebench(sel)
    res = loaders.results()
    _scores(res, sel)
    _interventions(res, sel)


main()
