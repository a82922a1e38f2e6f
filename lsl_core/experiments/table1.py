"""Table 1 of the seed paper: speech answers under each intervention, scored (`python -m lsl_core table1`).

evaluate_interventions(model, samples, interventions) -> DataFrame, one row per sample × condition
    ("original" = the unedited speech answer, then one row per intervention condition), each with the
    sd-qa scores (containment, F1, EM vs the references) and the agreement with the text answer.
table1(df) -> DataFrame, rows Original, Angle·Bottom3, Angle·All, Length·Bottom3, Length·All,
    Calibrate·…, columns containment / F1 / agreement (percent, mean over samples) and their Δ vs Original.
table1_nulls(df) -> DataFrame, each intervention against its nulls (k random tokens instead of the
    least aligned, the path's pairing shuffled, another question's transcript): paired Δ with 95% CIs.

One command writes the per-sample rows (<out>/table1_interventions.parquet + table1.json with the command
and code version) and docs/results/interventions.md (60 samples, the 6 paper rows and their 13 nulls, 24 new
tokens, ~8 min on 2 CPU cores):

    python -m lsl_core table1 --n 60 --max-new-tokens 24 --out assets/results --markdown docs/results/interventions.md

`python -m lsl_core report interventions` re-renders the page from the stored rows.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import pandas as pd

from lsl_core.cli import add_device_args
from lsl_core.errors import LSLError
from lsl_core.experiments.pages import NOT_RECORDED, page_header
from lsl_core.interventions import (GRAMMAR, OPS, ORIGINAL, Condition, condition_label, generate_side_by_side,
                                    intervention_nulls, is_null, needs_donor, parse_condition)
from lsl_core.metrics.stats import PAIRED_DELTA_COLUMNS, TABLE1_METRIC_NAMES, paired_delta
from lsl_core.results import read_table

if TYPE_CHECKING:  # pragma: no cover
    from lsl_core.data.samples import Sample
    from lsl_core.model.lslm import LSLM

# The seed paper's Table 1 rows (after Original), in order: every registered op on Bottom3 and on All.
TABLE1_INTERVENTIONS: tuple[str, ...] = tuple(f"{op}:{target}" for op in OPS for target in ("bottom3", "all"))
# Table 1's default nulls: each paper row's, in order (python -m lsl_core table1 runs both).
TABLE1_NULLS: tuple[str, ...] = tuple(n for c in TABLE1_INTERVENTIONS for n, _ in intervention_nulls(c))
RESULTS_NAME = "table1"  # <out>/table1_interventions.parquet (read by results.load_results too) + <out>/table1.json
COLUMNS = (
    "sample_id", "accent", "condition", "title", "answer", "containment", "f1", "em", "agreement",
    "text_answer", "text_containment", "text_f1", "text_em", "n_frames", "frames", "tokens", "references",
    "donor_question",
)
# table1 metric columns: (column in df, name in the table)
_T1_METRICS = tuple(TABLE1_METRIC_NAMES.items())


def without_nulls(table: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """A Table 1 (table1 / table1_with_intervals of `rows`, indexed by title) without its null conditions' rows:
    the paper's rows for a bar chart, the nulls being drawn against their interventions (table1_nulls)."""
    null_titles = set(rows.loc[rows["condition"].map(is_null), "title"])
    return table[~table.index.isin(null_titles)]


def donor_questions(questions: Sequence[str], at: Sequence[int] | None = None) -> list[str | None]:
    """The donor of each sample's pairing-"other" nulls: the next question in the list (cyclic) that differs
    from its own, None when every question is the same. questions: a sample set's questions in order [n];
    at: the positions to answer for (default: every one) -> [len(at)]."""
    n = len(questions)
    out: list[str | None] = []
    for i in (range(n) if at is None else at):
        q = questions[i].strip()
        out.append(next((questions[(i + d) % n] for d in range(1, n) if questions[(i + d) % n].strip() != q), None))
    return out


def donors_for(sample_set, ids: Sequence[str]) -> list[str | None]:
    """The pairing-"other" donor of each sample id: the next different question of the whole set (a SampleSet,
    in its order), as the Benchmark page and its snippet choose it. -> [len(ids)]."""
    position = {sid: k for k, sid in enumerate(sample_set.ids())}
    missing = [i for i in ids if i not in position]
    if missing:
        raise LSLError(f"Samples {missing[:3]} are not in the sample set {getattr(sample_set, 'name', '')!r}.")
    return donor_questions(sample_set.questions(), [position[i] for i in ids])


