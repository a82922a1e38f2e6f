"""analyze_sample / analyze_set on the tiny model: results equal the metrics on the raw states,
the disk cache round-trips exactly, sets stream with per-sample rows (sharding: tests/test_experiments.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tone

from lsl_core.analysis import AnalysisCache, AnalysisOptions, analyze_sample, analyze_set, sample_key
from lsl_core.data.samples import Sample
from lsl_core.metrics.sequence import sequence_cosine
from lsl_core.metrics.tokenwise import token_cosine_matrix

QS = ["what is the capital of france ?", "who wrote hamlet ?", "when did world war two end ?",
      "how many legs does a spider have ?", "where is mount everest ?", "which planet is largest ?"]


def _samples(n=6):
    return [Sample(id=f"s{i}", audio=tone(0.8 + 0.15 * i, freq=200 + 30 * i), sr=16_000, question=QS[i % len(QS)],
                   accent="espeak:en-gb" if i % 2 else "espeak:en-us") for i in range(n)]


def test_sample_analysis_matches_metrics_on_raw_states(tiny_model, tmp_path):
    s = _samples(1)[0]
    a = analyze_sample(tiny_model, s, cache=AnalysisCache(tmp_path))
    hs = tiny_model.hidden_states(s)
    np.testing.assert_allclose(a.cos, token_cosine_matrix(hs.speech, hs.text).numpy(), atol=1e-6)
    np.testing.assert_allclose(a.seq_cos, sequence_cosine(hs.speech, hs.text).numpy(), atol=1e-6)
    L = tiny_model.num_layers
    assert a.cos.shape == (L + 1, hs.speech.shape[1], hs.text.shape[1])
    assert a.path_cos.shape == (L + 1, len(a.tokens))
    np.testing.assert_array_equal(a.path_cos, a.cos.argmax(axis=1))
    assert a.tokens == hs.tokens
    assert -1 <= a.aps_cos <= 1 and a.aps_dist >= 0
    assert a.cka is not None and a.cka.shape == (L + 1, L + 1)
    row = a.scalars()
    assert row["Ts"] == hs.speech.shape[1] and len(row["seq_cos"]) == L + 1


def test_disk_cache_roundtrip_and_key(tiny_model, tmp_path):
    s = _samples(1)[0]
    cache = AnalysisCache(tmp_path)
    a = analyze_sample(tiny_model, s, cache=cache)
    key = sample_key(tiny_model, s, AnalysisOptions())
    b = cache.get(key)
    assert b is not None and b is not a
    for f in ("cos", "dist", "path_cos", "scores_dist", "spearman_cos", "consistency", "cka", "frame_times"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert b.tokens == a.tokens and b.aps_cos == a.aps_cos
    # every result-changing input changes the key
    other = Sample(id=s.id, audio=s.audio * 0.5, sr=s.sr, question=s.question)
    assert sample_key(tiny_model, other, AnalysisOptions()) != key
    assert sample_key(tiny_model, s, AnalysisOptions(cka=False)) != key
    renamed = Sample(id=s.id, audio=s.audio, sr=s.sr, question=s.question + " x")
    assert sample_key(tiny_model, renamed, AnalysisOptions()) != key


def test_single_token_question_is_defined(tiny_model, tmp_path):
    s = Sample(id="one", audio=tone(0.5), sr=16_000, question="paris")
    a = analyze_sample(tiny_model, s, cache=False)
    assert a.cos.shape[2] == 1
    assert np.isfinite(a.spearman_cos).all() and np.isfinite(a.aps_cos)
    assert a.cka is None and "4" in a.cka_note  # CKA needs >= 4 aligned pairs: said, not NaN
    assert a.cka_null_mean is None and a.cka_null_p is None  # and no null for it


def test_analyze_set_streams_rows_and_aggregates(tiny_model, tmp_path):
    samples = _samples(6)
    seen = []
    res = analyze_set(tiny_model, samples, progress=lambda i, t, sid: seen.append((i, t, sid)),
                      cache=AnalysisCache(tmp_path), cka_batch=4)
    assert res.n == 6 and len(res.rows) == 6 and [s[0] for s in seen] == list(range(1, 7))
    assert set(res.rows["voice"]) == {"espeak:en-gb", "espeak:en-us"}
    per = np.stack([analyze_sample(tiny_model, s, cache=AnalysisCache(tmp_path)).seq_cos for s in samples])
    np.testing.assert_allclose(res.mean_seq_cos, per.mean(0), atol=1e-6)
    L = tiny_model.num_layers
    assert res.pooled_cka.shape == (L + 1, L + 1) and np.isfinite(res.pooled_cka).all()
    nulls = np.stack([analyze_sample(tiny_model, s, cache=AnalysisCache(tmp_path)).cka_null_mean for s in samples])
    np.testing.assert_allclose(res.mean_cka_null, nulls.mean(0), atol=1e-6)  # the mean of the samples' nulls
    assert (res.mean_cka_null_low <= res.mean_cka_null + 1e-9).all()
    assert (res.mean_cka_null <= res.mean_cka_null_high + 1e-9).all()


def test_analyze_set_spreads_over_questions(tiny_model, tmp_path):
    """Two clips of each of 3 questions: the mean CKA's interval draws questions (a cluster bootstrap)."""
    import dataclasses

    from lsl_core.metrics.stats import bootstrap_ci

    samples = [dataclasses.replace(s, question=QS[i % 3]) for i, s in enumerate(_samples(6))]
    res = analyze_set(tiny_model, samples, cache=AnalysisCache(tmp_path))
    mats = np.stack([analyze_sample(tiny_model, s, cache=AnalysisCache(tmp_path)).cka for s in samples])
    by_question, by_clip = bootstrap_ci(mats, groups=[s.question for s in samples]), bootstrap_ci(mats)
    np.testing.assert_allclose(res.mean_cka_low, by_question.low, atol=1e-6)
    assert not np.allclose(res.mean_cka_low, by_clip.low, atol=1e-6)


