"""Controls with a model (lsl_core.analysis_controls) on the tiny random model: the states are the ones
`hidden_states` gives, text forwards run once per question, the disk cache round-trips, the analysis
cache is filled from the same states, the Explorer's one-clip controls agree with the set's, silence
is built below the audio checks, and `analyze --controls` prints and writes the tables."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import tone

from lsl_core.analysis import AnalysisCache, AnalysisOptions, analyze_sample
from lsl_core.analysis_controls import (
    ControlsCache,
    analyze_controls,
    controls_key,
    controls_report,
    frame_permutation,
    sample_controls,
    shuffled_states,
    silence_states,
    speech_states,
)
from lsl_core.data.samples import Sample
from lsl_core.metrics.controls import METRIC_NAMES, ControlOptions, pair_metrics

QS = ["what is the capital of france ?", "who wrote hamlet ?", "when did world war two end ?",
      "how many legs does a spider have ?"]


def _samples(voices: int = 2) -> list[Sample]:
    """Every question read by `voices` voices (different tones), question-major like sd-qa-mini."""
    return [Sample(id=f"q{k}_v{v}", audio=tone(0.7 + 0.1 * k + 0.05 * v, freq=180 + 40 * k + 15 * v), sr=16_000,
                   question=q, accent=f"voice{v}") for k, q in enumerate(QS) for v in range(voices)]


OPT = ControlOptions(partners=2, candidates=3, n_boot=200)


def test_set_controls_use_the_models_hidden_states_once_per_question(tiny_model, tmp_path, monkeypatch):
    import lsl_core.analysis_controls as ac

    samples = _samples()
    texts = []
    real = ac.text_states
    monkeypatch.setattr(ac, "text_states", lambda m, q: texts.append(q) or real(m, q))
    seen = []
    res = analyze_controls(tiny_model, samples, OPT, cache=ControlsCache(tmp_path),
                           progress=lambda d, t, label: seen.append((d, t)))
    assert sorted(texts) == sorted(QS)  # 4 text forwards for 8 clips
    assert seen[-1] == (12, 12) and [d for d, _ in seen] == list(range(1, 13))
    assert res.n == 8 and res.partners.shape == (8, 2) and (res.n_candidates == 3).all()
    for i in (0, 5):  # matched and mismatched equal the metrics on hidden_states' own states
        s = samples[i]
        hs = tiny_model.hidden_states(s)
        own = pair_metrics(hs.speech, hs.text)
        for m, name in enumerate(METRIC_NAMES):
            np.testing.assert_allclose(res.matched[i, m], own[name].numpy(), atol=1e-5, equal_nan=True, err_msg=name)
        partner_q = res.questions[res.partners[i, 0]]
        assert partner_q != s.question
        other = tiny_model.hidden_states(Sample(id="x", audio=s.audio, sr=s.sr, question=partner_q))
        mis = pair_metrics(other.speech, other.text)
        np.testing.assert_allclose(res.mismatched[i, 0, 0], mis["seq_cos"].numpy(), atol=1e-5)


def test_disk_cache_round_trips_and_keys_every_input(tiny_model, tmp_path, monkeypatch):
    import lsl_core.analysis_controls as ac

    samples = _samples()
    cache = ControlsCache(tmp_path)
    a = analyze_controls(tiny_model, samples, OPT, cache=cache)
    monkeypatch.setattr(ac, "speech_states", lambda *a, **k: pytest.fail("recomputed despite the cache"))
    b = analyze_controls(tiny_model, samples, OPT, cache=cache)
    assert b is not a
    for f in ("matched", "mismatched", "retrieval", "retrieval_mean", "partners", "question_of"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert b.questions == a.questions and b.metrics == a.metrics and b.options == a.options
    key = controls_key(tiny_model, samples, OPT)
    assert controls_key(tiny_model, samples, ControlOptions(partners=1, candidates=3, n_boot=200)) != key
    assert controls_key(tiny_model, samples, ControlOptions(partners=2, candidates=3, n_boot=200,
                                                            centring="joint")) != key
    assert controls_key(tiny_model, samples[:-1], OPT) != key
    # the summary's settings do not change the stored values: same key, and a hit reports the requested ones
    wider = ControlOptions(partners=2, candidates=3, n_boot=300, ci=0.9, bootstrap="sample")
    assert controls_key(tiny_model, samples, wider) == key
    c = analyze_controls(tiny_model, samples, wider, cache=cache)
    assert c.options["n_boot"] == 300 and c.specific().query("layer == -1").n_questions.max() == len(QS)
    louder = [Sample(id=s.id, audio=s.audio * 0.5, sr=s.sr, question=s.question) for s in samples]
    assert controls_key(tiny_model, louder, OPT) != key


def test_centred_result_stores_its_reference(tiny_model, tmp_path):
    res = analyze_controls(tiny_model, _samples(1), ControlOptions(partners=2, candidates=3, n_boot=50,
                                                                   centring="modality"), cache=ControlsCache(tmp_path))
    L, d = tiny_model.num_layers, res.reference.shape[-1]
    assert res.centring == "modality" and res.reference.shape == (1, 2, L + 1, d)
    again = ControlsCache(tmp_path).get(controls_key(tiny_model, _samples(1), ControlOptions(
        partners=2, candidates=3, n_boot=50, centring="modality")))
    np.testing.assert_array_equal(again.reference, res.reference)


def test_analysis_cache_is_filled_from_the_same_states(tiny_model, tmp_path):
    samples = _samples(1)
    cache = AnalysisCache(tmp_path / "analysis")
    import lsl_core.analysis as an

    an._MEMORY.clear()
    analyze_controls(tiny_model, samples, OPT, cache=False, analysis_options=AnalysisOptions())
    for s in samples:
        stored = analyze_sample(tiny_model, s, AnalysisOptions(), cache=cache)
        fresh = analyze_sample(tiny_model, s, AnalysisOptions(), cache=False)
        np.testing.assert_allclose(stored.cos, fresh.cos, atol=1e-6)
        np.testing.assert_allclose(stored.seq_cos, fresh.seq_cos, atol=1e-6)
        assert stored.tokens == fresh.tokens and stored.aps_cos == pytest.approx(fresh.aps_cos, abs=1e-6)


def test_bad_audio_is_left_out_with_a_note(tiny_model, tmp_path):
    bad = Sample(id="bad", audio=np.zeros(0, np.float32), sr=16_000, question=QS[0])
    res = analyze_controls(tiny_model, [bad, *_samples(1)], OPT, cache=False)
    assert res.n == 4 and "bad" not in res.sample_ids
    assert any(n.startswith("bad:") and "empty" in n for n in res.notes)
    assert "note: bad:" in controls_report(res)


def test_blocks_bound_memory_and_keep_every_sample(tiny_model):
    samples = _samples()
    res = analyze_controls(tiny_model, samples, ControlOptions(partners=1, candidates=2, n_boot=50, block_samples=4),
                           cache=False)
    assert res.n == 8 and res.block_of.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert sorted(res.questions) == sorted(QS)
    first_block_q = {res.question_of[i] for i in range(4)}
    assert set(res.partners[:4].ravel().tolist()) <= first_block_q  # partners come from the own block


def test_sample_controls_match_the_set_and_add_silence_and_shuffled_frames(tiny_model, monkeypatch):
    import lsl_core.data.audio as audio_mod
    import lsl_core.model.lslm as lslm_mod

    samples = _samples()
    res = analyze_controls(tiny_model, samples, OPT, cache=False)
    s = samples[3]
    sc = sample_controls(tiny_model, s, [x.question for x in samples], OPT)
    i = res.sample_ids.index(s.id)
    assert sc.partner_questions == [res.questions[k] for k in res.partners[i]]  # the same draw
    np.testing.assert_allclose(sc.matched, res.matched[i], atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(sc.mismatched, res.mismatched[i], atol=1e-6, equal_nan=True)
    spec = sc.curve("seq_cos", "specific")
    np.testing.assert_allclose(spec, res.differences("seq_cos")[i], atol=1e-6)
    assert sc.layer_mean("aps_cos") == pytest.approx(float(np.mean(sc.matched[METRIC_NAMES.index("aps_cos"), 1:])))
    # silence: an all-zero clip of the same length, built below the input checks that refuse silence
    real = audio_mod.prepare_audio

    def refuse_silence(a, sr, *args, **kw):
        if not np.any(np.asarray(a)):
            raise audio_mod.AudioError("silent")
        return real(a, sr, *args, **kw)

    monkeypatch.setattr(lslm_mod, "prepare_audio", refuse_silence)
    hs_sil = silence_states(tiny_model, s.duration)
    np.testing.assert_allclose(sc.silence[0], pair_metrics(hs_sil, tiny_model.hidden_states(s).text)["seq_cos"],
                               atol=1e-5)
    # shuffled: a fixed non-identity order of the same frames; the identity order gives the clip itself
    hs, sp = speech_states(tiny_model, s.audio, s.sr)
    perm = frame_permutation(sp.embeds.shape[0], 0, s.id)
    assert sorted(perm.tolist()) == list(range(sp.embeds.shape[0])) and not (perm == np.arange(len(perm))).all()
    np.testing.assert_array_equal(sc.permutation, perm)
    same = shuffled_states(tiny_model, s.audio, s.sr, np.arange(len(perm)))
    torch.testing.assert_close(same, hs)
    assert not np.allclose(sc.shuffled, sc.matched)
    assert sc.retrieval.shape == (2, 3, tiny_model.num_layers + 1)


def test_analyze_cli_prints_and_writes_the_controls(tiny_parts, tmp_path, capsys):
    from lsl_core.cli import main
    from lsl_core.model.loading import CheckpointManifest, write_manifest
    from lsl_core.results import load_results

    ck = tmp_path / "ck"
    write_manifest(CheckpointManifest(name="tiny-ck", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                                      family="tiny", strategy="none", downsample=5, seed=1), ck)
    folder = tmp_path / "clips"
    folder.mkdir()
    rows = ["file,question,accent"]
    for s in _samples():
        sf.write(folder / f"{s.id}.wav", s.audio, s.sr)
        rows.append(f"{s.id}.wav,{s.question},{s.accent}")
    (folder / "questions.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "res" / "analysis.parquet"
    rc = main(["analyze", "--checkpoint", str(ck), "--samples", f"folder:{folder}", "--device", "cpu", "--out",
               str(out), "--controls", "--partners", "2", "--candidates", "3", "--n-boot", "100"])
    printed = capsys.readouterr().out
    assert rc == 0
    assert "Speech -> text retrieval" in printed and "Specific alignment" in printed and "tiny-ck" in printed
    L = 2  # the tiny LM's layers
    table = [ln for ln in printed.splitlines() if ln.strip().startswith(("0 |", "1 |", "2 |", "mean |"))]
    assert len(table) == 2 * (L + 2)  # retrieval rows and specific-alignment rows, layers 0..L + mean
    res = load_results(out.parent)
    assert res.controls is not None and set(res.controls.table) == {"specific", "retrieval"}
    assert res.alignment is not None and len(res.alignment) == 8  # the ordinary analyze rows, too
    r = res.controls[(res.controls.table == "retrieval") & (res.controls.scorer == "seq_cos")]
    assert sorted(r.layer.tolist()) == [-1, *range(L + 1)] and (r.checkpoint == "tiny-ck").all()
    assert r.chance_top1.iloc[0] == pytest.approx(1 / 3)
    centred = tmp_path / "res" / "centred.parquet"
    assert main(["analyze", "--checkpoint", str(ck), "--samples", f"folder:{folder}", "--device", "cpu", "--out",
                 str(centred), "--controls-only", "--centring", "joint", "--partners", "2", "--candidates", "3",
                 "--n-boot", "100"]) == 0
    assert "centring=joint" in capsys.readouterr().out and not centred.exists()  # no second alignment table
    both = load_results(out.parent)
    assert set(both.controls.centring) == {"none", "joint"} and len(both.alignment) == 8
    assert main(["analyze", "--checkpoint", str(ck), "--samples", f"folder:{folder}", "--out", str(out),
                 "--controls", "--num-shards", "2"]) == 2
    assert "unsharded" in capsys.readouterr().err


def test_controls_means_give_one_row_per_checkpoint_for_the_gap_fit(tiny_model):
    from lsl_core.analysis_controls import controls_table
    from lsl_core.results import controls_means

    res = analyze_controls(tiny_model, _samples(1), OPT, cache=False)
    rows = controls_table(res, checkpoint="a", family="f", strategy="s", step=1)
    means = controls_means(rows)
    assert len(means) == 1 and means.loc[0, "checkpoint"] == "a"
    spec = res.specific().query("metric == 'aps_cos' and layer == -1").iloc[0]
    assert means.loc[0, "specific_aps_cos"] == spec.specific and means.loc[0, "matched_aps_cos"] == spec.matched
    retr = res.retrieval_table().query("scorer == 'seq_cos' and layer == -1").iloc[0]
    assert means.loc[0, "top1_seq_cos"] == retr.top1 and means.loc[0, "chance_top1"] == pytest.approx(1 / 3)
    import pandas as pd

    from lsl_core.errors import DataError

    mixed = pd.concat([rows, rows.assign(centring="joint")])
    with pytest.raises(DataError, match="mixes centrings"):
        controls_means(mixed)
    assert len(controls_means(mixed, centring="joint")) == 1