def evaluate_interventions(model: "LSLM", samples: Iterable["Sample"], interventions: Sequence[Condition],
                           max_new_tokens: int = 32,
                           progress: Callable[[int, int], None] | None = None, *,
                           batched: bool = True, donors: Sequence[str | None] | None = None) -> pd.DataFrame:
    """Speech answers per sample: unedited ("original") and under each condition; columns COLUMNS.

    interventions: Intervention objects, label strings ('angle:bottom3@0'), or composed sequences.
    progress(done, total) is called after each sample (total = -1 when samples has no len()).
    Scores are fractions in [0, 1] (containment/EM 0 or 1; F1 and agreement token F1); NaN without references.
    batched: generate "original" and every condition of a sample in one batch (≈2.5× faster on CPU;
    see interventions.generate_conditions); False = one generation each, exactly as the app does.
    donors: per sample, the other question that conditions with pairing "other" edit with (default:
    donor_questions of the samples' questions; pass it when `samples` is a one-pass iterator).
    """
    conds = [parse_condition(c) for c in interventions]
    need_donor = needs_donor(conds)
    if need_donor and donors is None:
        if hasattr(samples, "questions"):  # a SampleSet: questions without loading audio
            donors = donor_questions(samples.questions())
        elif isinstance(samples, Sequence):
            donors = donor_questions([s.question for s in samples])
        else:
            raise LSLError("Conditions with pairing 'other' need each sample's donor question: pass donors= "
                           "(experiments.table1.donor_questions of the samples' questions) or a list of samples.")
    labels = [condition_label(c) for c in conds]
    if len(set(labels)) != len(labels):
        raise LSLError(f"Duplicate intervention conditions {labels}; list each condition once.")
    if ORIGINAL in labels:
        raise LSLError("'original' is reserved for the unedited speech answer; do not pass it as a condition.")
    try:
        total = len(samples)  # type: ignore[arg-type]
    except TypeError:
        total = -1
    rows: list[dict] = []
    for done, sample in enumerate(samples, 1):
        donor = donors[done - 1] if need_donor else None
        if need_donor and donor is None:
            raise LSLError(f"Sample {sample.id!r}: no other question in the sample set to pair its pairing-'other' "
                           "null with; use a set of at least two different questions.")
        sbs = generate_side_by_side(model, sample, conds, max_new_tokens, cascade=False, batched=batched,
                                    donor_question=donor)
        base = {
            "sample_id": sample.id, "accent": sample.accent, "text_answer": sbs.text.answer,
            "text_containment": sbs.text.containment, "text_f1": sbs.text.f1, "text_em": sbs.text.em,
            "references": " | ".join(sample.answers), "donor_question": donor or "",
        }
        for cond, a in ((ORIGINAL, sbs.speech), *((a.condition, a) for a in sbs.interventions)):
            rows.append({
                **base, "condition": cond, "title": "Original" if cond == ORIGINAL else a.title, "answer": a.answer,
                "containment": a.containment, "f1": a.f1, "em": a.em, "agreement": a.agreement,
                "n_frames": len(a.frames), "frames": ",".join(map(str, a.frames)),
                "tokens": " ".join(repr(t) for t in a.token_text),
            })
        if progress is not None:
            progress(done, total)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def table1(df: pd.DataFrame) -> pd.DataFrame:
    """Seed paper Table 1 layout from evaluate_interventions' rows.

    Index: condition titles, Original first, then the conditions in order of first appearance.
    Columns (percent, mean over samples): containment, F1, agreement (with the text answer),
    Δ containment, Δ F1, Δ agreement (row − Original), frames (mean edited frames), n (samples).
    """
    missing = [c for c in ("condition", "title", "containment", "f1", "agreement", "n_frames") if c not in df.columns]
    if missing:
        raise LSLError(f"table1 needs the columns of evaluate_interventions; missing {missing}.")
    if not (df["condition"] == ORIGINAL).any():
        raise LSLError("table1 needs the 'original' rows (the unedited speech answers) to compute Δ.")
    order = [ORIGINAL] + [c for c in dict.fromkeys(df["condition"]) if c != ORIGINAL]
    g = df.groupby("condition", sort=False)
    means = g[["containment", "f1", "agreement"]].mean() * 100.0  # percent
    out = pd.DataFrame(index=pd.Index(order, name="condition"))
    for col, name in _T1_METRICS:
        out[name] = means[col].reindex(order)
    for col, name in _T1_METRICS:
        out[f"Δ {name}"] = out[name] - out.loc[ORIGINAL, name]
    out["frames"] = g["n_frames"].mean().reindex(order)
    out["n"] = g.size().reindex(order).astype(int)
    titles = g["title"].first().reindex(order)
    out.index = pd.Index(list(titles), name="condition")
    return out


