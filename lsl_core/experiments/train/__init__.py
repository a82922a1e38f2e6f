"""Train the demo speech LLM through an alignment curriculum -> checkpoint trajectories.

    python -m lsl_core train --config configs/train/1_align_ctc.json [--resume] [--steps N] [--out DIR]
                             [--set FIELD=VALUE ...] [--prepare-only] [--monitor-only] [--time-budget SECONDS]

Each config is one stage (config.py): `ctc` and `repeat` align the adaptor with the LLM frozen, `qa`
self-distils answers with the LLM frozen (adaptor only), LoRA or fully tuned. A stage continues from
its `init` checkpoint (the previous stage's last one), and its checkpoints carry the global step
(init's step + the stage's step), so a trajectory reads untrained -> ctc -> repeat -> qa.
The encoder is always frozen; its states are cached on disk once per clip (safetensors).
Ctrl-C (or SIGTERM) stops after the step in progress and saves the resume state (a second one stops at
once); the same command with --resume continues bit for bit where it stopped. --time-budget SECONDS fits the
step count to the time (e.g. a lease of an accelerator, or "two hours on this laptop"): after the first warmup
steps it sets the count that ends within SECONDS of the start and writes it to <out>/train_config.json.

Written into the trajectory folder `out`:
    train_config.json        this TrainConfig (re-run: --config <out>/train_config.json)
    train_log.jsonl          {"kind": "train", step, global_step, loss, lr, sec} per step and
                             {"kind": "eval", step, agreement, agreement_unseen, ...} at eval points
    train_targets.jsonl      the responses trained on (question id, question, target)
    <name>-step<NNNN>/       manifest.json + adaptor.safetensors (+ lora/ or llm/), in save_dtype
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import time
from pathlib import Path

import torch

from lsl_core.cli import add_device_args, usable_device
from lsl_core.errors import LSLError
from lsl_core.experiments.train.config import OBJECTIVES, TRAIN_STRATEGIES, TrainConfig
from lsl_core.experiments.train.corpus import WORKER_KINDS, MonitorClip, TrainData, TrainExample, prepare_data
from lsl_core.experiments.train.state import default_resume_dir, has_resume_state
from lsl_core.experiments.train.trainer import Trainer
from lsl_core.model.adaptor import with_context
from lsl_core.model.loading import CheckpointManifest, load_checkpoint, quiet_peft_wrap, read_manifest
from lsl_core.model.lora_scope import apply_lora_scope
from lsl_core.model.lslm import LSLM


def resolve_device(spec: str) -> torch.device:
    """The train config's device: auto (CUDA where usable, else the CPU) or one this machine has (cli.usable_device)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return usable_device(spec, "train config field 'device'")


