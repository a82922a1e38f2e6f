"""Linear CKA (DESIGN §3, seed 000): how similar two sets of representations of the same n items are.

    CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)         (feature space, centred)
              = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),  K = X X^T, L = Y Y^T   (Gram space)
    HSIC(K, L) = tr(K H L H) / (n-1)^2,  H = I - 11^T / n

Two uses:
  - aligned cross-layer CKA of one sample: X = Hs[a, i*_j] (speech frames on the path), Y = Ht[b, j],
    for every speech layer a and text layer b -> [L+1, L+1];
  - the unaligned variant across samples: mean-pooled speech vs text states of N samples, exact
    (`pooled_cross_layer_cka`) or accumulated over minibatches with the unbiased HSIC estimator
    (`MinibatchCKA`, Song et al. 2012; Nguyen et al. 2021).
All in float64. CKA needs n >= 4 items. If one side is constant across the items (zero variance)
CKA is undefined; it is reported as 0.0 (no shared structure), never NaN.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lsl_core.errors import MetricInputError
from lsl_core.metrics.sequence import validate_states

MIN_PAIRS = 4  # the unbiased HSIC estimator divides by n(n-3); CKA on fewer items says nothing
CONSTANT_RTOL = 1e-10  # ||X - mean|| <= rtol * ||X||: the features are constant up to rounding
MAX_GRAM_ENTRIES = 2**27  # (L+1) * n^2 float64 Gram entries per side (1 GiB): beyond, use MinibatchCKA
NULL_PERMUTATIONS = 200  # shuffled pairings of the aligned CKA's null (cka_pairing_null): p >= 1/201
NULL_CHUNK_ENTRIES = 2**22  # float64 entries of the re-paired Grams held at once (32 MiB), whatever Tt


# ---- one step of the formula each -----------------------------------------------------------

def path_layer(n_layers: int, requested: int) -> int:
    """The layer whose alignment path pairs frames with tokens for CKA: requested in 0..L, -1 -> L // 2.

    n_layers: L + 1 (the hidden_states entries). A layer the model lacks is refused, not clamped.
    """
    L = n_layers - 1
    if requested == -1:
        return L // 2
    if not 0 <= requested <= L:
        raise MetricInputError(
            f"The CKA path layer {requested} does not exist: this model has layers 0..{L}; "
            "pick one of them, or -1 for the middle layer."
        )
    return requested


def _as_matrix(X: Tensor, name: str) -> Tensor:
    X = torch.as_tensor(X).detach()
    if X.ndim != 2 or X.shape[1] == 0:
        raise MetricInputError(
            f"CKA input {name} must have shape [n, features] with features >= 1, got {tuple(X.shape)}."
        )
    X = X.to(torch.float64)
    if not torch.isfinite(X).all():
        raise MetricInputError(f"CKA input {name} contains NaN/inf; recompute it from finite hidden states.")
    return X


def _check_pairs(n_x: int, n_y: int, what: str = "aligned pairs", fix: str | None = None) -> None:
    if n_x != n_y:
        raise MetricInputError(f"CKA needs the same items on both sides, got {n_x} and {n_y} rows.")
    if n_x < MIN_PAIRS:
        fix = fix or "use a longer question or the pooled variant across samples"
        raise MetricInputError(f"CKA needs at least {MIN_PAIRS} {what}, got {n_x}; {fix}.")


def centre(X: Tensor) -> Tensor:
    """Subtract the mean item: X [..., n, p] -> [..., n, p]."""
    return X - X.mean(dim=-2, keepdim=True)


def _nonconstant(X: Tensor, Xc: Tensor) -> Tensor:
    """Whether each [..., n, p] block varies across its n items (beyond rounding): -> bool [...]."""
    return torch.linalg.matrix_norm(Xc) > CONSTANT_RTOL * torch.linalg.matrix_norm(X)


def linear_cka(X: Tensor, Y: Tensor) -> float:
    """Linear CKA, feature-space formula on centred float64: X [n,p], Y [n,q] -> float in [0, 1]."""
    X, Y = _as_matrix(X, "X"), _as_matrix(Y, "Y")
    _check_pairs(X.shape[0], Y.shape[0])
    Xc, Yc = centre(X), centre(Y)
    if not (_nonconstant(X, Xc) and _nonconstant(Y, Yc)):
        return 0.0
    cross = torch.linalg.matrix_norm(Yc.T @ Xc) ** 2  # ||Y^T X||_F^2
    return float(cross / (torch.linalg.matrix_norm(Xc.T @ Xc) * torch.linalg.matrix_norm(Yc.T @ Yc)))


def centring_matrix(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """H = I - 11^T/n: [n, n]."""
    return torch.eye(n, dtype=dtype) - torch.full((n, n), 1.0 / n, dtype=dtype)


def hsic(K: Tensor, L: Tensor) -> Tensor:
    """Biased HSIC of two Gram matrices [n,n]: tr(K H L H) / (n-1)^2 -> scalar tensor."""
    H = centring_matrix(K.shape[0], K.dtype)
    return torch.trace(K @ H @ L @ H) / (K.shape[0] - 1) ** 2


def linear_cka_gram(X: Tensor, Y: Tensor) -> float:
    """Linear CKA, Gram/HSIC formula: HSIC(K,L)/sqrt(HSIC(K,K) HSIC(L,L)), K = X X^T, L = Y Y^T.

    X [n,p], Y [n,q] -> float. The second formulation, tested against `linear_cka`; the Gram is
    uncentred (H centres it), so features with a huge common offset lose digits here first.
    """
    X, Y = _as_matrix(X, "X"), _as_matrix(Y, "Y")
    _check_pairs(X.shape[0], Y.shape[0])
    if not (_nonconstant(X, centre(X)) and _nonconstant(Y, centre(Y))):
        return 0.0
    K, L = X @ X.T, Y @ Y.T  # [n, n] each, uncentred: H does the centring
    return float(hsic(K, L) / torch.sqrt(hsic(K, K) * hsic(L, L)))


def _grams(X: Tensor) -> tuple[Tensor, Tensor]:
    """Centred Grams of every layer and which layers vary: X [A,n,p] float64 -> K [A,n,n], ok [A] bool."""
    Xc = centre(X)
    return torch.bmm(Xc, Xc.transpose(1, 2)), _nonconstant(X, Xc)


def _cka_from_grams(K: Tensor, ok_k: Tensor, L: Tensor, ok_l: Tensor) -> Tensor:
    """CKA of every layer pair from centred Grams K [A,n,n], L [..., B,n,n] -> [..., A, B] (constant layers: 0)."""
    cross = torch.einsum("aij,...bij->...ab", K, L)  # <K_a, L_b>_F = ||Y_b^T X_a||_F^2
    den = torch.linalg.matrix_norm(K)[:, None] * torch.linalg.matrix_norm(L)[..., None, :]  # [..., A, B]
    ok = ok_k[:, None] & ok_l[None, :]
    return torch.where(ok, cross / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))


def _cka_matrix(X: Tensor, Y: Tensor) -> Tensor:
    """CKA between every layer pair: X [A,n,p], Y [B,n,q] float64 -> [A,B].

    Centre once per layer, one centred Gram per layer ([A,n,n], [B,n,n]; n is small: tokens or
    samples), then all Frobenius products <K_a, L_b> at once. Constant layers give 0.
    """
    return _cka_from_grams(*_grams(X), *_grams(Y))


def _check_layer_pair(xs: Tensor, yt: Tensor) -> tuple[Tensor, Tensor]:
    """Pooled states xs [L+1,N,d], yt [L+1,N,d] -> float64, checked (N >= 4, same L+1, N and d)."""
    xs, yt = validate_states(xs, yt, dtype=torch.float64)
    n_layers, n = xs.shape[0], xs.shape[1]
    _check_pairs(n, yt.shape[1], "samples", "add samples (a batch of at least 4 questions)")
    if n_layers * n * n > MAX_GRAM_ENTRIES:
        raise MetricInputError(
            f"{n} samples x {n_layers} layers are too many for exact CKA (Gram matrices of "
            f"{n_layers * n * n * 8 / 2**30:.1f} GiB); feed MinibatchCKA batches of ~256 samples instead."
        )
    return xs, yt


# ---- aligned cross-layer CKA of one sample --------------------------------------------------

def _aligned_pairs(hs: Tensor, ht: Tensor, path: Tensor) -> tuple[Tensor, Tensor]:
    """The aligned CKA's inputs, checked: X = hs[a, path] [L+1, Tt, d] and Y = ht [L+1, Tt, d], float64."""
    hs, ht = validate_states(hs, ht, dtype=None)  # float64 cast after the gather: [L+1, Tt, d] only
    n_layers, ts, d = hs.shape
    tt = ht.shape[1]
    path = torch.as_tensor(path).detach().to(hs.device)
    if path.dtype.is_floating_point or path.dtype.is_complex or path.dtype == torch.bool:
        raise MetricInputError(f"path must hold integer frame indices, got dtype {path.dtype}.")
    if path.shape not in ((tt,), (n_layers, tt)):
        raise MetricInputError(
            f"path must have shape [Tt] = [{tt}] or [L+1, Tt] = [{n_layers}, {tt}], got {tuple(path.shape)}. "
            "Use alignment_path(...)[layer] for the frames aligned to each text token."
        )
    _check_pairs(tt, tt)
    path = path.long()
    if path.min() < 0 or path.max() >= ts:
        raise MetricInputError(f"path holds frame indices outside [0, Ts={ts}); compute it from these states.")
    if path.ndim == 1:
        X = hs[:, path]  # [L+1, Tt, d]
    else:
        X = hs.gather(1, path.unsqueeze(-1).expand(n_layers, tt, d))  # [L+1, Tt, d]
    return X.to(torch.float64), ht.to(torch.float64)


