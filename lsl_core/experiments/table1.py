"""Intervention benchmark: speech answers under each intervention, scored, in the seed paper's Table 1 layout.

evaluate_interventions(model, samples, interventions) -> DataFrame, one row per sample × condition
    ("original" = the unedited speech answer, then one row per intervention condition), each with the
    sd-qa scores (containment, F1, EM vs the references) and the agreement with the text answer.
table1(df) -> DataFrame, rows Original, Angle·Bottom3, Angle·All, Length·Bottom3, Length·All,
    Calibrate·…, columns containment / F1 / agreement (percent, mean over samples) and their Δ vs Original.

One command regenerates docs/results/interventions.md (20 samples, 24 new tokens, < 10 min on 2 CPU cores):

    .venv/bin/python -m lsl_core.intervention_eval --n 20 --max-new-tokens 24 --out docs/results/interventions.md
"""

from __future__ import annotations

import argparse
import math
import time
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import pandas as pd

from lsl_core.errors import LSLError
from lsl_core.interventions import Condition, condition_label, generate_side_by_side, parse_condition

if TYPE_CHECKING:  # pragma: no cover
    from lsl_core.data.samples import Sample
    from lsl_core.model.lslm import LSLM

# The seed paper's Table 1 rows (after Original), in order.
TABLE1_INTERVENTIONS: tuple[str, ...] = (
    "angle:bottom3", "angle:all", "length:bottom3", "length:all", "calibrate:bottom3", "calibrate:all",
)
ORIGINAL = "original"
COLUMNS = (
    "sample_id", "accent", "condition", "title", "answer", "containment", "f1", "em", "agreement",
    "text_answer", "text_containment", "text_f1", "text_em", "n_frames", "frames", "tokens", "references",
)
# table1 metric columns: (column in df, name in the table)
_T1_METRICS = (("containment", "containment"), ("f1", "F1"), ("agreement", "agreement"))


def evaluate_interventions(model: "LSLM", samples: Iterable["Sample"], interventions: Sequence[Condition],
                           max_new_tokens: int = 32,
                           progress: Callable[[int, int], None] | None = None, *,
                           batched: bool = True) -> pd.DataFrame:
    """Speech answers per sample: unedited ("original") and under each condition; columns COLUMNS.

    interventions: Intervention objects, label strings ('angle:bottom3@0'), or composed sequences.
    progress(done, total) is called after each sample (total = -1 when samples has no len()).
    Scores are fractions in [0, 1] (containment/EM 0 or 1; F1 and agreement token F1); NaN without references.
    batched: generate "original" and every condition of a sample in one batch (≈2.5× faster on CPU;
    see interventions.generate_conditions); False = one generation each, exactly as the app does.
    """
    conds = [parse_condition(c) for c in interventions]
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
        sbs = generate_side_by_side(model, sample, conds, max_new_tokens, cascade=False, batched=batched)
        base = {
            "sample_id": sample.id, "accent": sample.accent, "text_answer": sbs.text.answer,
            "text_containment": sbs.text.containment, "text_f1": sbs.text.f1, "text_em": sbs.text.em,
            "references": " | ".join(sample.answers),
        }
        for cond, a in ((ORIGINAL, sbs.speech), *((a.condition, a) for a in sbs.interventions)):
            rows.append({
                **base, "condition": cond, "title": "Original" if cond == ORIGINAL else a.title, "answer": a.answer,
                "containment": a.containment, "f1": a.f1, "em": a.em, "agreement": a.agreement,
                "n_frames": len(a.frames), "frames": ",".join(map(str, a.frames)),
                "tokens": " ".join(repr(sbs.tokens[j]) for j in a.tokens) if sbs.tokens else "",
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


# =============================================================================== CLI: the results page
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lsl_core.intervention_eval",
                                description="Table 1 (interventions) on a checkpoint and a sample set -> markdown.")
    p.add_argument("--checkpoint", default=None,
                   help="manifest.json or its folder (default: loading.default_checkpoint(), the latest shipped lora)")
    p.add_argument("--set", default="sd-qa-mini", help="sample set name for data.sets.load_sample_set")
    p.add_argument("--n", type=int, default=20, help="number of samples")
    p.add_argument("--select", choices=("spread", "first"), default="spread",
                   help="spread: N distinct questions, voices/accents in rotation; first: the first N samples")
    p.add_argument("--max-new-tokens", type=int, default=24, help="greedy answer length")
    p.add_argument("--interventions", nargs="+", default=list(TABLE1_INTERVENTIONS),
                   help="conditions, e.g. angle:bottom3 length:all@4:distance 'angle:bottom3+length:bottom3'")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="write the markdown page here (default: print it)")
    p.add_argument("--csv", default=None, help="also write the per-sample rows as CSV")
    p.add_argument("--no-merge-lora", dest="merge_lora", action="store_false",
                   help="keep the LoRA as a peft wrapper (default: merge it into the weights; unmerged peft "
                        "layers make CPU decoding 2-3x slower, the function is the same)")
    return p


