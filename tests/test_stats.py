"""lsl_core.metrics.stats: the bootstrap behind every aggregate bar/score, checked against hand-computed
cases, an exact enumeration, and its coverage over many simulated data sets; the pooled-CKA jackknife
against the CKA module and a slow leave-one-out loop."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch

from lsl_core.errors import MetricInputError
from lsl_core.metrics.cka import MinibatchCKA
from lsl_core.metrics.stats import (bootstrap_ci, bootstrap_indices, condition_intervals, grouped_ci,
                                    pooled_cka_interval, summary_intervals)


def test_hand_checked_interval_of_three_zeros_and_a_one():
    # mean of 4 draws from {0,0,0,1} = Binomial(4, 1/4)/4: P(0) = .316, P(.25) = .422, P(.5) = .211,
    # P(.75) = .047, P(1) = .004 -> the 2.5% quantile is 0 and the 97.5% quantile is 0.75 (P(<= .5) = .949)
    ci = bootstrap_ci([0.0, 0.0, 0.0, 1.0])
    assert (ci.estimate, ci.low, ci.high, ci.n) == (0.25, 0.0, 0.75, 4)
    # two values: means 0 (1/4), .5 (1/2), 1 (1/4) -> [0, 1]
    two = bootstrap_ci([0.0, 1.0])
    assert (two.low, two.high) == (0.0, 1.0)


def test_replicate_means_match_an_exact_enumeration():
    """The replicate distribution converges to the exact bootstrap distribution (all n^n resamples)."""
    v = np.array([0.1, 0.4, 0.45, 1.3])
    exact = np.array([v[list(i)].mean() for i in itertools.product(range(4), repeat=4)])  # 256 resamples
    lo, hi = np.quantile(exact, [0.025, 0.975])
    ci = bootstrap_ci(v, n_boot=20_000)
    assert abs(ci.low - lo) <= 0.05 and abs(ci.high - hi) <= 0.05
    # the vectorised mean path equals the generic statistic path on the same draws
    generic = bootstrap_ci(v, lambda x: x.mean(axis=0), n_boot=500)
    fast = bootstrap_ci(v, n_boot=500)
    assert generic.low == pytest.approx(fast.low, abs=1e-12) and generic.high == pytest.approx(fast.high, abs=1e-12)


def test_deterministic_shift_equivariant_and_contains_the_estimate():
    rng = np.random.default_rng(3)
    x = rng.normal(size=25)
    a, b = bootstrap_ci(x), bootstrap_ci(x)
    assert (a.low, a.high) == (b.low, b.high)  # same seed, same interval
    c = bootstrap_ci(x, seed=1)
    assert (c.low, c.high) != (a.low, a.high)
    s = bootstrap_ci(x + 10.0)
    assert s.low == pytest.approx(a.low + 10.0) and s.high == pytest.approx(a.high + 10.0)
    assert a.low <= a.estimate <= a.high
    const = bootstrap_ci(np.full(7, 0.3))
    assert const.low == const.high == const.estimate == pytest.approx(0.3)


def test_coverage_of_a_normal_mean_is_near_95_percent():
    """Over 300 simulated data sets (n = 40), the interval holds the true mean about 95% of the time."""
    rng = np.random.default_rng(0)
    hits = 0
    reps = 300
    for r in range(reps):
        x = rng.normal(loc=2.0, scale=3.0, size=40)
        ci = bootstrap_ci(x, n_boot=1000, seed=r)
        hits += ci.low <= 2.0 <= ci.high
    assert 0.89 <= hits / reps <= 0.99, hits / reps


def test_width_shrinks_like_one_over_root_n():
    rng = np.random.default_rng(1)
    w = [bootstrap_ci(rng.normal(size=n)).half_width for n in (50, 800)]
    assert 2.5 < w[0] / w[1] < 6.0  # sqrt(16) = 4


def test_nan_rows_dropped_matrices_and_errors():
    ci = bootstrap_ci([0.0, np.nan, 1.0])
    assert ci.n == 2
    m = bootstrap_ci(np.stack([np.eye(2), 2 * np.eye(2), 3 * np.eye(2)]))  # [n, 2, 2]
    np.testing.assert_allclose(m.estimate, 2 * np.eye(2))
    assert m.low.shape == (2, 2) and m.low[0, 0] < 2 < m.high[0, 0] and m.low[0, 1] == m.high[0, 1] == 0
    with pytest.raises(MetricInputError, match="empty"):
        bootstrap_ci([])
    with pytest.raises(MetricInputError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.5)
    assert bootstrap_indices(3, 5, 0).shape == (5, 3)


def test_grouped_and_paired_intervals():
    df = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 2, "v": [0, 0, 0, 1, 1, 1.0]})
    t = grouped_ci(df, ["v"], ["g"])
    assert list(t["g"]) == ["a", "b"] and list(t["n"]) == [4, 2]
    assert (t.loc[0, "v"], t.loc[0, "v_lo"], t.loc[0, "v_hi"]) == (0.25, 0.0, 0.75)
    # summary: GAP = paired mean difference; "seen" excludes unseen voices; "all" pools every row
    samples = pd.DataFrame({"checkpoint": "c", "voice": ["x", "x", "y", "y"], "unseen": [False, False, True, True],
                            "text_f1": [1.0, 1.0, 0.5, 0.5], "speech_f1": [0.0, 1.0, 0.5, 0.0]})
    s = summary_intervals(samples, ("f1",)).set_index("voice")
    assert list(s.index) == ["x", "y", "seen", "all"]
    assert s.loc["all", "gap_f1"] == pytest.approx(0.375) and s.loc["seen", "n"] == 2
    assert s.loc["x", "gap_f1_lo"] == 0.0 and s.loc["x", "gap_f1_hi"] == 1.0  # differences {1, 0}
    rows = pd.DataFrame({"sample_id": ["s1", "s2"] * 2, "condition": ["original"] * 2 + ["angle:all"] * 2,
                         "title": ["Original"] * 2 + ["Angle·All"] * 2, "f1": [0.2, 0.4, 0.3, 0.4],
                         "containment": [0, 0, 1, 0], "agreement": [0.5, 0.5, 0.5, 0.5]})
    c = condition_intervals(rows)
    assert list(c.index) == ["Original", "Angle·All"]
    assert (c.loc["Angle·All", "Δ F1_lo"], c.loc["Angle·All", "Δ F1_hi"]) == pytest.approx((0.0, 10.0))  # {10, 0} pts
    assert (c.loc["Original", "F1_lo"], c.loc["Original", "F1_hi"]) == pytest.approx((20.0, 40.0))


def _slow_jackknife_se(xs, yt, keeps) -> np.ndarray:
    """Slow reference: the jackknife SE of MinibatchCKA over the given kept-sample sets (one per left-out unit)."""
    loo = []
    for keep in keeps:
        mm = MinibatchCKA()
        mm.update(torch.tensor(xs[:, keep]), torch.tensor(yt[:, keep]))
        loo.append(mm.compute().numpy())
    loo, g = np.stack(loo), len(keeps)
    return np.sqrt((g - 1) / g * ((loo - loo.mean(0)) ** 2).sum(0))


def test_pooled_cka_jackknife_matches_minibatch_cka_and_a_slow_loop():
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((3, 9, 6))
    yt = xs + 0.7 * rng.standard_normal((3, 9, 6))
    ci = pooled_cka_interval(xs, yt)
    m = MinibatchCKA()
    m.update(torch.tensor(xs), torch.tensor(yt))
    np.testing.assert_allclose(ci.estimate, m.compute().numpy(), atol=1e-10)  # one batch: the same statistic
    se = _slow_jackknife_se(xs, yt, [[j for j in range(9) if j != i] for i in range(9)])  # leave one out
    np.testing.assert_allclose(ci.high - ci.estimate, 1.959963984540054 * se, atol=1e-9)
    assert (ci.low <= ci.estimate).all() and (ci.estimate <= ci.high).all()
    shown = np.full((3, 3), 0.5)  # the interval is centred on the matrix the view shows
    np.testing.assert_allclose(pooled_cka_interval(xs, yt, shown).low, 0.5 - 1.959963984540054 * se, atol=1e-9)
    with pytest.raises(MetricInputError, match="at least 5"):
        pooled_cka_interval(xs[:, :4], yt[:, :4])


def test_cluster_bootstrap_matches_a_slow_loop_over_drawn_groups():
    """groups: whole groups are drawn (the voices of one question together); a replicate is the mean over the
    drawn groups' rows. Against a loop over the same draws; one row per group is the plain bootstrap, draw for
    draw; NaN rows leave with their labels."""
    rng = np.random.default_rng(3)
    v = rng.standard_normal((11, 2))
    groups = np.array(list("aaabbcddddd"))  # 4 groups of 3, 2, 1, 5 rows
    ci = bootstrap_ci(v, groups=groups, n_boot=400, seed=7)
    labels = ["a", "b", "c", "d"]
    draws = bootstrap_indices(4, 400, 7)  # [B, G] the groups drawn
    reps = np.stack([np.concatenate([v[groups == labels[k]] for k in d]).mean(0) for d in draws])
    np.testing.assert_allclose(ci.low, np.quantile(reps, 0.025, axis=0), atol=1e-12)
    np.testing.assert_allclose(ci.high, np.quantile(reps, 0.975, axis=0), atol=1e-12)
    np.testing.assert_allclose(ci.estimate, v.mean(0))
    plain, one_each = bootstrap_ci(v, n_boot=400, seed=7), bootstrap_ci(v, groups=np.arange(11), n_boot=400, seed=7)
    np.testing.assert_array_equal(plain.low, one_each.low)
    np.testing.assert_array_equal(plain.high, one_each.high)
    wide = bootstrap_ci(np.r_[np.zeros(5), np.ones(5)], groups=[0] * 5 + [1] * 5)  # two clusters of identical rows
    assert (wide.low, wide.high) == (0.0, 1.0)  # only 2 independent draws: all-0, mixed, all-1
    assert bootstrap_ci(np.r_[np.zeros(5), np.ones(5)]).high < 0.9  # the rows taken as 10 independent ones
    with_nan = bootstrap_ci(np.r_[v[:, 0], np.nan], groups=np.append(groups, "e"), n_boot=400, seed=7)
    assert with_nan.n == 11 and with_nan.low == pytest.approx(ci.low[0])
    with pytest.raises(MetricInputError, match="mean only"):
        bootstrap_ci(v, np.median, groups=groups)
    with pytest.raises(MetricInputError, match="one label per row"):
        bootstrap_ci(v, groups=groups[:5])


def test_pooled_cka_jackknife_over_groups_leaves_each_group_out():
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((3, 12, 6))
    yt = xs + 0.7 * rng.standard_normal((3, 12, 6))
    groups = np.repeat(["q1", "q2", "q3", "q4"], 3)
    ci = pooled_cka_interval(xs, yt, groups=groups)
    se = _slow_jackknife_se(xs, yt, [np.flatnonzero(groups != g) for g in ["q1", "q2", "q3", "q4"]])
    np.testing.assert_allclose(ci.high - ci.estimate, 1.959963984540054 * se, atol=1e-9)
    plain = pooled_cka_interval(xs, yt)
    np.testing.assert_allclose(pooled_cka_interval(xs, yt, groups=np.arange(12)).low, plain.low, atol=1e-12)
    with pytest.raises(MetricInputError, match="at least 2 groups"):
        pooled_cka_interval(xs, yt, groups=["q"] * 12)


def test_summary_intervals_draw_questions_like_the_headline():
    """With a question column, the pooled groups ("seen", "all") resample questions, a question's voices together:
    the seen agreement interval is evaluate's headline interval over questions, draw for draw; a voice (one clip
    per question) keeps the plain bootstrap; clips taken as independent would give a narrower interval."""
    from lsl_core.experiments.evaluate import headline_intervals

    rng = np.random.default_rng(5)
    qs = [f"q{k}" for k in range(12)]
    base = rng.uniform(size=12)  # a question effect shared by its voices
    rows = [{"checkpoint": "c", "strategy": "lora", "step": 1, "voice": v, "unseen": v == "vx", "question": q,
             "agreement": float(np.clip(base[k] + 0.05 * rng.standard_normal(), 0, 1)),
             "cascade_agreement": 0.5, "text_f1": 0.5, "speech_f1": 0.25, "text_containment": 0.0,
             "speech_containment": 0.0} for v in ("va", "vb", "vc", "vx") for k, q in enumerate(qs)]
    df = pd.DataFrame(rows)
    s = summary_intervals(df, ("f1",)).set_index("voice")
    head = headline_intervals(df, unseen_voice="vx").set_index("voice")
    assert (s.loc["seen", "agreement_lo"], s.loc["seen", "agreement_hi"]) == pytest.approx(
        (head.loc["seen", "agreement_lo"], head.loc["seen", "agreement_hi"]), abs=1e-12)
    va = bootstrap_ci(df.loc[df["voice"] == "va", "agreement"].to_numpy())
    assert (s.loc["va", "agreement_lo"], s.loc["va", "agreement_hi"]) == (va.low, va.high)
    clips = bootstrap_ci(df.loc[~df["unseen"], "agreement"].to_numpy())
    assert clips.high - clips.low < s.loc["seen", "agreement_hi"] - s.loc["seen", "agreement_lo"]
    with pytest.raises(MetricInputError, match="not in the table"):
        grouped_ci(df, ["agreement"], ["voice"], cluster="speaker")


def test_alignment_intervals_per_checkpoint_over_questions():
    """results.alignment_intervals (the Checkpoints page's bands): per checkpoint, questions are drawn with their
    voices (the bootstrap of the per-question means, equal voices per question); without a question column,
    the samples."""
    from lsl_core.results import alignment_intervals, checkpoint_means

    rng = np.random.default_rng(2)
    rows = pd.DataFrame([{"checkpoint": ck, "family": "f", "strategy": "lora", "step": s, "question": f"q{k}",
                          "voice": v, "aps_cos": float(k + 0.1 * rng.standard_normal())}
                         for s, ck in enumerate(("a", "b")) for k in range(8) for v in ("v1", "v2", "v3")])
    got = alignment_intervals(checkpoint_means(rows), rows).set_index("checkpoint")
    for ck in ("a", "b"):
        per_q = rows[rows["checkpoint"] == ck].groupby("question", sort=False)["aps_cos"].mean().to_numpy()
        want = bootstrap_ci(per_q)
        assert (got.loc[ck, "aps_cos_lo"], got.loc[ck, "aps_cos_hi"]) == pytest.approx((want.low, want.high))
    flat = alignment_intervals(checkpoint_means(rows), rows.drop(columns="question")).set_index("checkpoint")
    plain = bootstrap_ci(rows.loc[rows["checkpoint"] == "a", "aps_cos"].to_numpy())
    assert (flat.loc["a", "aps_cos_lo"], flat.loc["a", "aps_cos_hi"]) == pytest.approx((plain.low, plain.high))
