"""What a repeat/QA training step costs with the LM head at every position vs only where a response token is
predicted (`batch.response_logits`, transformers' logits_to_keep): the default checkpoint in float32 (as a
stage trains), a batch of sd-qa-mini clips of different questions, which are the responses (the repeat
objective), forward + backward. Same weights and batch; timings are interleaved per repeat so that machine
noise hits both alike. Prints one table with the ratio to the full head.

    .venv/bin/python benchmarks/bench_train_step.py [--repeats 5] [--batch 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lsl_core.data.sets import load_sample_set
    from lsl_core.model import batch as B
    from lsl_core.model.loading import default_checkpoint, load_checkpoint, read_manifest

    model = load_checkpoint(read_manifest(default_checkpoint()), device="cpu", dtype=torch.float32)  # as training
    model.llm.requires_grad_(False)  # a frozen-LLM stage: the gradient flows through the LLM to the speech queries
    every = load_sample_set("sd-qa-mini")
    samples = list({s.question: s for s in every}.values())[: args.batch]  # one clip of each question
    with torch.no_grad():
        queries = [model.embed_speech(s.audio, s.sr).embeds for s in samples]
    responses = [B.answer_ids(model, s.question) for s in samples]

    def step(loss_fn):
        batch = B.response_batch(model, [q.detach().requires_grad_(True) for q in queries], responses)
        loss = loss_fn(model, batch)
        loss.backward()
        return loss.item()

    cases = {"LM head at every position": lambda m, b: B.response_loss(m, b, all_positions=True),
             "LM head at response positions": B.response_loss}
    losses = {name: step(fn) for name, fn in cases.items()}  # warm-up, and the two losses agree
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            t0 = time.perf_counter()
            step(fn)
            times[name].append(time.perf_counter() - t0)
    batch = B.response_batch(model, queries, responses)
    keep = batch.labels[:, 1:] != B.IGNORE_INDEX
    print(f"batch of {len(samples)} clips, {batch.labels.shape[1]} positions, {int(keep.any(0).sum())} with a "
          f"response token in some row, {int(keep.sum())} response tokens; loss "
          + " vs ".join(f"{v:.5f}" for v in losses.values()))
    base = statistics.median(times["LM head at every position"])
    print("| forward + backward | median s | ratio |\n|---|--:|--:|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.3f} | {statistics.median(ts) / base:.2f}x |")


if __name__ == "__main__":
    main()
