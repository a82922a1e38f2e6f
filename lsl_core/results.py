"""Stored evaluation results, read through one tolerant loader: `load_results(folder) -> Results`.

The files are written by the CLIs (nothing here computes a score or a metric):
  <name>_samples.parquet        python -m lsl_core evaluate   one row per checkpoint x sample
                                (checkpoint, family, strategy, step, sample_id, voice, question,
                                references, text_answer, speech_answer, text_/speech_ containment and f1,
                                agreement)
  <name>_summary.parquet        python -m lsl_core evaluate   one row per checkpoint x voice (+ "seen", "all")
                                (text/speech scores, gap_containment, gap_f1, agreement)
  <name>_interventions.parquet  python -m lsl_core evaluate --intervention ... or python -m lsl_core table1 --out
                                (experiments.table1 rows, one per sample x condition, with a checkpoint column)
  *.parquet with aps_cos        python -m lsl_core analyze    per-sample alignment metrics per checkpoint
  <name>_controls.parquet       python -m lsl_core analyze --controls   per checkpoint: specific alignment
                                (metric x layer) and speech->text retrieval (scorer x layer); layer -1 =
                                layer-averaged (see docs/controls.md)

Missing folders, missing files and unreadable files never raise: the Results say what is missing
and which command writes it, so the app can show the message and keep its other widgets working.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lsl_core.experiments.pages import PAGES

EVALUATE_COMMAND = PAGES["checkpoints"].command  # the documented commands that write these files
ANALYZE_COMMAND = PAGES["alignment"].command
CONTROLS_COMMAND = ("python -m lsl_core analyze --controls --zoo assets/checkpoints --samples sd-qa-mini "
                    "--out assets/results/analysis.parquet")


def read_table(path: str | Path) -> pd.DataFrame:
    """A stored results table (Parquet) -> DataFrame; a file that is not one is a DataError naming it (pyarrow's
    own error was a traceback: `report alignment --results notes.txt`)."""
    from lsl_core.errors import DataError

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path} is not a readable results table ({first}); give the .parquet file the command "
                        "wrote (not the .json or .md beside it).") from None


@dataclass
class Results:
    """What a results folder holds; a table is None when absent (see `notes`)."""

    folder: Path
    samples: pd.DataFrame | None = None  # checkpoint x sample answers and scores
    summary: pd.DataFrame | None = None  # checkpoint x voice means, GAP
    interventions: pd.DataFrame | None = None  # sample x condition speech answers under interventions
    alignment: pd.DataFrame | None = None  # checkpoint x sample alignment metrics (analyze CLI)
    controls: pd.DataFrame | None = None  # checkpoint x (metric | scorer) x layer controls (analyze --controls)
    notes: list[str] = field(default_factory=list)  # one line per missing/unreadable table

    @property
    def empty(self) -> bool:
        return all(t is None for t in (self.samples, self.summary, self.interventions, self.alignment))


def default_results_dir() -> Path:
    """$LSL_RESULTS_DIR, else the shipped assets/results."""
    env = os.environ.get("LSL_RESULTS_DIR")
    if env:
        return Path(env)
    from lsl_core.data.paths import assets_dir

    return assets_dir() / "results"


def load_results(folder: str | Path | None = None) -> Results:
    """Read every results table in `folder` (default: default_results_dir()); never raises for absence.

    Several files of one kind (e.g. two `*_summary.parquet` prefixes) are concatenated with a
    `results` column naming the file prefix.
    """
    root = Path(folder) if folder is not None else default_results_dir()
    res = Results(folder=root)
    if not root.is_dir():
        res.notes.append(f"No results folder at {root}. Write the evaluation results with `{EVALUATE_COMMAND}`.")
        return res
    kinds = {"samples": "_samples.parquet", "summary": "_summary.parquet", "interventions": "_interventions.parquet"}
    claimed: set[Path] = set()
    for attr, suffix in kinds.items():
        files = sorted(root.glob(f"*{suffix}"))
        claimed.update(files)
        frames = []
        for f in files:
            try:
                frames.append(read_table(f).assign(results=f.name[: -len(suffix)]))
            except Exception as exc:  # pyarrow raises several types for a torn/foreign file
                res.notes.append(f"Could not read {f.name} ({type(exc).__name__}: {exc}); re-run the command "
                                 "that wrote it.")
        if frames:
            setattr(res, attr, pd.concat(frames, ignore_index=True))
        elif not files:
            cmd = EVALUATE_COMMAND + (" --intervention angle:bottom3 --intervention angle:all"
                                      if attr == "interventions" else "")
            res.notes.append(f"No *{suffix} in {root}; write it with `{cmd}`.")
    control_files = sorted(root.glob("*_controls.parquet"))
    claimed.update(control_files)
    controls = []
    for f in control_files:
        try:
            controls.append(read_table(f).assign(results=f.name[: -len("_controls.parquet")]))
        except Exception as exc:  # pyarrow raises several types for a torn/foreign file
            res.notes.append(f"Could not read {f.name} ({type(exc).__name__}: {exc}); re-run `{CONTROLS_COMMAND}`.")
    if controls:
        res.controls = pd.concat(controls, ignore_index=True)
    align = []
    for f in sorted(set(root.glob("*.parquet")) - claimed - _merged_shards(root)):
        try:
            df = read_table(f)
        except Exception as exc:
            res.notes.append(f"Could not read {f.name} ({type(exc).__name__}: {exc}).")
            continue
        if {"checkpoint", "aps_cos", "seq_cos_mean"} <= set(df.columns):
            align.append(df.assign(results=f.stem))
    if align:
        res.alignment = pd.concat(align, ignore_index=True)
    else:
        res.notes.append(f"No alignment table (analyze output) in {root}; the app can compute it live, or run "
                         f"`{ANALYZE_COMMAND}`.")
    return res


def _merged_shards(root: Path) -> set[Path]:
    """Shard files (`<stem>.shard-00i-of-00n.parquet`, analyze --num-shards) whose merge `<stem>.parquet` is there:
    the merge holds their rows, so reading both would count every sample twice."""
    import re

    out = set()
    for f in root.glob("*.shard-*-of-*.parquet"):
        m = re.fullmatch(r"(.+)\.shard-\d+-of-\d+\.parquet", f.name)
        if m and (root / f"{m.group(1)}.parquet").is_file():
            out.add(f)
    return out


SCALARS = ("seq_cos_mean", "seq_dist_mean", "aps_cos", "aps_dist", "spearman_cos_mean", "spearman_dist_mean",
           "consistency_mean",
           # path diagnostics (share of layers 1..L; lsl_core.metrics.diagnostics), in newer analyze output
           "collapsed_cos_frac", "collapsed_dist_frac", "spearman_undefined_cos_frac", "spearman_undefined_dist_frac",
           # the aligned CKA's diagonal, its shuffled-pairing null, the share of layers above it (metrics.cka)
           "cka_diag_mean", "cka_null_diag_mean", "cka_above_null_frac")
CURVES = ("seq_cos", "seq_dist", "spearman_cos", "spearman_dist", "consistency")
GAP_X = ("seq_cos_mean", "seq_dist_mean", "aps_cos", "aps_dist")  # the alignment means the GAP is fitted on
CHECKPOINT_KEYS = ("checkpoint", "family", "strategy", "step")


def unique_alignment_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """Alignment rows with each (checkpoint, sample_id) once: identical copies (the same run read from two files)
    are dropped; two different values for one sample (two runs, e.g. argmax and dtw paths, in one folder) raise a
    DataError naming them, rather than averaging two runs as if they were more samples."""
    from lsl_core.errors import DataError

    if "checkpoint" not in rows.columns:
        raise DataError(f"The alignment table has no 'checkpoint' column (columns: {sorted(map(str, rows.columns))}); "
                        f"it is not `analyze` output: re-run `{ANALYZE_COMMAND}`.")
    if "sample_id" not in rows.columns or rows.empty:
        return rows
    ident = ["checkpoint", "sample_id"]
    same = ident + [c for c in (*SCALARS, "path") if c in rows.columns]
    rows = rows.drop_duplicates(subset=same, ignore_index=True)
    clash = rows[rows.duplicated(subset=ident, keep=False)]
    if len(clash):
        first = clash.iloc[0]
        files = sorted(map(str, clash["results"].unique())) if "results" in clash.columns else []
        raise DataError(f"The alignment table holds {clash.groupby(ident).ngroups} (checkpoint, sample_id) pair(s) "
                        f"with different values, e.g. ({first['checkpoint']}, {first['sample_id']})"
                        + (f", from the files {files}" if files else "") + ": two analyze runs of the same "
                        "checkpoint; keep one of them (or filter on the `results` column).")
    return rows


def checkpoint_means(rows: pd.DataFrame) -> pd.DataFrame:
    """Alignment rows (one per checkpoint x sample, as `analyze` writes them) -> one row per checkpoint.

    Scalars are averaged over samples; per-layer columns (lists [L+1]) are averaged layer-wise;
    `n` counts samples and `trajectory` = "family · strategy" labels a training run.
    """
    import numpy as np

    rows = unique_alignment_rows(rows)
    keys = [c for c in CHECKPOINT_KEYS if c in rows.columns]
    out = []
    for key, g in rows.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        rec = dict(zip(keys, key))
        rec["n"] = len(g)
        for c in SCALARS:
            if c in g.columns:
                rec[c] = float(g[c].mean())
        for c in CURVES:
            if c in g.columns:
                rec[c] = np.mean(np.stack([np.asarray(v, dtype=np.float64) for v in g[c]]), axis=0).tolist()
        out.append(rec)
    df = pd.DataFrame(out)
    if len(df) and {"family", "strategy"} <= set(df.columns):
        df["trajectory"] = df["family"].astype(str) + " · " + df["strategy"].astype(str)
    return df.sort_values([c for c in ("family", "strategy", "step") if c in df.columns], kind="stable",
                          ignore_index=True) if len(df) else df


def alignment_intervals(means: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """checkpoint_means rows + <scalar>_lo / _hi: 95% bootstrap intervals of each checkpoint's alignment means,
    over questions (a question's voices drawn together) when the rows carry a `question` column, else over
    samples. rows: as checkpoint_means takes them."""
    from lsl_core.metrics.stats import grouped_ci

    cols = [c for c in SCALARS if c in rows.columns]
    if rows.empty or not cols or "checkpoint" not in rows.columns:
        return means
    rows = unique_alignment_rows(rows)  # as checkpoint_means counted them
    cluster = "question" if "question" in rows.columns else None
    ci = grouped_ci(rows[["checkpoint", *cols, *([cluster] if cluster else [])]].reset_index(drop=True), cols,
                    ["checkpoint"], cluster=cluster)
    keep = ["checkpoint"] + [c for c in ci.columns if c.endswith(("_lo", "_hi"))]
    return means.merge(ci[keep], on="checkpoint", how="left")


def controls_means(rows: pd.DataFrame, centring: str | None = None) -> pd.DataFrame:
    """`analyze --controls` rows -> one row per checkpoint with the layer-averaged values as columns:
    matched_<metric>, mismatched_<metric>, specific_<metric> (+ _ci_low/_ci_high) and top1_<scorer>,
    mrr_<scorer>, so that `gap_table` / `gap_r2_table` can fit the GAP on raw or specific alignment.

    centring: keep only rows of that centring (None: all; a table mixing centrings is refused).
    """
    if centring is not None and "centring" in rows.columns:
        rows = rows[rows["centring"] == centring]
    if "centring" in rows.columns and rows["centring"].nunique() > 1:
        from lsl_core.errors import DataError

        raise DataError(f"The controls table mixes centrings {sorted(rows['centring'].unique())}; pick one.")
    keys = [c for c in CHECKPOINT_KEYS if c in rows.columns]
    mean = rows[rows["layer"] == -1]
    out = []
    for key, g in mean.groupby(keys, sort=False, dropna=False):
        rec = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for _, r in g[g["table"] == "specific"].iterrows():
            m = r["metric"]
            rec.update({f"matched_{m}": r["matched"], f"mismatched_{m}": r["mismatched"],
                        f"specific_{m}": r["specific"], f"specific_{m}_ci_low": r["ci_low"],
                        f"specific_{m}_ci_high": r["ci_high"]})
        for _, r in g[g["table"] == "retrieval"].iterrows():
            rec.update({f"top1_{r['scorer']}": r["top1"], f"mrr_{r['scorer']}": r["mrr"],
                        "chance_top1": r["chance_top1"]})
        out.append(rec)
    df = pd.DataFrame(out)
    return df.sort_values([c for c in ("family", "strategy", "step") if c in df.columns], kind="stable",
                          ignore_index=True) if len(df) else df


def gap_table(means: pd.DataFrame, summary: pd.DataFrame, score: str = "f1", voice: str = "all") -> pd.DataFrame:
    """Per-checkpoint alignment means joined with the evaluated GAP (= text − speech `score`) of one voice row.

    summary: evaluate's checkpoint x voice table (voice "all" = every voice, "seen" = training voices).
    Checkpoints missing from either table are dropped (inner join on `checkpoint`); a checkpoint whose rows of
    this voice differ (two evaluate runs in one folder) is refused (DataError), identical copies count once.
    """
    from lsl_core.errors import DataError

    cols = [f"text_{score}", f"speech_{score}", f"gap_{score}"]
    missing = [c for c in ["checkpoint", "voice", *cols] if c not in summary.columns]
    if missing:
        raise DataError(f"The results summary has no column(s) {missing}; re-run `{EVALUATE_COMMAND}`.")
    g = summary[summary["voice"] == voice][["checkpoint", *cols]].drop_duplicates()
    if g["checkpoint"].duplicated().any():
        twice = g.loc[g["checkpoint"].duplicated(), "checkpoint"].iloc[0]
        raise DataError(f"The results hold two different evaluations of checkpoint {twice!r} (voice {voice!r}); "
                        "keep one evaluate run per checkpoint in the results folder (the other in its own folder).")
    out = means.merge(g, on="checkpoint", how="inner")
    return out.rename(columns={f"gap_{score}": "gap"})


def score_trends(summary: pd.DataFrame, names, voice: str) -> pd.DataFrame:
    """evaluate's summary rows of the checkpoints `names` in one voice row ('all', 'seen', or a voice), each with
    its `trajectory` (family · strategy): the rows the Checkpoints page draws across training (viz.trend_curves)."""
    rows = summary[summary["checkpoint"].isin(set(names)) & (summary["voice"] == voice)]
    return rows.assign(trajectory=rows["family"] + " · " + rows["strategy"])


def with_intervals(summary_rows: pd.DataFrame, samples: pd.DataFrame | None,
                   intervals: pd.DataFrame | None = None) -> pd.DataFrame:
    """evaluate's checkpoint x voice summary rows + <score>_lo / _hi: the 95% bootstrap interval of each row's
    score over its samples (the GAP paired on the same samples; lsl_core.metrics.stats.summary_intervals).

    samples: evaluate's per-sample rows (Results.samples); without them the rows come back unchanged.
    intervals: summary_intervals(samples) when already computed (the app caches it); each group's interval
    depends only on its own samples, so it equals the one computed from the rows' checkpoints alone.
    """
    if samples is None or summary_rows.empty:
        return summary_rows
    if intervals is None:
        from lsl_core.metrics.stats import summary_intervals

        intervals = summary_intervals(samples[samples["checkpoint"].isin(set(summary_rows["checkpoint"]))])
    keep = ["checkpoint", "voice"] + [c for c in intervals.columns if c.endswith(("_lo", "_hi"))]
    return summary_rows.merge(intervals[keep], on=["checkpoint", "voice"], how="left")


__all__ = ["Results", "load_results", "default_results_dir", "checkpoint_means", "alignment_intervals",
           "unique_alignment_rows",
           "controls_means", "gap_table",
           "with_intervals", "score_trends",
           "EVALUATE_COMMAND",
           "ANALYZE_COMMAND", "CONTROLS_COMMAND", "SCALARS", "CURVES"]
