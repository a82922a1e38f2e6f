"""Evaluation on tiny random models: batched generation equals one-at-a-time generation, per-sample
scores and the per-voice GAP summary match hand computations, and the CLI writes the results
(parquet, JSON, markdown) for a zoo, delegating --intervention to experiments.table1."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from conftest import tone

from lsl_core.data.samples import Sample
from lsl_core.data.sets import SampleSet
from lsl_core.experiments.evaluate import EvalOptions, evaluate_checkpoint, markdown_tables, select_samples, summarize
from lsl_core.model import batch as B
from lsl_core.scoring import answer_agreement, score_sdqa

QUESTIONS = {"q1": ("what is the capital of france ?", ("paris",)),
             "q2": ("who wrote hamlet ?", ("shakespeare",)),
             "q3": ("how many legs does a spider have ?", ("eight", "8"))}
VOICES = ("en-gb", "en-us", "en-gb-scotland")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))


def _samples() -> SampleSet:
    """3 questions x 3 'voices' (tones of different lengths/pitches), question-major like sd-qa-mini."""
    items = []
    for k, (qid, (q, refs)) in enumerate(QUESTIONS.items()):
        for j, v in enumerate(VOICES):
            items.append(Sample(id=f"{qid}__{v}", audio=tone(0.9 + 0.35 * k + 0.2 * j, freq=150 + 60 * j), sr=16_000,
                                question=q, answers=refs, accent=f"espeak:{v}", source="test",
                                meta={"example_id": qid, "voice": v}))
    return SampleSet("tiny-set", items)


# ----------------------------------------------------------------------------- batched generation
@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_batched_generation_equals_one_at_a_time(tiny_model, batch_size):
    s = _samples()
    texts = [QUESTIONS[q][0] for q in QUESTIONS] + ["where is mount everest ?", "which planet is largest ?"]
    want_text = [tiny_model.generate(text=q, max_new_tokens=7) for q in texts]
    got_text = B.generate_batch(tiny_model, [B.text_query(tiny_model, q) for q in texts], 7, batch_size)
    assert got_text == want_text
    clips = [s[i] for i in (0, 4, 8, 2)]  # different lengths -> real left padding
    want_sp = [tiny_model.generate(audio=c.audio, sr=c.sr, max_new_tokens=7) for c in clips]
    queries = [B.speech_query(tiny_model, tiny_model.encoder.encode(c.audio)) for c in clips]
    assert len({q.shape[0] for q in queries}) > 1
    assert B.generate_batch(tiny_model, queries, 7, batch_size) == want_sp


def test_generate_ids_stop_at_eos(tiny_model):
    ids = B.generate_ids_batch(tiny_model, [B.text_query(tiny_model, "who wrote hamlet ?")], 12, 4)[0]
    eos = tiny_model.tokenizer.eos_token_id
    assert len(ids) <= 12 and (eos not in ids or ids.index(eos) == len(ids) - 1)


def test_encoder_state_cache_roundtrip(tiny_model):
    a = tone(1.1)
    calls = []

    def audio():
        calls.append(1)
        return a

    first = B.cached_encoder_states(tiny_model.encoder, "en-gb", "clip/1", audio, B.audio_key(a))
    again = B.cached_encoder_states(tiny_model.encoder, "en-gb", "clip/1", audio, B.audio_key(a))
    assert len(calls) == 1 and first.dtype == torch.float16 and torch.equal(first, again)
    torch.testing.assert_close(first.float(), tiny_model.encoder.encode(a), atol=2e-3, rtol=2e-3)
    assert first.shape[0] == tiny_model.encoder.n_valid_frames(a.size)


# ----------------------------------------------------------------------------- one checkpoint
def test_evaluate_checkpoint_rows_match_direct_computation(tiny_model):
    s = _samples()
    df = evaluate_checkpoint(tiny_model, s, EvalOptions(max_new_tokens=6, batch_size=4, cascade=False))
    assert list(df["sample_id"]) == s.ids() and len(df) == 9
    assert df.groupby("example_id")["text_answer"].nunique().eq(1).all()  # one text answer per question
    for _, r in df.iterrows():
        sample = s[r["sample_id"]]
        assert r["text_answer"] == tiny_model.generate(text=sample.question, max_new_tokens=6)
        states = B.cached_encoder_states(tiny_model.encoder, r["voice"], sample.id, lambda: sample.audio,
                                         B.audio_key(sample.audio))
        prompt = tiny_model.build_prompt(B.speech_query(tiny_model, states))
        assert r["speech_answer"] == tiny_model.generate_from_prompt(prompt, 6)
        sc = score_sdqa(r["speech_answer"], sample.answers)
        assert r["speech_f1"] == pytest.approx(sc["f1"]) and r["speech_containment"] == sc["containment"]
        assert r["agreement"] == pytest.approx(answer_agreement(r["speech_answer"], r["text_answer"]))
        assert r["unseen"] == (r["voice"] == "en-gb-scotland")
    again = evaluate_checkpoint(tiny_model, s, EvalOptions(max_new_tokens=6, batch_size=4, cascade=False))  # cached
    pd.testing.assert_frame_equal(df, again)


def test_cascade_answers_the_transcript_and_answerable_gap(tiny_model, monkeypatch, tmp_path, capsys):
    """The cascade answers what the ASR heard with the same LLM; a transcript equal to the question gives the
    text answer (agreement 1), another question's transcript gives that question's answer."""
    from lsl_core.experiments.evaluate import add_other_question_baseline, headline_intervals, summarize

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))  # transcripts are cached on disk
    s = _samples()
    heard = {sid: s[sid].question for sid in s.ids()}
    other = s.ids()[0]
    swapped = next(i for i in s.ids() if s[i].question != s[other].question)
    heard[other] = s[swapped].question  # the ASR "mishears" one clip as another question
    by_audio = {B.audio_key(s[i].audio): heard[i] for i in s.ids()}
    monkeypatch.setattr(type(tiny_model), "transcribe", lambda self, audio, sr: by_audio[B.audio_key(audio)],
                        raising=False)
    monkeypatch.setattr(type(tiny_model), "has_asr", property(lambda self: True), raising=False)
    df = evaluate_checkpoint(tiny_model, s, EvalOptions(max_new_tokens=6, batch_size=4), use_cache=False)
    for _, r in df.iterrows():
        assert r["transcript"] == heard[r["sample_id"]]
        assert r["cascade_answer"] == tiny_model.generate(text=heard[r["sample_id"]], max_new_tokens=6)
        assert r["cascade_agreement"] == pytest.approx(answer_agreement(r["cascade_answer"], r["text_answer"]))
    assert (df.loc[df["sample_id"] != other, "cascade_agreement"] == 1.0).all()
    df = df.assign(text_containment=[1.0, 1.0, 0.0] * 3, speech_containment=[0.0, 1.0, 0.0] * 3)
    summ = summarize(df).set_index("voice")
    allv = summ.loc["all"]
    answerable = df[df["text_containment"] == 1.0]
    assert allv["n_answerable"] == len(answerable)
    assert allv["gap_answerable"] == pytest.approx(1.0 - answerable["speech_containment"].mean())
    head = headline_intervals(df)
    seen = head[head["voice"] == "seen"].iloc[0]
    q = df[~df["unseen"]].groupby("question")[["agreement", "cascade_agreement"]].mean()
    assert seen["n_q"] == len(q) and seen["agreement"] == pytest.approx(q["agreement"].mean())
    assert seen["ratio"] == pytest.approx(q["agreement"].mean() / q["cascade_agreement"].mean())
    assert seen["agreement_lo"] <= seen["agreement"] <= seen["agreement_hi"]
    # above answer style: each side minus its agreement with the other questions' text answers
    df = add_other_question_baseline(df)
    for _, r in df.iterrows():
        others = [t for qq, t in zip(df["question"], df["text_answer"]) if qq != r["question"]]
        others = list(dict.fromkeys(others))  # one text answer per question
        assert r["cascade_agreement_other_q"] == pytest.approx(
            sum(answer_agreement(r["cascade_answer"], t) for t in others) / len(others))
    assert "cascade_agreement_other_q" in summarize(df).columns
    # progress: one bar over the phases that ends full: 3 text answers + 9 transcripts + 3 distinct transcripts
    # answered + 9 encoder states + 9 speech answers
    capsys.readouterr()
    evaluate_checkpoint(tiny_model, s, EvalOptions(max_new_tokens=6, batch_size=4), use_cache=False, progress=True)
    err = capsys.readouterr().err
    assert "speech answers" in err and "33/33" in err and "34/" not in err


def test_ratio_above_answer_style_by_hand():
    """(agreement - other-q) / (cascade agreement - cascade other-q), voices of a question averaged first;
    no ratio where the cascade is not above its own style baseline."""
    from lsl_core.experiments.evaluate import headline_intervals

    rows = []
    # question: (agreement, other-q, cascade agreement, cascade other-q) on the two seen voices
    vals = {"q1": [(0.5, 0.1, 0.9, 0.1), (0.3, 0.1, 0.7, 0.1)], "q2": [(0.2, 0.2, 0.6, 0.2), (0.2, 0.0, 0.6, 0.0)],
            "q3": [(0.4, 0.1, 0.5, 0.3), (0.4, 0.1, 0.5, 0.3)]}
    for q, per_voice in vals.items():
        for v, (a, ao, c, co) in zip(("v1", "v2"), per_voice):
            rows.append(dict(checkpoint="A", strategy="lora", step=1, question=q, voice=v, agreement=a,
                             agreement_other_q=ao, cascade_agreement=c, cascade_agreement_other_q=co,
                             speech_containment=0.0, text_containment=0.0))
    r = headline_intervals(pd.DataFrame(rows), unseen_voice="vx").iloc[0]
    num = ((0.4 - 0.1) + (0.2 - 0.1) + (0.4 - 0.1)) / 3  # per question: voices averaged first
    den = ((0.8 - 0.1) + (0.6 - 0.1) + (0.5 - 0.3)) / 3
    assert r["agreement_specific"] == pytest.approx(num) and r["cascade_agreement_specific"] == pytest.approx(den)
    assert r["ratio_specific"] == pytest.approx(num / den)
    assert r["ratio_specific_lo"] <= num / den <= r["ratio_specific_hi"] and r["ratio_specific_lo"] < r["ratio_specific_hi"]
    flat = pd.DataFrame(rows).assign(cascade_agreement_other_q=lambda d: d["cascade_agreement"])
    assert pd.isna(headline_intervals(flat, unseen_voice="vx").iloc[0].get("ratio_specific", float("nan")))


def test_select_samples_first_questions_all_voices():
    s = _samples()
    sub = select_samples(s, n_questions=2)
    assert sub.ids() == [f"{q}__{v}" for q in ("q1", "q2") for v in VOICES]
    assert select_samples(s, 2, voices=["en-us"]).ids() == ["q1__en-us", "q2__en-us"]


# ----------------------------------------------------------------------------- summary
def test_summary_gap_by_hand():
    rows = []
    # checkpoint A: text F1 1.0 everywhere; speech F1 0.5 on v1, 0.0 on the unseen voice
    for q in ("a", "b"):
        rows.append(dict(checkpoint="A", family="f", strategy="lora", step=10, sample_id=f"{q}1", voice="v1",
                         unseen=False, text_containment=1.0, speech_containment=1.0, text_f1=1.0, speech_f1=0.5,
                         agreement=0.5))
        rows.append(dict(checkpoint="A", family="f", strategy="lora", step=10, sample_id=f"{q}2", voice="v2",
                         unseen=False, text_containment=1.0, speech_containment=0.0, text_f1=1.0,
                         speech_f1=0.25 if q == "a" else 0.75, agreement=0.0))
        rows.append(dict(checkpoint="A", family="f", strategy="lora", step=10, sample_id=f"{q}3", voice="vx",
                         unseen=True, text_containment=1.0, speech_containment=0.0, text_f1=1.0, speech_f1=0.0,
                         agreement=0.2))
    out = summarize(pd.DataFrame(rows)).set_index("voice")
    assert list(out.index) == ["v1", "v2", "vx", "seen", "all"]
    assert out.loc["v1", "gap_f1"] == pytest.approx(0.5) and out.loc["v2", "gap_f1"] == pytest.approx(0.5)
    assert out.loc["vx", "gap_f1"] == pytest.approx(1.0) and bool(out.loc["vx", "unseen"])
    assert out.loc["seen", "gap_containment"] == pytest.approx(0.5) and out.loc["seen", "n"] == 4
    assert out.loc["all", "speech_f1"] == pytest.approx((0.5 * 2 + 0.25 + 0.75) / 6)
    assert out.loc["seen", "agreement"] == pytest.approx(0.25)
    rows.append(dict(rows[0], checkpoint="U", strategy="none", step=0))
    assert list(dict.fromkeys(summarize(pd.DataFrame(rows))["checkpoint"])) == ["U", "A"]  # untrained first
    md = markdown_tables(out.reset_index(), {"command": "x", "samples": "s", "n_questions": 2, "voices": ["v1", "v2", "vx"],
                                             "unseen_voice": "vx", "max_new_tokens": 5, "device": "cpu",
                                             "pedant": "PEDANT not used."})
    assert "| A | lora | 10 | 100.0 | 50.0 | 0.0 | 50.0 | 100.0 |" in md
    assert "| A | vx (unseen) | 2 |" in md


def test_other_question_baseline_by_hand():
    from lsl_core.experiments.evaluate import add_other_question_baseline

    df = pd.DataFrame({"checkpoint": ["A"] * 3 + ["B"], "question": ["q1", "q1", "q2", "q1"],
                       "text_answer": ["paris is the capital", "paris is the capital", "eight legs", "x"],
                       "speech_answer": ["eight legs", "paris", "paris capital", "y"]})
    got = add_other_question_baseline(df)["agreement_other_q"].tolist()
    assert got[0] == pytest.approx(1.0)  # answers q2's text exactly: all style, no q1 content
    assert got[1] == pytest.approx(0.0)
    assert got[2] == pytest.approx(answer_agreement("paris capital", "paris is the capital"))
    assert math.isnan(got[3])  # B has one question only: no other question to compare with


# ----------------------------------------------------------------------------- CLI
def _tiny_zoo(tiny_parts, root):
    """Two checkpoints (adaptor seeds 1, 2) written as manifests, like a trajectory."""
    from lsl_core.model.loading import CheckpointManifest, write_manifest

    for step, seed in ((5, 1), (10, 2)):
        write_manifest(CheckpointManifest(name=f"none-step{step}", llm=str(tiny_parts["llm"]),
                                          encoder=str(tiny_parts["encoder"]), family="tiny", strategy="none",
                                          step=step, seed=seed), root / f"ck{step}")
    return root


def _manifest_set(root):
    """The samples as a folder set (manifest.jsonl + FLAC), as `synth --out` writes them."""
    rows = []
    for s in _samples():
        rel = f"audio/{s.meta['voice']}/{s.meta['example_id']}.flac"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), s.audio, 16_000, format="FLAC", subtype="PCM_16")
        rows.append({"id": s.id, "example_id": s.meta["example_id"], "question": s.question,
                     "answers": list(s.answers), "voice": s.meta["voice"], "accent": s.accent, "audio": rel})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_cli_evaluates_a_zoo_and_writes_results(tiny_parts, tmp_path, capsys):
    from lsl_core.cli import main
    from lsl_core.experiments.pages import code_version, read_header

    zoo = _tiny_zoo(tiny_parts, tmp_path / "zoo")
    sset = _manifest_set(tmp_path / "set")
    out, md = tmp_path / "results", tmp_path / "docs" / "checkpoints.md"
    argv = ["evaluate", "--zoo", str(zoo), "--samples", f"manifest:{sset}", "--n-questions", "2",
            "--max-new-tokens", "5", "--batch-size", "3", "--out", str(out), "--markdown", str(md),
            "--intervention", "angle:bottom3", "--intervention", "angle:bottom3:other", "--device", "cpu"]
    assert main(argv) == 0
    df = pd.read_parquet(out / "checkpoints_samples.parquet")
    assert len(df) == 2 * 6 and set(df["checkpoint"]) == {"none-step5", "none-step10"}
    summ = pd.read_parquet(out / "checkpoints_summary.parquet")
    assert set(summ["voice"]) == {*VOICES, "seen", "all"}
    meta = json.loads((out / "checkpoints_summary.json").read_text())["meta"]
    assert meta["unseen_voice"] == "en-gb-scotland" and "PEDANT" in meta["pedant"] and meta["n_questions"] == 2
    assert meta["command"] == "python -m lsl_core " + " ".join(argv) and meta["code_version"] == code_version()
    text = md.read_text()
    head = read_header(text)
    assert head["command"] == meta["command"] and head["version"] == meta["code_version"] and head["source"] is None
    assert "none-step5" in text and "en-gb-scotland (unseen)" in text and "the 2 voices other than en-gb-scotland" in text
    iv = pd.read_parquet(out / "checkpoints_interventions.parquet")  # the real table1 rows, one checkpoint column
    assert len(iv) == 2 * 6 * 3 and set(iv["condition"]) == {"original", "angle:bottom3", "angle:bottom3:other"}
    assert iv.groupby("checkpoint").size().to_dict() == {"none-step5": 18, "none-step10": 18}
    q = dict(zip(df["sample_id"], df["question"]))
    assert all(d and d != q[s] and d in set(q.values()) for s, d in zip(iv["sample_id"], iv["donor_question"]))
    printed = capsys.readouterr().out  # each checkpoint's Table 1, then each intervention against its null
    assert printed.count("each intervention against its nulls") == 2 and "Angle·Bottom3 (other question)" in printed
    # the speech answers differ between the two random adaptors while text answers (same LLM) agree
    a, b = (df[df["checkpoint"] == n].reset_index() for n in ("none-step5", "none-step10"))
    assert (a["text_answer"] == b["text_answer"]).all()
    assert all(math.isfinite(x) for x in df["agreement"])
    assert np.isclose(summ.query("voice == 'all'")["gap_f1"],
                      summ.query("voice == 'all'")["text_f1"] - summ.query("voice == 'all'")["speech_f1"]).all()


def test_cli_refuses_missing_inputs(tmp_path, capsys):
    from lsl_core.cli import main

    assert main(["evaluate", "--samples", "sd-qa-mini"]) == 2
    assert "No checkpoints" in capsys.readouterr().err
