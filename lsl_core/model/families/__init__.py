"""Model families: public speech LLMs opened through their transformers class, behind the LSLM interface.

A manifest with a `model` field (hub id or folder of the whole checkpoint) is a family checkpoint;
its `family` (or `hf_class`) picks the class from FAMILIES:

    family          hf_class                                      frame (after projector)
    qwen2-audio     Qwen2AudioForConditionalGeneration            40 ms
    qwen2.5-omni    Qwen2_5OmniThinkerForConditionalGeneration    40 ms   (thinker only)
    voxtral         VoxtralForConditionalGeneration               80 ms   (padded to 30 s chunks)
    granite-speech  GraniteSpeechForConditionalGeneration         100 ms

    {"name": "qwen2-audio-7b-instruct", "family": "qwen2-audio", "model": "Qwen/Qwen2-Audio-7B-Instruct",
     "strategy": "pretrained"}

Classes that need remote code (MiniCPM-o, LLaMA-Omni) are added with `register_family` (see
lsl_core/model/families/remote.py and docs/families.md) and load only when the manifest sets
`"trust_remote_code": true`.
"""

from __future__ import annotations


import torch

from lsl_core.errors import ManifestError, ModelLoadError
from lsl_core.model.families.base import (CAPABILITY_NAMES, Capability, Family, FamilyInfo, FamilyLSLM,
                                          builtin_capabilities, folder_digest)
from lsl_core.model.families.granite_speech import GraniteSpeech
from lsl_core.model.families.qwen2_5_omni import Qwen25OmniThinker
from lsl_core.model.families.qwen2_audio import Qwen2Audio
from lsl_core.model.families.voxtral import Voxtral

FAMILIES: dict[str, Family] = {f.name: f for f in (Qwen2Audio(), Qwen25OmniThinker(), Voxtral(), GraniteSpeech())}
NATIVE = frozenset(FAMILIES)


def register_family(family: Family) -> None:
    """Add a family (e.g. a remote-code class, see remote.py) under family.name; replaces a user family of
    the same name, never a native one."""
    if family.name in NATIVE:
        raise ValueError(f"'{family.name}' is a built-in family; register yours under another name.")
    FAMILIES[family.name] = family


def family_table() -> list[FamilyInfo]:
    return [FamilyInfo(f.name, f.hf_class, tuple(f.model_types), tuple(f.hub_ids), f.frame_seconds, f.audio_token,
                       bool(f.trust_remote_code), f.capabilities()) for f in FAMILIES.values()]


def capabilities(model) -> dict[str, Capability]:
    """What a loaded model supports (family table, or the built-in stack's), each with the reason when not."""
    own = getattr(model, "capabilities", None)
    return own() if callable(own) else builtin_capabilities(bool(getattr(model, "has_asr", False)))


def transcript_source(model) -> str:
    """Who writes the ASR transcript of this model (for captions)."""
    if getattr(model, "family", None) is not None:
        return "the model itself, asked to transcribe"
    return "the encoder's Whisper decoder"


def is_family_manifest(m) -> bool:
    """A manifest naming a whole public checkpoint (`model`) rather than encoder + adaptor + LLM."""
    return bool(getattr(m, "model", ""))


def resolve_family(m) -> Family:
    """The Family of a manifest, from 'hf_class' (wins) or 'family'; errors name the field to fix."""
    known = ", ".join(sorted(FAMILIES))
    if m.hf_class:
        by_class = [f for f in FAMILIES.values() if f.hf_class == m.hf_class]
        if not by_class:
            if not m.trust_remote_code:
                raise ManifestError(
                    f"manifest '{m.name}': 'hf_class' {m.hf_class!r} is not a native transformers family ({known}); "
                    "opening it would run code shipped with the checkpoint. Set \"trust_remote_code\": true in the "
                    "manifest if you trust that code, and register a family for it (docs/families.md).")
            raise ManifestError(
                f"manifest '{m.name}': no family is registered for 'hf_class' {m.hf_class!r}. Register one with "
                "lsl_core.model.families.register_family before loading (docs/families.md, remote code), or fix "
                f"'hf_class' to one of: {', '.join(f.hf_class for f in FAMILIES.values())}.")
        fam = next((f for f in by_class if f.name == m.family), by_class[0])  # a user family may share the class
        if m.family and m.family in FAMILIES and m.family != fam.name:
            raise ManifestError(
                f"manifest '{m.name}': 'family' {m.family!r} opens {FAMILIES[m.family].hf_class}, but 'hf_class' is "
                f"{m.hf_class!r} (family '{fam.name}'). Fix 'family' or 'hf_class' so they agree, or drop one.")
    elif m.family in FAMILIES:
        fam = FAMILIES[m.family]
    else:
        raise ManifestError(
            f"manifest '{m.name}': 'family' {m.family!r} is not a known model family. Set 'family' to one of: "
            f"{known} (or 'hf_class' to its transformers class).")
    if fam.trust_remote_code and not m.trust_remote_code:
        raise ManifestError(
            f"manifest '{m.name}': family '{fam.name}' ({fam.hf_class}) runs code shipped with the checkpoint. "
            "Set \"trust_remote_code\": true in the manifest to allow it.")
    return fam


