"""What a speech-scoped LoRA costs (CPU): the default checkpoint's LoRA merged into W (lora_scope 'all', the
default load), unmerged, and scoped to the speech positions (always unmerged). Same weights; timings are
interleaved per repeat so that machine noise hits all three alike. Prints one table with ratios to merged.

    .venv/bin/python benchmarks/bench_lora_scope.py [--repeats 5] [--new-tokens 32] [--batch 8]
"""

from __future__ import annotations

import argparse
import dataclasses
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
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))

    from lsl_core.data.sets import load_sample_set
    from lsl_core.model.loading import default_checkpoint, load_checkpoint, read_manifest

    m = read_manifest(default_checkpoint())
    models = {"merged (scope all)": load_checkpoint(m, device="cpu"),
              "unmerged (scope all)": load_checkpoint(m, device="cpu", merge_lora=False),
              "scope speech": load_checkpoint(dataclasses.replace(m, lora_scope="speech"), device="cpu")}
    samples = load_sample_set("sd-qa-mini")[: args.batch]
    n = args.new_tokens
    prompts = {}
    for name, model in models.items():
        sp = [model.build_prompt(model.embed_speech(s.audio, s.sr).embeds) for s in samples]
        tx = [model.build_prompt(e.embeds, e.token_ids) for e in (model.embed_text(s.question) for s in samples)]
        prompts[name] = (sp, tx)

    def cases(name):
        model, (sp, tx) = models[name], prompts[name]
        return {
            "hidden_states (1 clip, both modalities)": lambda: model.hidden_states(samples[0]),
            f"generate {n} tokens, 1 speech prompt": lambda: model.generate_ids(sp[:1], n, min_new_tokens=n),
            f"generate {n} tokens, 1 text prompt": lambda: model.generate_ids(tx[:1], n, min_new_tokens=n),
            f"generate {n} tokens, {len(sp)} speech prompts batched": lambda: model.generate_ids(
                sp, n, batch_size=len(sp), min_new_tokens=n),
        }

    times: dict[tuple[str, str], list[float]] = {}
    for name in models:  # warm-up
        for fn in cases(name).values():
            fn()
    for _ in range(args.repeats):
        for name in models:
            for case, fn in cases(name).items():
                t = time.perf_counter()
                fn()
                times.setdefault((case, name), []).append(time.perf_counter() - t)

    print(f"\nbench_lora_scope: {m.name} on CPU ({torch.get_num_threads()} threads), median of {args.repeats}\n")
    names = list(models)
    print("| case | " + " | ".join(names) + " | unmerged / merged | speech / merged |")
    print("|---|" + "---|" * (len(names) + 2))
    for case in cases(names[0]):
        med = [statistics.median(times[(case, nm)]) for nm in names]
        print(f"| {case} | " + " | ".join(f"{x * 1000:.0f} ms" for x in med)
              + f" | {med[1] / med[0]:.2f}x | {med[2] / med[0]:.2f}x |")


if __name__ == "__main__":
    main()