def table1_with_intervals(df: pd.DataFrame) -> pd.DataFrame:
    """table1(df) + the 95% bootstrap interval of every score and of every Δ (paired on samples) as
    <name>_lo / _hi columns, in percent (lsl_core.metrics.stats.condition_intervals), as the Benchmark
    page shows it."""
    from lsl_core.metrics.stats import condition_intervals

    return table1(df).join(condition_intervals(df), how="left")


def table1_nulls(df: pd.DataFrame) -> pd.DataFrame:
    """Each intervention against each of its nulls (intervention_nulls) found in evaluate_interventions' rows.

    One row per (condition, null) pair, both titles as columns, `tests` (what the null breaks), `layer` (the
    edit layer ℓ), then per metric (percent) the mean paired difference Δ = condition − null over the samples both
    have, its 95% bootstrap interval (Δ <name>_lo / _hi, paired on sample_id: metrics.stats.paired_delta) and n.
    A Δ whose interval holds 0 is an effect the null reaches too. Empty when no condition's null was run.
    """
    labels = list(dict.fromkeys(df["condition"]))
    titles = df.groupby("condition", sort=False)["title"].first()
    by_cond = {c: df[df["condition"] == c].set_index("sample_id") for c in labels}
    out = []
    for cond in labels:
        if cond == ORIGINAL:
            continue
        for null, tests in intervention_nulls(cond):
            if null in by_cond:
                out.append({"condition": titles[cond], "null": titles[null], "tests": tests,
                            "layer": parse_condition(cond)[0].layer, **paired_delta(by_cond[cond], by_cond[null])})
    return pd.DataFrame(out, columns=["condition", "null", "tests", "layer", *PAIRED_DELTA_COLUMNS])


def nulls_across(rows: pd.DataFrame, steps: dict[str, float] | None = None, min_checkpoints: int = 1,
                 layer: int | None = None) -> pd.DataFrame:
    """table1_nulls of each stored run x checkpoint (rows with `checkpoint` and, from results.load_results,
    `results` columns): its columns plus checkpoint, results and step, ordered by step (steps: checkpoint name ->
    training step, e.g. from the zoo's manifests; a checkpoint without one goes last, in order of appearance).
    A pair held by several runs of one checkpoint appears once (the run with the most samples, then the first).
    min_checkpoints: keep the (condition, null) pairs run on at least that many checkpoints; layer: only the pairs
    edited at that layer ℓ (default: every layer). Empty when no run holds a null."""
    keys = [c for c in ("results", "checkpoint") if c in rows.columns]
    if "checkpoint" not in keys:
        raise LSLError("nulls_across needs the stored rows' `checkpoint` column (table1 --out / evaluate write it).")
    out = []
    for _, g in rows.groupby(keys, sort=False):
        t = table1_nulls(g)
        if len(t):
            ck = g["checkpoint"].iloc[0]
            step = (steps or {}).get(ck, math.nan)
            out.append(t.assign(checkpoint=ck, results=g["results"].iloc[0] if "results" in g else "", step=step))
    if not out:
        return pd.DataFrame(columns=[*table1_nulls(rows.iloc[:0]).columns, "checkpoint", "results", "step"])
    both = pd.concat(out, ignore_index=True)
    # one point per checkpoint and pair: when several stored runs hold it (e.g. Table 1 and a layer sweep, both at
    # ℓ 0), the run with the most samples, then the first in order
    keep = both.sort_values("n", ascending=False, kind="stable").drop_duplicates(["checkpoint", "condition", "null"])
    both = both.loc[sorted(keep.index)]
    if layer is not None:
        both = both[both["layer"] == layer]
    both = both[both.groupby(["condition", "null"])["checkpoint"].transform("nunique") >= min_checkpoints]
    order = both.drop_duplicates("checkpoint").sort_values("step", kind="stable", na_position="last")["checkpoint"]
    return both.set_index("checkpoint").loc[list(order)].reset_index()


