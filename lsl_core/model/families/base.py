"""The family interface: how one public speech-LLM class becomes the LSLM the analysis, the interventions
and the app use.

A *family* is one transformers model class (Qwen2AudioForConditionalGeneration, ...) plus what it takes
to put a spoken and a typed question into the SAME chat prompt:

    speech prompt  [speech_prefix | audio placeholder positions (Ts) | speech_suffix]
    text prompt    [text_prefix   | question tokens (Tt)             | text_suffix]

Both prompts are rendered from the same messages (the manifest's system prompt, then one user turn
whose content is the audio or the typed question, then the assistant header), so the typed question
sits exactly where the audio placeholder sat. The audio boundary markers (<|audio_bos|>,
[BEGIN_AUDIO], ...) belong to the speech prompt only: the model's text mode never sees them.

The speech span is the run of audio placeholder tokens the processor expands (one per projector
output frame); `Family.audio_embeddings` computes the vectors the model scatters into those
positions, with the model's own audio tower and projector. `FamilyLSLM` then runs the decoder on
`inputs_embeds` exactly like the built-in stack, so `hidden_states`, `build_prompt`,
`generate_ids` (the one generation path) and the prefill hooks of lsl_core.interventions work unchanged.

Capabilities: every family answers the same table (CAPABILITY_NAMES); the app reads it to grey out
what does not apply, with the reason.
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, ContextManager, Iterator

import numpy as np
import torch
from torch import nn

from lsl_core.data.audio import TARGET_SR, prepare_audio
from lsl_core.errors import AudioError, LSLError, ModelLoadError
from lsl_core.model.lslm import LSLM, PromptInputs, SpeechEmbedding
from lsl_core.model.prompt import DEFAULT_SYSTEM, PromptTemplate

_SENTINEL = "\u2063QUERY\u2063"  # stands for the typed question while the chat template is rendered


# =============================================================================== capabilities
@dataclass(frozen=True)
class Capability:
    """Whether a model supports one feature, and why not when it does not (shown greyed out in the app)."""

    supported: bool
    reason: str = ""  # required when unsupported: what is missing and what to use instead

    def __bool__(self) -> bool:
        return self.supported


CAPABILITY_NAMES: dict[str, str] = {
    "analysis": "per-layer hidden states of the speech and text spans; every alignment metric",
    "interventions": "prefill edits of speech positions at decoder layer ℓ (angle / length / calibration)",
    "calibration_layer0": "statistical calibration at ℓ = 0 (the LLM input embeddings)",
    "asr": "a transcript of the clip",
    "cascade": "cascade baseline: the transcript answered by the same LLM as typed text",
    "lora": "a peft LoRA adapter named in the manifest's 'lora' field",
    "training": "`python -m lsl_core train` (adaptor / LoRA training)",
    "batch_evaluate": "`python -m lsl_core evaluate` (batched answers over cached encoder states)",
}


def builtin_capabilities(has_asr: bool) -> dict[str, Capability]:
    """The table of the built-in encoder -> adaptor -> LLM stack."""
    caps = {k: Capability(True) for k in CAPABILITY_NAMES}
    if not has_asr:
        why = "the encoder folder has no Whisper decoder, so there is no transcript to answer"
        caps["asr"] = Capability(False, why)
        caps["cascade"] = Capability(False, why)
    return caps


# =============================================================================== the family
class Family:
    """One public model class: prompt layout, audio embeddings, decoder stack, capabilities.

    Subclasses set the class attributes and implement `audio_embeddings` and `language_model`;
    chat-template families implement `speech_content` / `text_content` (see ChatTemplateFamily).
    """

    name: ClassVar[str]  # registry key = the manifest's 'family'
    hf_class: ClassVar[str]  # transformers class that opens the checkpoint
    model_types: ClassVar[tuple[str, ...]]  # config.json model_type values this class opens
    hub_ids: ClassVar[tuple[str, ...]] = ()  # public checkpoints (docs/families.md has the manifests)
    frame_seconds: ClassVar[float]  # audio covered by one speech-span position (after the projector)
    max_seconds: ClassVar[float] = 30.0  # longest clip the processor keeps whole (longer -> AudioError)
    audio_token: ClassVar[str]  # the placeholder the processor repeats Ts times
    transcribe_instruction: ClassVar[str] = "Transcribe the speech."
    default_system: ClassVar[str] = DEFAULT_SYSTEM  # used when the manifest's prompt gives none
    trust_remote_code: ClassVar[bool] = False
    unsupported: ClassVar[dict[str, str]] = {
        "lora": "a family checkpoint is analysed as released; attach adapters with peft before saving, or use "
                "a built-in (encoder + adaptor + LLM) manifest",
        "training": "training builds our own adaptor on a Whisper encoder; a family already has its projector",
        "batch_evaluate": "evaluate batches cached Whisper-encoder states through our adaptor; use `analyze` "
                          "and the Interventions page (one clip at a time) for this model",
    }

    # ------------------------------------------------------------------ loading
    def load_model(self, ref: str | Path, config, dtype: torch.dtype, device: torch.device, *,
                   local_only: bool, device_map: str | None) -> nn.Module:
        """The transformers model in eval mode (safetensors only; device_map for multi-GPU)."""
        import transformers

        cls = getattr(transformers, self.hf_class)
        kwargs = dict(dtype=dtype, local_files_only=local_only, use_safetensors=True)
        if device_map:
            model = cls.from_pretrained(ref, device_map=device_map, **kwargs)
        else:
            model = cls.from_pretrained(ref, **kwargs).to(device)
        return model.eval()

    def load_processor(self, ref: str | Path, *, local_only: bool):
        """(tokenizer, feature extractor) of the checkpoint."""
        from transformers import AutoFeatureExtractor, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(ref, local_files_only=local_only)
        fe = AutoFeatureExtractor.from_pretrained(ref, local_files_only=local_only)
        return tok, fe

    # ------------------------------------------------------------------ prompts
    def speech_prompt_ids(self, tok, system: str | None, instruction: str = "") -> tuple[list[int], list[int]]:
        """(prefix ids, suffix ids) around the audio placeholder run of the speech prompt."""
        raise NotImplementedError

    def text_prompt_ids(self, tok, system: str | None) -> tuple[list[int], list[int]]:
        """(prefix ids, suffix ids) around the typed question in the text prompt."""
        raise NotImplementedError

    def transcription_prompt_ids(self, tok, system: str | None) -> tuple[list[int], list[int]]:
        """The speech prompt that asks the model itself for a transcript."""
        return self.speech_prompt_ids(tok, system, self.transcribe_instruction)

    def num_audio_tokens(self, model: nn.Module, n_samples: int) -> int:
        """Ts for a 16 kHz clip of n_samples (what the processor expands the placeholder to)."""
        raise NotImplementedError

    def max_seconds_for(self, model: nn.Module, feature_extractor) -> float:
        """Longest clip this checkpoint reads whole (longer ones are refused with an AudioError)."""
        return self.max_seconds

    def frame_seconds_for(self, model: nn.Module) -> float:
        """Seconds of audio per speech-span position for this model's config (hub default: frame_seconds)."""
        return self.frame_seconds

    # ------------------------------------------------------------------ model parts
    def audio_embeddings(self, model: nn.Module, feature_extractor, wav16k: np.ndarray) -> torch.Tensor:
        """16 kHz mono clip -> projector output [Ts, d], exactly what the model scatters into the span."""
        raise NotImplementedError

    def language_model(self, model: nn.Module) -> nn.Module:
        """The decoder stack (owns `.layers`; block l receives hidden_states[l])."""
        raise NotImplementedError

    def modality(self, model: nn.Module, speech: bool) -> ContextManager:
        """Weights for one modality (Granite-speech enables its audio LoRA for speech only)."""
        return nullcontext()

    def capabilities(self) -> dict[str, Capability]:
        caps = {k: Capability(True) for k in CAPABILITY_NAMES}
        for k, why in self.unsupported.items():
            caps[k] = Capability(False, why)
        return caps

    def tokenizer_problem(self, tok) -> str | None:
        """What is wrong with the checkpoint's tokenizer for this family (None: nothing found)."""
        return None

    def check_config(self, config, field_name: str) -> None:
        """Raise a ManifestError naming `field_name` when config.json is not one this class opens."""
        from lsl_core.errors import ManifestError

        mt = getattr(config, "model_type", "")
        if mt not in self.model_types:
            raise ManifestError(
                f"The checkpoint's config.json has model_type '{mt}', but manifest field '{field_name}' selects "
                f"{self.name} ({self.hf_class}), which opens model_type {' or '.join(map(repr, self.model_types))}. "
                f"Fix '{field_name}' to the family of this checkpoint (python -m lsl_core families list)."
            )


