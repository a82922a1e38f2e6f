"""`python -m lsl_core analyze`: checkpoint(s) x sample set -> per-sample metrics (Parquet) + aggregates (JSON).

analyze_checkpoints(manifests, samples) is the sweep itself (the CLI and the app's Checkpoints page
both call it): each checkpoint is loaded in turn (or reused), its samples analyzed with the model
lock taken per sample, and released.

Scales out by sharding samples: every process takes samples i with i % num_shards == shard. The shard
comes from --shard/--num-shards or from the launcher's RANK/WORLD_SIZE (torchrun, `accelerate launch`),
and each shard writes its own file; `--merge` concatenates them (and combines the aggregates).

    python -m lsl_core analyze --checkpoint assets/checkpoints/... --samples sd-qa-mini --out results/a.parquet
    torchrun --nproc-per-node 8 -m lsl_core analyze --zoo ckpts/ --samples voicebench:/data/sd-qa --out r.parquet
    python -m lsl_core analyze --merge r.parquet
    python -m lsl_core analyze --controls --samples sd-qa-mini --limit 50   # + matched vs mismatched, retrieval
    python -m lsl_core analyze --zoo assets/checkpoints --samples sd-qa-mini --limit 100 \\
        --out assets/results/analysis.parquet --markdown docs/results/alignment.md
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lsl_core.analysis import AnalysisOptions, analyze_set
from lsl_core.cli import add_device_args
from lsl_core.errors import LSLError
from lsl_core.experiments.pages import NOT_RECORDED, page_header
from lsl_core.model.lslm import locked_items
from lsl_core.results import CHECKPOINT_KEYS, checkpoint_means, read_table

# the alignment page's columns: means over samples of each checkpoint (layers 1..L)
PAGE_COLUMNS = ("seq_cos_mean", "aps_cos", "spearman_cos_mean", "consistency_mean", "seq_dist_mean", "aps_dist",
                "cka_diag_mean", "cka_null_diag_mean", "cka_above_null_frac")


# =============================================================================== the sweep
@dataclass
class CheckpointSweep:
    """analyze_checkpoints' output."""

    rows: pd.DataFrame  # one row per checkpoint x sample: SampleAnalysis.scalars() + voice, question, checkpoint keys
    aggregates: dict = field(default_factory=dict)  # checkpoint name -> n, curves, CKA means (JSON-ready)
    notes: list[str] = field(default_factory=list)  # skipped samples / checkpoints, one line each


def analyze_checkpoints(manifests: Sequence, samples: Sequence, options: AnalysisOptions = AnalysisOptions(), *,
                        device: str | None = None, loaded: dict | None = None,
                        progress: Callable[[object, int, int, str], None] | None = None,
                        skip_failed: bool = False) -> CheckpointSweep:
    """Alignment metrics for every checkpoint over the same samples.

    manifests: CheckpointManifest list (loaded one after the other and released); loaded: manifest
    root -> an already loaded LSLM to reuse. progress(manifest, i, total, sample_id) after each
    sample. skip_failed: a checkpoint that fails to load or analyze is reported in `notes` and
    skipped (the app); otherwise the error propagates (the CLI). Samples that fail with a user error
    (bad audio) are always skipped with a note, as analyze_set does.
    """
    from lsl_core.model.loading import load_checkpoint

    frames, aggregates, notes = [], {}, []
    total = len(samples)
    for m in manifests:
        try:
            model = (loaded or {}).get(m.root) or load_checkpoint(m, device=device)
        except Exception as exc:  # noqa: BLE001 - one bad checkpoint must not stop the app's sweep
            if not skip_failed:
                raise
            notes.append(f"{m.name}: not loaded ({exc})")
            continue
        report = (lambda i, t, sid, m=m: progress(m, i, t, sid)) if progress else None
        gen = locked_items(samples, model.lock)
        try:
            res = analyze_set(model, gen, options, progress=report, total=total)
        except LSLError as exc:
            if not skip_failed:
                raise
            notes.append(f"{m.name}: {exc}")
            continue
        finally:
            gen.close()
        notes += [f"{m.name}: {e}" for e in res.errors]
        frames.append(res.rows.assign(checkpoint=m.name, family=m.family, strategy=m.strategy, step=m.step))
        aggregates[m.name] = {
            "n": res.n, "family": m.family, "strategy": m.strategy, "step": m.step, "path": options.path,
            "mean_seq_cos": res.mean_seq_cos.tolist(), "mean_seq_dist": res.mean_seq_dist.tolist(),
            "mean_cka": None if res.mean_cka is None else np.asarray(res.mean_cka).tolist(),
            "pooled_cka": None if res.pooled_cka is None else np.asarray(res.pooled_cka).tolist(),
            "errors": res.errors,
        }
        del model
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return CheckpointSweep(rows, aggregates, notes)


