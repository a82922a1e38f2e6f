"""VoiceBench results from answers: per-sample scores, per-subset scores with CIs, GAP, R² vs alignment.

Pure tables (pandas), no model: the run (`voicebench_run.py`) writes answers, these functions turn
them into the stored results the Benchmark page reads.

    scores   one row per checkpoint x subset x modality x sample: the evaluator's columns +
             `outcome` (the per-sample right/wrong flag: containment, correct, strict_prompt, refused)
    summary  one row per checkpoint x subset x modality: `score` = the evaluator's headline (in %),
             its 95% bootstrap CI (percentile, resampling samples), failure shares, every aggregate
    gap      one row per checkpoint x subset, plus subset "overall":
                 GAP_s = M^t_s - M^s_s                         (text minus speech headline, DESIGN §3)
                 overall = sum_s n_s * M_s / sum_s n_s          (sample-weighted over subsets, as the paper)
             with paired bootstrap CIs (the same resampled samples for text and speech; stratified
             by subset for "overall"); `gap_cascade` = text - cascade where the cascade ran
    r2       OLS of GAP on every alignment metric across checkpoints (lsl_core.metrics.gap.fit_gap),
             per subset (metric averaged over that subset's analyzed samples, else over all) and
             pooled (subset "overall": overall GAP vs the mean over all analyzed samples)
Samples whose row had an error in any modality (undecodable audio, a scorer error) are left out of
every modality's score, so text and speech are compared on the same samples; `errors` lists them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lsl_core.errors import MetricInputError
from lsl_core.scoring import ScoreItem, evaluator_for
from lsl_core.results import read_table

MODALITIES = ("text", "speech", "cascade")
# per evaluator: the per-sample 0/1 column telling a right answer from a wrong one, and whether the
# headline is 100 * its mean (then bootstrapping is a vectorised mean; otherwise `aggregate` is rerun)
OUTCOME = {"sdqa": "containment", "mcq": "correct", "bbh": "correct", "ifeval": "strict_prompt",
           "harm": "refused", "open": None}
MEAN_OF = {"sdqa": "containment", "mcq": "correct", "bbh": "correct", "harm": "refused"}
CHECKPOINT_COLUMNS = ("checkpoint", "family", "strategy", "step")
NOT_METRICS = {"Ts", "Tt", "step", "row", "n", "key"}


@dataclass
class BenchmarkTables:
    """Everything `summarize_answers` derives from one answers table."""

    scores: pd.DataFrame
    summary: pd.DataFrame
    gap: pd.DataFrame
    errors: list[str] = field(default_factory=list)


# =========================================================================== per sample
def score_answers(answers: pd.DataFrame, samples, judged: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Answers (checkpoint, modality, sample_id, answer[, error]) -> (scores, errors).

    samples: the SampleSet the answers came from (metadata only is read: prompt, reference, kwargs).
    judged: optional judge rows (checkpoint, modality, sample_id, judge_yes / judge_score, judge_votes)
    merged in before aggregation. A row whose answer has an `error`, or whose scorer raises, is
    reported in `errors` ("<sample file> row <r>: ...") and leaves that sample out of every modality.
    """
    errors: list[str] = []
    bad: set[tuple[str, str]] = set()  # (checkpoint, sample_id) left out
    rows = []
    for a in answers.to_dict("records"):
        rec = samples.record(a["sample_id"])
        meta = rec.meta or {}
        where = f"{meta.get('path', meta.get('file', a['sample_id']))} row {meta.get('row', '?')} ({a['sample_id']})"
        base = {k: a.get(k) for k in (*CHECKPOINT_COLUMNS, "modality", "sample_id", "answer")}
        base.update(subset=meta.get("subset", a.get("subset")), split=meta.get("split", rec.accent),
                    prompt=rec.question, references=" | ".join(rec.answers))
        if a.get("transcript") is not None:
            base["transcript"] = a["transcript"]
        err = a.get("error")
        if isinstance(err, str) and err:
            errors.append(f"{where}, {a['modality']}: {err}")
            if a.get("error_scope") != "modality":  # bad audio: out of every modality; ASR failure: cascade only
                bad.add((a["checkpoint"], a["sample_id"]))
            continue
        ev = evaluator_for(base["subset"])
        try:
            cols = ev.score(str(a.get("answer") or ""), ScoreItem.of(rec))
        except MetricInputError as exc:
            errors.append(f"{where}: cannot score ({exc})")
            bad.add((a["checkpoint"], a["sample_id"]))
            continue
        base.update(cols, evaluator=ev.name)
        out = OUTCOME[ev.name]
        base["outcome"] = None if out is None else float(cols[out])
        rows.append(base)
    df = pd.DataFrame(rows)
    if df.empty:
        return df, errors
    keep = [(c, s) not in bad for c, s in zip(df["checkpoint"], df["sample_id"])]
    df = df[keep].reset_index(drop=True)
    if judged is not None and len(judged):
        j = judged[[c for c in judged.columns if c in ("checkpoint", "modality", "sample_id", "judge_yes",
                                                       "judge_score", "judge_votes")]]
        df = df.merge(j, on=["checkpoint", "modality", "sample_id"], how="left")
    return df, errors