def _same_model(a: str, b: str) -> bool:
    """Whether two model specs (an id such as embedded:..., a hub id or a local path) name one model."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def init_manifest(cfg: TrainConfig) -> CheckpointManifest | None:
    """The checkpoint this stage continues from (None: a seeded untrained adaptor)."""
    if not cfg.init:
        return None
    m = read_manifest(cfg.init)
    if m.strategy == "full" or (m.lora and cfg.strategy != "lora"):
        raise LSLError(f"train config field 'init' ({cfg.init}) is a {m.strategy} checkpoint; a {cfg.strategy} "
                       "stage continues from an adaptor-only checkpoint (strategy frozen)"
                       + ("" if m.strategy == "full" else ", and only a lora stage from a LoRA checkpoint") + ".")
    if m.lora and m.lora_scope != cfg.lora_scope:
        raise LSLError(f"train config field 'init' ({cfg.init}) has a LoRA with lora_scope {m.lora_scope!r}; the "
                       f"config says {cfg.lora_scope!r}. Make them equal to continue it (or start from an "
                       "adaptor-only checkpoint).")
    for field, have, want in (("llm", m.llm, cfg.llm), ("encoder", m.encoder, cfg.encoder)):
        if not _same_model(have, want):  # equal widths would otherwise continue silently on another model
            raise LSLError(f"train config field 'init' ({cfg.init}) was trained with {field} {have!r}; the config "
                           f"says {want!r}. Make them equal, or start from a checkpoint of that {field}.")
    mine = (cfg.encoder_window, cfg.downsample, cfg.adaptor_hidden)
    if (m.encoder_window, m.downsample, m.adaptor_hidden) != mine:
        raise LSLError(f"train config field 'init' ({cfg.init}) has encoder_window={m.encoder_window!r}, "
                       f"downsample={m.downsample}, adaptor_hidden={m.adaptor_hidden}; the config says {mine}. "
                       "Make them equal.")
    grows = m.adaptor_context < cfg.adaptor_context and cfg.train_adaptor  # added blocks start as the identity
    if m.adaptor_context != cfg.adaptor_context and not grows:
        raise LSLError(f"train config field 'init' ({cfg.init}) has adaptor_context={m.adaptor_context}; the config "
                       f"says {cfg.adaptor_context}. Make them equal, or add blocks (a larger adaptor_context) in a "
                       "stage that trains the adaptor.")
    return m


def build_model(cfg: TrainConfig, device: torch.device) -> LSLM:
    """Encoder + adaptor (init's, or seeded) + LLM in float32, with the strategy's trainable parts."""
    init = init_manifest(cfg)
    adaptor = str(init.path(init.adaptor).resolve()) if init is not None and init.adaptor else None
    # an untrained init (strategy none) is its seeded adaptor: continue from init's seed, not the config's
    seed = init.seed if init is not None and not adaptor else cfg.adaptor_seed
    m = CheckpointManifest(name=f"{cfg.name}-init", llm=cfg.llm, encoder=cfg.encoder, family=cfg.family,
                           strategy="frozen" if adaptor else "none", adaptor=adaptor, downsample=cfg.downsample,
                           adaptor_hidden=cfg.adaptor_hidden,
                           adaptor_context=init.adaptor_context if init is not None else cfg.adaptor_context,
                           seed=seed, prompt=dict(cfg.prompt), encoder_window=cfg.encoder_window)
    model = load_checkpoint(m, device=device, dtype=torch.float32)
    if model.adaptor.cfg.context < cfg.adaptor_context:  # init_manifest allowed it: blocks added to init's adaptor
        model.adaptor = with_context(model.adaptor, cfg.adaptor_context, seed=cfg.adaptor_seed)
    model.encoder.requires_grad_(False)
    model.llm.requires_grad_(cfg.strategy == "full")
    model.adaptor.requires_grad_(cfg.train_adaptor)
    return model


def attach_trainable_lora(model: LSLM, cfg: TrainConfig, init: CheckpointManifest | None = None) -> None:
    """Wrap the LLM in a peft LoRA; only the LoRA matrices train. Fresh (seeded init), or - when `init` is a
    LoRA checkpoint - continuing from its LoRA weights (rank, alpha and targets must match the config).
    cfg.lora_scope 'speech' confines it to the speech positions (lsl_core.model.lora_scope)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    lcfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), bias="none", task_type="CAUSAL_LM")
    try:
        with quiet_peft_wrap():
            model.llm = get_peft_model(model.llm, lcfg)
    except ValueError as exc:
        raise LSLError(f"train config field 'lora_targets' {list(cfg.lora_targets)} does not fit the LLM ({exc}).") from None
    if init is not None and init.lora:
        load_lora_weights(model.llm, init.path(init.lora), cfg)
    apply_lora_scope(model.llm, cfg.lora_scope)