def main(argv: list[str] | None = None) -> int:
    import sys

    import torch

    from lsl_core.data.sets import load_sample_set
    from lsl_core.model.loading import default_checkpoint, load_checkpoint, read_manifest

    args = _parser().parse_args(argv)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    ck = args.checkpoint or default_checkpoint()
    manifest = read_manifest(ck)
    t0 = time.perf_counter()
    model = load_checkpoint(manifest, device=args.device)
    merged = bool(args.merge_lora and hasattr(model.llm, "merge_and_unload"))
    if merged:  # this CLI owns the model: fold W + BA into W once (same function, no per-call LoRA branch)
        model.llm = model.llm.merge_and_unload()
    samples = list(load_sample_set(args.set))
    samples = spread_samples(samples, args.n) if args.select == "spread" else samples[: args.n]
    if not samples:
        raise LSLError(f"Sample set {args.set!r} is empty.")
    t1 = time.perf_counter()
    df = evaluate_interventions(model, samples, args.interventions, args.max_new_tokens,
                                progress=lambda d, n: print(f"  {d}/{n} samples", file=sys.stderr, flush=True))
    t2 = time.perf_counter()
    t = table1(df)
    ref = text_reference(df)
    if args.csv:
        df.to_csv(args.csv, index=False)
    cmd = "python -m lsl_core.intervention_eval " + " ".join(argv if argv is not None else sys.argv[1:])
    how = "distinct questions, voices in rotation" if args.select == "spread" else "the first ones"
    voices = ", ".join(sorted({s.accent for s in samples}))
    md = "\n".join([
        "# Interventions: Table 1 on the shipped checkpoint",
        "",
        "Generated by",
        "",
        "```",
        f".venv/bin/{cmd.strip()}",
        "```",
        "",
        f"- checkpoint: `{manifest.name}` (strategy {manifest.strategy}, step {manifest.step}, "
        f"digest `{model.digest}`)" + ("; LoRA merged into the weights for speed" if merged else ""),
        f"- samples: {len(samples)} of `{args.set}` ({how}): {voices}; greedy decoding, "
        f"max_new_tokens={args.max_new_tokens}; device {args.device}, {torch.get_num_threads()} threads",
        "- interventions edit the speech frames at the LLM input (layer 0 unless marked @ℓ) during prefill only; "
        "targets come from the cosine alignment path of the unedited states (see `lsl_core/interventions.py`)",
        f"- text input (reference): containment {ref['containment']:.1f}, F1 {ref['F1']:.1f}",
        f"- runtime: load {t1 - t0:.0f} s, evaluation {t2 - t1:.0f} s",
        "",
        "Scores in percent, mean over samples: containment (a gold answer occurs in the answer), token F1 vs the "
        "gold answers, agreement = token F1 between the speech answer and the text-input answer; "
        "Δ = row − Original; frames = mean number of edited speech frames.",
        "",
        table1_markdown(t),
        "",
        f"One sample moves a mean by up to {100 / len(samples):.0f} points of containment/F1/agreement "
        f"(N={len(samples)}): read differences of that size as noise, not as an effect of the intervention.",
        "",
    ])
    if args.out:
        from pathlib import Path

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        print(md)
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    from lsl_core.errors import LSLError as _E

    try:
        raise SystemExit(main())
    except _E as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2)
