"""The training corpus: SD-QA English *test* questions (never dev) spoken by espeak-ng voice renditions,
as cached encoder states, plus each objective's response tokens.

The ~1,000 test questions cover a small vocabulary, so the alignment stages (ctc, repeat) can add
`vocab_sentences` seeded word sequences ("Lavender kingdom teachings revived wooden.") drawn from
the LLM tokenizer's own word tokens: every spoken word then has a token to map to, and no
evaluation question is ever spoken. `vocab_doses` adds sentences in which new words occur in exactly a set
number of clips each (dose.py: the dose-response of hearing). Any stage can add `written_questions`: questions the backbone
writes from few-shot lists of training questions, none near a dev or monitoring question (written.py).
Word sequences and written questions are each spoken once, by the training voices in turn.

A rendition is (voice, speed, pitch, variant): every training question is spoken once by every training
voice, at a speed, pitch and (if the config lists `variants`) espeak-ng voice variant - a different
speaker timbre: formants, breathiness, the Klatt synthesizer - drawn per (question, voice) from a seeded
generator, so the same config always gives the same audio. The held-out voice speaks only the
monitoring questions, always without a variant.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from lsl_core.errors import LSLError
from lsl_core.experiments.train.config import TrainConfig
from lsl_core.experiments.train.vocab import vocabulary_sentences, vocabulary_words  # noqa: F401 (re-exported)
from lsl_core.model import batch as B
from lsl_core.model.lslm import LSLM


@dataclass(frozen=True)
class Rendition:
    """How one clip is spoken: an espeak-ng voice (accent) with a speed (words/min), pitch (0..99) and
    voice variant (speaker timbre, `espeak-ng --voices=variant`; "" = none)."""

    voice: str
    speed: int | None = None  # None = espeak-ng default (175)
    pitch: int | None = None  # None = espeak-ng default (50)
    variant: str = ""

    @property
    def espeak_voice(self) -> str:
        """The name espeak-ng takes: "en-gb" or "en-gb+m3"."""
        return f"{self.voice}+{self.variant}" if self.variant else self.voice

    def key(self) -> str:
        return f"{self.espeak_voice}|s{self.speed}|p{self.pitch}"


@dataclass
class TrainExample:
    """One training clip: cached encoder states, the transcript tokens and the response to learn."""

    key: str  # "<question id>__<voice>"
    states: torch.Tensor  # [Te, d_enc] encoder states (float16, CPU)
    response: list[int]  # target token ids of the objective (ctc: transcript; repeat/qa: ... + <|im_end|>)
    text: str = ""  # the spoken text (the distillation teacher reads it typed)


@dataclass
class MonitorClip:
    """A held-out clip for the progress curves in the log (never trained on)."""

    key: str
    question: str
    voice: str
    states: torch.Tensor  # [Te, d_enc]
    unseen: bool  # spoken by the held-out voice
    train: bool = False  # a training clip (its training rendition): shows what the stage memorised


@dataclass
class TrainData:
    train: list[TrainExample]
    monitor: list[MonitorClip] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)  # rows for train_targets.jsonl


def split_questions(cfg: TrainConfig) -> tuple[list, list]:
    """(training, monitoring) SD-QA test questions: a seeded permutation, disjoint, never dev questions (nor a test
    question spoken as a dev one: the same words in any case, spacing or punctuation, data.sdqa.spoken_form)."""
    from lsl_core.data.sdqa import load_sdqa_dev, load_sdqa_train_questions, spoken_form

    dev = {spoken_form(q.question) for q in load_sdqa_dev()}  # the loader drops them too; checked again here
    qs = [q for q in load_sdqa_train_questions() if spoken_form(q.question) not in dev]
    n_train = cfg.n_questions or len(qs) - cfg.n_val_questions
    need = n_train + cfg.n_val_questions
    if need > len(qs) or n_train <= 0:
        raise LSLError(f"train config asks for {need} questions (n_questions + n_val_questions) but only "
                       f"{len(qs)} SD-QA test questions exist; lower n_questions or n_val_questions.")
    perm = np.random.default_rng(cfg.seed).permutation(len(qs))
    monitor = [qs[i] for i in perm[: cfg.n_val_questions]]  # fixed by the seed, whatever n_questions is
    # the test split holds a question twice under two ids ("... on Earth?" / "... on earth?"): a monitoring
    # question's text is never a training question's, whatever id it has (seeds 9, 16, 27, ... split such a pair)
    from lsl_core.experiments.train.written import normalised

    held = {normalised(q.question) for q in monitor}
    rest = [qs[i] for i in perm[cfg.n_val_questions:] if normalised(qs[i].question) not in held]
    return rest[:n_train], monitor


def rendition(cfg: TrainConfig, question_id: str, voice: str) -> Rendition:
    """The seeded (speed, pitch, variant) of one question x voice (uniform in the config's ranges and
    variants; the variant is drawn last, so adding variants leaves every speed and pitch as it was)."""
    h = hashlib.sha256(f"{cfg.seed}|{question_id}|{voice}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(h[:8], "little"))
    speed = int(rng.integers(cfg.speed_range[0], cfg.speed_range[1] + 1)) if cfg.speed_range else None
    pitch = int(rng.integers(cfg.pitch_range[0], cfg.pitch_range[1] + 1)) if cfg.pitch_range else None
    variant = str(cfg.variants[int(rng.integers(len(cfg.variants)))]) if cfg.variants else ""
    return Rendition(voice, speed, pitch, variant)


def clip_content_key(text: str, r: Rendition) -> str:
    """Cache identity of a synthesized clip: the synthesizer's version, the rendition and the text."""
    from lsl_core.data.synth import espeak_version

    return hashlib.sha256(f"espeak-ng {espeak_version()}|{r.key()}|{text}".encode()).hexdigest()[:12]


