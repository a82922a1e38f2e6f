"""closed-vocab: closing a text by hand, the nearest known word (by spelling, by espeak-ng phonemes) against a
brute-force reference, the rows and the ceiling table with a stand-in text path (hand-computed agreements and
ratio), and the command end to end on a shipped checkpoint's stored evaluate rows."""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lsl_core.cli import main as cli_main
from lsl_core.errors import LSLError
from lsl_core.data.synth import espeak_available, phonemes
from lsl_core.experiments.closed_vocab import (SPEECH_ROW, ceiling_table, close_text, closed_rows, coverage_label,
                                               coverage_table, format_table, known_words, nearest_by_sound,
                                               nearest_word, never_spoken, stored_rows)
from lsl_core.experiments.hearing import Lineage, lineage, words
from lsl_core.metrics.stats import bootstrap_ci
from lsl_core.scoring import answer_agreement

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets" / "checkpoints"


def test_close_text_drops_or_replaces_only_unknown_words_by_hand():
    known = {"who", "founded", "the", "court", "in", "1990"}
    # punctuation of a dropped chunk moves to the previous chunk; case and punctuation of known words stay
    assert close_text("Who founded Hangul's court?", known, "drop") == ("Who founded court?", 1, 4)
    assert close_text("Who founded the court in Seoul?", known, "drop") == ("Who founded the court in?", 1, 6)
    assert close_text("In 1990, who founded Zog?", known, "drop") == ("In 1990, who founded?", 1, 5)
    assert close_text("Zog founded it", known, "drop") == ("founded", 2, 3)  # a leading unknown chunk: nothing kept
    assert close_text("", known, "drop") == ("", 0, 0)
    assert close_text("Who — founded?", known, "drop") == ("Who — founded?", 0, 2)  # no word in "—"
    vocab = sorted(known)
    near = lambda w: nearest_word(w, vocab)  # noqa: E731
    # nearest: the core is replaced, a leading capital and the chunk's punctuation kept
    assert close_text("Who founded (Courts)?", known, "nearest", near) == ("Who founded (Court)?", 1, 3)
    assert close_text("who foundid the court", known, "nearest", near) == ("who founded the court", 1, 4)
    assert close_text("In 1991?", known, "nearest", near) == ("In 1990?", 1, 2)
    with pytest.raises(LSLError, match="needs the known word nearest"):
        close_text("Zog", known, "sound")
    with pytest.raises(LSLError, match="mode must be one of"):
        close_text("Zog", known, "blank")


def test_nearest_word_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    letters = list("abcdeilnorstu")
    vocab = sorted({"".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(300)})
    for _ in range(200):
        w = "".join(rng.choice(letters, rng.integers(2, 11)))
        ref = max(vocab, key=lambda v: (difflib.SequenceMatcher(None, v, w).ratio(), v))
        assert nearest_word(w, vocab) == ref
    with pytest.raises(LSLError, match="lower --min-clips"):
        nearest_word("zog", [])


def test_nearest_by_sound_matches_a_brute_force_reference():
    rng = np.random.default_rng(1)
    units = ["a", "E", "I", "@", "t", "d", "n", "s", "S", "l", "r", "aI", "eI", "N"]
    vocab_ph = [tuple(rng.choice(units, rng.integers(2, 8))) for _ in range(200)]
    vocab = [f"w{i:03d}" for i in range(200)]
    vocab_ph[7] = vocab_ph[3]  # homophones: the tie goes to the later word, as nearest_word's
    for _ in range(100):
        ph = tuple(rng.choice(units, rng.integers(1, 9)))
        ref = max(range(200), key=lambda i: (difflib.SequenceMatcher(None, vocab_ph[i], ph, autojunk=False).ratio(),
                                             vocab[i]))
        assert nearest_by_sound(ph, vocab, vocab_ph) == vocab[ref]
    assert nearest_by_sound(vocab_ph[3], vocab, vocab_ph) == "w007"
    with pytest.raises(LSLError, match="lower --min-clips"):
        nearest_by_sound(("a",), [], [])


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (scripts/setup.sh)")
def test_phonemes_one_call_per_list_and_sound_alike_words():
    ph = phonemes(["hangul", "hangi", "argentine", "argentina", "3.5"])
    assert len(ph) == 5 and all(ph) and all("'" not in p and "," not in p for x in ph for p in x)
    assert ph[:2] == phonemes(["hangul"]) + phonemes(["hangi"])  # the same alone as in a list
    assert ph[0][:4] == ph[1][:4]  # h a N g
    # "nite" sounds like "night" and is spelled most like "nine": the modes disagree
    vocab = ["night", "nine"]
    assert nearest_word("nite", vocab) == "nine"
    assert nearest_by_sound(phonemes(["nite"])[0], vocab, phonemes(vocab)) == "night"
    assert phonemes([]) == []


