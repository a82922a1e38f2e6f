"""`python -m lsl_core curriculum`: does the shipped training curriculum make the gap real and measurable?

One table per checkpoint of the stored results (nothing re-generated):

    evaluate  -> agreement (speech vs text answer) and the cascade's, seen / unseen voice, with CIs over
                 questions; GAP F1; the answerable GAP                 (<results>/checkpoints_*.parquet)
    analyze   -> mean path Spearman (layers 1..L, cosine and distance), share of collapsed paths, APS,
                 sequence cosine                                        (<results>/analysis.parquet)
    controls  -> speech -> text retrieval top-1 at the best layer      (<results>/analysis_controls.parquet)

plus two quantities measured here with each checkpoint, on the first --silence-clips clips of the set:
the APS margin of real clips over an all-zero clip of the same length (`silence_margin`), and whether the
first speech frames act as an attention sink (`frame_sink`: norm over the median speech-frame norm). Then the
trajectories' Spearman of step vs agreement and the R² of each alignment metric vs GAP across all
checkpoints, with a bootstrap 95% CI over checkpoints, a permutation null and the R² each metric adds
beyond the training step, whose own fit is the baseline row (`r2_table`, over metrics.gap.gap_r2_table).

    python -m lsl_core curriculum --results assets/results --zoo assets/checkpoints \\
        --markdown docs/results/curriculum.md
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lsl_core.errors import LSLError
from lsl_core.metrics.gap import gap_r2_table, is_constant
from lsl_core.metrics.controls import best_layer_chance
from lsl_core.metrics.stats import N_BOOT
from lsl_core.experiments.pages import NOT_RECORDED, page_header
from lsl_core.results import read_table

# alignment metrics whose R² vs GAP is reported (column -> what it is)
R2_METRICS = {
    "seq_cos_mean": "sequence cosine (layers 1..L)",
    "aps_cos": "APS, cosine path",
    "spearman_cos_mean": "path Spearman, cosine",
    "spearman_dist_mean": "path Spearman, distance",
    "retrieval_top1_best": "retrieval top-1 at the best layer",
    "specific_seq_cos": "specific sequence cosine (matched − mismatched)",
    "silence_margin_aps": "APS margin over silence",
    "cka_diag_mean": "aligned CKA, speech layer a vs text layer a",
    "cka_above_null_frac": "aligned CKA above its shuffled-pairing null (share of layers)",
}
# the baseline every metric is read against: how much of the GAP training progress alone explains
R2_BASELINE = {"step": "training step (baseline: progress alone)"}
GAPS = {"gap_f1": "GAP F1 (all voices)", "gap_answerable": "answerable GAP (all voices)"}


# =============================================================================== measured with the model
def silence_margin(model, samples: Sequence) -> dict:
    """APS (cosine path) of each clip with its own transcript minus APS of an all-zero clip of the same
    length with the same transcript (lsl_core.analysis_controls.silence_states), averaged over clips.

    -> {"aps_real", "aps_silence", "silence_margin_aps", "n"}; a margin near 0 means the path score
    does not depend on the speech at all.
    """
    import torch

    from lsl_core.analysis_controls import silence_states, speech_states, text_states
    from lsl_core.metrics.controls import candidate_metrics

    real, silent = [], []
    with torch.no_grad():
        for s in samples:
            hs, _ = speech_states(model, s.audio, s.sr)
            tx = text_states(model, s.question)[0]
            sil = silence_states(model, float(len(s.audio)) / float(s.sr))
            real.append(float(candidate_metrics(hs, [tx])["aps_cos"][0, 1:].mean()))
            silent.append(float(candidate_metrics(sil, [tx])["aps_cos"][0, 1:].mean()))
    r, z = float(np.mean(real)), float(np.mean(silent))
    return {"aps_real": r, "aps_silence": z, "silence_margin_aps": r - z, "n": len(real)}


def frame_sink(model, samples: Sequence) -> dict:
    """Do the first speech frames act as an attention sink? Over the whole speech prompt, each position's
    norm over the median norm of the clip's speech frames (lsl_core.metrics.norms.norm_ratio), averaged
    over clips, at the layer (1..L) where it is largest:

    -> {"sink_first_frame", "sink_first_frame_layer"  (first speech frame),
        "sink_max_frame"                              (largest of any speech frame),
        "sink_prompt0", "sink_prompt0_layer"          (prompt position 0, the small LLMs' known sink), "n"}
    """
    import torch

    from lsl_core.metrics.norms import norm_ratio
    from lsl_core.model.lslm import PromptInputs

    first, most, p0 = [], [], []
    with torch.no_grad():
        for s in samples:
            prompt = model.build_prompt(model.embed_speech(s.audio, s.sr).embeds)
            whole = PromptInputs(prompt.inputs_embeds, slice(0, prompt.inputs_embeds.shape[1]))
            r = norm_ratio(model.forward_states(whole), prompt.span)[1:]  # [L, T], layers 1..L
            first.append(r[:, prompt.span.start])
            most.append(r[:, prompt.span].amax(dim=-1))
            p0.append(r[:, 0])
    f, m, z = (torch.stack(x).mean(dim=0) for x in (first, most, p0))  # [L]
    return {"sink_first_frame": float(f.max()), "sink_first_frame_layer": int(f.argmax()) + 1,
            "sink_max_frame": float(m.max()), "sink_prompt0": float(z.max()), "sink_prompt0_layer": int(z.argmax()) + 1,
            "n": len(first)}


# =============================================================================== statistics
def step_spearman(steps: Sequence[float], values: Sequence[float]) -> float:
    """Spearman ρ of step vs a score along one trajectory (NaN for fewer than 3 points)."""
    from scipy.stats import spearmanr

    if len(steps) < 3:
        return float("nan")
    return float(spearmanr(steps, values).statistic)


# =============================================================================== the table
def _check_results(results: Path) -> list[Path]:
    """evaluate's summary and headline files in `results`, or LSLError naming the commands that write them."""
    need = [Path(results) / "checkpoints_summary.parquet", Path(results) / "checkpoints_headline.parquet"]
    missing = [p.name for p in need if not p.is_file()]
    if missing:
        raise LSLError(f"{results} lacks {missing}; write them with `python -m lsl_core evaluate ... --out {results}` "
                       f"(and, for the alignment columns, `python -m lsl_core analyze --controls ... --out "
                       f"{results}/analysis.parquet`).")
    return need


def curriculum_table(results: Path, measured: dict[str, dict] | None = None,
                     stages: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per evaluated checkpoint: scores (evaluate), alignment means (analyze), retrieval (controls).
    Without analyze's files (a sample set that was only evaluated) the alignment columns are left out.

    stages: checkpoint name -> its training stage (manifest extra 'stage': ctc / repeat / qa), a column
    that lets `trajectories` tell the shared alignment start from a QA stage's checkpoints.
    """
    from lsl_core.results import checkpoint_means, controls_means

    results = Path(results)
    need = _check_results(results)
    summary = read_table(need[0])
    head = read_table(need[1])
    apath = results / "analysis.parquet"
    al = checkpoint_means(read_table(apath)) if apath.is_file() else pd.DataFrame({"checkpoint": []})
    allv = summary[summary["voice"] == "all"].set_index("checkpoint")
    rows = []
    for ck, r in allv.iterrows():
        rec = {"checkpoint": ck, "strategy": r["strategy"], "step": int(r["step"]),
               "text_f1": r["text_f1"], "speech_f1": r["speech_f1"], "gap_f1": r["gap_f1"],
               "gap_answerable": r.get("gap_answerable", np.nan), "n_answerable": r.get("n_answerable", np.nan)}
        for _, h in head[head["checkpoint"] == ck].iterrows():
            tag = "seen" if h["voice"] == "seen" else "unseen"
            for c in ("agreement", "cascade_agreement", "ratio", "ratio_specific"):
                for suf in ("", "_lo", "_hi"):
                    rec[f"{c}{suf}_{tag}"] = h.get(f"{c}{suf}", np.nan)
        rows.append(rec)
    df = pd.DataFrame(rows)
    keep = [c for c in ("checkpoint", "seq_cos_mean", "aps_cos", "spearman_cos_mean", "spearman_dist_mean",
                        "collapsed_cos_frac", "collapsed_dist_frac", "cka_diag_mean", "cka_above_null_frac")
            if c in al.columns]
    df = df.merge(al[keep], on="checkpoint", how="left")
    cpath = results / "analysis_controls.parquet"
    if cpath.is_file():
        ctl = read_table(cpath)
        retr = ctl[(ctl["table"] == "retrieval") & (ctl["scorer"] == "seq_cos") & (ctl["layer"] >= 0)]
        best = retr.loc[retr.groupby("checkpoint")["top1"].idxmax(), ["checkpoint", "top1", "layer", "chance_top1"]]
        best = best.rename(columns={"top1": "retrieval_top1_best", "layer": "retrieval_best_layer",
                                    "chance_top1": "retrieval_chance"})
        sizes = retr.groupby("checkpoint").agg(n=("n", "first"), candidates=("candidates", "first"),
                                               layers=("layer", "nunique"))
        best["retrieval_chance_best"] = [best_layer_chance(int(z.n), int(z.candidates), int(z.layers))[0]
                                         for z in sizes.loc[best["checkpoint"]].itertuples()]
        best["retrieval_layers"] = sizes.loc[best["checkpoint"], "layers"].to_numpy()
        df = df.merge(best, on="checkpoint", how="left")
        means = controls_means(ctl)
        if "specific_seq_cos" in means.columns:
            df = df.merge(means[["checkpoint", "specific_seq_cos"]], on="checkpoint", how="left")
    if measured:  # silence margin + sink per checkpoint (run() measures them with the model)
        extra = pd.DataFrame([{"checkpoint": k, **v} for k, v in measured.items()]).drop(columns=["n"], errors="ignore")
        df = df.merge(extra, on="checkpoint", how="left")
    if stages:
        df["stage"] = df["checkpoint"].map(stages).fillna("")
    rank = {"none": 0, "frozen": 1, "lora": 2, "full": 3}
    return df.assign(_r=df["strategy"].map(rank).fillna(9)).sort_values(["_r", "step"]).drop(columns="_r") \
        .reset_index(drop=True)


def trajectories(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each strategy's path through training: the shared start (untrained, then the frozen-LLM alignment
    stages up to the stage's init) followed by that strategy's checkpoints.

    With a `stage` column (curriculum_table(stages=...)) the shared start is every untrained or frozen-LLM
    checkpoint of an alignment stage (not 'qa') before the strategy's first checkpoint, so a LoRA stage that
    starts after the frozen QA checkpoints (e.g. a LoRA in the repeat stage) does not take them in; without
    it, every untrained or frozen checkpoint before the first one."""
    qa_start = {s: int(df[df["strategy"] == s]["step"].min()) for s in ("lora", "full") if (df["strategy"] == s).any()}
    out = {"frozen": df[df["strategy"].isin(["none", "frozen"])].sort_values("step")}
    shared = df["strategy"].isin(["none", "frozen"])
    if "stage" in df.columns:
        shared &= df["stage"] != "qa"
    for s, first in qa_start.items():
        prefix = df[shared & (df["step"] < first)]
        out[s] = pd.concat([prefix, df[df["strategy"] == s]]).sort_values("step")
    return out


def r2_table(df: pd.DataFrame) -> pd.DataFrame:
    """R² (with bootstrap CI over checkpoints, permutation null and what it adds beyond the training step:
    lsl_core.metrics.gap.gap_r2_table) of every available alignment metric vs each GAP, then the training
    step's own R² (the baseline). Checkpoints where the metric or the GAP is missing are left out of its fit."""
    rows = []
    for g, gname in GAPS.items():
        if g not in df.columns:
            continue
        values = df[g].dropna().unique()
        if len(values) == 0:  # e.g. no checkpoint's text answer contains a gold answer: no answerable GAP
            rows.append({"gap": gname, "metric": "every metric",
                         "note": "no checkpoint has this GAP (no question is answerable): nothing to fit"})
            continue
        if is_constant(values):  # e.g. speech never contains a gold answer where text does: nothing to explain
            rows.append({"gap": gname, "metric": "every metric",
                         "note": f"the GAP is {100 * values[0]:.1f} for every checkpoint: nothing to explain"})
            continue
        metrics = [m for m in R2_METRICS if m in df.columns and not df[m].isna().all()]
        for m in metrics + ([*R2_BASELINE] if metrics else []):  # the baseline only beside a metric
            mname = {**R2_METRICS, **R2_BASELINE}[m]
            sub = df[list(dict.fromkeys([m, g, "step"]))].dropna(subset=[m, g])  # checkpoints with both
            try:
                fit = gap_r2_table(sub, m, gap=g, by=(), resamples=N_BOOT,
                                   control=None if m in R2_BASELINE else "step").iloc[0]
            except Exception as exc:  # noqa: BLE001 - a metric that cannot be fitted is reported, not fatal
                rows.append({"gap": gname, "metric": mname, "note": str(exc)})
                continue
            rows.append({"gap": gname, **fit.to_dict(), "metric": mname})
    return pd.DataFrame(rows)


# =============================================================================== the page
def _p(x, digits: int = 1) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * x:.{digits}f}"


def _f(x, digits: int = 3) -> str:
    return "–" if x is None or pd.isna(x) else f"{x:.{digits}f}"


def _ci(r, c: str, tag: str) -> str:
    v = r.get(f"{c}_{tag}")
    if v is None or pd.isna(v):
        return "–"
    return f"{100 * v:.1f} [{100 * r[f'{c}_lo_{tag}']:.1f}, {100 * r[f'{c}_hi_{tag}']:.1f}]"


def markdown(df: pd.DataFrame, r2: pd.DataFrame, meta: dict) -> str:
    """docs/results/curriculum.md."""
    lines = page_header("The training curriculum: agreement, cascade, alignment and GAP per checkpoint",
                        meta["command"], meta.get("code_version", NOT_RECORDED))
    lines += [
        f"- Inputs: {meta['inputs']}.",
        (f"- Silence margin: APS (cosine path, layers 1..L) of real clips minus an all-zero clip of the same length "
         f"with the same transcript, on {meta['silence_clips']} clips ({meta.get('silence_voice', '')}); "
         "the sink table uses the same clips." if meta.get("silence_clips") else
         "- Silence margin and first-frame sink: not measured (`--zoo` with `--silence-clips` > 0 measures them)."),
        "- Agreement = token F1 between a checkpoint's speech answer and its own text answer; cascade = Whisper "
        "transcript → the same LLM; 95% CIs resample questions. Seen = the evaluated voices also used in "
        "training (with other questions; in sd-qa-mini and its next-60 sibling en-gb, en-gb-x-rp, en-us, en-029); "
        "unseen = en-gb-scotland, never used in training. Both sets hold SD-QA dev questions, never used in "
        "training (training texts: the SD-QA English test split + word sequences). Above "
        "style: the ratio after subtracting from each side its agreement with the other questions' text answers "
        "(what answer style alone reaches), i.e. question-specific agreement, end-to-end / cascade.",
        "",
        "## Per checkpoint",
        "",
    ]
    # alignment columns (analyze, controls, silence margin) only where the results hold any of them
    n_align = 5 if any(c in df.columns for c in ("spearman_cos_mean", "collapsed_cos_frac", "retrieval_top1_best",
                                                "silence_margin_aps")) else 0
    head = ["checkpoint", "strategy", "step", "agreement seen", "agreement unseen", "cascade unseen",
            "e2e/cascade unseen", "e2e/cascade unseen, above style", "GAP F1", "answerable GAP (clips)",
            "Spearman cos", "Spearman L2", "collapsed (cos)", "retrieval top-1 (layer)", "APS − silence"]
    head = head[:len(head) - 5 + n_align]
    lines += ["| " + " | ".join(head) + " |", "|---|---|" + "--:|" * (len(head) - 2)]
    for _, r in df.iterrows():
        ratio = r.get("ratio_unseen")
        ratio_s = "–" if ratio is None or pd.isna(ratio) else \
            f"{ratio:.2f} [{r['ratio_lo_unseen']:.2f}, {r['ratio_hi_unseen']:.2f}]"
        spec = r.get("ratio_specific_unseen", np.nan)
        spec_s = "–" if spec is None or pd.isna(spec) else \
            f"{spec:.2f} [{r['ratio_specific_lo_unseen']:.2f}, {r['ratio_specific_hi_unseen']:.2f}]"
        retr = "–" if pd.isna(r.get("retrieval_top1_best", np.nan)) else \
            f"{r['retrieval_top1_best']:.2f} (ℓ{int(r['retrieval_best_layer'])})"
        n_ans = "" if pd.isna(r.get("n_answerable", np.nan)) else f" ({int(r['n_answerable'])})"
        collapsed = _p(r.get("collapsed_cos_frac"), 0)
        cells = [r["checkpoint"], r["strategy"], r["step"], _ci(r, "agreement", "seen"), _ci(r, "agreement", "unseen"),
                 _ci(r, "cascade_agreement", "unseen"), ratio_s, spec_s, _p(r["gap_f1"]),
                 f"{_p(r.get('gap_answerable'))}{n_ans}", _f(r.get("spearman_cos_mean")),
                 _f(r.get("spearman_dist_mean")), collapsed if collapsed == "–" else f"{collapsed} %", retr,
                 _f(r.get("silence_margin_aps"))]
        lines.append("| " + " | ".join(str(c) for c in cells[:len(head)]) + " |")
    chance = df["retrieval_chance"].dropna().iloc[0] if "retrieval_chance" in df and df["retrieval_chance"].notna().any() \
        else None
    if chance is not None:
        best = df["retrieval_chance_best"].dropna() if "retrieval_chance_best" in df else pd.Series(dtype=float)
        lines += ["", f"Retrieval chance level: {_f(chance)} at one layer (one own transcript among the candidates)"
                  + (f"; the best of {int(df['retrieval_layers'].dropna().iloc[0])} layers beats that by chance alone: "
                     f"{_f(best.iloc[0])} for independent layers (`metrics.controls.best_layer_chance`; correlated "
                     "layers give less, so this bounds the best layer's chance from above)." if len(best) else ".")]
    lines += ["", "## Does agreement rise along each trajectory?", "",
              "| trajectory | checkpoints | Spearman(step, agreement seen) | Spearman(step, agreement unseen) |",
              "|---|--:|--:|--:|"]
    for name, t in trajectories(df).items():
        lines.append(f"| {name} | {len(t)} | {_f(step_spearman(t['step'], t['agreement_seen']), 2)} | "
                     f"{_f(step_spearman(t['step'], t['agreement_unseen']), 2)} |")
    if "sink_first_frame" in df.columns and df["sink_first_frame"].notna().any():
        lines += ["", "## Do the first speech frames act as a sink?", "",
                  "Residual-stream norm of a position over the median norm of the clip's speech frames, mean over "
                  "the same clips, at the layer (1..L) where it is largest. An attention sink shows as a ratio "
                  "of ~10x or more (prompt position 0 is this LLM's sink).", "",
                  "| checkpoint | first speech frame (layer) | largest speech frame | prompt position 0 (layer) |",
                  "|---|--:|--:|--:|"]
        for _, r in df.iterrows():
            if pd.isna(r.get("sink_first_frame")):
                continue
            lines.append(f"| {r['checkpoint']} | {r['sink_first_frame']:.2f} (ℓ{int(r['sink_first_frame_layer'])}) | "
                         f"{r['sink_max_frame']:.2f} | {r['sink_prompt0']:.1f} (ℓ{int(r['sink_prompt0_layer'])}) |")
    lines += ["", f"## Which alignment metric predicts the GAP? (OLS over all {len(df)} checkpoints; R² with a "
              "bootstrap 95% CI over checkpoints)", "",
              "Null baselines: *null 95 %* is the R² that 95 % of random re-pairings of the GAP with the metric "
              "stay below, *p* the share of re-pairings that reach the observed R²; checkpoints of one curriculum "
              "are not exchangeable (the GAP and every metric trend with training), so the last rows fit the "
              "training step itself, and *beyond step* is the R² a metric adds to the step's fit "
              "(R²(GAP ~ step + metric) − R²(GAP ~ step)).", ""]
    if not any(m in df.columns for m in R2_METRICS):
        return "\n".join(lines + ["No alignment metric in these results (no analysis.parquet next to evaluate's "
                                   "files): `python -m lsl_core analyze --zoo ... --controls --out "
                                   "<results>/analysis.parquet` adds them and these fits."]) + "\n"
    lines += ["| GAP | alignment metric | n | slope | R² [95% CI] | null 95 % | p | beyond step [95% CI] |",
              "|---|---|--:|--:|--:|--:|--:|--:|"]
    for _, r in r2.iterrows():
        if "r2" not in r or pd.isna(r.get("r2")):
            lines.append(f"| {r['gap']} | {r['metric']} | – | – | not fitted: {r.get('note', '')} | | | |")
            continue
        added = ("–" if pd.isna(r.get("r2_added")) else
                 f"{r['r2_added']:.2f} [{r['r2_added_lo']:.2f}, {r['r2_added_hi']:.2f}]")
        lines.append(f"| {r['gap']} | {r['metric']} | {int(r['n'])} | {r['slope']:+.3g} | "
                     f"{r['r2']:.2f} [{r['r2_lo']:.2f}, {r['r2_hi']:.2f}] | {r['r2_null95']:.2f} | "
                     f"{'< 0.001' if r['p_perm'] < 0.001 else format(r['p_perm'], '.3f')} | {added} |")
    return "\n".join(lines) + "\n"


# =============================================================================== the command
def register(sub) -> None:
    p = sub.add_parser("curriculum", help="agreement, cascade, alignment and GAP per shipped checkpoint (+ R²)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("assets/results"),
                   help="folder with evaluate's checkpoints_* files and analyze's analysis*.parquet")
    p.add_argument("--zoo", type=Path, default=None, help="checkpoints folder, to measure the silence margin and the first-frame sink")
    p.add_argument("--samples", default="sd-qa-mini", help="sample set of the silence margin and the sink")
    p.add_argument("--silence-clips", type=int, default=30, help="clips for the silence margin (0 = skip)")
    p.add_argument("--silence-voice", default="en-gb-scotland", help="voice of the silence-margin clips")
    p.add_argument("--markdown", type=Path, default=None, help="write the results page here")
    p.add_argument("--out", type=Path, default=None, help="also write the per-checkpoint table (parquet)")
    p.set_defaults(func=run)


def run(args) -> int:
    from lsl_core.experiments.pages import provenance, write_page
    from lsl_core.model.loading import list_zoo

    meta = provenance(getattr(args, "argv", None))
    _check_results(args.results)  # before any model loads
    zoo = list_zoo(args.zoo) if args.zoo else []
    measured: dict[str, dict] = {}
    if zoo and args.silence_clips > 0:
        from tqdm import tqdm

        from lsl_core.data.sets import load_sample_set
        from lsl_core.model.loading import load_checkpoint

        summary = read_table(args.results / "checkpoints_summary.parquet")
        names = set(summary["checkpoint"])
        sset = load_sample_set(args.samples).filter(voice=args.silence_voice)
        clips = [sset[i] for i in range(min(args.silence_clips, len(sset)))]
        if not clips:
            raise LSLError(f"--samples {args.samples} has no clip of voice {args.silence_voice!r} for the silence "
                           "margin; pass --silence-voice with one of its voices, or --silence-clips 0.")
        for m in tqdm([m for m in zoo if m.name in names], desc="silence margin, sink",
                      unit="checkpoint"):
            model = load_checkpoint(m)
            measured[m.name] = {**silence_margin(model, clips), **frame_sink(model, clips)}
    stages = {m.name: str(m.extra.get("stage", "")) for m in zoo} or None
    df = curriculum_table(args.results, measured, stages)
    r2 = r2_table(df)
    inputs = [f.name for f in (args.results / n for n in ("checkpoints_summary.parquet", "checkpoints_headline.parquet",
                                                         "analysis.parquet", "analysis_controls.parquet"))
              if f.is_file()]
    meta.update({"inputs": f"{args.results}/" + ", ".join(inputs),
                 "silence_clips": args.silence_clips if measured else 0,
                 "silence_voice": f"{args.samples}, voice {args.silence_voice}"})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(args.out, index=False)
        r2.to_parquet(args.out.with_name(args.out.stem + "_r2.parquet"), index=False)
    if args.markdown:
        write_page(args.markdown, markdown(df, r2, meta))
        print(f"wrote {args.markdown}")
    cols = [c for c in ("checkpoint", "step", "agreement_seen", "agreement_unseen", "cascade_agreement_unseen",
                        "gap_f1", "spearman_cos_mean", "retrieval_top1_best", "silence_margin_aps") if c in df.columns]
    print(df[cols].to_string(index=False))
    print(r2.to_string(index=False))
    print(json.dumps({"checkpoints": len(df)}))
    return 0
