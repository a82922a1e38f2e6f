"""Train the speech adaptor (+ LoRA, or the whole LLM) by self-distillation -> a checkpoint trajectory.

    python -m lsl_core train --config configs/train_lora.json [--resume] [--steps N] [--out DIR]

The encoder is always frozen; the adaptor always trains; the LLM is `frozen`, `lora` (r=8, α=4,
dropout 0.1 on q,k,v,o as in the seed paper) or `full`. Data: SD-QA English *test* questions only
(the dev split is the evaluation set), spoken by several espeak-ng voices - one voice
(en-gb-scotland) is held out as the "unseen accent". The target response is the backbone's own
greedy answer to the typed question, so a perfectly aligned model answers speech exactly as it
answers text. The loss covers the response tokens only.

Written into the trajectory folder `out` (the shipped demo trajectories follow this layout):
    train_config.json        this TrainConfig (re-run: --config <out>/train_config.json)
    train_log.jsonl          {"kind": "train", step, loss, lr, sec} per step and
                             {"kind": "eval", step, agreement, agreement_unseen, ...} at eval points
    train_targets.jsonl      the self-distillation targets (question id, question, answer)
    <strategy>-step<NNNN>/   manifest.json + adaptor.safetensors (+ lora/ or llm/), in save_dtype
Resume state (trainable weights in float32, AdamW moments, RNG, step; safetensors + JSON, never
pickle) lives outside the trajectory, in cache_dir("train", <folder name>, "resume") or --resume-dir.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lsl_core.errors import LSLError
from lsl_core.model import batch as B
from lsl_core.model.embedded import EMBEDDED_ENCODER, EMBEDDED_LLM
from lsl_core.model.loading import CheckpointManifest, load_checkpoint, write_manifest
from lsl_core.model.lslm import LSLM

TrainStrategy = Literal["frozen", "lora", "full"]
TRAIN_STRATEGIES = ("frozen", "lora", "full")
CONFIG_NAME = "train_config.json"
LOG_NAME = "train_log.jsonl"
TARGETS_NAME = "train_targets.jsonl"
_RESUME_FORMAT = 1


# =========================================================================== config
@dataclass(frozen=True)
class TrainConfig:
    name: str = "lora"  # run name: checkpoint names are "<name>-step<NNNN>" (unique within a zoo)
    strategy: TrainStrategy = "lora"  # frozen: adaptor only; lora: adaptor + LoRA; full: adaptor + all LLM weights
    out: str = "assets/checkpoints/smollm2-135m-whisper-tiny-lora"  # trajectory folder (relative to the cwd)
    llm: str = EMBEDDED_LLM  # backbone: "embedded:...", local folder or hub id (as in a manifest)
    encoder: str = EMBEDDED_ENCODER  # speech encoder (Whisper), frozen
    family: str = "smollm2-135m+whisper-tiny.en"  # manifest family (groups checkpoints for R² fits)
    prompt: dict = field(default_factory=dict)  # PromptTemplate fields; {} = the default chat template
    downsample: int = 5  # encoder frames stacked by the adaptor (5 x 20 ms = 100 ms)
    adaptor_seed: int = 0  # adaptor init seed: seed 0 = the shipped embedded-untrained checkpoint
    # -- data
    n_questions: int = 240  # training questions (a seeded sample of the SD-QA test questions)
    n_val_questions: int = 16  # further test questions used only to monitor agreement during training
    voices: tuple[str, ...] = ("en-gb", "en-gb-x-rp", "en-us", "en-029")  # espeak-ng training voices
    heldout_voice: str = "en-gb-scotland"  # never trained on; monitored as the "unseen accent"
    target_max_new_tokens: int = 32  # length cap of the backbone's greedy answers (the targets)
    gen_batch_size: int = 16  # batch size of batched greedy generation (targets, monitoring)
    # -- optimisation
    steps: int = 400  # optimizer steps
    batch_size: int = 4  # clips per step
    lr: float = 1e-3  # peak learning rate of the adaptor (and of LoRA)
    llm_lr: float | None = None  # peak learning rate of the LLM weights (LoRA/full); None -> lr
    warmup_steps: int = 20  # linear warmup, then cosine decay to min_lr_ratio * peak
    min_lr_ratio: float = 0.1  # final lr as a fraction of the peak
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping)
    lora_r: int = 8  # LoRA rank (seed paper: 8)
    lora_alpha: int = 4  # LoRA alpha (seed paper: 4, i.e. scaling 0.5)
    lora_dropout: float = 0.1  # LoRA dropout (seed paper: 0.1)
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention projections
    seed: int = 0  # question sample, data order, LoRA init and dropout
    # -- checkpoints / monitoring
    save_every: int = 100  # checkpoint every K steps (0 = only save_steps and the last step)
    save_steps: tuple[int, ...] = (25,)  # extra checkpoint steps (early ones, for the trajectory)
    eval_every: int = 0  # monitor agreement every K steps (0 = at checkpoints only); also at step 0
    eval_max_new_tokens: int = 24  # answer length when monitoring agreement
    save_dtype: Literal["float16", "float32", "bfloat16"] = "float16"  # dtype of shipped weights
    autocast: Literal["auto", "bf16", "none"] = "auto"  # auto: bf16 on CUDA, none on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> LSLError:
            return LSLError(f"train config field '{name}' {why} (got {getattr(self, name)!r}).")

        if not self.name or any(c in self.name for c in "/\\ "):
            raise bad("name", "must be a non-empty name without slashes or spaces")
        if self.strategy not in TRAIN_STRATEGIES:
            raise bad("strategy", f"must be one of {TRAIN_STRATEGIES}")
        for k in ("steps", "batch_size", "n_questions", "target_max_new_tokens", "gen_batch_size", "downsample",
                  "lora_r", "eval_max_new_tokens"):
            if int(getattr(self, k)) <= 0:
                raise bad(k, "must be a positive integer")
        for k in ("n_val_questions", "warmup_steps", "save_every", "eval_every"):
            if int(getattr(self, k)) < 0:
                raise bad(k, "must be >= 0")
        if not self.lr > 0 or (self.llm_lr is not None and not self.llm_lr > 0):
            raise bad("lr" if not self.lr > 0 else "llm_lr", "must be a positive number")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "must be in [0, 1]")
        if not 0 <= self.lora_dropout < 1:
            raise bad("lora_dropout", "must be in [0, 1)")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise bad("weight_decay" if self.weight_decay < 0 else "grad_clip", "must be >= 0")
        if not self.voices or len(set(self.voices)) != len(self.voices):
            raise bad("voices", "must list at least one voice, each once")
        if self.heldout_voice and self.heldout_voice in self.voices:
            raise bad("heldout_voice", "must not be a training voice: it is the unseen accent")
        if any(int(s) <= 0 for s in self.save_steps):
            raise bad("save_steps", "must hold positive step numbers")
        if self.save_dtype not in ("float16", "float32", "bfloat16"):
            raise bad("save_dtype", "must be float16, float32 or bfloat16")
        if self.autocast not in ("auto", "bf16", "none"):
            raise bad("autocast", "must be auto, bf16 or none")

    # -- (de)serialisation
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "TrainConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise LSLError(f"{source}: unknown train config field(s) {unknown}; known: {sorted(known)}.")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**kw)
        except TypeError as exc:
            raise LSLError(f"{source}: bad train config ({exc}).") from None

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        p = Path(path)
        if not p.is_file():
            raise LSLError(f"Train config {p} not found. Pass a JSON file such as configs/train_lora.json.")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise LSLError(f"Train config {p} is not valid JSON ({exc}).") from None
        return cls.from_dict(data, str(p))

    def digest(self, ignore: tuple[str, ...] = ("device", "out")) -> str:
        """Identity of everything that changes the trained weights (resume refuses a different one)."""
        d = {k: v for k, v in self.to_dict().items() if k not in ignore}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def checkpoint_steps(self) -> list[int]:
        """Steps that get a checkpoint: multiples of save_every, save_steps, and the last step."""
        s = {int(x) for x in self.save_steps if int(x) <= self.steps} | {self.steps}
        if self.save_every:
            s |= set(range(self.save_every, self.steps + 1, self.save_every))
        return sorted(s)

    def eval_steps(self) -> list[int]:
        """Steps that log agreement: 0, every checkpoint, and multiples of eval_every."""
        s = {0, *self.checkpoint_steps()}
        if self.eval_every:
            s |= set(range(self.eval_every, self.steps + 1, self.eval_every))
        return sorted(s)


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LSLError(f"train config asks for device '{spec}' but CUDA is not available; use 'cpu' or 'auto'.")
    return dev


# =========================================================================== data
@dataclass
class TrainExample:
    """One training clip: cached encoder states and the response the model should give."""

    key: str  # "<question id>__<voice>"
    states: torch.Tensor  # [Te, d_enc] encoder states (float16, CPU)
    response: list[int]  # target token ids (end with <|im_end|> unless the answer hit the length cap)


@dataclass
class MonitorClip:
    """A held-out clip for the agreement curve in the log (never trained on)."""

    key: str
    question: str
    voice: str
    states: torch.Tensor  # [Te, d_enc]
    unseen: bool  # spoken by the held-out voice


@dataclass
class TrainData:
    train: list[TrainExample]
    monitor: list[MonitorClip] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)  # rows for train_targets.jsonl


def split_questions(cfg: TrainConfig) -> tuple[list, list]:
    """(training, monitoring) SD-QA test questions: a seeded sample, disjoint, never dev questions."""
    import numpy as np

    from lsl_core.data.sdqa import load_sdqa_train_questions

    qs = load_sdqa_train_questions()
    need = cfg.n_questions + cfg.n_val_questions
    if need > len(qs):
        raise LSLError(f"train config asks for {need} questions (n_questions + n_val_questions) but only "
                       f"{len(qs)} SD-QA test questions exist; lower n_questions.")
    perm = np.random.default_rng(cfg.seed).permutation(len(qs))
    return [qs[i] for i in perm[: cfg.n_questions]], [qs[i] for i in perm[cfg.n_questions: need]]


def self_distillation_targets(model: LSLM, questions: list[str], max_new_tokens: int,
                              batch_size: int) -> list[list[int]]:
    """The backbone's own greedy answers (token ids) to the typed questions, cached on disk.

    Key: LLM weight digest, prompt template, max_new_tokens, question text. Call before any LoRA
    is attached (the targets are the *base* model's answers).
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

        B.generate_ids_batch(model, [B.text_query(model, q) for q in todo], max_new_tokens, batch_size, on_batch=save)
    return [cached[q] for q in questions]


def prepare_sdqa_data(cfg: TrainConfig, model: LSLM) -> TrainData:
    """SD-QA test questions x voices -> cached encoder states + self-distillation targets."""
    from lsl_core.data.synth import espeak_version, synthesize

    train_qs, val_qs = split_questions(cfg)
    texts = [" ".join(q.question.split()) for q in train_qs]
    targets = self_distillation_targets(model, texts, cfg.target_max_new_tokens, cfg.gen_batch_size)
    version = espeak_version()

    def states(qid: str, text: str, voice: str) -> torch.Tensor:
        content = hashlib.sha256(f"espeak-ng {version}|{text}".encode()).hexdigest()[:12]
        return B.cached_encoder_states(model.encoder, f"espeak-{voice}", qid, lambda: synthesize(text, voice), content)

    from tqdm import tqdm

    jobs = [(q, t, v) for q, t in zip(train_qs, texts) for v in cfg.voices]
    train = []
    for (q, t, v), resp in zip(tqdm(jobs, desc="encoder states (train)", unit="clip", mininterval=5),
                               (r for r in targets for _ in cfg.voices)):
        train.append(TrainExample(f"{q.example_id}__{v}", states(q.example_id, t, v), list(resp)))
    monitor = []
    for k, q in enumerate(val_qs):
        t = " ".join(q.question.split())
        seen = cfg.voices[k % len(cfg.voices)]
        for v, unseen in [(seen, False)] + ([(cfg.heldout_voice, True)] if cfg.heldout_voice else []):
            monitor.append(MonitorClip(f"{q.example_id}__{v}", t, v, states(q.example_id, t, v), unseen))
    rows = [{"example_id": q.example_id, "question": t,
             "answer": model.tokenizer.decode(r, skip_special_tokens=True).strip(),
             "stopped": bool(r) and r[-1] == B.eos_id(model)} for q, t, r in zip(train_qs, texts, targets)]
    return TrainData(train, monitor, rows)


# =========================================================================== model
def build_model(cfg: TrainConfig, device: torch.device) -> LSLM:
    """Encoder + seeded adaptor + LLM in float32 (autocast handles bf16), with the strategy applied."""
    m = CheckpointManifest(name=f"{cfg.name}-init", llm=cfg.llm, encoder=cfg.encoder, family=cfg.family,
                           strategy="none", downsample=cfg.downsample, seed=cfg.adaptor_seed, prompt=dict(cfg.prompt))
    model = load_checkpoint(m, device=device, dtype=torch.float32)
    model.encoder.requires_grad_(False)
    model.llm.requires_grad_(cfg.strategy == "full")
    model.adaptor.requires_grad_(True)
    return model


def attach_trainable_lora(model: LSLM, cfg: TrainConfig) -> None:
    """Wrap the LLM in a fresh peft LoRA (seeded init); only the LoRA matrices train."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), bias="none", task_type="CAUSAL_LM")
    try:
        model.llm = get_peft_model(model.llm, lcfg)
    except ValueError as exc:
        raise LSLError(f"train config field 'lora_targets' {list(cfg.lora_targets)} does not fit the LLM ({exc}).") from None


# =========================================================================== trainer
class Trainer:
    """Step-indexed training loop: the batch, the lr and the RNG at step s depend only on (config, s),
    so a resumed run continues exactly where an uninterrupted one would be."""

    def __init__(self, cfg: TrainConfig, model: LSLM, data: TrainData, out: str | Path,
                 resume_dir: str | Path | None = None, progress: bool = True) -> None:
        if not data.train:
            raise LSLError("No training examples: check n_questions and voices in the train config.")
        self.cfg, self.model, self.data = cfg, model, data
        self.out = Path(out)
        self.resume_dir = Path(resume_dir) if resume_dir else default_resume_dir(self.out)
        self.progress = progress
        self.device = model.device
        self.step = 0
        self._perms: dict[int, torch.Tensor] = {}
        self._text_answers: list[str] | None = None  # monitoring text answers (frozen LLM: computed once)
        self._recent: list[float] = []
        named = self.trainable_named()
        adaptor = [p for n, p in named if n.startswith("adaptor.")]
        llm = [p for n, p in named if n.startswith("llm.")]
        groups = [{"params": adaptor, "lr": cfg.lr, "peak_lr": cfg.lr}]
        if llm:
            groups.append({"params": llm, "lr": cfg.llm_lr or cfg.lr, "peak_lr": cfg.llm_lr or cfg.lr})
        self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        use_bf16 = cfg.autocast == "bf16" or (cfg.autocast == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
        torch.manual_seed(cfg.seed + 1)  # dropout stream (saved and restored on resume)

    # ------------------------------------------------------------------ parameters
    def trainable_named(self) -> list[tuple[str, torch.nn.Parameter]]:
        """Trainable parameters with stable names: 'adaptor.<name>' then 'llm.<name>'."""
        out = [(f"adaptor.{n}", p) for n, p in self.model.adaptor.named_parameters() if p.requires_grad]
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
    def loss_on(self, idx: list[int]) -> torch.Tensor:
        """Mean response-token cross-entropy of the given examples (grad enabled by the caller)."""
        ex = [self.data.train[i] for i in idx]
        with self.autocast():
            queries = [B.speech_query(self.model, e.states) for e in ex]
            batch = B.response_batch(self.model, queries, [e.response for e in ex])
            return B.response_loss(self.model, batch)

    def train_mode(self, on: bool) -> None:
        self.model.adaptor.train(on)
        self.model.llm.train(on)

    def train_step(self) -> float:
        """One optimizer step (self.step -> self.step + 1); returns the batch loss before the update."""
        self.train_mode(True)
        factor = self.lr_factor(self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = g["peak_lr"] * factor
        loss = self.loss_on(self.batch_indices(self.step))
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
        """Agreement (token F1) of speech answers with the same model's text answers on held-out clips."""
        from lsl_core.scoring import answer_agreement

        clips = self.data.monitor
        if not clips:
            return {}
        self.train_mode(False)
        c = self.cfg
        questions = list(dict.fromkeys(cl.question for cl in clips))
        with self.autocast():
            if self._text_answers is None or c.strategy != "frozen":
                texts = B.generate_batch(self.model, [B.text_query(self.model, q) for q in questions],
                                         c.eval_max_new_tokens, c.gen_batch_size)
                self._text_answers = texts
            speech = B.generate_batch(self.model, [B.speech_query(self.model, cl.states) for cl in clips],
                                      c.eval_max_new_tokens, c.gen_batch_size)
        text_of = dict(zip(questions, self._text_answers))
        agree = [answer_agreement(s, text_of[cl.question]) for s, cl in zip(speech, clips)]
        seen = [a for a, cl in zip(agree, clips) if not cl.unseen]
        unseen = [a for a, cl in zip(agree, clips) if cl.unseen]
        out = {"agreement": sum(seen) / max(1, len(seen)), "n": len(seen)}
        if unseen:
            out.update(agreement_unseen=sum(unseen) / len(unseen), n_unseen=len(unseen))
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

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_name(self, step: int) -> str:
        return f"{self.cfg.name}-step{step:04d}"

    def save_checkpoint(self, extra: dict | None = None) -> Path:
        """<out>/<strategy>-step<NNNN>/: manifest + adaptor (+ LoRA folder or full LLM) in save_dtype."""
        from safetensors.torch import save_file

        c = self.cfg
        dt = getattr(torch, c.save_dtype)
        folder = self.out / f"{c.strategy}-step{self.step:04d}"
        tmp = self.out / f".{folder.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.detach().to("cpu", dt).contiguous() for k, v in self.model.adaptor.state_dict().items()},
                  str(tmp / "adaptor.safetensors"), metadata={"format": "pt"})
        lora = llm_ref = None
        if c.strategy == "lora":
            lora = "lora"
            _save_lora(self.model.llm, tmp / lora, dt, c.llm)
        if c.strategy == "full":
            llm_ref = "llm"
            _save_full_llm(self.model.llm, self.model.tokenizer, tmp / llm_ref, dt)
        m = CheckpointManifest(
            name=self.checkpoint_name(self.step), llm=llm_ref or c.llm, encoder=c.encoder, family=c.family,
            strategy=c.strategy, step=self.step, adaptor="adaptor.safetensors", lora=lora, downsample=c.downsample,
            prompt=dict(c.prompt), seed=c.adaptor_seed,
            extra={"trajectory": self.out.name, "train_config": f"../{CONFIG_NAME}", "train_log": f"../{LOG_NAME}",
                   "weights_dtype": c.save_dtype, **(extra or {})})
        write_manifest(m, tmp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
        return folder

    # ------------------------------------------------------------------ resume state
    def save_resume(self) -> Path:
        """Trainable weights (float32), AdamW state, RNG and step -> resume_dir (atomic replace)."""
        from safetensors.torch import save_file

        d = self.resume_dir
        tmp = d.with_name(d.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        named = self.trainable_named()
        save_file({n: p.detach().to("cpu").contiguous() for n, p in named}, str(tmp / "trainable.safetensors"))
        opt = self.optimizer.state_dict()
        tensors, scalars = {}, {}
        for i, st in opt["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"{i}.{k}"] = v.detach().to("cpu").contiguous()
                else:
                    scalars[f"{i}.{k}"] = v
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"torch_cuda_{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng, str(tmp / "rng.safetensors"))
        state = {"format": _RESUME_FORMAT, "step": self.step, "config_digest": self.cfg.digest(),
                 "param_names": [n for n, _ in named], "param_groups": opt["param_groups"],
                 "optimizer_scalars": scalars, "recent_losses": self._recent,
                 "data_order": {"epoch": self.step * self.cfg.batch_size // len(self.data.train),
                                "cursor": self.step * self.cfg.batch_size % len(self.data.train)}}
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
        old = d.with_name(d.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if d.exists():
            os.replace(d, old)
        os.replace(tmp, d)
        shutil.rmtree(old, ignore_errors=True)
        return d

    def load_resume(self) -> int:
        """Restore the state saved by save_resume; returns the step to continue from."""
        from safetensors.torch import load_file

        d = self.resume_dir
        if not (d / "state.json").is_file():
            raise LSLError(f"No resume state in {d}; start without --resume (or pass --resume-dir).")
        state = json.loads((d / "state.json").read_text())
        if state.get("format") != _RESUME_FORMAT:
            raise LSLError(f"Resume state in {d} has format {state.get('format')}; expected {_RESUME_FORMAT}.")
        if state["config_digest"] != self.cfg.digest():
            raise LSLError(f"Resume state in {d} was written by a different train config; resume with the "
                           "same config, or start fresh without --resume.")
        named = self.trainable_named()
        if state["param_names"] != [n for n, _ in named]:
            raise LSLError(f"Resume state in {d} holds other trainable parameters than this model; start fresh.")
        weights = load_file(str(d / "trainable.safetensors"))
        with torch.no_grad():
            for n, p in named:
                p.copy_(weights[n].to(p.device, p.dtype))
        tensors = load_file(str(d / "optimizer.safetensors"))
        opt_state: dict[int, dict] = {}
        for key, v in tensors.items():
            i, k = key.split(".", 1)
            opt_state.setdefault(int(i), {})[k] = v
        for key, v in state["optimizer_scalars"].items():
            i, k = key.split(".", 1)
            opt_state.setdefault(int(i), {})[k] = v
        self.optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
        rng = load_file(str(d / "rng.safetensors"))
        torch.set_rng_state(rng["torch_cpu"])
        if torch.cuda.is_available():
            cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
            if cuda:
                torch.cuda.set_rng_state_all(cuda)
        self.step = int(state["step"])
        self._recent = list(state.get("recent_losses", []))
        return self.step

    # ------------------------------------------------------------------ loop
    def run(self, resume: bool = False, until: int | None = None) -> list[Path]:
        """Train to `until` (default cfg.steps), checkpointing and monitoring on schedule."""
        c = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / CONFIG_NAME).write_text(json.dumps(c.to_dict(), indent=2) + "\n")
        if self.data.targets:
            (self.out / TARGETS_NAME).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                                         for r in self.data.targets))
        if resume:
            self.load_resume()
            self._truncate_log(self.step)
        else:
            self.log_path.write_text("")
        until = c.steps if until is None else min(until, c.steps)
        ckpt_steps, eval_steps = set(c.checkpoint_steps()), set(c.eval_steps())
        saved: list[Path] = []
        last_eval: dict = {}
        if self.step == 0 and 0 in eval_steps:
            last_eval = self._eval_and_log()
        from tqdm import tqdm

        bar = tqdm(total=until, initial=self.step, desc=f"train {c.name}", unit="step", disable=not self.progress,
                   mininterval=2)
        while self.step < until:
            t0 = time.time()
            lr = self.lr_factor(self.step) * c.lr
            loss = self.train_step()
            self._recent = (self._recent + [loss])[-25:]
            self._log({"kind": "train", "step": self.step, "loss": round(loss, 5), "lr": lr,
                       "sec": round(time.time() - t0, 3)})
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.1e}")
            if self.step in eval_steps:
                last_eval = self._eval_and_log()
            if self.step in ckpt_steps:
                extra = {"train_loss_recent": round(sum(self._recent) / len(self._recent), 5)}
                if last_eval.get("step") == self.step:
                    extra["monitor"] = {k: v for k, v in last_eval.items() if k not in ("kind", "example")}
                saved.append(self.save_checkpoint(extra))
                self.save_resume()
        bar.close()
        if self.step == until and until not in ckpt_steps:
            self.save_resume()  # a partial run (until < steps) can always be resumed
        return saved

    def _eval_and_log(self) -> dict:
        t0 = time.time()
        res = self.monitor()
        if not res:
            return {}
        row = {"kind": "eval", "step": self.step, **res, "sec": round(time.time() - t0, 1)}
        self._log(row)
        if self.progress:
            msg = f"step {self.step}: agreement {res['agreement']:.3f}"
            if "agreement_unseen" in res:
                msg += f" (unseen voice {res['agreement_unseen']:.3f})"
            print(msg, flush=True)
        return row