def test_known_words_by_exposure():
    lin = Lineage(frozenset({"who", "is", "the"}), frozenset({"nepal", "zog"}), ("t",),
                  clips={"who": 40, "is": 30, "the": 29, "nepal": 1, "zog": 31})
    assert known_words(lin) == ["is", "nepal", "the", "who", "zog"]
    assert known_words(lin, 30) == ["is", "who", "zog"]
    assert known_words(lin, 41) == []
    with pytest.raises(LSLError, match="at least 1"):
        known_words(lin, 0)


class _EchoLLM:
    """A text path that answers a prompt with its upper-cased words (so agreement is countable by hand)."""

    manifest = {"strategy": "lora", "lora": "x"}
    device, dtype, name = "cpu", "float32", "echo"

    def __init__(self, digest: str) -> None:
        self.digest = digest
        self.prompts: list[str] = []

    def prompt_for(self, text: str) -> str:
        return text

    def generate_answers(self, prompts, max_new_tokens, batch_size=16, on_batch=None):  # LSLM's interface
        self.prompts += prompts
        out = [p.upper() for p in prompts]
        if on_batch is not None:
            on_batch(list(range(len(prompts))), out)
        return out


def _rows() -> pd.DataFrame:
    """Evaluate rows of 2 questions x 2 voices; the text answer of a question is the question itself."""
    q1, q2 = "Who founded Zog court?", "Who is the court?"
    return pd.DataFrame({
        "checkpoint": "ck", "sample_id": ["a1", "a2", "b1", "b2"], "question": [q1, q1, q2, q2],
        "voice": ["en-gb", "en-gb-scotland", "en-gb", "en-gb-scotland"],
        "text_answer": [q1, q1, q2, q2],
        "transcript": ["Who found Zog court", "", "Who is the court", "Who is a court"],
        "cascade_answer": ["WHO FOUND ZOG COURT", "", "WHO IS THE COURT", "WHO IS A COURT"],
        "cascade_agreement": [0.5, 0.0, 1.0, 0.75], "agreement": [0.25, 0.0, 0.5, 0.5]})


def test_closed_rows_and_the_ceiling_table_by_hand():
    rows = _rows()
    lin = Lineage(frozenset({"who", "founded", "court", "is", "the"}), frozenset(), ("t",))
    llm = _EchoLLM("closed-rows-by-hand")
    out = closed_rows(llm, rows, lin, sources=("typed", "asr"), modes=("drop",))
    typed = out[out["source"] == "typed"].reset_index(drop=True)
    # q1 loses "Zog": answered anew ("WHO FOUNDED COURT?" vs "Who founded Zog court?": F1 = 2*3/(3+4)); q2 is
    # unchanged and keeps its stored text answer (agreement 1)
    assert typed["closed_text"].tolist() == ["Who founded court?"] * 2 + ["Who is the court?"] * 2
    assert typed["answer"].tolist() == ["WHO FOUNDED COURT?"] * 2 + ["Who is the court?"] * 2
    assert typed["agreement"].tolist() == pytest.approx([6 / 7, 6 / 7, 1.0, 1.0])
    assert typed["chunks_closed"].tolist() == [1, 1, 0, 0] and typed["chunks"].tolist() == [4, 4, 4, 4]
    asr = out[out["source"] == "asr"].reset_index(drop=True)
    # transcripts: "found" and "a" are unknown too; an empty transcript stays empty with an empty answer
    assert asr["closed_text"].tolist() == ["Who court", "", "Who is the court", "Who is court"]
    assert asr["answer"].tolist() == ["WHO COURT", "", "WHO IS THE COURT", "WHO IS COURT"]
    assert asr["agreement"].tolist() == pytest.approx([answer_agreement(a, t) for a, t in
                                                       zip(asr["answer"], rows["text_answer"])])
    assert asr["speech_agreement"].tolist() == rows["agreement"].tolist()
    # each distinct changed text was generated once, the unchanged ones never
    assert sorted(llm.prompts) == sorted(["Who founded court?", "Who court", "Who is court"])

    table = ceiling_table(out, "en-gb-scotland").set_index(["condition", "voice"])
    assert set(table.index.get_level_values(0)) == {SPEECH_ROW, "typed question, never-spoken words dropped",
                                                    "Whisper transcript, never-spoken words dropped"}
    r = table.loc[("typed question, never-spoken words dropped", "seen")]  # en-gb: one clip per question
    assert r["agreement"] == pytest.approx((6 / 7 + 1.0) / 2)
    assert r["cascade_agreement"] == pytest.approx((0.5 + 1.0) / 2)
    assert r["ratio"] == pytest.approx((6 / 7 + 1.0) / 1.5)
    assert r["closed_share"] == pytest.approx(1 / 8)
    pair = np.array([[6 / 7, 0.5], [1.0, 1.0]])
    ci = bootstrap_ci(pair, lambda x: x[:, 0].mean() / max(x[:, 1].mean(), 1e-12))
    assert (r["ratio_lo"], r["ratio_hi"]) == pytest.approx((ci.low, ci.high))
    s = table.loc[(SPEECH_ROW, "en-gb-scotland")]
    assert s["ratio"] == pytest.approx((0.0 + 0.5) / (0.0 + 0.75)) and s["closed_share"] == 0


