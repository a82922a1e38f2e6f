"""Weight averaging of checkpoints of one lineage: the (weighted) mean of their weights, written as a new checkpoint.
Along one trajectory it is stochastic weight averaging (Izmailov et al. 2018); over runs from one init, a "model
soup" (Wortsman et al. 2022). The adaptor's parameters are averaged; a LoRA's update B·A is averaged exactly, as the
soup of the merged weights W + B_i·A_i would be: the factors are stacked into one LoRA of rank k·r (B = [w_1 B_1 …
w_k B_k], A = [A_1; …; A_k], rescaled for the new rank), so B·A = Σ w_i B_i·A_i. (Averaging the factors
themselves, mean B · mean A, is not that mean: over seeds, whose A start from other random draws, it shrinks the
update.)

    python -m lsl_core average --checkpoint <a> --checkpoint <b> [--weights 1,1] --out <folder> [--name NAME]

The result loads like any checkpoint (`load_checkpoint`, the app's "Add a model folder", `evaluate`). Measured on
the shipped LoRA trajectory and over seeds in docs/demo_model.md, "Averaging the checkpoints".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

import torch

from lsl_core.errors import LSLError
from lsl_core.model.loading import MANIFEST_NAME, CheckpointManifest, read_manifest, write_manifest

AVERAGED_STRATEGIES = ("frozen", "lora")  # a full fine-tune's LLM is not averaged here
SHARED_FIELDS = ("llm", "encoder", "family", "strategy", "lora_scope", "downsample", "adaptor_hidden",
                 "adaptor_context", "prompt", "encoder_window")  # what must agree for the weights to mean the same
ADAPTOR_FILE = "adaptor.safetensors"
LORA_DIR = "lora"
LORA_WEIGHTS = "adapter_model.safetensors"
LORA_CONFIG = "adapter_config.json"


def same_tensors(states: list[dict[str, torch.Tensor]], what: str) -> list[str]:
    """The state dicts' keys, refused unless every one has the first's names and shapes."""
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise LSLError(f"{what} of checkpoint {i + 1} has other tensors than the first's (names or shapes): "
                           "average only checkpoints of one configuration.")
    return keys


def mean_state(states: list[dict[str, torch.Tensor]], weights: list[float], what: str) -> dict[str, torch.Tensor]:
    """Weighted mean of state dicts with the same keys and shapes (computed in float32, returned in the first's
    dtypes); weights sum to 1."""
    return {k: sum(w * s[k].float() for w, s in zip(weights, states)).to(states[0][k].dtype).contiguous()
            for k in same_tensors(states, what)}


def mean_lora(states: list[dict[str, torch.Tensor]], weights: list[float], config: dict) -> tuple[dict, dict]:
    """The LoRA whose update is the weighted mean of the states' updates, and its peft config: per module, A [r, in]
    stacked to [k·r, in] and B [out, r] to [out, k·r], each B_i times w_i and times scale(r) / scale(k·r) (peft
    multiplies B·A by lora_alpha / r, or / sqrt(r) with rslora), so that the new B·A times its scale equals
    Σ w_i scale(r) B_i·A_i. Weights sum to 1; tensors stay in their dtype."""
    if config.get("use_dora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise LSLError("These LoRAs use DoRA or per-module ranks / alphas: only plain LoRAs are averaged.")
    r, k = int(config["r"]), len(states)
    scale = (lambda n: n ** -0.5) if config.get("use_rslora") else (lambda n: 1.0 / n)
    out = {}
    for key in same_tensors(states, "The LoRA"):
        if key.endswith("lora_A.weight"):
            out[key] = torch.cat([st[key] for st in states], 0).contiguous()
        elif key.endswith("lora_B.weight"):
            f = scale(r) / scale(k * r)
            out[key] = torch.cat([(wi * f * st[key].float()).to(st[key].dtype) for wi, st in zip(weights, states)],
                                 1).contiguous()
        else:
            raise LSLError(f"LoRA tensor {key} is neither a lora_A nor a lora_B weight: only plain LoRAs are averaged.")
    return out, {**config, "r": k * r}


def lora_config(path: Path) -> dict:
    """A peft adapter_config.json, its target modules as a sorted list (peft writes the set in any order)."""
    cfg = json.loads(path.read_text())
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    return cfg


def is_average(folder: Path) -> bool:
    """Whether a folder holds a checkpoint average_checkpoints wrote (its manifest names the averaged sources)."""
    return (folder / MANIFEST_NAME).is_file() and "averaged_from" in read_manifest(folder).extra


def average_checkpoints(checkpoints: list[str | Path], out: str | Path, name: str | None = None,
                        weights: list[float] | None = None) -> Path:
    """Write `<out>/<name>/` (manifest + adaptor [+ lora/]) holding the weighted mean of the checkpoints' trained
    weights; returns the folder. `weights`: one per checkpoint, >= 0, not all 0 (default: equal), normalised to
    sum 1. The manifest is the last checkpoint's (its step, config, prompt) with `extra.averaged_from` naming the
    sources and their weights; it replaces an earlier average of that name. Refused: an existing folder that is not
    such an average, fewer than two checkpoints, a strategy other than frozen / lora, manifests
    that differ in a field of SHARED_FIELDS, or LoRA configs that differ."""
    from safetensors.torch import load_file, save_file

    if len(checkpoints) < 2:
        raise LSLError("Give at least two checkpoints to average (--checkpoint A --checkpoint B).")
    ms = [read_manifest(c) for c in checkpoints]
    w = [1.0] * len(ms) if weights is None else [float(x) for x in weights]
    if len(w) != len(ms) or any(x < 0 for x in w) or sum(w) <= 0:
        raise LSLError(f"Give one weight >= 0 per checkpoint, not all 0: {len(ms)} checkpoints, weights {weights}.")
    w = [x / sum(w) for x in w]
    last = ms[-1]
    if last.strategy not in AVERAGED_STRATEGIES or last.model:
        kind = f"strategy '{last.strategy}'" + (" (a public model)" if last.model else "")
        raise LSLError(f"Checkpoint '{last.name}' has {kind}: only the adaptor and LoRA of strategies "
                       f"{AVERAGED_STRATEGIES} are averaged.")
    for m in ms[:-1]:
        differ = [f for f in SHARED_FIELDS if getattr(m, f) != getattr(last, f)]
        if differ:
            raise LSLError(f"Checkpoints '{m.name}' and '{last.name}' differ in {differ}: average only checkpoints of "
                           "one model and configuration.")
    name = name or f"{last.name}-avg{len(ms)}"
    folder = Path(out) / name
    if folder.exists() and not is_average(folder):
        raise LSLError(f"{folder} exists and is not an average written by this command: give another --out or "
                       "--name (an earlier average is replaced, nothing else).")
    tmp = folder.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    adaptor = mean_state([load_file(str(m.path(m.adaptor))) for m in ms], w, "The adaptor")
    save_file(adaptor, str(tmp / ADAPTOR_FILE), metadata={"format": "pt"})
    if last.lora:
        configs = [lora_config(m.path(m.lora) / LORA_CONFIG) for m in ms]
        differ = sorted({k for c in configs for k in c.keys() | configs[-1].keys() if c.get(k) != configs[-1].get(k)})
        if differ:
            raise LSLError(f"The checkpoints' LoRA configs differ in {differ}: average only LoRAs of one "
                           "configuration.")
        (tmp / LORA_DIR).mkdir()
        lora, cfg = mean_lora([load_file(str(m.path(m.lora) / LORA_WEIGHTS)) for m in ms], w, configs[-1])
        save_file(lora, str(tmp / LORA_DIR / LORA_WEIGHTS), metadata={"format": "pt"})
        (tmp / LORA_DIR / LORA_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    sources = [{"name": m.name, "path": str(Path(m.root).resolve()), "step": m.step, "weight": x}
               for m, x in zip(ms, w)]
    extra = {k: v for k, v in last.extra.items() if k in ("stage", "weights_dtype")}
    manifest = dataclasses.replace(last, name=name, adaptor=ADAPTOR_FILE, lora=LORA_DIR if last.lora else None,
                                   root="", extra={**extra, "averaged_from": sources})
    write_manifest(manifest, tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def register(subparsers) -> None:
    """Add `average` to `python -m lsl_core`."""
    p = subparsers.add_parser("average", help="average the adaptor and LoRA weights of checkpoints (SWA, soups)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True, type=Path,
                   help="a checkpoint folder or manifest (repeat: two or more, of one configuration)")
    p.add_argument("--weights", default=None, help="comma-separated weights, one per checkpoint (default: equal)")
    p.add_argument("--out", required=True, type=Path, help="folder to write the averaged checkpoint into")
    p.add_argument("--name", default=None, help="its name (default: <last checkpoint>-avg<N>)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        weights = None if args.weights is None else [float(x) for x in args.weights.split(",")]
    except ValueError:
        raise LSLError(f"--weights must be comma-separated numbers, got {args.weights!r}.") from None
    folder = average_checkpoints(args.checkpoint, args.out, args.name, weights)
    m: CheckpointManifest = read_manifest(folder)
    src = m.extra["averaged_from"]
    key = "name" if len({s["name"] for s in src}) == len(src) else "path"  # runs of one config share names
    parts = ", ".join(f"{s[key]} × {s['weight']:.3g}" for s in src)
    print(f"wrote {folder}: {parts}")
    return 0
