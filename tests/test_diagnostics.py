"""lsl_core.metrics.diagnostics and the audio sanity checks: what a number cannot say, as data.

Paths are hand-built so each flag's threshold is checked on both sides; the analysis result carries
the flags (also when loaded from an older cache without them); silence is refused on the user-input
paths (upload, sample-set files) but still analysable on purpose."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from lsl_core.data import audio as A
from lsl_core.errors import AudioError
from lsl_core.metrics import diagnostics as D


# ============================================================================ path flags
def test_top_frames_share_and_collapse_threshold():
    path = np.array([
        [0, 0, 0, 0, 0, 0, 0, 9],  # 7/8 on frame 0 -> share 1.0 (two frames hold all)
        [0, 1, 2, 3, 4, 5, 6, 7],  # spread: 2/8
        [0, 0, 0, 1, 1, 1, 2, 3],  # 6/8 = 0.75: exactly the threshold -> collapsed
        [0, 0, 0, 1, 1, 2, 3, 4],  # 5/8 -> not collapsed
    ])
    np.testing.assert_allclose(D.top_frames_share(path), [1.0, 0.25, 0.75, 0.625])
    assert D.collapsed_path(path).tolist() == [True, False, True, False]
    short = np.array([[0, 0, 0], [0, 1, 2]])  # Tt = 3 < MIN_TOKENS_COLLAPSE: not judged
    assert D.collapsed_path(short).tolist() == [False, False]


def test_spearman_undefined_for_constant_paths_and_single_tokens():
    assert D.spearman_undefined(np.array([[3, 3, 3], [0, 1, 1]])).tolist() == [True, False]
    assert D.spearman_undefined(np.array([[5]])).tolist() == [True]
    from lsl_core.metrics.tokenwise import path_monotonicity

    p = torch.tensor([[3, 3, 3], [0, 1, 1]])
    assert path_monotonicity(p)[0] == 0.0  # the convention the note explains


def test_cka_and_small_n_notes():
    assert D.cka_pairs_status(3) == "undefined" and D.cka_note(3).code == "cka_undefined"
    assert D.cka_pairs_status(6) == "few" and "biased upwards" in D.cka_note(6).message
    assert D.cka_note(D.CKA_FEW_PAIRS) is None
    note = D.small_n_note(2, "the Δ F1")
    assert note.code == "small_n" and "(2 samples, under 10) for the Δ F1" in note.message
    assert "95% intervals" in note.message
    assert D.small_n_note(D.SMALL_N) is None and "(1 sample," in D.small_n_note(1).message


def test_cka_null_note_names_the_layers_within_the_null():
    cka = np.array([[0.9, 0.1, 0.2], [0.3, 0.5, 0.4], [0.2, 0.3, 0.8]])
    high = np.full((3, 3), 0.6)
    note = D.cka_null_note(cka, high, "the argmax path")
    assert note.code == "cka_null" and note.severity == "info"
    assert "For the argmax path" in note.message and "at 1 of 3 layers (1)" in note.message  # 0.5 <= 0.6
    assert D.cka_null_note(cka, np.full((3, 3), 0.4)) is None  # every diagonal cell above its null
    assert "at 3 of 3 layers (0, 1, 2)" in D.cka_null_note(cka, np.ones((3, 3))).message
    assert D.cka_null_note(None, high) is None and D.cka_null_note(cka, None) is None


def _analysis(path_cos, path_dist=None):
    from lsl_core.analysis import SampleAnalysis

    path_cos = np.asarray(path_cos)
    L1, Tt = path_cos.shape
    Ts = int(path_cos.max()) + 2
    z = np.zeros
    return SampleAnalysis(
        sample_id="s", model="m", digest="d", tokens=[f"t{j}" for j in range(Tt)], frame_times=np.arange(Ts) * 0.02,
        frame_seconds=0.02, seq_cos=z(L1), seq_dist=z(L1), cos=z((L1, Ts, Tt)), dist=z((L1, Ts, Tt)),
        path_cos=path_cos, path_dist=path_cos if path_dist is None else np.asarray(path_dist),
        scores_cos=z((L1, Tt)), scores_dist=z((L1, Tt)), spearman_cos=z(L1), spearman_dist=z(L1), consistency=z(L1),
        aps_cos=0.0, aps_dist=0.0, pooled_speech=z((L1, 4)), pooled_text=z((L1, 4)), cka=None)


def test_analysis_result_carries_flags_and_notes(tmp_path):
    from lsl_core.analysis import AnalysisCache

    a = _analysis([[0, 1, 2, 3, 4], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    assert a.collapsed_cos.tolist() == [False, True, True]
    assert a.spearman_undefined_cos.tolist() == [False, True, False]
    codes = [n.code for n in D.layer_notes(a, 1)]
    assert codes == ["collapsed_path", "spearman_undefined"]
    assert [n.code for n in D.layer_notes(a, 0)] == []
    assert "100% of the 5 tokens" in D.layer_notes(a, 2)[0].message
    row = a.scalars()
    assert row["collapsed_cos_frac"] == 1.0 and row["spearman_undefined_cos_frac"] == 0.5  # layers 1..L
    assert {n.code for n in D.sample_notes(a)} == {"collapsed_path", "spearman_undefined"}
    assert [n.code for n in D.set_notes([row, row])] == ["collapsed_path", "spearman_undefined"]
    # round trip through the disk cache; an entry written before the flags existed gets them recomputed
    cache = AnalysisCache(tmp_path)
    cache.put("k", a)
    back = cache.get("k")
    assert back.collapsed_cos.tolist() == a.collapsed_cos.tolist()
    old = np.load(tmp_path / "k.npz")
    np.savez(tmp_path / "old.npz", **{k: old[k] for k in old.files if "collapsed" not in k and "undefined" not in k
                                      and "top_share" not in k})
    (tmp_path / "old.json").write_text((tmp_path / "k.json").read_text())
    assert cache.get("old").collapsed_cos.tolist() == [False, True, True]


@pytest.mark.slow
def test_embedded_analysis_flags_match_its_paths(embedded_model, mini_set):
    """On the shipped model the flags are those of the stored paths (the measured collapse is reported, not pinned)."""
    from lsl_core.analysis import analyze_sample

    a = analyze_sample(embedded_model, mini_set[0])
    np.testing.assert_array_equal(a.collapsed_cos, D.collapsed_path(a.path_cos))
    np.testing.assert_array_equal(a.spearman_undefined_dist, D.spearman_undefined(a.path_dist))
    assert a.collapsed_cos.shape == (a.num_layers + 1,)


# ============================================================================ audio sanity
def _wav(x: np.ndarray, sr: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _speech_like(seconds: float, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (level * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def test_silence_and_near_silence_are_refused_speech_passes():
    with pytest.raises(AudioError, match="no speech energy.*digital silence"):
        A.check_speech(np.zeros(1600, np.float32))
    quiet = np.random.default_rng(0).normal(scale=10 ** (-62 / 20), size=16_000).astype(np.float32)  # -62 dBFS
    with pytest.raises(AudioError, match=r"-6\d dBFS, below the -50 dBFS"):
        A.check_speech(quiet)
    ok = A.check_speech(_speech_like(1.5))
    assert ok.warnings == () and ok.level_dbfs > -20 and ok.active_seconds == pytest.approx(1.5, abs=0.03)
    # the threshold is one constant: a tone 1 dB above it passes, 1 dB below it fails
    for db, passes in ((A.SILENCE_DBFS + 1, True), (A.SILENCE_DBFS - 1, False)):
        tone = np.sqrt(2) * 10 ** (db / 20) * np.sin(2 * np.pi * 200 * np.arange(16_000) / 16_000)
        if passes:
            A.check_speech(tone)
        else:
            with pytest.raises(AudioError):
                A.check_speech(tone)


def test_short_speech_warns_and_leading_silence_does_not_count():
    x = np.concatenate([np.zeros(16_000, np.float32), _speech_like(0.3)])
    chk = A.check_speech(x)
    assert chk.active_seconds == pytest.approx(0.3, abs=0.03)
    assert len(chk.warnings) == 1 and "Very short speech" in chk.warnings[0]


def test_upload_refuses_silence_once_with_a_clean_message():
    from ui.upload import AUDIO_TYPES, sample_from_upload

    with pytest.raises(AudioError) as exc:
        sample_from_upload("quiet.wav", _wav(np.zeros(1600, np.float32)), "what is it ?")
    assert str(exc.value).startswith("'quiet.wav': The clip has no speech energy")
    with pytest.raises(AudioError) as bad:
        sample_from_upload("x.wav", b"not audio at all", "q")
    msg = str(bad.value)
    assert "object at 0x" not in msg and "BytesIO" not in msg
    assert all(f.upper() in msg for f in AUDIO_TYPES)  # every format the uploader accepts
    with pytest.raises(AudioError) as tiny:
        A.prepare_audio(np.ones(1, np.float32), 16_000)
    assert "1 sample at" in str(tiny.value) and "1 samples" not in str(tiny.value)
    s = sample_from_upload("short.wav", _wav(_speech_like(0.3)), "hi ?")
    assert s.meta["audio_warnings"] and "Very short speech" in s.meta["audio_warnings"][0]


def test_sample_set_refuses_a_silent_file_but_the_model_still_analyses_silence(tmp_path, tiny_model):
    from lsl_core.analysis import analyze_sample
    from lsl_core.data.samples import Sample
    from lsl_core.data.sets import load_sample_set

    sf.write(tmp_path / "a.wav", _speech_like(1.0), 16_000)
    sf.write(tmp_path / "b.wav", np.zeros(16_000, np.float32), 16_000)
    (tmp_path / "questions.csv").write_text("file,question\na.wav,what is a ?\nb.wav,what is b ?\n")
    s = load_sample_set(f"folder:{tmp_path}")
    assert s["a"].question == "what is a ?"
    with pytest.raises(AudioError, match="Sample b: The clip has no speech energy"):
        s["b"]
    # a control built on purpose below the input checks: silence goes through the model
    silent = Sample(id="silence", audio=np.zeros(16_000, np.float32), sr=16_000, question="what is b ?")
    a = analyze_sample(tiny_model, silent, cache=False)
    assert a.cos.shape[1] > 0


def test_intervention_null_note_names_the_pairs_a_null_matches():
    import pandas as pd

    nulls = pd.DataFrame({"condition": ["Angle·Bottom3", "Length·All", "Angle·All"],
                          "null": ["Angle·Random3", "Length·All (shuffled pairing)", "Angle·All (other question)"],
                          "Δ agreement": [10.0, 0.7, -4.0], "Δ agreement_lo": [3.9, -0.9, -6.0],
                          "Δ agreement_hi": [15.9, 2.6, -2.0]})
    note = D.intervention_null_note(nulls)
    assert note.code == "intervention_null" and "1 of 3" in note.message
    assert "Length·All vs Length·All (shuffled pairing)" in note.message and "Angle·Bottom3" not in note.message
    assert D.intervention_null_note(nulls.iloc[[0, 2]]) is None  # both intervals clear 0 (one below it)
    assert D.intervention_null_note(nulls.iloc[:0]) is None and D.intervention_null_note(None) is None
    edge = nulls.assign(**{"Δ agreement_lo": [0.0, 1.0, 1.0]})  # an interval that ends at 0 holds it
    assert "Angle·Bottom3 vs Angle·Random3" in D.intervention_null_note(edge).message
