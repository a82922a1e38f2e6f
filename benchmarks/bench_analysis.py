"""Analysis benchmark on the embedded default (CPU), printed as one table:

1. analyze_sample (no cache) vs the two bare forward passes + encoder it needs (target <= 1.3x);
2. peak memory growth of analyze_set over 50 vs 200 samples (target: flat), each in a fresh process.

    .venv/bin/python benchmarks/bench_analysis.py [--repeats 5] [--small 50 --large 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _set_memory_child(n: int) -> dict:
    """Run analyze_set over n samples (cycling the mini set, cache off) and report RSS before/after."""
    import numpy as np
    import torch

    from lsl_core.analysis import analyze_set
    from lsl_core.data.samples import Sample
    from lsl_core.data.sets import load_sample_set
    from lsl_core.model.loading import default_checkpoint, load_checkpoint

    torch.set_num_threads(2)
    model = load_checkpoint(default_checkpoint(), device="cpu")
    base = list(load_sample_set("sd-qa-mini"))

    def stream():
        for i in range(n):  # distinct ids + slightly different audio: no cache can short-circuit
            s = base[i % len(base)]
            yield Sample(id=f"{s.id}#{i}", audio=s.audio * (1 - 1e-4 * (i // len(base))), sr=s.sr,
                         question=s.question, accent=s.accent)

    model.hidden_states(base[0])  # warm-up allocations
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    res = analyze_set(model, stream(), cache=False, total=n)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": res.n, "rss_before_mb": before, "rss_peak_mb": after, "seconds": dt,
            "rows_mb": float(res.rows.memory_usage(deep=True).sum() / 2**20), "np": np.__version__}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--small", type=int, default=50)
    ap.add_argument("--large", type=int, default=200)
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_set_memory_child(args.child)))
        return

    import torch

    from lsl_core.analysis import analyze_sample
    from lsl_core.data.sets import load_sample_set
    from lsl_core.model.loading import default_checkpoint, load_checkpoint

    torch.set_num_threads(2)
    model = load_checkpoint(default_checkpoint(), device="cpu")
    sample = load_sample_set("sd-qa-mini")[0]
    sp = model.embed_speech(sample.audio, sample.sr)
    tx = model.embed_text(sample.question)
    p_s, p_t = model.build_prompt(sp.embeds), model.build_prompt(tx.embeds, tx.token_ids)

    @torch.no_grad()
    def bare() -> None:
        model.encoder.encode(sample.audio)
        model.llm(inputs_embeds=p_s.inputs_embeds, output_hidden_states=True)
        model.llm(inputs_embeds=p_t.inputs_embeds, output_hidden_states=True)

    def full() -> None:
        analyze_sample(model, sample, cache=False)

    bare(), full()
    tb, tf = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        t = time.perf_counter(); bare(); tb.append(time.perf_counter() - t)  # noqa: E702
        t = time.perf_counter(); full(); tf.append(time.perf_counter() - t)  # noqa: E702
    mb, mf = statistics.median(tb), statistics.median(tf)

    mem = {}
    for n in (args.small, args.large):
        out = subprocess.run([sys.executable, __file__, "--child", str(n)], capture_output=True, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode:
            sys.exit(out.stderr[-2000:])
        mem[n] = json.loads(out.stdout.strip().splitlines()[-1])

    print(f"\nbench_analysis: {model.name}, CPU, sample {sample.id} (Ts={sp.embeds.shape[0]}, Tt={tx.embeds.shape[0]}, "
          f"L+1={model.num_layers + 1})\n")
    print("| measure | value | target |\n|---|---|---|")
    print(f"| encoder + 2 bare forwards (median of {args.repeats}) | {mb * 1000:.0f} ms | |")
    print(f"| analyze_sample, no cache | {mf * 1000:.0f} ms | |")
    print(f"| ratio analyze_sample / bare | {mf / mb:.2f}x | <= 1.30x |")
    s, l = mem[args.small], mem[args.large]
    for n, r in ((args.small, s), (args.large, l)):
        print(f"| analyze_set {n} samples: peak RSS growth | {r['rss_peak_mb'] - r['rss_before_mb']:.0f} MB "
              f"(peak {r['rss_peak_mb']:.0f} MB, {r['seconds']:.0f} s, rows {r['rows_mb']:.2f} MB) | |")
    ratio = (l["rss_peak_mb"]) / max(s["rss_peak_mb"], 1)
    print(f"| peak RSS {args.large} / {args.small} samples | {ratio:.2f}x | flat (~1.0x) |")


if __name__ == "__main__":
    main()
