"""The speech adaptor: stack N consecutive encoder frames, then Linear -> ReLU -> Linear.

Encoder frames [Te, d_enc] (20 ms each for Whisper) become LLM-width speech embeddings
[Ts, d] with Ts = ceil(Te / N); a trailing partial group is zero-padded so no frame is lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AdaptorConfig:
    enc_dim: int  # width of the speech encoder output (384 for Whisper tiny)
    llm_dim: int  # width of the LLM embeddings (576 for SmolLM2-135M)
    stack: int = 5  # N frames stacked: 5 x 20 ms = one 100 ms speech embedding
    hidden: int | None = None  # hidden width of the 2-layer MLP; None -> llm_dim (as in the seed paper)

    def __post_init__(self) -> None:
        for name in ("enc_dim", "llm_dim", "stack"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"AdaptorConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.hidden is not None and self.hidden <= 0:
            raise ValueError(f"AdaptorConfig.hidden must be positive or None, got {self.hidden!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class Adaptor(nn.Module):
    """Frame stacking + two linear layers into the LLM width."""

    def __init__(self, cfg: AdaptorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = cfg.hidden or cfg.llm_dim
        self.fc1 = nn.Linear(cfg.enc_dim * cfg.stack, hidden)
        self.fc2 = nn.Linear(hidden, cfg.llm_dim)

    def stack_frames(self, x: torch.Tensor) -> torch.Tensor:
        """[B, Te, d_enc] -> [B, ceil(Te/N), N*d_enc] (zero-pads a partial last group)."""
        B, Te, C = x.shape
        N = self.cfg.stack
        pad = (-Te) % N
        if pad:
            x = F.pad(x, (0, 0, 0, pad))  # [B, Te+pad, C]
        return x.reshape(B, (Te + pad) // N, N * C)  # [B, Ts, N*C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder states [B, Te, d_enc] -> speech embeddings [B, Ts, d]."""
        assert x.shape[-1] == self.cfg.enc_dim, f"adaptor expects width {self.cfg.enc_dim}, got {x.shape[-1]}"
        return self.fc2(F.relu(self.fc1(self.stack_frames(x))))
