"""Batches over LSLM parts: left-padded greedy generation and right-padded training forwards.

Every batch item is one query - speech (adaptor output [Ts, d]) or text (question token
embeddings [Tt, d]) - wrapped in the model's prompt template exactly as `LSLM.build_prompt`
wraps a single one, so a batched answer equals the one-at-a-time answer:

    generation (left padding):  [pad .. pad | prefix | query | suffix] -> new tokens
    training   (right padding): [prefix | query | suffix | response <|im_end|> | pad .. pad]

Padded positions are masked out of attention; position ids follow the attention mask (HF
generate derives them from it; the training forward passes them explicitly), so padding never
changes a real position's state.
"""

from __future__ import annotations

from dataclasses import dataclass
import hashlib
import os
import weakref
from contextlib import nullcontext
from typing import Callable, ContextManager, Sequence

import numpy as np
import torch

from lsl_core.model.lslm import LSLM

IGNORE_INDEX = -100  # label value that the causal-LM loss skips


@dataclass
class PaddedBatch:
    """A batch of prompts (+ optional labels) as embeddings."""

    inputs_embeds: torch.Tensor  # [B, T, d]
    attention_mask: torch.Tensor  # [B, T] 1 = real position, 0 = padding
    position_ids: torch.Tensor  # [B, T] 0.. over real positions, 0 on padding
    labels: torch.Tensor | None = None  # [B, T] token ids on response positions, IGNORE_INDEX elsewhere


# --------------------------------------------------------------------------- queries
def speech_query(model: LSLM, encoder_states: torch.Tensor) -> torch.Tensor:
    """Cached encoder states [Te, d_enc] -> adaptor output [Ts, d] (grad flows if enabled)."""
    return model.adapt(encoder_states).embeds


def text_query(model: LSLM, question: str) -> torch.Tensor:
    """Typed question -> its token embeddings [Tt, d] (no special tokens), as LSLM.embed_text."""
    ids = model.tokenizer(question.strip(), add_special_tokens=False).input_ids
    return model.token_embeddings(ids)


def pad_id(model: LSLM) -> int:
    tok = model.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)


def eos_id(model: LSLM) -> int:
    """The token that ends an assistant turn (<|im_end|> for ChatML)."""
    return int(model.tokenizer.eos_token_id)


# --------------------------------------------------------------------------- padding
def _prompt_embeds(model: LSLM, query: torch.Tensor) -> torch.Tensor:
    """Query [Tq, d] -> prefix + query + suffix embeddings [T, d]."""
    return model.build_prompt(query).inputs_embeds[0]