def load_lora_weights(peft_llm, folder: Path, cfg: TrainConfig) -> None:
    """Copy a saved peft adapter (safetensors) into the freshly wrapped LLM, as float32 trainable weights."""
    import json

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    saved = json.loads((folder / "adapter_config.json").read_text())
    mine = {"r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "target_modules": sorted(cfg.lora_targets)}
    theirs = {"r": saved.get("r"), "lora_alpha": saved.get("lora_alpha"),
              "target_modules": sorted(saved.get("target_modules") or [])}
    if mine != theirs:
        raise LSLError(f"train config field 'init' has a LoRA with {theirs}; the config asks for {mine}. "
                       "Make lora_r, lora_alpha and lora_targets equal to continue it.")
    weights = {k: v.float() for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}
    result = set_peft_model_state_dict(peft_llm, weights)
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:
        raise LSLError(f"the init LoRA in {folder} lacks {len(missing)} weights of this LLM (e.g. {missing[0]}).")


def make_trainer(cfg: TrainConfig, model: LSLM, data: TrainData, *, resume_dir: str | Path | None = None,
                 progress: bool = True, deadline: float | None = None) -> Trainer:
    """A Trainer for this stage (LoRA attached after the data: qa targets are the base model's answers);
    deadline: a time.time() to fit the step count to (Trainer)."""
    init = init_manifest(cfg)
    if cfg.strategy == "lora":
        attach_trainable_lora(model, cfg, init)
    out = Path(cfg.out)
    return Trainer(cfg, model, data, out, resume_dir or default_resume_dir(out),
                   step_offset=init.step if init else 0,
                   init_adaptor=init.path(init.adaptor) if init is not None and init.adaptor else None,
                   progress=progress, deadline=deadline)


def train(cfg: TrainConfig, *, resume: bool = False, resume_dir: str | Path | None = None,
          progress: bool = True, prepare_only: bool = False, monitor_only: bool = False,
          workers: int = 1, time_budget: float | None = None, encoder_batch: int | None = None,
          worker_kind: str = "threads") -> list[Path]:
    """Prepare data (cached), build the model, train; returns the checkpoint folders written.
    monitor_only: print the monitor of the stage's start (its `init`) and train nothing; workers: threads or
    processes (worker_kind; "auto" = processes on a GPU, the CLI's default; processes need the calling script's
    code under `if __name__ == "__main__":`) that synthesize clips ahead of the encoder and
    encoder_batch: clips of one length it takes together (None: 64 on a GPU, 1 elsewhere) (corpus.clips_states;
    the data are the same whatever the counts and kinds, up to float rounding);
    time_budget: seconds this call may take, model and data included: the step count (at most cfg.steps) is
    fitted to it during warmup, exactly as if the config had said it (Trainer, fit_step)."""
    if time_budget is not None and (not 0 < time_budget < math.inf or resume or prepare_only or monitor_only):
        raise LSLError("--time-budget takes a positive (finite) number of seconds and fits the step count of a fresh "
                       "run: not with --resume (a resumed run keeps its fitted count), --prepare-only or "
                       "--monitor-only.")
    if prepare_only and monitor_only:
        raise LSLError("--prepare-only and --monitor-only are two different runs; give one of them.")
    if resume and not (prepare_only or monitor_only):  # before the data and the model: minutes on a CPU
        where = Path(resume_dir) if resume_dir else default_resume_dir(Path(cfg.out))
        if not has_resume_state(where):
            raise LSLError(f"No resume state in {where}; start without --resume (or pass --resume-dir).")
    device = resolve_device(cfg.device)
    t0 = time.time()
    model = build_model(cfg, device)
    data = prepare_data(cfg, model, progress, workers, encoder_batch, worker_kind)
    n_vocab = sum(e.key.startswith("vocab") for e in data.train)
    n_written = sum(e.key.startswith("written") for e in data.train)
    n_dose = sum(e.key.startswith("dose") for e in data.train)
    n_q = len(data.train) - n_vocab - n_written - n_dose
    doses = f" + {n_dose} dose sentences" if n_dose else ""
    print(f"data: {len(data.train)} training clips ({n_q // len(cfg.voices)} questions x {len(cfg.voices)} voices + "
          f"{n_vocab} word sequences + {n_written} written questions{doses}), {len(data.monitor)} monitoring clips, "
          f"ready in {time.time() - t0:.0f} s", flush=True)
    if prepare_only:
        return []
    trainer = make_trainer(cfg, model, data, resume_dir=resume_dir, progress=progress,
                           deadline=None if time_budget is None else t0 + time_budget)
    if monitor_only:
        shown = {k: round(v, 3) for k, v in trainer.monitor().items() if isinstance(v, float)}
        print(f"monitor of {cfg.init or 'the seeded adaptor'} (step {trainer.step_offset}): {shown}", flush=True)
        return []
    t1 = time.time()
    saved = trainer.run(resume=resume)
    cfg = trainer.cfg  # with a time budget: the fitted step count
    print(f"trained {cfg.name} to step {trainer.step}/{cfg.steps} in {time.time() - t1:.0f} s; new checkpoints: "
          + (", ".join(p.name for p in saved) or "none"), flush=True)
    if trainer.stopped_by is not None:
        raise LSLError(f"Stopped by {signal.Signals(trainer.stopped_by).name} at step {trainer.step} of {cfg.steps}; "
                       f"its resume state is saved in {trainer.resume_dir}: run "
                       + ("the same command with --resume" if time_budget is None else
                          f"`train --config {Path(cfg.out) / 'train_config.json'} --resume` (the fitted step count; "
                          "no --time-budget)")
                       + " to continue exactly where it stopped.")
    return saved


def register(subparsers) -> None:
    """Add `train` to `python -m lsl_core`."""
    p = subparsers.add_parser("train", help="train one curriculum stage (adaptor, +LoRA or full LLM) -> checkpoints",
                              description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, type=Path, help="TrainConfig JSON (e.g. configs/train/1_align_ctc.json)")
    p.add_argument("--resume", action="store_true", help="continue from the saved resume state")
    p.add_argument("--resume-dir", type=Path, default=None, help="resume state folder (default: in the cache)")
    p.add_argument("--out", default=None, help="override the config's trajectory folder")
    p.add_argument("--steps", type=int, default=None, help="override the config's number of steps")
    add_device_args(p, device_help="override the config's device (auto, cpu, cuda)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any config field (VALUE as JSON, else a string; a text field takes VALUE as written, "
                        "null where it may be null), e.g. --set init=<checkpoint> "
                        "--set monitor_train_clips=48; repeatable")
    p.add_argument("--prepare-only", action="store_true", help="only synthesize/encode/generate targets (cached)")
    p.add_argument("--monitor-only", action="store_true",
                   help="print the monitor (agreement, stage score per voice group) of the config's init; no training")
    p.add_argument("--workers", type=int, default=0,
                   help="threads or processes (--worker-kind) that synthesize and featurize clips ahead of the encoder "
                        "(0 = one per CPU core, at most 16); the data do not depend on it")
    p.add_argument("--worker-kind", choices=WORKER_KINDS, default="auto",
                   help="the --workers are threads, or spawned processes that leave the encoder's thread the GIL "
                        "(auto: processes when the encoder is on a GPU, threads elsewhere)")
    p.add_argument("--encoder-batch", type=int, default=0, metavar="N",
                   help="new clips of one length the encoder takes together, with --workers > 1 (0 = 64 on a GPU, 1 "
                        "elsewhere: a CPU gains nothing); the states equal one by one up to float rounding")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="fit the step count (at most the config's) so that this call ends within SECONDS, model and "
                        "data included: measured over the first warmup steps, written to <out>/train_config.json "
                        "(resume with --config that file); the run is exactly that of a config with the fitted count")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def parse_sets(items: list[str]) -> dict:
    """['init=a/b', 'steps=3', 'voices=["en-us"]'] -> {'init': 'a/b', 'steps': 3, 'voices': ['en-us']}: VALUE as
    JSON, else a string; a field that takes a string takes the text as written unless it reads as a JSON string
    (or null where the field allows it): 'name=2024' -> {'name': '2024'}."""
    import json
    import types
    import typing

    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise LSLError(f"--set {item!r}: write FIELD=VALUE, e.g. --set monitor_train_clips=48.")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        hint = hints.get(key)
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        takes_str = hint is str or (union and str in typing.get_args(hint))
        if takes_str and not isinstance(value, str) and not (value is None and type(None) in typing.get_args(hint)):
            value = raw
        out[key] = value
    return out


