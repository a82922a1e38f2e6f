"""Review of lsl_core.metrics against DESIGN §3 and the slow references: edge cases and degenerate inputs.

Each test below asserts behaviour on hand-computed values or against `reference_metrics` (plain Python,
float64). The first group pins conventions (single token, ties, zero vectors, low precision, non-finite
inputs, which layers APS averages); the later ones cover defects found in review.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from reference_metrics import (cosine, ref_aps, ref_consistency, ref_ols, ref_path, ref_path_scores, ref_spearman,
                               ref_token_matrix)

from lsl_core.errors import MetricInputError
from lsl_core.metrics import (alignment_path, fit_gap, path_monotonicity, path_scores, r2_added_interval, r2_interval,
                              sequence_cosine, token_cosine_matrix, token_distance_matrix, tokenwise_metrics)
from lsl_core.metrics.stats import bootstrap_ci, grouped_ci


# =============================================================================== conventions
def test_single_token_or_single_frame_spearman_is_zero_and_consistency_is_exact():
    """Tt = 1: ρ(j, i*_j) has no value -> 0.0 (documented); Ts = 1: every path is frame 0, ρ = 0, both agree."""
    g = torch.Generator().manual_seed(0)
    r = tokenwise_metrics(torch.randn(3, 5, 4, generator=g), torch.randn(3, 1, 4, generator=g))
    assert r.spearman_cos.tolist() == [0.0, 0.0, 0.0] and r.spearman_dist.tolist() == [0.0, 0.0, 0.0]
    r = tokenwise_metrics(torch.randn(3, 1, 4, generator=g), torch.randn(3, 6, 4, generator=g))
    assert r.path_cos.eq(0).all() and r.path_dist.eq(0).all()
    assert r.spearman_cos.tolist() == [0.0] * 3 and r.consistency.tolist() == [1.0] * 3


def test_ties_go_to_the_lowest_frame_for_both_paths_batched_or_one_layer():
    """Frames 1 and 2 are the same state, the token is (nearly) that state: both paths pick frame 1, for the whole
    stack of layers at once and for each layer alone, argmax and DTW alike."""
    v = torch.tensor([0.3, -1.0, 2.0, 0.5])
    hs = torch.stack([torch.tensor([1.0, 0.0, 0.0, 0.0]), v, v, torch.tensor([0.0, 0.0, 0.0, 1.0])])  # [4, 4]
    hs = hs[None].repeat(3, 1, 1)  # [3, 4, 4]
    ht = (v + 0.01)[None, None].repeat(3, 1, 1)  # [3, 1, 4]
    for method in ("argmax", "dtw"):
        r = tokenwise_metrics(hs, ht, path=method)
        assert r.path_cos.flatten().tolist() == [1, 1, 1]  # DTW: the visited frames of the token, best = frame 1
        assert r.path_cos.equal(r.path_dist)
        for layer in range(3):
            one = tokenwise_metrics(hs[layer:layer + 1], ht[layer:layer + 1], path=method)
            assert one.path_cos[0].equal(r.path_cos[layer]) and one.path_dist[0].equal(r.path_dist[layer])


def test_zero_vectors_low_precision_and_non_finite_inputs():
    hs = torch.zeros(2, 3, 4)
    ht = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]]]).repeat(2, 1, 1)
    r = tokenwise_metrics(hs, ht)
    assert r.cos.eq(0).all() and r.path_cos.eq(0).all()  # cosine with a zero vector = 0; tie -> frame 0
    torch.testing.assert_close(r.dist[0, 0], torch.tensor([1.0, 2.0]))
    for dtype in (torch.float16, torch.bfloat16):
        g = torch.Generator().manual_seed(1)
        a, b = torch.randn(2, 4, 8, generator=g).to(dtype), torch.randn(2, 3, 8, generator=g).to(dtype)
        assert token_cosine_matrix(a, b).dtype == torch.float32
        ref = ref_token_matrix(a.double().tolist(), b.double().tolist(), cosine)
        np.testing.assert_allclose(token_cosine_matrix(a, b).numpy(), np.array(ref), atol=1e-6)
    for bad in (float("nan"), float("inf")):
        h = torch.randn(2, 3, 4)
        h[1, 2, 0] = bad
        with pytest.raises(MetricInputError, match="NaN or infinite"):
            tokenwise_metrics(h, torch.randn(2, 2, 4))


def test_aps_averages_layers_one_to_L_as_the_app_labels_it():
    """DESIGN: APS = 1/(L·Tt) Σ_{l=1..L} Σ_j A_l[i*_j, j]; the Sample Explorer says 'over layers 1..L'."""
    g = torch.Generator().manual_seed(2)
    hs, ht = torch.randn(4, 6, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    r = tokenwise_metrics(hs, ht)
    A = ref_token_matrix(hs.double().tolist(), ht.double().tolist(), cosine)
    path = ref_path(A, "cosine")
    assert r.path_cos.tolist() == path
    assert r.aps_cos == pytest.approx(ref_aps(ref_path_scores(A, path)), abs=1e-6)
    with_layer0 = float(np.mean(ref_path_scores(A, path)))
    assert r.aps_cos != pytest.approx(with_layer0, abs=1e-9)  # layer 0 is not in the mean
    for layer in range(4):
        assert r.spearman_cos[layer].item() == pytest.approx(ref_spearman(path[layer]), abs=1e-12)
    assert r.consistency.tolist() == pytest.approx(ref_consistency(r.path_cos.tolist(), r.path_dist.tolist()))


# =============================================================================== defects found in review
def test_cosine_of_finite_states_whose_squares_leave_float32_range():
    """‖x‖² of a float32 row overflows (|x| ~ 1e20) or underflows (|x| ~ 1e-24) although x is finite: the cosine is
    still defined (here exactly 1 and 0.6) and must not silently become 0."""
    for scale in (1e20, 1e-24):
        hs = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]]) * scale  # [1, 2, 2]
        ht = torch.tensor([[[3.0, 4.0]]])  # [1, 1, 2]
        A = token_cosine_matrix(hs, ht)
        torch.testing.assert_close(A[0, :, 0], torch.tensor([1.0, 0.6]))
        assert alignment_path(A, "cosine").item() == 0
        torch.testing.assert_close(token_cosine_matrix(ht, hs)[0, 0], torch.tensor([1.0, 0.6]))


def test_fit_gap_refuses_a_gap_that_is_constant_up_to_rounding():
    """GAP = text − speech of four checkpoints that all have a GAP of 0.3, differing only in the last bit: R² is
    0/0 (nothing to explain) and must be refused like an exactly constant GAP, not reported from rounding noise."""
    gaps = [0.5 - 0.2, 0.7 - 0.4, 0.9 - 0.6, 0.4 - 0.1]
    assert len(set(gaps)) > 1 and max(gaps) - min(gaps) < 1e-15
    with pytest.raises(MetricInputError, match="same GAP"):
        fit_gap([1.0, 2.0, 3.0, 4.0], gaps)


def _flat(v) -> bool:
    """Constant up to rounding: a spread of at most 1e-12 of the values' size."""
    return max(v) - min(v) <= 1e-12 * max(abs(a) for a in v)