def test_coverage_table_splits_the_measured_speech_answers_by_never_spoken_words():
    rows = pd.concat([_rows(), _rows().assign(  # a third question with two never-spoken words ("zog", "zap")
        sample_id=["c1", "c2", "d1", "d2"], question=["Who is Zog Zap?"] * 2 + ["Who is the court?"] * 2)],
        ignore_index=True).iloc[:6]
    lin = Lineage(frozenset({"who", "founded", "court", "is", "the"}), frozenset(), ("t",))
    rows = rows.assign(never_spoken=never_spoken(rows["question"], lin))
    assert rows["never_spoken"].tolist() == [1, 1, 0, 0, 2, 2]
    table = coverage_table(rows, "en-gb-scotland").set_index(["condition", "voice"])
    every, one, two = (coverage_label(n) for n in (0, 1, 2))
    assert list(dict.fromkeys(table.index.get_level_values(0))) == [SPEECH_ROW, every, one, two]
    # en-gb: q1 (1 unknown, agreement 0.25, cascade 0.5), q2 (0 unknown; 0.5 / 1.0), q3 (2 unknown; 0.25 / 0.5)
    assert table.loc[(every, "seen"), "ratio"] == pytest.approx(0.5 / 1.0)
    assert table.loc[(one, "seen"), "ratio"] == pytest.approx(0.25 / 0.5)
    assert table.loc[(two, "seen"), "closed_share"] == pytest.approx(2 / 4)  # "who is zog zap"
    assert table.loc[(one, "seen"), "closed_share"] == pytest.approx(1 / 4)
    allq = table.loc[(SPEECH_ROW, "seen")]
    assert allq["n_q"] == 3 and allq["ratio"] == pytest.approx((0.25 + 0.5 + 0.25) / (0.5 + 1.0 + 0.5))
    assert allq["closed_share"] == pytest.approx(3 / 12)
    assert table.loc[(every, "en-gb-scotland"), "ratio"] == pytest.approx(0.5 / 0.75)
    assert (table["n_q"] <= 3).all() and table.loc[(two, "seen"), "n_q"] == 1
    # closed-vocab's rows (one copy of the clips per condition, the speech agreement kept aside) give the same
    closed = closed_rows(_EchoLLM("coverage"), rows, lin, sources=("typed",), modes=("drop", "nearest"))
    from_closed = coverage_table(closed, "en-gb-scotland")
    pd.testing.assert_frame_equal(from_closed, table.reset_index()[from_closed.columns])
    text = format_table(table.reset_index(), share="words never spoken")
    assert "| words never spoken |" in text and f"| {two} | seen | 1 | 50 % |" in text


