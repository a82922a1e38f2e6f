"""The speech adaptor: frame stacking + two linear layers, and its optional local-attention context blocks,
against hand-written slow references."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lsl_core.model.adaptor import CONTEXT_FRAMES, CONTEXT_HEADS, Adaptor, AdaptorConfig, ContextBlock, with_context


def _randomise(module: torch.nn.Module, seed: int = 1) -> None:
    """Give every parameter random values (a fresh block's zero output projections would hide the attention)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _block_reference(block: ContextBlock, h: torch.Tensor) -> torch.Tensor:
    """One frame at a time, one head at a time, in plain loops: [Ts, w] -> [Ts, w]."""
    T, w = h.shape
    heads, dh = CONTEXT_HEADS, w // CONTEXT_HEADS
    x = F.layer_norm(h, (w,), block.norm1.weight, block.norm1.bias)
    qkv = x @ block.qkv.weight.T + block.qkv.bias  # [Ts, 3w]
    q, k, v = qkv[:, :w], qkv[:, w:2 * w], qkv[:, 2 * w:]
    att = torch.zeros(T, w)
    for i in range(T):
        near = [j for j in range(T) if abs(i - j) <= CONTEXT_FRAMES]
        for hd in range(heads):
            s = slice(hd * dh, (hd + 1) * dh)
            scores = torch.stack([q[i, s] @ k[j, s] / math.sqrt(dh) for j in near])
            weights = torch.softmax(scores, dim=0)
            att[i, s] = sum(wt * v[j, s] for wt, j in zip(weights, near))
    h = h + att @ block.proj.weight.T + block.proj.bias
    y = F.layer_norm(h, (w,), block.norm2.weight, block.norm2.bias)
    return h + F.gelu(y @ block.ff1.weight.T + block.ff1.bias) @ block.ff2.weight.T + block.ff2.bias


def test_plain_adaptor_is_stacking_then_two_linear_layers():
    torch.manual_seed(0)
    ad = Adaptor(AdaptorConfig(enc_dim=3, llm_dim=8, stack=2, hidden=5))
    x = torch.randn(1, 5, 3)  # 5 frames -> 3 stacked frames, the last one half zero
    stacked = torch.stack([torch.cat([x[0, 0], x[0, 1]]), torch.cat([x[0, 2], x[0, 3]]),
                           torch.cat([x[0, 4], torch.zeros(3)])])  # [3, 6]
    want = F.relu(stacked @ ad.fc1.weight.T + ad.fc1.bias) @ ad.fc2.weight.T + ad.fc2.bias
    torch.testing.assert_close(ad(x)[0], want)
    assert list(ad.state_dict()) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]  # files as before


def test_a_fresh_context_adaptor_is_the_plain_adaptor_of_its_seed():
    """Zero output projections: the blocks start as the identity, and fc1/fc2 draw the same initial weights."""
    torch.manual_seed(0)
    plain = Adaptor(AdaptorConfig(enc_dim=16, llm_dim=32, stack=5))
    torch.manual_seed(0)
    ctx = Adaptor(AdaptorConfig(enc_dim=16, llm_dim=32, stack=5, context=2))
    x = torch.randn(2, 47, 16)
    torch.testing.assert_close(ctx(x), plain(x), rtol=0, atol=0)
    assert len(ctx.context) == 2
    assert sum(p.numel() for p in ctx.parameters()) > sum(p.numel() for p in plain.parameters())


def test_context_block_equals_a_loop_reference_with_a_local_window():
    block = ContextBlock(16)
    _randomise(block)
    h = torch.randn(1, 2 * CONTEXT_FRAMES + 7, 16)
    with torch.no_grad():
        torch.testing.assert_close(block(h)[0], _block_reference(block, h[0]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("blocks", [1, 2])
def test_a_frame_reaches_only_the_frames_within_the_window_of_each_block(blocks):
    """Changing the first stacked frame changes outputs up to blocks x CONTEXT_FRAMES frames away, no further."""
    torch.manual_seed(0)
    ad = Adaptor(AdaptorConfig(enc_dim=4, llm_dim=16, stack=2, context=blocks))
    _randomise(ad)
    T = 2 * (blocks * CONTEXT_FRAMES + 5)  # encoder frames -> T/2 stacked frames
    x = torch.randn(1, T, 4)
    y = x.clone()
    y[0, 0] += 1.0  # encoder frame 0 -> stacked frame 0
    with torch.no_grad():
        changed = (ad(x) - ad(y))[0].abs().amax(-1) > 1e-6  # [Ts]
    reach = blocks * CONTEXT_FRAMES
    assert changed[: reach + 1].all() and not changed[reach + 1:].any()


def test_clips_are_adapted_independently_of_their_batch():
    torch.manual_seed(0)
    ad = Adaptor(AdaptorConfig(enc_dim=4, llm_dim=16, stack=2, context=1))
    _randomise(ad)
    x = torch.randn(3, 30, 4)
    with torch.no_grad():
        torch.testing.assert_close(ad(x)[1:2], ad(x[1:2]), rtol=1e-5, atol=1e-6)


def test_with_context_keeps_what_the_adaptor_computes_and_seeds_the_new_blocks():
    torch.manual_seed(0)
    one = Adaptor(AdaptorConfig(enc_dim=4, llm_dim=16, stack=2, context=1))
    _randomise(one)
    x = torch.randn(1, 30, 4)
    state = torch.random.get_rng_state()
    three, again = with_context(one, 3, seed=5), with_context(one, 3, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    assert three.cfg.context == 3 and torch.equal(three.context[0].qkv.weight, one.context[0].qkv.weight)
    torch.testing.assert_close(three.context[2].qkv.weight, again.context[2].qkv.weight, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(three(x), one(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="cannot keep them in 0"):
        with_context(one, 0)


def test_adaptor_config_names_the_bad_field():
    with pytest.raises(ValueError, match="context must be >= 0"):
        AdaptorConfig(enc_dim=4, llm_dim=16, context=-1)
    with pytest.raises(ValueError, match="divisible by 8"):
        AdaptorConfig(enc_dim=4, llm_dim=12, context=1)
    AdaptorConfig(enc_dim=4, llm_dim=12)  # a plain adaptor has no head constraint