# =============================================================================== shards
def shard_of(args) -> tuple[int, int]:
    """(shard, num_shards) from flags or the distributed launcher's environment."""
    n = args.num_shards if args.num_shards is not None else int(os.environ.get("WORLD_SIZE", "1"))
    i = args.shard if args.shard is not None else int(os.environ.get("RANK", "0"))
    if n < 1 or not 0 <= i < n:
        raise LSLError(f"--shard must be in [0, {n}) with --num-shards >= 1, got shard {i} of {n}.")
    return i, n


def shard_path(out: Path, i: int, n: int) -> Path:
    """The file shard i of n writes: `out` itself for one shard, else `<stem>.shard-00i-of-00n<suffix>`."""
    return out if n == 1 else out.with_name(f"{out.stem}.shard-{i:03d}-of-{n:03d}{out.suffix}")


def merge_aggregates(parts: list[dict]) -> dict:
    """Combine shard aggregates: n summed, mean curves and mean CKA weighted by n (pooled CKA is per shard,
    so the merged file leaves it out and says so in `errors`)."""
    out: dict = {}
    for part in parts:
        for name, a in part.items():
            if name == "meta":
                continue
            o = out.setdefault(name, {**{k: a[k] for k in ("family", "strategy", "step")}, "n": 0, "_sums": {},
                                      "errors": []})
            o["n"] += a["n"]
            for k in ("mean_seq_cos", "mean_seq_dist", "mean_cka"):
                if a.get(k) is not None:
                    w, s = o["_sums"].get(k, (0, 0.0))
                    o["_sums"][k] = (w + a["n"], s + a["n"] * np.asarray(a[k], dtype=np.float64))
            o["errors"] += a.get("errors", [])
    for o in out.values():
        sums = o.pop("_sums")
        for k in ("mean_seq_cos", "mean_seq_dist", "mean_cka"):
            o[k] = (sums[k][1] / sums[k][0]).tolist() if k in sums else None
        o["pooled_cka"] = None
        o["errors"].append("pooled CKA is computed per shard and left out of merged results; run one shard for it")
    return out


def merge_shards(out: Path) -> Path:
    """Concatenate `<stem>.shard-*-of-NNN.parquet` into `out` and combine their `.json` aggregates beside it.

    All NNN shards must be there (a missing one is named); the merged JSON keeps the shards' meta.
    """
    parts = sorted(out.parent.glob(f"{out.stem}.shard-*-of-*{out.suffix}"))
    if not parts:
        raise LSLError(f"No shard files like {out.stem}.shard-000-of-NNN{out.suffix} in {out.parent}; run "
                       "`analyze` with --num-shards (or under torchrun) and the same --out first.")
    counts = {int(re.search(r"-of-(\d+)", p.name).group(1)) for p in parts}
    if len(counts) != 1:
        raise LSLError(f"Shard files of different runs ({sorted(counts)} shards) share {out.name}; remove the stale ones.")
    n = counts.pop()
    missing = [shard_path(out, i, n).name for i in range(n) if not shard_path(out, i, n).is_file()]
    if missing:
        raise LSLError(f"Cannot merge {out.name}: {len(missing)} of {n} shard files are missing ({', '.join(missing)}).")
    df = pd.concat([read_table(p) for p in parts], ignore_index=True)
    df.to_parquet(out, index=False)
    jsons = [json.loads(p.with_suffix(".json").read_text()) for p in parts if p.with_suffix(".json").is_file()]
    merged = merge_aggregates(jsons)
    if jsons and "meta" in jsons[0]:
        merged = {"meta": {**jsons[0]["meta"], "merged_shards": n}, **merged}
    out.with_suffix(".json").write_text(json.dumps(merged, indent=1))
    print(f"merged {len(parts)} shards, {len(df)} rows -> {out} (+ {out.with_suffix('.json').name})")
    return out