def nulls_markdown(t: pd.DataFrame, digits: int = 1) -> str:
    """A GitHub-markdown table of table1_nulls(df): Δ with its 95% interval per metric."""
    names = [n for _, n in _T1_METRICS]
    lines = ["| condition | null | what the null breaks | " + " | ".join(f"Δ {n} [95% CI]" for n in names) + " | n |",
             "|---|---|---|" + "---:|" * (len(names) + 1)]
    for _, r in t.iterrows():
        cells = [f"{r[f'Δ {n}']:+.{digits}f} [{r[f'Δ {n}_lo']:+.{digits}f}, {r[f'Δ {n}_hi']:+.{digits}f}]"
                 if not math.isnan(r[f"Δ {n}"]) else "–" for n in names]
        lines.append(f"| {r['condition']} | {r['null']} | {r['tests']} | " + " | ".join(cells) + f" | {int(r['n'])} |")
    return "\n".join(lines)


def text_reference(df: pd.DataFrame) -> dict[str, float]:
    """Text-input scores (percent, one per sample): the upper reference the speech rows are compared with."""
    per_sample = df.drop_duplicates("sample_id")
    return {name: float(per_sample[f"text_{col}"].mean() * 100.0) for col, name in _T1_METRICS[:2]}


def table1_markdown(t: pd.DataFrame, digits: int = 1) -> str:
    """A GitHub-markdown table of table1(df) (signed Δ columns)."""
    cols = list(t.columns)
    lines = ["| " + " | ".join([t.index.name or "", *cols]) + " |",
             "|" + "---|" + "---:|" * len(cols)]

    def fmt(col: str, v: float) -> str:
        if isinstance(v, float) and math.isnan(v):
            return "–"
        if col == "n":
            return str(int(v))
        if col == "frames":
            return f"{v:.1f}"
        return f"{v:+.{digits}f}" if col.startswith("Δ") else f"{v:.{digits}f}"

    for name, row in t.iterrows():
        lines.append("| " + " | ".join([str(name), *(fmt(c, row[c]) for c in cols)]) + " |")
    return "\n".join(lines)


def spread_samples(samples: Sequence["Sample"], n: int) -> list["Sample"]:
    """n samples with distinct questions (in set order), the i-th question spoken by the i-th accent in rotation.

    Falls back to the question's first sample when that accent is missing; deterministic.
    """
    accents = list(dict.fromkeys(s.accent for s in samples))
    by_question: dict[str, list] = {}
    for s in samples:
        by_question.setdefault(s.question, []).append(s)
    out = []
    for i, group in enumerate(by_question.values()):
        if len(out) == n:
            break
        want = accents[i % len(accents)] if accents else ""
        out.append(next((s for s in group if s.accent == want), group[0]))
    return out