def clip_states(model: LSLM, question_id: str, text: str, r: Rendition,
                inputs: Callable[[], list] | None = None, timings: dict[str, float] | None = None) -> torch.Tensor:
    """Encoder states [Te, d_enc] of `text` spoken as rendition r; synthesized and encoded only on a cache miss
    (`inputs`: the clip's encoder inputs made ahead, `timings`: see clips_states)."""
    from lsl_core.data.synth import synthesize

    return B.cached_encoder_states(model.encoder, f"espeak-{r.voice}", question_id,
                                   lambda: synthesize(text, r.espeak_voice, r.speed, r.pitch),
                                   clip_content_key(text, r), inputs=inputs, timings=timings)


ENCODER_BATCH_CUDA = 64  # clips of one length encoded together when the encoder is on a GPU (clips_states)
WORKER_KINDS = ("auto", "threads", "processes")  # clips_states' workers (auto: processes on a GPU, else threads)

_WORKER_INPUTS = None  # a worker process's EncoderInputs (_start_clip_worker)


def _start_clip_worker(featurizer) -> None:
    """A worker process's initializer: keep the encoder's CPU half (SpeechEncoder.cpu_half)."""
    global _WORKER_INPUTS
    torch.set_num_threads(1)  # one core a worker: the pool is the parallelism
    _WORKER_INPUTS = featurizer


def _clip_worker_inputs(text: str, voice: str, speed: int | None, pitch: int | None) -> list[tuple[np.ndarray, int]]:
    """In a worker process: synthesize a clip and compute its encoder inputs (log-mel [1, n_mels, M] float32, valid
    frames) per window, as numpy arrays for the trip back."""
    from lsl_core.data.synth import synthesize

    return [(f.numpy(), n) for f, n in _WORKER_INPUTS.inputs(synthesize(text, voice, speed, pitch))]


