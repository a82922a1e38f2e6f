"""Writing a checkpoint of a training stage: manifest + adaptor (+ LoRA folder or full LLM), safetensors only.

    <out>/<name>-step<NNNN>/manifest.json          name, family, strategy, global step, encoder window, stage
                            adaptor.safetensors    (absent when the stage keeps init's adaptor: the manifest
                                                    then points at init's file with a relative path)
                            lora/                  peft adapter (strategy lora)
                            llm/                   the whole LLM + tokenizer (strategy full)
                            ctc_head.safetensors   a ctc stage's learned blank [d] (fp32; temperature and norm
                                                   weight in its metadata), read by objectives.load_ctc_head
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lsl_core.experiments.train.config import TrainConfig
from lsl_core.model.loading import CheckpointManifest, write_manifest
from lsl_core.model.lslm import LSLM

if TYPE_CHECKING:
    from lsl_core.experiments.train.objectives import CTCHead

CONFIG_NAME = "train_config.json"
LOG_NAME = "train_log.jsonl"
TARGETS_NAME = "train_targets.jsonl"
CTC_HEAD_NAME = "ctc_head.safetensors"


def checkpoint_name(cfg: TrainConfig, step: int) -> str:
    """'<name>-step<NNNN>' with the global step (init's step + this stage's step)."""
    return f"{cfg.name}-step{step:04d}"


def save_checkpoint(cfg: TrainConfig, model: LSLM, out: Path, step: int, *, init_adaptor: Path | None = None,
                    extra: dict | None = None, ctc: CTCHead | None = None) -> Path:
    """Write <out>/<name>-step<NNNN>/ atomically (temp folder + rename); returns the folder. `ctc`: a ctc
    stage's head, kept so that its own best-path decoding can be rerun on the checkpoint later."""
    from safetensors.torch import save_file

    dt = getattr(torch, cfg.save_dtype)
    folder = out / checkpoint_name(cfg, step)
    tmp = out / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if cfg.train_adaptor or init_adaptor is None:
        adaptor = "adaptor.safetensors"
        save_file({k: v.detach().to("cpu", dt).contiguous() for k, v in model.adaptor.state_dict().items()},
                  str(tmp / adaptor), metadata={"format": "pt"})
    else:  # the stage did not change the adaptor: point at init's file instead of a copy
        adaptor = os.path.relpath(init_adaptor.resolve(), folder.resolve())
    lora = llm_ref = None
    if cfg.strategy == "lora":
        lora = "lora"
        save_lora(model.llm, tmp / lora, dt, cfg.llm)
    if cfg.strategy == "full":
        llm_ref = "llm"
        save_full_llm(model.llm, model.tokenizer, tmp / llm_ref, dt)
    extra = dict(extra or {})
    if ctc is not None:
        save_file({"blank": ctc.blank.detach().to("cpu", torch.float32).contiguous()}, str(tmp / CTC_HEAD_NAME),
                  metadata={"format": "pt", "temperature": repr(ctc.temperature), "norm_weight": repr(ctc.norm_weight)})
        extra["ctc_head"] = CTC_HEAD_NAME
    m = CheckpointManifest(
        name=checkpoint_name(cfg, step), llm=llm_ref or cfg.llm, encoder=cfg.encoder, family=cfg.family,
        strategy=cfg.strategy, step=step, adaptor=adaptor, lora=lora,
        lora_scope=cfg.lora_scope if lora else "all", downsample=cfg.downsample,
        adaptor_hidden=cfg.adaptor_hidden, adaptor_context=cfg.adaptor_context,
        prompt=dict(cfg.prompt), seed=cfg.adaptor_seed, encoder_window=cfg.encoder_window,
        extra={"trajectory": out.name, "stage": cfg.objective, "train_config": f"../{CONFIG_NAME}",
               "train_log": f"../{LOG_NAME}", "weights_dtype": cfg.save_dtype, **extra})
    write_manifest(m, tmp)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def save_lora(llm, folder: Path, dtype: torch.dtype, llm_ref: str) -> None:
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


def save_full_llm(llm, tokenizer, folder: Path, dtype: torch.dtype) -> None:
    """The whole fine-tuned LLM (safetensors, dtype) + its tokenizer, loadable by transformers."""
    state = {k: v.detach().to("cpu", dtype) for k, v in llm.state_dict().items()}
    llm.save_pretrained(str(folder), state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
