"""Controls (lsl_core.metrics.controls) on constructed states whose true alignment is known.

Planted: each question's text states are random tokens; a clip's speech frames hold its own question's
tokens in order (plus noise) between filler frames. Null: speech states share nothing with any text.
Every draw uses a fixed seed, so no test can flake; the margins below say why the asserted
inequalities hold for the construction, not just for the seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lsl_core.errors import MetricInputError
from lsl_core.metrics.controls import (
    METRIC_NAMES,
    ControlOptions,
    bootstrap_ci,
    candidate_metrics,
    chance_levels,
    concat_results,
    draw_others,
    own_rank_stats,
    pair_metrics,
    question_pool,
    reference_means,
    set_controls,
)

LAYERS, D, TT = 3, 128, 6  # L+1, width, tokens per question


@pytest.fixture(autouse=True)
def _one_thread():
    """Thousands of tiny matmuls: one thread (a 2-thread pool waits on a barrier per op on a busy CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _texts(n_q: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(LAYERS, TT, D, generator=g) for _ in range(n_q)]


def _planted(texts: list[torch.Tensor], noise: float, seed: int) -> list[torch.Tensor]:
    """Speech [L+1, 2*Tt, d]: even frames = own tokens in order + noise, odd frames = filler."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in texts:
        frames = torch.randn(LAYERS, 2 * TT, D, generator=g)  # filler everywhere
        frames[:, 0::2] = t + noise * torch.randn(LAYERS, TT, D, generator=g)
        out.append(frames)
    return out


def _null(n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(LAYERS, 2 * TT, D, generator=g) for _ in range(n)]


def _ids(n: int) -> list[str]:
    return [f"clip{i}" for i in range(n)]


# ---------------------------------------------------------------------------------- known alignment
def test_planted_transcripts_are_retrieved_and_specifically_aligned():
    """Margins (d = 128, noise 0.5): a clip's mean-pooled state has cosine ~0.67 with its own transcript's
    mean and ~N(0, 1/sqrt(d) = 0.09) with an unrelated one (7 standard deviations apart); a planted
    frame has cosine ~0.89 with its token against ~0.3 for the best unrelated frame. So the own
    transcript ranks first for every clip, layer and scorer, and every path follows the tokens."""
    n_q = 24
    texts = _texts(n_q, seed=1)
    res = set_controls(_planted(texts, 0.5, seed=2), texts, list(range(n_q)), _ids(n_q),
                       options=ControlOptions(partners=5, candidates=20))
    retr = res.retrieval_table()
    assert (retr.top1 == 1.0).all() and (retr.mrr == 1.0).all()
    assert retr.chance_top1.iloc[0] == pytest.approx(1 / 20)
    spec = res.specific()
    mean = spec[spec.layer == -1].set_index("metric")
    for m in ("seq_cos", "aps_cos", "spearman_cos", "spearman_dist", "consistency"):
        assert mean.loc[m, "specific"] > 0 and mean.loc[m, "ci_low"] > 0, m  # higher is better: D > 0
    for m in ("seq_dist", "aps_dist"):
        assert mean.loc[m, "specific"] < 0 and mean.loc[m, "ci_high"] < 0, m  # own transcript is closer
    # per layer, too (every layer carries its own planted copy)
    per = spec[(spec.layer >= 0) & spec.metric.isin(["seq_cos", "aps_cos", "spearman_cos"])]
    assert (per.ci_low > 0).all()
    # the own transcript's path is exactly the planted frames, in order
    assert np.all(res.matched[:, METRIC_NAMES.index("spearman_cos")] == 1.0)


def test_unrelated_states_give_chance_retrieval_and_a_ci_covering_zero():
    """Null: speech independent of every text. The own transcript's rank among Nc = 10 is uniform, so
    top-1 has mean 0.1 and, over 120 clips, standard deviation sqrt(0.1 * 0.9 / 120) = 0.027; top-5:
    0.5 +- 0.046; MRR: 0.293 +- 0.026 (rank uniform on 1..10). Bounds are 5 standard deviations."""
    n = 120
    texts = _texts(n, seed=3)
    res = set_controls(_null(n, seed=4), texts, list(range(n)), _ids(n),
                       options=ControlOptions(partners=5, candidates=10))
    retr = res.retrieval_table()
    chance = chance_levels(10)
    sd = np.sqrt([0.1 * 0.9 / n, 0.5 * 0.5 / n, np.var(1 / np.arange(1, 11)) / n])
    for k, col in enumerate(("top1", "top5", "mrr")):
        assert (np.abs(retr[col] - chance[k]) < 5 * sd[k]).all(), col
    spec = res.specific()
    mean = spec[spec.layer == -1]
    assert ((mean.ci_low <= 0) & (mean.ci_high >= 0)).all(), mean[["metric", "specific", "ci_low", "ci_high"]]


def test_identical_texts_make_matched_equal_mismatched_and_retrieval_exactly_chance():
    """When every question has the same text states, matched == mismatched exactly: D = 0 with a CI of
    [0, 0], and all candidates tie, so the expected top-1/top-5/MRR are exactly the chance levels."""
    n = 8
    one = _texts(1, seed=5)[0]
    res = set_controls(_planted([one] * n, 0.5, seed=6), [one.clone() for _ in range(n)], list(range(n)), _ids(n),
                       options=ControlOptions(partners=3, candidates=6))
    spec = res.specific()
    assert (spec.specific.abs() < 1e-12).all() and (spec.ci_low.abs() < 1e-12).all() and (spec.ci_high.abs() < 1e-12).all()
    retr = res.retrieval_table()
    np.testing.assert_allclose(retr[["top1", "top5", "mrr"]].to_numpy(),
                               np.broadcast_to(chance_levels(6), (len(retr), 3)), rtol=1e-12)


# ---------------------------------------------------------------------------------- centring
def test_centring_removes_a_common_offset_exactly_and_restores_the_specific_signal():
    """A large offset shared by every speech and text state (a generic 'speech vs text' direction) makes
    raw cosines of matched and mismatched pairs alike; joint centring subtracts it (results equal those
    of the offset-free states), and per-modality centring also removes separate offsets."""
    n_q = 12
    texts = _texts(n_q, seed=7)
    speech = _planted(texts, 0.5, seed=8)
    g = torch.Generator().manual_seed(9)
    c = 20.0 * torch.randn(LAYERS, 1, D, generator=g)  # ||c|| ~ 226 >> ||token|| ~ 11
    cs, ct = 20.0 * torch.randn(LAYERS, 1, D, generator=g), 20.0 * torch.randn(LAYERS, 1, D, generator=g)
    q, ids = list(range(n_q)), _ids(n_q)
    joint, modality, raw = (ControlOptions(centring=m, candidates=8) for m in ("joint", "modality", "none"))
    base_j = set_controls(speech, texts, q, ids, options=joint)
    off_j = set_controls([s + c for s in speech], [t + c for t in texts], q, ids, options=joint)
    off_m = set_controls([s + cs for s in speech], [t + ct for t in texts], q, ids, options=modality)
    base_m = set_controls(speech, texts, q, ids, options=modality)
    np.testing.assert_allclose(off_j.matched, base_j.matched, atol=2e-5)
    np.testing.assert_allclose(off_j.mismatched, base_j.mismatched, atol=2e-5)
    np.testing.assert_allclose(off_m.matched, base_m.matched, atol=2e-5)
    assert off_j.centring == "joint" and off_j.reference.shape == (1, 2, LAYERS, D)
    np.testing.assert_allclose(off_j.reference[0, 0], off_j.reference[0, 1])  # one mean for both modalities
    # raw cosines with the offset: everything near 1, the specific signal much smaller than after centring
    off_raw = set_controls([s + c for s in speech], [t + c for t in texts], q, ids, options=raw)
    d_raw = off_raw.specific().query("metric == 'seq_cos' and layer == -1").specific.item()
    d_cen = off_j.specific().query("metric == 'seq_cos' and layer == -1").specific.item()
    assert off_raw.matched[:, 0].min() > 0.99 and 0 < d_raw < d_cen / 10


def test_reference_means_are_position_weighted():
    s = [torch.ones(2, 3, 4), 3 * torch.ones(2, 1, 4)]  # 4 speech frames: mean (3*1 + 3) / 4 = 1.5
    t = [torch.zeros(2, 4, 4)]  # 4 tokens
    j = reference_means(s, t, "joint")
    m = reference_means(s, t, "modality")
    assert torch.allclose(j.speech_mean, torch.full((2, 4), 0.75, dtype=torch.float64))
    assert torch.allclose(m.speech_mean, torch.full((2, 4), 1.5, dtype=torch.float64))
    assert torch.allclose(m.text_mean, torch.zeros(2, 4, dtype=torch.float64))
    assert (j.n_speech, j.n_text) == (4, 4) and reference_means(s, t, "none") is None


# ---------------------------------------------------------------------------------- reuse and cost
def test_batched_candidates_equal_each_pair_and_the_analysis_metrics():
    """candidate_metrics concatenates the candidates' tokens into one matrix; per candidate it must give
    exactly the per-pair definition (pair_metrics, through tokenwise_metrics), which in turn matches the
    one-sample analysis (APS = layer mean of the per-layer terms; CKA = diagonal of the analysis CKA)."""
    from lsl_core.analysis import AnalysisOptions, metrics_from_states

    texts = _texts(4, seed=10)
    texts[2] = texts[2][:, :3]  # a 3-token question: CKA undefined (NaN), everything else defined
    hs = _planted(texts[:1], 0.5, seed=11)[0]
    batched = candidate_metrics(hs, texts)
    for c, ht in enumerate(texts):
        single = pair_metrics(hs, ht)
        for k in METRIC_NAMES:
            np.testing.assert_allclose(batched[k][c].numpy(), single[k].numpy(), rtol=1e-6, atol=1e-6,
                                       equal_nan=True, err_msg=k)
    assert torch.isnan(batched["cka"][2]).all() and torch.isfinite(batched["cka"][[0, 1, 3]]).all()
    ref = metrics_from_states(hs, texts[0], AnalysisOptions())
    own = pair_metrics(hs, texts[0])
    np.testing.assert_allclose(own["seq_cos"].numpy(), ref["seq_cos"], atol=1e-6)
    np.testing.assert_allclose(own["spearman_cos"].numpy(), ref["spearman_cos"])
    np.testing.assert_allclose(own["consistency"].numpy(), ref["consistency"])
    assert own["aps_cos"][1:].mean().item() == pytest.approx(ref["aps_cos"], abs=1e-6)
    np.testing.assert_allclose(own["cka"].numpy(), np.diag(ref["cka"]), atol=1e-9)


def test_batched_sequence_metrics_keep_float64_means_of_large_states():
    """States with a large common offset (~3e3, as LLM residual streams have) whose means differ by ~1: the
    sequence metrics of candidate_metrics must sum the speech mean in float64 like sequence_distance does
    (a float32 mean rounds each component by ~1e-4), so they equal the per-pair values and a float64 reference."""
    g = torch.Generator().manual_seed(21)
    off = 3000.0 * torch.randn(D, generator=g)
    hs = off + torch.randn(LAYERS, 375, D, generator=g)  # [L+1, Ts, d]
    texts = [off + 0.5 + torch.randn(LAYERS, n, D, generator=g) for n in (6, 9)]
    batched = candidate_metrics(hs, texts)
    ms = hs.double().mean(dim=1).numpy()  # [L+1, d] float64 reference means
    for c, ht in enumerate(texts):
        mt = ht.double().mean(dim=1).numpy()
        ref = np.linalg.norm(ms - mt, axis=-1)  # [L+1]
        np.testing.assert_allclose(batched["seq_dist"][c].numpy(), ref, rtol=1e-6)
        single = pair_metrics(hs, ht)
        for k in ("seq_cos", "seq_dist"):
            np.testing.assert_array_equal(batched[k][c].numpy(), single[k].numpy(), err_msg=k)


def test_each_text_state_is_used_once_per_question(monkeypatch):
    """Text states are given once per question; the cost per clip is one token matrix over its candidates."""
    import lsl_core.metrics.controls as ctl

    calls = []
    real = ctl.token_cosine_matrix
    monkeypatch.setattr(ctl, "token_cosine_matrix", lambda hs, ht: calls.append(ht.shape[1]) or real(hs, ht))
    n_q = 6
    texts = _texts(n_q, seed=12)
    speech = _planted(texts, 0.5, seed=13) * 2  # two voices per question
    set_controls(speech, texts, list(range(n_q)) * 2, _ids(2 * n_q), options=ControlOptions(partners=2, candidates=4))
    assert len(calls) == 2 * n_q and set(calls) == {4 * TT}  # one matrix per clip: own + 3 distractors


# ---------------------------------------------------------------------------------- partners
def test_partners_are_other_questions_fixed_by_seed_and_id():
    a = draw_others(3, 10, 5, seed=0, sample_key="x")
    assert len(set(a)) == 5 and 3 not in a and ((0 <= a) & (a < 10)).all()
    np.testing.assert_array_equal(a, draw_others(3, 10, 5, seed=0, sample_key="x"))
    assert not np.array_equal(a, draw_others(3, 10, 5, seed=1, sample_key="x"))
    assert len(draw_others(0, 3, 5, seed=0, sample_key="x")) == 2  # capped at Q - 1
    pool, idx = question_pool(["b ?", " a ?", "b ?", "c ?"])
    assert pool == ["a ?", "b ?", "c ?"] and idx.tolist() == [1, 0, 1, 2]


def test_voices_of_one_question_are_never_each_others_partners_and_order_does_not_matter():
    n_q = 5
    texts = _texts(n_q, seed=14)
    speech = _planted(texts, 0.5, seed=15) * 2
    qof = list(range(n_q)) * 2
    ids = _ids(2 * n_q)
    res = set_controls(speech, texts, qof, ids, options=ControlOptions(partners=10, candidates=10))
    assert res.partners.shape == (2 * n_q, n_q - 1)  # K capped at Q - 1
    assert all(qof[i] not in res.partners[i] for i in range(2 * n_q))
    order = np.random.default_rng(0).permutation(2 * n_q)
    again = set_controls([speech[i] for i in order], texts, [qof[i] for i in order], [ids[i] for i in order],
                         options=ControlOptions(partners=10, candidates=10))
    np.testing.assert_array_equal(again.partners, res.partners[order])
    np.testing.assert_allclose(again.mismatched, res.mismatched[order])


def test_one_question_has_no_mismatched_pairs():
    texts = _texts(1, seed=16)
    with pytest.raises(MetricInputError, match="at least 2 different questions"):
        set_controls(_planted(texts, 0.5, seed=0), texts, [0], ["a"])


# ---------------------------------------------------------------------------------- statistics
def test_rank_statistics_by_hand():
    best = own_rank_stats(np.array([0.9, 0.5, 0.1]))
    np.testing.assert_allclose(best, [1.0, 1.0, 1.0])
    tied = own_rank_stats(np.array([0.5, 0.9, 0.5, 0.1]))  # one above, one tied: rank 2 or 3
    np.testing.assert_allclose(tied, [0.0, 1.0, (1 / 2 + 1 / 3) / 2])
    last = own_rank_stats(np.array([0.0] + [1.0] * 6))  # rank 7 of 7
    np.testing.assert_allclose(last, [0.0, 0.0, 1 / 7])
    per_layer = own_rank_stats(np.array([[1.0, 0.0], [0.0, 1.0]]))  # [C=2, layers=2]
    np.testing.assert_allclose(per_layer, [[1.0, 0.0], [1.0, 1.0], [1.0, 0.5]])
    np.testing.assert_allclose(chance_levels(10), [0.1, 0.5, sum(1 / k for k in range(1, 11)) / 10])


def test_bootstrap_ci_brackets_the_mean_with_the_normal_width():
    """For n = 400 standard-normal values the 95% percentile CI of the mean has width ~ 2 * 1.96 / 20 =
    0.196 (bootstrap noise with 4000 resamples is ~2%); constants give a zero-width interval."""
    v = np.random.default_rng(0).standard_normal((400, 1))
    lo, hi = bootstrap_ci(v, 4000, 0.95, seed=0)[0]
    assert lo < v.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * v.std() / 20, rel=0.1)
    np.testing.assert_array_equal(bootstrap_ci(np.full((5, 2), 0.3), 100, 0.95, 0), np.full((2, 2), 0.3))
    np.testing.assert_array_equal(bootstrap_ci(v, 50, 0.9, seed=3), bootstrap_ci(v, 50, 0.9, seed=3))


def test_cluster_bootstrap_resamples_whole_questions():
    """Five voices of one question repeat its value: resampling questions gives exactly the CI of the distinct
    values (same draws), while resampling clips treats the copies as independent and is ~sqrt(5) narrower."""
    v = np.random.default_rng(1).standard_normal((40, 2))
    rows, groups = np.repeat(v, 5, axis=0), np.repeat(np.arange(40), 5)
    by_q = bootstrap_ci(rows, 3000, 0.95, seed=2, groups=groups)
    np.testing.assert_allclose(by_q, bootstrap_ci(v, 3000, 0.95, seed=2), rtol=1e-12)
    naive = bootstrap_ci(rows, 3000, 0.95, seed=2)
    ratio = (by_q[:, 1] - by_q[:, 0]) / (naive[:, 1] - naive[:, 0])
    assert np.all((ratio > 1.8) & (ratio < 2.7))  # sqrt(5) = 2.24
    np.testing.assert_array_equal(bootstrap_ci(v, 100, 0.9, 0, groups=np.arange(40)), bootstrap_ci(v, 100, 0.9, 0))


def test_blocks_join_into_one_result():
    n_q = 6
    texts = _texts(n_q, seed=17)
    speech = _planted(texts, 0.5, seed=18)
    opt = ControlOptions(partners=2, candidates=3)
    a = set_controls(speech[:3], texts[:3], [0, 1, 2], _ids(6)[:3], [f"q{k}" for k in range(3)], opt)
    b = set_controls(speech[3:], texts[3:], [0, 1, 2], _ids(6)[3:], [f"q{k}" for k in range(3, 6)], opt)
    both = concat_results([a, b])
    assert both.n == 6 and both.questions == [f"q{k}" for k in range(6)]
    assert both.question_of.tolist() == list(range(6)) and both.block_of.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(both.matched, np.concatenate([a.matched, b.matched]))
    assert set(both.partners[3].tolist()) <= {3, 4, 5}


@pytest.mark.parametrize("field,value", [("partners", 0), ("candidates", 1), ("centring", "mean"), ("ci", 1.0),
                                         ("seed", -1), ("n_boot", 0), ("cka_path_layer", -2), ("bootstrap", "voice")])
def test_options_name_the_bad_field(field, value):
    with pytest.raises(ValueError, match=f"ControlOptions.{field}"):
        ControlOptions(**{field: value})


def test_best_layer_chance_by_hand_and_against_a_simulation():
    """One layer: the binomial's own mean 1/Nc; one clip of 2 candidates over 2 layers: max of two fair coins (mean
    0.75, 95th percentile 1); 31 layers of 100 clips among 20: the simulated max of independent layers."""
    from scipy.stats import binom

    from lsl_core.metrics.controls import best_layer_chance

    mean, q95 = best_layer_chance(100, 20, 1)
    assert mean == pytest.approx(0.05, abs=1e-12) and q95 == binom.ppf(0.95, 100, 0.05) / 100
    assert best_layer_chance(1, 2, 2) == (pytest.approx(0.75, abs=1e-12), 1.0)
    rng = np.random.default_rng(0)
    draws = rng.binomial(100, 0.05, size=(100_000, 31)).max(axis=1) / 100  # [draws] the best of 31 layers
    mean, q95 = best_layer_chance(100, 20, 31)
    assert abs(mean - draws.mean()) < 4 * draws.std() / np.sqrt(draws.size)
    assert mean > 0.05 * 1.5  # the best of 31 layers is well above one layer's chance
    assert np.mean(draws <= q95) >= 0.95 > np.mean(draws < q95)
    with pytest.raises(ValueError):
        best_layer_chance(0, 20, 31)