def _save_lora(llm, folder: Path, dtype: torch.dtype, llm_ref: str) -> None:
    """peft adapter folder with adapter_model.safetensors cast to dtype and a portable base reference."""
    from safetensors.torch import load_file, save_file

    llm.save_pretrained(str(folder), safe_serialization=True)
    st = folder / "adapter_model.safetensors"
    save_file({k: v.to(dtype).contiguous() for k, v in load_file(str(st)).items()}, str(st), metadata={"format": "pt"})
    cfg_path = folder / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = llm_ref  # not the local cache path of whoever trained it
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").unlink(missing_ok=True)  # peft's empty model-card template


def _save_full_llm(llm, tokenizer, folder: Path, dtype: torch.dtype) -> None:
    """The whole fine-tuned LLM (safetensors, dtype) + its tokenizer, loadable by transformers."""
    state = {k: v.detach().to("cpu", dtype) for k, v in llm.state_dict().items()}
    llm.save_pretrained(str(folder), state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


def default_resume_dir(out: Path) -> Path:
    """cache_dir("train", <trajectory folder name>-<path hash>, "resume") - outside the shipped assets."""
    from lsl_core.cache import cache_dir

    tag = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:8]
    return cache_dir("train", f"{Path(out).name}-{tag}") / "resume"


