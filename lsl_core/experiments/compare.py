"""Two checkpoints on the same clips: paired differences of agreement, cascade agreement and their ratio.

    python -m lsl_core compare --results results/next60-zoo --results results/exp/eval-next60 \
        --base lora-step2900 --other ctx-lora-step2900

Reads `evaluate`'s per-sample rows (<results>/<name>_samples.parquet) and pairs the two checkpoints on
sample_id (two checkpoints of one name, e.g. two seeds' runs, as NAME@N: the one in the N-th --results
folder). As in evaluate's headline, the voices of a question are averaged first and questions are
resampled; one bootstrap replicate draws the same questions for both checkpoints, so the interval of a
difference is the paired one (narrower than comparing two separate intervals when the clips agree).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from lsl_core.data.synth import UNSEEN_VOICE
from lsl_core.errors import LSLError
from lsl_core.experiments.evaluate import check_unseen_voice, ratio_of_means
from lsl_core.results import read_table

COLUMNS = ("agreement", "cascade_agreement")
MEASURES = ("agreement", "cascade_agreement", "ratio")  # reported per checkpoint and as other − base


def _ratio_stats(r: np.ndarray) -> np.ndarray:
    """Question rows [n_q, 4] = (agreement, cascade) of base, then of other -> [9]: base, other and
    other − base of agreement, cascade agreement and their ratio (means over the rows; a ratio is NaN where
    its cascade mean is 0)."""
    m = r.mean(axis=0)  # [4]
    base = np.array([m[0], m[1], ratio_of_means(r[:, :2])])
    other = np.array([m[2], m[3], ratio_of_means(r[:, 2:])])
    return np.concatenate([base, other, other - base])


def paired_difference(samples: pd.DataFrame, base: str, other: str,
                      unseen_voice: str = UNSEEN_VOICE) -> pd.DataFrame:
    """Per voice group (seen, unseen_voice): each checkpoint's agreement, cascade agreement and ratio, and
    other − base, each with a paired 95% bootstrap interval over questions.

    samples: evaluate's per-sample rows (columns checkpoint, sample_id, question, voice, agreement,
    cascade_agreement), both checkpoints included. Clips are paired on sample_id; one id holding another
    question (or voice) in the two checkpoints' rows is refused (they were evaluated on different sample sets).
    Returns one row per group with n_q, n_clips (paired), n_only_base / n_only_other (the clips of one checkpoint
    that the other lacks, left out; also in the frame's attrs) and, for each measure m in MEASURES: base_m, other_m,
    delta_m and delta_m_lo / delta_m_hi (fractions).
    """
    from lsl_core.metrics.stats import bootstrap_ci

    names = list(dict.fromkeys(samples["checkpoint"])) if "checkpoint" in samples else []
    picked = {ck: checkpoint_rows(samples, ck) for ck in (base, other)}
    for ck, rows in picked.items():
        if rows.empty:
            held = ", ".join(names) or "none"
            raise LSLError(f"compare: checkpoint '{ck}' is not in the results (they hold: {held}). "
                           "Pass a --results folder that `evaluate` wrote for it.")
    missing = [c for c in COLUMNS if c not in samples.columns]
    if missing:
        raise LSLError(f"compare: the results lack {', '.join(missing)}; run `evaluate` without --no-cascade.")
    for ck, rows in picked.items():
        if rows["sample_id"].duplicated().any():
            raise LSLError(f"compare: checkpoint '{ck}' has two rows for one clip: two of the results folders hold "
                           f"a checkpoint of that name. Write it '{ck}@N' for the one in the N-th --results folder "
                           "(from 1), or pass only the folder with the one you mean.")
    a = picked[base][["sample_id", "question", "voice", *COLUMNS]]
    b = picked[other][["sample_id", "question", "voice", *COLUMNS]]
    joined = a.set_index("sample_id").join(b.set_index("sample_id"), how="inner", rsuffix="_other")  # shared clips
    if joined.empty:
        raise LSLError(f"compare: '{base}' and '{other}' share no clips (sample_id); evaluate both on the same "
                       "sample set.")
    clash = joined[(joined["question"] != joined["question_other"]) | (joined["voice"] != joined["voice_other"])]
    if len(clash):
        sid = clash.index[0]
        raise LSLError(f"compare: clip {sid!r} holds a different question (or voice) in '{base}' ("
                       f"{clash['question'].iloc[0]!r}) and in '{other}' ({clash['question_other'].iloc[0]!r}), and "
                       f"so do {len(clash) - 1} more: the two were evaluated on different sample sets. Evaluate both "
                       "on the same --samples.")
    only = {"n_only_base": int((~a["sample_id"].isin(joined.index)).sum()),
            "n_only_other": int((~b["sample_id"].isin(joined.index)).sum())}
    rows = []
    for group, sub in (("seen", joined[joined["voice"] != unseen_voice]),
                       (unseen_voice, joined[joined["voice"] == unseen_voice])):
        if sub.empty:
            continue
        cols = [*COLUMNS, *(f"{c}_other" for c in COLUMNS)]
        q = sub.groupby("question", sort=False)[cols].mean().to_numpy(np.float64)  # [n_q, 4]
        ci = bootstrap_ci(q, _ratio_stats)
        rec: dict = {"voice": group, "n_q": len(q), "n_clips": len(sub), **only}
        for i, m in enumerate(MEASURES):
            rec[f"base_{m}"], rec[f"other_{m}"] = ci.estimate[i], ci.estimate[3 + i]
            rec[f"delta_{m}"], rec[f"delta_{m}_lo"], rec[f"delta_{m}_hi"] = (
                ci.estimate[6 + i], ci.low[6 + i], ci.high[6 + i])
        rows.append(rec)
    out = pd.DataFrame(rows)
    out.attrs.update(only, n_clips=len(joined))
    return out


def checkpoint_rows(samples: pd.DataFrame, ref: str) -> pd.DataFrame:
    """The rows of one checkpoint: `ref` is its name, or NAME@N for the one read from the N-th results folder
    (read_samples' `results` column, from 1), which tells apart checkpoints of one name, e.g. two seeds' runs."""
    if "checkpoint" not in samples:
        return samples.iloc[:0]
    name, _, n = ref.rpartition("@")
    if name and n.isdigit() and "results" in samples and not (samples["checkpoint"] == ref).any():
        return samples[(samples["checkpoint"] == name) & (samples["results"] == int(n))]
    return samples[samples["checkpoint"] == ref]


def read_samples(folders: list[Path], name: str = "checkpoints") -> pd.DataFrame:
    """evaluate's per-sample rows from one or more results folders, concatenated, with a column `results`: the
    folder's position in `folders`, from 1."""
    parts = []
    for i, f in enumerate(folders, 1):
        p = Path(f) / f"{name}_samples.parquet"
        if not p.is_file():
            raise LSLError(f"compare: {p} not found; pass a folder that `evaluate --out` wrote (or set --name).")
        parts.append(read_table(p).assign(results=i))
    return pd.concat(parts, ignore_index=True)


def format_table(d: pd.DataFrame, base: str, other: str) -> str:
    """Markdown table: per group, base and other, and other − base with its paired interval (percent / x)."""
    head = (f"| voice | questions | agreement {base} → {other} | Δ agreement | cascade | Δ cascade | "
            f"e2e / cascade | Δ ratio |\n|---|--:|--:|--:|--:|--:|--:|--:|")
    lines = [head]
    for _, r in d.iterrows():
        def pct(m: str) -> str:
            return f"{100 * r[f'delta_{m}']:+.1f} [{100 * r[f'delta_{m}_lo']:+.1f}, {100 * r[f'delta_{m}_hi']:+.1f}]"
        lines.append(
            f"| {r['voice']} | {r['n_q']} | {100 * r['base_agreement']:.1f} → {100 * r['other_agreement']:.1f} | "
            f"{pct('agreement')} | "
            f"{100 * r['base_cascade_agreement']:.1f} → {100 * r['other_cascade_agreement']:.1f} | "
            f"{pct('cascade_agreement')} | {r['base_ratio']:.2f}× → {r['other_ratio']:.2f}× | "
            f"{r['delta_ratio']:+.2f} [{r['delta_ratio_lo']:+.2f}, {r['delta_ratio_hi']:+.2f}] |")
    return "\n".join(lines)


def register(subparsers) -> None:
    """Add `compare` to `python -m lsl_core`."""
    p = subparsers.add_parser("compare", help="two evaluated checkpoints on the same clips: paired differences",
                              description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, action="append", required=True,
                   help="a folder `evaluate --out` wrote (repeatable: the two checkpoints may sit in different ones)")
    p.add_argument("--base", required=True, help="checkpoint name to compare against (NAME@N: the one in the N-th "
                   "--results folder, when two hold that name)")
    p.add_argument("--other", required=True, help="checkpoint name compared with --base (NAME@N as for --base)")
    p.add_argument("--name", default="checkpoints", help="file name prefix of the results (evaluate --name)")
    p.add_argument("--unseen-voice", default=None,
                   help=f"the voice held out of training (default {UNSEEN_VOICE}; one you give must be in the results)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    rows = read_samples(args.results, args.name)
    check_unseen_voice(args.unseen_voice, rows["voice"], "results")
    d = paired_difference(rows, args.base, args.other, args.unseen_voice or UNSEEN_VOICE)
    if args.base == args.other:  # a typo on the command line (after the check of two of one name; the library
        # allows it: the app's sanity check)
        raise LSLError(f"compare: --base and --other are both '{args.base}'; a checkpoint against itself differs by "
                       "0. Name two checkpoints (NAME@N picks the one of the N-th --results folder when names repeat).")
    if d.attrs["n_only_base"] or d.attrs["n_only_other"]:  # said, not silently dropped
        print(f"note: the two results hold different clips: paired on the {d.attrs['n_clips']} clips both have; "
              f"left out {d.attrs['n_only_base']} only in {args.base} and {d.attrs['n_only_other']} only in "
              f"{args.other}.")
    print(f"{args.other} − {args.base}, paired on the same clips (95% bootstrap over questions; agreement in %):")
    print(format_table(d, args.base, args.other))
    return 0
