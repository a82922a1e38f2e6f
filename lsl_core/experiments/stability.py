"""`python -m lsl_core stability`: how stable the cross-layer CKA is across analysis configurations.

Recomputes the CKA of a sample set under every configuration of `metrics.stability.default_configs`
(argmax / DTW path, cosine / distance matrix, path of the middle layer / of each layer / of the quarter
layers, pooled) and writes the matrices and the summary (Pearson r between matrices, band location and
agreement per configuration) as JSON, printing the summary table.

    python -m lsl_core stability --samples sd-qa-mini --limit 40 --out results/stability.json
"""

from __future__ import annotations

import json
from pathlib import Path

from lsl_core.cli import add_device_args
from lsl_core.errors import LSLError


def register(sub) -> None:
    p = sub.add_parser("stability", help="cross-layer CKA under several analysis configurations, and how alike",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="manifest.json or its folder (default: the app's default model)")
    p.add_argument("--samples", default="sd-qa-mini", help="sample set spec: sd-qa-mini | voicebench:DIR | folder:DIR")
    p.add_argument("--limit", type=int, default=40, help="the first N samples (0 = all)")
    p.add_argument("--voice", default=None, help="only samples of this voice/accent")
    p.add_argument("--tolerance", type=int, default=1, help="band locations within this many layers agree")
    add_device_args(p)
    p.add_argument("--out", default="results/stability.json", help="output JSON (matrices + summary)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from lsl_core.analysis import analyze_stability
    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.pages import provenance
    from lsl_core.experiments.voicebench_run import write_atomically
    from lsl_core.model.loading import default_checkpoint, load_checkpoint

    sset = load_sample_set(args.samples)
    sset = sset.with_voice(args.voice) if args.voice else sset
    if args.limit:
        sset = sset[: args.limit]  # metadata only: each clip is decoded when its turn comes
    unreadable: list[str] = []

    def readable():
        """The set's samples, decoded one at a time; a clip that cannot be decoded is listed and skipped."""
        for i in range(len(sset)):
            try:
                yield sset[i]
            except LSLError as exc:
                unreadable.append(f"{sset.record(i).id}: {exc}")

    model = load_checkpoint(args.checkpoint or default_checkpoint(), device=args.device)
    bar = tqdm(total=len(sset), desc=f"stability {model.name}", unit="sample")
    try:
        res = analyze_stability(model, readable(), tolerance=args.tolerance, total=len(sset),
                                progress=lambda i, t, sid: bar.update(1))
    except LSLError:
        if unreadable:  # nothing analyzed because nothing could be decoded: say why
            raise LSLError("No sample could be analyzed: " + "; ".join(unreadable[:3])) from None
        raise
    finally:
        bar.close()
    res.errors[:0] = unreadable
    for e in res.errors:
        print(f"warning: {e}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = res.summary
    payload = {
        **provenance(getattr(args, "argv", None)),  # command + code version
        "checkpoint": model.name, "digest": model.digest, "samples": args.samples, "n": res.n,
        "tolerance": args.tolerance, "errors": res.errors,
        "configs": [c.label() for c in res.configs],
        "matrices": {k: (None if v is None else v.tolist()) for k, v in res.matrices.items()},
        "summary": None if summary is None else {
            "labels": list(summary.labels), "correlation": summary.correlation.tolist(),
            "band": summary.band.tolist(), "band_agreement": summary.band_agreement.tolist(),
            "band_shift": summary.band_shift.tolist(), "missing": list(summary.missing)},
    }
    write_atomically(out, lambda p: p.write_text(json.dumps(payload, indent=1)))
    if summary is not None:
        print(summary.table().to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    print(f"{res.n} samples -> {out}")
    return 0
