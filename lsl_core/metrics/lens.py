"""Logit lens (DESIGN §3): read every layer's states through the model's own final norm and LM head.

    p_{l,i} = softmax(W_U · norm_final(h_{l,i}) + b_U)      l = 0..L-1                     [V]
    p_{L,i} = softmax(W_U · h_{L,i} + b_U)                  hidden_states[L] is already after
                                                            the final norm (HF): these are the
                                                            model's own next-token logits
    top-k     the k most probable vocabulary ids of p_{l,i} and their probabilities       [n, T, k]
    rank      1 + #{v : logit_v > logit_target}, 1 = the target is the top token         [n, T]

For the speech span, each frame i is paired with an aligned text token j(i) (`tokenwise.frame_alignment`:
the token the monotone DTW path visits at frame i, or the frame's best token for the argmax method);
its rank r_{l,i} = rank of the text token id of j(i) in p_{l,i} says whether layer l "reads" the word
that frame carries. The same lens over the text span gives the text positions' top-k for comparison.

The head is the model's: tied or untied W_U [V, d], optional bias, optional logit divisor (Granite's
logits_scaling) and final-logit soft-capping (Gemma: c·tanh(logits/c)); both are monotone, so ranks
are unchanged, but probabilities follow the model. n = number of layers read (a subset
of 0..L may be asked for: the lens costs one [T, d] x [d, V] matmul per layer). Logits are computed in
float32, in row chunks, and never kept whole ([L+1, T, V] would be gigabytes for a long clip).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lsl_core.errors import MetricInputError

MAX_CHUNK_ENTRIES = 2**24  # rows x V float32 logits per chunk (64 MiB)


@dataclass(frozen=True, eq=False)
class LensHead:
    """What the lens needs from a model: its final norm and its unembedding."""

    norm: Callable[[Tensor], Tensor]  # the final norm module: [..., d] -> [..., d]
    weight: Tensor  # W_U [V, d] (tied to the input embeddings or not, as the model has it)
    bias: Tensor | None = None  # b_U [V]
    final_normed: bool = True  # hidden_states[L] already passed the final norm (HF convention)
    softcap: float | None = None  # final logit soft-capping c (Gemma 2/3), None = off
    divisor: float = 1.0  # logits are divided by this (Granite's logits_scaling), before soft-capping

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])


def _check_states(h: Tensor, head: LensHead, name: str) -> Tensor:
    h = torch.as_tensor(h).detach()
    if h.ndim != 3 or 0 in h.shape:
        raise MetricInputError(f"{name} states must have shape [L+1, T, d] with no empty axis, got {tuple(h.shape)}.")
    if h.shape[-1] != head.weight.shape[1]:
        raise MetricInputError(f"{name} states have width d={h.shape[-1]} but the LM head expects "
                               f"d={head.weight.shape[1]}; use the states of the same model.")
    if not torch.isfinite(h).all():
        raise MetricInputError(f"{name} states contain NaN/inf; recompute them in float32.")
    return h


def _layers(layers: Sequence[int] | None, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    out = sorted({int(layer) for layer in layers})
    if not out or out[0] < 0 or out[-1] >= n_layers:
        raise MetricInputError(f"Lens layers must be a non-empty subset of 0..{n_layers - 1}, got {list(layers)}.")
    return out


@torch.no_grad()
def lens_logits(h_layer: Tensor, head: LensHead, is_final: bool) -> Tensor:
    """Logits of one layer's rows: h [T, d] -> [T, V] float32 (final norm first unless is_final and
    the head says hidden_states[L] is already normed)."""
    norm_dev = head.weight.device
    x = h_layer.to(device=norm_dev)
    if not (is_final and head.final_normed):
        x = head.norm(x.to(head.weight.dtype))
    logits = x.to(torch.float32) @ head.weight.to(torch.float32).T  # [T, V]
    if head.bias is not None:
        logits = logits + head.bias.to(torch.float32)
    if head.divisor != 1.0:
        logits = logits / head.divisor
    if head.softcap:
        logits = head.softcap * torch.tanh(logits / head.softcap)
    return logits


def _chunks(T: int, V: int) -> list[slice]:
    step = max(1, MAX_CHUNK_ENTRIES // max(1, V))
    return [slice(s, min(T, s + step)) for s in range(0, T, step)]


@dataclass(frozen=True, eq=False)
class LensReadout:
    """Top-k of the lens for one span (n layers read, T positions)."""

    layers: Tensor  # [n] long, the layers read (ascending)
    top_ids: Tensor  # [n, T, k] long, most probable vocabulary ids first
    top_probs: Tensor  # [n, T, k] float32
    target_rank: Tensor | None = None  # [n, T] long, rank of the target id (1 = top); None without targets
    target_prob: Tensor | None = None  # [n, T] float32, probability of the target id


@torch.no_grad()
def logit_lens(h: Tensor, head: LensHead, k: int = 5, layers: Sequence[int] | None = None,
               targets: Tensor | None = None) -> LensReadout:
    """Top-k vocabulary tokens read from every position of every (selected) layer.

    h [L+1, T, d]; targets (optional) LongTensor [T] or [L+1, T] of vocabulary ids, one per position
    (per layer): their rank and probability are reported too. -> LensReadout with n = len(layers).
    """
    h = _check_states(h, head, "The")
    n_layers, T, _ = h.shape
    V = head.vocab_size
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= V:
        raise MetricInputError(f"k must be an integer in 1..{V} (vocabulary size), got {k!r}.")
    chosen = _layers(layers, n_layers)
    if targets is not None:
        targets = torch.as_tensor(targets).long()
        if targets.shape not in ((T,), (n_layers, T)):
            raise MetricInputError(f"targets must have shape [T] = [{T}] or [L+1, T] = [{n_layers}, {T}], "
                                   f"got {tuple(targets.shape)}.")
        if targets.min() < 0 or targets.max() >= V:
            raise MetricInputError(f"targets hold ids outside the vocabulary 0..{V - 1}.")
        if targets.ndim == 1:
            targets = targets.expand(n_layers, T)
    n = len(chosen)
    top_ids = torch.zeros((n, T, k), dtype=torch.long)
    top_probs = torch.zeros((n, T, k), dtype=torch.float32)
    rank = torch.zeros((n, T), dtype=torch.long) if targets is not None else None
    prob = torch.zeros((n, T), dtype=torch.float32) if targets is not None else None
    for r, layer in enumerate(chosen):
        for rows in _chunks(T, V):
            logits = lens_logits(h[layer, rows], head, is_final=layer == n_layers - 1)  # [t, V]
            logp = torch.log_softmax(logits, dim=-1)  # [t, V]
            vals, ids = logp.topk(k, dim=-1)  # [t, k], most probable first
            top_ids[r, rows], top_probs[r, rows] = ids.cpu(), vals.exp().cpu()
            if targets is not None:
                tgt = targets[layer, rows].to(logits.device)  # [t]
                t_logit = logits.gather(1, tgt[:, None])  # [t, 1]
                rank[r, rows] = (1 + (logits > t_logit).sum(dim=-1)).cpu()
                prob[r, rows] = logp.gather(1, tgt[:, None])[:, 0].exp().cpu()
    return LensReadout(torch.tensor(chosen), top_ids, top_probs, rank, prob)


@dataclass(frozen=True, eq=False)
class SpeechLens:
    """The lens over both spans of one sample, with each speech frame's aligned text token."""

    speech: LensReadout  # [n, Ts, k]; target = the aligned text token's id -> rank [n, Ts]
    text: LensReadout  # [n, Tt, k]; target = the token's own id -> rank [n, Tt]
    frame_token: Tensor  # [n, Ts] long, index j of the text token aligned to each frame at each layer read


