"""Token norms and the standardized distance: against the slow reference, hand cases, invariances."""

from __future__ import annotations

import math

import pytest
import torch
from reference_metrics import ref_mean_norm, ref_standardized_distance

from lsl_core.errors import MetricInputError
from lsl_core.metrics.norms import mean_token_norm, standardized_distance, token_norms
from lsl_core.metrics.sequence import sequence_distance

F64 = torch.float64


def _states(seed: int, shape=(4, 9, 5, 7)):
    n_layers, ts, tt, d = shape
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_layers, ts, d, generator=g) * 3 + 1, torch.randn(n_layers, tt, d, generator=g)


@pytest.mark.parametrize("shape", [(1, 1, 1, 3), (3, 9, 5, 7), (2, 2, 13, 4)])
def test_norms_and_standardized_distance_match_reference(shape):
    hs, ht = _states(1, shape)
    hs_l, ht_l = hs.double().tolist(), ht.double().tolist()
    n_s, n_t = token_norms(hs, ht)
    torch.testing.assert_close(n_s, torch.tensor(ref_mean_norm(hs_l), dtype=F64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(n_t, torch.tensor(ref_mean_norm(ht_l), dtype=F64), rtol=1e-6, atol=1e-6)
    got = standardized_distance(hs, ht)
    assert got.shape == (shape[0],) and got.dtype == F64
    torch.testing.assert_close(got, torch.tensor(ref_standardized_distance(hs_l, ht_l), dtype=F64),
                               rtol=1e-9, atol=1e-9)


def test_hand_case():
    # one dimension, speech rows [0, 0], text rows [2, 2]: union [0,0,2,2] has mean 1 and std 1,
    # so the standardized means are -1 and +1: distance 2; a second, constant dimension adds 0 (d = 2)
    hs = torch.tensor([[[0.0, 5.0], [0.0, 5.0]]])
    ht = torch.tensor([[[2.0, 5.0], [2.0, 5.0]]])
    assert standardized_distance(hs, ht).tolist() == [pytest.approx(2.0 / math.sqrt(2.0))]
    assert mean_token_norm(hs).tolist() == [pytest.approx(5.0)]
    assert mean_token_norm(torch.tensor([[[3.0, 4.0], [0.0, 1.0]]])).tolist() == [pytest.approx(3.0)]


def test_standardized_distance_is_scale_free_per_dimension_but_raw_distance_is_not():
    hs, ht = (h.double() for h in _states(2))
    scale = torch.rand(7, generator=torch.Generator().manual_seed(3), dtype=F64) * 100 + 0.01  # [d] units
    shift = torch.randn(7, generator=torch.Generator().manual_seed(4), dtype=F64) * 50
    torch.testing.assert_close(standardized_distance(hs * scale + shift, ht * scale + shift),
                               standardized_distance(hs, ht), rtol=1e-9, atol=1e-9)
    assert not torch.allclose(sequence_distance(hs * scale, ht * scale), sequence_distance(hs, ht))
    same = standardized_distance(hs, hs.clone())
    assert torch.equal(same, torch.zeros_like(same))


def test_errors_name_the_problem():
    with pytest.raises(MetricInputError, match="speech span is empty"):
        standardized_distance(torch.ones(2, 0, 3), torch.ones(2, 4, 3))
    with pytest.raises(MetricInputError, match="no empty axis"):
        mean_token_norm(torch.ones(2, 0, 3))


def test_norm_ratio_hand_case_and_a_planted_sink():
    from lsl_core.metrics.norms import norm_ratio

    h = torch.zeros(1, 4, 2)
    h[0, :, 0] = torch.tensor([30.0, 3.0, 4.0, 5.0])  # norms 30, 3, 4, 5
    r = norm_ratio(h, slice(1, 4))  # median of rows 1..3 = 4
    torch.testing.assert_close(r, torch.tensor([[7.5, 0.75, 1.0, 1.25]], dtype=F64))
    hs, _ = _states(3, (3, 12, 1, 8))
    hs[1:, 0] *= 50  # a sink at the first row from layer 1 on
    r = norm_ratio(hs, slice(0, 12))
    assert r.shape == (3, 12)
    assert (r[1:, 0] > 10).all() and r[0, 0] < 10 and (r[:, 1:] < 10).all()
    with pytest.raises(MetricInputError, match="non-empty reference span"):
        norm_ratio(hs, slice(5, 5))