# =========================================================================== bootstrap
def _replicates(ev_name: str, rows: pd.DataFrame, idx: np.ndarray) -> np.ndarray:
    """Headline score [B] of `rows` resampled by idx [B, n] (indices into rows)."""
    col = MEAN_OF.get(ev_name)
    if col is not None:
        v = rows[col].to_numpy(dtype=np.float64)  # [n]
        return 100.0 * v[idx].mean(axis=1)  # [B]
    if ev_name == "ifeval":
        sp, lp = rows["strict_prompt"].to_numpy(float), rows["loose_prompt"].to_numpy(float)
        sf, lf = rows["strict_followed"].to_numpy(float), rows["loose_followed"].to_numpy(float)
        ni = rows["n_instructions"].to_numpy(float)
        tot = ni[idx].sum(axis=1)  # [B]
        return 25.0 * (sp[idx].mean(1) + sf[idx].sum(1) / tot + lp[idx].mean(1) + lf[idx].sum(1) / tot)
    if ev_name == "open" and "judge_score" in rows:
        v = rows["judge_score"].to_numpy(dtype=np.float64)
        return 20.0 * np.nanmean(v[idx], axis=1)
    return np.full(idx.shape[0], np.nan)


def _ci(reps: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


# =========================================================================== per subset, GAP
def summarize_scores(scores: pd.DataFrame, n_boot: int = 1000, seed: int = 0,
                     errors: Sequence[str] = ()) -> BenchmarkTables:
    """Scores -> summary (checkpoint x subset x modality) and gap (checkpoint x subset + overall)."""
    if scores.empty:
        raise MetricInputError("No scored answers to summarize; check the run's errors.")
    rng = np.random.default_rng(seed)
    summ, gaps = [], []
    keys = [c for c in CHECKPOINT_COLUMNS if c in scores.columns]
    for ck, sc in scores.groupby(keys, sort=False, dropna=False):
        ck = dict(zip(keys, ck if isinstance(ck, tuple) else (ck,)))
        reps: dict[tuple[str, str], np.ndarray] = {}  # (subset, modality) -> [B]
        weights: dict[str, int] = {}
        heads: dict[tuple[str, str], float] = {}
        for subset, ss in sc.groupby("subset", sort=True):
            ev = evaluator_for(subset)
            mods = [m for m in MODALITIES if m in set(ss["modality"])]
            core = [m for m in ("text", "speech") if m in mods] or mods  # GAP compares these on the same samples
            have = {m: set(ss.loc[ss["modality"] == m, "sample_id"]) for m in mods}
            ids = sorted(set.intersection(*(have[m] for m in core)))
            n = len(ids)
            idx = rng.integers(0, n, size=(n_boot, n)) if n else np.zeros((n_boot, 0), int)  # shared by text/speech
            for modality in mods:
                mids = ids if modality in core else [i for i in ids if i in have[modality]]
                midx = idx if modality in core else (rng.integers(0, len(mids), size=(n_boot, len(mids))) if mids
                                                     else np.zeros((n_boot, 0), int))
                rows = ss[ss["modality"] == modality].set_index("sample_id").loc[mids].reset_index()
                agg = ev.aggregate(rows.to_dict("records")) if len(rows) else {}
                score = agg.get(ev.primary, float("nan"))
                r = _replicates(ev.name, rows, midx) if len(mids) else np.full(n_boot, np.nan)
                reps[(subset, modality)] = r
                heads[(subset, modality)] = score
                lo, hi = _ci(r)
                summ.append({**ck, "subset": subset, "modality": modality, "evaluator": ev.name, "n": len(mids),
                             "metric": ev.primary, "score": score, "ci_low": lo, "ci_high": hi,
                             **{f"fail_{f}": agg.get(f, float("nan")) for f in ev.failures},
                             "details": json.dumps({k: v for k, v in agg.items() if k != "n"})})
            weights[subset] = n
            gaps.append(_gap_row(ck, subset, n, heads, reps))
        gaps.append(_overall_row(ck, weights, heads, reps))
    summary = pd.DataFrame(summ)
    gap = pd.DataFrame(gaps)
    return BenchmarkTables(scores=scores, summary=summary, gap=gap, errors=list(errors))


def _gap_row(ck: dict, subset: str, n: int, heads: dict, reps: dict) -> dict:
    row = {**ck, "subset": subset, "n": n}
    for m in MODALITIES:
        row[m] = heads.get((subset, m), float("nan"))
    row["gap"] = row["text"] - row["speech"]
    if (subset, "text") in reps and (subset, "speech") in reps:
        row["gap_ci_low"], row["gap_ci_high"] = _ci(reps[(subset, "text")] - reps[(subset, "speech")])
    else:
        row["gap_ci_low"] = row["gap_ci_high"] = float("nan")
    row["gap_cascade"] = row["text"] - row["cascade"]
    return row


def _overall_row(ck: dict, weights: dict[str, int], heads: dict, reps: dict) -> dict:
    """Sample-weighted mean over the subsets that have a headline for both text and speech."""
    usable = [s for s, n in weights.items() if n and np.isfinite(heads.get((s, "text"), np.nan))
              and np.isfinite(heads.get((s, "speech"), np.nan))]
    total = sum(weights[s] for s in usable)
    row = {**ck, "subset": "overall", "n": total, "subsets": ",".join(usable)}
    for m in MODALITIES:
        have = [s for s in usable if np.isfinite(heads.get((s, m), np.nan))]
        row[m] = (sum(weights[s] * heads[(s, m)] for s in have) / sum(weights[s] for s in have)
                  if have and len(have) == len(usable) else float("nan"))
    row["gap"] = row["text"] - row["speech"]
    if usable:
        d = sum(weights[s] * (reps[(s, "text")] - reps[(s, "speech")]) for s in usable) / total
        row["gap_ci_low"], row["gap_ci_high"] = _ci(d)
    else:
        row["gap_ci_low"] = row["gap_ci_high"] = float("nan")
    row["gap_cascade"] = row["text"] - row["cascade"]
    return row


# =========================================================================== R² vs alignment
def alignment_metrics(alignment: pd.DataFrame) -> list[str]:
    """The numeric per-sample alignment metric columns of an analyze table (scalars, not ids or curves)."""
    from lsl_core.results import SCALARS

    known = [c for c in SCALARS if c in alignment.columns]
    extra = [c for c in alignment.columns if c not in known and c not in NOT_METRICS
             and c not in CHECKPOINT_COLUMNS and pd.api.types.is_float_dtype(alignment[c])]
    return known + sorted(extra)


MIN_ADDED_N = 4  # checkpoints for an R² beyond the step: GAP ~ 1 + step + x fits any 3 points exactly


def r2_table(gap: pd.DataFrame, alignment: pd.DataFrame, subset_of: dict[str, str] | None = None) -> pd.DataFrame:
    """R² of GAP on each alignment metric across checkpoints, per subset and pooled ("overall").

    gap: the gap table (checkpoint, subset, gap). alignment: per-sample rows (checkpoint, sample_id,
    metrics...); subset_of maps sample_id -> subset (else a `subset` column is used, else the ids'
    "<subset>/..." prefix). Columns: metric, subset, n (checkpoints), slope, intercept, r2, its null
    baselines r2_lo, r2_hi (bootstrap over checkpoints), r2_null95, p_perm (random re-pairings;
    lsl_core.metrics.gap), r2_added, r2_added_lo, r2_added_hi (what the metric adds beyond the training
    step, when the rows carry a `step` column that varies and >= MIN_ADDED_N checkpoints), x_from, note.
    With steps, each subset also gets a "step" row: the training step's own fit, the baseline.
    """
    from lsl_core.metrics.gap import fit_gap, r2_added, r2_added_interval, r2_interval, r2_null

    nan = float("nan")
    nothing = {"slope": nan, "intercept": nan, "r2": nan, "r2_lo": nan, "r2_hi": nan, "r2_null95": nan,
               "p_perm": nan, "r2_added": nan, "r2_added_lo": nan, "r2_added_hi": nan}
    if alignment is None or alignment.empty:
        return pd.DataFrame(columns=["metric", "subset", "n", *nothing, "x_from", "note"])
    al = alignment.copy()
    if "subset" not in al.columns:
        al["subset"] = [(subset_of or {}).get(s) or (str(s).split("/", 1)[0] if "/" in str(s) else None)
                        for s in al["sample_id"]]
    metrics = alignment_metrics(al)
    steps = al.groupby("checkpoint")["step"].first().astype(float) if "step" in al.columns else None
    if steps is not None and steps.nunique() > 1:  # the step's own fit is every subset's baseline row
        al["step"] = al["checkpoint"].map(steps)
        metrics = [*metrics, "step"]
    else:
        steps = None
    pooled = al.groupby("checkpoint")[metrics].mean()
    by_subset = al.dropna(subset=["subset"]).groupby(["subset", "checkpoint"])[metrics].mean()
    rows = []
    for subset in sorted(set(gap["subset"])):
        g = gap[gap["subset"] == subset].set_index("checkpoint")["gap"]
        own = subset != "overall" and subset in by_subset.index.get_level_values(0)
        x_tab = by_subset.loc[subset] if own else pooled
        for metric in metrics:
            if not np.isfinite(g.to_numpy(dtype=float)).any():
                rows.append({"metric": metric, "subset": subset, "n": 0, **nothing, "x_from": "",
                             "note": "no GAP for this subset (its headline score needs the LLM judge)"})
                continue
            common = [c for c in g.index if c in x_tab.index and np.isfinite(g[c]) and np.isfinite(x_tab.loc[c, metric])]
            rec = {"metric": metric, "subset": subset, "n": len(common),
                   "x_from": f"{subset} samples" if own else "all analyzed samples"}
            x, y = x_tab.loc[common, metric].to_numpy(), g[common].to_numpy()
            try:
                fit = fit_gap(x, y)
                (lo, hi), (null95, p) = r2_interval(x, y), r2_null(x, y)
                rec.update(slope=fit.slope, intercept=fit.intercept, r2=fit.r2, r2_lo=lo, r2_hi=hi, r2_null95=null95,
                           p_perm=p, r2_added=nan, r2_added_lo=nan, r2_added_hi=nan, note="")
                if steps is not None and metric != "step" and len(common) >= MIN_ADDED_N:
                    c = steps.loc[common].to_numpy()
                    rec["r2_added"] = r2_added(x, y, c)
                    rec["r2_added_lo"], rec["r2_added_hi"] = r2_added_interval(x, y, c)
            except MetricInputError as exc:
                rec.update(**nothing, note=str(exc))
            rows.append(rec)
    return pd.DataFrame(rows)


# =========================================================================== report
def _f(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.1f}"


def markdown_report(tables: BenchmarkTables, r2: pd.DataFrame | None, meta: dict) -> str:
    """The results page: per checkpoint, each subset's text / speech / GAP (and overall), failures, R²."""
    gap = tables.gap
    subsets = [s for s in dict.fromkeys(gap["subset"]) if s != "overall"]
    from lsl_core.experiments.pages import NOT_RECORDED, page_header

    lines = page_header(f"VoiceBench: text vs speech ({', '.join(subsets)})",
                        meta.get("command") or "python -m lsl_core voicebench ...",
                        meta.get("code_version") or NOT_RECORDED)
    lines += [f"- Data: {meta.get('data')} - rows per subset: "
             + ", ".join(f"{s} {int(gap[gap['subset'] == s]['n'].max())}" for s in subsets) + ".",
             f"- Greedy answers, {meta.get('max_new_tokens')} new tokens; scores in %; GAP = text - speech; overall ="
             " sample-weighted mean over subsets; [95% bootstrap CI].",
             "- Headlines: " + "; ".join(f"{s}: {evaluator_for(s).primary}" for s in subsets) + ".", ""]
    if meta.get("missing_answers"):
        lines[-1:-1] = [f"- **Incomplete: {meta['missing_answers']} answers of the selected rows are missing** "
                        f"(e.g. {meta.get('missing_example')}; a shard not copied into the results folder, or a run "
                        "still going): every table below covers only the rows answered."]
    head = "| checkpoint | " + " | ".join(f"{s} text | {s} speech | {s} GAP" for s in subsets) + " | overall GAP |"
    lines += [head, "|---|" + "--:|" * (3 * len(subsets) + 1)]
    for ck, g in gap.groupby("checkpoint", sort=False):
        cells = []
        for s in subsets:
            r = g[g["subset"] == s]
            r = r.iloc[0] if len(r) else None
            cells += [_f(r["text"]) if r is not None else "–", _f(r["speech"]) if r is not None else "–",
                      _f(r["gap"]) if r is not None else "–"]
        o = g[g["subset"] == "overall"].iloc[0]
        cells.append(f"{_f(o['gap'])} [{_f(o['gap_ci_low'])}, {_f(o['gap_ci_high'])}]")
        lines.append(f"| {ck} | " + " | ".join(cells) + " |")
    fail_cols = [c for c in tables.summary.columns if c.startswith("fail_")]
    if fail_cols:
        lines += ["", "## Failure shares (% of answers the scorer could not read; counted as wrong)", "",
                  "| checkpoint | subset | modality | " + " | ".join(c[5:] for c in fail_cols) + " |",
                  "|---|---|---|" + "--:|" * len(fail_cols)]
        for _, r in tables.summary.iterrows():
            vals = [r[c] for c in fail_cols]
            if any(np.isfinite(v) for v in vals):
                lines.append(f"| {r['checkpoint']} | {r['subset']} | {r['modality']} | "
                             + " | ".join(_f(v) for v in vals) + " |")
    if r2 is not None and len(r2):
        lines += ["", "## R² of GAP on alignment metrics across checkpoints (OLS; alignment: layers 1..L means)", "",
                  "R² with a bootstrap 95% CI over checkpoints; null 95 %: the R² that 95 % of random re-pairings of "
                  "the GAP with the metric stay below; p: the share that reach the observed R²; beyond step: the R² "
                  "the metric adds to the training step's own fit (the `step` row), with its CI, from "
                  f"{MIN_ADDED_N} checkpoints on (docs/controls.md).", "",
                  "| metric | subset | checkpoints | slope | R² [95% CI] | null 95 % | p | beyond step [95% CI] "
                  "| note |",
                  "|---|---|--:|--:|--:|--:|--:|--:|---|"]
        for _, r in r2.iterrows():
            ok = np.isfinite(r["r2"])
            added = r.get("r2_added", float("nan"))
            beyond = f"{added:.3f} [{r.r2_added_lo:.2f}, {r.r2_added_hi:.2f}]" if np.isfinite(added) else "–"
            lines.append(f"| {r['metric']} | {r['subset']} | {r['n']} | "
                         f"{'–' if not np.isfinite(r['slope']) else f'{r.slope:.3g}'} | "
                         f"{f'{r.r2:.3f} [{r.r2_lo:.2f}, {r.r2_hi:.2f}]' if ok else '–'} | "
                         f"{f'{r.r2_null95:.2f}' if ok else '–'} | {f'{r.p_perm:.3f}' if ok else '–'} | "
                         f"{beyond} | {r['note']} |")
    if tables.errors:
        lines += ["", f"## Rows left out ({len(tables.errors)})", ""] + [f"- {e}" for e in tables.errors[:50]]
    return "\n".join(lines) + "\n"



# =========================================================================== reading results back
RUN_COMMAND = ("python -m lsl_core voicebench --data /data/voicebench --subsets sd-qa:usa,mmsu,openbookqa,ifeval,"
               "advbench --zoo <checkpoints> --out <folder>")


@dataclass
class VoiceBenchResults:
    """A VoiceBench run's stored tables (None where absent) and what is missing (`notes`)."""

    folder: object
    summary: pd.DataFrame | None = None
    gap: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None
    r2: pd.DataFrame | None = None
    meta: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.summary is None or self.gap is None


def load_voicebench_results(folder) -> VoiceBenchResults:
    """Read a run's output folder; never raises for a missing or unreadable file (see `notes`)."""
    from pathlib import Path

    root = Path(folder).expanduser()
    res = VoiceBenchResults(folder=root)
    if not root.is_dir():
        res.notes.append(f"No VoiceBench results folder at {root}. Write one with `{RUN_COMMAND}`.")
        return res
    for name in ("summary", "gap", "scores", "r2"):
        f = root / f"{name}.parquet"
        if not f.is_file():
            if name != "r2":
                res.notes.append(f"No {f.name} in {root}; (re)run `{RUN_COMMAND}` (or add --score-only).")
            continue
        try:
            setattr(res, name, read_table(f))
        except Exception as exc:  # pyarrow raises several types for a torn/foreign file
            res.notes.append(f"Could not read {f} ({type(exc).__name__}: {exc}); rerun with --score-only.")
    try:
        res.meta = json.loads((root / "results.json").read_text()).get("meta", {})
    except (OSError, ValueError) as exc:
        res.notes.append(f"Could not read {root / 'results.json'} ({exc}).")
    return res


def disagreement_cases(scores: pd.DataFrame, checkpoint: str, subset: str | None = None, *,
                       right: str = "text", wrong: str = "speech") -> pd.DataFrame:
    """Samples whose `right` modality answer is right and `wrong` modality answer wrong (per-sample
    `outcome`), side by side: sample_id, subset, split, prompt, references, both answers."""
    sc = scores[scores["checkpoint"] == checkpoint]
    if subset is not None:
        sc = sc[sc["subset"] == subset]
    a = sc[sc["modality"] == right].set_index("sample_id")
    b = sc[sc["modality"] == wrong].set_index("sample_id")
    ids = [i for i in a.index if i in b.index and a.at[i, "outcome"] == 1 and b.at[i, "outcome"] == 0]
    cols = ["subset", "split", "prompt", "references"]
    out = a.loc[ids, cols].copy()
    out[f"{right}_answer"] = a.loc[ids, "answer"]
    out[f"{wrong}_answer"] = b.loc[ids, "answer"]
    return out.reset_index()

__all__ = ["MODALITIES", "BenchmarkTables", "score_answers", "summarize_scores", "r2_table", "alignment_metrics",
           "markdown_report", "OUTCOME", "VoiceBenchResults", "load_voicebench_results", "disagreement_cases",
           "RUN_COMMAND"]