class ChatTemplateFamily(Family):
    """A family whose prompts come from a Jinja chat template with an audio content item.

    The checkpoint's own template is used when its tokenizer carries one; `CHAT_TEMPLATE` (the hub
    template, copied here) otherwise.
    """

    CHAT_TEMPLATE: ClassVar[str] = ""

    def speech_content(self, instruction: str):
        raise NotImplementedError

    def text_content(self, text: str):
        return text

    def render(self, tok, system: str | None, content) -> str:
        messages = [{"role": "user", "content": content}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        template = getattr(tok, "chat_template", None) or self.CHAT_TEMPLATE
        return tok.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True)

    def tokenizer_problem(self, tok) -> str | None:
        """The audio placeholder must be one token of the vocabulary (transformers builds an empty tokenizer for
        a folder without tokenizer files, which maps every token to id 0)."""
        i = tok.convert_tokens_to_ids(self.audio_token)  # an unknown token maps to the unk id (or None)
        if i is not None and tok.convert_ids_to_tokens(i) == self.audio_token:
            return None
        return (f"its tokenizer ({len(tok)} tokens) does not know the audio placeholder '{self.audio_token}': the "
                "tokenizer files (tokenizer.json or vocab.json + merges.txt, tokenizer_config.json) are missing or "
                "belong to another model. Copy them from the checkpoint's repository"
                + (f" ({self.hub_ids[0]})" if self.hub_ids else "") + " into the folder.")

    def _ids(self, tok, text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False).input_ids) if text else []

    def speech_prompt_ids(self, tok, system, instruction=""):
        try:
            full = self.render(tok, system, self.speech_content(instruction))
            found = f"renders {full.count(self.audio_token)} '{self.audio_token}' placeholders for one audio clip"
        except Exception as exc:  # noqa: BLE001 - jinja errors of a template that takes string content only
            first = str(exc).splitlines()[0] if str(exc) else ""
            full, found = "", f"fails on an audio item ({type(exc).__name__}: {first})"
        if full.count(self.audio_token) != 1:
            raise ModelLoadError(
                f"The checkpoint's chat template {found}; one '{self.audio_token}' is expected: it is not a "
                f"{self.name} audio template (a text LLM's template?). Remove chat_template.jinja "
                "(or 'chat_template' in tokenizer_config.json) from the folder to use the hub template built into "
                "lsl_core, or copy the checkpoint's own audio template there.")
        prefix, suffix = full.split(self.audio_token)
        return self._ids(tok, prefix), self._ids(tok, suffix)

    def text_prompt_ids(self, tok, system):
        full = self.render(tok, system, self.text_content(_SENTINEL))
        assert full.count(_SENTINEL) == 1, "the chat template must contain the question exactly once"
        prefix, suffix = full.split(_SENTINEL)
        return self._ids(tok, prefix), self._ids(tok, suffix)