# =============================================================================== the results page
def markdown_page(df: pd.DataFrame, meta: dict) -> str:
    """docs/results/interventions.md from evaluate_interventions' rows and the run's meta.

    meta: command, code_version, checkpoint (name, strategy, step, digest, lora: merged | peft | none),
    set, select, n, max_new_tokens, device, threads, seconds (load, evaluation); optional render
    (the `report interventions` provenance when re-rendered from stored rows).
    """
    t = table1(df)
    ref = text_reference(df)
    n = int(df["sample_id"].nunique())
    ck = meta["checkpoint"]
    lora = {"merged": "; LoRA merged into the weights", "peft": "; LoRA kept as a peft wrapper (unmerged)"}.get(
        ck.get("lora", "none"), "")
    how = "distinct questions, voices in rotation" if meta["select"] == "spread" else "the first ones"
    voices = ", ".join(sorted(set(df["accent"]))) or "no accent labels"
    layers = sorted({iv.layer for c in dict.fromkeys(df["condition"]) if c != ORIGINAL for iv in parse_condition(c)})
    render = meta.get("render")
    lines = page_header(f"Interventions: Table 1 — {ck['name']}",
                        render["command"] if render else meta["command"],
                        render["code_version"] if render else meta.get("code_version", NOT_RECORDED),
                        source=meta["command"] if render else None,
                        source_version=meta.get("code_version", NOT_RECORDED) if render else None)
    lines += [
        f"- checkpoint: `{ck['name']}` (strategy {ck['strategy']}, step {ck['step']}, digest `{ck['digest']}`){lora}",
        f"- samples: {n} of `{meta['set']}` ({how}): {voices}; greedy decoding, "
        f"max_new_tokens={meta['max_new_tokens']}; device {meta['device']}, {meta['threads']} threads",
        f"- interventions edit the speech frames at the input of layer(s) ℓ = {', '.join(map(str, layers)) or '–'} "
        "(0 = the LLM input) during prefill only; targets come from the alignment path of the unedited states "
        "(`lsl_core/interventions/`)",
        f"- text input (reference): containment {ref['containment']:.1f}, F1 {ref['F1']:.1f}",
        f"- runtime: load {meta['seconds']['load']:.0f} s, evaluation {meta['seconds']['evaluation']:.0f} s",
        "",
        "Scores in percent, mean over samples: containment (a gold answer occurs in the answer), token F1 vs the "
        "gold answers, agreement = token F1 between the speech answer and the text-input answer; "
        "Δ = row − Original; frames = mean number of edited speech frames.",
        "",
        table1_markdown(t),
        "",
        f"One sample moves a mean by up to {100 / n:.0f} points of containment/F1/agreement "
        f"(N={n}): read differences of that size as noise, not as an effect of the intervention.",
        "",
    ]
    from lsl_core.experiments.layer_profile import layer_profile, profile_markdown

    profile = layer_profile(df)
    if len(profile):
        lines += [
            "## Across layers",
            "",
            "The same edits at the input of decoder layer ℓ (0 = the LLM input; prefill only, the KV cache carries "
            "the edit into decoding), each against the unedited speech answer and against its nulls run at the "
            "same layer: Δ agreement in points, mean over the same samples with its 95% bootstrap interval "
            "(paired on samples; `experiments.layer_profile`).",
            "",
            profile_markdown(profile),
            "",
        ]
    nulls = table1_nulls(df)
    if len(nulls):
        lines += [
            "## Each intervention against its nulls",
            "",
            "The same edit with one ingredient broken (`interventions.config`, docs/controls.md): **Random3** edits "
            "the path frames of 3 tokens drawn at random instead of the 3 least aligned; **shuffled pairing** edits "
            "the same frames but gives each the text state of another token of the question (a random derangement); "
            "**other question** plans and edits with the next question's transcript instead of this one's "
            "(the next different question of these samples). Δ = condition − null in points, mean over the "
            "same samples with its 95% bootstrap interval (paired on samples); an interval that holds 0 "
            "means the null does as well, so the ingredient it breaks is not shown to matter.",
            "",
            nulls_markdown(nulls),
            "",
        ]
    return "\n".join(lines)


def render_stored(folder: str | Path, name: str, render: dict) -> str:
    """The page from table1's stored rows (<folder>/<name>_interventions.parquet + <name>.json): nothing recomputed."""
    folder = Path(folder)
    rows, meta_file = folder / f"{name}_interventions.parquet", folder / f"{name}.json"
    if not (rows.is_file() and meta_file.is_file()):
        raise LSLError(f"No stored Table 1 results {rows.name} + {meta_file.name} in {folder}; write them with "
                       f"`python -m lsl_core table1 --out {folder}`.")
    meta = json.loads(meta_file.read_text())["meta"]
    return markdown_page(read_table(rows), {**meta, "render": render})