def cross_layer_cka(hs: Tensor, ht: Tensor, path: Tensor) -> Tensor:
    """Speech-layer x text-layer CKA on aligned pairs: -> [L+1, L+1] float64.

    hs [L+1,Ts,d], ht [L+1,Tt,d], path LongTensor [Tt] (frame i*_j for each token j).
    Entry [a, b] = linear_cka(hs[a, path], ht[b]). A per-layer path [L+1, Tt] is also accepted:
    then speech layer a uses path[a] (the path found at that layer). Needs Tt >= 4.
    """
    return _cka_matrix(*_aligned_pairs(hs, ht, path))


@dataclass(frozen=True)
class CKANull:
    """The shuffled-pairing null of an aligned CKA matrix, each field [L+1, L+1] float64 (numpy).

    mean: mean CKA over the shuffled pairings; low / high: their 2.5th / 97.5th percentiles; p: the
    permutation p-value of the observed CKA, (1 + pairings with CKA >= observed) / (1 + n_perm); n_perm:
    the pairings drawn (every one but the identity, n! - 1, when that is not more than asked: exact p).
    """

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p: np.ndarray
    n_perm: int


def cka_pairing_null(hs: Tensor, ht: Tensor, path: Tensor, n_perm: int = NULL_PERMUTATIONS,
                     seed: int = 0) -> CKANull:
    """What the aligned CKA is without the alignment: each text token paired with the path frame of another
    token (a random permutation of the Tt pairs, never the identity), n_perm times, or every such
    permutation when Tt! - 1 <= n_perm (4 or 5 tokens); arguments as cross_layer_cka. Both sides keep
    their own geometry, so the null holds what CKA reaches for unrelated pairs of these representations
    (large for few tokens in many dimensions); the observed CKA above its null's 97.5th percentile is
    what the frame-token pairing itself carries. -> CKANull, fields [L+1, L+1].
    """
    X, Y = _aligned_pairs(hs, ht, path)
    K, ok_k = _grams(X)
    L, ok_l = _grams(Y)
    observed = _cka_from_grams(K, ok_k, L, ok_l)  # [A, B]
    n = Y.shape[1]
    if math.factorial(n) - 1 <= n_perm:  # few tokens: every other pairing, so p is exact
        perms = torch.tensor(list(itertools.permutations(range(n)))[1:])  # [n! - 1, n], the identity left out
    else:
        g = torch.Generator().manual_seed(seed)
        perms = torch.stack([torch.randperm(n, generator=g) for _ in range(n_perm)])  # [P, n]
        ident = (perms == torch.arange(n)).all(1)
        while ident.any():  # the identity is the observed pairing, not a null draw
            perms[ident] = torch.stack([torch.randperm(n, generator=g) for _ in range(int(ident.sum()))])
            ident = (perms == torch.arange(n)).all(1)
    n_perm = perms.shape[0]
    chunks = []
    for part in perms.split(max(1, NULL_CHUNK_ENTRIES // max(1, L.shape[0] * n * n))):  # bounded [p, B, n, n]
        Lp = L[:, part[:, :, None], part[:, None, :]].transpose(0, 1)  # [p, B, n, n]: rows/cols re-paired
        chunks.append(_cka_from_grams(K, ok_k, Lp, ok_l))
    null = torch.cat(chunks)  # [P, A, B]
    q = torch.quantile(null, torch.tensor([0.025, 0.975], dtype=null.dtype), dim=0)
    p = (1 + (null >= observed - 1e-12).sum(0).to(torch.float64)) / (1 + n_perm)
    return CKANull(mean=null.mean(0).numpy(), low=q[0].numpy(), high=q[1].numpy(), p=p.numpy(), n_perm=n_perm)


def above_null(cka, null_high) -> np.ndarray:
    """Which diagonal layers a (speech layer a vs text layer a) have an aligned CKA [L+1, L+1] above its
    shuffled-pairing null's 97.5th percentile null_high [L+1, L+1] -> bool [L+1]."""
    return np.diagonal(np.asarray(cka, dtype=np.float64)) > np.diagonal(np.asarray(null_high, dtype=np.float64))


# ---- unaligned mean-pooled variant across samples -------------------------------------------

def pooled_cross_layer_cka(xs: Tensor, yt: Tensor) -> Tensor:
    """Exact linear CKA across N samples: pooled speech xs [L+1,N,d], text yt [L+1,N,d] -> [L+1,L+1].

    Row n of both holds the same sample (mean_pool of its states). Meant for small N (Grams N x N).
    """
    xs, yt = _check_layer_pair(xs, yt)
    return _cka_matrix(xs, yt)


def unbiased_hsic(K: Tensor, L: Tensor) -> float:
    """Unbiased HSIC estimator (Song et al. 2012, eq. 5; Nguyen et al. 2021): Grams K, L [n,n] -> float.

    With K~, L~ the Grams with zeroed diagonals:
    HSIC_1 = [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)).
    """
    K, L = _as_matrix(K, "K"), _as_matrix(L, "L")
    n = K.shape[0]
    if K.shape != (n, n) or L.shape != (n, n):
        raise MetricInputError(
            f"unbiased_hsic needs two square Grams of one size, got {tuple(K.shape)} and {tuple(L.shape)}."
        )
    _check_pairs(n, n, "samples", "add samples")
    Kt = K - torch.diag(torch.diagonal(K))  # [n, n] zero diagonal
    Lt = L - torch.diag(torch.diagonal(L))
    trace = (Kt * Lt.T).sum()  # tr(K~ L~)
    sums = Kt.sum() * Lt.sum() / ((n - 1) * (n - 2))
    cross = Kt.sum(dim=0) @ Lt.sum(dim=1)  # 1' K~ L~ 1
    return float((trace + sums - 2.0 / (n - 2) * cross) / (n * (n - 3)))


def _unbiased_hsic_matrix(K: Tensor, L: Tensor) -> Tensor:
    """Unbiased HSIC of every pair of symmetric Grams: K [A,n,n], L [B,n,n] -> [A,B] (batched eq. above)."""
    n = K.shape[-1]
    Kt = K * (1.0 - torch.eye(n, dtype=K.dtype, device=K.device))  # [A, n, n] zero diagonals
    Lt = L * (1.0 - torch.eye(n, dtype=L.dtype, device=L.device))  # [B, n, n]
    trace = Kt.flatten(1) @ Lt.flatten(1).T  # [A, B], tr(K~L~) = <K~, L~>_F for symmetric L~
    rk, rl = Kt.sum(dim=2), Lt.sum(dim=2)  # [A, n], [B, n] row sums
    sums = rk.sum(dim=1)[:, None] * rl.sum(dim=1)[None, :] / ((n - 1) * (n - 2))  # [A, B]
    cross = rk @ rl.T  # [A, B], 1'K~L~1 = (K~1)'(L~1)
    return (trace + sums - 2.0 / (n - 2) * cross) / (n * (n - 3))


class MinibatchCKA:
    """Cross-layer CKA across samples, accumulated over minibatches (Nguyen et al. 2021).

    CKA[a, b] = mean_k HSIC_1(K_a^k, L_b^k) / sqrt(mean_k HSIC_1(K_a^k, K_a^k) * mean_k HSIC_1(L_b^k, L_b^k)),
    with linear Grams K_a^k = xs_k[a] xs_k[a]^T of batch k and the unbiased estimator HSIC_1, so the
    result does not depend on the batch size the way the biased estimator would.
    Usage: `m = MinibatchCKA(); for xs, yt in batches: m.update(xs, yt); m.compute()`.
    """

    def __init__(self) -> None:
        self.n_batches = 0
        self.n_samples = 0
        self._xy: Tensor | None = None  # [L+1, L+1] summed HSIC_1(K_a, L_b)
        self._xx: Tensor | None = None  # [L+1] summed HSIC_1(K_a, K_a)
        self._yy: Tensor | None = None  # [L+1] summed HSIC_1(L_b, L_b)
        self._varies_x: Tensor | None = None  # [L+1] bool: speech layer varied across samples in some batch
        self._varies_y: Tensor | None = None  # [L+1] bool: text layer varied in some batch

    def update(self, xs: Tensor, yt: Tensor) -> None:
        """Add one batch: pooled speech xs [L+1,N_b,d], pooled text yt [L+1,N_b,d], rows = samples, N_b >= 4."""
        xs, yt = _check_layer_pair(xs, yt)
        if self._xy is not None and self._xy.shape[0] != xs.shape[0]:
            raise MetricInputError(
                f"This batch has {xs.shape[0]} layers but earlier batches had {self._xy.shape[0]}. "
                "Use one model for all batches, or start a new MinibatchCKA."
            )
        xc, yc = centre(xs), centre(yt)  # HSIC_1 is translation invariant; centring only helps rounding
        K = torch.bmm(xc, xc.transpose(1, 2))  # [L+1, N_b, N_b]
        L = torch.bmm(yc, yc.transpose(1, 2))  # [L+1, N_b, N_b]
        xy = _unbiased_hsic_matrix(K, L).cpu()  # [L+1, L+1]
        xx = torch.diagonal(_unbiased_hsic_matrix(K, K)).cpu()  # [L+1]; the full matrix is cheap here
        yy = torch.diagonal(_unbiased_hsic_matrix(L, L)).cpu()  # [L+1]
        vx, vy = _nonconstant(xs, xc).cpu(), _nonconstant(yt, yc).cpu()  # [L+1] each
        if self._xy is None:
            self._xy, self._xx, self._yy, self._varies_x, self._varies_y = xy, xx, yy, vx, vy
        else:
            self._xy, self._xx, self._yy = self._xy + xy, self._xx + xx, self._yy + yy
            self._varies_x, self._varies_y = self._varies_x | vx, self._varies_y | vy
        self.n_batches += 1
        self.n_samples += xs.shape[1]

    def compute(self) -> Tensor:
        """Minibatch CKA [L+1 speech layers, L+1 text layers] float64 (CPU).

        0 where a layer never varied across samples or its mean self-HSIC is not > 0 (possible
        with tiny batches, since HSIC_1 is unbiased but not non-negative).
        """
        if self._xy is None:
            raise MetricInputError("MinibatchCKA has no batches yet; call update(xs, yt) at least once.")
        xy, xx, yy = self._xy / self.n_batches, self._xx / self.n_batches, self._yy / self.n_batches
        ok = ((xx > 0) & self._varies_x)[:, None] & ((yy > 0) & self._varies_y)[None, :]  # [L+1, L+1]
        den = torch.sqrt(torch.where(ok, xx[:, None] * yy[None, :], torch.ones_like(xy)))
        return torch.where(ok, xy / den, torch.zeros_like(xy))
