"""Controls on the pages (issue 15; docs/controls.md): next to every Explorer metric the value for other
questions and the specific alignment, silence and shuffled-frame controls; on the Checkpoints page the
speech -> text retrieval curve per layer and the specific alignment across checkpoints.

Everything shown is computed by lsl_core.analysis_controls (through ui.loaders); this module only
arranges widgets, tables and figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lsl_core import viz
from lsl_core.metrics.controls import METRICS, ControlOptions
from lsl_core.results import CONTROLS_COMMAND
from ui import config, errors, export, live, loaders, notes, state, tables

EXPLORER_METRICS = ("seq_cos", "aps_cos", "spearman_cos", "consistency", "cka", "seq_dist", "aps_dist",
                    "spearman_dist")
LIVE_SAMPLES = 10  # default samples per checkpoint for live retrieval (spread over distinct questions)


# =============================================================================== Explorer
def partner_pool(sel) -> tuple[list[str], str]:
    """Questions the Explorer draws other questions from: the sidebar's sample set (before filters), or,
    for an uploaded clip, the default sample set. Returns (questions, where they come from)."""
    if sel.full_set is not None:
        return sel.full_set.questions(), sel.set_spec or "the sample set"
    spec = config.default_set_spec()
    try:
        return loaders.sample_set(spec).questions(), spec
    except Exception:  # noqa: BLE001 - no pool: the controls say so
        return [], spec


def sample_controls(handle, sel, sample, partners: int):
    """The clip's controls (cached), or None after showing why they are unavailable."""
    import hashlib

    pool, source = partner_pool(sel)
    others = {q.strip() for q in pool} - {sample.question.strip()}
    if not others:
        st.info(f"Controls need other questions: {source} has none besides this clip's. Pick a sample set with "
                "several questions.")
        return None
    options = ControlOptions(partners=partners)
    pool_key = hashlib.sha1("\n".join(sorted(set(pool))).encode()).hexdigest()[:16]
    try:
        with st.spinner(f"Controls: this clip vs {min(partners, len(others))} other questions of {source}, "
                        "a silent clip, shuffled frames …"):
            return loaders.sample_controls(handle.key, loaders.sample_key(sel.set_spec or "", sample), pool_key,
                                           options.key(), handle.model, sample, tuple(pool), options)
    except Exception as exc:  # noqa: BLE001
        errors.show(exc, "Controls")
        return None


CONTROLS_PATH = "argmax"  # lsl_core.metrics.controls.candidate_metrics: per-token paths split per question


def for_path(sc, path_method: str):
    """The controls when they are on the shown path (argmax), else None: the metric cards then show no delta, so a
    DTW value never stands over the argmax path's "specific (other questions: …)"."""
    return sc if path_method == CONTROLS_PATH else None


def delta(sc, metric: str, layer: int | None = None) -> str | None:
    """A metric card's delta: the specific alignment and the mismatched mean (None without controls)."""
    if sc is None:
        return None
    spec = sc.curve(metric, "specific")[layer] if layer is not None else sc.layer_mean(metric, "specific")
    mis = sc.curve(metric, "mismatched")[layer] if layer is not None else sc.layer_mean(metric, "mismatched")
    if not np.isfinite(spec):
        return None
    return f"{spec:+.4f} specific (other questions: {mis:.4f})"


def delta_color(metric: str) -> str:
    """Green when the own transcript is better aligned than other questions (lower is better for distances)."""
    return "normal" if METRICS[metric][1] else "inverse"


