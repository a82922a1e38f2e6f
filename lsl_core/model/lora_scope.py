"""Where a LoRA acts: at every position ("all", the default) or only at the speech positions ("speech").

A speech-scoped LoRA (a partial LoRA, as InternLM-XComposer2's P-LoRA for image tokens) adds its update
B·A·x only at the prompt positions that hold speech; every text position (chat template, typed question,
padding, generated tokens) runs the frozen backbone. The text path of such a checkpoint is therefore exactly
the base LLM, and so is the cascade (transcript -> LLM): the modality gap then compares the speech path with
the untouched backbone, and only the speech side moves over a trajectory.

Which positions hold speech is read off the backbone's input embeddings: in the built-in stack a text
position's input is an exact copy of a row the LLM's input embedding returns (LSLM.token_embeddings), the
adaptor's output is a continuous vector that is not. Rows are compared by a 64-bit hash of their bits (equal
rows always match; a speech frame would need a hash collision to pass for text). Since hidden states, batched
generation, training and interventions all feed `inputs_embeds` to the backbone, the scope holds on every
path without plumbing; decode steps (a generated token, fed as an id) run without the update.

A position-dependent update cannot be folded into W, so a speech-scoped LoRA stays an unmerged peft wrapper;
a forward without speech positions (every decode step, every text prompt) calls the LoRA layers' base
weights directly, so greedy decoding costs 1.02-1.05x the merged checkpoint's time, against 1.12-1.15x for
an unmerged LoRA without a scope (benchmarks/bench_lora_scope.py, CPU).
"""

from __future__ import annotations

import torch
from torch import nn

LORA_SCOPES = ("all", "speech")
_HASH_SEED = 20240611  # fixed: the hash only has to be the same for the table and the inputs of one model
_TABLE_CHUNK = 4096  # embedding rows hashed at a time (bounds the int64 temporary)


def _hash_weights(d: int, device: torch.device) -> torch.Tensor:
    """[d] odd int64 multipliers (seeded), one per embedding dimension."""
    g = torch.Generator().manual_seed(_HASH_SEED)
    w = torch.randint(1, 2**62, (d,), generator=g, dtype=torch.int64) | 1
    return w.to(device)


def row_hashes(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """[..., d] float -> [...] int64: the rows' float32 bit patterns times `weights` [d], summed (wraps mod 2^64).

    Equal rows give equal hashes whatever the dtype they are stored in (bf16/fp16 -> fp32 is exact).
    """
    bits = x.detach().float().contiguous().view(torch.int32).to(torch.int64)  # [..., d]
    return (bits * weights).sum(-1)


@torch.no_grad()
def embedding_hashes(embedding: nn.Module, weights: torch.Tensor) -> torch.Tensor:
    """The input-embedding module -> sorted unique hashes [<=V] of the rows it RETURNS for every token id.

    These are what LSLM.token_embeddings writes into a prompt: the weight rows for a plain nn.Embedding, but
    weight x scale for a scaled one (Gemma 3's Gemma3TextScaledWordEmbedding), whose rows are not in `weight`.
    """
    V, dev = embedding.weight.shape[0], embedding.weight.device
    parts = [row_hashes(embedding(torch.arange(i, min(i + _TABLE_CHUNK, V), device=dev)), weights)
             for i in range(0, V, _TABLE_CHUNK)]
    return torch.unique(torch.cat(parts))


class SpeechScope:
    """Hooks that confine a peft LoRA's update to the speech positions of each forward.

    A forward pre-hook on the backbone's decoder reads `inputs_embeds` [B, T, d] and marks the positions
    that are not rows of the embedding table (speech); a forward hook on every `lora_B` multiplies its output
    [B, T, out] by that mask. No `inputs_embeds` (a decode step) or a mismatched length -> no update. In eval
    mode a forward without any speech position skips the LoRA branch (base layer only: the same result, as
    the masked update is zero); in training every forward runs it, so dropout draws stay as without the skip.
    """

    def __init__(self, peft_llm: nn.Module) -> None:
        base = peft_llm.get_base_model() if hasattr(peft_llm, "get_base_model") else peft_llm
        embedding = base.get_input_embeddings()  # its output rows [V, d] are the text inputs (embedding_hashes)
        self._weights = _hash_weights(embedding.weight.shape[1], embedding.weight.device)
        self._table = embedding_hashes(embedding, self._weights)  # [V'] sorted
        self._mask: torch.Tensor | None = None  # [B, T, 1] of the forward in progress
        self._any_speech = False  # whether the forward in progress has a speech position
        decoder = base.get_decoder()
        self._handles = [decoder.register_forward_pre_hook(self._read_inputs, with_kwargs=True)]
        lora_b = [m for name, m in base.named_modules() if ".lora_B." in f"{name}." and isinstance(m, nn.Linear)]
        if not lora_b:
            raise ValueError("lora_scope 'speech' needs a peft LoRA on the LLM; found no lora_B layers")
        self._handles += [m.register_forward_hook(self._scope_update) for m in lora_b]
        self.num_layers = len(lora_b)
        self._wrapped = [m for m in base.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_B")]
        for layer in self._wrapped:
            layer.forward = self._skip_without_speech(layer, layer.forward)

    def _skip_without_speech(self, layer: nn.Module, lora_forward):
        def forward(x, *args, **kwargs):
            if not self._any_speech and not layer.training:
                return layer.base_layer(x, *args, **kwargs)
            return lora_forward(x, *args, **kwargs)

        return forward

    def speech_mask(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """[B, T, d] input embeddings -> bool [B, T]: True where the input is not a row the embedding returns."""
        return ~torch.isin(row_hashes(inputs_embeds, self._weights), self._table)

    def _read_inputs(self, module, args, kwargs):
        x = kwargs.get("inputs_embeds")
        self._mask = None if x is None else self.speech_mask(x)[..., None]
        self._any_speech = bool(self._mask is not None and self._mask.any())
        return None

    def _scope_update(self, module, inputs, out: torch.Tensor) -> torch.Tensor:
        mask = self._mask
        if mask is None or out.dim() != 3 or mask.shape[:2] != out.shape[:2]:
            return torch.zeros_like(out)
        return out * mask.to(out.dtype)

    def remove(self) -> None:
        """Take the hooks off (the LoRA then acts at every position again)."""
        for h in self._handles:
            h.remove()
        for layer in self._wrapped:
            layer.__dict__.pop("forward", None)
        self._handles, self._wrapped = [], []


def apply_lora_scope(peft_llm: nn.Module, scope: str) -> SpeechScope | None:
    """Confine the LoRA of `peft_llm` to `scope` ('all': nothing to do -> None; 'speech': SpeechScope)."""
    if scope not in LORA_SCOPES:
        raise ValueError(f"lora_scope must be one of {LORA_SCOPES}, got {scope!r}")
    if scope == "all":
        return None
    s = SpeechScope(peft_llm)
    peft_llm.lsl_lora_scope = s  # keeps the hooks' owner reachable from the model (and removable)
    return s
