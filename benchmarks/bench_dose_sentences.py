"""The dose sentences of an open-vocabulary repeat stage: the queue rebuilt per sentence (the algorithm until
2026-12-04, quadratic in the words spoken) against the linked queue (dose.dose_sentences, linear), side by side
in one run, with equal output checked (the old one is tests/test_dose.py's slow reference).

An open-vocabulary stage at the LLM's first 12,000 word tokens speaks 8,391 new words in 30 clips each: 251,730
word slots, 35,974 sentences (configs/train/experiments/gpu_open_vocab_repeat.json). On a lent accelerator the
train command spent most of its non-clip data time there, on every start and every resume
(docs/results/gpu_open_vocab_attempt2.log). Synthetic words stand in for the vocabulary (the algorithm only
compares them):

    nice -n 10 .venv/bin/python benchmarks/bench_dose_sentences.py [--words 8391] [--dose 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the old algorithm is the tests' slow reference


def main() -> int:
    from test_dose import dose_sentences_by_rebuilt_lists

    from lsl_core.experiments.train.dose import dose_sentences

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--words", type=int, default=8391, help="new words (8,391: the 12,000-token stage)")
    ap.add_argument("--dose", type=int, default=30, help="clips per word")
    args = ap.parse_args()
    groups = {args.dose: [f"word{i}" for i in range(args.words)], 0: ["control"]}
    t = time.perf_counter()
    new = dose_sentences(groups, 0)
    t_new = time.perf_counter() - t
    t = time.perf_counter()
    old = dose_sentences_by_rebuilt_lists(groups, 0)
    t_old = time.perf_counter() - t
    print(f"{args.words} words x {args.dose} clips = {args.words * args.dose} word slots, {len(new)} sentences; "
          f"equal output: {new == old}")
    print(f"queue rebuilt per sentence: {t_old:.2f} s; linked queue: {t_new:.3f} s; ratio {t_old / t_new:.0f}x")
    return 0 if new == old else 1


if __name__ == "__main__":
    raise SystemExit(main())
