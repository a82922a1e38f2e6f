"""Checkpoints: alignment metrics for every checkpoint of a trajectory on one plot, Spearman and
consistency across training, and the GAP against layer-averaged cosine, distance and APS with R²;
speech -> text retrieval per layer and the specific alignment across checkpoints (controls)."""

import pandas as pd
import streamlit as st

from lsl_core import viz
from lsl_core.data.synth import UNSEEN_VOICE
from lsl_core.experiments import closed_vocab, hearing
from lsl_core.experiments.compare import format_table
from lsl_core.metrics import diagnostics
from lsl_core.results import (ANALYZE_COMMAND, CURVES, EVALUATE_COMMAND, GAP_X, checkpoint_means, gap_table,
                              score_trends)
from ui import config, context, controls, errors, export, live, loaders, notes, reproduce, state

GROUPINGS = {"family · strategy": ("family", "strategy"), "family": ("family",)}


def _trajectory(m) -> str:
    return f"{m.family} · {m.strategy}"


def _current_model(sel):
    """The sidebar's model when it loads (reused by the sweep), else None (the sweep reports failures)."""
    if sel.model_root is None:
        return None
    try:
        return loaders.load_model(sel.model_root, config.device())
    except Exception:  # noqa: BLE001
        return None


def _alignment(sel, manifests) -> tuple[pd.DataFrame | None, str]:
    """Per checkpoint x sample alignment rows: stored (analyze output) or computed live on request."""
    res = loaders.results()

    def compute(roots, ids, subset):
        return loaders.checkpoint_sweep(roots, sel.set_spec, ids, config.device(), subset, _current_model(sel))

    spec = live.LiveTable(
        key="ck", label="Alignment metrics from",
        none_hint=f"Pick a sample set in the sidebar to compute alignment live, or store it with `{ANALYZE_COMMAND}`.",
        run_label="Compute alignment", run_help="Loads each checkpoint in turn; results are cached (memory and disk).",
        wait="Press the button to compute the metrics (a few seconds per sample and checkpoint on a CPU).",
        n_label="Samples per checkpoint", n_help="The first n samples of the sidebar's (filtered) sample set.",
        n_min=1, n_default=3, pick=lambda samples, n: tuple(samples.ids()[:n]), compute=compute)
    return live.stored_or_live(spec, sel, manifests, res.alignment, res.folder)


def _paired(res, names: list[str]) -> None:
    """Two evaluated checkpoints on the same clips: paired differences (lsl_core.experiments.compare)."""
    samples = res.samples
    if samples is None or "cascade_agreement" not in samples.columns:
        return
    have = [n for n in dict.fromkeys(samples["checkpoint"]) if n in set(names)]
    if len(have) < 2:
        return
    with st.expander("Compare two checkpoints on the same clips (paired)"):
        c1, c2 = st.columns(2)
        base = c1.selectbox("Base checkpoint", have, index=state.choice("ck_pair_base", have, have[-2]),
                            key="ck_pair_base", persist_state="session")
        other = c2.selectbox("Other checkpoint", have, index=state.choice("ck_pair_other", have, have[-1]),
                             key="ck_pair_other", persist_state="session")
        with errors.guard("Paired comparison"):
            st.markdown(format_table(loaders.paired_table(res, base, other, UNSEEN_VOICE), base, other))
            st.caption("Other − base on the clips both were scored on; the voices of a question are averaged, "
                       "then questions are resampled, the same ones for both (95% bootstrap). A ratio can move "
                       "through its denominator: the cascade is compared with each checkpoint's own text answers. "
                       "CLI: `python -m lsl_core compare`.")


