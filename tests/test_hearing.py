"""hearing: the word groups of a checkpoint's lineage (hand-built trajectories and the shipped ones, against
the training split computed independently), word recall by hand, the pooled recall and its bootstrap, and
the command end to end on a shipped checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lsl_core.cli import main as cli_main
from lsl_core.errors import LSLError
from lsl_core.experiments.hearing import (EXPOSURE_EDGES, Lineage, chance, coverage, exposure_bin, exposure_label,
                                         exposure_table, exposure_tables, lineage, recall_rows, recall_table,
                                         recall_tables, with_chance, word_recall, words)
from lsl_core.metrics.stats import N_BOOT, SEED, bootstrap_indices

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


def _trajectory(root: Path, name: str, rows: list[tuple[str, str]], init: str | None, steps=(1,),
                voices=("en-gb", "en-us")) -> list[Path]:
    """A trajectory folder as `train` writes it: train_config.json, train_targets.jsonl, checkpoint folders."""
    traj = root / name
    traj.mkdir(parents=True)
    cfg = {"name": name, "init": init, "repeat_system": f"Repeat ({name}).", "voices": list(voices)}
    (traj / "train_config.json").write_text(json.dumps(cfg))
    (traj / "train_targets.jsonl").write_text("".join(json.dumps({"example_id": i, "question": q, "target": q})
                                                      + "\n" for i, q in rows))
    out = []
    for s in steps:
        (traj / f"{name}-step{s}").mkdir()
        (traj / f"{name}-step{s}" / "manifest.json").write_text("{}")
        out.append(traj / f"{name}-step{s}")
    return out


def test_word_recall_by_hand():
    lin = Lineage(frozenset({"who", "invented", "the"}), frozenset({"paper"}), ("t",))
    # "the" twice in the question: each occurrence counts; one output mention recalls both
    assert word_recall("Who invented the paper clip?", "Who invented the paper of the Hangul?", lin) == {
        "question": (4, 4), "other": (1, 1), "never": (0, 2)}  # never: "of", "hangul"
    assert word_recall("", "Who invented Hangul?", lin) == {"question": (0, 2), "other": (0, 0), "never": (0, 1)}
    # normalisation: case, punctuation and apostrophes as in the ASR scoring
    assert word_recall("WHO'S there", "Who's there?", Lineage(frozenset(), frozenset(), ())) == {
        "question": (0, 0), "other": (0, 0), "never": (2, 2)}


def test_coverage_counts_distinct_questions_by_hand():
    lin = Lineage(frozenset({"who", "wrote", "is", "the"}), frozenset({"nepal"}), ("t",))
    qs = ["Who wrote Hamlet?", "Where is Nepal?", "Who wrote the the?", "Where is Nepal?"]  # one repeat
    # words: 3 + 3 + 4; never: hamlet, where -> 2; questions with a never word: the first two
    assert coverage(qs, lin) == {"words": 10, "never": 2, "questions": 3, "questions_with_never": 2}
    assert coverage([], lin) == {"words": 0, "never": 0, "questions": 0, "questions_with_never": 0}


def test_lineage_walks_the_inits_and_splits_question_from_other_text(tmp_path):
    (ctc,) = _trajectory(tmp_path, "ctc", [("q1", "Who wrote Hamlet?"), ("vocab0-00001", "Lavender kingdom wooden.")],
                         None)
    (rep,) = _trajectory(tmp_path, "rep", [("q2", "Where is the kingdom of Nepal?")], str(ctc))
    qa = _trajectory(tmp_path, "qa", [("q1", "Who wrote Hamlet?")], str(rep / "manifest.json"), steps=(3, 4))
    lin = lineage(qa[1], sdqa_ids={"q1", "q2"})
    assert lin.stages == ("qa", "rep", "ctc") and lin.missing == "" and lin.repeat_system == "Repeat (qa)."
    assert lin.question_words == {"who", "wrote", "hamlet", "where", "is", "the", "kingdom", "of", "nepal"}
    assert lin.other_words == {"lavender", "wooden"}  # "kingdom" was also in a training question
    # exposure: questions spoken by each of their stage's 2 voices, other text once; "Who wrote Hamlet?" is in
    # two stages but one text (counted once); "the"/"kingdom": one question (2) + "kingdom" in a sequence (1)
    assert {w: lin.exposure(w) for w in ("who", "nepal", "kingdom", "lavender", "hangul")} == {
        "who": 2, "nepal": 2, "kingdom": 3, "lavender": 1, "hangul": 0}
    assert [lin.group(w) for w in ("nepal", "wooden", "hangul")] == ["question", "other", "never"]
    assert lineage(qa[0] / "manifest.json", sdqa_ids={"q1", "q2"}) == lin  # a manifest path works too
    only_rep = lineage(rep, sdqa_ids={"q1", "q2"})
    assert only_rep.stages == ("rep", "ctc") and "hamlet" in only_rep.question_words


def test_lineage_reports_a_missing_init_and_refuses_an_untrained_checkpoint(tmp_path):
    (a,) = _trajectory(tmp_path, "a", [("q1", "Who wrote Hamlet?")], str(tmp_path / "gone" / "ck"))
    lin = lineage(a, sdqa_ids={"q1"})
    assert lin.stages == ("a",) and lin.missing == str(tmp_path / "gone" / "ck")
    bare = tmp_path / "bare" / "ck"
    bare.mkdir(parents=True)
    with pytest.raises(LSLError, match="not a trained checkpoint.*python -m lsl_core train"):
        lineage(bare)
    broken = tmp_path / "broken"
    (b,) = _trajectory(broken, "b", [("q1", "Who?")], None)
    (b.parent / "train_targets.jsonl").write_text('{"example_id": "q1", "question": ')  # cut short
    with pytest.raises(LSLError, match="unreadable train_targets.jsonl"):
        lineage(b, sdqa_ids={"q1"})
    (loop,) = _trajectory(tmp_path, "loop", [("q1", "Who?")], None)
    cfg = loop.parent / "train_config.json"
    cfg.write_text(json.dumps({"init": str(loop)}))  # init inside its own trajectory: read once
    assert lineage(loop, sdqa_ids={"q1"}).stages == ("loop",)


def test_the_shipped_lineage_is_the_training_split():
    """The words of the shipped LoRA checkpoint's lineage equal those of the training questions as the
    curriculum splits them (split_questions: the 16 monitoring questions are never trained on)."""
    from lsl_core.experiments.train import TrainConfig
    from lsl_core.experiments.train.corpus import split_questions

    lin = lineage(ASSETS / "qa-lora" / "lora-step2900")
    assert lin.stages == ("qa-lora", "align-repeat", "align-ctc") and lin.missing == ""
    assert lin.repeat_system == TrainConfig().repeat_system  # read from the newest stage's config
    train, monitor = split_questions(TrainConfig(n_questions=0, n_val_questions=16))
    assert lin.question_words == {w for q in train for w in words(q.question)}
    # exposure: every stage spoke each training question with the same 7 voices -> 7 x training question ids (a
    # text the split holds under two ids, "... on Earth?" / "... on earth?", is two questions' clips)
    n_voices = len(TrainConfig().voices)
    for w in ("the", "capital", "who", "mineral"):
        assert lin.exposure(w) == n_voices * sum(w in words(q.question) for q in train) > 0
    assert lin.other_words == frozenset()
    only_monitor = {w for q in monitor for w in words(q.question)} - lin.question_words
    assert only_monitor and all(lin.group(w) == "never" for w in only_monitor)


def test_recall_table_pools_clips_per_question_and_bootstraps_questions():
    lin = Lineage(frozenset({"who", "wrote", "is"}), frozenset({"nepal"}), ("t",))
    questions = ["Who wrote Hamlet?", "Who wrote Hamlet?", "Where is Nepal?", "Where is Nepal?", "Who is Zog?"]
    voices = ["en-gb", "en-gb-scotland", "en-gb", "en-gb-scotland", "en-gb"]
    outputs = ["who wrote hamlet", "who", "where is nepal", "", "who is"]
    rows = recall_rows(outputs, questions, voices, lin)
    assert len(rows) == rows["spoken"].sum() == sum(len(words(q)) for q in questions)  # one row per spoken word
    for (q, v, o), r in rows.groupby(["question", "voice", "output"], sort=False):  # sums give word_recall
        assert {g: (int(x["recalled"].sum()), len(x)) for g, x in r.groupby("group")} == {
            g: hn for g, hn in word_recall(o, q, lin).items() if hn[1]}
    t = recall_table(rows, "en-gb-scotland").set_index(["voices", "words"])
    # seen voice: question words who,wrote | is | who,is -> 5 of 5; never: hamlet, where, zog -> 2 of 3
    assert t.loc[("seen", "question"), "recall"] == 1.0 and t.loc[("seen", "question"), "spoken"] == 5
    assert t.loc[("seen", "never"), "recall"] == pytest.approx(2 / 3) and t.loc[("seen", "never"), "questions"] == 3
    assert t.loc[("seen", "other"), "recall"] == 1.0 and t.loc[("seen", "other"), "spoken"] == 1
    # unseen voice: who (1 of who,wrote,is) -> 1/3; never: hamlet, where -> 0/2
    assert t.loc[("unseen", "question"), "recall"] == pytest.approx(1 / 3)
    assert t.loc[("unseen", "never"), "recall"] == 0.0
    # the interval is the percentile bootstrap of the pooled ratio over resampled questions (loop reference)
    assert t.loc[("seen", "question"), ["lo", "hi"]].tolist() == [1.0, 1.0]  # every replicate recalls all
    seen_never = rows[(rows["voice"] != "en-gb-scotland") & (rows["group"] == "never")]
    per_q = seen_never.groupby("question", sort=False)[["recalled", "spoken"]].sum().to_numpy(float)
    reps = [per_q[i, 0].sum() / per_q[i, 1].sum() for i in bootstrap_indices(len(per_q), N_BOOT, SEED)]
    lo, hi = np.percentile(reps, [2.5, 97.5])
    assert t.loc[("seen", "never"), "lo"] == pytest.approx(min(lo, 2 / 3))
    assert t.loc[("seen", "never"), "hi"] == pytest.approx(max(hi, 2 / 3))
    assert lo < 2 / 3 < hi  # not a degenerate interval: the clamp to the estimate did not decide it


def test_hearing_command_on_a_shipped_checkpoint(capsys, tmp_path):
    """End to end on the embedded stack: 2 questions x 2 voices of sd-qa-mini through align-step2700."""
    ck = ASSETS / "align-repeat" / "align-step2700"
    out = tmp_path / "rows.parquet"
    other = ASSETS / "align-repeat" / "align-step1800"
    assert cli_main(["hearing", "--checkpoint", str(ck), "--checkpoint", str(other),
                     "--n-questions", "2", "--voices", "en-gb,en-gb-scotland",
                     "--max-new-tokens", "12", "--examples", "1", "--asr", "--out", str(out), "--threads", "2"]) == 0
    text = capsys.readouterr().out
    assert "align-step2700: lineage align-repeat <- align-ctc;" in text
    assert "of the 2 questions here" in text and "were never spoken in training" in text
    assert "| align-step2700 | seen |" in text and "| align-step2700 | unseen |" in text
    assert "| align-step2700: Whisper ASR | seen |" in text
    assert "align-step1800: same encoder, and the words here have the same groups and exposures as for " \
           "align-step2700" in text  # one ASR row per encoder and word grouping
    assert "| align-step2700 | seen | " in text.split("The same by exposure")[1]
    rows = pd.read_parquet(out)
    n_words = sum(len(words(q)) for q in set(rows["question"])) * 2  # every word of 2 questions x 2 voices
    assert len(rows) == 3 * n_words and set(rows["voice"]) == {"en-gb", "en-gb-scotland"}
    assert set(rows["checkpoint"]) == {"align-step2700", "align-step1800", "align-step2700: Whisper ASR"}
    assert rows["output"].map(len).gt(0).all() and "chance" not in rows.columns  # chance depends on the clips
    lin = lineage(ck)
    for (c, q, v, o), r in rows.groupby(["checkpoint", "question", "voice", "output"]):  # each clip's counts
        assert {g: (int(x["recalled"].sum()), len(x)) for g, x in r.groupby("group")} == {
            g: hn for g, hn in word_recall(o, q, lin).items() if hn[1]}
        assert r["clips"].tolist() == [lin.exposure(w) for w in r["word"]]


def test_hearing_refuses_an_untrained_checkpoint_before_loading_any_model(capsys):
    assert cli_main(["hearing", "--checkpoint", str(ASSETS / "embedded-untrained")]) == 2
    assert "not a trained checkpoint" in capsys.readouterr().err


def test_recall_tables_per_checkpoint_transcripts_last_and_a_clear_error_without_rows():
    lin = Lineage(frozenset({"who"}), frozenset(), ("t",))
    one = recall_rows(["who"], ["Who wrote?"], ["en-gb"], lin)
    rows = pd.concat([one.assign(checkpoint="b: Whisper ASR"), one.assign(checkpoint="b"),
                      one.assign(checkpoint="a")], ignore_index=True)
    t = recall_tables(rows, "en-gb-scotland")
    assert list(dict.fromkeys(t["checkpoint"])) == ["b", "a", "b: Whisper ASR"]  # rows' order, transcripts last
    assert list(t.columns[:3]) == ["checkpoint", "voices", "words"]
    for name, part in t.groupby("checkpoint"):  # each block is recall_table of that checkpoint's rows
        pd.testing.assert_frame_equal(part.drop(columns="checkpoint").reset_index(drop=True),
                                      recall_table(rows[rows["checkpoint"] == name], "en-gb-scotland"))
    with pytest.raises(LSLError, match="python -m lsl_core hearing"):
        recall_tables(one)  # no checkpoint column


def test_chance_is_the_word_in_other_questions_outputs_by_hand():
    lin = Lineage(frozenset({"who", "wrote", "is"}), frozenset(), ("t",))
    questions = ["Who wrote Hamlet?", "Who wrote Hamlet?", "Where is Nepal?", "Who is Zog?", "Who is Zog?"]
    voices = ["en-gb", "en-us", "en-gb", "en-gb", "en-gb-scotland"]
    outputs = ["who wrote hamlet", "who wrote", "who is where", "is zog", "who wrote it"]
    rows = recall_rows(outputs, questions, voices, lin).assign(checkpoint="a")
    c = chance(rows, "en-gb-scotland")
    seen = rows["voice"] != "en-gb-scotland"
    got = {(q, w): x for q, w, x in zip(rows.loc[seen, "question"], rows.loc[seen, "word"], c[seen])}
    # seen clips: "who wrote hamlet", "who wrote" (Hamlet), "who is where" (Nepal), "is zog" (Zog)
    assert got[("Who wrote Hamlet?", "who")] == 1 / 2  # of the 2 other questions' clips, "who is where" holds it
    assert got[("Who wrote Hamlet?", "hamlet")] == 0.0
    assert got[("Where is Nepal?", "is")] == 1 / 3  # only "is zog" of the 3 other clips; its own output not counted
    assert got[("Where is Nepal?", "where")] == 0.0  # held by its own output only
    assert got[("Who is Zog?", "zog")] == 0.0 and got[("Who is Zog?", "who")] == 3 / 3
    # the unseen voice has one question only: no other question's clip, so chance is undefined
    assert c[~seen].isna().all()
    # pooled into the tables: recall_table's chance is the spoken-weighted mean of the rows' chance
    t = recall_table(rows, "en-gb-scotland").set_index(["voices", "words"])
    q = seen & (rows["group"] == "question")
    assert t.loc[("seen", "question"), "chance"] == pytest.approx(c[q].mean())
    assert np.isnan(t.loc[("unseen", "question"), "chance"])
    # added once up front, the tables use it as they are (the same numbers as computing it themselves)
    scored = with_chance(rows, "en-gb-scotland")
    pd.testing.assert_series_equal(scored["chance"], c, check_names=False)
    pd.testing.assert_frame_equal(recall_table(scored, "en-gb-scotland"), recall_table(rows, "en-gb-scotland"))
    pd.testing.assert_frame_equal(exposure_table(scored, "en-gb-scotland"), exposure_table(rows, "en-gb-scotland"))
    with pytest.raises(LSLError, match="re-run"):
        chance(rows.drop(columns="output"))


def test_exposure_bins_and_table_by_hand():
    assert [exposure_label(k) for k in range(len(EXPOSURE_EDGES) + 1)] == [
        "0", "1–9", "10–29", "30–99", "100–999", "≥ 1000"]
    assert exposure_bin([0, 1, 9, 10, 29, 30, 999, 1000, 5000]).tolist() == [0, 1, 1, 2, 2, 3, 4, 5, 5]
    lin = Lineage(frozenset({"who", "wrote", "is"}), frozenset(), ("t",), clips={"who": 40, "wrote": 12, "is": 40})
    questions = ["Who wrote Hamlet?", "Where is Nepal?", "Who is Zog?"]
    rows = recall_rows(["who wrote", "is nepal", "zog"], questions, ["en-gb"] * 3, lin).assign(checkpoint="a")
    t = exposure_table(rows, "en-gb-scotland").set_index("exposure")
    assert list(t.index) == ["0", "10–29", "30–99"] and set(t["voices"]) == {"seen"}
    # never spoken: hamlet, where, nepal, zog -> nepal, zog recalled; 30-99: who x2, is x2 -> who (Hamlet), is (Nepal)
    assert t.loc["0", "recall"] == 2 / 4 and t.loc["0", "distinct"] == 4 and t.loc["0", "questions"] == 3
    assert t.loc["30–99", "recall"] == 2 / 4 and t.loc["30–99", "distinct"] == 2
    assert t.loc["10–29", "recall"] == 1.0 and t.loc["10–29", "spoken"] == 1 and np.isnan(t.loc["10–29", "lo"])
    both = exposure_tables(pd.concat([rows, rows.assign(checkpoint="a: Whisper ASR")], ignore_index=True))
    assert list(dict.fromkeys(both["checkpoint"])) == ["a", "a: Whisper ASR"]
    with pytest.raises(LSLError, match="re-run"):
        exposure_table(rows.drop(columns="clips"))
