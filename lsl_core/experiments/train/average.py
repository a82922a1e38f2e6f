"""Weight averaging of checkpoints of one lineage: the (weighted) mean of their weights, written as a new checkpoint.
Along one trajectory it is stochastic weight averaging (Izmailov et al. 2018); over runs from one init, a "model
soup" (Wortsman et al. 2022); between a checkpoint before a LoRA stage and one after it, a weight-space ensemble of
the two (WiSE-FT, Wortsman et al. 2022). The adaptor's parameters are averaged; a LoRA's update B·A is averaged
exactly, as the soup of the merged weights W + s_i B_i·A_i would be: the factors are stacked into one LoRA of rank
Σ r_i (B = [w_1 B_1 … w_k B_k], A = [A_1; …; A_k], each B_i rescaled by its own scale s_i over the new one), so
B·A = Σ w_i s_i B_i·A_i. LoRAs of other ranks or alphas mix, and a checkpoint without a LoRA (an adaptor-only
stage) counts as a zero update. (Averaging the factors themselves, mean B · mean A, is not that mean: over seeds,
whose A start from other random draws, it shrinks the update.)

    python -m lsl_core average --checkpoint <a> --checkpoint <b> [--weights 1,1 [--extrapolate]] --out <folder>
        [--name NAME]

The result loads like any checkpoint (`load_checkpoint`, the app's "Add a model folder", `evaluate`). Measured on
the shipped LoRA trajectory and over seeds in docs/demo_model.md, "Averaging the checkpoints".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
from pathlib import Path

import torch

from lsl_core.errors import LSLError
from lsl_core.model.loading import MANIFEST_NAME, CheckpointManifest, read_manifest, write_manifest

AVERAGED_STRATEGIES = ("frozen", "lora")  # a full fine-tune's LLM is not averaged here
SHARED_FIELDS = ("llm", "encoder", "family", "downsample", "adaptor_hidden", "adaptor_context", "prompt",
                 "encoder_window")  # what must agree for the weights to mean the same (and lora_scope among LoRAs)
LORA_FREE_FIELDS = ("r", "lora_alpha", "use_rslora", "lora_dropout", "init_lora_weights", "inference_mode",
                    "peft_version")  # LoRA config fields that may differ: the update B·A means the same
ADAPTOR_FILE = "adaptor.safetensors"
LORA_DIR = "lora"
LORA_WEIGHTS = "adapter_model.safetensors"
LORA_CONFIG = "adapter_config.json"


def same_tensors(states: list[dict[str, torch.Tensor]], what: str, rank_dim: bool = False) -> list[str]:
    """The state dicts' keys, refused unless every one has the first's names and shapes (with `rank_dim`, a LoRA's:
    the shapes may differ in the rank, dim 0 of lora_A [r, in] and dim 1 of lora_B [out, r])."""
    keys = list(states[0])

    def shape(key: str, t: torch.Tensor) -> tuple:
        if not rank_dim:
            return tuple(t.shape)
        return (t.shape[1],) if key.endswith("lora_A.weight") else (t.shape[0],) if key.endswith("lora_B.weight") \
            else tuple(t.shape)

    for i, s in enumerate(states[1:], 1):
        if list(s) != keys or any(shape(k, s[k]) != shape(k, states[0][k]) for k in keys):
            raise LSLError(f"{what} of checkpoint {i + 1} has other tensors than the first's (names or shapes): "
                           "average only checkpoints of one configuration.")
    return keys


def mean_state(states: list[dict[str, torch.Tensor]], weights: list[float], what: str) -> dict[str, torch.Tensor]:
    """Weighted mean of state dicts with the same keys and shapes (computed in float32, returned in the first's
    dtypes); weights sum to 1."""
    return {k: sum(w * s[k].float() for w, s in zip(weights, states)).to(states[0][k].dtype).contiguous()
            for k in same_tensors(states, what)}


def lora_scale(config: dict, r: int | None = None) -> float:
    """The factor peft multiplies a LoRA's B·A by: lora_alpha / r, or lora_alpha / sqrt(r) with rslora (r: the
    config's rank unless given)."""
    r = int(config["r"]) if r is None else r
    return float(config.get("lora_alpha", 8)) * (r ** -0.5 if config.get("use_rslora") else 1.0 / r)