def explorer_section(sc, layer: int, sample, path_method: str = CONTROLS_PATH) -> None:
    """The Explorer's controls: table at this layer and over layers, the per-layer figure, the partners."""
    if sc is None:
        return
    st.subheader("Controls: is the alignment specific to this question?")
    if path_method != CONTROLS_PATH:
        st.info(f"The controls are computed on the argmax path (each token's best frame, which splits per question), "
                f"not the {path_method} path shown above: every value here, “this clip” included, is the argmax "
                "path's. Choose the argmax alignment path to see them next to the metrics above.",
                icon=":material/info:")
    K = len(sc.partner_questions)
    st.caption(
        f"**Specific** = this clip with its own transcript − the mean over {K} other questions of the sample set "
        "(same clip, other transcripts; drawn with a fixed seed). Near 0: the metric measures a generic speech-vs-"
        f"text offset, not this question's content. **Silence**: {sc.silence_seconds:.2f} s of zeros through the "
        "same encoder, adaptor and LLM. **Shuffled frames**: this clip's adaptor frames in a fixed random order "
        "(if the path's Spearman survives, it does not follow the spoken order). Definitions: docs/controls.md.")
    export.table(tables.controls_table(sc, layer), f"controls_{sample.id}_layer{layer}")
    L = sc.matched.shape[-1] - 1
    labels = {k: METRICS[k][0] for k in EXPLORER_METRICS}
    metric = st.selectbox("Control metric", list(labels), index=state.choice("ex_ctl_metric", list(labels)),
                          key="ex_ctl_metric", persist_state="session", format_func=labels.get,
                          help="The metric drawn per layer against its controls.")
    export.figure(viz.control_curves(sc, metric, current_layer=layer), f"controls_{sample.id}_{metric}",
                  key="fig_controls")
    r = sc.retrieval  # [S, 3, L+1] (top1, top5, 1/rank) of the own transcript among itself + K others
    first_cos = int(np.sum(r[0, 0, 1:] >= 1.0))
    first_aps = int(np.sum(r[1, 0, 1:] >= 1.0))
    st.caption(f"Among its own transcript and the {K} others, this clip ranks its own first at {first_cos} of {L} "
               f"layers by sequence cosine and at {first_aps} of {L} by the APS term (chance ≈ {L / (K + 1):.1f}). "
               "Other questions: " + " · ".join(f"“{q}”" for q in sc.partner_questions))


# =============================================================================== Checkpoints
def _spread(samples, n: int) -> tuple[str, ...]:
    """n sample ids spread over as many distinct questions as possible, in the set's order."""
    from lsl_core.analysis_controls import spread_over_questions

    all_ids = samples.ids()
    return tuple(all_ids[i] for i in sorted(spread_over_questions(samples.questions(), n)))


def _stored_or_live(sel, manifests, res, current) -> tuple[pd.DataFrame | None, str]:
    options = ControlOptions()

    def compute(roots, ids, subset):
        return loaders.checkpoint_controls(roots, sel.set_spec, ids, config.device(), options.key(), list(subset),
                                           options, current())

    spec = live.LiveTable(
        key="ck_ctl", label="Controls from",
        none_hint=f"Pick a sample set in the sidebar to compute the controls live, or store them with "
                  f"`{CONTROLS_COMMAND}`.",
        run_label="Compute controls",
        run_help="One speech forward per sample and one text forward per question and checkpoint; cached.",
        wait="Press the button to compute retrieval and specific alignment (a few seconds per sample and checkpoint "
             "on a CPU).",
        n_label="Samples for the controls",
        n_help="Samples of the sidebar's (filtered) set, spread over as many distinct questions as possible; every "
               "clip is compared with the other questions among them.",
        n_min=2, n_default=LIVE_SAMPLES, pick=_spread, compute=compute)
    return live.stored_or_live(spec, sel, manifests, res.controls, res.folder)


