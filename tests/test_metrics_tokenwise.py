"""Token-level metrics against the slow reference and scipy, hand cases, conventions and errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from reference_metrics import (
    cosine,
    distance,
    ref_aps,
    ref_bottom_k,
    ref_consistency,
    ref_path,
    ref_path_scores,
    ref_spearman,
    ref_token_matrix,
)
from scipy.stats import spearmanr

from lsl_core.errors import MetricInputError
from lsl_core.metrics import (
    TokenwiseResult,
    alignment_path,
    alignment_path_score,
    bottom_k_tokens,
    path_consistency,
    path_monotonicity,
    path_scores,
    token_cosine_matrix,
    token_distance_matrix,
    tokenwise_metrics,
)

# (L+1, Ts, Tt, d): single layer, single frame, single token, and ordinary sizes
SHAPES = [(1, 1, 1, 3), (1, 6, 4, 5), (3, 1, 5, 4), (4, 7, 1, 6), (5, 9, 6, 8), (2, 13, 11, 16)]
F64 = torch.float64


def states(shape: tuple[int, int, int, int], seed: int, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float32 speech [L+1,Ts,d] and text [L+1,Tt,d] states."""
    n_layers, ts, tt, d = shape
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_layers, ts, d, generator=g) + offset, torch.randn(n_layers, tt, d, generator=g) + offset


def t64(x) -> torch.Tensor:
    return torch.tensor(x, dtype=F64)