def _hearing(names: list[str]) -> None:
    """What each checkpoint's speech path hears: stored word recall (lsl_core.experiments.hearing), by whether
    training spoke the word and by how often."""
    with st.expander("What the speech path hears: recall of trained vs never-spoken words"):
        with errors.guard("Word recall"):
            tables = loaders.hearing_table()
            if tables is None:
                st.info(f"No stored word-recall results. Write them with `{hearing.COMMAND}`.")
                return
            table, exposure = tables
            shown = [c for c in dict.fromkeys(table["checkpoint"])
                     if str(c).removesuffix(hearing.ASR_SUFFIX) in names]
            if not shown:
                st.info("The stored word-recall results hold none of these checkpoints.")
                return
            t = table[table["checkpoint"].isin(shown)]
            export.figure(viz.hearing_bars(t), "hearing_recall", key="fig_hearing")
            st.markdown(hearing.format_table(t))
            st.caption("Each checkpoint repeats every spoken question (the repeat stage's instruction); a word of "
                       "the question counts as heard when the repeat contains it. Words are split by whether the "
                       "checkpoint's training ever spoke them (its stages' train_targets.jsonl); ': Whisper ASR' "
                       "is its Whisper transcript, the cascade's first half, on the same clips. Chance: the word "
                       "in the outputs of the other questions' clips. 95% bootstrap over questions. QA-stage "
                       "checkpoints answer more than they repeat. CLI: `python -m lsl_core hearing`.")
            if exposure is None:
                st.info(f"The stored rows predate exposure counts; re-run `{hearing.COMMAND}` for recall by "
                        "exposure.")
                return
            e = exposure[exposure["checkpoint"].isin(shown)]
            export.figure(viz.hearing_exposure(e), "hearing_exposure", key="fig_hearing_exposure")
            st.markdown(hearing.format_exposure(e))
            st.caption("The same words binned by exposure: how many training clips spoke the word (a training "
                       "question counts once per voice of its stage, other text once). Where the speech path "
                       "meets its Whisper transcript is how often a word must be spoken before it is heard.")


def _closed_vocab(names: list[str]) -> None:
    """What the closed vocabulary costs: the stored ceiling table (lsl_core.experiments.closed_vocab)."""
    with st.expander("What the closed vocabulary costs: questions without the words training never spoke"):
        with errors.guard("Closed-vocabulary ceiling"):
            tables = loaders.closed_vocab_table()
            if tables is None:
                st.info(f"No stored closed-vocabulary results. Write them with `{closed_vocab.COMMAND}`.")
                return
            table, coverage = tables
            if "checkpoint" in table.columns and not set(table["checkpoint"]) & set(names):
                st.info(f"The stored closed-vocabulary results are for {table['checkpoint'].iloc[0]}, not one of "
                        "these checkpoints.")
                return
            export.figure(viz.closed_vocab_bars(table, UNSEEN_VOICE), "closed_vocab_ceiling",
                          key="fig_closed_vocab")
            st.markdown(closed_vocab.format_table(table))
            export.table(table, "closed_vocab_ceiling", show=False)
            st.caption("Each clip's typed question, or its Whisper transcript (the cascade's input), with the words "
                       "the checkpoint's training never spoke (or spoke in fewer than 30 clips) dropped or replaced "
                       "by the known word nearest in spelling or in sound (espeak-ng phonemes), answered by the "
                       "checkpoint's own text path; "
                       "agreement with its text answer, as a multiple of the cascade's on the same clips (95% "
                       "bootstrap over questions). The Whisper-transcript rows are the ceiling of a speech path "
                       "that hears its known words as well as Whisper does and no others. "
                       "CLI: `python -m lsl_core closed-vocab`.")
            if coverage is None:
                st.info(f"The stored rows predate the split by never-spoken words; re-run `{closed_vocab.COMMAND}`.")
                return
            export.figure(viz.closed_vocab_bars(coverage, UNSEEN_VOICE, title="Measured: the speech answers by how "
                                                "many words of the question training never spoke",
                                                share="words never spoken"),
                          "closed_vocab_coverage", key="fig_closed_vocab_coverage")
            st.markdown(closed_vocab.format_table(coverage, share="words never spoken"))
            export.table(coverage, "closed_vocab_coverage", show=False)
            st.caption("The checkpoint's own speech answers on the same clips (no text is changed), split by how "
                       "many words of the question its training never spoke: how far it falls short on questions "
                       "it could in principle hear, beside the ceiling above.")