# =========================================================================== entry points
def train(cfg: TrainConfig, *, resume: bool = False, resume_dir: str | Path | None = None,
          progress: bool = True, prepare_only: bool = False) -> list[Path]:
    """Prepare data (cached), build the model, train; returns the checkpoint folders written."""
    device = resolve_device(cfg.device)
    t0 = time.time()
    model = build_model(cfg, device)
    data = prepare_sdqa_data(cfg, model)  # targets from the base LLM, before LoRA is attached
    print(f"data: {len(data.train)} training clips ({cfg.n_questions} questions x {len(cfg.voices)} voices), "
          f"{len(data.monitor)} monitoring clips, ready in {time.time() - t0:.0f} s", flush=True)
    if prepare_only:
        return []
    if cfg.strategy == "lora":
        attach_trainable_lora(model, cfg)
    trainer = Trainer(cfg, model, data, cfg.out, resume_dir, progress)
    t1 = time.time()
    saved = trainer.run(resume=resume)
    print(f"trained {cfg.name} to step {trainer.step}/{cfg.steps} in {time.time() - t1:.0f} s; new checkpoints: "
          + (", ".join(p.name for p in saved) or "none"), flush=True)
    return saved


def register(subparsers) -> None:
    """Add `train` to `python -m lsl_core`."""
    p = subparsers.add_parser("train", help="train the adaptor (+LoRA or full LLM) -> checkpoint trajectory",
                              description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, type=Path, help="TrainConfig JSON (e.g. configs/train_lora.json)")
    p.add_argument("--resume", action="store_true", help="continue from the saved resume state")
    p.add_argument("--resume-dir", type=Path, default=None, help="resume state folder (default: in the cache)")
    p.add_argument("--out", default=None, help="override the config's trajectory folder")
    p.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
    p.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--prepare-only", action="store_true", help="only synthesize/encode/generate targets (cached)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig.from_json(args.config)
    changes = {k: v for k, v in (("out", args.out), ("steps", args.steps), ("device", args.device)) if v is not None}
    if changes:
        cfg = dataclasses.replace(cfg, **changes)
    train(cfg, resume=args.resume, resume_dir=args.resume_dir, progress=not args.no_progress,
          prepare_only=args.prepare_only)
    return 0
