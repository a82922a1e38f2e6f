"""Linear CKA: two formulations, invariances, cross-layer/pooled/minibatch variants vs slow references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_metrics import ref_cross_layer_cka, ref_linear_cka, ref_minibatch_cka, ref_unbiased_hsic

from lsl_core.errors import MetricInputError
from lsl_core.metrics import (
    MinibatchCKA,
    cross_layer_cka,
    linear_cka,
    linear_cka_gram,
    pooled_cross_layer_cka,
    unbiased_hsic,
)

F64 = torch.float64


def rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def orthogonal(d: int, seed: int) -> torch.Tensor:
    q, r = torch.linalg.qr(rand(d, d, seed=seed))
    return q * torch.sign(torch.diagonal(r))  # [d, d], Haar-random orthogonal


def related(n: int, p: int, q: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """X [n,p] and Y = X W + noise [n,q]: CKA clearly between 0 and 1."""
    X = rand(n, p, seed=seed)
    return X, X @ rand(p, q, seed=seed + 1) + 0.5 * rand(n, q, seed=seed + 2)


# ---- the two formulations --------------------------------------------------------------------

@pytest.mark.parametrize(("n", "p", "q"), [(4, 3, 5), (6, 8, 2), (10, 4, 4), (9, 1, 1), (12, 20, 7)])
def test_linear_cka_matches_reference_and_gram_form(n, p, q):
    X, Y = related(n, p, q, seed=n + p)
    X = X + 10.0  # an offset: centring must remove it
    expected = ref_linear_cka(X.tolist(), Y.tolist())
    assert 0.0 < expected < 1.0
    assert linear_cka(X, Y) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert linear_cka_gram(X, Y) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cka_of_identical_representations_is_one():
    X = rand(8, 5, seed=1)
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka_gram(X, X) == pytest.approx(1.0, abs=1e-12)


def test_cka_invariant_to_rotation_isotropic_scaling_and_translation():
    X, Y = related(10, 6, 6, seed=2)
    base = linear_cka(X, Y)
    Q = orthogonal(6, seed=5)
    assert torch.allclose(Q.T @ Q, torch.eye(6, dtype=F64), atol=1e-12)
    for Yt in (Y @ Q, 3.7 * Y, Y + rand(1, 6, seed=6) * 50.0, 0.01 * (Y @ Q)):
        assert linear_cka(X, Yt) == pytest.approx(base, rel=1e-9)
        assert linear_cka_gram(X, Yt) == pytest.approx(base, rel=1e-8)
    assert linear_cka(X, X @ orthogonal(6, seed=7)) == pytest.approx(1.0, abs=1e-12)


def test_cka_not_invariant_to_non_isotropic_scaling():
    X, Y = related(10, 6, 6, seed=3)
    D = torch.diag(torch.tensor([10.0, 1.0, 1.0, 0.1, 1.0, 3.0], dtype=F64))
    assert abs(linear_cka(X, Y @ D) - linear_cka(X, Y)) > 1e-2
    assert linear_cka(X, X @ D) < 0.99


def test_cka_symmetric_and_accepts_float32():
    X, Y = related(7, 3, 4, seed=4)
    assert linear_cka(X, Y) == pytest.approx(linear_cka(Y, X), rel=1e-12)
    Xf, Yf = X.float(), Y.float()
    assert linear_cka(Xf, Yf) == pytest.approx(linear_cka(Xf.double(), Yf.double()), rel=1e-12)


def test_constant_side_gives_zero_not_nan():
    X = rand(6, 3, seed=8)
    const = torch.full((6, 4), 0.1, dtype=F64)  # 0.1 is not exact: centring leaves rounding noise
    assert linear_cka(X, const) == 0.0
    assert linear_cka_gram(const, X) == 0.0
    assert ref_linear_cka(X.tolist(), const.tolist()) == 0.0


def test_too_few_pairs_raise_the_documented_message():
    msg = "CKA needs at least 4 aligned pairs, got 3; use a longer question or the pooled variant across samples"
    with pytest.raises(MetricInputError, match=msg):
        linear_cka(rand(3, 2, seed=9), rand(3, 2, seed=10))
    with pytest.raises(MetricInputError, match="at least 4"):
        linear_cka_gram(rand(3, 2, seed=9), rand(3, 2, seed=10))
    with pytest.raises(MetricInputError, match=msg):
        cross_layer_cka(rand(2, 5, 4, seed=11), rand(2, 3, 4, seed=12), torch.tensor([0, 1, 2]))
    with pytest.raises(MetricInputError, match="same items"):
        linear_cka(rand(5, 2, seed=9), rand(6, 2, seed=10))
    bad = rand(5, 2, seed=13)
    bad[0, 0] = float("nan")
    with pytest.raises(MetricInputError, match="NaN"):
        linear_cka(bad, rand(5, 2, seed=14))


# ---- aligned cross-layer CKA -------------------------------------------------------------------

@pytest.mark.parametrize(("n_layers", "ts", "tt", "d"), [(1, 6, 4, 3), (3, 1, 5, 4), (3, 9, 6, 8), (4, 5, 9, 5)])
def test_cross_layer_cka_matches_reference(n_layers, ts, tt, d):
    g = torch.Generator().manual_seed(ts * 31 + tt)
    hs = torch.randn(n_layers, ts, d, generator=g) + 2.0  # float32 in, float64 math
    ht = torch.randn(n_layers, tt, d, generator=g) - 1.0
    path = torch.randint(0, ts, (tt,), generator=g)
    got = cross_layer_cka(hs, ht, path)
    assert got.shape == (n_layers, n_layers) and got.dtype == F64
    expected = torch.tensor(ref_cross_layer_cka(hs.double().tolist(), ht.double().tolist(), path.tolist()), dtype=F64)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    if ts == 1:  # every token aligned to the one frame: speech side constant -> 0 by convention
        assert torch.equal(got, torch.zeros(n_layers, n_layers, dtype=F64))
    # entry by entry equals the single-pair function (no mix-up of a and b)
    for a in range(n_layers):
        for b in range(n_layers):
            assert got[a, b].item() == pytest.approx(linear_cka(hs[a, path], ht[b]), rel=1e-9, abs=1e-12)


def test_cross_layer_cka_per_layer_path():
    g = torch.Generator().manual_seed(40)
    hs, ht = torch.randn(3, 8, 5, generator=g), torch.randn(3, 6, 5, generator=g)
    paths = torch.randint(0, 8, (3, 6), generator=g)  # speech layer a uses paths[a]
    got = cross_layer_cka(hs, ht, paths)
    hs_l, ht_l = hs.double().tolist(), ht.double().tolist()
    for a in range(3):
        X = [hs_l[a][i] for i in paths[a].tolist()]
        for b in range(3):
            assert got[a, b].item() == pytest.approx(ref_linear_cka(X, ht_l[b]), rel=1e-9, abs=1e-12)


def test_cross_layer_cka_identical_states_and_rotation():
    ht = rand(3, 7, 6, seed=41)
    got = cross_layer_cka(ht.clone(), ht, torch.arange(7))
    torch.testing.assert_close(torch.diagonal(got), torch.ones(3, dtype=F64), rtol=0, atol=1e-12)
    assert (got <= 1.0 + 1e-12).all() and (got >= 0.0).all()
    rotated = cross_layer_cka(ht.clone(), ht @ orthogonal(6, seed=42), torch.arange(7))
    torch.testing.assert_close(rotated, got, rtol=1e-9, atol=1e-12)


def test_cross_layer_cka_path_errors():
    hs, ht = rand(2, 5, 4, seed=43), rand(2, 6, 4, seed=44)
    with pytest.raises(MetricInputError, match="outside"):
        cross_layer_cka(hs, ht, torch.full((6,), 5))
    with pytest.raises(MetricInputError, match="shape"):
        cross_layer_cka(hs, ht, torch.zeros(5, dtype=torch.long))
    with pytest.raises(MetricInputError, match="integer"):
        cross_layer_cka(hs, ht, torch.zeros(6))
    with pytest.raises(MetricInputError, match="speech span is empty"):
        cross_layer_cka(rand(2, 0, 4, seed=1), ht, torch.zeros(6, dtype=torch.long))


# ---- pooled across samples: exact and minibatch --------------------------------------------------

def test_pooled_cross_layer_cka_matches_reference():
    xs, yt = rand(3, 9, 5, seed=50), rand(3, 9, 5, seed=51)
    yt[1] = xs[2] @ orthogonal(5, seed=52)  # text layer 1 is a rotation of speech layer 2
    got = pooled_cross_layer_cka(xs, yt)
    xs_l, yt_l = xs.tolist(), yt.tolist()
    expected = torch.tensor([[ref_linear_cka(xs_l[a], yt_l[b]) for b in range(3)] for a in range(3)], dtype=F64)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    assert got[2, 1].item() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(MetricInputError, match="at least 4 samples, got 3"):
        pooled_cross_layer_cka(xs[:, :3], yt[:, :3])
    with pytest.raises(MetricInputError, match="MinibatchCKA"):  # checked before any Gram is built
        pooled_cross_layer_cka(torch.zeros(33, 2100, 1), torch.zeros(33, 2100, 1))


@pytest.mark.parametrize("n", [4, 5, 7])
def test_unbiased_hsic_matches_u_statistic(n):
    X, Y = related(n, 3, 4, seed=60 + n)
    K, L = X @ X.T, Y @ Y.T
    assert unbiased_hsic(K, L) == pytest.approx(ref_unbiased_hsic(K.tolist(), L.tolist()), rel=1e-10, abs=1e-12)
    # any symmetric kernel, not only linear Grams
    S = rand(n, n, seed=70 + n)
    S = S + S.T
    assert unbiased_hsic(S, L) == pytest.approx(ref_unbiased_hsic(S.tolist(), L.tolist()), rel=1e-10, abs=1e-12)


def test_unbiased_hsic_differs_from_biased():
    X, Y = related(6, 3, 3, seed=80)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    biased = float(((Xc @ Xc.T) * (Yc @ Yc.T)).sum()) / 5**2
    assert abs(unbiased_hsic(X @ X.T, Y @ Y.T) - biased) > 1e-3 * abs(biased)
    with pytest.raises(MetricInputError, match="at least 4"):
        unbiased_hsic(torch.eye(3), torch.eye(3))
    with pytest.raises(MetricInputError, match="square"):
        unbiased_hsic(torch.ones(4, 5), torch.ones(4, 5))


def test_minibatch_cka_matches_slow_reference():
    batches = []
    for k, n_b in enumerate((5, 6, 4)):
        xs = rand(3, n_b, 4, seed=90 + k)
        yt = 0.8 * xs.flip(0) + 0.6 * rand(3, n_b, 4, seed=95 + k) + 3.0  # text layer b relates to speech layer 2-b
        batches.append((xs, yt))
    m = MinibatchCKA()
    for xs, yt in batches:
        m.update(xs, yt)
    assert m.n_batches == 3 and m.n_samples == 15
    expected = torch.tensor(ref_minibatch_cka([(xs.tolist(), yt.tolist()) for xs, yt in batches]), dtype=F64)
    torch.testing.assert_close(m.compute(), expected, rtol=1e-9, atol=1e-12)


def test_minibatch_cka_one_full_batch_is_close_to_exact_on_large_n():
    n = 600
    xs = rand(3, n, 6, seed=100)
    mix = rand(3, 6, 6, seed=101)
    yt = torch.bmm(xs, mix).flip(0) + rand(3, n, 6, seed=102)  # [3, n, 6], correlated with reversed layers
    m = MinibatchCKA()
    m.update(xs, yt)
    exact = pooled_cross_layer_cka(xs, yt)
    assert exact.max() > 0.5  # the case has real structure to recover
    torch.testing.assert_close(m.compute(), exact, rtol=0, atol=0.02)
    # many small batches estimate the same quantity (unbiased): still close
    m_small = MinibatchCKA()
    for start in range(0, n, 50):
        m_small.update(xs[:, start:start + 50], yt[:, start:start + 50])
    torch.testing.assert_close(m_small.compute(), exact, rtol=0, atol=0.05)
    # ... whereas averaging the biased per-batch CKA drifts (why the unbiased HSIC is used)
    biased = torch.stack([pooled_cross_layer_cka(xs[:, s:s + 50], yt[:, s:s + 50]) for s in range(0, n, 50)]).mean(0)
    assert (biased - exact).abs().max() > 0.05


def test_minibatch_cka_constant_layer_and_errors():
    xs, yt = rand(2, 8, 3, seed=110), rand(2, 8, 3, seed=111)
    xs[0] = 0.1  # speech layer 0 constant across samples
    m = MinibatchCKA()
    with pytest.raises(MetricInputError, match="no batches"):
        m.compute()
    m.update(xs, yt)
    got = m.compute()
    assert torch.equal(got[0], torch.zeros(2, dtype=F64))
    assert not torch.isnan(got).any()
    with pytest.raises(MetricInputError, match="layers"):
        m.update(rand(3, 8, 3, seed=112), rand(3, 8, 3, seed=113))
    with pytest.raises(MetricInputError, match="at least 4 samples"):
        m.update(xs[:, :3], yt[:, :3])
    with pytest.raises(MetricInputError, match="same items"):
        m.update(xs[:, :5], yt[:, :6])


# ---- the aligned CKA's shuffled-pairing null ----------------------------------------------------

def _ref_null(hs, ht, path, perms):
    """The null by its definition, with the slow reference CKA: [P, L+1, L+1] over the given pairings."""
    X = hs[:, path]
    return np.array([[[ref_linear_cka(X[a].tolist(), ht[b][list(p)].tolist()) for b in range(ht.shape[0])]
                      for a in range(hs.shape[0])] for p in perms])


def test_cka_null_enumerates_every_other_pairing_of_few_tokens():
    import itertools

    from lsl_core.metrics.cka import cka_pairing_null

    g = torch.Generator().manual_seed(3)
    hs = torch.randn(3, 9, 6, generator=g, dtype=torch.float64)
    ht = torch.randn(3, 5, 6, generator=g, dtype=torch.float64)
    hs[:, [1, 3, 4, 6, 8]] = ht + 0.05 * hs[:, [1, 3, 4, 6, 8]]  # the path frames carry their token
    path = torch.tensor([1, 3, 4, 6, 8])
    null = cka_pairing_null(hs, ht, path, n_perm=500)  # 5! - 1 = 119 <= 500: every other pairing
    perms = list(itertools.permutations(range(5)))[1:]
    ref = _ref_null(hs.numpy(), ht.numpy(), path.numpy(), perms)
    observed = cross_layer_cka(hs, ht, path).numpy()
    assert null.n_perm == 119
    np.testing.assert_allclose(null.mean, ref.mean(0), atol=1e-10)
    np.testing.assert_allclose(null.high, np.quantile(ref, 0.975, axis=0), atol=1e-10)
    np.testing.assert_allclose(null.low, np.quantile(ref, 0.025, axis=0), atol=1e-10)
    np.testing.assert_allclose(null.p, (1 + (ref >= observed - 1e-12).sum(0)) / 120, atol=1e-12)
    np.testing.assert_allclose(np.diagonal(null.p), 1 / 120)  # the aligned pairing beats every other one


def test_cka_null_samples_pairings_of_many_tokens(monkeypatch):
    from lsl_core.metrics.cka import cka_pairing_null

    g = torch.Generator().manual_seed(0)
    ht = torch.randn(4, 12, 32, generator=g)
    same = cka_pairing_null(ht, ht, torch.arange(12), n_perm=99)  # speech = text, frame j = token j
    assert same.n_perm == 99
    np.testing.assert_allclose(np.diagonal(same.p), 1 / 100)  # CKA 1 at a = b: no re-pairing reaches it
    assert (np.diagonal(same.high) < 1.0 - 1e-6).all()
    assert (same.low <= same.mean).all() and (same.mean <= same.high).all()
    again = cka_pairing_null(ht, ht, torch.arange(12), n_perm=99)
    np.testing.assert_array_equal(same.mean, again.mean)  # seeded
    import lsl_core.metrics.cka as cka_module

    monkeypatch.setattr(cka_module, "NULL_CHUNK_ENTRIES", 3 * 4 * 12 * 12)  # 3 pairings per chunk: 33 chunks
    chunked = cka_pairing_null(ht, ht, torch.arange(12), n_perm=99)
    for f in ("mean", "low", "high", "p"):
        np.testing.assert_allclose(getattr(chunked, f), getattr(same, f), atol=1e-12)
    unrelated = cka_pairing_null(torch.randn(4, 30, 32, generator=g), ht, torch.arange(0, 24, 2), n_perm=99)
    assert np.median(unrelated.p) > 0.2  # unrelated states: the observed pairing is one more random pairing
    with pytest.raises(MetricInputError, match="at least 4"):
        cka_pairing_null(ht[:, :3], ht[:, :3], torch.arange(3))


def test_a_cka_path_layer_the_model_lacks_is_refused_not_clamped():
    """cka_path_layer 40 on a 2-layer model was silently taken as layer 2; now one clear error, from the
    analysis, the controls and the pairing helper alike. -1 is the middle layer L // 2."""
    from lsl_core.analysis import AnalysisOptions, metrics_from_states
    from lsl_core.metrics.cka import path_layer
    from lsl_core.metrics.controls import pair_metrics

    assert path_layer(3, -1) == 1 and path_layer(3, 2) == 2 and path_layer(31, -1) == 15
    g = torch.Generator().manual_seed(0)
    hs, ht = torch.randn(3, 9, 8, generator=g), torch.randn(3, 6, 8, generator=g)
    for call in (lambda: path_layer(3, 3), lambda: pair_metrics(hs, ht, cka_path_layer=40),
                 lambda: metrics_from_states(hs, ht, AnalysisOptions(cka=True, cka_path_layer=3))):
        with pytest.raises(MetricInputError, match="layers 0..2"):
            call()
    assert metrics_from_states(hs, ht, AnalysisOptions(cka=True, cka_path_layer=2))["cka"].shape == (3, 3)
