"""Batches over LSLM parts for training and evaluation: right-padded training forwards, batched greedy
generation (thin wrappers over LSLM.generate_ids, the one generation path) and the encoder-state cache.

Every batch item is one query - speech (adaptor output [Ts, d]) or text (question token
embeddings [Tt, d]) - wrapped in the model's prompt template exactly as `LSLM.build_prompt`
wraps a single one, and padded by `lsl_core.model.padding` (left for generation, right for
training), so a batched answer equals the one-at-a-time answer:

    generation (left padding):  [pad .. pad | prefix | query | suffix] -> new tokens
    training   (right padding): [prefix | query | suffix | response <|im_end|> | pad .. pad]
"""

from __future__ import annotations

import hashlib
import os
import time
import weakref
from pathlib import Path
from typing import Callable, ContextManager, NamedTuple, Sequence

import numpy as np
import torch

from lsl_core.data.audio import audio_digest
from lsl_core.model.lslm import LSLM
from lsl_core.model.padding import IGNORE_INDEX, PaddedBatch, pad_batch

__all__ = ["IGNORE_INDEX", "PaddedBatch", "speech_query", "text_query", "pad_id", "eos_id", "prompt_batch",
           "response_batch", "ResponseForward", "response_forward", "response_logits", "response_loss",
           "generate_ids_batch", "generate_batch", "answer_ids", "module_digest", "cached_encoder_states", "audio_key"]


# --------------------------------------------------------------------------- queries
def speech_query(model: LSLM, encoder_states: torch.Tensor) -> torch.Tensor:
    """Cached encoder states [Te, d_enc] -> adaptor output [Ts, d] (grad flows if enabled)."""
    return model.adapt(encoder_states).embeds


def text_query(model: LSLM, question: str) -> torch.Tensor:
    """Typed question -> its token embeddings [Tt, d] (no special tokens): LSLM.embed_text's embeds."""
    return model.embed_text(question).embeds


def pad_id(model: LSLM) -> int:
    """LSLM.pad_id (the one pad rule)."""
    return model.pad_id


def eos_id(model: LSLM) -> int:
    """LSLM.eos_id: the token that ends an assistant turn (<|im_end|> for ChatML)."""
    return model.eos_id


# --------------------------------------------------------------------------- padding
def _prompt_embeds(model: LSLM, query: torch.Tensor) -> torch.Tensor:
    """Query [Tq, d] -> prefix + query + suffix embeddings [T, d]."""
    return model.build_prompt(query).inputs_embeds[0]


def _query_prompts(model: LSLM, queries: Sequence[torch.Tensor]) -> list:
    """Queries [Tq_i, d] -> build_prompt(q) each; refused where the prompt depends on the modality.

    A bare query does not say whether it is speech or text: a model with weights_per_modality (a family with
    a speech template and a speech-only LoRA) would wrap a typed question as speech, silently.
    """
    if model.weights_per_modality:
        from lsl_core.errors import LSLError

        raise LSLError(f"{model.name}: lsl_core.model.batch wraps bare query embeddings, which cannot say speech or "
                       "text, and this model's prompt and weights depend on the modality. Build prompts with "
                       "model.prompt_for(...) and call model.generate_ids / generate_answers.")
    return [model.build_prompt(q) for q in queries]