def clips_states(model: LSLM, jobs: list[tuple[str, str, Rendition]], workers: int = 1, progress: bool = False,
                 desc: str = "encoder states", encoder_batch: int | None = None,
                 worker_kind: str = "threads") -> list[torch.Tensor]:
    """clip_states of every (question id, text, rendition) job, in order.

    With workers > 1 the clips not yet cached are synthesized (espeak-ng, a subprocess) and turned into encoder
    inputs (the log-mel STFT, SpeechEncoder.inputs) on that many threads, a bounded window ahead of the encoder,
    which runs on this thread: on a many-core machine with a GPU the encoder no longer waits for the CPU work.
    There, the encoder takes the ready clips of the same length together (SpeechEncoder.encode_inputs_batch, at
    most `encoder_batch` at a time, default ENCODER_BATCH_CUDA on a GPU and 1 elsewhere, grouped within chunks of
    32 batches of jobs), to spread a forward's fixed cost (Python, kernel launches); on a CPU the compute dominates
    and batching gains nothing. On a lent H200 it bought little either (2026-12-04, 43,079 clips, 16 threads: 258 s
    in the forwards, ~6 ms a clip, as one at a time took before; docs/results/gpu_open_vocab_attempt3.log), so the
    line now counts the forwards: ~9 clips a forward there (benchmarks/bench_encoder_groups.py), ~56 ms each, far
    slower than the GPU computes them: host-bound, the GIL shared with 16 busy worker threads the suspect, which
    worker processes (below) remove.
    `worker_kind`: the workers are threads, or processes (spawned, each with the encoder's CPU half,
    SpeechEncoder.cpu_half: the log-mel comes back as float32 and moves to the encoder here, as `features` moves
    it), which leave this thread's GIL to the encoder's Python; "auto" = processes when the encoder is on a GPU
    (`train`'s CLI default). Threads by default here: a spawned process imports the caller's main script again,
    which runs it whole unless its code sits under `if __name__ == "__main__":`.
    The states are those of clip_states (the same inputs, the same forward; encoded in batches, equal to float
    rounding), whatever `workers` and `worker_kind` are. When workers made clips, a last line says how the
    encoder's thread spent the time: waiting for them (near the whole time: synthesis is the bottleneck, more
    workers), in the encoder's forward (batched: in how many forwards), writing the cache, and the rest (loading
    cached clips, Python, and - with many busy worker threads - waiting for the GIL).
    """
    from tqdm import tqdm

    from lsl_core.data.synth import synthesize

    enc = model.encoder
    ahead = workers > 1 and hasattr(enc, "inputs")
    on_gpu = getattr(enc, "device", torch.device("cpu")).type == "cuda"
    batch = (encoder_batch or (ENCODER_BATCH_CUDA if on_gpu else 1)) if ahead else 1
    chunk = 1 if batch == 1 else 32 * batch  # jobs whose ready clips are grouped by length
    window = max(8 * workers, 2 * chunk)
    key = lambda i: (f"espeak-{jobs[i][2].voice}", jobs[i][0], clip_content_key(jobs[i][1], jobs[i][2]))  # noqa: E731
    todo = iter([i for i in range(len(jobs)) if not B.encoder_cache_path(enc, *key(i)).is_file()] if ahead else [])
    if worker_kind not in WORKER_KINDS:
        raise LSLError(f"Unknown worker kind {worker_kind!r}; use one of {WORKER_KINDS}.")
    processes = ahead and hasattr(enc, "cpu_half") and (worker_kind == "processes"
                                                        or (worker_kind == "auto" and on_gpu))
    out: list[torch.Tensor] = []
    if processes:
        import multiprocessing

        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_clip_worker, initargs=(enc.cpu_half(),))
    else:
        pool = ThreadPoolExecutor(max_workers=workers) if ahead else None
    pending: dict[int, Future] = {}
    t0, waited, made, timings = time.perf_counter(), 0.0, 0, {"encode": 0.0, "write": 0.0}
    forwards = 0  # of the batched path: how many clips a forward took on average is what batching bought

    def ready(fut: Future) -> list:  # the worker's encoder inputs, timing the wait for them
        nonlocal waited, made
        t = time.perf_counter()
        inputs = fut.result()
        waited += time.perf_counter() - t
        if processes:  # float32 log-mel from a worker process: onto the encoder, as its own `features` does
            inputs = [(torch.from_numpy(f).to(device=enc.device, dtype=enc.dtype), n) for f, n in inputs]
        made += 1
        return inputs

    def fill() -> None:  # keep the window of clips made ahead full
        while pool is not None and len(pending) < window:
            j = next(todo, None)
            if j is None:
                break
            _, tj, rj = jobs[j]
            if processes:
                pending[j] = pool.submit(_clip_worker_inputs, tj, rj.espeak_voice, rj.speed, rj.pitch)
            else:
                pending[j] = pool.submit(lambda tj=tj, rj=rj: enc.inputs(synthesize(tj, rj.espeak_voice, rj.speed,
                                                                                      rj.pitch)))

    bar = tqdm(total=len(jobs), desc=desc, unit="clip", mininterval=5, disable=not progress)
    try:
        for start in range(0, len(jobs), chunk):
            fill()
            part = range(start, min(start + chunk, len(jobs)))
            encoded: dict[int, torch.Tensor] = {}
            misses = [i for i in part if i in pending] if batch > 1 else []
            if misses:  # the chunk's new clips, those of one length together
                inputs = [ready(pending.pop(i)) for i in misses]
                lengths = Counter(x[0][0].shape[-1] for x in inputs if len(x) == 1)  # as encode_inputs_batch groups
                forwards += sum(-(-n // batch) for n in lengths.values()) + sum(len(x) for x in inputs if len(x) > 1)
                t = time.perf_counter()
                states = [s.to("cpu", torch.float16).contiguous() for s in enc.encode_inputs_batch(inputs, batch)]
                timings["encode"] += time.perf_counter() - t
                encoded = dict(zip(misses, states))
            for i in part:
                qid, text, r = jobs[i]
                if i in encoded:
                    t = time.perf_counter()
                    B.store_encoder_states(B.encoder_cache_path(enc, *key(i)), encoded[i])
                    timings["write"] += time.perf_counter() - t
                    out.append(encoded[i])
                else:
                    fut = pending.pop(i, None)
                    out.append(clip_states(model, qid, text, r, timings=timings,
                                           inputs=(lambda f=fut: ready(f)) if fut is not None else None))
                bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            for fut in pending.values():
                fut.cancel()
            pool.shutdown(wait=True)
    if made:  # a result line, as train's "data: ...": printed with or without progress bars
        total = time.perf_counter() - t0
        rest = total - waited - timings["encode"] - timings["write"]
        print(f"{desc}: {len(jobs)} clips, {made} made on {workers} worker {'processes' if processes else 'threads'}, "
              f"in {total:.0f} s; the encoder "
              f"waited {waited:.0f} s for them, encoded {timings['encode']:.0f} s"
              + (f" in {forwards} forwards (up to {batch} clips of one length at a time)" if batch > 1 else "")
              + f", wrote the cache {timings['write']:.0f} s, the rest {rest:.0f} s", flush=True)
    return out


def transcript_ids(model: LSLM, text: str) -> list[int]:
    """The question's token ids exactly as the text modality sees them (no special tokens)."""
    return list(model.tokenizer(text, add_special_tokens=False).input_ids)


def self_distillation_targets(model: LSLM, questions: list[str], max_new_tokens: int,
                              batch_size: int) -> list[list[int]]:
    """The backbone's own greedy answers (token ids) to the typed questions, cached on disk.

    Key: LLM weight digest, prompt template, max_new_tokens, question text. Call before any LoRA is
    attached (the targets are the *base* model's answers).
    """
    from lsl_core.cache import cache_dir

    key = hashlib.sha256(json.dumps([B.module_digest(model.llm), model.template.to_dict(), max_new_tokens],
                                    sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("targets") / f"{key}.json"
    cached: dict[str, list[int]] = json.loads(path.read_text()) if path.is_file() else {}
    todo = [q for q in dict.fromkeys(questions) if q not in cached]
    if todo:
        t0 = time.time()

        def save(idx: list[int], ids: list[list[int]]) -> None:  # after every batch: an interrupted run keeps them
            cached.update((todo[i], row) for i, row in zip(idx, ids))
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cached))
            os.replace(tmp, path)
            done = sum(q in cached for q in todo)
            print(f"targets: {done}/{len(todo)} greedy answers ({time.time() - t0:.0f} s)", flush=True)

        B.generate_ids_batch(model, [model.embed_text(q).embeds for q in todo], max_new_tokens, batch_size,
                             on_batch=save)
    return [cached[q] for q in questions]


def responses(cfg: TrainConfig, model: LSLM, texts: list[str]) -> list[list[int]]:
    """Target token ids of each training question for the config's objective."""
    if cfg.objective == "ctc":
        return [transcript_ids(model, t) for t in texts]
    if cfg.objective == "repeat":
        return [[*transcript_ids(model, t), B.eos_id(model)] for t in texts]
    return self_distillation_targets(model, texts, cfg.target_max_new_tokens, cfg.gen_batch_size)


def stage_texts(cfg: TrainConfig, model: LSLM, progress: bool = True) -> tuple[list, list, list]:
    """A stage's texts: (training questions as (id, text), extra texts spoken once as (id, text) - word sequences,
    dose sentences, written questions -, monitoring questions)."""
    train_qs, val_qs = split_questions(cfg)
    items = [(q.example_id, " ".join(q.question.split())) for q in train_qs]
    extra = vocabulary_sentences(model.tokenizer, cfg.vocab_sentences, cfg.vocab_words, cfg.seed,
                                 cfg.vocab_cased)  # spoken once
    if cfg.vocab_doses:  # new words in exactly d clips each (dose.py)
        from lsl_core.experiments.train.dose import config_groups, dose_sentences

        extra += dose_sentences(config_groups(cfg, model), cfg.seed, cfg.vocab_cased)
    if cfg.written_questions:
        from lsl_core.data.sdqa import load_sdqa_dev
        from lsl_core.experiments.train.written import written_questions

        banned = [q.question for q in load_sdqa_dev()] + [q.question for q in val_qs]
        extra += written_questions(model, [t for _, t in items], banned, cfg.written_questions, cfg.seed,
                                   progress=progress)
    return items, extra, val_qs


def stage_clips(cfg: TrainConfig, items: list, extra: list) -> list[tuple[str, str, str, int]]:
    """The training clips of stage_texts, in order: (id, text, voice, index into items + extra). Every question
    is spoken by every training voice; each extra text once, by the training voices in turn."""
    clips = [(qid, t, v, k) for k, (qid, t) in enumerate(items) for v in cfg.voices]
    return clips + [(qid, t, cfg.voices[i % len(cfg.voices)], len(items) + i) for i, (qid, t) in enumerate(extra)]


def prepare_data(cfg: TrainConfig, model: LSLM, progress: bool = True, workers: int = 1,
                 encoder_batch: int | None = None, worker_kind: str = "threads") -> TrainData:
    """Questions x renditions -> cached encoder states + the objective's responses (+ monitoring clips);
    `workers`: threads or processes (`worker_kind`) that synthesize ahead of the encoder, `encoder_batch`: clips of
    one length it takes together (clips_states)."""
    items, extra, val_qs = stage_texts(cfg, model, progress)
    targets = responses(cfg, model, [t for _, t in items + extra])
    jobs = [(qid, t, targets[k], v) for qid, t, v, k in stage_clips(cfg, items, extra)]
    mjobs = []
    for k, q in enumerate(val_qs):
        t = " ".join(q.question.split())
        seen = cfg.voices[k % len(cfg.voices)]
        for v, unseen in [(seen, False)] + ([(cfg.heldout_voice, True)] if cfg.heldout_voice else []):
            mjobs.append((q.example_id, t, v, unseen))
    # one call for the training and the monitoring clips: one pool of workers (spawned processes start in seconds)
    states = clips_states(model, [(qid, t, rendition(cfg, qid, v)) for qid, t, _, v in jobs]
                          + [(qid, t, Rendition(v)) for qid, t, v, _ in mjobs], workers, progress,
                          "encoder states (train + monitor)", encoder_batch, worker_kind)
    train = [TrainExample(f"{qid}__{v}", s, list(resp), t) for (qid, t, resp, v), s in zip(jobs, states)]
    monitor = [MonitorClip(f"{qid}__{v}", t, v, s, unseen)
               for (qid, t, v, unseen), s in zip(mjobs, states[len(jobs):])]
    if cfg.monitor_train_clips:
        pick = np.random.default_rng(cfg.seed + 104729).choice(len(train), min(cfg.monitor_train_clips, len(train)),
                                                               replace=False)
        monitor += [MonitorClip(train[i].key, train[i].text, train[i].key.rsplit("__", 1)[-1], train[i].states, False,
                                train=True) for i in sorted(pick)]
    stops = set(model.stop_ids)
    rows = [{"example_id": qid, "question": t, "target": model.tokenizer.decode(r, skip_special_tokens=True).strip(),
             "stopped": bool(r) and r[-1] in stops} for (qid, t), r in zip(items + extra, targets)]
    return TrainData(train, monitor, rows)