# =============================================================================== the model
class FamilyLSLM(LSLM):
    """A public speech LLM behind the LSLM interface (see the module docstring).

    llm: the transformers model (its forward/generate take inputs_embeds); tokenizer and
    feature_extractor: the checkpoint's; there is no separate encoder/adaptor (the family's audio
    tower and projector make the speech span).
    """

    weights_per_modality = True  # family.modality switches weights (LSLM.weights_per_modality)

    asr_token_limit: int | None = None  # fixed transcript length limit (None: by clip length)

    def __init__(self, family: Family, llm: nn.Module, tokenizer, feature_extractor, *, system: str | None,
                 name: str, digest: str, manifest: dict | None = None) -> None:
        self.family = family
        self.llm = llm
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.template = PromptTemplate(system=system or "")
        self.system = system
        self.name = name
        self.digest = digest
        self.manifest = manifest or {}
        self._asr_factory = None
        self._asr = None
        self.lock = threading.RLock()
        self.prefix_ids, self.suffix_ids = family.text_prompt_ids(tokenizer, system)  # text prompt
        self.speech_prefix_ids, self.speech_suffix_ids = family.speech_prompt_ids(tokenizer, system)
        self.asr_prefix_ids, self.asr_suffix_ids = family.transcription_prompt_ids(tokenizer, system)

    # ------------------------------------------------------------------ no built-in parts
    @property
    def encoder(self):
        raise LSLError(f"{self.name} ({self.family.name}) has no separate speech encoder: "
                       f"{self.family.unsupported['batch_evaluate']}.")

    @property
    def adaptor(self):
        raise LSLError(f"{self.name} ({self.family.name}) has no adaptor of ours: "
                       f"{self.family.unsupported['training']}.")

    def capabilities(self) -> dict[str, Capability]:
        return self.family.capabilities()

    def decoder_layers(self) -> nn.ModuleList:
        return self.family.language_model(self.llm).layers

    # ------------------------------------------------------------------ embeddings
    @torch.no_grad()
    def embed_speech(self, audio: np.ndarray, sr: int) -> SpeechEmbedding:
        """Audio -> the family's projector output [Ts, d] (one row per audio placeholder position)."""
        wav = prepare_audio(audio, sr, max_seconds=self.family.max_seconds_for(self.llm, self.feature_extractor))
        ts = self.family.num_audio_tokens(self.llm, wav.shape[0])
        if ts == 0:
            raise self._too_short(wav.shape[0])
        with self.lock:
            emb = self.family.audio_embeddings(self.llm, self.feature_extractor, wav)  # [Ts, d]
        assert emb.shape[0] == ts, f"{self.family.name}: {emb.shape[0]} audio embeddings for {ts} placeholders"
        fs = self.family.frame_seconds_for(self.llm)
        return SpeechEmbedding(emb.to(self.device, self.dtype), np.arange(ts, dtype=np.float64) * fs, fs)

    def encode_audio(self, wav16k: np.ndarray) -> torch.Tensor:
        return self.embed_speech(wav16k, TARGET_SR).embeds

    def _too_short(self, n: int) -> AudioError:
        """The error for a 16 kHz clip of n samples from which the audio tower makes no speech position."""
        need = next((k for k in range(n + 1, n + TARGET_SR) if self.family.num_audio_tokens(self.llm, k) > 0), None)
        least = f" (it needs more than {1000 * (need - 1) / TARGET_SR:.0f} ms)" if need else ""
        return AudioError(f"Audio lasts only {1000 * n / TARGET_SR:.1f} ms: {self.name} ({self.family.name}) makes "
                          f"no speech position from it{least}. Record or upload the whole spoken question.")

    def build_prompt(self, query_embeds: torch.Tensor, query_ids=None, *, asr: bool = False) -> PromptInputs:
        """Speech query (query_ids None) or typed question (its ids) -> the family's prompt + span."""
        if query_ids is not None:
            pre_ids, suf_ids = self.prefix_ids, self.suffix_ids
        elif asr:
            pre_ids, suf_ids = self.asr_prefix_ids, self.asr_suffix_ids
        else:
            pre_ids, suf_ids = self.speech_prefix_ids, self.speech_suffix_ids
        pre = self.token_embeddings(pre_ids)  # [Tp, d]
        suf = self.token_embeddings(suf_ids)  # [Tx, d]
        x = torch.cat([pre, query_embeds.to(pre.dtype), suf], dim=0)[None]  # [1, Tp+Tq+Tx, d]
        span = slice(len(pre_ids), len(pre_ids) + query_embeds.shape[0])
        ids = None if query_ids is None else [*pre_ids, *query_ids, *suf_ids]
        return PromptInputs(x, span, ids)

    def speech_prompt_token_ids(self, n_audio: int) -> list[int]:
        """The processor's input_ids of the speech prompt: prefix + n_audio placeholders + suffix."""
        audio_id = self.tokenizer.convert_tokens_to_ids(self.family.audio_token)
        return [*self.speech_prefix_ids, *([audio_id] * n_audio), *self.speech_suffix_ids]

    # ------------------------------------------------------------------ forward / generate (modality weights)
    @contextmanager
    def _weights(self, prompt: PromptInputs) -> Iterator[None]:
        with self.family.modality(self.llm, speech=prompt.prompt_ids is None):
            yield

    def forward_states(self, prompt: PromptInputs) -> torch.Tensor:
        with self.lock, self._weights(prompt):
            return super().forward_states(prompt)

    def generate_ids(self, prompts, max_new_tokens: int = 40, **kwargs) -> list[list[int]]:
        """LSLM.generate_ids (the one generation path) with the prompts' modality weights in place."""
        speech = {p.prompt_ids is None for p in prompts}
        if len(speech) > 1:
            raise LSLError(f"{self.name}: one generate call holds speech or text prompts, not both "
                           "(the family switches weights per modality).")
        if not prompts:
            return []
        with self.lock, self._weights(prompts[0]):
            return super().generate_ids(prompts, max_new_tokens, **kwargs)

    # ------------------------------------------------------------------ the model's own transcript
    @property
    def has_asr(self) -> bool:
        return bool(self.family.capabilities()["asr"])

    def transcribe(self, audio: np.ndarray, sr: int) -> str:
        """The model itself asked to transcribe the clip (family.transcribe_instruction), greedy."""
        sp = self.embed_speech(audio, sr)
        prompt = self.build_prompt(sp.embeds, asr=True)
        return self.generate_from_prompt(prompt, max_new_tokens=self.asr_max_new_tokens(len(sp.frame_times)))

    def asr_max_new_tokens(self, ts: int) -> int:
        """Transcript length limit for a span of Ts positions: ~6 tokens per second of speech, 16-256
        (asr_token_limit overrides it, e.g. in tests)."""
        if self.asr_token_limit is not None:
            return self.asr_token_limit
        return int(min(256, 16 + 6 * ts * self.family.frame_seconds_for(self.llm)))


# =============================================================================== digest
# the small files of a checkpoint folder that change its prompts, tokens, features or answers (hashed by content)
PROMPT_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                "merges.txt", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                "chat_template.json", "preprocessor_config.json", "processor_config.json")


def folder_digest(ref: str | Path) -> str:
    """Identity of a local checkpoint folder for cache keys: the bytes of its PROMPT_FILES (config, tokenizer,
    chat template, feature extractor, generation settings) + (name, size, mtime) of every weight file (hashing
    many GB of weights on each load would be slow). Hub ids hash their name."""
    h = hashlib.sha256(str(ref).encode())
    p = Path(ref)
    if p.is_dir():
        for name in PROMPT_FILES:
            f = p / name
            if f.is_file():
                h.update(f"{name}|".encode() + f.read_bytes())
        for f in sorted(p.glob("*.safetensors")):
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class FamilyInfo:
    """One row of the family table (python -m lsl_core families list; docs/families.md)."""

    name: str
    hf_class: str
    model_types: tuple[str, ...]
    hub_ids: tuple[str, ...]
    frame_seconds: float
    audio_token: str
    remote_code: bool
    capabilities: dict = field(default_factory=dict)
