"""Alignment-path and logit-lens cost, printed as one table measured side by side in this run:

1. the monotone DTW path vs the argmax path vs building the token matrix it runs on, for a 3 s
   question (30 frames x 12 tokens) and a 60 s clip (600 frames x 120 tokens), 31 layers (the
   embedded SmolLM2 stack), both on the same random matrices;
2. the logit lens per layer vs the token matrices of all layers, with an LM head of the embedded
   model's size (V = 49152, d = 576), for the same two clip lengths.

    .venv/bin/python benchmarks/bench_alignment.py [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from lsl_core.metrics.lens import LensHead, logit_lens
    from lsl_core.metrics.tokenwise import alignment_path, token_cosine_matrix

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    L1, d, V = 31, 576, 49152
    head = LensHead(norm=torch.nn.RMSNorm(d), weight=torch.randn(V, d, generator=g) / d**0.5)
    rows = []
    for name, ts, tt in (("3 s question", 30, 12), ("60 s clip", 600, 120)):
        hs, ht = torch.randn(L1, ts, d, generator=g), torch.randn(L1, tt, d, generator=g)
        A = token_cosine_matrix(hs, ht)
        t_mat = _best(lambda: token_cosine_matrix(hs, ht), args.repeats)
        t_arg = _best(lambda: alignment_path(A, "cosine"), args.repeats)
        t_dtw = _best(lambda: alignment_path(A, "cosine", "dtw"), args.repeats)
        t_lens = _best(lambda: logit_lens(hs, head, k=5, layers=[15]), args.repeats)
        rows.append((name, ts, tt, t_mat, t_arg, t_dtw, t_lens))
    print(f"torch {torch.__version__}, {args.threads} threads, {L1} layers, d = {d}, V = {V}, median of {args.repeats}")
    print("| clip | Ts x Tt | token matrix (s) | argmax path (s) | DTW path (s) | DTW / matrix | lens, 1 layer (s) "
          "| lens all layers / matrix |")
    print("|---|---|---|---|---|---|---|---|")
    for name, ts, tt, t_mat, t_arg, t_dtw, t_lens in rows:
        print(f"| {name} | {ts} x {tt} | {t_mat:.4f} | {t_arg:.5f} | {t_dtw:.4f} | {t_dtw / t_mat:.1f}x | "
              f"{t_lens:.4f} | {L1 * t_lens / t_mat:.0f}x |")


if __name__ == "__main__":
    main()
