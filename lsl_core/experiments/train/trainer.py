"""The training loop of one stage: step-indexed (the batch, the lr and the RNG at step s depend only on
(config, s)), resumable bit for bit, checkpointing and monitoring on schedule.

Monitoring (held-out test questions, a seen and the unseen voice; with monitor_train_clips also that many
training clips as trained on, suffix _train) logs, at every eval step:
  agreement / agreement_unseen   token F1 of the speech answer vs the same model's text answer
                                 (default QA prompt) - the "does it hear" curve of every stage;
  ctc_ter / ctc_ter_unseen       ctc stage: token error rate of best-path CTC decoding;
  repeat_f1 / repeat_f1_unseen   repeat stage: token F1 of the repeated question vs the question.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import os
import shutil
import signal
import statistics
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch

from lsl_core.errors import LSLError
from lsl_core.experiments.train import augment as A
from lsl_core.experiments.train import objectives as O
from lsl_core.experiments.train.checkpoints import CONFIG_NAME, LOG_NAME, TARGETS_NAME, save_checkpoint
from lsl_core.experiments.train.config import TrainConfig
from lsl_core.experiments.train.corpus import TrainData, TrainExample
from lsl_core.experiments.train.state import load_resume, save_resume
from lsl_core.model import batch as B
from lsl_core.model.lslm import LSLM
from lsl_core.model.prompt import PromptTemplate


def with_template(model: LSLM, template: PromptTemplate) -> LSLM:
    """A view of `model` (same modules) whose prompts use another template."""
    view = copy.copy(model)
    view.use_template(template)
    return view


def bf16_native(device: torch.device) -> bool:
    """True where bf16 matmuls run natively (CUDA with bf16, CPUs with AMX/AVX512-BF16); elsewhere
    autocast to bf16 is emulated and ~40x slower than float32 (measured on AVX2 CPUs). On CUDA: compute capability
    >= 8 (Ampere and later) of this device - torch.cuda.is_bf16_supported() also says True where bf16 is only
    emulated (T4, V100) and asks about the current device, not this one."""
    if device.type == "cuda":
        if torch.version.hip:  # ROCm: every supported AMD GPU computes bf16
            return True
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_capability(index)[0] >= 8
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


class Trainer:
    """One stage of the curriculum over prepared data (see corpus.prepare_data)."""

    def __init__(self, cfg: TrainConfig, model: LSLM, data: TrainData, out: str | Path, resume_dir: str | Path,
                 *, step_offset: int = 0, init_adaptor: Path | None = None, progress: bool = True,
                 deadline: float | None = None) -> None:
        """deadline: a time.time() by which a fresh run() should be done; the step count is then fitted to it
        during warmup (fit_step, fitted_steps), at most cfg.steps."""
        if not data.train:
            raise LSLError("No training examples: check n_questions and voices in the train config.")
        self.cfg, self.data = cfg, data
        self.out = Path(out)
        self.resume_dir = Path(resume_dir)
        self.stopped_by: int | None = None  # the signal that stopped the last run() early, if any
        self.step_offset = step_offset
        self.init_adaptor = init_adaptor
        self.progress = progress
        self.deadline = deadline
        self._step_secs: list[float] = []  # seconds of each step of this run() (the time budget's measurement)
        self._eval_sec = 0.0  # seconds of the last monitor
        self._fit_at: int | None = None  # the step after which run() fits the step count (with a deadline)
        self._until_given = False
        self.model = model  # QA prompt: the checkpoint's own template (monitoring, qa objective)
        self.repeat_model = with_template(model, PromptTemplate(**{**cfg.prompt, "system": cfg.repeat_system}))
        self.device = model.device
        self.step = 0
        self.ctc = (O.CTCHead(model.llm.get_input_embeddings().weight, cfg.ctc_temperature, cfg.ctc_norm_weight,
                              cfg.seed).to(self.device) if cfg.objective == "ctc" else None)
        self.teacher = self._distillation_teacher() if cfg.distill_weight or cfg.align_weight else None
        self._perms: dict[int, torch.Tensor] = {}
        self._text_answers: list[str] | None = None  # monitoring text answers (frozen LLM: computed once)
        self._recent: list[float] = []
        self.last_terms: dict[str, float] = {}  # the unweighted terms of the last loss_on's loss (train log)
        named = self.trainable_named()
        adaptor = [p for n, p in named if not n.startswith("llm.")]
        llm = [p for n, p in named if n.startswith("llm.")]
        groups = [{"params": adaptor, "lr": cfg.lr, "peak_lr": cfg.lr}] if adaptor else []
        if llm:
            groups.append({"params": llm, "lr": cfg.llm_lr or cfg.lr, "peak_lr": cfg.llm_lr or cfg.lr})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        use_bf16 = cfg.autocast == "bf16" or (cfg.autocast == "auto" and bf16_native(self.device))
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
        torch.manual_seed(cfg.seed + 1)  # dropout stream (saved and restored on resume)

    def _distillation_teacher(self) -> LSLM:
        """The LLM as it is before this stage reads the typed questions: the model itself (frozen), the model with
        its LoRA disabled (lora), or a frozen copy (full, [one more LLM in memory])."""
        if self.cfg.strategy != "full":
            return self.model
        view = copy.copy(self.model)
        view.llm = copy.deepcopy(self.model.llm).requires_grad_(False).eval()
        return view

    @contextlib.contextmanager
    def _teacher_context(self):
        """While the teacher reads: lora - the adapter disabled and the LLM in eval mode (the LLM before the stage is
        a function of its input: no dropout of a backbone that has some), then back as it was."""
        if self.cfg.strategy != "lora":
            yield
            return
        llm = self.model.llm
        was = llm.training
        llm.eval()
        try:
            with llm.disable_adapter():
                yield
        finally:
            llm.train(was)

    # ------------------------------------------------------------------ parameters
    def trainable_named(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Trainable parameters with stable names: 'adaptor.*', 'ctc.*', then 'llm.*'."""
        out = [(f"adaptor.{n}", p) for n, p in self.model.adaptor.named_parameters() if p.requires_grad]
        if self.ctc is not None:
            out += [(f"ctc.{n}", p) for n, p in self.ctc.named_parameters()]
        out += [(f"llm.{n}", p) for n, p in self.model.llm.named_parameters() if p.requires_grad]
        return out

    def lr_factor(self, step: int) -> float:
        """Multiplier of the peak lr at 0-based optimizer step `step`: linear warmup, cosine decay."""
        c = self.cfg
        if step < c.warmup_steps:
            return (step + 1) / c.warmup_steps
        t = (step - c.warmup_steps) / max(1, c.steps - c.warmup_steps)
        return c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    # ------------------------------------------------------------------ data order
    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
            self._perms[epoch] = torch.randperm(len(self.data.train), generator=g)
        return self._perms[epoch]

    def batch_indices(self, step: int) -> list[int]:
        """Examples of 0-based step `step`: the next batch_size items of the epoch-wise shuffled stream."""
        n, bs = len(self.data.train), self.cfg.batch_size
        return [int(self._perm(p // n)[p % n]) for p in range(step * bs, (step + 1) * bs)]

    # ------------------------------------------------------------------ one step
    def step_states(self, ex: list[TrainExample], step: int | None) -> list[torch.Tensor]:
        """Encoder states [Te_i, d_enc] of the examples as step `step` trains on them: masked when the config asks
        for it (augment.py), as cached otherwise or when step is None."""
        c = self.cfg
        if step is None or not (c.time_masks or c.channel_masks):
            return [e.states for e in ex]
        return [A.mask_states(e.states, c.time_masks, c.time_mask_frames, c.channel_masks, c.channel_mask_width,
                              A.mask_generator(c.seed, step, slot)) for slot, e in enumerate(ex)]

    def loss_on(self, idx: list[int], step: int | None = None) -> torch.Tensor:
        """The objective's loss on the given examples (grad enabled by the caller); with `step`, the clips are
        augmented as that optimizer step trains on them."""
        ex = [self.data.train[i] for i in idx]
        self.last_terms = {}
        with self.autocast():
            queries = [B.speech_query(self.model, s) for s in self.step_states(ex, step)]  # [Ts_i, d] each
            if self.cfg.objective == "ctc":
                return O.ctc_alignment_loss(self.ctc, queries, [e.response for e in ex])
            model = self.repeat_model if self.cfg.objective == "repeat" else self.model
            if self.teacher is None:
                return O.response_loss(model, queries, [e.response for e in ex])
            text = [self.teacher.embed_text(e.text).embeds for e in ex]  # [Tt_i, d] each
            c = self.cfg
            out = O.paired_losses(model, self.teacher, queries, text, [e.response for e in ex], self._teacher_context(),
                                  kl=bool(c.distill_weight), align=self._alignment_loss(ex) if c.align_weight else None)
            self.last_terms = {k: round(float(v.detach()), 5) for k, v in out._asdict().items() if v is not None}
            return (out.ce + (c.distill_weight * out.kl if c.distill_weight else 0)
                    + (c.align_weight * out.align if c.align_weight else 0))

    def _alignment_loss(self, ex: list[TrainExample]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The config's alignment loss of these examples: span means [L, B, d] (speech, text) -> scalar."""
        if self.cfg.align_loss == "contrastive":
            return functools.partial(O.sequence_contrastive_loss, questions=[e.text for e in ex],
                                     temperature=self.cfg.align_temperature)
        return O.sequence_alignment_loss

    def train_mode(self, on: bool) -> None:
        self.model.adaptor.train(on and self.cfg.train_adaptor)
        self.model.llm.train(on and self.cfg.strategy != "frozen")

    def train_step(self) -> float:
        """One optimizer step (self.step -> self.step + 1); returns the batch loss before the update."""
        self.train_mode(True)
        factor = self.lr_factor(self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = g["peak_lr"] * factor
        loss = self.loss_on(self.batch_indices(self.step), self.step)
        if not torch.isfinite(loss):
            raise LSLError(f"Training loss became {loss.item()} at step {self.step + 1}; lower lr in the config.")
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for _, p in self.trainable_named()], self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return float(loss.item())

    # ------------------------------------------------------------------ monitoring
    @torch.no_grad()
    def monitor(self) -> dict:
        """Agreement of speech with text answers (+ the stage's own score) on the held-out clips."""
        from lsl_core.scoring import answer_agreement

        clips = self.data.monitor
        if not clips:
            return {}
        self.train_mode(False)
        c = self.cfg
        questions = list(dict.fromkeys(cl.question for cl in clips))
        with self.autocast():
            if self._text_answers is None or c.strategy != "frozen":
                self._text_answers = B.generate_batch(self.model, [self.model.embed_text(q).embeds for q in questions],
                                                      c.eval_max_new_tokens, c.gen_batch_size)
            queries = [B.speech_query(self.model, cl.states) for cl in clips]
            speech = B.generate_batch(self.model, queries, c.eval_max_new_tokens, c.gen_batch_size)
            extra: list[float] = []
            if c.objective == "ctc":
                hyps = [self.ctc.greedy(q) for q in queries]
                refs = [self.model.tokenizer(cl.question, add_special_tokens=False).input_ids for cl in clips]
                extra = [O.token_error_rate([h], [r]) for h, r in zip(hyps, refs)]
            elif c.objective == "repeat":
                rep = B.generate_batch(self.repeat_model, queries, c.eval_max_new_tokens, c.gen_batch_size)
                extra = [answer_agreement(r, cl.question) for r, cl in zip(rep, clips)]
        text_of = dict(zip(questions, self._text_answers))
        agree = [answer_agreement(s, text_of[cl.question]) for s, cl in zip(speech, clips)]
        out: dict = {}
        name = {"ctc": "ctc_ter", "repeat": "repeat_f1"}.get(c.objective)
        groups = (("", lambda cl: not cl.unseen and not cl.train), ("_unseen", lambda cl: cl.unseen),
                  ("_train", lambda cl: cl.train))
        for suffix, member in groups:
            sel = [i for i, cl in enumerate(clips) if member(cl)]
            if not sel:
                continue
            out[f"agreement{suffix}"] = sum(agree[i] for i in sel) / len(sel)
            out[f"n{suffix}"] = len(sel)
            if name:
                out[f"{name}{suffix}"] = sum(extra[i] for i in sel) / len(sel)
        out["example"] = {"question": clips[0].question, "text": text_of[clips[0].question], "speech": speech[0]}
        return out

    # ------------------------------------------------------------------ log
    @property
    def log_path(self) -> Path:
        return self.out / LOG_NAME

    def _log(self, row: dict) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def _truncate_log(self, step: int) -> None:
        """Keep log rows up to `step` (a resumed run rewrites what came after its state)."""
        if not self.log_path.is_file():
            return
        rows = [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]
        kept = [r for r in rows if r.get("step", 0) <= step]
        self.log_path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    # ------------------------------------------------------------------ loop
    def run(self, resume: bool = False, until: int | None = None) -> list[Path]:
        """Train to `until` (default cfg.steps), checkpointing and monitoring on schedule."""
        c = self.cfg
        fit_at = None
        if self.deadline is not None:  # checked before anything is written or restored
            if resume:
                raise LSLError("A time budget fits the step count of a fresh run; a resumed run keeps the count it "
                               "was fitted to (its train_config.json): resume without the time budget.")
            fit_at = fit_step(c)
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / CONFIG_NAME).write_text(json.dumps(c.to_dict(), indent=2) + "\n")
        if self.data.targets:
            (self.out / TARGETS_NAME).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                         for r in self.data.targets))
        if resume:
            load_resume(self)
            self._truncate_log(self.step)
        else:
            self.log_path.write_text("")
            # an earlier run's resume state: its log is gone, so goes its state (a fresh run killed before its first
            # checkpoint must not --resume from it, the log of the steps before it lost)
            if (self.resume_dir / "state.json").is_file():
                shutil.rmtree(self.resume_dir, ignore_errors=True)
        until = c.steps if until is None else min(until, c.steps)
        ckpt_steps, eval_steps = set(c.checkpoint_steps()), set(c.eval_steps())
        saved: list[Path] = []
        last_eval: dict = {}
        if self.step == 0 and 0 in eval_steps:
            last_eval = self._eval_and_log()
        if self.deadline is not None and time.time() >= self.deadline:
            raise LSLError("The time budget was spent before the first step (the model and the data took it); the "
                           "data are cached now: run again with the same budget, or a larger one.")
        self._fit_at, self._until_given = fit_at, until < c.steps
        from tqdm import tqdm

        bar = tqdm(total=until, initial=self.step, desc=f"train {c.name}", unit="step", disable=not self.progress,
                   mininterval=5)
        self.stopped_by = None
        with StopRequest() as stop:
            saved += self._loop(until, ckpt_steps, eval_steps, last_eval, bar, stop)
        bar.close()
        if self.step not in ckpt_steps and (self.step == until or self.stopped_by is not None):
            save_resume(self)  # a partial run (until < steps, or stopped by a signal) can always be resumed
        return saved

    def _loop(self, until: int, ckpt_steps: set[int], eval_steps: set[int], last_eval: dict, bar,
              stop: "StopRequest") -> list[Path]:
        """Steps self.step -> until (or the end of the step in progress when a stop signal came)."""
        c = self.cfg
        saved: list[Path] = []
        while self.step < until:
            t0 = time.time()
            lr = self.lr_factor(self.step) * c.lr
            loss = self.train_step()
            self._recent = (self._recent + [loss])[-25:]
            self._step_secs.append(time.time() - t0)
            self._log({"kind": "train", "step": self.step, "global_step": self.step_offset + self.step,
                       "loss": round(loss, 5), **self.last_terms, "lr": lr, "sec": round(time.time() - t0, 3)})
            if self.step == self._fit_at:  # before this step's monitor and checkpoint: they follow the fitted count
                c = self._fit_to_deadline()
                until = c.steps if not self._until_given else min(until, c.steps)
                ckpt_steps, eval_steps = set(c.checkpoint_steps()), set(c.eval_steps())
                bar.total = until
                bar.refresh()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}")
            if self.step in eval_steps:
                last_eval = self._eval_and_log()
            if self.step in ckpt_steps:
                extra = {"stage_step": self.step, "train_loss_recent": round(sum(self._recent) / len(self._recent), 5)}
                if last_eval.get("step") == self.step:
                    extra["monitor"] = {k: v for k, v in last_eval.items() if k not in ("kind", "example")}
                saved.append(save_checkpoint(c, self.model, self.out, self.step_offset + self.step,
                                             init_adaptor=self.init_adaptor, extra=extra, ctc=self.ctc))
                save_resume(self)
            if stop.signum is not None and self.step < until:
                self.stopped_by = stop.signum
                break
        return saved

    def _eval_and_log(self) -> dict:
        t0 = time.time()
        res = self.monitor()
        self._eval_sec = time.time() - t0
        if not res:
            return {}
        row = {"kind": "eval", "step": self.step, "global_step": self.step_offset + self.step, **res,
               "sec": round(time.time() - t0, 1)}
        self._log(row)
        if self.progress:
            shown = {k: round(v, 3) for k, v in res.items() if isinstance(v, float)}
            print(f"step {self.step_offset + self.step}: {shown}", flush=True)
        return row

    def _fit_to_deadline(self) -> TrainConfig:
        """At step fit_step(cfg): set cfg.steps to what fits before the deadline (fitted_steps), rewrite
        train_config.json with it, log and print the measurement; returns the new config."""
        c = self.cfg
        allowed = c.steps
        secs = self._step_secs[FIT_SKIP:] or self._step_secs  # the first steps warm up caches and kernels
        sec = statistics.median(secs)
        save_sec = self._time_resume_write()
        left = self.deadline - time.time()
        steps = fitted_steps(c, self.step, sec, self._eval_sec, left, save_sec=save_sec)
        self.cfg = c = dataclasses.replace(c, steps=steps)
        (self.out / CONFIG_NAME).write_text(json.dumps(c.to_dict(), indent=2) + "\n")
        row = {"kind": "fit", "step": self.step, "global_step": self.step_offset + self.step, "steps": steps,
               "sec_per_step": round(sec, 4), "measured_steps": len(secs), "eval_sec": round(self._eval_sec, 2),
               "save_sec": round(save_sec, 3), "seconds_left": round(left, 1)}
        self._log(row)
        print(f"time budget: {sec:.3f} s a step (median of {len(secs)}), {self._eval_sec:.1f} s a monitor, "
              f"{2 * save_sec:.1f} s a checkpoint, {left:.0f} s left -> {steps} steps (of at most {allowed}); "
              f"{self.out / CONFIG_NAME} holds the count: resume with --config that file", flush=True)
        return c


    def _time_resume_write(self) -> float:
        """Seconds one resume-state write takes (the run's largest write: weights, optimizer moments), measured by
        writing one into a scratch folder beside resume_dir, removed again."""
        import shutil

        real = self.resume_dir
        self.resume_dir = real.with_name(real.name + ".timing")
        try:
            t0 = time.time()
            save_resume(self)
            return time.time() - t0
        finally:
            shutil.rmtree(self.resume_dir, ignore_errors=True)
            self.resume_dir = real