def speech_logit_lens(hs: Tensor, ht: Tensor, token_ids: Sequence[int] | Tensor, head: LensHead,
                      frame_token: Tensor, k: int = 5, layers: Sequence[int] | None = None) -> SpeechLens:
    """Logit lens of the speech frames and the text tokens of one sample.

    hs [L+1,Ts,d], ht [L+1,Tt,d]; token_ids [Tt] the question's vocabulary ids; frame_token LongTensor
    [Ts] or [L+1,Ts]: the index j (0..Tt-1) of the text token aligned to each frame (per layer). The
    speech readout's target at frame i (layer l) is token_ids[frame_token[l, i]]; the text readout's
    target at token j is token_ids[j] itself.
    """
    hs = _check_states(hs, head, "Speech")
    ht = _check_states(ht, head, "Text")
    if hs.shape[0] != ht.shape[0]:
        raise MetricInputError(f"Speech has {hs.shape[0]} layers but text has {ht.shape[0]}; use one model.")
    n_layers, ts, tt = hs.shape[0], hs.shape[1], ht.shape[1]
    ids = torch.as_tensor(list(token_ids) if not isinstance(token_ids, Tensor) else token_ids).long()
    if ids.shape != (tt,):
        raise MetricInputError(f"token_ids must hold one id per text token ({tt}), got shape {tuple(ids.shape)}.")
    ft = torch.as_tensor(frame_token).long()
    if ft.shape not in ((ts,), (n_layers, ts)):
        raise MetricInputError(f"frame_token must have shape [Ts] = [{ts}] or [L+1, Ts] = [{n_layers}, {ts}], "
                               f"got {tuple(ft.shape)}. Build it with tokenwise.frame_alignment.")
    if ft.min() < 0 or ft.max() >= tt:
        raise MetricInputError(f"frame_token holds token indices outside 0..{tt - 1}.")
    ft = ft.expand(n_layers, ts)
    chosen = _layers(layers, n_layers)
    speech = logit_lens(hs, head, k, chosen, targets=ids[ft])  # targets [L+1, Ts]
    text = logit_lens(ht, head, k, chosen, targets=ids)
    return SpeechLens(speech=speech, text=text, frame_token=ft[chosen].clone())
