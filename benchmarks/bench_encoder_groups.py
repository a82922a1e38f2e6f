"""How many clips a forward of the batched encoder gets on a training config's data: small groups or slow forwards?

On a GPU, clips_states puts the new clips of one encoder input length (2 log-mel frames = 20 ms of audio apart)
through the encoder together, up to `--batch` at a time, within chunks of 32 x batch jobs in the data's order.
How big those groups are is a property of the data, not of the device: this synthesizes every clip of a few
evenly spaced chunks of the config's training jobs (espeak-ng, as training does), groups them as
SpeechEncoder.encode_inputs_batch does, and extrapolates the forwards of the whole data. Given a device run's
"encoded S s" (`--encoded-seconds`), it prints what one forward took there; and it times, side by side on this
machine's CPU, one forward of a group of the median size against one clip of the median length, so that the
device's per-forward time can be read against the work a forward does.

    nice -n 10 .venv/bin/python benchmarks/bench_encoder_groups.py \
        --config configs/train/experiments/gpu_open_vocab_repeat.json --encoded-seconds 258
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=64, help="clips of one length a forward takes at most")
    ap.add_argument("--chunks", type=int, default=3, help="chunks of the data synthesized (evenly spaced)")
    ap.add_argument("--encoded-seconds", type=float, default=None, help="a device run's 'encoded S s'")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    import torch

    from lsl_core.data.synth import synthesize
    from lsl_core.experiments.train import build_model
    from lsl_core.experiments.train.config import TrainConfig
    from lsl_core.experiments.train.corpus import rendition, stage_clips, stage_texts

    torch.set_num_threads(2)
    cfg = TrainConfig.from_json(args.config)
    model = build_model(cfg, torch.device("cpu"))
    enc = model.encoder
    items, extra, _ = stage_texts(cfg, model)
    jobs = [(qid, t, v) for qid, t, v, _ in stage_clips(cfg, items, extra)]  # in prepare_data's order
    chunk = 32 * args.batch
    n_chunks = -(-len(jobs) // chunk)
    picked = sorted({round(k * (n_chunks - 1) / max(1, args.chunks - 1)) for k in range(args.chunks)})
    print(f"{args.config}: {len(jobs)} clips in {n_chunks} chunks of {chunk}; synthesizing chunks {picked}")

    def frames(job) -> int:
        qid, text, voice = job
        r = rendition(cfg, qid, voice)
        return enc.input_frames(len(synthesize(text, r.espeak_voice, r.speed, r.pitch)))

    t0 = time.perf_counter()
    per_chunk, lengths_all = [], []
    with ThreadPoolExecutor(args.workers) as pool:
        for k in picked:
            part = jobs[k * chunk:(k + 1) * chunk]
            lengths = list(pool.map(frames, part))
            groups = Counter(lengths)
            forwards = sum(-(-n // args.batch) for n in groups.values())
            per_chunk.append((len(part), forwards))
            lengths_all += lengths
            print(f"  chunk {k}: {len(part)} clips, {len(groups)} input lengths ({min(lengths)}-{max(lengths)} "
                  f"log-mel frames), {forwards} forwards, {len(part) / forwards:.1f} clips a forward")
    clips, fw = sum(c for c, _ in per_chunk), sum(f for _, f in per_chunk)
    # the whole data: the full chunks at the sampled full chunks' mean, the last (partial) one as sampled or pro rata
    full = [f for (c, f) in per_chunk if c == chunk] or [chunk * fw / clips]
    last = len(jobs) - (n_chunks - 1) * chunk
    last_fw = per_chunk[-1][1] if picked[-1] == n_chunks - 1 else last * fw / clips
    est = (n_chunks - 1) * statistics.mean(full) + last_fw if last < chunk else n_chunks * statistics.mean(full)
    print(f"synthesized {clips} clips in {time.perf_counter() - t0:.0f} s; the whole data: ~{est:.0f} forwards, "
          f"{len(jobs) / est:.1f} clips a forward on average")
    if args.encoded_seconds:
        sec = args.encoded_seconds
        print(f"a device run that encoded them in {sec:.0f} s: ~{1000 * sec / est:.0f} ms a forward, "
              f"{1000 * sec / len(jobs):.1f} ms a clip")

    # side by side here: one forward of a median-size group of median-length clips, against one such clip
    m = int(statistics.median(lengths_all))
    m -= m % 2
    g = max(1, round(len(jobs) / est))
    x = torch.randn(g, enc.feature_extractor.feature_size, m)

    def timed(batch: torch.Tensor, repeats: int = 5) -> float:
        with torch.no_grad():
            enc.forward(batch)
            out = []
            for _ in range(repeats):
                t = time.perf_counter()
                enc.forward(batch)
                out.append(time.perf_counter() - t)
        return statistics.median(out)

    one, group = timed(x[:1]), timed(x)
    print(f"this CPU, {m} log-mel frames: one clip {1000 * one:.1f} ms a forward, {g} clips together "
          f"{1000 * group:.1f} ms ({group / one:.1f}x one clip's time for {g}x the clips)")


if __name__ == "__main__":
    main()