def checkpoint_section(sel, manifests, res, current) -> None:
    """Retrieval per layer across checkpoints ("does the model hear?") and the specific alignment.

    current: a function returning the sidebar's loaded model (or None), called only to compute live.
    """
    st.header("Does the model hear? Speech → text retrieval")
    st.caption("For every clip, its speech states score its own transcript and Nc − 1 other questions' (sequence "
               "cosine, or the APS term of each layer); top-1 is the share of clips whose own transcript scores "
               "highest. At chance, the states carry a generic speech-vs-text offset but nothing of the question. "
               "See docs/controls.md.")
    with errors.guard("Controls"):
        rows, source = _stored_or_live(sel, manifests, res, current)
        if rows is None:
            return
        names = {m.name for m in manifests}
        rows = rows[rows["checkpoint"].isin(names)]
        if rows.empty:
            st.info(f"The controls table holds none of these checkpoints; write it with `{CONTROLS_COMMAND}`.")
            return
        if "centring" in rows.columns and rows["centring"].nunique() > 1:
            options = list(dict.fromkeys(rows["centring"]))
            cen = st.radio("Centring", options, index=state.choice("ck_ctl_centring", options), horizontal=True,
                           key="ck_ctl_centring",
                           persist_state="session", help="Which stored run: states centred by a per-layer mean or not.")
            rows = rows[rows["centring"] == cen]
        meta = rows.iloc[0]
        st.caption(f"Source: {source} · centring: {meta.get('centring', 'none')} · K = {meta.get('partners', '?')} "
                   f"other questions per clip · Nc = {meta.get('candidates', '?')} candidates.")
        c1, c2 = st.columns(2)
        scorers = {"seq_cos": "sequence cosine", "aps_cos": "APS term (cosine path)"}
        scorer = c1.radio("Retrieval score", list(scorers), index=state.choice("ck_ctl_scorer", list(scorers)),
                          format_func=scorers.get, horizontal=True, key="ck_ctl_scorer", persist_state="session")
        stats = list(viz.RETRIEVAL_LABELS)
        stat = c2.radio("Statistic", stats, index=state.choice("ck_ctl_stat", stats),
                        format_func=viz.RETRIEVAL_LABELS.get, horizontal=True, key="ck_ctl_stat",
                        persist_state="session")
        retr = rows[rows["table"] == "retrieval"]
        export.figure(viz.retrieval_curves(retr, scorer, stat), f"retrieval_{scorer}_{stat}", key="fig_retrieval")
        spec = rows[rows["table"] == "specific"]
        metrics = [m for m in EXPLORER_METRICS if (spec["metric"] == m).any()]
        metric = st.selectbox("Specific alignment of", metrics, index=state.choice("ck_ctl_metric", metrics),
                              format_func=lambda k: METRICS[k][0], key="ck_ctl_metric", persist_state="session")
        export.figure(viz.specific_curves(spec, metric), f"specific_{metric}", key="fig_specific")
        export.table(tables.controls_summary(rows), "controls_per_checkpoint",
                     caption="Layer-averaged (1..L): retrieval and specific alignment with 95% CI per checkpoint")
        if res.summary is not None:
            _gap_fits(rows, res.summary)


GAP_X = ("matched_seq_cos", "specific_seq_cos", "matched_aps_cos", "specific_aps_cos", "top1_seq_cos", "top1_aps_cos")


def _gap_fits(rows: pd.DataFrame, summary: pd.DataFrame) -> None:
    """R² of the GAP on the raw (matched) vs the specific alignment and on retrieval, per trajectory."""
    from lsl_core.metrics import diagnostics
    from lsl_core.results import controls_means, gap_table

    score = st.session_state.get("ck_score", "f1")
    voice = st.session_state.get("ck_voice", "all")
    table = gap_table(controls_means(rows), summary, score=score, voice=voice)
    xs = [x for x in GAP_X if x in table.columns]
    if table.empty or not xs:
        st.info("No checkpoint has both controls and evaluation results.")
        return
    fits = loaders.gap_fits(table, xs, ("family", "strategy"))  # + null baselines and the step's own fit
    if fits.empty:
        st.caption("GAP vs raw and specific alignment: no trajectory has 3 checkpoints with both tables.")
        return
    st.markdown(f"**R² of GAP ({score}, voice '{voice}') on the raw (matched) vs the specific alignment and on "
                "retrieval**, one fit per trajectory (layer-averaged values), with their null baselines")
    st.caption(notes.GAP_FITS)
    notes.show([diagnostics.r2_null_note(fits)])
    export.table(fits, "gap_r2_controls")