def _stack(rows: list[torch.Tensor], pad_vec: torch.Tensor, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [T_i, d] -> ([B, T, d], mask [B, T]) padded with pad_vec on the left or right."""
    T = max(r.shape[0] for r in rows)
    out, mask = [], []
    for r in rows:
        n = T - r.shape[0]  # padding positions of this row
        pad = pad_vec.to(r.dtype).expand(n, -1)  # [n, d]
        out.append(torch.cat([pad, r] if left else [r, pad], dim=0))  # [T, d]
        m = torch.zeros(T, dtype=torch.long, device=r.device)
        if left:
            m[n:] = 1
        else:
            m[: T - n] = 1
        mask.append(m)
    return torch.stack(out), torch.stack(mask)  # [B, T, d], [B, T]


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Attention mask [B, T] -> position ids [B, T] counting real positions only (0 on padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0) * mask


def prompt_batch(model: LSLM, queries: Sequence[torch.Tensor]) -> PaddedBatch:
    """Queries [Tq_i, d] -> left-padded prompts for generation."""
    rows = [_prompt_embeds(model, q) for q in queries]
    pad_vec = model.token_embeddings([pad_id(model)])  # [1, d]
    x, mask = _stack(rows, pad_vec, left=True)
    return PaddedBatch(x, mask, _positions(mask))


def response_batch(model: LSLM, queries: Sequence[torch.Tensor], responses: Sequence[Sequence[int]]) -> PaddedBatch:
    """Queries [Tq_i, d] + response token ids (ending in <|im_end|>) -> right-padded training batch.

    Labels hold the response ids at their own positions (HF shifts them inside the loss), so
    the loss covers exactly the response tokens: never the template, the query or padding.
    """
    assert len(queries) == len(responses), "one response per query"
    rows, labels = [], []
    for q, resp in zip(queries, responses):
        prompt = _prompt_embeds(model, q)  # [Tp+Tq+Tx, d]
        resp = list(resp)
        rows.append(torch.cat([prompt, model.token_embeddings(resp).to(prompt.dtype)], dim=0))  # [T_i, d]
        labels.append([IGNORE_INDEX] * prompt.shape[0] + resp)
    pad_vec = model.token_embeddings([pad_id(model)])
    x, mask = _stack(rows, pad_vec, left=False)
    T = x.shape[1]
    lab = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long, device=x.device)
    for i, row in enumerate(labels):
        lab[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return PaddedBatch(x, mask, _positions(mask), lab)


# --------------------------------------------------------------------------- forward / generate
def response_loss(model: LSLM, batch: PaddedBatch) -> torch.Tensor:
    """Mean cross-entropy over the response tokens of a batch (scalar, float32)."""
    assert batch.labels is not None, "response_loss needs a batch built by response_batch"
    out = model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids, use_cache=False)
    logits = out.logits[:, :-1].float()  # [B, T-1, V]: position t predicts token t+1
    target = batch.labels[:, 1:]  # [B, T-1]
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                             ignore_index=IGNORE_INDEX)


@torch.no_grad()
def generate_ids_batch(model: LSLM, queries: Sequence[torch.Tensor], max_new_tokens: int = 32, batch_size: int = 16,
                       edit: ContextManager | None = None,
                       on_batch: Callable[[list[int], list[list[int]]], None] | None = None) -> list[list[int]]:
    """Greedy new-token ids for N queries [Tq_i, d], batch_size at a time (left padded).

    Each answer ends at its first <|im_end|> (kept) or after max_new_tokens (then it has none).
    Queries are grouped by length to keep padding small; answers come back in input order.
    `edit` is an optional hook context held around each batch's generate call; `on_batch(indices,
    ids)` is called after each batch (progress, incremental caching).
    """
    if batch_size <= 0:
        raise ValueError(f"generate_ids_batch: batch_size must be positive, got {batch_size}")
    order = sorted(range(len(queries)), key=lambda i: queries[i].shape[0])
    answers: list[list[int]] = [[] for _ in queries]
    pad, eos = pad_id(model), eos_id(model)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        b = prompt_batch(model, [queries[i] for i in idx])
        with model.lock, (edit if edit is not None else nullcontext()):
            out = model.llm.generate(inputs_embeds=b.inputs_embeds, attention_mask=b.attention_mask,
                                     do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                     pad_token_id=pad)  # [B, <=max_new_tokens] new tokens only
        for i, row in zip(idx, out.tolist()):
            answers[i] = row[: row.index(eos) + 1] if eos in row else row
        if on_batch is not None:
            on_batch(idx, [answers[i] for i in idx])
    return answers


def generate_batch(model: LSLM, queries: Sequence[torch.Tensor], max_new_tokens: int = 32, batch_size: int = 16,
                   edit: ContextManager | None = None) -> list[str]:
    """Greedy answers (decoded, stripped) for N queries [Tq_i, d] -> N strings, in input order."""
    ids = generate_ids_batch(model, queries, max_new_tokens, batch_size, edit)
    return [model.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def answer_ids(model: LSLM, answer: str) -> list[int]:
    """An answer string -> response token ids ending with <|im_end|> (the training target)."""
    return [*model.tokenizer(answer.strip(), add_special_tokens=False).input_ids, eos_id(model)]


# --------------------------------------------------------------------------- encoder-state cache
_DIGESTS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def module_digest(module: torch.nn.Module) -> str:
    """Identity of a module's weights (names, dtypes, shapes, bytes) + device type, for cache keys."""
    if module in _DIGESTS:
        return _DIGESTS[module]
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    dev = next(module.parameters()).device.type
    _DIGESTS[module] = digest = f"{h.hexdigest()[:16]}-{dev}"
    return digest


def cached_encoder_states(encoder, group: str, clip_id: str, audio: Callable[[], np.ndarray],
                          content_key: str = "") -> torch.Tensor:
    """SpeechEncoder.encode(audio()) [Te, d_enc] as float16 on CPU, cached on disk.

    Key: (encoder weight digest, group - e.g. the voice -, clip_id, content_key - e.g. a hash of
    the text and synthesizer version, or of the audio bytes). `audio` is called only on a miss,
    so cached training clips need no re-synthesis. Stored as safetensors under
    cache_dir("features", <digest>, <group>).
    """
    from safetensors.torch import load_file, save_file

    from lsl_core.cache import cache_dir

    safe = lambda s: "".join(c if c.isalnum() or c in "-_.+" else "_" for c in s)  # noqa: E731
    name = safe(clip_id) + (f"-{safe(content_key)}" if content_key else "")
    window = getattr(encoder, "window", "padded")  # the window convention changes the states: part of the key
    tag = module_digest(encoder) + ("" if window == "padded" else f"-{window}")
    path = cache_dir("features", tag, safe(group)) / f"{name}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["states"]
        except Exception:  # a truncated file from an interrupted run: recompute
            path.unlink(missing_ok=True)
    states = encoder.encode(audio()).detach().to("cpu", torch.float16).contiguous()  # [Te, d_enc]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"states": states}, str(tmp))
    os.replace(tmp, path)
    return states


def audio_key(audio: np.ndarray) -> str:
    """Content hash of a clip (for cached_encoder_states when the audio is already decoded)."""
    a = np.ascontiguousarray(audio, dtype=np.float32)
    return hashlib.sha256(a.tobytes()).hexdigest()[:12]
