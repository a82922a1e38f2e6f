"""The Whisper encoder's forward: its fixed cost, and what encoding clips of one length together saves.

Measured side by side in one run on the embedded Whisper tiny.en ("clip" window, float32), on this machine's
device (CPU here; on a GPU pass --device cuda):
1. one forward of a near-empty input (4 log-mel frames) against one of a typical training clip (`--frames`,
   default 400 = a 3 s clip with its 1 s pad): the fixed part (Python and dispatch through the layers) against
   the whole;
2. `--batch` clips of that length one by one against together (SpeechEncoder.encode_inputs_batch), per clip,
   with the largest difference of their states.

    nice -n 10 .venv/bin/python benchmarks/bench_encoder_batch.py [--frames 400] [--batch 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs (after one warm-up run); synchronises a GPU."""
    import torch

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    fn()
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> int:
    import torch

    from lsl_core.model.embedded import embedded_whisper_dir
    from lsl_core.model.encoder import SpeechEncoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400, help="log-mel frames of a typical clip (even)")
    ap.add_argument("--batch", type=int, default=8, help="clips of that length encoded together")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    enc = SpeechEncoder.from_pretrained(str(embedded_whisper_dir()), dtype=torch.float32, device=args.device,
                                        window="clip").eval()
    g = torch.Generator().manual_seed(0)
    tiny = torch.randn(1, 80, 4, generator=g)
    clip = torch.randn(1, 80, args.frames, generator=g)
    with torch.no_grad():
        t_tiny = timed(lambda: enc.forward(tiny), args.repeats)
        t_clip = timed(lambda: enc.forward(clip), args.repeats)
    print(f"one forward, {args.device}, {torch.get_num_threads()} threads: 4 frames {t_tiny * 1e3:.1f} ms, "
          f"{args.frames} frames {t_clip * 1e3:.1f} ms (the fixed part: {t_tiny / t_clip:.0%})")
    inputs = [[(torch.randn(1, 80, args.frames, generator=g), args.frames // 2 - 50)] for _ in range(args.batch)]
    alone = timed(lambda: [enc.encode_inputs(x) for x in inputs], max(3, args.repeats // 4))
    together = timed(lambda: enc.encode_inputs_batch(inputs, args.batch), max(3, args.repeats // 4))
    diff = max((a - b).abs().max().item() for a, b in zip([enc.encode_inputs(x) for x in inputs],
                                                         enc.encode_inputs_batch(inputs, args.batch)))
    print(f"{args.batch} clips of {args.frames} frames: one by one {alone / args.batch * 1e3:.1f} ms a clip, "
          f"together {together / args.batch * 1e3:.1f} ms a clip ({alone / together:.2f}x); largest state "
          f"difference {diff:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
