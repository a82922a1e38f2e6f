"""Checkpoint manifests (JSON) -> LSLM. The embedded default and users' 7B checkpoints share this path.

A manifest (`manifest.json`) names every part; relative paths are resolved against its folder:

    {"name": "lora-step400", "family": "smollm2-135m+whisper-tiny.en", "strategy": "lora", "step": 400,
     "llm": "embedded:smollm2-135m-instruct" | "<hub id>" | "<path>",
     "encoder": "embedded:whisper-tiny.en" | "<hub id>" | "<path>",
     "adaptor": "adaptor.safetensors", "lora": "lora", "downsample": 5,
     "prompt": {"kind": "chat", "system": "..."}}

A public speech LLM opened through its transformers class (lsl_core.model.families) names the whole
checkpoint in `model` instead of llm/encoder/adaptor; `family` (or `hf_class`) picks the class:

    {"name": "qwen2-audio-7b-instruct", "family": "qwen2-audio", "model": "Qwen/Qwen2-Audio-7B-Instruct",
     "strategy": "pretrained", "prompt": {"system": "..."}, "device_map": null}

A folder of manifests (searched recursively) is a model zoo.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from lsl_core.errors import ManifestError, ModelLoadError
from lsl_core.model.adaptor import Adaptor, AdaptorConfig
from lsl_core.model.hub import allow_download, serialized_load
from lsl_core.model.lora_scope import LORA_SCOPES, apply_lora_scope
from lsl_core.model.prompt import PromptTemplate

Strategy = Literal["none", "frozen", "lora", "full", "pretrained"]
STRATEGIES = ("none", "frozen", "lora", "full", "pretrained")  # pretrained: a public model used as released
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class CheckpointManifest:
    name: str  # display name, unique within a zoo
    llm: str = ""  # hub id, local folder, or "embedded:smollm2-135m-instruct" (built-in stack)
    encoder: str = ""  # hub id, local folder, or "embedded:whisper-tiny.en" (built-in stack)
    family: str = ""  # groups checkpoints for R² fits; with `model`: the model family (lsl_core.model.families)
    strategy: Strategy = "lora"  # none: untrained adaptor; frozen: adaptor only; lora; full
    step: int = 0  # training step of this checkpoint
    adaptor: str | None = None  # adaptor safetensors (None only for strategy "none")
    lora: str | None = None  # peft adapter folder (adapter_config.json + adapter_model.safetensors)
    lora_scope: str = "all"  # where the LoRA acts: "all" positions, or "speech" only (lsl_core.model.lora_scope)
    downsample: int = 5  # frames stacked by the adaptor
    adaptor_hidden: int | None = None  # adaptor MLP width; None -> LLM width
    adaptor_context: int = 0  # local self-attention blocks inside the adaptor (lsl_core.model.adaptor); 0 = plain MLP
    prompt: dict = field(default_factory=dict)  # PromptTemplate fields
    seed: int = 0  # init seed of the adaptor for strategy "none"
    trust_remote_code: bool = False  # opt-in only: runs code from the checkpoint
    encoder_window: str = "padded"  # Whisper window convention: "padded" (30 s) or "clip" (real length + 1 s)
    model: str = ""  # a whole public checkpoint (hub id or folder) opened by its family instead of llm/encoder
    hf_class: str = ""  # transformers class of `model` (optional; must agree with `family`)
    device_map: str | None = None  # e.g. "auto": spread a `model` over several GPUs (accelerate)
    root: str = ""  # folder the relative paths resolve against (set by read_manifest)
    extra: dict = field(default_factory=dict)  # free-form metadata (training config, metrics)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ManifestError(f"manifest field 'strategy' must be one of {STRATEGIES}, got {self.strategy!r}.")
        if not self.name:
            raise ManifestError("manifest field 'name' is empty; give the checkpoint a name.")
        if self.lora_scope not in LORA_SCOPES:
            raise ManifestError(f"manifest '{self.name}': 'lora_scope' must be one of {LORA_SCOPES}, "
                                f"got {self.lora_scope!r}.")
        if self.lora_scope != "all" and not self.lora:
            raise ManifestError(f"manifest '{self.name}': 'lora_scope' {self.lora_scope!r} needs a 'lora' adapter; "
                                "remove 'lora_scope' or add 'lora'.")
        if self.model:  # a family checkpoint: no adaptor / encoder of ours
            return
        if not (self.llm and self.encoder):
            raise ManifestError(f"manifest '{self.name}': give 'llm' and 'encoder' (our stack) or 'model' "
                                "(a whole public checkpoint with its 'family').")
        if self.strategy != "none" and not self.adaptor:
            raise ManifestError(f"manifest '{self.name}': field 'adaptor' is required for strategy '{self.strategy}'.")
        if self.strategy == "lora" and not self.lora:
            raise ManifestError(f"manifest '{self.name}': strategy 'lora' needs field 'lora' (a peft adapter folder).")
        if int(self.downsample) <= 0:
            raise ManifestError(f"manifest '{self.name}': 'downsample' must be a positive integer.")
        if not isinstance(self.adaptor_context, int) or self.adaptor_context < 0:
            raise ManifestError(f"manifest '{self.name}': 'adaptor_context' must be an integer >= 0 (context blocks "
                                f"in the adaptor), got {self.adaptor_context!r}.")
        if self.encoder_window not in ("padded", "clip"):
            raise ManifestError(f"manifest '{self.name}': 'encoder_window' must be 'padded' or 'clip', "
                                f"got {self.encoder_window!r}.")

    def path(self, rel: str | None) -> Path | None:
        """Resolve a manifest path relative to its folder."""
        if rel is None:
            return None
        p = Path(rel)
        return p if p.is_absolute() else Path(self.root) / p

    def template(self) -> PromptTemplate:
        try:
            return PromptTemplate(**self.prompt)
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"manifest '{self.name}': bad 'prompt' field ({exc}).") from None

    def to_json(self) -> dict:
        """The manifest as written; `lora_scope` and `adaptor_context` only when not at their defaults (so
        manifests written before the fields existed, and their digests and cache keys, stay as they were)."""
        d = asdict(self)
        d.pop("root")
        if d["lora_scope"] == "all":
            d.pop("lora_scope")
        if d["adaptor_context"] == 0:
            d.pop("adaptor_context")
        return d


def read_manifest(path: str | Path) -> CheckpointManifest:
    """Parse a manifest file (or a folder holding manifest.json)."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.is_file():
        raise ManifestError(f"Checkpoint manifest not found: {p}. Point to a manifest.json or its folder.")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise ManifestError(f"Manifest {p} is not valid JSON ({exc}).") from None
    known = set(CheckpointManifest.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ManifestError(f"Manifest {p} has unknown field(s) {unknown}; known fields: {sorted(known - {'root'})}.")
    missing = [k for k in (("name", "model") if "model" in data else ("name", "llm", "encoder")) if k not in data]
    if missing:
        raise ManifestError(f"Manifest {p} lacks required field(s) {missing}.")
    data["root"] = str(p.parent.resolve())
    return CheckpointManifest(**data)



def distinct_manifests(manifests: list[CheckpointManifest], command: str, way_out: str) -> list[CheckpointManifest]:
    """The manifests with each checkpoint folder once (a folder named twice, e.g. by --zoo and --checkpoint, or as
    folder and manifest.json), in order. Results are grouped by checkpoint name, so two folders of one name (two
    runs' "lora-step2900") would pool into one: refused, ManifestError naming both folders and `way_out`."""
    where: dict[str, str] = {}  # manifest name -> its folder
    out = []
    for m in manifests:
        folder = str(m.root or m.name)
        if m.name in where:
            if where[m.name] == folder:
                continue
            raise ManifestError(f"{command}: two checkpoints are named {m.name!r} ({where[m.name]} and {folder}); "
                                f"their rows would be pooled into one. {way_out}")
        where[m.name] = folder
        out.append(m)
    return out

def write_manifest(m: CheckpointManifest, folder: str | Path) -> Path:
    """Write `manifest.json` into folder (paths inside should be relative to it)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / MANIFEST_NAME
    out.write_text(json.dumps(m.to_json(), indent=2) + "\n")
    return out


def list_zoo(folder: str | Path) -> list[CheckpointManifest]:
    """All readable manifests under a folder, sorted by (family, strategy, step); bad ones are skipped.
    A folder that does not exist, or a file, is refused (ManifestError), not read as an empty zoo."""
    if not Path(folder).is_dir():
        what = "is a file, not a folder" if Path(folder).exists() else "does not exist"
        raise ManifestError(f"Checkpoint folder {folder} {what}; give a folder that holds checkpoints "
                            "(manifest.json files, searched recursively).")
    found = []
    for p in sorted(Path(folder).rglob(MANIFEST_NAME)):
        try:
            found.append(read_manifest(p))
        except ManifestError:
            continue
    return sorted(found, key=lambda m: (m.family, m.strategy, m.step, m.name))


def manifest_digest(m: CheckpointManifest) -> str:
    """Identity of a checkpoint's weights for cache keys: manifest + adaptor/LoRA file bytes (load_checkpoint adds
    the identity of local llm / encoder folders, families.base.folder_digest)."""
    h = hashlib.sha256(json.dumps(m.to_json(), sort_keys=True).encode())
    for rel in (m.adaptor, m.lora):
        p = m.path(rel)
        if p is None or not p.exists():
            continue
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- device / dtype
def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA, float32 on CPU (metrics are always computed in float32)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# --------------------------------------------------------------------------- parts
def _resolve_model_ref(ref: str, root: str, what: str) -> str | Path:
    """embedded:* -> cached folder; existing relative/absolute path -> Path; else a hub id."""
    if ref.startswith("embedded:"):
        from lsl_core.model.embedded import resolve_embedded

        return resolve_embedded(ref)
    p = Path(ref) if Path(ref).is_absolute() else Path(root) / ref
    if p.exists():
        return p
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ManifestError(f"The {what} path '{ref}' does not exist (resolved to {p}). Fix the manifest path.")
    return ref  # hub id


@serialized_load
def load_llm(ref: str | Path, dtype: torch.dtype, device: torch.device, trust_remote_code: bool = False):
    """Causal LM + tokenizer from a local folder or hub id; safetensors only, offline unless allowed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local_only = not allow_download()
    try:
        tok = AutoTokenizer.from_pretrained(ref, local_files_only=local_only, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            ref, dtype=dtype, local_files_only=local_only, use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"Could not load LLM '{ref}'" + (" offline" if local_only else "") + f": {str(exc).splitlines()[0]} "
            "Pass a local folder with config.json + *.safetensors, or a hub id already in the HF cache "
            "(set LSL_ALLOW_DOWNLOAD=1 to allow downloads)."
        ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(device).eval(), tok


def load_adaptor(m: CheckpointManifest, enc_dim: int, llm_dim: int) -> Adaptor:
    """Adaptor from safetensors (or a seeded random init for strategy 'none'); checks widths."""
    from safetensors.torch import load_file

    try:
        cfg = AdaptorConfig(enc_dim=enc_dim, llm_dim=llm_dim, stack=m.downsample, hidden=m.adaptor_hidden,
                            context=m.adaptor_context)
    except ValueError as exc:
        raise ManifestError(f"manifest '{m.name}': {exc}. Fix 'adaptor_hidden' / 'adaptor_context'.") from None
    if m.adaptor is None:
        torch.manual_seed(m.seed)
        return Adaptor(cfg)
    p = m.path(m.adaptor)
    if not p.is_file():
        raise ManifestError(f"manifest '{m.name}': adaptor weights not found at {p}. Fix 'adaptor' or re-train.")
    state = load_file(str(p))
    exp = {"fc1.weight": (cfg.hidden or llm_dim, enc_dim * m.downsample), "fc2.weight": (llm_dim, cfg.hidden or llm_dim)}
    for k, shape in exp.items():
        if k not in state:
            raise ManifestError(f"manifest '{m.name}': adaptor file {p.name} has no tensor '{k}'.")
        if tuple(state[k].shape) != shape:
            raise ManifestError(
                f"manifest '{m.name}': adaptor '{k}' has shape {tuple(state[k].shape)} but the encoder width "
                f"{enc_dim} x downsample {m.downsample} and LLM width {llm_dim} need {shape}. "
                "The adaptor was trained for another encoder/LLM or downsample factor."
            )
    adaptor = Adaptor(cfg)
    want, have = set(adaptor.state_dict()), set(state)
    if want != have:
        blocks = len({k.split(".")[1] for k in have if k.startswith("context.")})
        raise ManifestError(
            f"manifest '{m.name}': adaptor file {p.name} holds {blocks} context block(s) but the manifest says "
            f"adaptor_context={m.adaptor_context}" if blocks != m.adaptor_context else
            f"manifest '{m.name}': adaptor file {p.name} has unexpected or missing tensors "
            f"({sorted(have ^ want)[:3]}); it was not written by this adaptor."
        )
    adaptor.load_state_dict({k: v.float() for k, v in state.items()})
    return adaptor


@contextmanager
def quiet_peft_wrap():
    """Wrapping an LLM in peft reads transformers' deprecated `is_gradient_checkpointing`, which warns on every
    LoRA load (a FutureWarning between the two libraries that no user can act on): silence that one message."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def attach_lora(llm, m: CheckpointManifest):
    """Wrap the LLM with the manifest's peft LoRA adapter (safetensors only)."""
    from peft import PeftModel

    p = m.path(m.lora)
    if not (p and (p / "adapter_config.json").is_file()):
        raise ManifestError(f"manifest '{m.name}': LoRA folder {p} lacks adapter_config.json. Fix 'lora'.")
    if not (p / "adapter_model.safetensors").is_file():
        raise ManifestError(
            f"manifest '{m.name}': {p} has no adapter_model.safetensors; pickled adapters are not loaded. "
            "Re-save the adapter with safe_serialization=True."
        )
    try:
        with quiet_peft_wrap():
            return PeftModel.from_pretrained(llm, str(p), is_trainable=False).eval()
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ManifestError(f"manifest '{m.name}': LoRA adapter at {p} does not fit the LLM ({exc}).") from None


@serialized_load
def load_checkpoint(manifest: str | Path | CheckpointManifest, *, device: str | torch.device | None = None,
                    dtype: torch.dtype | None = None, merge_lora: bool = True):
    """Build an LSLM from a manifest. Device defaults to CUDA if present; dtype bf16 on CUDA, else float32.

    merge_lora folds W + BA into W once (the same function; unmerged peft layers make CPU decoding
    1.12-1.15x slower, benchmarks/bench_lora_scope.py). Pass False to keep the peft wrapper, e.g. to continue
    training the adapter. A LoRA with lora_scope 'speech' acts at speech positions only, which no merged
    weight can express: it stays unmerged with its scope hooks (lsl_core.model.lora_scope).
    """
    from lsl_core.model.encoder import SpeechEncoder
    from lsl_core.model.lslm import LSLM

    m = manifest if isinstance(manifest, CheckpointManifest) else read_manifest(manifest)
    dev = torch.device(device) if device is not None else default_device()
    dt = dtype or default_dtype(dev)
    if m.model:  # a public speech LLM through its family (lsl_core.model.families)
        from lsl_core.model.families import load_family

        return load_family(m, device=dev, dtype=dt, ref=_resolve_model_ref(m.model, m.root, "model"),
                           local_only=not allow_download(), manifest_digest=manifest_digest(m))
    llm_ref = _resolve_model_ref(m.llm, m.root, "LLM")
    enc_ref = _resolve_model_ref(m.encoder, m.root, "encoder")
    llm, tok = load_llm(llm_ref, dt, dev, m.trust_remote_code)
    encoder = SpeechEncoder.from_pretrained(enc_ref, dtype=dt, device=dev, window=m.encoder_window)
    llm_dim = llm.get_input_embeddings().weight.shape[1]
    adaptor = load_adaptor(m, encoder.output_dim, llm_dim).to(dev, dt).eval()
    merge_lora = merge_lora and m.lora_scope == "all"
    if m.lora:
        llm = attach_lora(llm, m)
        if merge_lora:
            llm = llm.merge_and_unload().eval()
        else:
            apply_lora_scope(llm, m.lora_scope)
    asr_factory = _asr_factory(enc_ref, dev, dt)
    merged = "-merged" if (m.lora and merge_lora) else ""  # merging rounds differently: part of the cache key
    from lsl_core.model.families.base import folder_digest

    local = "".join(f"-{folder_digest(r)}" for spec, r in ((m.llm, llm_ref), (m.encoder, enc_ref))
                    if isinstance(r, Path) and not spec.startswith("embedded:"))  # a user's folder may change in place
    digest = f"{manifest_digest(m)}{local}-{dev.type}-{dt}{merged}".replace("torch.", "")
    return LSLM(encoder, adaptor, llm, tok, m.template(), name=m.name, digest=digest, manifest=m.to_json(),
                asr_factory=asr_factory)


def _asr_factory(enc_ref, device, dtype):
    """A lazy Whisper ASR for the cascade when the encoder folder is a full Whisper model."""
    cfg = Path(enc_ref) / "config.json" if isinstance(enc_ref, Path) else None
    if cfg is None or not cfg.is_file() or "whisper" not in cfg.read_text().lower():
        return None

    def make():
        from lsl_core.model.asr import WhisperASR

        return WhisperASR.from_pretrained(enc_ref, device=device, dtype=dtype)

    return make


def default_checkpoint() -> Path:
    """The app's default model: the latest shipped `lora` checkpoint, else the untrained embedded stack."""
    from lsl_core.data.paths import assets_dir

    zoo = [m for m in list_zoo(assets_dir() / "checkpoints") if m.strategy == "lora"]
    if zoo:
        return Path(max(zoo, key=lambda m: m.step).root)
    return assets_dir() / "checkpoints" / "embedded-untrained"