def test_extra_vocabulary_words_count_as_known():
    rows = _rows()
    lin = Lineage(frozenset({"who", "founded", "court", "is", "the"}), frozenset(), ("t",))
    out = closed_rows(_EchoLLM("extra-words"), rows, lin, sources=("typed",), modes=("drop", "nearest"),
                      extra_words=("zog", "zap"))
    assert set(out["condition"]) == {"typed question, never-spoken words dropped (+ 2 vocabulary words)",
                                     "typed question, never-spoken words -> nearest known (+ 2 vocabulary words)"}
    assert (out["closed_text"] == out["question"]).all() and (out["chunks_closed"] == 0).all()  # "Zog" is known
    assert (out["answer"] == out["text_answer"]).all()
    nearest = closed_rows(_EchoLLM("extra-words-2"), rows.assign(question="Who founded Zob?"), lin,
                          sources=("typed",), modes=("nearest",), extra_words=("zog",))
    assert set(nearest["closed_text"]) == {"Who founded Zog?"}  # a vocabulary word can be the nearest one


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (scripts/setup.sh)")
def test_closed_rows_sound_mode_puts_the_nearest_sounding_known_word():
    rows = _rows()
    lin = Lineage(frozenset({"who", "founded", "court", "is", "the", "dog", "fog"}), frozenset(), ("t",))
    out = closed_rows(_EchoLLM("sound-mode"), rows, lin, sources=("typed",), modes=("sound",))
    vocab = known_words(lin)
    want = nearest_by_sound(phonemes(["zog"])[0], vocab, phonemes(vocab))
    assert want in {"dog", "fog"}
    assert out["closed_text"].tolist()[:2] == [f"Who founded {want.capitalize()} court?"] * 2
    assert set(out["condition"]) == {"typed question, never-spoken words -> nearest-sounding known"}


def test_closed_rows_asks_for_a_cascade_and_stored_rows_name_the_checkpoint(tmp_path):
    lin = Lineage(frozenset({"who"}), frozenset(), ("t",))
    with pytest.raises(LSLError, match="with its cascade"):
        closed_rows(_EchoLLM("x"), _rows().drop(columns=["transcript"]), lin)
    typed_only = closed_rows(_EchoLLM("y"), _rows().drop(columns=["transcript", "cascade_answer"]), lin,
                             sources=("typed",), modes=("drop",))
    assert set(typed_only["source"]) == {"typed"}
    with pytest.raises(LSLError, match="holds no evaluate rows"):
        stored_rows(tmp_path, "ck")
    _rows().to_parquet(tmp_path / "checkpoints_samples.parquet")
    with pytest.raises(LSLError, match="no rows of checkpoint 'other'"):
        stored_rows(tmp_path, "other")
    assert len(stored_rows(tmp_path, "ck")) == 4


def test_closed_vocab_command_on_the_shipped_default(capsys, tmp_path):
    """End to end: lora-step2900's stored sd-qa-mini evaluate rows (assets/results), its first 2 questions,
    closed by its lineage and answered by its own text path."""
    from lsl_core.model.loading import load_checkpoint

    ck = ASSETS / "qa-lora" / "lora-step2900"
    out = tmp_path / "closed.parquet"
    assert cli_main(["closed-vocab", "--checkpoint", str(ck), "--results", str(ROOT / "assets" / "results"),
                     "--n-questions", "2", "--mode", "drop", "--min-clips", "1", "30", "--examples", "1",
                     "--batch-size", "1", "--out", str(out), "--threads", "2"]) == 0
    text = capsys.readouterr().out
    assert "lora-step2900: lineage qa-lora <- align-repeat <- align-ctc;" in text
    assert "| typed question, words of < 30 clips dropped | seen |" in text
    assert f"| {SPEECH_ROW} | en-gb-scotland |" in text
    assert "| words never spoken |" in text and f"| {SPEECH_ROW}, " in text  # the measured split, before the ceiling
    rows = pd.read_parquet(out)
    assert len(rows) == 2 * 2 * 10  # 2 questions x 5 voices, 2 sources x 2 thresholds
    lin = lineage(ck)
    assert (rows["never_spoken"] == never_spoken(rows["question"], lin)).all()  # kept for the page
    for k in (1, 30):
        known = set(known_words(lin, k))
        part = rows[rows["min_clips"] == k]
        for t in part["closed_text"]:  # nothing unknown is left
            assert all(w in known for w in words(t))
        changed = part[part["chunks_closed"] > 0]
        assert len(changed) and (part["chunks_closed"] <= part["chunks"]).all()
    unchanged = rows[rows["chunks_closed"] == 0]
    stored = unchanged["text_answer"].where(unchanged["source"] == "typed", unchanged["cascade_answer"])
    assert (unchanged["answer"] == stored).all()
    # a changed text's answer is the checkpoint's own greedy answer to it, one prompt at a time as the command ran
    # (--batch-size 1), not through the tool's memo
    model = load_checkpoint(ck)
    one = rows[rows["chunks_closed"] > 0].drop_duplicates("closed_text").iloc[0]
    again = model.generate_answers([model.prompt_for(text=one["closed_text"])], 24, batch_size=1)[0]
    assert again == one["answer"]
    assert one["agreement"] == pytest.approx(answer_agreement(one["answer"], one["text_answer"]))