FIT_AT = 20  # the step count is fitted after this many steps (fewer when warmup or the first checkpoint is earlier)
FIT_SKIP = 3  # ... from the median seconds of the steps after the first FIT_SKIP
FIT_MARGIN = (15.0, 0.03)  # seconds, and a share of what is left, kept for the last save and the unexpected


def fit_step(cfg: TrainConfig) -> int:
    """The step after which a time budget fits the step count: FIT_AT, but inside the warmup (whose lr does not
    depend on the step count) and before the first monitor or checkpoint after step 0 (which do), so that the run
    is exactly the run of a config with the fitted count. Raises when no step qualifies."""
    first = min([s for s in cfg.eval_steps() if s > 0], default=cfg.steps + 1)
    at = min(FIT_AT, cfg.warmup_steps, first - 1, cfg.steps)
    if at < 1:
        raise LSLError(f"A time budget fits the step count during the warmup and before the first checkpoint or "
                       f"monitor; this config has warmup_steps={cfg.warmup_steps} and its first one at step {first}. "
                       "Raise warmup_steps or move the first checkpoint (save_steps, save_every, eval_every).")
    return at


def fitted_steps(cfg: TrainConfig, done: int, sec_per_step: float, eval_sec: float, seconds_left: float,
                 save_sec: float = 0.0) -> int:
    """The largest step count N in [done, cfg.steps] whose remaining steps (N - done) x sec_per_step plus the
    monitors still to come (cfg with N steps: eval_steps after `done`, each eval_sec) plus its checkpoints after
    `done` (each 2 x save_sec: a resume write, and the checkpoint's own weights, bounded by it) fit in seconds_left
    less FIT_MARGIN. `done` when none fits."""
    budget = seconds_left - FIT_MARGIN[0] - FIT_MARGIN[1] * max(0.0, seconds_left)

    def cost(n: int) -> float:
        c = dataclasses.replace(cfg, steps=n)
        evals = sum(s > done for s in c.eval_steps())
        saves = sum(s > done for s in c.checkpoint_steps())
        return (n - done) * sec_per_step + evals * eval_sec + saves * 2 * save_sec

    lo, hi = done, cfg.steps  # cost rises with n: the largest n with cost(n) <= budget
    if cost(hi) <= budget:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= budget else (lo, mid - 1)
    return lo


class StopRequest:
    """While a stage trains: the first Ctrl-C (SIGINT) or SIGTERM only asks the loop to stop after the step in
    progress (the trainer then saves its resume state); a second one interrupts at once. Signal handlers can
    only be set in the main thread; elsewhere this does nothing."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        os.write(2, f"\n{signal.Signals(signum).name}: stopping after the step in progress and saving the resume "
                    "state (send it again to stop at once)\n".encode())  # unbuffered: safe inside a handler

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False
