"""Padding rows of prompt embeddings into one batch: the single rule that generation and training share.

    generation (left padding):  [pad .. pad | prefix | query | suffix] -> new tokens
    training   (right padding): [prefix | query | suffix | response <|im_end|> | pad .. pad]

Padded positions are masked out of attention; position ids follow the attention mask (HF generate
derives them from the mask; the training forward passes them explicitly), so padding never changes
a real position's state. Pure tensor code: nothing here knows the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100  # label value that the causal-LM loss skips


@dataclass
class PaddedBatch:
    """A batch of prompts (+ optional labels) as embeddings."""

    inputs_embeds: torch.Tensor  # [B, T, d]
    attention_mask: torch.Tensor  # [B, T] 1 = real position, 0 = padding
    position_ids: torch.Tensor  # [B, T] 0.. over real positions, 0 on padding
    labels: torch.Tensor | None = None  # [B, T] token ids on response positions, IGNORE_INDEX elsewhere


def stack_rows(rows: list[torch.Tensor], pad_vec: torch.Tensor, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [T_i, d] -> ([B, T, d], mask [B, T]) padded with pad_vec [1, d] on the left or right."""
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


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Attention mask [B, T] -> position ids [B, T] counting real positions only (0 on padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0) * mask


def pad_batch(rows: list[torch.Tensor], pad_vec: torch.Tensor, left: bool) -> PaddedBatch:
    """Rows [T_i, d] -> PaddedBatch (left padding for generation, right padding for training)."""
    x, mask = stack_rows(rows, pad_vec, left)
    return PaddedBatch(x, mask, position_ids(mask))