def test_closed_vocab_refuses_bad_input_before_loading_a_model(capsys):
    assert cli_main(["closed-vocab", "--checkpoint", str(ASSETS / "embedded-untrained"), "--samples",
                     "sd-qa-mini"]) == 2
    assert "not a trained checkpoint" in capsys.readouterr().err
    assert cli_main(["closed-vocab", "--checkpoint", str(ASSETS / "qa-lora" / "lora-step2900"), "--results", ".",
                     "--min-clips", "0"]) == 2
    assert "--min-clips must be at least 1" in capsys.readouterr().err
    assert cli_main(["closed-vocab", "--checkpoint", str(ASSETS / "qa-lora" / "lora-step2900"), "--results", ".",
                     "--vocab-words", "-1"]) == 2
    assert "--vocab-words must be 0 or more" in capsys.readouterr().err


# --------------------------------------------------------------------------- review: input refused before a model loads
@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the refusals below must come before one."""
    import lsl_core.model.loading as loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(loading, "load_checkpoint", refuse)


def _results(folder: Path, rows: pd.DataFrame, max_new_tokens: int | None = 24, name: str = "checkpoints") -> Path:
    """An evaluate --out folder: <name>_samples.parquet and (max_new_tokens given) <name>_summary.json's meta."""
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(folder / f"{name}_samples.parquet")
    if max_new_tokens is not None:
        (folder / f"{name}_summary.json").write_text(json.dumps({"meta": {"max_new_tokens": max_new_tokens,
                                                                          "unseen_voice": "en-gb-scotland"}}))
    return folder


def test_stored_rows_refuse_a_checkpoint_in_two_evaluate_files_and_other_answer_lengths(tmp_path):
    """Two evaluate runs of one checkpoint in a folder (two sample sets, or two settings) were pooled (and the first
    file's answers kept for a clip both hold); stored text answers of another length than the closed texts' would
    be set against answers of this length."""
    _results(tmp_path, _rows())
    _results(tmp_path, _rows().assign(sample_id=["c1", "c2", "d1", "d2"]), name="other")
    with pytest.raises(LSLError, match=r"'ck' has rows in 2 evaluate files.*checkpoints_samples.parquet.*"
                                       r"other_samples.parquet"):
        stored_rows(tmp_path, "ck")
    (tmp_path / "other_samples.parquet").unlink()
    assert len(stored_rows(tmp_path, "ck", max_new_tokens=24)) == 4
    with pytest.raises(LSLError, match="answered with --max-new-tokens 24.*pass --max-new-tokens 24"):
        stored_rows(tmp_path, "ck", max_new_tokens=32)
    (tmp_path / "checkpoints_summary.json").unlink()  # no meta (an older folder): nothing to check against
    assert len(stored_rows(tmp_path, "ck", max_new_tokens=32)) == 4


def test_closed_vocab_refuses_other_answer_lengths_than_the_stored_rows_before_loading(no_model, capsys):
    ck = ASSETS / "qa-lora" / "lora-step2900"
    assert cli_main(["closed-vocab", "--checkpoint", str(ck), "--results", str(ROOT / "assets" / "results"),
                     "--max-new-tokens", "32"]) == 2
    assert "answered with --max-new-tokens 24" in capsys.readouterr().err