# =============================================================================== the results page
def alignment_page(rows: pd.DataFrame, meta: dict) -> str:
    """docs/results/alignment.md: per-checkpoint means over samples (layers 1..L) of the analyze rows.

    meta: command, code_version (of the analyze run; NOT_RECORDED for older files), samples, limit;
    optional render (the `report alignment` provenance when re-rendered from the stored parquet).
    """
    means = checkpoint_means(rows)
    render = meta.get("render")
    n = sorted(set(means["n"])) if len(means) else []
    lines = page_header(f"Alignment metrics per checkpoint — {meta.get('samples', 'sample set not recorded')}",
                        render["command"] if render else meta["command"],
                        render["code_version"] if render else meta.get("code_version", NOT_RECORDED),
                        source=meta.get("command", NOT_RECORDED) if render else None,
                        source_version=meta.get("code_version", NOT_RECORDED) if render else None)
    lines += [
        f"- {len(means)} checkpoints × {'/'.join(map(str, n))} samples; every value is a mean over samples of a "
        "per-sample metric whose layer curve is averaged over layers 1..L (layer 0, the LLM input, is left out).",
        "- seq_cos / seq_dist: cosine / Euclidean distance of the mean-pooled speech and text states; aps: alignment "
        "path score; spearman: monotonicity of the cosine path; consistency: cosine and distance paths agree.",
        "- cka_diag: aligned CKA of speech layer a with text layer a (cosine path of the middle layer); cka_null_diag: "
        "the same with the frame-token pairs shuffled (mean of 200 re-pairings); cka_above_null: share of layers "
        "whose CKA is above its null's 97.5th percentile (– for rows written before the null existed).",
        "",
        "| " + " | ".join([*CHECKPOINT_KEYS, "n", *PAGE_COLUMNS]) + " |",
        "|---|---|---|--:|--:|" + "--:|" * len(PAGE_COLUMNS),
    ]
    for _, r in means.iterrows():
        vals = [f"{r[c]:.3f}" if c in r and pd.notna(r[c]) else "–" for c in PAGE_COLUMNS]
        lines.append("| " + " | ".join([str(r[k]) for k in CHECKPOINT_KEYS] + [str(int(r["n"])), *vals]) + " |")
    return "\n".join(lines) + "\n"


def render_stored(path: str | Path, render: dict) -> str:
    """The alignment page from analyze's stored parquet (+ the JSON's meta when it has one): nothing recomputed."""
    path = Path(path)
    if not path.is_file():
        raise LSLError(f"No analyze output at {path}; write it with `python -m lsl_core analyze ... --out {path}`.")
    meta = {}
    if path.with_suffix(".json").is_file():
        meta = json.loads(path.with_suffix(".json").read_text()).get("meta", {})
    return alignment_page(read_table(path), {**meta, "render": render})


