"""The speech adaptor: stack N consecutive encoder frames, then Linear -> ReLU -> Linear.

Encoder frames [Te, d_enc] (20 ms each for Whisper) become LLM-width speech embeddings
[Ts, d] with Ts = ceil(Te / N); a trailing partial group is zero-padded so no frame is lost.

Optionally (`context` > 0, off by default) pre-norm transformer blocks run between the two
linear layers, each stacked frame attending to the frames within CONTEXT_FRAMES of it (a local
window, so a speech embedding still describes its own 100 ms plus its neighbourhood):

    h = fc1(stack(x)); h = h + attn(LN(h)); h = h + mlp(LN(h)) (x context); out = fc2(relu(h))
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


CONTEXT_FRAMES = 10  # context blocks: a stacked frame attends to frames at most this many steps away (±1 s at 100 ms)
CONTEXT_HEADS = 8  # attention heads of a context block


@dataclass(frozen=True)
class AdaptorConfig:
    enc_dim: int  # width of the speech encoder output (384 for Whisper tiny)
    llm_dim: int  # width of the LLM embeddings (576 for SmolLM2-135M)
    stack: int = 5  # N frames stacked: 5 x 20 ms = one 100 ms speech embedding
    hidden: int | None = None  # hidden width of the 2-layer MLP; None -> llm_dim (as in the seed paper)
    context: int = 0  # local self-attention blocks between the two linear layers (0 = the plain MLP adaptor)

    def __post_init__(self) -> None:
        for name in ("enc_dim", "llm_dim", "stack"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"AdaptorConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.hidden is not None and self.hidden <= 0:
            raise ValueError(f"AdaptorConfig.hidden must be positive or None, got {self.hidden!r}")
        if int(self.context) < 0:
            raise ValueError(f"AdaptorConfig.context must be >= 0, got {self.context!r}")
        if self.context and (self.hidden or self.llm_dim) % CONTEXT_HEADS:
            raise ValueError(f"AdaptorConfig: a context adaptor needs a hidden width divisible by {CONTEXT_HEADS} "
                             f"attention heads, got {self.hidden or self.llm_dim}")

    def to_dict(self) -> dict:
        return asdict(self)


class ContextBlock(nn.Module):
    """Pre-norm transformer block over stacked frames with a local attention window.

    Its two output projections start at zero, so a fresh block is the identity and a context
    adaptor starts as the plain MLP adaptor.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = CONTEXT_HEADS
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.ff1 = nn.Linear(width, 2 * width)
        self.ff2 = nn.Linear(2 * width, width)
        for lin in (self.proj, self.ff2):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """[B, Ts, w] -> [B, Ts, w]; frame i sees frames j with |i - j| <= CONTEXT_FRAMES."""
        B, T, w = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(B, T, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        idx = torch.arange(T, device=h.device)
        near = (idx[:, None] - idx[None, :]).abs() <= CONTEXT_FRAMES  # [Ts, Ts] True = may attend
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=near)  # [B, heads, Ts, w/heads]
        h = h + self.proj(a.transpose(1, 2).reshape(B, T, w))
        return h + self.ff2(F.gelu(self.ff1(self.norm2(h))))


class Adaptor(nn.Module):
    """Frame stacking + two linear layers into the LLM width (+ optional context blocks between them)."""

    def __init__(self, cfg: AdaptorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        hidden = cfg.hidden or cfg.llm_dim
        self.fc1 = nn.Linear(cfg.enc_dim * cfg.stack, hidden)
        self.fc2 = nn.Linear(hidden, cfg.llm_dim)
        self.context = nn.ModuleList(ContextBlock(hidden) for _ in range(cfg.context))  # after fc1/fc2: same init

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
        h = self.fc1(self.stack_frames(x))  # [B, Ts, hidden]
        for block in self.context:
            h = block(h)
        return self.fc2(F.relu(h))


def with_context(adaptor: Adaptor, context: int, seed: int = 0) -> Adaptor:
    """`adaptor` with `context` blocks: its own weights and blocks kept, the added blocks fresh (seeded; the
    identity), so the result computes exactly what `adaptor` did. context must be >= the blocks it has."""
    have = adaptor.cfg.context
    if context < have:
        raise ValueError(f"with_context: the adaptor has {have} context blocks; cannot keep them in {context}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        grown = Adaptor(dataclasses.replace(adaptor.cfg, context=context))
    grown = grown.to(adaptor.fc1.weight.device, adaptor.fc1.weight.dtype)
    grown.load_state_dict(adaptor.state_dict(), strict=False)  # fc1, fc2 and the first `have` blocks
    return grown
