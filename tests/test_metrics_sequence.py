"""Sequence-level metrics against the slow reference, hand cases and input errors."""

from __future__ import annotations

import math
import re

import pytest
import torch
from reference_metrics import cosine, distance, ref_layer_average, ref_mean_pool, ref_sequence_curve

from lsl_core.errors import MetricInputError
from lsl_core.metrics import layer_average, mean_pool, sequence_cosine, sequence_distance

# (L+1, Ts, Tt, d): single layer, single frame, single token, and ordinary sizes
SHAPES = [(1, 1, 1, 3), (1, 4, 3, 5), (3, 1, 5, 4), (4, 7, 1, 6), (5, 9, 6, 8), (2, 13, 11, 16)]


def states(shape: tuple[int, int, int, int], seed: int, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float32 speech [L+1,Ts,d] and text [L+1,Tt,d] states (a shared offset mimics real LLM states)."""
    n_layers, ts, tt, d = shape
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(n_layers, ts, d, generator=g) + offset
    ht = torch.randn(n_layers, tt, d, generator=g) + offset
    return hs, ht


@pytest.mark.parametrize("shape", SHAPES)
def test_mean_pool_matches_reference(shape):
    hs, _ = states(shape, seed=1)
    expected = torch.tensor(ref_mean_pool(hs.double().tolist()), dtype=torch.float64)
    got = mean_pool(hs)
    assert got.shape == (shape[0], shape[3]) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("offset", [0.0, 3.0])
def test_sequence_curves_match_reference(shape, offset):
    hs, ht = states(shape, seed=2, offset=offset)
    hs_l, ht_l = hs.double().tolist(), ht.double().tolist()
    cos = sequence_cosine(hs, ht)
    dist = sequence_distance(hs, ht)
    assert cos.shape == dist.shape == (shape[0],)
    ref_cos = torch.tensor(ref_sequence_curve(hs_l, ht_l, cosine), dtype=torch.float64)
    ref_dist = torch.tensor(ref_sequence_curve(hs_l, ht_l, distance), dtype=torch.float64)
    torch.testing.assert_close(cos.double(), ref_cos, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dist.double(), ref_dist, rtol=1e-5, atol=1e-6)


def test_identical_states_give_cosine_one_and_distance_zero():
    hs, _ = states((4, 6, 6, 8), seed=3, offset=5.0)
    torch.testing.assert_close(sequence_cosine(hs, hs.clone()), torch.ones(4), rtol=0, atol=1e-6)
    assert torch.equal(sequence_distance(hs, hs.clone()), torch.zeros(4))


def test_same_mean_with_different_lengths_is_aligned():
    # 2 frames [a, b] and 1 token (a+b)/2 have the same mean
    hs = torch.tensor([[[1.0, 0.0, 2.0], [3.0, 2.0, 0.0]]])  # [1, 2, 3]
    ht = torch.tensor([[[2.0, 1.0, 1.0]]])  # [1, 1, 3]
    assert sequence_cosine(hs, ht).item() == pytest.approx(1.0, abs=1e-6)
    assert sequence_distance(hs, ht).item() == pytest.approx(0.0, abs=1e-6)


def test_hand_case_orthogonal_and_opposite():
    hs = torch.tensor([[[1.0, 0.0]], [[2.0, 0.0]]])  # [2, 1, 2]
    ht = torch.tensor([[[0.0, 3.0]], [[-1.0, 0.0]]])
    torch.testing.assert_close(sequence_cosine(hs, ht), torch.tensor([0.0, -1.0]))
    torch.testing.assert_close(sequence_distance(hs, ht), torch.tensor([math.sqrt(10.0), 3.0]))


def test_zero_vectors_give_cosine_zero_not_nan():
    hs = torch.zeros(3, 2, 4)
    ht = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(4))
    cos = sequence_cosine(hs, ht)
    assert torch.equal(cos, torch.zeros(3))
    torch.testing.assert_close(sequence_distance(hs, ht), torch.linalg.vector_norm(ht.mean(1), dim=-1))
    assert torch.equal(sequence_cosine(hs, torch.zeros(3, 1, 4)), torch.zeros(3))


def test_cosine_is_scale_invariant_but_distance_is_not():
    hs, ht = states((3, 4, 5, 6), seed=5)
    torch.testing.assert_close(sequence_cosine(7.0 * hs, ht), sequence_cosine(hs, ht), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sequence_distance(2.0 * hs, 2.0 * ht), 2.0 * sequence_distance(hs, ht))
    assert not torch.allclose(sequence_distance(2.0 * hs, ht), sequence_distance(hs, ht))


def test_low_precision_inputs_are_cast_to_float32():
    hs, ht = states((3, 4, 5, 8), seed=6)
    got = sequence_cosine(hs.bfloat16(), ht.bfloat16())
    assert got.dtype == torch.float32
    expected = sequence_cosine(hs.bfloat16().float(), ht.bfloat16().float())
    torch.testing.assert_close(got, expected)
    assert sequence_distance(hs.double(), ht.double()).dtype == torch.float32


@pytest.mark.parametrize("curve", [[5.0, 1.0, 2.0, 6.0], [0.3], [-2.0, 4.0], [9.0, 0.25, 0.5, 0.75, 1.0, 1.25]])
def test_layer_average_excludes_layer_zero(curve):
    assert layer_average(torch.tensor(curve)) == pytest.approx(ref_layer_average(curve), rel=1e-6)


def test_layer_average_hand_values():
    assert layer_average(torch.tensor([100.0, 1.0, 2.0, 3.0])) == pytest.approx(2.0)
    assert layer_average(torch.tensor([0.5])) == pytest.approx(0.5)
    assert isinstance(layer_average(torch.tensor([1.0, 2.0])), float)


@pytest.mark.parametrize(
    ("hs_shape", "ht_shape", "message"),
    [
        ((3, 0, 4), (3, 2, 4), "speech span is empty"),
        ((3, 2, 4), (3, 0, 4), "text span is empty"),
        ((3, 2, 4), (4, 2, 4), "layers"),
        ((3, 2, 4), (3, 2, 5), "width"),
        ((2, 4), (3, 2, 4), "shape [L+1, Ts, d]"),
        ((0, 2, 4), (0, 2, 4), "no layers"),
    ],
)
def test_bad_shapes_raise_with_message(hs_shape, ht_shape, message):
    for fn in (sequence_cosine, sequence_distance):
        with pytest.raises(MetricInputError, match=re.escape(message)):
            fn(torch.ones(hs_shape), torch.ones(ht_shape))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_states_raise(bad):
    hs = torch.ones(2, 3, 4)
    hs[1, 2, 0] = bad
    with pytest.raises(MetricInputError, match="NaN or infinite"):
        sequence_cosine(hs, torch.ones(2, 2, 4))
    with pytest.raises(MetricInputError, match="text hidden states contain NaN"):
        sequence_distance(torch.ones(2, 2, 4), hs)


def test_float64_overflowing_float32_raises():
    hs = torch.full((1, 2, 3), 1e300, dtype=torch.float64)
    with pytest.raises(MetricInputError, match="NaN or infinite"):
        sequence_distance(hs, torch.ones(1, 2, 3))


def test_layer_average_and_mean_pool_errors():
    with pytest.raises(MetricInputError, match="non-empty"):
        layer_average(torch.tensor([]))
    with pytest.raises(MetricInputError, match="NaN"):
        layer_average(torch.tensor([1.0, float("nan")]))
    with pytest.raises(MetricInputError, match="T >= 1"):
        mean_pool(torch.ones(2, 0, 3))


def test_large_states_with_close_means_are_exact_to_1e6():
    """States of magnitude ~1e3 whose means differ by ~1 (like real LLM states with a shared offset): the
    mean-pooled metrics equal the float64 reference to 1e-6 relative (a float32 sum is off by ~1e-4)."""
    g = torch.Generator().manual_seed(12)
    d = 576
    offset = 1e3 * torch.randn(1, 1, d, generator=g)  # [1, 1, d] shared by every frame and token
    hs = (offset + torch.randn(31, 300, d, generator=g)).float()  # [L+1, Ts, d] float32, |h| ~ 1e3
    ht = (offset + 1.0 + torch.randn(31, 25, d, generator=g)).float()  # means differ by ~1 per dimension
    ms, mt = hs.double().mean(1), ht.double().mean(1)  # exact means of the float32 values, [L+1, d]
    want_dist = torch.linalg.vector_norm(ms - mt, dim=-1)
    want_cos = (ms * mt).sum(-1) / (ms.norm(dim=-1) * mt.norm(dim=-1))
    torch.testing.assert_close(sequence_distance(hs, ht).double(), want_dist, rtol=1e-6, atol=0)
    torch.testing.assert_close(1 - sequence_cosine(hs, ht).double(), 1 - want_cos, rtol=0, atol=1e-6)
    torch.testing.assert_close(mean_pool(hs).double(), ms, rtol=1e-6, atol=0)
