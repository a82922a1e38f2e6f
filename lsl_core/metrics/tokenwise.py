"""Token-level alignment (DESIGN §3): token matrices, alignment path, Spearman, consistency, APS.

    A_l[i, j] = f(h_{l,i}^s, h_{l,j}^t)                       [L+1, Ts, Tt]
    path      i*_j = argmax_i A_l^cos[:, j]  (argmin_i for f_d)  [L+1, Tt]
    monotonicity = Spearman rho(j, i*_j)                          [L+1]
    consistency  = share of tokens j whose cos and distance paths pick the same frame
    APS = 1/(L*Tt) * sum_{l=1..L} sum_j A_l[i*_j, j]              (cos and distance versions)

Every function handles all layers at once (batched matmul / cdist / gather / sort).
Conventions for the degenerate cases, so that NaN never reaches a plot:
  - cosine with a zero vector is 0 (see `sequence.unit_rows`);
  - ties in the path go to the lowest frame index (torch.argmax/argmin return the first extremum);
  - Spearman of a path with fewer than 2 tokens, or of a constant path, is 0.0 (no monotone trend).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lsl_core.errors import MetricInputError
from lsl_core.metrics.sequence import layer_average, unit_rows, validate_states

Metric = Literal["cosine", "distance"]
METRICS: tuple[str, ...] = ("cosine", "distance")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise MetricInputError(f"metric must be 'cosine' or 'distance', got {metric!r}.")


def _check_matrix(A: Tensor) -> Tensor:
    """A [L+1, Ts, Tt] finite, non-empty -> float32."""
    A = torch.as_tensor(A).detach()
    if A.ndim != 3 or 0 in A.shape:
        raise MetricInputError(
            f"A token matrix must have shape [L+1, Ts, Tt] with no empty axis, got {tuple(A.shape)}. "
            "Build it with token_cosine_matrix or token_distance_matrix."
        )
    if not A.dtype.is_floating_point:
        A = A.to(torch.float32)
    if not torch.isfinite(A).all():
        raise MetricInputError("The token matrix contains NaN/inf; rebuild it from finite hidden states.")
    return A


def _check_path(path: Tensor, name: str = "path") -> Tensor:
    """path [L+1, Tt] integer -> LongTensor."""
    path = torch.as_tensor(path).detach()
    if path.ndim != 2 or 0 in path.shape:
        raise MetricInputError(
            f"{name} must have shape [L+1, Tt] with Tt >= 1, got {tuple(path.shape)}. "
            "Build it with alignment_path."
        )
    if path.dtype.is_floating_point or path.dtype.is_complex or path.dtype == torch.bool:
        raise MetricInputError(f"{name} must hold integer frame indices, got dtype {path.dtype}.")
    return path.long()


# ---- token matrices -------------------------------------------------------------------------

def _cosine_matrix(hs: Tensor, ht: Tensor) -> Tensor:
    """Validated float32 [L+1,Ts,d], [L+1,Tt,d] -> [L+1,Ts,Tt]."""
    return torch.bmm(unit_rows(hs), unit_rows(ht).transpose(1, 2)).clamp(-1.0, 1.0)  # [L+1, Ts, Tt]


def _distance_matrix(hs: Tensor, ht: Tensor) -> Tensor:
    """Validated float32 [L+1,Ts,d], [L+1,Tt,d] -> [L+1,Ts,Tt].

    cdist's direct mode sums squared *differences*, so it is exact for near-identical states
    (the ||x||^2 + ||y||^2 - 2 x.y matmul shortcut cancels catastrophically there: LLM states
    share large components). It costs ~5x the matmul form on CPU (about 1.5 s for 33 layers x
    375 frames x 60 tokens x d=4096 on 2 cores), still small next to the forward pass.
    """
    return torch.cdist(hs, ht, p=2.0, compute_mode="donot_use_mm_for_euclid_dist")  # [L+1, Ts, Tt]


def token_cosine_matrix(hs: Tensor, ht: Tensor) -> Tensor:
    """A^cos: hs [L+1,Ts,d], ht [L+1,Tt,d] -> [L+1,Ts,Tt] float32, A[l,i,j] = cos(h_{l,i}^s, h_{l,j}^t).

    Equals the product of row-normalized states; zero vectors give 0.
    """
    hs, ht = validate_states(hs, ht)
    return _cosine_matrix(hs, ht)


def token_distance_matrix(hs: Tensor, ht: Tensor) -> Tensor:
    """A^d: hs [L+1,Ts,d], ht [L+1,Tt,d] -> [L+1,Ts,Tt] float32, A[l,i,j] = ||h_{l,i}^s - h_{l,j}^t||_2."""
    hs, ht = validate_states(hs, ht)
    return _distance_matrix(hs, ht)


# ---- alignment path -------------------------------------------------------------------------

def alignment_path(A: Tensor, metric: Metric) -> Tensor:
    """Best frame per text token: A [L+1,Ts,Tt] -> LongTensor [L+1,Tt], i*_j per layer.

    argmax over frames for "cosine", argmin for "distance"; ties go to the lowest frame index.
    """
    _check_metric(metric)
    A = _check_matrix(A)
    return A.argmax(dim=1) if metric == "cosine" else A.argmin(dim=1)  # [L+1, Tt]


def path_scores(A: Tensor, path: Tensor) -> Tensor:
    """Matrix values along the path: A [L+1,Ts,Tt], path [L+1,Tt] -> [L+1,Tt], A_l[i*_j, j]."""
    A = _check_matrix(A)
    path = _check_path(path).to(A.device)
    if path.shape != (A.shape[0], A.shape[2]):
        raise MetricInputError(
            f"path shape {tuple(path.shape)} does not match the matrix: expected [L+1, Tt] = "
            f"{[A.shape[0], A.shape[2]]}. Compute the path from the same matrix."
        )
    if path.min() < 0 or path.max() >= A.shape[1]:
        raise MetricInputError(
            f"path holds frame indices outside [0, Ts={A.shape[1]}). Compute the path from the same matrix."
        )
    return A.gather(1, path.unsqueeze(1)).squeeze(1)  # [L+1, 1, Tt] -> [L+1, Tt]


def _average_ranks(v: Tensor) -> Tensor:
    """1-based ranks along the last axis with ties sharing their average rank: [B, T] -> [B, T] float64.

    A value occupying sorted positions left..right-1 (0-based) gets rank (left + 1 + right) / 2.
    """
    v = v.contiguous()
    sorted_v = v.sort(dim=-1).values  # [B, T]
    left = torch.searchsorted(sorted_v, v, right=False)  # [B, T]
    right = torch.searchsorted(sorted_v, v, right=True)  # [B, T]
    return (left + right + 1).to(torch.float64) / 2.0


def path_monotonicity(path: Tensor) -> Tensor:
    """Spearman rho between token index j and path frame i*_j per layer: [L+1,Tt] -> [L+1] float64.

    Pearson correlation of average ranks (ties share ranks), as scipy.stats.spearmanr.
    1 = frames advance with tokens, -1 = reversed. Defined as 0.0 when Tt < 2 or the path is
    constant (all tokens on one frame): there is no trend, and NaN must not reach a plot.
    """
    path = _check_path(path)
    n_layers, tt = path.shape
    if tt < 2:
        return torch.zeros(n_layers, dtype=torch.float64, device=path.device)
    rank_i = _average_ranks(path)  # [L+1, Tt]
    rank_j = torch.arange(1, tt + 1, dtype=torch.float64, device=path.device)  # [Tt], no ties
    di = rank_i - rank_i.mean(dim=-1, keepdim=True)
    dj = rank_j - rank_j.mean()
    cov = (di * dj).sum(dim=-1)  # [L+1]
    den = torch.sqrt((di * di).sum(dim=-1) * (dj * dj).sum())  # [L+1]; 0 only for a constant path
    rho = torch.where(den > 0, cov / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
    return rho.clamp(-1.0, 1.0)


def path_consistency(path_cos: Tensor, path_dist: Tensor) -> Tensor:
    """Share of tokens whose cosine and distance paths pick the same frame: 2 x [L+1,Tt] -> [L+1] float64."""
    path_cos = _check_path(path_cos, "path_cos")
    path_dist = _check_path(path_dist, "path_dist").to(path_cos.device)
    if path_cos.shape != path_dist.shape:
        raise MetricInputError(
            f"path_cos {tuple(path_cos.shape)} and path_dist {tuple(path_dist.shape)} differ in shape. "
            "Compute both paths from the same sample's hidden states."
        )
    return (path_cos == path_dist).to(torch.float64).mean(dim=-1)


def alignment_path_score(scores: Tensor) -> float:
    """APS = 1/(L*Tt) * sum over layers l=1..L and tokens j of A_l[i*_j, j]: scores [L+1,Tt] -> float.

    Same layer convention as `layer_average` (layer 0 excluded; with L+1 == 1, layer 0 is used).
    """
    scores = torch.as_tensor(scores).detach()
    if scores.ndim != 2 or 0 in scores.shape:
        raise MetricInputError(
            f"APS needs path scores of shape [L+1, Tt] with Tt >= 1, got {tuple(scores.shape)}. "
            "Build them with path_scores."
        )
    return layer_average(scores.to(torch.float64).mean(dim=-1))  # every layer has Tt tokens


def bottom_k_tokens(scores_at_layer: Tensor, k: int, metric: Metric) -> Tensor:
    """The k least aligned text tokens at one layer: scores [Tt] -> LongTensor [min(k, Tt)].

    Least aligned = lowest cosine path score, or highest distance path score. Returned worst
    first (ascending alignment quality); equal scores keep ascending token index. k = 0 -> empty.
    """
    _check_metric(metric)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise MetricInputError(f"k must be a non-negative integer (e.g. 3 for Bottom3), got {k!r}.")
    scores = torch.as_tensor(scores_at_layer).detach()
    if scores.ndim != 1:
        raise MetricInputError(
            f"bottom_k_tokens needs the path scores of one layer, shape [Tt], got {tuple(scores.shape)}."
        )
    scores = scores.to(torch.float64)
    if not torch.isfinite(scores).all():
        raise MetricInputError("Path scores contain NaN/inf; recompute them from finite hidden states.")
    quality = scores if metric == "cosine" else -scores  # higher = better aligned
    order = torch.sort(quality, stable=True).indices  # [Tt], stable: ties by token index
    return order[: min(k, scores.numel())]


# ---- everything at once ---------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class TokenwiseResult:
    """All token-level metrics of one sample (shapes with L+1 layers, Ts frames, Tt tokens)."""

    cos: Tensor  # [L+1, Ts, Tt] float32 cosine matrix
    dist: Tensor  # [L+1, Ts, Tt] float32 Euclidean distance matrix
    path_cos: Tensor  # [L+1, Tt] long, argmax frame per token
    path_dist: Tensor  # [L+1, Tt] long, argmin frame per token
    scores_cos: Tensor  # [L+1, Tt] cosine along path_cos
    scores_dist: Tensor  # [L+1, Tt] distance along path_dist
    spearman_cos: Tensor  # [L+1] float64 monotonicity of path_cos
    spearman_dist: Tensor  # [L+1] float64 monotonicity of path_dist
    consistency: Tensor  # [L+1] float64 share of tokens where both paths agree
    aps_cos: float  # APS of the cosine path (layers 1..L)
    aps_dist: float  # APS of the distance path (layers 1..L)


def tokenwise_metrics(hs: Tensor, ht: Tensor) -> TokenwiseResult:
    """Every token-level metric from one sample's states: hs [L+1,Ts,d], ht [L+1,Tt,d]."""
    hs, ht = validate_states(hs, ht)
    cos, dist = _cosine_matrix(hs, ht), _distance_matrix(hs, ht)  # [L+1, Ts, Tt] each
    path_cos, path_dist = alignment_path(cos, "cosine"), alignment_path(dist, "distance")  # [L+1, Tt]
    scores_cos, scores_dist = path_scores(cos, path_cos), path_scores(dist, path_dist)  # [L+1, Tt]
    return TokenwiseResult(
        cos=cos,
        dist=dist,
        path_cos=path_cos,
        path_dist=path_dist,
        scores_cos=scores_cos,
        scores_dist=scores_dist,
        spearman_cos=path_monotonicity(path_cos),
        spearman_dist=path_monotonicity(path_dist),
        consistency=path_consistency(path_cos, path_dist),
        aps_cos=alignment_path_score(scores_cos),
        aps_dist=alignment_path_score(scores_dist),
    )