# =============================================================================== the command
def register(sub) -> None:
    import argparse

    p = sub.add_parser("analyze", help="hidden-state alignment metrics for checkpoint(s) over a sample set",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", action="append", default=[], help="manifest.json or its folder (repeatable)")
    src.add_argument("--zoo", help="folder searched recursively for manifest.json files")
    p.add_argument("--samples", default="sd-qa-mini", help="sample set spec: sd-qa-mini | voicebench:DIR | folder:DIR")
    p.add_argument("--limit", type=int, default=0, help="analyze only the first N samples (0 = all)")
    p.add_argument("--voice", default=None, help="only samples of this voice/accent")
    p.add_argument("--out", default="results/analysis.parquet", help="output Parquet (aggregates go to .json beside it)")
    p.add_argument("--markdown", type=Path, default=None,
                   help="also write the alignment page (per-checkpoint means) here; not with shards")
    add_device_args(p)
    p.add_argument("--no-cka", action="store_true", help="skip per-sample cross-layer CKA")
    p.add_argument("--path", choices=("argmax", "dtw"), default="argmax",
                   help="how frames are paired with tokens for path scores, Spearman, APS and CKA: argmax = best "
                        "frame per token (seed 001), dtw = monotone DTW path (seed 000)")
    p.add_argument("--shard", type=int, default=None, help="shard index (default: $RANK or 0)")
    p.add_argument("--num-shards", type=int, default=None, help="number of shards (default: $WORLD_SIZE or 1)")
    p.add_argument("--merge", nargs="?", const="", default=None, metavar="OUT",
                   help="merge the shard files of OUT (default: of --out) into OUT and exit")
    c = p.add_argument_group("controls (matched vs mismatched pairs, retrieval; docs/controls.md)")
    c.add_argument("--controls", action="store_true",
                   help="also compute the controls, print the per-layer retrieval and specific-alignment table "
                        "and write <out stem>_controls.parquet/.json")
    c.add_argument("--controls-only", action="store_true",
                   help="only the controls (implies --controls): no per-sample rows, e.g. for a second, centred run "
                        "into another --out")
    c.add_argument("--partners", type=int, default=5, help="mismatched questions per sample (K)")
    c.add_argument("--candidates", type=int, default=20, help="retrieval candidates per sample incl. its own (Nc)")
    c.add_argument("--centring", choices=("none", "joint", "modality"), default="none",
                   help="subtract a per-layer mean of the set's speech and text states before every metric")
    c.add_argument("--seed", type=int, default=0, help="seed of the partner draw and the bootstrap")
    c.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the 95%% CI")
    c.add_argument("--block-samples", type=int, default=256,
                   help="at most this many clips' speech states in memory at once; each block is its own candidate "
                        "pool (~1.7 MB per clip for the embedded model: 31 layers x ~24 frames x 576)")
    c.add_argument("--bootstrap", choices=("question", "sample"), default="question",
                   help="resampling unit of the CI: questions (the voices of a question move together) or clips")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.pages import provenance, write_page
    from lsl_core.model.loading import default_checkpoint, list_zoo, read_manifest

    if args.merge is not None:
        merge_shards(Path(args.merge or args.out))
        return 0
    meta = provenance(getattr(args, "argv", None))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shard, n_shards = shard_of(args)
    if args.markdown and n_shards > 1:
        raise LSLError("--markdown needs every sample in one process; write the page after --merge with "
                       f"`python -m lsl_core report alignment --results {out} --markdown PAGE.md`.")
    if args.zoo:
        manifests = list_zoo(args.zoo)
        if not manifests:
            raise LSLError(f"No manifest.json found under {args.zoo}.")
    else:
        manifests = [read_manifest(c) for c in (args.checkpoint or [default_checkpoint()])]
    sset = load_sample_set(args.samples)
    samples = list(sset.with_voice(args.voice)) if args.voice else list(sset)
    if args.limit:
        samples = samples[: args.limit]
    samples = samples[shard::n_shards]
    if not samples:  # refuse before any checkpoint loads
        raise LSLError(f"No sample to analyze: {args.samples!r}"
                       + (f" limited to {args.limit}" if args.limit else "")
                       + (f" has no sample for shard {shard} of {n_shards}; use at most as many shards as samples"
                          if n_shards > 1 else " is empty") + ".")
    bars: dict = {}

    def progress(m, i, total, sid) -> None:
        bar = bars.get(m.name) or bars.setdefault(m.name, tqdm(total=total, desc=f"analyze {m.name}", unit="sample"))
        bar.update(1)
        if i == total:
            bar.close()

    options = AnalysisOptions(cka=not args.no_cka, path=args.path)
    meta.update({"samples": args.samples, "limit": args.limit, "voice": args.voice, "shard": shard,
                 "num_shards": n_shards, "checkpoints": [m.name for m in manifests]})
    control_options = _control_options(args, n_shards)
    if control_options is not None:
        from lsl_core.model.loading import load_checkpoint

        control_frames, control_meta = [], {"meta": meta}
        for m in manifests:
            model = load_checkpoint(m, device=args.device)
            frame, cmeta = _controls(model, m, samples, control_options, options)
            control_frames.append(frame)
            control_meta[m.name] = cmeta
            del model
        cpath = out.with_name(f"{out.stem}_controls.parquet")
        pd.concat(control_frames, ignore_index=True).to_parquet(cpath, index=False)
        cpath.with_suffix(".json").write_text(json.dumps(control_meta, indent=1))
        print(f"wrote controls -> {cpath} (+ {cpath.with_suffix('.json').name})")
        if args.controls_only:
            return 0
    sweep = analyze_checkpoints(manifests, samples, options, device=args.device, progress=progress)
    for bar in bars.values():
        bar.close()
    for note in sweep.notes:
        print(f"warning: {note}")
    path = shard_path(out, shard, n_shards)
    sweep.rows.to_parquet(path, index=False)
    path.with_suffix(".json").write_text(json.dumps({"meta": meta, **sweep.aggregates}, indent=1))
    print(f"wrote {len(sweep.rows)} rows -> {path} (+ aggregates {path.with_suffix('.json').name})")
    if args.markdown:
        write_page(args.markdown, alignment_page(sweep.rows, meta))
        print(f"wrote {args.markdown}")
    return 0


def _control_options(args, n_shards: int):
    """ControlOptions from the flags, or None without --controls."""
    if not (args.controls or args.controls_only):
        return None
    from lsl_core.metrics.controls import ControlOptions

    if n_shards > 1:
        raise LSLError("--controls compares every sample with the others of its set: run it unsharded "
                       "(drop --shard/--num-shards and the launcher).")
    try:
        return ControlOptions(partners=args.partners, candidates=args.candidates, centring=args.centring,
                              seed=args.seed, n_boot=args.n_boot, bootstrap=args.bootstrap,
                              block_samples=args.block_samples)
    except ValueError as exc:
        raise LSLError(str(exc).replace("ControlOptions.", "--").replace("_", "-")) from None


def _controls(model, m, samples, control_options, analysis_options):
    """Controls of one checkpoint: progress bar, printed tables, (long table, JSON summary)."""
    import time

    from tqdm import tqdm

    from lsl_core.analysis_controls import analyze_controls, controls_report, controls_table

    bar = tqdm(total=None, desc=f"controls {m.name}", unit="forward")

    def progress(done: int, total: int, label: str) -> None:
        bar.total = total
        bar.update(done - bar.n)

    t0 = time.perf_counter()
    res = analyze_controls(model, samples, control_options, progress=progress, analysis_options=analysis_options)
    bar.close()
    seconds = time.perf_counter() - t0
    print(controls_report(res, m.name))
    print(f"(controls: {seconds:.1f} s for {res.n} samples; cached on disk for the same checkpoint, samples and "
          "options)")
    frame = controls_table(res, checkpoint=m.name, family=m.family, strategy=m.strategy, step=m.step)
    meta = {"n": res.n, "questions": len(res.questions), "family": m.family, "strategy": m.strategy,
            "step": m.step, "options": res.options, "centring": res.centring, "notes": res.notes}
    return frame, meta
