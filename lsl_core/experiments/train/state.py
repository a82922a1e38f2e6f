"""Resume state of a training stage: trainable weights (float32), AdamW moments, RNG and step.

Safetensors + JSON, never pickle; written atomically (temp folder, then rename), kept outside the
shipped trajectory (cache_dir("train", <folder>-<hash>, "resume") unless --resume-dir is given).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from lsl_core.errors import LSLError

if TYPE_CHECKING:  # pragma: no cover
    from lsl_core.experiments.train.trainer import Trainer

RESUME_FORMAT = 2


def default_resume_dir(out: Path) -> Path:
    """cache_dir("train", <trajectory folder name>-<path hash>, "resume") - outside the shipped assets."""
    from lsl_core.cache import cache_dir

    tag = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:8]
    return cache_dir("train", f"{Path(out).name}-{tag}") / "resume"


def save_resume(t: "Trainer") -> Path:
    """Trainable weights, optimizer state, RNG and step of trainer t -> t.resume_dir (atomic replace)."""
    from safetensors.torch import save_file

    d = t.resume_dir
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    named = t.trainable_named()
    save_file({n: p.detach().to("cpu").contiguous() for n, p in named}, str(tmp / "trainable.safetensors"))
    opt = t.optimizer.state_dict()
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
    state = {"format": RESUME_FORMAT, "step": t.step, "config_digest": t.cfg.digest(),
             "param_names": [n for n, _ in named], "param_groups": opt["param_groups"],
             "optimizer_scalars": scalars, "recent_losses": t._recent}
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    old = d.with_name(d.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if d.exists():
        os.replace(d, old)
    os.replace(tmp, d)
    shutil.rmtree(old, ignore_errors=True)
    return d


def has_resume_state(d: Path) -> bool:
    """Whether d holds a resume state to continue from (after putting back one a crash left beside it)."""
    _recover(Path(d))
    return (Path(d) / "state.json").is_file()


def _recover(d: Path) -> None:
    """A save_resume stopped between its two renames leaves no d, and the complete new state in d.tmp (its
    state.json is written last) and the previous one in d.old: put the newest complete one back at d."""
    if (d / "state.json").is_file():
        return
    for side in (d.with_name(d.name + ".tmp"), d.with_name(d.name + ".old")):
        if (side / "state.json").is_file():
            shutil.rmtree(d, ignore_errors=True)
            os.replace(side, d)
            return


def load_resume(t: "Trainer") -> int:
    """Restore trainer t from t.resume_dir; returns the step to continue from."""
    from safetensors.torch import load_file

    d = t.resume_dir
    _recover(d)
    if not (d / "state.json").is_file():
        raise LSLError(f"No resume state in {d}; start without --resume (or pass --resume-dir).")
    state = json.loads((d / "state.json").read_text())
    if state.get("format") != RESUME_FORMAT:
        raise LSLError(f"Resume state in {d} has format {state.get('format')}; expected {RESUME_FORMAT}. "
                       "Start fresh without --resume.")
    if state["config_digest"] != t.cfg.digest():
        raise LSLError(f"Resume state in {d} was written by a different train config; resume with the "
                       "same config, or start fresh without --resume.")
    named = t.trainable_named()
    if state["param_names"] != [n for n, _ in named]:
        raise LSLError(f"Resume state in {d} holds other trainable parameters than this model; start fresh.")
    weights = load_file(str(d / "trainable.safetensors"))
    with torch.no_grad():
        for n, p in named:
            p.copy_(weights[n].to(p.device, p.dtype))
    opt_state: dict[int, dict] = {}
    for key, v in load_file(str(d / "optimizer.safetensors")).items():
        i, k = key.split(".", 1)
        opt_state.setdefault(int(i), {})[k] = v
    for key, v in state["optimizer_scalars"].items():
        i, k = key.split(".", 1)
        opt_state.setdefault(int(i), {})[k] = v
    t.optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    rng = load_file(str(d / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    t.step = int(state["step"])
    t._recent = list(state.get("recent_losses", []))
    return t.step