def _slow_r2_interval(x, y, n_boot, seed):
    """The documented scheme, slowly: resamples rng.integers(0, n, n) on (x, y) sorted by (x, y); a resample with
    < 3 distinct x, or an x or GAP constant up to rounding, is left out (R² undefined); R² from ref_ols."""
    order = sorted(range(len(x)), key=lambda i: (x[i], y[i]))
    x, y = [x[i] for i in order], [y[i] for i in order]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        xs, ys = [x[i] for i in idx], [y[i] for i in idx]
        if len(set(xs)) < 3 or _flat(xs) or _flat(ys):
            continue
        values.append(ref_ols(xs, ys)[2])
    return tuple(np.quantile(values, [0.025, 0.975]))


def test_r2_interval_leaves_out_resamples_whose_gap_is_constant_up_to_rounding():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # sorted: the canonical order
    y = [0.5 - 0.2, 0.7 - 0.4, 0.9 - 0.6, 0.4 - 0.1, 0.3, 0.45]  # five GAPs of 0.3 (up to the last bit), one 0.45
    lo, hi = r2_interval(x, y, n_boot=400, seed=3)
    ref_lo, ref_hi = _slow_r2_interval(x, y, 400, 3)
    assert (lo, hi) == (pytest.approx(ref_lo, abs=1e-9), pytest.approx(ref_hi, abs=1e-9))


