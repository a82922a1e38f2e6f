"""LSLM: speech encoder -> adaptor -> LLM backbone (optionally LoRA), one object for both modalities.

Both modalities go through the same prompt: prefix embeddings + query + suffix embeddings, where the
query is either the adaptor output for the audio (speech, Ts frames) or the token embeddings of the
typed question (text, Tt tokens). One forward per modality with output_hidden_states gives every
layer; only the query span is kept.

Generation has one path, `LSLM.generate_ids`: N prompts, left padded (lsl_core.model.padding) with
the one pad rule (`pad_id`), greedy, batch_size at a time; a single answer is a batch of one.
Interventions (hook contexts), evaluation and lsl_core.model.batch all call it.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from lsl_core.data.audio import TARGET_SR, prepare_audio
from lsl_core.model.adaptor import Adaptor
from lsl_core.model.padding import PaddedBatch, pad_batch
from lsl_core.model.prompt import PromptTemplate


@dataclass
class SpeechEmbedding:
    """Adaptor output for one clip."""

    embeds: torch.Tensor  # [Ts, d] on the model device/dtype
    frame_times: np.ndarray  # [Ts] start time (s) of each adaptor frame
    frame_seconds: float  # duration covered by one adaptor frame (N x 20 ms)


@dataclass
class TextEmbedding:
    """Token embeddings of the typed question."""

    embeds: torch.Tensor  # [Tt, d]
    token_ids: list[int]
    tokens: list[str]  # display strings, one per token


@dataclass
class PromptInputs:
    """A full prompt as embeddings with the position of its query span."""

    inputs_embeds: torch.Tensor  # [1, T, d]
    span: slice  # query positions inside T
    prompt_ids: list[int] | None = None  # token ids when the query is text (None for speech)


@dataclass
class HiddenStates:
    """Per-layer states of the query span for both modalities (float32, CPU).

    speech: [L+1, Ts, d]; text: [L+1, Tt, d]. Index 0 is the LLM input (adaptor output / token
    embeddings); index L is after the model's final norm (as HF returns it) - marked in plots.
    """

    speech: torch.Tensor
    text: torch.Tensor
    frame_times: np.ndarray  # [Ts] seconds
    frame_seconds: float
    tokens: list[str]  # [Tt]
    final_layer_normed: bool = True
    meta: dict = field(default_factory=dict)

    @property
    def num_layers(self) -> int:
        """L (number of decoder layers); the tensors hold L+1 entries."""
        return self.speech.shape[0] - 1


class _StopAtLayerInput(Exception):
    """Raised by LSLM.input_states' hook to end a forward once decoder layer 0 has its input."""


def locked_items(items: Iterable, lock) -> Iterator:
    """Yield items while holding `lock` (e.g. LSLM.lock) until the consumer asks for the next one.

    A long loop over samples takes the model lock per item, so other sessions interleave between items;
    closing the generator releases the lock.
    """
    for it in items:
        with lock:
            yield it


