"""Intervention operations (DESIGN §3): one pure tensor function per formula, and the one table of them.

For speech frames s [..., n, d] (rows of the speech query span at layer ℓ) and, per frame, the
text target t [n, d] it is moved towards:

    angle_projection          s' = ‖s‖ · t/‖t‖                  direction of t, norm of s
    length_normalization      s' = s · ‖t‖/‖s‖                  norm of t, direction of s
    statistical_calibration   s' = (s − μ_s)/σ_s · σ_t + μ_t    per dimension; μ, σ [d] over the spans

Conventions: the math runs in float32 (the caller casts once and casts back); eps-guards:
angle keeps s when ‖t‖ = 0, length keeps s when ‖s‖ = 0, a dimension with σ_s <= SIGMA_EPS
(constant over the span) maps onto μ_t. μ, σ are per-dimension mean and population std (correction 0)
over the whole unedited speech span and text span at layer ℓ (`span_statistics`).

OPERATIONS is the registry the planner (which inputs to prepare), the hooks (which formula to
apply), the CLI (the grammar's op names) and the Interventions page (choices, formulas) read.
A new operation = one function here + one line in OPERATIONS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor

SIGMA_EPS = 1e-6  # σ_s at or below this: calibrate treats the dimension as constant (it maps onto μ_t)

Stats = tuple[Tensor, Tensor, Tensor, Tensor]  # (μ_s, σ_s, μ_t, σ_t), [d] each


# =============================================================================== the formulas
def angle_projection(s: Tensor, t: Tensor) -> Tensor:
    """s' = ‖s‖ · t/‖t‖: s [..., n, d], t [n, d] -> [..., n, d] (a row with ‖t‖ = 0 keeps s)."""
    norm_s = torch.linalg.vector_norm(s, dim=-1, keepdim=True)  # [..., n, 1]
    norm_t = torch.linalg.vector_norm(t, dim=-1, keepdim=True)  # [n, 1]
    edited = norm_s * t / torch.where(norm_t > 0, norm_t, torch.ones_like(norm_t))  # [..., n, d]
    return torch.where(norm_t > 0, edited, s)


def length_normalization(s: Tensor, t: Tensor) -> Tensor:
    """s' = s · ‖t‖/‖s‖: s [..., n, d], t [n, d] -> [..., n, d] (a row with ‖s‖ = 0 stays 0)."""
    norm_s = torch.linalg.vector_norm(s, dim=-1, keepdim=True)  # [..., n, 1]
    norm_t = torch.linalg.vector_norm(t, dim=-1, keepdim=True)  # [n, 1]
    edited = s * norm_t / torch.where(norm_s > 0, norm_s, torch.ones_like(norm_s))  # [..., n, d]
    return torch.where(norm_s > 0, edited, s)


def statistical_calibration(s: Tensor, mu_s: Tensor, sd_s: Tensor, mu_t: Tensor, sd_t: Tensor) -> Tensor:
    """s' = (s − μ_s)/σ_s · σ_t + μ_t per dimension: s [..., n, d], μ/σ [d] each -> [..., n, d].

    A dimension with σ_s <= SIGMA_EPS (constant over the span) maps onto μ_t whatever the live s (which can
    differ from μ_s after an earlier edit of a composed condition, or by batched rounding); no 1/eps blow-up.
    """
    constant = sd_s <= SIGMA_EPS  # [d]
    z = (s - mu_s) / torch.where(constant, torch.ones_like(sd_s), sd_s)  # [..., n, d] standardized
    return torch.where(constant, mu_t.expand_as(z), z * sd_t + mu_t)


def span_statistics(hs: Tensor, ht: Tensor) -> Stats:
    """Calibration statistics: speech span hs [Ts, d], text span ht [Tt, d] -> (μ_s, σ_s, μ_t, σ_t), [d] each."""
    return hs.mean(0), hs.std(0, correction=0), ht.mean(0), ht.std(0, correction=0)


# =============================================================================== the registry
@dataclass(frozen=True)
class Operation:
    """One registered edit: its formula function and what the planner prepares for it."""

    name: str  # the op in the grammar ('angle' in 'angle:bottom3@0')
    fn: Callable[..., Tensor]  # the formula: fn(s, t) for inputs "targets", fn(s, μ_s, σ_s, μ_t, σ_t) for "statistics"
    # per-frame text targets t̃ [n, d] (plan.frame_target), or span statistics [d] x 4
    inputs: Literal["targets", "statistics"]
    formula: str  # shown in the CLI help and the page
    takes: str  # what the edit takes from the text states (one phrase)

    @property
    def title(self) -> str:
        return self.name.capitalize()

    def __call__(self, s: Tensor, targets: Tensor | None = None, stats: Stats | None = None) -> Tensor:
        """Apply the formula to s [..., n, d] with the inputs the planner prepared."""
        if self.inputs == "targets":
            assert targets is not None, f"{self.name} needs per-frame targets"
            return self.fn(s, targets)
        assert stats is not None, f"{self.name} needs span statistics"
        return self.fn(s, *stats)


OPERATIONS: dict[str, Operation] = {op.name: op for op in (
    Operation("angle", angle_projection, "targets", "s′ = ‖s‖·t/‖t‖", "direction of the text state"),
    Operation("length", length_normalization, "targets", "s′ = s·‖t‖/‖s‖", "norm of the text state"),
    Operation("calibrate", statistical_calibration, "statistics", "s′ = (s − μₛ)/σₛ·σₜ + μₜ",
              "per-dimension statistics of the spans"),
)}
OPS: tuple[str, ...] = tuple(OPERATIONS)


def operation(name: str) -> Operation:
    """The registered Operation called `name` (KeyError names the known ones)."""
    try:
        return OPERATIONS[name]
    except KeyError:
        raise KeyError(f"unknown intervention op {name!r}; registered: {OPS}") from None


def ops_help() -> str:
    """One line per registered op: 'angle: s′ = ‖s‖·t/‖t‖ (direction of the text state)'."""
    return "\n".join(f"{op.name}: {op.formula} ({op.takes})" for op in OPERATIONS.values())