# ---- against the slow reference --------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_token_matrices_match_reference(shape):
    hs, ht = states(shape, seed=10)
    hs_l, ht_l = hs.double().tolist(), ht.double().tolist()
    cos, dist = token_cosine_matrix(hs, ht), token_distance_matrix(hs, ht)
    n_layers, ts, tt, _ = shape
    assert cos.shape == dist.shape == (n_layers, ts, tt)
    assert cos.dtype == dist.dtype == torch.float32
    torch.testing.assert_close(cos.double(), t64(ref_token_matrix(hs_l, ht_l, cosine)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dist.double(), t64(ref_token_matrix(hs_l, ht_l, distance)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_tokenwise_metrics_match_reference(shape):
    hs, ht = states(shape, seed=11)
    hs_l, ht_l = hs.double().tolist(), ht.double().tolist()
    A_cos, A_dist = ref_token_matrix(hs_l, ht_l, cosine), ref_token_matrix(hs_l, ht_l, distance)
    p_cos, p_dist = ref_path(A_cos, "cosine"), ref_path(A_dist, "distance")
    s_cos, s_dist = ref_path_scores(A_cos, p_cos), ref_path_scores(A_dist, p_dist)

    r = tokenwise_metrics(hs, ht)
    assert r.path_cos.dtype == r.path_dist.dtype == torch.long
    assert r.path_cos.tolist() == p_cos and r.path_dist.tolist() == p_dist
    torch.testing.assert_close(r.scores_cos.double(), t64(s_cos), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.scores_dist.double(), t64(s_dist), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(r.spearman_cos, t64([ref_spearman(p) for p in p_cos]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r.spearman_dist, t64([ref_spearman(p) for p in p_dist]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r.consistency, t64(ref_consistency(p_cos, p_dist)), rtol=0, atol=1e-12)
    assert r.aps_cos == pytest.approx(ref_aps(s_cos), rel=1e-5, abs=1e-6)
    assert r.aps_dist == pytest.approx(ref_aps(s_dist), rel=1e-5, abs=1e-6)

    # the bundle equals the individual public functions
    torch.testing.assert_close(r.cos, token_cosine_matrix(hs, ht))
    torch.testing.assert_close(r.dist, token_distance_matrix(hs, ht))
    assert torch.equal(r.path_cos, alignment_path(r.cos, "cosine"))
    assert torch.equal(r.path_dist, alignment_path(r.dist, "distance"))
    assert torch.equal(r.scores_cos, path_scores(r.cos, r.path_cos))
    assert torch.equal(r.consistency, path_consistency(r.path_cos, r.path_dist))
    assert r.aps_dist == alignment_path_score(r.scores_dist)


def test_distance_is_exact_for_states_with_a_large_common_offset():
    """Real LLM states share large components; ||x||^2+||y||^2-2xy would cancel catastrophically here."""
    g = torch.Generator().manual_seed(12)
    base = 1000.0 * torch.randn(1, 1, 32, generator=g)
    hs = (base + 1e-2 * torch.randn(3, 5, 32, generator=g)).float()  # [3, 5, 32]
    ht = (base + 1e-2 * torch.randn(3, 4, 32, generator=g)).float()  # [3, 4, 32]
    expected = t64(ref_token_matrix(hs.double().tolist(), ht.double().tolist(), distance))
    torch.testing.assert_close(token_distance_matrix(hs, ht).double(), expected, rtol=1e-5, atol=0)
    # the case is hard: the matmul shortcut in float32 is far off
    sq = (hs * hs).sum(-1)[:, :, None] + (ht * ht).sum(-1)[:, None, :] - 2 * torch.bmm(hs, ht.transpose(1, 2))
    naive = sq.clamp_min(0).sqrt().double()
    assert ((naive - expected).abs() / expected).max() > 1e-2


def test_cosine_matrix_is_product_of_normalized_rows():
    hs, ht = states((3, 6, 5, 7), seed=13, offset=1.0)
    hs64, ht64 = hs.double(), ht.double()
    expected = (hs64 / hs64.norm(dim=-1, keepdim=True)) @ (ht64 / ht64.norm(dim=-1, keepdim=True)).transpose(1, 2)
    torch.testing.assert_close(token_cosine_matrix(hs, ht).double(), expected, rtol=1e-5, atol=1e-6)
    # invariant to positive per-vector scaling, flips under negation
    scale = torch.rand(3, 6, 1, generator=torch.Generator().manual_seed(14)) + 0.1
    torch.testing.assert_close(token_cosine_matrix(hs * scale, ht), token_cosine_matrix(hs, ht), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(token_cosine_matrix(-hs, ht), -token_cosine_matrix(hs, ht), rtol=1e-5, atol=1e-6)


# ---- hand-built alignments ------------------------------------------------------------------

def test_identical_states_diagonal_alignment():
    _, ht = states((4, 1, 7, 16), seed=15, offset=2.0)
    hs = ht.clone()  # frame j == token j
    r = tokenwise_metrics(hs, ht)
    diag = torch.diagonal(r.cos, dim1=1, dim2=2)  # [L+1, Tt]
    torch.testing.assert_close(diag, torch.ones(4, 7), rtol=0, atol=1e-6)
    assert torch.equal(torch.diagonal(r.dist, dim1=1, dim2=2), torch.zeros(4, 7))
    arange = torch.arange(7).expand(4, 7)
    assert torch.equal(r.path_cos, arange) and torch.equal(r.path_dist, arange)
    assert torch.equal(r.spearman_cos, torch.ones(4, dtype=F64))
    assert torch.equal(r.spearman_dist, torch.ones(4, dtype=F64))
    assert torch.equal(r.consistency, torch.ones(4, dtype=F64))
    assert r.aps_cos == pytest.approx(1.0, abs=1e-6)
    assert r.aps_dist == 0.0


def test_repeated_frames_give_monotone_path():
    _, ht = states((3, 1, 6, 12), seed=16)
    reps = 3
    hs = ht.repeat_interleave(reps, dim=1)  # [3, 18, 12]: frames 3j..3j+2 are copies of token j
    r = tokenwise_metrics(hs, ht)
    assert torch.equal(r.path_dist, reps * torch.arange(6).expand(3, 6))  # exact ties -> first frame
    assert torch.equal(r.path_cos // reps, torch.arange(6).expand(3, 6))
    torch.testing.assert_close(r.spearman_cos, torch.ones(3, dtype=F64))
    torch.testing.assert_close(r.spearman_dist, torch.ones(3, dtype=F64))


def test_reversed_alignment_gives_minus_one():
    _, ht = states((2, 1, 5, 10), seed=17)
    r = tokenwise_metrics(ht.flip(1), ht)
    assert torch.equal(r.path_cos, torch.arange(4, -1, -1).expand(2, 5))
    assert torch.equal(r.spearman_cos, -torch.ones(2, dtype=F64))
    assert torch.equal(r.spearman_dist, -torch.ones(2, dtype=F64))


def test_zero_vectors_give_zero_cosine_and_norm_distance():
    _, ht = states((2, 1, 3, 4), seed=18)
    hs = torch.zeros(2, 2, 4)
    hs[:, 1] = ht[:, 0]
    cos, dist = token_cosine_matrix(hs, ht), token_distance_matrix(hs, ht)
    assert torch.equal(cos[:, 0], torch.zeros(2, 3))
    torch.testing.assert_close(dist[:, 0], ht.norm(dim=-1))
    assert not torch.isnan(token_cosine_matrix(hs, torch.zeros(2, 3, 4))).any()
    assert torch.equal(token_cosine_matrix(hs, torch.zeros(2, 3, 4)), torch.zeros(2, 2, 3))


def test_path_ties_go_to_the_first_frame():
    A = torch.tensor([[[1.0, 2.0, 0.0], [1.0, 2.0, 3.0], [0.5, 2.0, 3.0]]])  # [1, Ts=3, Tt=3]
    assert alignment_path(A, "cosine").tolist() == [[0, 0, 1]]
    assert alignment_path(A, "distance").tolist() == [[2, 0, 0]]
    assert ref_path(A.double().tolist(), "cosine") == [[0, 0, 1]]


def test_path_scores_hand_case():
    A = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)  # A[l, i, j] = 12 l + 4 i + j
    path = torch.tensor([[0, 2, 1, 0], [2, 2, 2, 2]])
    expected = torch.tensor([[0.0, 9.0, 6.0, 3.0], [20.0, 21.0, 22.0, 23.0]])
    assert torch.equal(path_scores(A, path), expected)


# ---- Spearman -------------------------------------------------------------------------------

def test_spearman_hand_case_with_ties():
    # ranks of i*: [1.5, 1.5, 3.5, 3.5] vs [1, 2, 3, 4] -> 4 / (2 * sqrt(5))
    rho = path_monotonicity(torch.tensor([[0, 0, 1, 1], [3, 3, 3, 3], [2, 0, 1, 3]]))
    assert rho[0].item() == pytest.approx(4.0 / (2.0 * math.sqrt(5.0)), abs=1e-12)
    assert rho[1].item() == 0.0  # constant path: defined 0.0, not NaN
    assert rho[2].item() == pytest.approx(0.4, abs=1e-12)  # 1 - 6 * (4 + 1 + 1 + 0) / (4 * 15)


def test_spearman_single_token_is_zero():
    rho = path_monotonicity(torch.tensor([[5], [0]]))
    assert rho.tolist() == [0.0, 0.0]
    assert rho.dtype == F64


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")  # the constant row, on purpose
@pytest.mark.parametrize(("tt", "ts"), [(2, 2), (3, 9), (8, 3), (15, 40), (30, 6)])
def test_spearman_matches_scipy_and_reference(tt, ts):
    g = torch.Generator().manual_seed(100 + tt)
    path = torch.randint(0, ts, (6, tt), generator=g)  # many ties when ts < tt
    path[0] = 1  # constant row
    rho = path_monotonicity(path)
    for l in range(6):
        row = path[l].tolist()
        expected = spearmanr(list(range(tt)), row).statistic
        expected = 0.0 if math.isnan(expected) else expected  # scipy: NaN for a constant input
        assert rho[l].item() == pytest.approx(expected, abs=1e-12)
        assert rho[l].item() == pytest.approx(ref_spearman(row), abs=1e-12)


def test_spearman_distinguishes_orders():
    rho = path_monotonicity(torch.tensor([[0, 1, 2, 3, 4], [0, 2, 1, 3, 4], [4, 3, 2, 1, 0]]))
    assert rho[0] == 1.0 and rho[2] == -1.0
    assert 0.0 < rho[1] < 1.0


# ---- consistency, APS, bottom-k ---------------------------------------------------------------

def test_consistency_hand_case():
    got = path_consistency(torch.tensor([[0, 1, 2, 3], [1, 1, 1, 1]]), torch.tensor([[0, 1, 3, 3], [0, 0, 0, 0]]))
    assert got.tolist() == [0.75, 0.0]


def test_aps_hand_case_excludes_layer_zero():
    scores = torch.tensor([[9.0, 9.0], [1.0, 2.0], [3.0, 4.0]])
    assert alignment_path_score(scores) == pytest.approx(2.5)
    assert alignment_path_score(torch.tensor([[1.0, 2.0, 6.0]])) == pytest.approx(3.0)  # L+1 == 1
    g = torch.Generator().manual_seed(19)
    rand = torch.rand(5, 7, generator=g)
    assert alignment_path_score(rand) == pytest.approx(ref_aps(rand.double().tolist()), rel=1e-6)


def test_bottom_k_hand_cases():
    scores = torch.tensor([0.5, 0.1, 0.9, 0.1, 0.3])
    assert bottom_k_tokens(scores, 3, "cosine").tolist() == [1, 3, 4]  # lowest cosine, tie by index
    assert bottom_k_tokens(scores, 3, "distance").tolist() == [2, 0, 4]  # highest distance first
    assert bottom_k_tokens(scores, 10, "cosine").tolist() == [1, 3, 4, 0, 2]  # k' = min(k, Tt)
    assert bottom_k_tokens(torch.tensor([1.0, 2.0, 2.0, 0.0]), 2, "distance").tolist() == [1, 2]
    empty = bottom_k_tokens(scores, 0, "cosine")
    assert empty.shape == (0,) and empty.dtype == torch.long


@pytest.mark.parametrize("metric", ["cosine", "distance"])
@pytest.mark.parametrize("k", [0, 1, 3, 12])
def test_bottom_k_matches_reference(metric, k):
    g = torch.Generator().manual_seed(20 + k)
    scores = torch.randint(0, 4, (9,), generator=g).float() / 4  # many ties
    assert bottom_k_tokens(scores, k, metric).tolist() == ref_bottom_k(scores.tolist(), k, metric)


def test_result_is_frozen():
    r = tokenwise_metrics(*states((2, 3, 2, 4), seed=21))
    assert isinstance(r, TokenwiseResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.aps_cos = 0.0  # type: ignore[misc]


# ---- errors ---------------------------------------------------------------------------------

def test_input_errors_name_the_problem():
    with pytest.raises(MetricInputError, match="speech span is empty"):
        tokenwise_metrics(torch.ones(2, 0, 3), torch.ones(2, 4, 3))
    with pytest.raises(MetricInputError, match="text span is empty"):
        token_cosine_matrix(torch.ones(2, 4, 3), torch.ones(2, 0, 3))
    with pytest.raises(MetricInputError, match="L\\+1 must match"):
        token_distance_matrix(torch.ones(2, 4, 3), torch.ones(3, 4, 3))
    with pytest.raises(MetricInputError, match="width"):
        tokenwise_metrics(torch.ones(2, 4, 3), torch.ones(2, 4, 5))
    nan = torch.ones(2, 4, 3)
    nan[0, 0, 0] = float("nan")
    with pytest.raises(MetricInputError, match="NaN"):
        tokenwise_metrics(nan, torch.ones(2, 4, 3))
    with pytest.raises(MetricInputError, match="NaN"):
        alignment_path(nan, "cosine")


def test_path_and_k_errors():
    A = torch.rand(2, 3, 4)
    with pytest.raises(MetricInputError, match="'cosine' or 'distance'"):
        alignment_path(A, "dot")  # type: ignore[arg-type]
    with pytest.raises(MetricInputError, match="does not match"):
        path_scores(A, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(MetricInputError, match="outside"):
        path_scores(A, torch.full((2, 4), 3))
    with pytest.raises(MetricInputError, match="integer"):
        path_monotonicity(torch.zeros(2, 4))
    with pytest.raises(MetricInputError, match="differ in shape"):
        path_consistency(torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(MetricInputError, match="non-negative"):
        bottom_k_tokens(torch.rand(4), -1, "cosine")
    with pytest.raises(MetricInputError, match="one layer"):
        bottom_k_tokens(torch.rand(2, 4), 1, "cosine")
    with pytest.raises(MetricInputError, match="\\[L\\+1, Tt\\]"):
        alignment_path_score(torch.rand(4))
