"""Per-layer token norms and the standardized distance of the two spans (the second seed paper's curves).

    mean token norm     n_l^s = 1/Ts sum_i ||h_{l,i}^s||_2,   n_l^t = 1/Tt sum_j ||h_{l,j}^t||_2        [L+1]
    standardized dist.  d~_l = sqrt( 1/d sum_k ((h̄_{l,k}^s - h̄_{l,k}^t) / sigma_{l,k})^2 )                [L+1]
    norm ratio          r_{l,i} = ||h_{l,i}||_2 / median_{j in ref} ||h_{l,j}||_2                          [L+1, T]

sigma_{l,k} is the population standard deviation of dimension k over the Ts + Tt rows of both spans at
layer l (z-scoring the union of the spans; the mean cancels in the difference of the means). The raw
distance ||h̄^s - h̄^t|| grows with the residual stream's norm and is dominated by a few huge
dimensions; d~ weighs every dimension by its own spread, so layers become comparable. It is the root
mean square over dimensions of the standardized mean difference; a dimension constant over both spans
(sigma = 0) has no difference and contributes 0.

The norm ratio finds attention sinks: a position whose residual norm is many times the typical one
(in small LLMs, prompt position 0 reaches ~10-100x). Measured against the median of the speech frames,
it says whether the first frames of a clip act as such a sink.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lsl_core.metrics.sequence import validate_states

SIGMA_FLOOR = 1e-12  # sigma at or below this (relative to the layer's largest sigma) counts as a constant dimension


def mean_token_norm(h: Tensor) -> Tensor:
    """Mean L2 norm of the rows of one span per layer: h [L+1,T,d] -> [L+1] float64."""
    h = torch.as_tensor(h).detach().to(torch.float64)
    if h.ndim != 3 or 0 in h.shape:
        from lsl_core.errors import MetricInputError

        raise MetricInputError(f"States must have shape [L+1, T, d] with no empty axis, got {tuple(h.shape)}.")
    return torch.linalg.vector_norm(h, dim=-1).mean(dim=-1)  # [L+1]


def token_norms(hs: Tensor, ht: Tensor) -> tuple[Tensor, Tensor]:
    """Mean token norm of the speech and the text span: hs [L+1,Ts,d], ht [L+1,Tt,d] -> ([L+1], [L+1]) float64."""
    hs, ht = validate_states(hs, ht, dtype=torch.float64)
    return mean_token_norm(hs), mean_token_norm(ht)


def norm_ratio(h: Tensor, ref: slice) -> Tensor:
    """Each row's L2 norm over the median row norm of rows `ref`, per layer: h [L+1,T,d] -> [L+1,T] float64. The
    median is torch's lower median (of an even count, the smaller middle value): always one of the span's norms."""
    norms = torch.linalg.vector_norm(torch.as_tensor(h).detach().to(torch.float64), dim=-1)  # [L+1, T]
    if norms.ndim != 2 or norms[:, ref].shape[-1] == 0:
        from lsl_core.errors import MetricInputError

        raise MetricInputError(f"norm_ratio needs states [L+1, T, d] and a non-empty reference span; got "
                               f"{tuple(torch.as_tensor(h).shape)} and {ref}.")
    med = norms[:, ref].median(dim=-1).values  # [L+1]
    return norms / med.clamp_min(1e-12)[:, None]


def standardized_distance(hs: Tensor, ht: Tensor) -> Tensor:
    """d~_l (module docstring): hs [L+1,Ts,d], ht [L+1,Tt,d] -> [L+1] float64, >= 0, scale-free per dimension."""
    hs, ht = validate_states(hs, ht, dtype=torch.float64)
    both = torch.cat([hs, ht], dim=1)  # [L+1, Ts+Tt, d]
    sigma = both.std(dim=1, correction=0)  # [L+1, d]
    diff = hs.mean(dim=1) - ht.mean(dim=1)  # [L+1, d]
    constant = sigma <= SIGMA_FLOOR * sigma.amax(dim=-1, keepdim=True).clamp_min(SIGMA_FLOOR)  # [L+1, d]
    z = torch.where(constant, torch.zeros_like(diff), diff / torch.where(constant, torch.ones_like(sigma), sigma))
    return torch.sqrt((z * z).mean(dim=-1))  # [L+1]