def mean_lora(states: list[dict[str, torch.Tensor] | None], weights: list[float],
              configs: list[dict | None]) -> tuple[dict, dict]:
    """The LoRA whose update is the weighted mean of the states' updates, and its peft config (the last LoRA's, of
    rank R = Σ r_i): per module, A_i [r_i, in] stacked to [R, in] and B_i [out, r_i] to [out, R], each B_i times
    w_i · scale_i / scale(R) (`lora_scale`), so that the new B·A times its scale equals Σ w_i scale_i B_i·A_i.
    A source without a LoRA (state and config None) is a zero update: it only takes its weight. Weights sum to 1;
    tensors stay in their dtype."""
    have = [i for i, st in enumerate(states) if st is not None]
    if not have:
        raise LSLError("None of the checkpoints has a LoRA: there is no LoRA to average.")
    for i in have:
        c = configs[i]
        if c.get("use_dora") or c.get("rank_pattern") or c.get("alpha_pattern"):
            raise LSLError("These LoRAs use DoRA or per-module ranks / alphas: only plain LoRAs are averaged.")
    ranks = [int(configs[i]["r"]) for i in have]
    config = {**configs[have[-1]], "r": sum(ranks)}
    out_scale = lora_scale(config)
    out = {}
    for key in same_tensors([states[i] for i in have], "The LoRA", rank_dim=True):
        if key.endswith("lora_A.weight"):
            out[key] = torch.cat([states[i][key] for i in have], 0).contiguous()
        elif key.endswith("lora_B.weight"):
            out[key] = torch.cat([(weights[i] * lora_scale(configs[i]) / out_scale * states[i][key].float())
                                  .to(states[i][key].dtype) for i in have], 1).contiguous()
        else:
            raise LSLError(f"LoRA tensor {key} is neither a lora_A nor a lora_B weight: only plain LoRAs are averaged.")
    return out, config


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
                        weights: list[float] | None = None, extrapolate: bool = False) -> Path:
    """Write `<out>/<name>/` (manifest + adaptor [+ lora/]) holding the weighted mean of the checkpoints' trained
    weights; returns the folder. `weights`: one per checkpoint, >= 0, not all 0 (default: equal), normalised to
    sum 1; with `extrapolate`, negative weights are allowed (their sum must stay > 0): weights (-a, 1 + a) on
    (start, end) go a times the way past the end (model extrapolation, Zheng et al. 2024). The manifest is the
    last checkpoint's (its step, config, prompt; strategy, LoRA and its scope those of the last one with a LoRA, if
    any has one) with `extra.averaged_from` naming the sources and their weights; it replaces an earlier average
    of that name. Refused: an existing folder that is not such an average, fewer than two checkpoints, a strategy
    other than frozen / lora, manifests that differ in a field of SHARED_FIELDS (or LoRAs in lora_scope), or LoRA
    configs that differ in anything but LORA_FREE_FIELDS (rank, alpha, ...)."""
    if len(checkpoints) < 2:
        raise LSLError("Give at least two checkpoints to average (--checkpoint A --checkpoint B).")
    ms = [read_manifest(c) for c in checkpoints]
    w = [1.0] * len(ms) if weights is None else [float(x) for x in weights]
    if (len(w) != len(ms) or not all(math.isfinite(x) for x in w) or sum(w) <= 0
            or (not extrapolate and any(x < 0 for x in w))):
        rule = "summing to more than 0, each finite" if extrapolate else \
            ">= 0, not all 0 (negative ones need --extrapolate), each finite"
        raise LSLError(f"Give one weight per checkpoint, {rule}: {len(ms)} checkpoints, weights {weights}.")
    w = [x / sum(w) for x in w]
    for m in ms:
        if m.strategy not in AVERAGED_STRATEGIES or m.model:
            kind = f"strategy '{m.strategy}'" + (" (a public model)" if m.model else "")
            raise LSLError(f"Checkpoint '{m.name}' has {kind}: only the adaptor and LoRA of strategies "
                           f"{AVERAGED_STRATEGIES} are averaged.")
    last = ms[-1]
    for m in ms[:-1]:
        differ = [f for f in SHARED_FIELDS if getattr(m, f) != getattr(last, f)]
        if differ:
            raise LSLError(f"Checkpoints '{m.name}' and '{last.name}' differ in {differ}: average only checkpoints of "
                           "one model and configuration.")
    loras = [m for m in ms if m.lora]
    if len({m.lora_scope for m in loras}) > 1:
        raise LSLError(f"The LoRAs act at other positions (lora_scope {sorted({m.lora_scope for m in loras})}): "
                       "average only LoRAs of one scope.")
    name = name or f"{last.name}-avg{len(ms)}"
    folder = Path(out) / name
    if folder.exists() and not is_average(folder):
        raise LSLError(f"{folder} exists and is not an average written by this command: give another --out or "
                       "--name (an earlier average is replaced, nothing else).")
    configs = [lora_config(m.path(m.lora) / LORA_CONFIG) if m.lora else None for m in ms]
    ref = next((c for c in reversed(configs) if c is not None), {})
    differ = sorted({k for c in configs if c is not None for k in c.keys() | ref.keys()
                     if c.get(k) != ref.get(k) and k not in LORA_FREE_FIELDS})
    if differ:
        raise LSLError(f"The checkpoints' LoRA configs differ in {differ}: average only LoRAs of one configuration "
                       f"(they may differ in {list(LORA_FREE_FIELDS)}).")
    tmp = folder.with_name(f".{name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        write_average(tmp, ms, w, configs, name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # nothing half-written is left behind
        raise
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def write_average(tmp: Path, ms: list[CheckpointManifest], w: list[float], configs: list[dict | None],
                  name: str) -> None:
    """Write the average of checkpoints `ms` (weights `w`, LoRA configs `configs`) into the empty folder `tmp`."""
    from safetensors.torch import load_file, save_file

    last, loras = ms[-1], [m for m in ms if m.lora]
    adaptor = mean_state([load_file(str(m.path(m.adaptor))) for m in ms], w, "The adaptor")
    save_file(adaptor, str(tmp / ADAPTOR_FILE), metadata={"format": "pt"})
    if loras:
        (tmp / LORA_DIR).mkdir()
        states = [load_file(str(m.path(m.lora) / LORA_WEIGHTS)) if m.lora else None for m in ms]
        lora, cfg = mean_lora(states, w, configs)
        save_file(lora, str(tmp / LORA_DIR / LORA_WEIGHTS), metadata={"format": "pt"})
        (tmp / LORA_DIR / LORA_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    sources = [{"name": m.name, "path": str(Path(m.root).resolve()), "step": m.step, "weight": x}
               for m, x in zip(ms, w)]
    extra = {k: v for k, v in last.extra.items() if k == "stage"}
    if "weights_dtype" in ms[0].extra:  # the tensors take the first checkpoint's dtypes (mean_state)
        extra["weights_dtype"] = ms[0].extra["weights_dtype"]
    lora_fields = {"strategy": loras[-1].strategy, "lora": LORA_DIR, "lora_scope": loras[-1].lora_scope} if loras \
        else {"lora": None}
    manifest = dataclasses.replace(last, name=name, adaptor=ADAPTOR_FILE, root="", **lora_fields,
                                   extra={**extra, "averaged_from": sources})
    write_manifest(manifest, tmp)


def register(subparsers) -> None:
    """Add `average` to `python -m lsl_core`."""
    p = subparsers.add_parser("average", help="average the adaptor and LoRA weights of checkpoints (SWA, soups)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True, type=Path,
                   help="a checkpoint folder or manifest (repeat: two or more of one model; LoRA ranks may differ, "
                   "an adaptor-only checkpoint counts as a zero LoRA update)")
    p.add_argument("--weights", default=None, help="comma-separated weights, one per checkpoint (default: equal)")
    p.add_argument("--out", required=True, type=Path, help="folder to write the averaged checkpoint into")
    p.add_argument("--name", default=None, help="its name (default: <last checkpoint>-avg<N>)")
    p.add_argument("--extrapolate", action="store_true",
                   help="allow negative weights (e.g. --weights=-0.5,1.5 on a stage's start and end: half again "
                        "past the end)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        weights = None if args.weights is None else [float(x) for x in args.weights.split(",")]
    except ValueError:
        raise LSLError(f"--weights must be comma-separated numbers, got {args.weights!r}.") from None
    folder = average_checkpoints(args.checkpoint, args.out, args.name, weights, args.extrapolate)
    m: CheckpointManifest = read_manifest(folder)
    src = m.extra["averaged_from"]
    key = "name" if len({s["name"] for s in src}) == len(src) else "path"  # runs of one config share names
    parts = ", ".join(f"{s[key]} × {s['weight']:.3g}" for s in src)
    print(f"wrote {folder}: {parts}")
    return 0