def test_closed_vocab_refuses_missing_rows_or_cascade_before_loading(tmp_path, no_model, capsys):
    ck = ASSETS / "qa-lora" / "lora-step2900"
    _results(tmp_path / "other", _rows())  # rows of another checkpoint ("ck")
    assert cli_main(["closed-vocab", "--checkpoint", str(ck), "--results", str(tmp_path / "other")]) == 2
    assert "no rows of checkpoint 'lora-step2900'" in capsys.readouterr().err
    no_cascade = _rows().assign(checkpoint="lora-step2900").drop(columns=["transcript", "cascade_answer"])
    _results(tmp_path / "typed", no_cascade)
    assert cli_main(["closed-vocab", "--checkpoint", str(ck), "--results", str(tmp_path / "typed")]) == 2
    assert "pass --source typed" in capsys.readouterr().err


def test_closed_vocab_refuses_a_wrong_unseen_voice_before_loading(tmp_path, no_model, capsys):
    ck = ASSETS / "qa-lora" / "lora-step2900"
    assert cli_main(["closed-vocab", "--checkpoint", str(ck), "--results", str(ROOT / "assets" / "results"),
                     "--unseen-voice", "en-scotland"]) == 2
    err = capsys.readouterr().err
    assert "--unseen-voice 'en-scotland' is not a voice of these samples" in err and "en-gb-scotland" in err
    # a lineage that spoke the unseen voice in training: its clips are not unseen
    traj = tmp_path / "t"
    (traj / "t-step1").mkdir(parents=True)
    (traj / "train_config.json").write_text(json.dumps({"init": None, "voices": ["en-gb", "en-gb-scotland"]}))
    (traj / "train_targets.jsonl").write_text(json.dumps({"example_id": "x", "question": "Who founded it?"}) + "\n")
    (traj / "t-step1" / "manifest.json").write_text(json.dumps({"name": "t-step1", "llm": "embedded:x",
                                                                "encoder": "embedded:y", "strategy": "none"}))
    _results(tmp_path / "res", _rows().assign(checkpoint="t-step1"))
    assert cli_main(["closed-vocab", "--checkpoint", str(traj / "t-step1"), "--results", str(tmp_path / "res")]) == 2
    assert "'en-gb-scotland' was a training voice of t-step1" in capsys.readouterr().err


def test_closed_vocab_says_when_seen_voices_were_never_spoken_in_training(tmp_path, no_model, capsys):
    traj = tmp_path / "t"
    (traj / "t-step1").mkdir(parents=True)
    (traj / "train_config.json").write_text(json.dumps({"init": None, "voices": ["en-gb"]}))
    (traj / "train_targets.jsonl").write_text(json.dumps({"example_id": "x", "question": "Who founded it?"}) + "\n")
    (traj / "t-step1" / "manifest.json").write_text(json.dumps({"name": "t-step1", "llm": "embedded:x",
                                                                "encoder": "embedded:y", "strategy": "none"}))
    rows = _rows().assign(checkpoint="t-step1", voice=["en-us", "en-gb-scotland", "en-gb", "en-gb-scotland"])
    _results(tmp_path / "res", rows)
    with pytest.raises(AssertionError, match="a model was loaded"):
        cli_main(["closed-vocab", "--checkpoint", str(traj / "t-step1"), "--results", str(tmp_path / "res")])
    assert "note: t-step1's training never spoke the voices en-us, yet the tables count them as 'seen'" \
        in capsys.readouterr().out


def test_closed_vocab_names_evaluated_questions_that_training_spoke(tmp_path, no_model, capsys):
    """A question training spoke has no unknown word: its ceiling is the cascade's by construction, not a fresh
    question's; such questions are named before the model loads."""
    traj = tmp_path / "t"
    (traj / "t-step1").mkdir(parents=True)
    (traj / "train_config.json").write_text(json.dumps({"init": None}))
    (traj / "train_targets.jsonl").write_text(json.dumps({"example_id": "x", "question": "who is the COURT"}) + "\n")
    (traj / "t-step1" / "manifest.json").write_text(json.dumps({"name": "t-step1", "llm": "embedded:x",
                                                                "encoder": "embedded:y", "strategy": "none"}))
    _results(tmp_path / "res", _rows().assign(checkpoint="t-step1"))
    with pytest.raises(AssertionError, match="a model was loaded"):
        cli_main(["closed-vocab", "--checkpoint", str(traj / "t-step1"), "--results", str(tmp_path / "res")])
    assert "note: 1 of the 2 questions here were spoken in t-step1's training (e.g. 'Who is the court?')" \
        in capsys.readouterr().out
