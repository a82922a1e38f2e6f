"""Stability of the cross-layer CKA across analysis configurations (seed 000: "the alignment band is
structurally stable across analysis configurations").

A configuration (`CKAConfig`) says how the CKA matrix [L+1 speech layers a, L+1 text layers b] of a
sample set is computed:
  variant "aligned"  per sample, linear CKA between Hs[a, i*_j] and Ht[b, j] along the path given by
                     the path method (argmax | dtw), the metric (cosine | distance) and the path layer
                     (an index; "middle" = L//2; "own" = speech layer a uses its own layer's path);
                     then the mean over the samples where it is defined (Tt >= 4);
  variant "pooled"   linear CKA across samples between the mean-pooled states (no alignment; N >= 4).
How alike two configurations' matrices M, M' are (`stability_summary`):
  correlation     Pearson r over all (L+1)^2 entries                                     [C, C]
  band            b*(a) = argmax_b M[a, b], the text layer speech layer a resembles most  [C, L+1]
  band agreement  share of speech layers a with |b*(a) - b*_ref(a)| <= tolerance          [C]
  band shift      mean over a of |b*(a) - b*_ref(a)| (layers)                             [C]
Conventions: ties in b* go to the lowest text layer; r with a constant matrix is 0.0 (1.0 on the
diagonal), never NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lsl_core.errors import MetricInputError
from lsl_core.metrics.cka import MIN_PAIRS, cross_layer_cka, path_layer, pooled_cross_layer_cka
from lsl_core.metrics.sequence import mean_pool, validate_states
from lsl_core.metrics.tokenwise import (METRICS, PATH_METHODS, alignment_path, token_cosine_matrix,
                                        token_distance_matrix)

Variant = Literal["aligned", "pooled"]
VARIANTS: tuple[str, ...] = ("aligned", "pooled")
PathLayer = int | Literal["middle", "own"]


@dataclass(frozen=True)
class CKAConfig:
    """One way to compute the cross-layer CKA of a sample set (see the module docstring)."""

    variant: Variant = "aligned"  # aligned pairs along a path (per sample), or pooled means across samples
    path: Literal["argmax", "dtw"] = "argmax"  # how frames are paired with tokens (aligned only)
    metric: Literal["cosine", "distance"] = "cosine"  # the token matrix the path is found on (aligned only)
    path_layer: PathLayer = "middle"  # layer whose path pairs frames with tokens: index, "middle" (L//2), "own"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"CKAConfig.variant must be 'aligned' or 'pooled', got {self.variant!r}")
        if self.path not in PATH_METHODS:
            raise ValueError(f"CKAConfig.path must be 'argmax' or 'dtw', got {self.path!r}")
        if self.metric not in METRICS:
            raise ValueError(f"CKAConfig.metric must be 'cosine' or 'distance', got {self.metric!r}")
        ok_layer = self.path_layer in ("middle", "own") or (
            isinstance(self.path_layer, int) and not isinstance(self.path_layer, bool) and self.path_layer >= 0)
        if not ok_layer:
            raise ValueError(f"CKAConfig.path_layer must be a layer index >= 0, 'middle' or 'own', "
                             f"got {self.path_layer!r}")

    def label(self) -> str:
        """Short display name, unique per configuration: 'dtw · cosine · path@middle', 'pooled (unaligned)'."""
        if self.variant == "pooled":
            return "pooled (unaligned)"
        where = "own layer" if self.path_layer == "own" else f"path@{self.path_layer}"
        return f"{self.path} · {self.metric} · {where}"

    def layer_index(self, n_layers: int) -> int | None:
        """The path layer for states with n_layers = L+1 entries (None = each speech layer's own path)."""
        if self.path_layer == "own":
            return None
        return path_layer(n_layers, -1 if self.path_layer == "middle" else int(self.path_layer))  # a missing one: error


def default_configs(num_layers: int) -> tuple[CKAConfig, ...]:
    """The grid the CKA page compares, reference first: path method x metric at the middle layer, both
    methods with each layer's own path, the argmax path at the quarter layers, and the pooled variant."""
    L = num_layers
    out = [CKAConfig(path=p, metric=m) for p in PATH_METHODS for m in METRICS]
    out += [CKAConfig(path=p, path_layer="own") for p in PATH_METHODS]
    out += [CKAConfig(path_layer=layer) for layer in sorted({L // 4, (3 * L) // 4} - {L // 2})]
    out.append(CKAConfig(variant="pooled"))
    return tuple(out)


def _check_unique(configs: Sequence[CKAConfig]) -> list[CKAConfig]:
    configs = list(configs)
    if not configs:
        raise MetricInputError("Give at least one CKAConfig to compare.")
    labels = [c.label() for c in configs]
    if len(set(labels)) != len(labels):
        raise MetricInputError(f"Configurations repeat: {labels}; give each one once.")
    return configs


def aligned_cka_matrices(hs: Tensor, ht: Tensor, configs: Sequence[CKAConfig]) -> dict[str, Tensor]:
    """Aligned CKA of one sample under each aligned config: hs [L+1,Ts,d], ht [L+1,Tt,d] -> {label: [L+1,L+1]}.

    Each (metric, path method) path [L+1, Tt] is computed once and shared by the configs that use it.
    Raises MetricInputError (from `cross_layer_cka`) when Tt < 4.
    """
    hs, ht = validate_states(hs, ht)
    n_layers = hs.shape[0]
    matrices: dict[str, Tensor] = {}
    paths: dict[tuple[str, str], Tensor] = {}
    tokens: dict[str, Tensor] = {}
    for c in _check_unique(configs):
        if c.variant != "aligned":
            continue
        if c.metric not in tokens:
            fn = token_cosine_matrix if c.metric == "cosine" else token_distance_matrix
            tokens[c.metric] = fn(hs, ht)  # [L+1, Ts, Tt]
        if (c.metric, c.path) not in paths:
            paths[(c.metric, c.path)] = alignment_path(tokens[c.metric], c.metric, c.path)  # [L+1, Tt]
        path = paths[(c.metric, c.path)]
        layer = c.layer_index(n_layers)
        matrices[c.label()] = cross_layer_cka(hs, ht, path if layer is None else path[layer])  # [L+1, L+1]
    return matrices


class StabilityAccumulator:
    """CKA matrices of a sample set under several configurations, fed one sample at a time.

    Usage: `acc = StabilityAccumulator(configs); for hs, ht in samples: acc.update(hs, ht); acc.matrices()`.
    Keeps only running sums [L+1, L+1] per aligned config and the pooled means [L+1, d] per sample.
    """

    def __init__(self, configs: Sequence[CKAConfig]) -> None:
        self.configs = _check_unique(configs)
        self.n_samples = 0
        self._sums: dict[str, Tensor] = {}  # label -> summed aligned CKA [L+1, L+1] float64
        self._counts: dict[str, int] = {}  # label -> samples where aligned CKA was defined
        self._pooled_s: list[Tensor] = []  # [L+1, d] per sample
        self._pooled_t: list[Tensor] = []
        self.notes: list[str] = []

    def update(self, hs: Tensor, ht: Tensor, sample_id: str = "") -> None:
        """Add one sample's states hs [L+1,Ts,d], ht [L+1,Tt,d]."""
        hs, ht = validate_states(hs, ht)
        if self._pooled_s and self._pooled_s[0].shape != (hs.shape[0], hs.shape[2]):
            raise MetricInputError("All samples must come from one model (same L+1 and width d).")
        self.n_samples += 1
        if any(c.variant == "aligned" for c in self.configs):
            try:
                for label, m in aligned_cka_matrices(hs, ht, self.configs).items():
                    self._sums[label] = m if label not in self._sums else self._sums[label] + m
                    self._counts[label] = self._counts.get(label, 0) + 1
            except MetricInputError as exc:
                self.notes.append(f"{sample_id or f'sample {self.n_samples}'}: aligned CKA skipped ({exc})")
        self._pooled_s.append(mean_pool(hs).to(torch.float64))  # [L+1, d]
        self._pooled_t.append(mean_pool(ht).to(torch.float64))

    def matrices(self) -> dict[str, np.ndarray | None]:
        """label -> CKA matrix [L+1, L+1] (mean over samples for aligned; across samples for pooled),
        None where undefined (see `notes`)."""
        out: dict[str, np.ndarray | None] = {}
        for c in self.configs:
            label = c.label()
            if c.variant == "aligned":
                n = self._counts.get(label, 0)
                out[label] = (self._sums[label] / n).numpy() if n else None
                continue
            if len(self._pooled_s) < MIN_PAIRS:
                out[label] = None
                note = f"pooled CKA needs at least {MIN_PAIRS} samples, got {len(self._pooled_s)}"
                if note not in self.notes:
                    self.notes.append(note)
                continue
            xs = torch.stack(self._pooled_s, dim=1)  # [L+1, N, d]
            yt = torch.stack(self._pooled_t, dim=1)  # [L+1, N, d]
            out[label] = pooled_cross_layer_cka(xs, yt).numpy()
        return out


# ---- how alike the matrices are ------------------------------------------------------------------

def matrix_correlation(M: np.ndarray, N: np.ndarray) -> float:
    """Pearson r between all entries of two matrices of one shape; 0.0 if either is constant."""
    x, y = np.asarray(M, np.float64).ravel(), np.asarray(N, np.float64).ravel()
    if x.shape != y.shape:
        raise MetricInputError(f"CKA matrices differ in shape: {np.shape(M)} vs {np.shape(N)}; use one model.")
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc @ xc) * (yc @ yc))
    return float(np.clip(xc @ yc / den, -1.0, 1.0)) if den > 0 else 0.0


def band_location(M: np.ndarray) -> np.ndarray:
    """b*(a) = argmax_b M[a, b] for each speech layer a: [L+1, L+1] -> int [L+1] (ties: lowest b)."""
    M = np.asarray(M, np.float64)
    if M.ndim != 2:
        raise MetricInputError(f"A CKA matrix must be 2-D [L+1, L+1], got shape {M.shape}.")
    return M.argmax(axis=1)


def band_agreement(M: np.ndarray, N: np.ndarray, tolerance: int = 0) -> float:
    """Share of speech layers a whose bands agree, |b*_M(a) - b*_N(a)| <= tolerance: [L+1, L+1] x 2 -> [0, 1]."""
    bm, bn = band_location(M), band_location(N)
    if bm.shape != bn.shape:
        raise MetricInputError(f"CKA matrices differ in shape: {np.shape(M)} vs {np.shape(N)}; use one model.")
    return float((np.abs(bm - bn) <= tolerance).mean())


@dataclass(frozen=True, eq=False)
class StabilitySummary:
    """How alike the CKA matrices of several configurations are (C configurations with a matrix)."""

    labels: tuple[str, ...]  # [C], reference first
    correlation: np.ndarray  # [C, C] Pearson r of the matrices' entries
    band: np.ndarray  # [C, L+1] int, argmax text layer per speech layer
    band_agreement: np.ndarray  # [C] share of speech layers within `tolerance` layers of the reference band
    band_shift: np.ndarray  # [C] mean |b* - b*_ref| in layers
    tolerance: int
    missing: tuple[str, ...] = ()  # configurations without a matrix (undefined for this set)

    @property
    def reference(self) -> str:
        return self.labels[0]

    def table(self):
        """One row per configuration: r with the reference, band agreement, mean band shift, min r with any other."""
        import pandas as pd

        C = len(self.labels)
        others = np.where(np.eye(C, dtype=bool), np.inf, self.correlation)
        return pd.DataFrame({
            "configuration": list(self.labels),
            "r_with_reference": self.correlation[0],
            f"band_agreement_pm{self.tolerance}": self.band_agreement,
            "mean_band_shift_layers": self.band_shift,
            "min_r_with_others": others.min(axis=1) if C > 1 else np.ones(C),
        })


def stability_summary(matrices: Mapping[str, np.ndarray | None], reference: str | None = None,
                      tolerance: int = 1) -> StabilitySummary:
    """Compare CKA matrices {label: [L+1, L+1] or None}; the reference (default: the first with a
    matrix) is listed first. tolerance: band locations within this many layers count as agreeing."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise MetricInputError(f"tolerance must be a non-negative number of layers, got {tolerance!r}.")
    have = [k for k, v in matrices.items() if v is not None]
    missing = tuple(k for k, v in matrices.items() if v is None)
    if not have:
        raise MetricInputError("No configuration produced a CKA matrix; use questions with at least 4 tokens "
                               "and at least 4 samples.")
    if reference is not None and reference not in have:
        raise MetricInputError(f"Reference {reference!r} has no CKA matrix; choose one of {have}.")
    ref = reference or have[0]
    labels = [ref, *[k for k in have if k != ref]]
    mats = [np.asarray(matrices[k], np.float64) for k in labels]
    C = len(labels)
    corr = np.eye(C)
    for p in range(C):
        for q in range(p + 1, C):
            corr[p, q] = corr[q, p] = matrix_correlation(mats[p], mats[q])
    band = np.stack([band_location(M) for M in mats])  # [C, L+1]
    shift = np.abs(band - band[0])  # [C, L+1]
    return StabilitySummary(labels=tuple(labels), correlation=corr, band=band,
                            band_agreement=(shift <= tolerance).mean(axis=1), band_shift=shift.mean(axis=1),
                            tolerance=tolerance, missing=missing)