def main() -> None:
    st.title("Checkpoints")
    sel = context.selection()
    if not sel.manifests:
        st.info("No checkpoints to show: the message in the sidebar says why and what to do.",  # said once, there
                icon=":material/arrow_back:")
        return
    trajectories = list(dict.fromkeys(_trajectory(m) for m in sel.manifests))
    chosen = st.multiselect("Trajectories (family · strategy)", trajectories,
                            default=state.subset("ck_traj", trajectories, trajectories), key="ck_traj",
                            persist_state="session",
                            help="Checkpoints of one training run share family and strategy.")
    manifests = [m for m in sel.manifests if _trajectory(m) in chosen]
    if not manifests:
        st.info("Choose at least one trajectory.")
        return
    st.caption(f"{len(manifests)} checkpoints: " + ", ".join(f"{m.name} (step {m.step})" for m in manifests))
    res = loaders.results()

    # ---------------------------------------------------------------- evaluation results
    st.header("Scores across training")
    if res.summary is None:
        st.info("No evaluation results yet: the GAP needs them. " + " ".join(res.notes[:1])
                + f"\n\nWrite them with `{EVALUATE_COMMAND}`.")
        summary = None
    else:
        names = {m.name for m in manifests}
        summary = res.summary[res.summary["checkpoint"].isin(names)]
        score = st.radio("Score", ("f1", "containment"), index=state.choice("ck_score", ("f1", "containment")),
                         horizontal=True, key="ck_score", persist_state="session",
                         help="Token F1 or containment of a gold answer, vs the SD-QA references.")
        voices = list(dict.fromkeys(summary["voice"])) or ["all"]
        voice = st.selectbox("Voice row", voices, index=state.choice("ck_voice", voices, "all"), key="ck_voice",
                             persist_state="session",
                             help="'all' = every voice; 'seen' = the training voices; or one voice.")
        rows = score_trends(summary, names, voice)
        if rows.empty:
            st.info("The evaluation results hold none of these checkpoints.")
        else:
            rows = loaders.with_intervals(rows, res)  # + 95% bootstrap intervals over the samples of each row
            cols = st.columns(2)
            with cols[0]:
                fig = viz.trend_curves(rows, f"gap_{score}",
                                       title=f"GAP ({score}, text − speech) across training, voice '{voice}', 95% CI")
                export.figure(fig, f"gap_{score}_vs_step", key="fig_gap_step", columns=2)
            with cols[1]:
                export.figure(viz.trend_curves(rows, f"speech_{score}",
                                               title=f"speech-input {score} across training, voice '{voice}', 95% CI"),
                              f"speech_{score}_vs_step", key="fig_speech_step", columns=2)
            if "cascade_agreement" in rows.columns:  # end-to-end vs the ASR -> LLM cascade, and the answerable view
                cols = st.columns(2)
                with cols[0]:
                    style = "agreement_other_q" if "agreement_other_q" in rows.columns else None
                    export.figure(viz.trend_curves(rows, "agreement", title=viz.agreement_title(rows, voice),
                                                   baseline=style, baseline_label="answer style (other questions)"),
                                  "agreement_vs_step", key="fig_agreement_step", columns=2)
                with cols[1]:
                    export.figure(viz.trend_curves(rows, "gap_answerable", title=f"answerable GAP (questions whose "
                                                   f"text answer is right), voice '{voice}'"),
                                  "gap_answerable_vs_step", key="fig_gap_answerable_step", columns=2)
                st.caption("Agreement = token F1 of the speech answer with the same checkpoint's text answer; the "
                           "dotted line is its agreement with the text answers of the other questions (what answer "
                           "style alone reaches: only the distance above it is about the question). The "
                           "cascade (Whisper transcript → the same LLM) is the pipeline baseline. Answerable GAP = "
                           "1 − speech containment on the samples whose text answer contains a gold answer "
                           "(`n_answerable` in the table).")
            if "n" in rows.columns and len(rows):
                notes.show([diagnostics.small_n_note(int(rows["n"].min()), "a checkpoint's score in this voice row")])
            export.table(rows, "evaluation_summary")
            reproduce.checkpoint_scores(res.folder, sorted(names), score=score, voice=voice)
            _paired(res, [m.name for m in manifests])

    # ---------------------------------------------------------------- controls: retrieval per layer
    controls.checkpoint_section(sel, manifests, res, lambda: _current_model(sel))
    _hearing([m.name for m in manifests])
    _closed_vocab([m.name for m in manifests])

    # ---------------------------------------------------------------- alignment
    st.header("Alignment across checkpoints")
    with errors.guard("Alignment metrics"):
        rows, source = _alignment(sel, manifests)
        if rows is None:
            return
        names = {m.name for m in manifests}
        means = checkpoint_means(rows[rows["checkpoint"].isin(names)])
        if means.empty:
            st.info("The alignment table holds none of these checkpoints.")
            return
        st.caption(f"Source: {source}.")
        means = loaders.alignment_intervals(means, rows[rows["checkpoint"].isin(names)])  # + 95% intervals
        notes.show(diagnostics.set_notes(rows[rows["checkpoint"].isin(names)]))
        if "collapsed_cos_frac" not in rows.columns:
            st.caption(":material/info: These stored results predate the path diagnostics (collapsed paths, undefined "
                       "Spearman); compute live, or re-run the analyze command, to see how many paths collapse.")
        if len(means):
            notes.show([diagnostics.small_n_note(int(means["n"].min()), "a checkpoint's alignment mean")])
        traj_options = list(dict.fromkeys(means["trajectory"]))
        c1, c2 = st.columns(2)
        metric = c1.selectbox("Per-layer metric", CURVES, index=state.choice("ck_metric", CURVES),
                              key="ck_metric", persist_state="session",
                              format_func=lambda k: viz.LAYER_METRICS[k][0])
        traj = c2.selectbox("Trajectory", traj_options, index=state.choice("ck_curve_traj", traj_options),
                            key="ck_curve_traj", persist_state="session")
        export.figure(viz.checkpoint_curves(means[means["trajectory"] == traj], metric,
                                            title=f"{viz.LAYER_METRICS[metric][0]} per layer — {traj}"),
                      f"checkpoint_curves_{metric}", key="fig_ck_curves")
        cols = st.columns(2)
        with cols[0]:
            export.figure(viz.trend_curves(means, "spearman_cos_mean", title="mean Spearman ρ (cosine path) across "
                                           "training, 95% CI over questions"), "spearman_vs_step", key="fig_spearman",
                          columns=2)
        with cols[1]:
            export.figure(viz.trend_curves(means, "consistency_mean", title="mean consistency across training, 95% CI "
                                           "over questions"), "consistency_vs_step", key="fig_consistency", columns=2)
        if "cka_diag_mean" in means.columns and means["cka_diag_mean"].notna().any():  # stored rows with the CKA
            export.figure(viz.trend_curves(means, "cka_diag_mean", baseline="cka_null_diag_mean",
                                           baseline_label="shuffled-pairing null",
                                           title="aligned CKA (speech layer a vs text layer a) across training, 95% "
                                                 "CI over questions; dotted: frame-token pairs shuffled (null)"),
                          "cka_vs_step", key="fig_cka_trend")
        export.table(means.drop(columns=[c for c in CURVES if c in means.columns]), "alignment_per_checkpoint")

        # ------------------------------------------------------------ GAP vs alignment
        st.header("GAP vs alignment")
        if summary is None or summary.empty:
            st.info(f"The GAP comes from evaluation results; write them with `{EVALUATE_COMMAND}`.")
            return
        group_name = st.radio("Fit one line per", list(GROUPINGS), index=state.choice("ck_group", list(GROUPINGS)),
                              horizontal=True, key="ck_group", persist_state="session")
        by = GROUPINGS[group_name]
        table = gap_table(means, summary, score=score, voice=voice)
        if table.empty:
            st.info("No checkpoint has both alignment metrics and evaluation results.")
            return
        fits = loaders.gap_fits(table, GAP_X, by)  # metrics.gap.gap_fits: + null baselines, the step's own fit
        cols = st.columns(3)
        for col, x in zip(cols, ("seq_cos_mean", "seq_dist_mean", "aps_cos")):
            with col:
                export.figure(viz.gap_scatter(table, x, fits[fits["metric"] == x], by=by,
                                              gap_label=f"GAP ({score}, text − speech, points)"),
                              f"gap_vs_{x}", key=f"fig_gap_{x}", columns=3)
        if len(fits):
            notes.show([diagnostics.small_n_note(int(fits["n"].min()), "an R² fit (one point per checkpoint)"),
                        diagnostics.r2_null_note(fits)])
        st.markdown("**R² of GAP ≈ slope · x + intercept** (groups with fewer than 3 checkpoints or a constant x "
                    "are not fitted), with its null baselines")
        st.caption(notes.GAP_FITS)
        export.table(fits, "gap_r2")
        export.table(table.drop(columns=[c for c in CURVES if c in table.columns]), "gap_vs_alignment",
                     show=False, caption="GAP and alignment per checkpoint")
        reproduce.checkpoints(res.folder, [m.name for m in manifests], score=score, voice=voice, by=by,
                              request=live.live_request("ck", source), set_spec=sel.set_spec)


main()