def prompt_batch(model: LSLM, queries: Sequence[torch.Tensor]) -> PaddedBatch:
    """Queries [Tq_i, d] -> left-padded prompts for generation (LSLM.padded_prompts)."""
    return model.padded_prompts(_query_prompts(model, queries))


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
    batch = pad_batch(rows, model.token_embeddings([model.pad_id]), left=False)
    B, T = batch.attention_mask.shape
    lab = torch.full((B, T), IGNORE_INDEX, dtype=torch.long, device=batch.inputs_embeds.device)
    for i, row in enumerate(labels):
        lab[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    batch.labels = lab
    return batch


# --------------------------------------------------------------------------- forward / generate
class ResponseForward(NamedTuple):
    """One training forward over a response batch: logits [N, V] float32 that predict the N response tokens (None
    when not asked), those tokens [N], and (when asked) the LLM's per-layer states, L+1 tensors [B, T, d] (index 0
    = input embeddings)."""

    logits: torch.Tensor | None
    target: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


def response_forward(model: LSLM, batch: PaddedBatch, all_positions: bool = False,
                     hidden_states: bool = False, logits: bool = True) -> ResponseForward:
    """The logits that predict each response token of a batch built by response_batch, those tokens and, with
    hidden_states, every layer's states of the batch (one forward). The LM head runs only at the positions that
    predict a response token, unless all_positions (or the model class has no transformers `logits_to_keep`):
    then at every position [B, T, V], the same logits at more cost. Without logits (states only, e.g. a teacher
    whose next-token distributions no loss reads) it runs at no position where the model class allows."""
    assert batch.labels is not None, "response_forward needs a batch built by response_batch"
    target = batch.labels[:, 1:]  # [B, T-1]: position t predicts token t+1
    keep = target != IGNORE_INDEX  # [B, T-1]
    args = dict(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, use_cache=False, output_hidden_states=hidden_states)
    if not _keeps_logits(model.llm) or (all_positions and logits):
        out = model.llm(**args)
        scores = out.logits[:, :-1][keep] if logits else None
    else:
        pos = keep.any(0).nonzero().flatten()  # [P] positions that predict a response token in some row
        if not logits:
            pos = pos[:0]  # an empty index: the LM head runs nowhere
        # the LM head ([d] -> [V]) only at those positions: the template and query positions need no logits
        out = model.llm(**args, logits_to_keep=pos)  # logits [B, P, V]
        scores = out.logits[keep[:, pos]] if logits else None
    return ResponseForward(scores.float() if scores is not None else None, target[keep],
                           tuple(out.hidden_states) if hidden_states else None)


def response_logits(model: LSLM, batch: PaddedBatch, all_positions: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, V] float32, response token ids [N]) of a batch built by response_batch (response_forward)."""
    f = response_forward(model, batch, all_positions)
    return f.logits, f.target


def _keeps_logits(llm) -> bool:
    """Whether the causal LM's forward (under a peft wrapper: its base model's) takes `logits_to_keep`."""
    import inspect

    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def response_loss(model: LSLM, batch: PaddedBatch, all_positions: bool = False) -> torch.Tensor:
    """Mean cross-entropy over the response tokens of a batch (scalar, float32); all_positions as response_logits."""
    logits, target = response_logits(model, batch, all_positions)  # [N, V], [N]
    return torch.nn.functional.cross_entropy(logits, target)


def generate_ids_batch(model: LSLM, queries: Sequence[torch.Tensor], max_new_tokens: int = 32, batch_size: int = 16,
                       edit: ContextManager | None = None,
                       on_batch: Callable[[list[int], list[list[int]]], None] | None = None) -> list[list[int]]:
    """Greedy new-token ids for N queries [Tq_i, d]: LSLM.generate_ids on their prompts (see there)."""
    prompts = _query_prompts(model, queries)
    return model.generate_ids(prompts, max_new_tokens, batch_size=batch_size, edit=edit, on_batch=on_batch)


def generate_batch(model: LSLM, queries: Sequence[torch.Tensor], max_new_tokens: int = 32, batch_size: int = 16,
                   edit: ContextManager | None = None,
                   on_batch: Callable[[list[int], list[list[int]]], None] | None = None) -> list[str]:
    """Greedy answers (decoded, stripped) for N queries [Tq_i, d] -> N strings, in input order (on_batch: as
    generate_ids_batch's, for progress)."""
    ids = generate_ids_batch(model, queries, max_new_tokens, batch_size, edit, on_batch)
    return [model.decode(row) for row in ids]


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


def encoder_cache_path(encoder, group: str, clip_id: str, content_key: str = "") -> Path:
    """Where cached_encoder_states keeps a clip's states: cache_dir("features", <digest>, <group>) / <name>."""
    from lsl_core.cache import cache_dir

    safe = lambda s: "".join(c if c.isalnum() or c in "-_.+" else "_" for c in s)  # noqa: E731
    name = safe(clip_id) + (f"-{safe(content_key)}" if content_key else "")
    window = getattr(encoder, "window", "padded")  # the window convention changes the states: part of the key
    tag = module_digest(encoder) + ("" if window == "padded" else f"-{window}")
    return cache_dir("features", tag, safe(group)) / f"{name}.safetensors"


def cached_encoder_states(encoder, group: str, clip_id: str, audio: Callable[[], np.ndarray],
                          content_key: str = "", inputs: Callable[[], list] | None = None,
                          timings: dict[str, float] | None = None) -> torch.Tensor:
    """SpeechEncoder.encode(audio()) [Te, d_enc] as float16 on CPU, cached on disk.

    Key: (encoder weight digest, group - e.g. the voice -, clip_id, content_key - e.g. a hash of
    the text and synthesizer version, or of the audio bytes). `audio` is called only on a miss,
    so cached training clips need no re-synthesis; `inputs`, if given, replaces it on a miss with the
    clip's ready encoder inputs (SpeechEncoder.inputs, e.g. computed ahead on a worker thread). Stored as
    safetensors at encoder_cache_path(...). `timings`, with `inputs`: seconds of a miss's encoder forward (to the
    states on the CPU) and cache write are added to its "encode" and "write" (what bounds clip preparation).
    """
    from safetensors.torch import load_file

    path = encoder_cache_path(encoder, group, clip_id, content_key)
    if path.is_file():
        try:
            return load_file(str(path))["states"]
        except Exception:  # a truncated file from an interrupted run: recompute
            path.unlink(missing_ok=True)
    if inputs is not None:
        ready = inputs()  # (may wait for a worker thread: not the encoder's time)
        t0 = time.perf_counter()
        states = encoder.encode_inputs(ready)
    else:
        t0, states = None, encoder.encode(audio())
    states = states.detach().to("cpu", torch.float16).contiguous()  # [Te, d_enc]
    t1 = time.perf_counter()
    store_encoder_states(path, states)
    if timings is not None and t0 is not None:
        timings["encode"] = timings.get("encode", 0.0) + t1 - t0
        timings["write"] = timings.get("write", 0.0) + time.perf_counter() - t1
    return states


def store_encoder_states(path: Path, states: torch.Tensor) -> None:
    """Write a clip's states [Te, d_enc] (float16, CPU) to its encoder_cache_path, atomically."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"states": states}, str(tmp))
    os.replace(tmp, path)


def audio_key(audio: np.ndarray) -> str:
    """Content hash of a clip (for cached_encoder_states when the audio is already decoded): audio_digest."""
    return audio_digest(audio)