def family_system(m, fam: Family) -> str | None:
    """The system prompt a family manifest asks for (its 'prompt' may hold only "system", and "kind": "chat"):
    a family builds its prompts in the model's own chat format, so a plain format or an unknown key is refused."""
    prompt = m.prompt if m.prompt is not None else {}
    if not isinstance(prompt, dict):
        raise ManifestError(f"manifest '{m.name}': field 'prompt' must be an object such as {{\"system\": \"...\"}}, "
                            f"got {type(prompt).__name__}.")
    extra = sorted(set(prompt) - {"system", "kind"})
    if extra or prompt.get("kind", "chat") != "chat":
        what = ", ".join(f"'{k}'" for k in extra) or "'prompt' kind " + repr(prompt.get("kind"))
        raise ManifestError(f"manifest '{m.name}': family '{fam.name}' builds its prompts in the model's own chat "
                            f"format, so {what} cannot apply; its 'prompt' takes only \"system\". Remove it.")
    system = prompt.get("system", fam.default_system)
    if system is not None and not isinstance(system, str):
        raise ManifestError(f"manifest '{m.name}': 'prompt' field 'system' must be a string, "
                            f"got {type(system).__name__}.")
    return system


def _load_error(m, fam: Family, ref, exc: Exception) -> ModelLoadError:
    """The one-line error of a checkpoint folder transformers could not open (processor or weights)."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ModelLoadError(f"manifest '{m.name}': could not load {fam.hf_class} from '{ref}': {first}. The folder "
                          "needs config.json, *.safetensors (pickled weights are never loaded), the tokenizer and "
                          "the feature extractor (preprocessor_config.json).")


def load_family(m, *, device: torch.device, dtype: torch.dtype, ref, local_only: bool, manifest_digest: str):
    """Open a family checkpoint (ref: resolved folder or hub id) -> FamilyLSLM."""
    fam = resolve_family(m)
    system = family_system(m, fam)
    if m.lora:
        raise ManifestError(f"manifest '{m.name}': field 'lora' is not supported for family '{fam.name}' "
                            f"({fam.capabilities()['lora'].reason}). Remove 'lora'.")
    remote = bool(fam.trust_remote_code and m.trust_remote_code)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(ref, local_files_only=local_only, trust_remote_code=remote)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = (" Its model_type needs remote code: set \"trust_remote_code\": true in the manifest if you trust it."
                if "trust_remote_code" in str(exc) else "")
        raise ModelLoadError(
            f"manifest '{m.name}': could not read the config of '{ref}'" + (" offline" if local_only else "")
            + f": {first}.{hint} Point 'model' at a folder with config.json + *.safetensors, or a hub id already "
            "in the HF cache (LSL_ALLOW_DOWNLOAD=1 allows downloads).") from None
    fam.check_config(config, "hf_class" if m.hf_class else "family")
    try:
        tok, fe = fam.load_processor(ref, local_only=local_only)
    except (OSError, ValueError) as exc:
        raise _load_error(m, fam, ref, exc) from None
    problem = fam.tokenizer_problem(tok)  # before the weights are read: a wrong folder fails fast
    if problem:
        raise ModelLoadError(f"manifest '{m.name}': '{ref}' cannot be opened as {fam.name}: {problem}")
    try:
        llm = fam.load_model(ref, config, dtype, device, local_only=local_only, device_map=m.device_map)
    except (OSError, ValueError) as exc:
        raise _load_error(m, fam, ref, exc) from None
    if getattr(tok, "pad_token_id", None) is None and getattr(tok, "eos_token", None) is not None:
        tok.pad_token = tok.eos_token
    digest = f"{manifest_digest}-{folder_digest(ref)}-{device.type}-{dtype}".replace("torch.", "")
    return FamilyLSLM(fam, llm, tok, fe, system=system, name=m.name, digest=digest, manifest=m.to_json())


__all__ = ["FAMILIES", "CAPABILITY_NAMES", "Capability", "Family", "FamilyLSLM", "FamilyInfo", "register_family",
           "family_table", "capabilities", "transcript_source", "is_family_manifest", "resolve_family", "load_family"]