def test_analyze_set_skips_bad_audio_with_a_note(tiny_model, tmp_path):
    bad = Sample(id="bad", audio=np.zeros(0, np.float32), sr=16_000, question="who wrote hamlet ?")
    res = analyze_set(tiny_model, [bad, *_samples(4)], cache=AnalysisCache(tmp_path))
    assert res.n == 4 and any(e.startswith("bad:") and "empty" in e for e in res.errors)


def test_dtw_path_option_is_used_everywhere_and_keys_the_cache(tiny_model, tmp_path):
    from lsl_core.metrics.cka import cross_layer_cka
    from lsl_core.metrics.norms import standardized_distance, token_norms
    from lsl_core.metrics.tokenwise import dtw_path, path_monotonicity

    s = _samples(3)[2]
    a = analyze_sample(tiny_model, s, AnalysisOptions(path="dtw"), cache=AnalysisCache(tmp_path))
    hs = tiny_model.hidden_states(s)
    cos, dist = torch.from_numpy(a.cos), torch.from_numpy(a.dist)
    np.testing.assert_array_equal(a.path_cos, dtw_path(cos, "cosine").numpy())
    np.testing.assert_array_equal(a.path_dist, dtw_path(dist, "distance").numpy())
    assert (np.diff(a.path_cos, axis=1) >= 0).all() and a.path_method == "dtw"
    np.testing.assert_allclose(a.spearman_cos, path_monotonicity(torch.from_numpy(a.path_cos)).numpy())
    np.testing.assert_allclose(a.scores_cos, np.take_along_axis(a.cos, a.path_cos[:, None, :], 1)[:, 0])
    L = tiny_model.num_layers
    np.testing.assert_allclose(a.cka, cross_layer_cka(hs.speech, hs.text, torch.from_numpy(a.path_cos[L // 2])).numpy())
    from lsl_core.metrics.cka import cka_pairing_null

    null = cka_pairing_null(hs.speech, hs.text, torch.from_numpy(a.path_cos[L // 2]))  # the same path's null
    for f in ("mean", "low", "high", "p"):
        np.testing.assert_allclose(getattr(a, f"cka_null_{f}"), getattr(null, f), atol=1e-6)
    n_s, n_t = token_norms(hs.speech, hs.text)
    np.testing.assert_allclose(a.norm_speech, n_s.numpy())
    np.testing.assert_allclose(a.std_dist, standardized_distance(hs.speech, hs.text).numpy())
    row = a.scalars()
    assert row["path"] == "dtw" and len(row["std_dist"]) == L + 1
    assert sample_key(tiny_model, s, AnalysisOptions(path="dtw")) != sample_key(tiny_model, s, AnalysisOptions())
    b = AnalysisCache(tmp_path).get(sample_key(tiny_model, s, AnalysisOptions(path="dtw")))
    np.testing.assert_array_equal(b.std_dist, a.std_dist)
    np.testing.assert_array_equal(b.cka_null_high, a.cka_null_high)  # the null survives the disk cache
    assert b.path_method == "dtw"
    with pytest.raises(ValueError, match="AnalysisOptions.path"):
        AnalysisOptions(path="viterbi")


def test_set_spread_resamples_questions_not_clips():
    """The voices of one question are not independent draws: with each question's clips identical, the mean
    CKA's interval is the one of the distinct questions alone (equal clusters: the same draws), wider than
    taking the clips as independent; one question gives no interval; the pooled-CKA jackknife leaves a question
    out."""
    from lsl_core.analysis import _set_spread
    from lsl_core.metrics.stats import bootstrap_ci, pooled_cka_interval

    rng = np.random.default_rng(0)
    distinct = [rng.uniform(size=(3, 3)) for _ in range(4)]
    mats, qs = [m for m in distinct for _ in range(3)], [q for q in "abcd" for _ in range(3)]
    spread = _set_spread(mats, [], [], None, mats, qs, [])
    want = bootstrap_ci(np.stack(distinct))
    np.testing.assert_allclose(spread["mean_cka_low"], want.low, atol=1e-12)
    np.testing.assert_allclose(spread["mean_cka_null_high"], want.high, atol=1e-12)
    naive = _set_spread(mats, [], [], None)  # clips as independent: narrower
    assert (naive["mean_cka_high"] - naive["mean_cka_low"]).mean() < (want.high - want.low).mean()
    one = _set_spread(mats[:3], [], [], None, mats[:3], qs[:3], [])
    assert one.get("mean_cka_low") is None and one["mean_cka_null"] is not None and one["mean_cka_n"] == 3
    xs, yt = rng.standard_normal((12, 3, 5)), rng.standard_normal((12, 3, 5))  # per sample [L+1, d]
    pooled = np.full((3, 3), 0.5)
    got = _set_spread([], list(xs), list(yt), pooled, None, [], qs)
    ref = pooled_cka_interval(np.stack(list(xs), 1), np.stack(list(yt), 1), pooled, groups=qs)
    np.testing.assert_allclose(got["pooled_cka_low"], ref.low)
    assert got["pooled_cka_spread_n"] == 12
    assert "pooled_cka_low" not in _set_spread([], list(xs), list(yt), pooled, None, [], ["a"] * 12)
