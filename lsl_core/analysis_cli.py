"""`python -m lsl_core analyze`: checkpoint(s) x sample set -> per-sample metrics (Parquet) + aggregates (JSON).

Scales out by sharding samples: every process takes samples i with i % num_shards == shard. The shard
comes from --shard/--num-shards or from the launcher's RANK/WORLD_SIZE (torchrun, `accelerate launch`),
and each shard writes its own file; `--merge` concatenates them.

    python -m lsl_core analyze --checkpoint assets/checkpoints/... --samples sd-qa-mini --out results/a.parquet
    torchrun --nproc-per-node 8 -m lsl_core analyze --zoo ckpts/ --samples voicebench:/data/sd-qa --out r.parquet
    python -m lsl_core analyze --merge r.parquet
    python -m lsl_core analyze --controls --samples sd-qa-mini --limit 50   # + matched vs mismatched, retrieval
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def register(sub) -> None:
    p = sub.add_parser("analyze", help="hidden-state alignment metrics for checkpoint(s) over a sample set",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", action="append", default=[], help="manifest.json or its folder (repeatable)")
    src.add_argument("--zoo", help="folder searched recursively for manifest.json files")
    p.add_argument("--samples", default="sd-qa-mini", help="sample set spec: sd-qa-mini | voicebench:DIR | folder:DIR")
    p.add_argument("--limit", type=int, default=0, help="analyze only the first N samples (0 = all)")
    p.add_argument("--voice", default=None, help="only samples of this voice/accent")
    p.add_argument("--out", default="results/analysis.parquet", help="output Parquet (aggregates go to .json beside it)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:1 (default: cuda if available)")
    p.add_argument("--no-cka", action="store_true", help="skip per-sample cross-layer CKA")
    p.add_argument("--shard", type=int, default=None, help="shard index (default: $RANK or 0)")
    p.add_argument("--num-shards", type=int, default=None, help="number of shards (default: $WORLD_SIZE or 1)")
    p.add_argument("--merge", action="store_true", help="merge the shard files of --out and exit")
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


def shard_of(args) -> tuple[int, int]:
    """(shard, num_shards) from flags or the distributed launcher's environment."""
    n = args.num_shards if args.num_shards is not None else int(os.environ.get("WORLD_SIZE", "1"))
    i = args.shard if args.shard is not None else int(os.environ.get("RANK", "0"))
    if not 0 <= i < n:
        from lsl_core.errors import LSLError

        raise LSLError(f"--shard must be in [0, {n}), got {i}.")
    return i, n


def shard_path(out: Path, i: int, n: int) -> Path:
    return out if n == 1 else out.with_name(f"{out.stem}.shard-{i:03d}-of-{n:03d}{out.suffix}")


def merge_shards(out: Path) -> Path:
    """Concatenate `<stem>.shard-*-of-*.parquet` into `out`."""
    import pandas as pd

    from lsl_core.errors import LSLError

    parts = sorted(out.parent.glob(f"{out.stem}.shard-*-of-*{out.suffix}"))
    if not parts:
        raise LSLError(f"No shard files like {out.stem}.shard-000-of-NNN{out.suffix} in {out.parent}.")
    df = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    df.to_parquet(out, index=False)
    print(f"merged {len(parts)} shards, {len(df)} rows -> {out}")
    return out


def run(args) -> int:
    import pandas as pd
    from tqdm import tqdm

    from lsl_core.analysis import AnalysisOptions, analyze_set
    from lsl_core.data.sets import load_sample_set
    from lsl_core.errors import LSLError
    from lsl_core.model.loading import default_checkpoint, list_zoo, load_checkpoint, read_manifest

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge:
        merge_shards(out)
        return 0
    shard, n_shards = shard_of(args)
    if args.zoo:
        manifests = list_zoo(args.zoo)
        if not manifests:
            raise LSLError(f"No manifest.json found under {args.zoo}.")
    else:
        manifests = [read_manifest(c) for c in (args.checkpoint or [default_checkpoint()])]
    sset = load_sample_set(args.samples)
    samples = list(sset.filter(voice=args.voice)) if args.voice else list(sset)
    if args.limit:
        samples = samples[: args.limit]
    samples = samples[shard::n_shards]
    options = AnalysisOptions(cka=not args.no_cka)
    control_options = _control_options(args, n_shards)
    frames, aggregates, control_frames, control_meta = [], {}, [], {}
    for m in manifests:
        model = load_checkpoint(m, device=args.device)
        if control_options is not None:
            frame, meta = _controls(model, m, samples, control_options, options)
            control_frames.append(frame)
            control_meta[m.name] = meta
        if args.controls_only:
            del model
            continue
        bar = tqdm(total=len(samples), desc=f"analyze {m.name}", unit="sample")
        res = analyze_set(model, samples, options, progress=lambda i, t, sid: bar.update(1))
        bar.close()
        df = res.rows.assign(checkpoint=m.name, family=m.family, strategy=m.strategy, step=m.step)
        frames.append(df)
        aggregates[m.name] = {
            "n": res.n, "family": m.family, "strategy": m.strategy, "step": m.step,
            "mean_seq_cos": res.mean_seq_cos.tolist(), "mean_seq_dist": res.mean_seq_dist.tolist(),
            "mean_cka": None if res.mean_cka is None else np.asarray(res.mean_cka).tolist(),
            "pooled_cka": None if res.pooled_cka is None else np.asarray(res.pooled_cka).tolist(),
            "errors": res.errors,
        }
        for e in res.errors:
            print(f"warning: {e}")
        del model
    if frames:
        path = shard_path(out, shard, n_shards)
        pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
        path.with_suffix(".json").write_text(json.dumps(aggregates, indent=1))
        print(f"wrote {sum(len(f) for f in frames)} rows -> {path} (+ aggregates {path.with_suffix('.json').name})")
    if control_frames:
        cpath = out.with_name(f"{out.stem}_controls.parquet")
        pd.concat(control_frames, ignore_index=True).to_parquet(cpath, index=False)
        cpath.with_suffix(".json").write_text(json.dumps(control_meta, indent=1))
        print(f"wrote controls -> {cpath} (+ {cpath.with_suffix('.json').name})")
    return 0


def _control_options(args, n_shards: int):
    """ControlOptions from the flags, or None without --controls."""
    if not (args.controls or args.controls_only):
        return None
    from lsl_core.errors import LSLError
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