def main(args: argparse.Namespace) -> int:
    cfg = TrainConfig.from_json(args.config)
    changes = {k: v for k, v in (("out", args.out), ("steps", args.steps), ("device", args.device)) if v is not None}
    changes.update(parse_sets(args.set))
    if changes:
        cfg = TrainConfig.from_dict({**cfg.to_dict(), **changes}, f"{args.config} with overrides")
    if args.workers < 0:
        raise LSLError(f"--workers must be 0 (one per CPU core) or a positive count of threads, got {args.workers}.")
    workers = args.workers or min(16, os.cpu_count() or 1)
    if args.encoder_batch < 0:
        raise LSLError(f"--encoder-batch must be 0 (by the device) or a positive count of clips, got "
                       f"{args.encoder_batch}.")
    train(cfg, resume=args.resume, resume_dir=args.resume_dir, progress=not args.no_progress,
          prepare_only=args.prepare_only, monitor_only=args.monitor_only, workers=workers,
          time_budget=args.time_budget, encoder_batch=args.encoder_batch or None, worker_kind=args.worker_kind)
    return 0


__all__ = ["TrainConfig", "OBJECTIVES", "TRAIN_STRATEGIES", "Trainer", "TrainData", "TrainExample", "MonitorClip",
           "build_model", "attach_trainable_lora", "make_trainer", "prepare_data", "train", "register", "main"]
