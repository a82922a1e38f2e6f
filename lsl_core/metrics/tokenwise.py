"""Token-level alignment (DESIGN §3): token matrices, alignment path, Spearman, consistency, APS.

    A_l[i, j] = f(h_{l,i}^s, h_{l,j}^t)                       [L+1, Ts, Tt]
    path      i*_j = argmax_i A_l^cos[:, j]  (argmin_i for f_d)  [L+1, Tt]   method "argmax"
    frame alignment  j(i): the token aligned to each frame (DTW: visited token; argmax: best token)  [L+1, Ts]
    DTW path  monotone: dynamic time warping over the cost C_l = 1 - A_l^cos (or A_l^d) with steps
              (1,0), (0,1), (1,1) from (0,0) to (Ts-1, Tt-1); token j takes, among the frames the
              path visits in column j, the one with the best value of A_l      [L+1, Tt]   method "dtw"
    monotonicity = Spearman rho(j, i*_j)                          [L+1]
    consistency  = share of tokens j whose cos and distance paths pick the same frame
    APS = 1/(L*Tt) * sum_{l=1..L} sum_j A_l[i*_j, j]              (cos and distance versions)

Every function handles all layers at once (batched matmul / cdist / gather / sort).
Conventions for the degenerate cases, so that NaN never reaches a plot:
  - cosine with a zero vector is 0 (see `sequence.unit_rows`);
  - ties in the path go to the lowest frame index (torch.argmax/argmin return the first extremum);
  - Spearman of a path with fewer than 2 tokens, or of a constant path, is 0.0 (no monotone trend);
  - DTW: among equal accumulated costs the predecessor is chosen diagonal (1,1) first, then the
    frame step (1,0), then the token step (0,1); among visited frames of equal value the lowest
    frame index wins (as for argmax).
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
PathMethod = Literal["argmax", "dtw"]
PATH_METHODS: tuple[str, ...] = ("argmax", "dtw")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise MetricInputError(f"metric must be 'cosine' or 'distance', got {metric!r}.")


def _check_method(method: str) -> None:
    if method not in PATH_METHODS:
        raise MetricInputError(f"path method must be 'argmax' or 'dtw' (monotone), got {method!r}.")


def _check_matrix(A: Tensor) -> Tensor:
    """A [L+1, Ts, Tt] finite, non-empty -> float32 (float64 kept as float64)."""
    A = torch.as_tensor(A).detach()
    if A.ndim != 3 or 0 in A.shape:
        raise MetricInputError(
            f"A token matrix must have shape [L+1, Ts, Tt] with no empty axis, got {tuple(A.shape)}. "
            "Build it with token_cosine_matrix or token_distance_matrix."
        )
    if not A.dtype.is_floating_point or A.dtype.itemsize < 4:  # integers, float16, bfloat16 -> float32
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

def alignment_path(A: Tensor, metric: Metric, method: PathMethod = "argmax") -> Tensor:
    """Best frame per text token: A [L+1,Ts,Tt] -> LongTensor [L+1,Tt], i*_j per layer.

    method "argmax": argmax over frames for "cosine", argmin for "distance"; ties go to the lowest
    frame index. method "dtw": the monotone path of `dtw_alignment` (frames never go back in time).
    """
    _check_metric(metric)
    _check_method(method)
    A = _check_matrix(A)
    if method == "dtw":
        return dtw_alignment(A, metric).path
    return A.argmax(dim=1) if metric == "cosine" else A.argmin(dim=1)  # [L+1, Tt]


@dataclass(frozen=True, eq=False)
class DTWAlignment:
    """A monotone alignment of Ts speech frames with Tt text tokens, per layer."""

    path: Tensor  # [L+1, Tt] long: for each token, the visited frame with the best value (i*_j)
    frame_token: Tensor  # [L+1, Ts] long: for each frame, the visited token with the best value
    cost: Tensor  # [L+1] float64: accumulated cost D[Ts-1, Tt-1] of the optimal path
    length: Tensor  # [L+1] long: number of cells the path visits (max(Ts, Tt) .. Ts + Tt - 1)


def dtw_cost(A: Tensor, metric: Metric) -> Tensor:
    """Local DTW cost from a token matrix: A [L+1,Ts,Tt] -> [L+1,Ts,Tt] float64, 1 - cos or the distance."""
    _check_metric(metric)
    A = _check_matrix(A).to(torch.float64)
    return 1.0 - A if metric == "cosine" else A


_DIAG, _FRAME, _TOKEN = 0, 1, 2  # DTW predecessor codes: from (i-1,j-1), from (i-1,j), from (i,j-1)


def _skew(C: Tensor) -> Tensor:
    """Cost by anti-diagonal: C [L+1,Ts,Tt] -> Cd [K,L+1,Tt], K = Ts+Tt-1, Cd[k,:,j] = C[:, k-j, j] (inf off-grid).

    On diagonal k = i + j, cell (i, j) sits at column j, so the three DTW predecessors of column j
    are diagonal k-1 at j (frame step, from (i-1,j)), k-1 at j-1 (token step, from (i,j-1)) and
    k-2 at j-1 (diagonal step): plain slices, no gathers inside the loop.
    """
    n_layers, ts, tt = C.shape
    k = torch.arange(ts + tt - 1, device=C.device)[:, None]  # [K, 1]
    j = torch.arange(tt, device=C.device)[None, :]  # [1, Tt]
    i = k - j  # [K, Tt] frame of each (diagonal, column)
    valid = (i >= 0) & (i < ts)  # [K, Tt]
    Cd = C[:, i.clamp(0, ts - 1), j.expand_as(i)]  # [L+1, K, Tt]
    return Cd.masked_fill(~valid, float("inf")).permute(1, 0, 2).contiguous()  # [K, L+1, Tt]


def _dtw_steps(C: Tensor) -> tuple[Tensor, Tensor]:
    """Accumulated cost of the best path and predecessor codes, every layer at once.

    C [L+1,Ts,Tt] float64 -> (cost [L+1] float64 = D[Ts-1, Tt-1], step [K,L+1,Tt] int8 by anti-diagonal,
    see `_skew`). D[i,j] = C[i,j] + min(D[i-1,j-1], D[i-1,j], D[i,j-1]); the cells of anti-diagonal
    k = i + j depend only on diagonals k-1 and k-2, so each of the K = Ts+Tt-1 steps is one vectorized
    update over [L+1, Tt]. Off-grid cells cost inf and so are never a predecessor.
    """
    n_layers, ts, tt = C.shape
    Cd = _skew(C)  # [K, L+1, Tt]
    inf_col = torch.full((n_layers, 1), float("inf"), dtype=C.dtype, device=C.device)  # [L+1, 1]
    step = torch.zeros(Cd.shape, dtype=torch.int8, device=C.device)  # [K, L+1, Tt]
    before = torch.full((n_layers, tt), float("inf"), dtype=C.dtype, device=C.device)  # D on diagonal k-2
    last = Cd[0]  # D on diagonal 0: only (0, 0) is on the grid, D[0,0] = C[0,0]
    for k in range(1, ts + tt - 1):
        up = last  # [L+1, Tt] from (i-1, j)
        left = torch.cat([inf_col, last[:, :-1]], dim=1)  # [L+1, Tt] from (i, j-1)
        diag = torch.cat([inf_col, before[:, :-1]], dim=1)  # [L+1, Tt] from (i-1, j-1)
        take_diag = (diag <= up) & (diag <= left)  # ties: diagonal, then frame step, then token step
        take_up = ~take_diag & (up <= left)
        best = torch.where(take_diag, diag, torch.where(take_up, up, left))  # [L+1, Tt]
        step[k] = torch.where(take_diag, _DIAG, torch.where(take_up, _FRAME, _TOKEN)).to(torch.int8)
        before, last = last, Cd[k] + best  # [L+1, Tt]
    return last[:, tt - 1], step


def dtw_alignment(A: Tensor, metric: Metric) -> DTWAlignment:
    """Monotone (DTW) alignment of frames and tokens per layer (DESIGN §3): A [L+1,Ts,Tt] -> DTWAlignment.

    Cost 1 - A for "cosine", A for "distance"; steps (1,0), (0,1), (1,1) from (0,0) to (Ts-1,Tt-1).
    The path visits every frame and every token; a token visited with several frames takes the one
    with the best value of A (highest cosine / lowest distance, ties to the lowest frame), and a frame
    visited with several tokens takes its best token likewise (ties to the lowest token index).
    Vectorized over layers: Ts + Tt - 1 anti-diagonal updates, then a backtrack of at most Ts + Tt - 1 steps.
    """
    _check_metric(metric)
    A = _check_matrix(A)
    n_layers, ts, tt = A.shape
    cost, step = _dtw_steps(dtw_cost(A, metric))  # [L+1], [K, L+1, Tt]
    sign = 1.0 if metric == "cosine" else -1.0
    Q = sign * A.to(torch.float64)  # [L+1, Ts, Tt] quality: higher = better aligned
    dev = A.device
    layers = torch.arange(n_layers, device=dev)
    i = torch.full((n_layers,), ts - 1, dtype=torch.long, device=dev)  # current cell per layer
    j = torch.full((n_layers,), tt - 1, dtype=torch.long, device=dev)
    best_q_tok = torch.full((n_layers, tt), -float("inf"), dtype=torch.float64, device=dev)  # [L+1, Tt]
    path = torch.zeros((n_layers, tt), dtype=torch.long, device=dev)  # [L+1, Tt]
    best_q_frm = torch.full((n_layers, ts), -float("inf"), dtype=torch.float64, device=dev)  # [L+1, Ts]
    frame_token = torch.zeros((n_layers, ts), dtype=torch.long, device=dev)  # [L+1, Ts]
    length = torch.zeros(n_layers, dtype=torch.long, device=dev)
    active = torch.ones(n_layers, dtype=torch.bool, device=dev)
    for _ in range(ts + tt - 1):
        q = Q[layers, i, j]  # [L+1]
        # backtracking visits frames of one token from high to low i (and tokens of one frame from high
        # to low j), so ">=" lets a later-visited equal value win: ties go to the lowest index
        tok_better = active & (q >= best_q_tok[layers, j])
        best_q_tok[layers[tok_better], j[tok_better]] = q[tok_better]
        path[layers[tok_better], j[tok_better]] = i[tok_better]
        frm_better = active & (q >= best_q_frm[layers, i])
        best_q_frm[layers[frm_better], i[frm_better]] = q[frm_better]
        frame_token[layers[frm_better], i[frm_better]] = j[frm_better]
        length += active.long()
        s = step[i + j, layers, j].long()  # [L+1]
        move = active & ((i > 0) | (j > 0))  # (0, 0) ends the walk
        i = torch.where(move & (s != _TOKEN), i - 1, i)
        j = torch.where(move & (s != _FRAME), j - 1, j)
        active = move
        if not bool(active.any()):
            break
    return DTWAlignment(path=path, frame_token=frame_token, cost=cost, length=length)


def dtw_path(A: Tensor, metric: Metric) -> Tensor:
    """The monotone (DTW) path i*_j: A [L+1,Ts,Tt] -> LongTensor [L+1,Tt] (see `dtw_alignment`)."""
    return dtw_alignment(A, metric).path


def frame_alignment(A: Tensor, metric: Metric, method: PathMethod = "argmax") -> Tensor:
    """The text token aligned to each speech frame: A [L+1,Ts,Tt] -> LongTensor [L+1,Ts].

    "dtw": the token the monotone path visits at frame i (the best-valued one if several);
    "argmax": the frame's best token (argmax over tokens for cosine, argmin for distance; ties to
    the lowest token index). The converse of the path i*_j, for per-frame views such as the logit lens.
    """
    _check_metric(metric)
    _check_method(method)
    A = _check_matrix(A)
    if method == "dtw":
        return dtw_alignment(A, metric).frame_token
    return A.argmax(dim=2) if metric == "cosine" else A.argmin(dim=2)  # [L+1, Ts]


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
    path_cos: Tensor  # [L+1, Tt] long, argmax (or DTW) frame per token
    path_dist: Tensor  # [L+1, Tt] long, argmin (or DTW) frame per token
    scores_cos: Tensor  # [L+1, Tt] cosine along path_cos
    scores_dist: Tensor  # [L+1, Tt] distance along path_dist
    spearman_cos: Tensor  # [L+1] float64 monotonicity of path_cos
    spearman_dist: Tensor  # [L+1] float64 monotonicity of path_dist
    consistency: Tensor  # [L+1] float64 share of tokens where both paths agree
    aps_cos: float  # APS of the cosine path (layers 1..L)
    aps_dist: float  # APS of the distance path (layers 1..L)


def tokenwise_metrics(hs: Tensor, ht: Tensor, path: PathMethod = "argmax") -> TokenwiseResult:
    """Every token-level metric from one sample's states: hs [L+1,Ts,d], ht [L+1,Tt,d].

    path: "argmax" (per-token best frame) or "dtw" (monotone path); scores, Spearman, consistency
    and APS are then computed along that path.
    """
    _check_method(path)
    hs, ht = validate_states(hs, ht)
    cos, dist = _cosine_matrix(hs, ht), _distance_matrix(hs, ht)  # [L+1, Ts, Tt] each
    path_cos, path_dist = alignment_path(cos, "cosine", path), alignment_path(dist, "distance", path)  # [L+1, Tt]
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
