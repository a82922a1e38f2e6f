"""Sequence-level alignment (DESIGN §3): mean-pool each modality per layer, compare the means.

    h̄_l^s = mean_i h_{l,i}^s,  h̄_l^t = mean_j h_{l,j}^t,  curve_l = f(h̄_l^s, h̄_l^t),
    scalar f̄ = mean over layers l = 1..L (layer 0, the input embeddings, is shown but not averaged).

Inputs are the query-span hidden states of one sample: speech hs [L+1, Ts, d] and text
ht [L+1, Tt, d]; index 0 is the LLM input embedding, index L is (in HF) after the final norm.
All layers are computed at once; no Python loop runs over layers or tokens. The means are
accumulated in float64 (states of magnitude ~1e3 whose means differ by ~1 lose 4 digits in a
float32 sum), so every value is exact to 1e-6 before the one cast of the result to float32.

This module also holds `validate_states`, the one entry check every metric module shares.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lsl_core.errors import MetricInputError


def validate_states(
    hs: Tensor, ht: Tensor, dtype: torch.dtype | None = torch.float32
) -> tuple[Tensor, Tensor]:
    """Check a (speech, text) pair of per-layer states and cast both once to `dtype`.

    hs [L+1, Ts, d], ht [L+1, Tt, d] -> the same tensors as `dtype` on hs's device
    (dtype=None keeps floating dtypes, e.g. to gather rows before a float64 cast).
    Raises MetricInputError (naming the fix) for a wrong rank, no layers, an empty span,
    mismatched layer count or width, and NaN/inf values (checked after the cast).
    """
    hs = torch.as_tensor(hs).detach()
    ht = torch.as_tensor(ht).detach()
    for name, h, t in (("speech", hs, "Ts"), ("text", ht, "Tt")):
        if h.ndim != 3:
            raise MetricInputError(
                f"{name} hidden states must have shape [L+1, {t}, d], got {tuple(h.shape)}. "
                "Pass all layers of one sample restricted to the query span (stack hidden_states)."
            )
        if not (h.dtype.is_floating_point or h.dtype in (torch.int32, torch.int64)):
            raise MetricInputError(f"{name} hidden states must be real numbers, got dtype {h.dtype}.")
    if hs.shape[0] == 0 or ht.shape[0] == 0:
        raise MetricInputError("Hidden states have no layers (L+1 == 0). Request output_hidden_states=True.")
    if hs.shape[1] == 0:
        raise MetricInputError(
            "The speech span is empty (Ts == 0): no speech frames fell inside the query span. "
            "Check the audio is not silent/too short and that the span offsets are right."
        )
    if ht.shape[1] == 0:
        raise MetricInputError(
            "The text span is empty (Tt == 0): the question produced no tokens inside the query span. "
            "Check the question is non-empty and that the span offsets are right."
        )
    if hs.shape[0] != ht.shape[0]:
        raise MetricInputError(
            f"Speech has {hs.shape[0]} layers of states but text has {ht.shape[0]} (L+1 must match). "
            "Run both modalities through the same model with output_hidden_states=True."
        )
    if hs.shape[2] != ht.shape[2]:
        raise MetricInputError(
            f"Speech width d={hs.shape[2]} differs from text width d={ht.shape[2]}. "
            "Both modalities must come from the same LLM's hidden states."
        )
    if dtype is None:
        hs = hs if hs.dtype.is_floating_point else hs.to(torch.float32)
        ht = ht.to(device=hs.device, dtype=ht.dtype if ht.dtype.is_floating_point else torch.float32)
    else:
        hs = hs.to(dtype)
        ht = ht.to(device=hs.device, dtype=dtype)
    for name, h in (("speech", hs), ("text", ht)):
        if not torch.isfinite(h).all():
            raise MetricInputError(
                f"{name} hidden states contain NaN or infinite values (as {h.dtype}). "
                "Run the model in float32/bfloat16 instead of float16, or check the input audio/text."
            )
    return hs, ht


def unit_rows(h: Tensor) -> Tensor:
    """Rows scaled to unit L2 norm: h [..., d] -> [..., d]; a zero row stays zero.

    This is the eps-guard for cosine: dividing by 1 instead of 0 keeps zero vectors at zero,
    so the cosine of a zero vector with anything is defined as 0 (never NaN).
    A finite row whose squared norm leaves the dtype's range (float32: |h| above ~1e19 overflows to an
    infinite norm, below ~1e-23 underflows to 0) is scaled by its largest |entry| first; other rows
    are divided by their norm as computed, unchanged.
    """
    norm = torch.linalg.vector_norm(h, dim=-1, keepdim=True)  # [..., 1]
    out_of_range = ~torch.isfinite(norm) | ((norm == 0) & (h != 0).any(dim=-1, keepdim=True))  # [..., 1]
    if bool(out_of_range.any()):
        peak = h.abs().amax(dim=-1, keepdim=True)  # [..., 1]
        scaled = h / torch.where(peak > 0, peak, torch.ones_like(peak))  # entries in [-1, 1]
        unit = scaled / torch.linalg.vector_norm(scaled, dim=-1, keepdim=True).clamp_min(1.0)  # norm >= 1 there
        norm = torch.where(out_of_range, torch.ones_like(norm), norm)
        return torch.where(out_of_range, unit, h / torch.where(norm > 0, norm, torch.ones_like(norm)))
    return h / torch.where(norm > 0, norm, torch.ones_like(norm))


def mean_pool(h: Tensor) -> Tensor:
    """Mean over positions per layer: h [L+1, T, d] -> [L+1, d] (summed in float64, returned as float32)."""
    h = torch.as_tensor(h).detach()
    if h.ndim != 3 or h.shape[1] == 0:
        raise MetricInputError(
            f"mean_pool needs states of shape [L+1, T, d] with T >= 1, got {tuple(h.shape)}. "
            "Pass the query-span states of one sample."
        )
    return h.to(torch.float64).mean(dim=1).to(torch.float32)


def _sequence_cosine(hs: Tensor, ht: Tensor) -> Tensor:
    """Validated hs [L+1,Ts,d], ht [L+1,Tt,d] (float32 or float64) -> [L+1] float32 (means summed in float64)."""
    ms = unit_rows(hs.to(torch.float64).mean(dim=1))  # [L+1, d] float64
    mt = unit_rows(ht.to(torch.float64).mean(dim=1))  # [L+1, d] float64
    return (ms * mt).sum(dim=-1).clamp(-1.0, 1.0).to(torch.float32)


def sequence_cosine(hs: Tensor, ht: Tensor) -> Tensor:
    """Cosine of the mean-pooled states per layer: hs [L+1,Ts,d], ht [L+1,Tt,d] -> [L+1] float32.

    A zero mean vector (e.g. all-zero states) gives cosine 0 at that layer.
    """
    hs, ht = validate_states(hs, ht)
    return _sequence_cosine(hs, ht)


def _sequence_distance(hs: Tensor, ht: Tensor) -> Tensor:
    """Validated hs [L+1,Ts,d], ht [L+1,Tt,d] (float32 or float64) -> [L+1] float32 (means summed in float64)."""
    ms, mt = hs.to(torch.float64).mean(dim=1), ht.to(torch.float64).mean(dim=1)  # [L+1, d] float64
    return torch.linalg.vector_norm(ms - mt, dim=-1).to(torch.float32)  # [L+1]


def sequence_distance(hs: Tensor, ht: Tensor) -> Tensor:
    """Euclidean distance of the mean-pooled states per layer: [L+1,Ts,d], [L+1,Tt,d] -> [L+1] float32."""
    hs, ht = validate_states(hs, ht)
    return _sequence_distance(hs, ht)


def layer_average(curve: Tensor) -> float:
    """The scalar f̄ of a per-layer curve [L+1]: mean over layers l = 1..L (index 0 excluded).

    With a single entry (L+1 == 1, only the embeddings) that entry is returned.
    Summed in float64. Raises MetricInputError for an empty or non-finite curve.
    """
    curve = torch.as_tensor(curve).detach()
    if curve.ndim != 1 or curve.numel() == 0:
        raise MetricInputError(
            f"layer_average needs a non-empty per-layer curve of shape [L+1], got {tuple(curve.shape)}."
        )
    curve = curve.to(torch.float64)
    if not torch.isfinite(curve).all():
        raise MetricInputError("The per-layer curve contains NaN/inf; recompute it from finite hidden states.")
    if curve.numel() == 1:
        return float(curve[0])
    return float(curve[1:].mean())
