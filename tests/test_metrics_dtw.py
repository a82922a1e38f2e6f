"""The monotone (DTW) alignment path: against a textbook slow reference, on states built so the true
alignment is known (where the argmax path fails), hand cases for the tie conventions, and its use
everywhere the argmax path is used (scores, Spearman, consistency, APS, CKA)."""

from __future__ import annotations

import pytest
import torch
from reference_metrics import (
    cosine,
    distance,
    ref_aps,
    ref_consistency,
    ref_cross_layer_cka,
    ref_dtw,
    ref_dtw_path,
    ref_path_scores,
    ref_spearman,
    ref_token_matrix,
)

from lsl_core.errors import MetricInputError
from lsl_core.metrics import (
    alignment_path,
    cross_layer_cka,
    dtw_alignment,
    dtw_path,
    token_cosine_matrix,
    token_distance_matrix,
    tokenwise_metrics,
)

F64 = torch.float64
# (L+1, Ts, Tt): single cells, single rows/columns, more frames than tokens (speech), the reverse
SHAPES = [(1, 1, 1), (2, 1, 5), (2, 6, 1), (3, 7, 4), (2, 4, 7), (4, 23, 9), (1, 40, 13)]


def _matrix(shape, seed: int, ties: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.rand(*shape, generator=g) * 2 - 1  # [L+1, Ts, Tt] in [-1, 1)
    return (A * 4).round() / 4 if ties else A  # few distinct values: many equal costs and values


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("metric", ["cosine", "distance"])
@pytest.mark.parametrize("ties", [False, True])
def test_dtw_matches_reference(shape, metric, ties):
    A = _matrix(shape, seed=sum(shape) + 7 * ties, ties=ties)
    if metric == "distance":
        A = A.abs()
    got = dtw_alignment(A, metric)
    n_layers, ts, tt = shape
    assert got.path.shape == (n_layers, tt) and got.path.dtype == torch.long
    assert got.frame_token.shape == (n_layers, ts)
    for l, layer in enumerate(A.double().tolist()):
        per_token, per_frame, cost, n_cells = ref_dtw(layer, metric)
        assert got.path[l].tolist() == per_token
        assert got.frame_token[l].tolist() == per_frame
        assert got.cost[l].item() == pytest.approx(cost, rel=1e-12, abs=1e-12)
        assert got.length[l].item() == n_cells
    assert torch.equal(dtw_path(A, metric), got.path)
    assert torch.equal(alignment_path(A, metric, "dtw"), got.path)


@pytest.mark.parametrize("seed", range(6))
def test_dtw_path_is_monotone_and_covers_every_frame(seed):
    A = _matrix((3, 17, 6), seed=100 + seed)
    a = dtw_alignment(A, "cosine")
    assert (a.path[:, 1:] >= a.path[:, :-1]).all()  # frames never go back in time
    assert (a.frame_token[:, 1:] >= a.frame_token[:, :-1]).all()  # tokens never go back either
    assert ((a.length >= 17) & (a.length <= 17 + 6 - 1)).all()
    # the argmax path of the same random matrix is (almost surely) not monotone
    arg = alignment_path(A, "cosine")
    assert not (arg[:, 1:] >= arg[:, :-1]).all()


def test_constant_matrix_takes_diagonal_steps_and_lowest_frames():
    """Equal costs: the path with fewest cells wins (diagonal first); tied values take the lowest frame."""
    A = torch.full((1, 6, 3), 0.5)
    a = dtw_alignment(A, "cosine")
    # backtracking from (5,2): diagonal to (4,1), (3,0), then frame steps down to (0,0)
    assert a.path.tolist() == [[0, 4, 5]]
    assert a.frame_token.tolist() == [[0, 0, 0, 0, 1, 2]]
    assert a.length.tolist() == [6]
    assert a.cost.tolist() == [pytest.approx(6 * 0.5)]


def test_hand_case_cost_and_path():
    # cosine matrix [Ts=3, Tt=2]; costs 1 - A = [[0, 1], [0.5, 0.25], [1, 0]]
    A = torch.tensor([[[1.0, 0.0], [0.5, 0.75], [0.0, 1.0]]])
    a = dtw_alignment(A, "cosine")
    # D = [[0, 1], [0.5, 0.25], [1.5, 0.25]]: path (0,0) -> (1,1) -> (2,1)
    assert a.cost.tolist() == [pytest.approx(0.25)]
    assert a.path.tolist() == [[0, 2]]  # token 1 visits frames 1 (0.75) and 2 (1.0): the better one
    assert a.frame_token.tolist() == [[0, 1, 1]]
    assert a.length.tolist() == [3]
    assert ref_dtw(A[0].double().tolist(), "cosine") == ([0, 2], [0, 1, 1], pytest.approx(0.25), 3)


def _known_alignment(n_layers: int = 4, d: int = 24, seed: int = 0, noise: float = 0.05):
    """Speech built from the text: token j lasts durations[j] frames (each a noisy copy of t_j), and the
    question repeats a word (tokens 1 and 5 are the same vector) whose second utterance is less clear
    (3x the noise), so per-token argmax sends both to the first occurrence.
    Returns hs [L+1,Ts,d], ht [L+1,Tt,d], segments [(first, last)] per token."""
    g = torch.Generator().manual_seed(seed)
    tt = 7
    ht = torch.randn(n_layers, tt, d, generator=g)
    ht[:, 5] = ht[:, 1]  # "what is the capital ... is": a repeated word
    durations = [3, 2, 4, 1, 3, 2, 5]
    frames, segments, start = [], [], 0
    for j, n in enumerate(durations):
        frames.append(ht[:, j : j + 1].expand(n_layers, n, d))
        segments.append((start, start + n - 1))
        start += n
    hs = torch.cat(frames, dim=1)  # [L+1, Ts, d]
    scale = torch.full((hs.shape[1], 1), noise)
    scale[segments[5][0] : segments[5][1] + 1] = 3 * noise
    hs = hs + scale * torch.randn(hs.shape, generator=g)
    return hs, ht, segments


@pytest.mark.parametrize("metric", ["cosine", "distance"])
def test_dtw_recovers_a_known_alignment_where_argmax_fails(metric):
    hs, ht, segments = _known_alignment()
    A = token_cosine_matrix(hs, ht) if metric == "cosine" else token_distance_matrix(hs, ht)
    a = dtw_alignment(A, metric)
    for j, (first, last) in enumerate(segments):
        assert ((a.path[:, j] >= first) & (a.path[:, j] <= last)).all(), (j, a.path[:, j], segments[j])
    for j, (first, last) in enumerate(segments):  # every frame is assigned to the token that made it
        assert (a.frame_token[:, first : last + 1] == j).all()
    # the per-token argmax pairs the repeated word's second occurrence with the first one's frames
    arg = alignment_path(A, metric)
    first, last = segments[1]
    assert ((arg[:, 5] >= first) & (arg[:, 5] <= last)).all()
    assert not ((arg[:, 5] >= segments[5][0]) & (arg[:, 5] <= segments[5][1])).any()
    r_dtw, r_arg = tokenwise_metrics(hs, ht, path="dtw"), tokenwise_metrics(hs, ht)
    assert (r_dtw.spearman_cos > r_arg.spearman_cos).all()
    assert torch.equal(r_dtw.spearman_cos, torch.ones(4, dtype=F64))


def test_dtw_tokenwise_metrics_match_reference():
    g = torch.Generator().manual_seed(31)
    hs, ht = torch.randn(3, 11, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    hs_l, ht_l = hs.double().tolist(), ht.double().tolist()
    r = tokenwise_metrics(hs, ht, path="dtw")
    # the fast float32 matrices are the DTW inputs; the reference walks the same numbers
    p_cos, p_dist = ref_dtw_path(r.cos.double().tolist(), "cosine"), ref_dtw_path(r.dist.double().tolist(), "distance")
    assert r.path_cos.tolist() == p_cos and r.path_dist.tolist() == p_dist
    A_cos, A_dist = ref_token_matrix(hs_l, ht_l, cosine), ref_token_matrix(hs_l, ht_l, distance)
    torch.testing.assert_close(r.scores_cos.double(), torch.tensor(ref_path_scores(A_cos, p_cos), dtype=F64),
                               rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(r.spearman_dist, torch.tensor([ref_spearman(p) for p in p_dist], dtype=F64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(r.consistency, torch.tensor(ref_consistency(p_cos, p_dist), dtype=F64),
                               rtol=0, atol=1e-12)
    assert r.aps_dist == pytest.approx(ref_aps(ref_path_scores(A_dist, p_dist)), rel=1e-5)
    # CKA along the DTW path equals the reference on the same pairs
    cka = cross_layer_cka(hs, ht, r.path_cos[1])
    torch.testing.assert_close(cka, torch.tensor(ref_cross_layer_cka(hs_l, ht_l, p_cos[1]), dtype=F64),
                               rtol=1e-9, atol=1e-9)


def test_dtw_scales_to_long_clips():
    """60 s of speech: 600 frames x 120 tokens x 31 layers in one call (vectorized over layers)."""
    A = _matrix((31, 600, 120), seed=5)
    a = dtw_alignment(A, "cosine")
    assert a.path.shape == (31, 120) and (a.path[:, 1:] >= a.path[:, :-1]).all()


def test_dtw_errors_name_the_problem():
    with pytest.raises(MetricInputError, match="'argmax' or 'dtw'"):
        alignment_path(torch.rand(1, 3, 2), "cosine", "viterbi")  # type: ignore[arg-type]
    with pytest.raises(MetricInputError, match="'argmax' or 'dtw'"):
        tokenwise_metrics(torch.rand(1, 3, 2), torch.rand(1, 2, 2), path="monotone")  # type: ignore[arg-type]
    with pytest.raises(MetricInputError, match="'cosine' or 'distance'"):
        dtw_alignment(torch.rand(1, 3, 2), "dot")  # type: ignore[arg-type]
    with pytest.raises(MetricInputError, match="no empty axis"):
        dtw_alignment(torch.rand(1, 0, 2), "cosine")


def test_equal_frame_and_token_steps_prefer_the_frame_step():
    """At (2,2) the frame step (from (1,2)) and the token step (from (2,1)) cost the same, the diagonal
    more: the frame step wins, so token 1 stays on frame 0."""
    A = torch.tensor([[[1.0, 1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0]]])  # cost 2 only at (1,1)
    a = dtw_alignment(A, "cosine")
    assert a.path.tolist() == [[0, 0, 1]]  # cells (0,0), (0,1), (1,2), (2,2)
    assert a.frame_token.tolist() == [[0, 2, 2]]
    assert a.length.tolist() == [4] and a.cost.tolist() == [0.0]
    assert ref_dtw(A[0].double().tolist(), "cosine")[:2] == ([0, 0, 1], [0, 2, 2])
