"""Intervention overhead on the embedded default (CPU): intervened / plain generation time on the same
speech prompt and the same number of new tokens (forced with min_new_tokens), measured side by side
in one run: repeats interleaved (plain, intervened, intervened, plain, ...), median of the per-pair
ratios. Target: ≤ 1.10× (the hooks act only on the prefill pass; decode steps pay one length check).

    .venv/bin/python benchmarks/bench_interventions.py [--repeats 5] [--new-tokens 24]

Planning (one speech + one text forward, skipped when the caller passes HiddenStates) is reported
separately: it is paid once per sample, not per generation.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--conditions", nargs="+",
                    default=["angle:bottom3", "length:all+calibrate:all@15"])
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    from lsl_core.data.sets import load_sample_set
    from lsl_core.interventions import generate_with_interventions, plan_interventions
    from lsl_core.model.loading import default_checkpoint, load_checkpoint

    model = load_checkpoint(default_checkpoint(), device="cpu")
    sample = next(iter(load_sample_set("sd-qa-mini")))
    n = args.new_tokens

    t = time.perf_counter()
    prompt, _, states = model.prompts_and_states(sample)
    t_states = time.perf_counter() - t
    t = time.perf_counter()
    plans = {c: plan_interventions(c, states, prompt) for c in args.conditions}
    t_plan = (time.perf_counter() - t) / len(plans)

    def plain() -> str:
        return model.generate_from_prompt(prompt, n, min_new_tokens=n)

    def edited(c: str) -> str:
        return generate_with_interventions(model, prompt, plans[c], n, min_new_tokens=n)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    plain()  # warm-up
    for c in args.conditions:
        edited(c)
    times: dict[str, list[float]] = {"plain": []}
    ratios: dict[str, list[float]] = {c: [] for c in args.conditions}
    for r in range(args.repeats):
        for c in args.conditions:
            if r % 2 == 0:  # alternate the order inside each pair so drift does not favour one side
                tp, te = timed(plain), timed(lambda: edited(c))
            else:
                te, tp = timed(lambda: edited(c)), timed(plain)
            times["plain"].append(tp)
            times.setdefault(c, []).append(te)
            ratios[c].append(te / tp)

    # the hook's own cost, isolated: one prefill forward (use_cache=False) with and without the hooks
    from lsl_core.interventions import intervention_hooks

    def prefill(plan_list=None) -> float:
        t0 = time.perf_counter()
        with torch.no_grad():
            if plan_list is None:
                model.llm(inputs_embeds=prompt.inputs_embeds, use_cache=False)
            else:
                with intervention_hooks(model, plan_list):
                    model.llm(inputs_embeds=prompt.inputs_embeds, use_cache=False)
        return time.perf_counter() - t0

    all_plans = [p for c in args.conditions for p in plans[c]]
    pre_ratios, pre_plain = [], []
    for r in range(4 * args.repeats):
        if r % 2 == 0:
            tp, te = prefill(), prefill(all_plans)
        else:
            te, tp = prefill(all_plans), prefill()
        pre_plain.append(tp)
        pre_ratios.append(te / tp)

    med = statistics.median
    worst = max(med(v) for v in ratios.values())
    print(f"bench_interventions: {model.name} ({model.num_layers} layers), CPU, {torch.get_num_threads()} threads; "
          f"sample {sample.id} ({sample.duration:.1f} s, Ts={states.speech.shape[1]}, "
          f"prompt T={prompt.inputs_embeds.shape[1]}), {n} new tokens, {args.repeats} interleaved repeats")
    print()
    print("| condition | frames | plain s | edited s | median ratio intervened / plain generation | target |")
    print("|---|---:|---:|---:|---:|---|")
    for c in args.conditions:
        nf = sum(len(p.frames) for p in plans[c])
        print(f"| {c} | {nf} | {med(times['plain']):.3f} | {med(times[c]):.3f} | {med(ratios[c]):.3f}x | <= 1.10x |")
    print()
    print(f"worst median ratio {worst:.3f}x (target <= 1.10x): {'OK' if worst <= 1.10 else 'ABOVE TARGET'}; "
          f"prefill forward alone (T={prompt.inputs_embeds.shape[1]}) with all {len(all_plans)} plans hooked: "
          f"plain {med(pre_plain) * 1000:.1f} ms, ratio {med(pre_ratios):.3f}x (median of {len(pre_ratios)} pairs); "
          f"planning once per sample: states {t_states:.3f} s, plan per condition {t_plan * 1000:.1f} ms")

if __name__ == "__main__":
    main()
