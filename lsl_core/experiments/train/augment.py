"""SpecAugment-style masking of cached encoder states, for training only.

The encoder is frozen and its states are cached once (corpus.py), so the usual waveform/spectrogram augmentation
would need a fresh encoder pass per step. Masking the cached states instead is free: per training clip,
`time_masks` spans of up to `time_width` frames (20 ms each) are replaced by the clip's mean frame, and
`channel_masks` bands of up to `channel_width` channels are zeroed. The masks of a clip depend only on
(seed, step, position in the batch), so a resumed run draws the same masks (trainer: step-indexed).
"""

from __future__ import annotations

import torch


def mask_generator(seed: int, step: int, slot: int) -> torch.Generator:
    """The RNG of the `slot`-th clip of 0-based optimizer step `step` (independent of every other stream)."""
    return torch.Generator().manual_seed(((seed * 1_000_003 + step) * 257 + slot) * 2 + 1)


def mask_states(states: torch.Tensor, time_masks: int, time_width: int, channel_masks: int, channel_width: int,
                gen: torch.Generator) -> torch.Tensor:
    """Encoder states [Te, d_enc] -> a masked copy [Te, d_enc] (the input is never changed).

    Time masks: each picks a width w ~ U{0..time_width} (capped at Te // 5, so no mask hides most of a short
    clip) and a start ~ U{0..Te-w}; the span becomes the clip's mean frame. Channel masks: width ~
    U{0..channel_width}, start ~ U{0..d_enc-w}; the band becomes 0. Masks may overlap.
    """
    Te, d = states.shape
    out = states.clone()
    mean = states.float().mean(0).to(states.dtype)  # [d_enc]
    cap = min(time_width, Te // 5)
    for _ in range(time_masks):
        w = int(torch.randint(0, cap + 1, (1,), generator=gen))
        t0 = int(torch.randint(0, Te - w + 1, (1,), generator=gen))
        out[t0:t0 + w] = mean
    for _ in range(channel_masks):
        w = int(torch.randint(0, min(channel_width, d) + 1, (1,), generator=gen))
        c0 = int(torch.randint(0, d - w + 1, (1,), generator=gen))
        out[:, c0:c0 + w] = 0
    return out