# =============================================================================== the command
def register(sub) -> None:
    from lsl_core.interventions import ops_help

    p = sub.add_parser("table1", help="Table 1: speech answers under each intervention on one checkpoint",
                       description="Table 1 (interventions) on a checkpoint and a sample set: per-sample rows "
                                   "(parquet) and the results page (markdown). Ops: " + ops_help().replace("\n", "; "))
    p.add_argument("--checkpoint", default=None,
                   help="manifest.json or its folder (default: loading.default_checkpoint(), the latest shipped lora)")
    p.add_argument("--set", default="sd-qa-mini", help="sample set spec for data.sets.load_sample_set")
    p.add_argument("--n", type=int, default=20, help="number of samples")
    p.add_argument("--select", choices=("spread", "first"), default="spread",
                   help="spread: N distinct questions, voices/accents in rotation; first: the first N samples")
    p.add_argument("--max-new-tokens", type=int, default=24, help="greedy answer length")
    p.add_argument("--interventions", nargs="+", default=list(TABLE1_INTERVENTIONS + TABLE1_NULLS),
                   help=f"conditions ({GRAMMAR}; join several with '+'); default: every op on bottom3 and all, "
                        "then their nulls (random3, :shuffled, :other; the page compares each with its null)")
    p.add_argument("--layers", nargs="+", type=int, default=None, metavar="L",
                   help="run each condition at each of these layers ℓ (its own @ℓ replaced; 0 = the LLM input), "
                        "e.g. --layers 0 4 8 12: the page gets the interventions across layers "
                        "(experiments.layer_profile)")
    add_device_args(p, device="cpu", threads=2, device_help="cpu or cuda (the shipped page: cpu, 2 threads)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the per-sample rows (<name>_interventions.parquet, read by the Benchmark page "
                        "and `report interventions --name`) and <name>.json")
    p.add_argument("--name", default=RESULTS_NAME,
                   help=f"file prefix in --out (default {RESULTS_NAME!r}, the shipped Table 1 run; another name "
                        "keeps several runs in one results folder, e.g. one per checkpoint)")
    p.add_argument("--markdown", type=Path, default=None, help="write the results page here (default: print it)")
    p.add_argument("--csv", type=Path, default=None, help="also write the per-sample rows as CSV")
    p.add_argument("--no-merge-lora", dest="merge_lora", action="store_false",
                   help="keep the LoRA as a peft wrapper (default: merge it into the weights; unmerged peft "
                        "layers make CPU decoding 2-3x slower, the function is the same)")
    p.set_defaults(func=main)


def main(args) -> int:
    import sys

    import torch

    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.pages import provenance, write_page
    from lsl_core.model.loading import default_checkpoint, load_checkpoint, read_manifest

    meta = provenance(getattr(args, "argv", None))
    if args.layers:
        from lsl_core.experiments.layer_profile import at_layers

        args.interventions = at_layers(args.interventions, args.layers)
    from lsl_core.interventions.config import parse_condition

    for cond in args.interventions:  # a typo is refused before the model loads
        parse_condition(cond)
    manifest = read_manifest(args.checkpoint or default_checkpoint())
    sset = load_sample_set(args.set)  # a typo in --set is refused before the model loads
    t0 = time.perf_counter()
    model = load_checkpoint(manifest, device=args.device, merge_lora=args.merge_lora)
    records = [sset.record(i) for i in range(len(sset))]  # metadata only: pick first, then decode what is used
    picked = spread_samples(records, args.n) if args.select == "spread" else records[: args.n]
    samples = [sset[r.id] for r in picked]
    if not samples:
        raise LSLError(f"Sample set {args.set!r} is empty.")
    t1 = time.perf_counter()
    df = evaluate_interventions(model, samples, args.interventions, args.max_new_tokens,
                                progress=lambda d, n: print(f"  {d}/{n} samples", file=sys.stderr, flush=True))
    t2 = time.perf_counter()
    lora = "none" if not manifest.lora else ("peft" if hasattr(model.llm, "get_base_model") else "merged")
    meta.update({
        "checkpoint": {"name": manifest.name, "strategy": manifest.strategy, "step": manifest.step,
                       "digest": model.digest, "lora": lora},
        "set": args.set, "select": args.select, "n": len(samples), "max_new_tokens": args.max_new_tokens,
        "interventions": list(args.interventions), "device": args.device, "threads": torch.get_num_threads(),
        "seconds": {"load": t1 - t0, "evaluation": t2 - t1},
    })
    md = markdown_page(df, meta)
    if args.out:
        from lsl_core.experiments.voicebench_run import write_atomically

        args.out.mkdir(parents=True, exist_ok=True)
        df.insert(0, "checkpoint", manifest.name)  # the same layout as evaluate --intervention writes
        # each file complete or the previous one (a crash mid-write must not tear the stored run)
        write_atomically(args.out / f"{args.name}_interventions.parquet", lambda p: df.to_parquet(p, index=False))
        write_atomically(args.out / f"{args.name}.json", lambda p: p.write_text(json.dumps({"meta": meta}, indent=1)
                                                                                 + "\n"))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(args.csv, index=False)
    if args.markdown:
        write_page(args.markdown, md)
        print(f"wrote {args.markdown}", file=sys.stderr)
    else:
        print(md)
    return 0