def test_r2_interval_leaves_out_resamples_whose_metric_is_constant_up_to_rounding():
    """R² is symmetric in x and GAP: three 'distinct' metric values that differ only in the last bit carry no slope;
    a resample of them is left out, as one with < 3 distinct x is, instead of fitting the rounding."""
    x = [0.5 - 0.2, 0.7 - 0.4, 0.9 - 0.6, 0.4 - 0.1, 0.3, 0.45]
    assert len(set(x)) == 4  # three spellings of 0.3, and 0.45
    y = [0.12, 0.31, 0.05, 0.22, 0.4, 0.18]
    lo, hi = r2_interval(x, y, n_boot=400, seed=5)
    ref_lo, ref_hi = _slow_r2_interval(x, y, 400, 5)
    assert (lo, hi) == (pytest.approx(ref_lo, abs=1e-9), pytest.approx(ref_hi, abs=1e-9))


def test_r2_added_interval_leaves_out_resamples_whose_gap_is_constant_up_to_rounding():
    """A resample of the five 0.3 GAPs has no R² to add to: it is left out as for an exactly constant GAP, so the
    interval equals the one of the same GAPs written exactly."""
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    y = [0.5 - 0.2, 0.7 - 0.4, 0.9 - 0.6, 0.4 - 0.1, 0.3, 0.45]
    step = [0.0, 3.0, 1.0, 5.0, 2.0, 4.0]  # not a linear function of x
    lo_exact, hi_exact = r2_added_interval(x, [0.3, 0.3, 0.3, 0.3, 0.3, 0.45], step, n_boot=300, seed=4)
    lo, hi = r2_added_interval(x, y, step, n_boot=300, seed=4)
    assert (lo, hi) == (pytest.approx(lo_exact, abs=1e-9), pytest.approx(hi_exact, abs=1e-9))


def test_bootstrap_refuses_infinite_values_with_a_clear_error():
    """NaN rows are dropped (documented); an infinite value is not a missing one: refuse it instead of returning
    an interval of NaN (inf · 0 in the replicate means) beside an infinite estimate."""
    for stat in (None, np.median):
        with pytest.raises(MetricInputError, match="infinite"):
            bootstrap_ci(np.array([1.0, np.inf, 2.0]), stat, n_boot=50)
    with pytest.raises(MetricInputError, match="infinite"):
        grouped_ci(pd.DataFrame({"v": [1.0, -np.inf, 3.0]}), ["v"], n_boot=50)
    ci = bootstrap_ci(np.array([1.0, np.nan, 2.0]), n_boot=50)  # NaN: dropped as before
    assert ci.n == 2 and math.isfinite(ci.low) and math.isfinite(ci.high)


def test_sequence_cosine_of_large_states_and_small_hand_cases():
    hs = torch.tensor([[[3.0, 4.0], [3.0, 4.0]]]) * 1e20
    ht = torch.tensor([[[3.0, 4.0]]])
    assert sequence_cosine(hs, ht).item() == pytest.approx(1.0)
    assert path_monotonicity(torch.tensor([[0, 1, 1, 2]])).item() == pytest.approx(ref_spearman([0, 1, 1, 2]))
    assert token_distance_matrix(torch.ones(1, 1, 2), torch.zeros(1, 1, 2)).item() == pytest.approx(math.sqrt(2))


def test_token_matrix_functions_cast_low_precision_to_float32():
    """_check_matrix promises float32 (CONTRIBUTING: bf16 never enters the math): path scores of a bf16 / fp16
    matrix come back as float32 (a bf16 tensor has no .numpy(), and its means round to 3 digits)."""
    A = torch.tensor([[[0.1, 0.9], [0.7, 0.2], [0.3, 0.5]]])  # [1, Ts=3, Tt=2]
    for dtype in (torch.bfloat16, torch.float16):
        Ad = A.to(dtype)
        path = alignment_path(Ad, "cosine")
        assert path.tolist() == [[1, 0]]
        scores = path_scores(Ad, path)
        assert scores.dtype == torch.float32
        np.testing.assert_allclose(scores.numpy(), Ad.float()[0, [1, 0], [0, 1]][None].numpy())