class LSLM:
    """An end-to-end speech LLM assembled from parts (see loading.load_checkpoint)."""

    # True where the weights differ between speech and text prompts (a model family with a speech-only
    # LoRA): one generate_ids call then holds prompts of one modality, and batchers split by modality.
    weights_per_modality: bool = False
    # text the tokenizer reads in front of a typed question (see use_template): a plain template's trailing space
    query_lead: str = ""

    def __init__(
        self,
        encoder,  # lsl_core.model.encoder.SpeechEncoder
        adaptor: Adaptor,
        llm: nn.Module,
        tokenizer,
        template: PromptTemplate | None = None,
        *,
        name: str = "lslm",
        digest: str = "",
        manifest: dict | None = None,
        asr_factory: Callable[[], object] | None = None,
    ) -> None:
        self.encoder = encoder
        self.adaptor = adaptor
        self.llm = llm
        self.tokenizer = tokenizer
        self.template = template or PromptTemplate()
        self.name = name
        self.digest = digest
        self.manifest = manifest or {}
        self._asr_factory = asr_factory
        self._asr = None
        # One generation/forward at a time per model: concurrent app sessions share this object.
        self.lock = threading.RLock()
        self.use_template(self.template)
        d_llm = self.llm.get_input_embeddings().weight.shape[1]
        assert adaptor.cfg.llm_dim == d_llm, "adaptor output width must equal the LLM width"

    def use_template(self, template: PromptTemplate) -> None:
        """Set the template and its prefix_ids / suffix_ids / query_lead.

        A prefix ending in spaces ("Question: {query}") is where a BPE tokenizer joins the space to the question's
        first word ("Ġwhat"); tokenized apart, the prefix would end in a lone space token and the question start
        without it. So the trailing spaces move to `query_lead`, read with the typed question, when that
        reproduces the rendered prompt's tokens (checked on a probe question); otherwise they stay in the prefix.
        """
        tok = self.tokenizer
        ids = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
        prefix, suffix = template.split(tok)
        core = prefix.rstrip(" ")
        lead = prefix[len(core):]
        if lead:
            probe = "what is the capital of france?"
            full = ids(template.render(tok, probe))
            if ids(core) + ids(lead + probe) + ids(suffix) == full != ids(prefix) + ids(probe) + ids(suffix):
                prefix = core
            else:
                lead = ""
        self.template, self.query_lead = template, lead
        self.prefix_ids: list[int] = ids(prefix)
        self.suffix_ids: list[int] = ids(suffix)

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        return self.llm.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    @property
    def num_layers(self) -> int:
        """L: decoder layers of the backbone (hidden_states has L+1 entries)."""
        return len(self.decoder_layers())

    def decoder_layers(self) -> nn.ModuleList:
        """The backbone's decoder blocks; block l receives hidden_states[l] as input (l < L)."""
        base = self.llm
        if hasattr(base, "get_base_model"):  # peft wrapper
            base = base.get_base_model()
        inner = getattr(base, "model", base)
        layers = getattr(inner, "layers", None)
        if layers is None:
            raise AttributeError(f"cannot find decoder layers on {type(base).__name__}")
        return layers

    def lens_head(self):
        """The backbone's final norm and LM head (tied or untied, as the model has it), for the logit lens.

        -> lsl_core.metrics.lens.LensHead. Raises ModelLoadError when the backbone has no output
        embedding or no recognizable final norm.
        """
        from lsl_core.errors import ModelLoadError
        from lsl_core.metrics.lens import LensHead

        base = self.llm
        if hasattr(base, "get_base_model"):  # peft wrapper
            base = base.get_base_model()
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        if head is None or not hasattr(head, "weight"):
            raise ModelLoadError(f"{type(base).__name__} has no LM head (output embeddings); the logit lens needs one.")
        layers = self.decoder_layers()
        inner = next((m for m in base.modules() if getattr(m, "layers", None) is layers), getattr(base, "model", base))
        norm = next((getattr(inner, n) for n in ("norm", "final_layernorm", "ln_f", "final_norm")
                     if isinstance(getattr(inner, n, None), nn.Module)), None)  # on the module holding the layers
        if norm is None:
            raise ModelLoadError(f"Cannot find the final norm of {type(inner).__name__} (looked for norm, "
                                 "final_layernorm, ln_f, final_norm); the logit lens needs it.")
        cfg = getattr(base, "config", None)
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        cap = getattr(text_cfg, "final_logit_softcapping", None) or getattr(cfg, "final_logit_softcapping", None)
        divisor = getattr(text_cfg, "logits_scaling", None) or getattr(cfg, "logits_scaling", None) or 1.0
        bias = getattr(head, "bias", None)
        return LensHead(norm=norm, weight=head.weight.detach(), bias=None if bias is None else bias.detach(),
                        final_normed=True, softcap=float(cap) if cap else None, divisor=float(divisor))

    # ----------------------------------------------------------------- embeddings
    @torch.no_grad()
    def embed_speech(self, audio: np.ndarray, sr: int) -> SpeechEmbedding:
        """Audio (any sr, mono/stereo) -> adaptor output [Ts, d] with frame start times."""
        wav = prepare_audio(audio, sr)
        enc = self.encode_audio(wav)  # [Te, d_enc]
        return self.adapt(enc)

    @torch.no_grad()
    def encode_audio(self, wav16k: np.ndarray) -> torch.Tensor:
        """16 kHz mono audio -> encoder states of the real audio frames [Te, d_enc]."""
        return self.encoder.encode(wav16k)

    def adapt(self, enc: torch.Tensor) -> SpeechEmbedding:
        """Encoder states [Te, d_enc] -> SpeechEmbedding (grad flows if enabled by caller)."""
        x = enc.to(device=self.device, dtype=next(self.adaptor.parameters()).dtype)
        emb = self.adaptor(x[None])[0].to(self.dtype)  # [Ts, d]
        frame_seconds = self.adaptor.cfg.stack * self.encoder.frame_seconds
        times = np.arange(emb.shape[0], dtype=np.float64) * frame_seconds
        return SpeechEmbedding(emb, times, frame_seconds)

    def token_embeddings(self, ids: Sequence[int]) -> torch.Tensor:
        """Token ids [T] -> LLM input embeddings [T, d]."""
        t = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        return self.llm.get_input_embeddings()(t)

    @torch.no_grad()
    def embed_text(self, question: str) -> TextEmbedding:
        """Typed question -> token embeddings [Tt, d] (no special tokens)."""
        q = question.strip()
        if not q:
            from lsl_core.errors import LSLError

            raise LSLError("The question text is empty; type the question that the audio speaks.")
        ids = self.tokenizer(self.query_lead + q, add_special_tokens=False).input_ids
        tokens = [self.tokenizer.decode([i]) for i in ids]
        return TextEmbedding(self.token_embeddings(ids), ids, tokens)

    def build_prompt(self, query_embeds: torch.Tensor, query_ids: Sequence[int] | None = None) -> PromptInputs:
        """Wrap query embeddings [Tq, d] in the template -> inputs_embeds [1, T, d] + query span."""
        pre = self.token_embeddings(self.prefix_ids)  # [Tp, d]
        suf = self.token_embeddings(self.suffix_ids)  # [Tx, d]
        x = torch.cat([pre, query_embeds.to(pre.dtype), suf], dim=0)[None]  # [1, Tp+Tq+Tx, d]
        span = slice(len(self.prefix_ids), len(self.prefix_ids) + query_embeds.shape[0])
        ids = None if query_ids is None else [*self.prefix_ids, *query_ids, *self.suffix_ids]
        return PromptInputs(x, span, ids)

    # ----------------------------------------------------------------- forward passes
    @torch.no_grad()
    def forward_states(self, prompt: PromptInputs) -> torch.Tensor:
        """One forward; per-layer states of the query span as float32 CPU [L+1, Tq, d]."""
        with self.lock:
            out = self.llm(inputs_embeds=prompt.inputs_embeds, output_hidden_states=True, use_cache=False)
        hs = torch.stack([h[0, prompt.span] for h in out.hidden_states])  # [L+1, Tq, d]
        return hs.float().cpu()

    @torch.no_grad()
    def input_states(self, prompt: PromptInputs) -> torch.Tensor:
        """hidden_states[0] of the query span (the LLM input) broadcast over the L+1 layer axis without a copy:
        float32 CPU [L+1, Tq, d], what forward_states gives at index 0. For plans at ℓ = 0 only.

        hidden_states[0] is the input of decoder layer 0, which is not always `inputs_embeds`: a backbone may
        scale its embeddings first (Granite's embedding_multiplier, Gemma's sqrt(d)). So the forward runs up to
        layer 0's input and stops there (no decoder layer runs).
        """
        seen: list[torch.Tensor] = []

        def grab(module, args, kwargs):
            seen.append(args[0] if args else kwargs["hidden_states"])
            raise _StopAtLayerInput

        with self.lock:
            handle = self.decoder_layers()[0].register_forward_pre_hook(grab, with_kwargs=True, prepend=True)
            try:
                self.llm(inputs_embeds=prompt.inputs_embeds, use_cache=False)
            except _StopAtLayerInput:
                pass
            finally:
                handle.remove()
        h0 = seen[0][0, prompt.span].detach().float().cpu()  # [Tq, d]
        return h0[None].expand(self.num_layers + 1, -1, -1)

    @torch.no_grad()
    def prompts_and_states(self, sample=None, *, audio: np.ndarray | None = None, sr: int | None = None,
                           question: str | None = None) -> tuple[PromptInputs, PromptInputs, HiddenStates]:
        """(speech prompt, text prompt, HiddenStates) of one spoken question and its transcript.

        One encoder pass and one forward per modality; the prompts are what generation and
        interventions reuse (speech [1, T_s, d], text [1, T_t, d]).
        """
        if sample is not None:
            audio, sr, question = sample.audio, sample.sr, sample.question
        if audio is None or question is None or sr is None:
            raise TypeError("hidden_states needs a Sample or audio=, sr= and question=")
        sp = self.embed_speech(audio, sr)
        tx = self.embed_text(question)
        speech_prompt = self.build_prompt(sp.embeds)
        text_prompt = self.build_prompt(tx.embeds, tx.token_ids)
        states = HiddenStates(self.forward_states(speech_prompt), self.forward_states(text_prompt), sp.frame_times,
                              sp.frame_seconds, tx.tokens, meta={"model": self.name, "digest": self.digest})
        return speech_prompt, text_prompt, states

    def hidden_states(self, sample=None, *, audio: np.ndarray | None = None, sr: int | None = None,
                      question: str | None = None) -> HiddenStates:
        """Speech [L+1, Ts, d] and text [L+1, Tt, d] states of one spoken question and its transcript."""
        return self.prompts_and_states(sample, audio=audio, sr=sr, question=question)[2]

    # ----------------------------------------------------------------- generation (the one path)
    @property
    def pad_id(self) -> int:
        """The one pad rule: the tokenizer's pad token, else its eos token."""
        tok = self.tokenizer
        return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)

    @property
    def eos_id(self) -> int:
        """The token that ends an assistant turn (<|im_end|> for ChatML)."""
        return int(self.tokenizer.eos_token_id)

    @property
    def stop_ids(self) -> list[int]:
        """Every token an answer ends at: eos_id, then the generation config's eos ids (Llama 3, Qwen2.5 list
        several), in that order."""
        extra = getattr(getattr(self.llm, "generation_config", None), "eos_token_id", None)
        extra = [] if extra is None else [extra] if isinstance(extra, int) else list(extra)
        return list(dict.fromkeys([self.eos_id, *map(int, extra)]))

    def padded_prompts(self, prompts: Sequence[PromptInputs]) -> PaddedBatch:
        """Prompts [1, T_i, d] -> one left-padded batch [B, T, d] (mask and position ids follow the padding)."""
        rows = [p.inputs_embeds[0] for p in prompts]  # [T_i, d] each
        return pad_batch(rows, self.token_embeddings([self.pad_id]), left=True)

    @torch.no_grad()
    def generate_ids(self, prompts: Sequence[PromptInputs], max_new_tokens: int = 40, *, batch_size: int = 16,
                     sort: bool = True, edit: ContextManager | None = None,
                     on_batch: Callable[[list[int], list[list[int]]], None] | None = None,
                     **gen_kwargs) -> list[list[int]]:
        """Greedy new-token ids for N prompts, batch_size at a time (left padded), in input order.

        Each answer ends at its first stop token (stop_ids; kept) or after max_new_tokens (then it has none), in
        a batch as alone: a row that stopped early keeps none of the padding that follows it. sort=True
        groups prompts by length to keep padding small; sort=False keeps batch rows in input order
        (row-specific hooks rely on it). `edit` is an optional hook context held around the whole call,
        together with the model lock (no other generation runs while the hooks are in place);
        `on_batch(indices, ids)` is called after each batch (progress, incremental caching).
        max_new_tokens=0 gives empty answers without running the model; a negative count raises LSLError.
        """
        if batch_size <= 0:
            raise ValueError(f"generate_ids: batch_size must be positive, got {batch_size}")
        if int(max_new_tokens) < 0:
            from lsl_core.errors import LSLError

            raise LSLError(f"generate_ids: max_new_tokens must be >= 0, got {max_new_tokens}; pass the answer length.")
        if edit is not None and gen_kwargs.get("use_cache") is False:
            from lsl_core.errors import LSLError

            raise LSLError("generate_ids: edits apply to the prefill and reach the answer through the KV cache; "
                           "use_cache=False would re-run the prompt unedited at every step. Leave use_cache on.")
        stops = self.stop_ids
        kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=self.pad_id,
                      eos_token_id=stops)
        kwargs.update(gen_kwargs)
        order = list(range(len(prompts)))
        if sort:
            order.sort(key=lambda i: prompts[i].inputs_embeds.shape[1])
        answers: list[list[int]] = [[] for _ in prompts]
        with self.lock, (edit if edit is not None else nullcontext()):
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                out = self._generate_chunk([prompts[i] for i in idx], kwargs) if max_new_tokens else [[] for _ in idx]
                for i, row in zip(idx, out):
                    end = next((j for j, t in enumerate(row) if t in stops), None)
                    answers[i] = row if end is None else row[: end + 1]
                if on_batch is not None:
                    on_batch(idx, [answers[i] for i in idx])
        return answers

    def _generate_chunk(self, prompts: Sequence[PromptInputs], kwargs: dict) -> list[list[int]]:
        """One left-padded HF generate over prompts [1, T_i, d] -> new-token ids per row [B][<=max_new_tokens]."""
        b = self.padded_prompts(prompts)
        return self.llm.generate(inputs_embeds=b.inputs_embeds, attention_mask=b.attention_mask, **kwargs).tolist()

    def decode(self, ids: Sequence[int]) -> str:
        """New-token ids -> the answer text (special tokens dropped, stripped)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    def generate_answers(self, prompts: Sequence[PromptInputs], max_new_tokens: int = 40, **kwargs) -> list[str]:
        """Greedy answers for N prompts (generate_ids, decoded), in input order."""
        return [self.decode(row) for row in self.generate_ids(prompts, max_new_tokens, **kwargs)]

    def generate_from_prompt(self, prompt: PromptInputs, max_new_tokens: int = 40,
                             edit: ContextManager | None = None, **gen_kwargs) -> str:
        """Greedy (deterministic) answer for one prompt; `edit` is an optional hook context (prefill edits)."""
        return self.generate_answers([prompt], max_new_tokens, batch_size=1, edit=edit, **gen_kwargs)[0]

    def prompt_for(self, *, audio: np.ndarray | None = None, sr: int | None = None,
                   text: str | None = None) -> PromptInputs:
        """The prompt for exactly one modality."""
        if (audio is None) == (text is None):
            raise TypeError("pass exactly one of audio= (with sr=) or text=")
        if audio is not None:
            return self.build_prompt(self.embed_speech(audio, sr or TARGET_SR).embeds)
        tx = self.embed_text(text)
        return self.build_prompt(tx.embeds, tx.token_ids)

    def generate(self, *, audio: np.ndarray | None = None, sr: int | None = None, text: str | None = None,
                 max_new_tokens: int = 40, **gen_kwargs) -> str:
        """Answer a spoken (audio=, sr=) or typed (text=) question; greedy by default."""
        return self.generate_from_prompt(self.prompt_for(audio=audio, sr=sr, text=text), max_new_tokens, **gen_kwargs)

    # ----------------------------------------------------------------- cascade
    @property
    def has_asr(self) -> bool:
        return self._asr_factory is not None

    def transcribe(self, audio: np.ndarray, sr: int) -> str:
        """ASR transcript from the encoder's own decoder (Whisper), for the cascade baseline."""
        if self._asr_factory is None:
            from lsl_core.errors import ModelLoadError

            raise ModelLoadError("This checkpoint's encoder has no ASR decoder; the cascade answer is unavailable.")
        with self.lock:
            if self._asr is None:
                self._asr = self._asr_factory()
            return self._asr.transcribe(prepare_audio(audio, sr))

    def cascade(self, audio: np.ndarray, sr: int, max_new_tokens: int = 40) -> tuple[str, str]:
        """(transcript, answer to the transcript) - the ASR -> LLM baseline."""
        transcript = self.transcribe(audio, sr)
        answer = self.generate(text=transcript, max_new_tokens=max_new_tokens) if transcript.strip() else ""
        return transcript, answer
