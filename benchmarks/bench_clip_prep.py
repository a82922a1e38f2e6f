"""Training-clip preparation: what a clip costs before the first step, and what the two speed-ups buy.

A training stage turns every (text, espeak-ng rendition) into cached encoder states: synthesis (espeak-ng, a
subprocess, + resampling), the log-mel STFT, the Whisper encoder's forward, a safetensors write. Measured here,
side by side in one run, on SD-QA *test* questions spoken by the training voices:

1. per clip, one thread (time.thread_time, median over the clips): synthesis; the log-mel of the "clip"
   window computed as before (the 30 s window's STFT, cut to its first M frames) and as now (the STFT of the
   first M frames only: SpeechEncoder.features(audio, M), bit-identical, tests/test_encoder_window.py); the
   encoder's forward;
2. end to end, wall time of corpus.clips_states on fresh caches: one by one (workers=1) against synthesis
   and log-mel on worker threads ahead of the encoder (workers=N), and on worker processes (spawned: their start,
   torch's import included, is in the time); the states are compared for equality.

    nice -n 10 .venv/bin/python benchmarks/bench_clip_prep.py [--clips 60] [--workers 2]

On an accelerator machine (16 cores, the encoder on its GPU) with the cut log-mel, 16 workers prepared 43,079
clips in 288 s, ~150 clips/s, and the encoder's thread never waited for them (docs/demo_model.md, "A second
lease"; the first lease's 469 s, with the 30 s log-mel, also held the model's build and the dose sentences).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=60, help="clips (SD-QA test questions x training voices)")
    ap.add_argument("--workers", type=int, default=2, help="worker threads of the threaded preparation")
    args = ap.parse_args()

    import torch

    from lsl_core.data.sdqa import load_sdqa_train_questions
    from lsl_core.data.synth import TRAIN_VOICE_FAMILY, espeak_version, synthesize
    from lsl_core.experiments.train.config import TrainConfig
    from lsl_core.experiments.train.corpus import clips_states, rendition
    from lsl_core.model.embedded import embedded_whisper_dir
    from lsl_core.model.encoder import SpeechEncoder

    torch.set_num_threads(1)
    enc = SpeechEncoder.from_pretrained(embedded_whisper_dir(), window="clip")
    cfg = TrainConfig()
    qs = load_sdqa_train_questions()[: args.clips]
    jobs = [(q.example_id, " ".join(q.question.split()), rendition(cfg, q.example_id, TRAIN_VOICE_FAMILY[i % 7]))
            for i, q in enumerate(qs)]
    print(f"{len(jobs)} clips, espeak-ng {espeak_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs")

    synth, synth_wall, old, new, fwd = [], [], [], [], []
    for qid, text, r in jobs:
        t, w = time.thread_time(), time.perf_counter()
        audio = synthesize(text, r.espeak_voice, r.speed, r.pitch)
        synth.append(time.thread_time() - t)
        synth_wall.append(time.perf_counter() - w)
        m = enc.input_frames(audio.size)
        for k in range(2):  # alternate the order: neither variant always runs on a warmer cache
            for name, f in ((("old", lambda: enc.features(audio)[..., :m]), ("new", lambda: enc.features(audio, m)))
                            [:: 1 if k == 0 else -1]):
                t = time.thread_time()
                feats = f()
                (old if name == "old" else new).append(time.thread_time() - t)
        t = time.thread_time()
        enc.encode_inputs([(feats, enc.n_valid_frames(audio.size))])
        fwd.append(time.thread_time() - t)
    ms = lambda xs: 1000 * statistics.median(xs)  # noqa: E731
    print("\nper clip, one thread, CPU ms (median)")
    print(f"  synthesis, this thread (resampling)      {ms(synth):7.1f}   (wall, with espeak-ng's process: "
          f"{ms(synth_wall):.1f} ms)")
    print(f"  log-mel, 30 s window cut to M frames     {ms(old):7.1f}")
    print(f"  log-mel, the M frames only (now)         {ms(new):7.1f}   ratio old/new {ms(old) / ms(new):.1f}x")
    print(f"  encoder forward                          {ms(fwd):7.1f}")

    class Model:  # what clips_states reads of an LSLM
        encoder = enc

    cut_stft = enc.features
    variants = {"before: one by one, 30 s log-mel": (1, lambda a, frames=None: SpeechEncoder.features(enc, a), "auto"),
                "one by one": (1, cut_stft, "auto"), f"{args.workers} worker threads ahead": (args.workers, cut_stft,
                                                                                         "threads"),
                f"{args.workers} worker processes ahead": (args.workers, cut_stft, "processes")}
    walls, states = {}, {}
    for _ in range(2):  # twice each, alternating; fresh caches every time
        for name, (w, feats_fn, kind) in variants.items():
            enc.features = feats_fn
            with tempfile.TemporaryDirectory() as cache:
                os.environ["LSL_CACHE_DIR"] = cache
                t = time.perf_counter()
                states[name] = clips_states(Model, jobs, workers=w, worker_kind=kind)
                walls.setdefault(name, []).append(time.perf_counter() - t)
    enc.features = cut_stft
    ref = states[next(iter(variants))]
    same = all(torch.equal(a, b) for v in states.values() for a, b in zip(ref, v))
    base = min(walls[next(iter(variants))])
    print("\nend to end (corpus.clips_states), fresh caches, wall s, best of 2")
    for name, xs in walls.items():
        print(f"  {name:34s} {min(xs):6.1f} s  {len(jobs) / min(xs):6.1f} clips/s  speed-up {base / min(xs):.2f}x")
    print(f"  states equal across the four: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
