"""hearing review: defects that made a published claim or a user's run wrong, each shown by a test that failed on
the old code - a question text held under two ids (two sets of clips) counted once in the exposure, checkpoints of
one name (or one folder named twice) pooled into one row, an --unseen-voice no sample has or one the lineage was
trained on silently labelled, and evaluated questions that training spoke scored as if fresh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lsl_core.cli import main as cli_main
from lsl_core.errors import LSLError
from lsl_core.experiments.hearing import lineage, words

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


def _trajectory(root: Path, name: str, rows: list[tuple[str, str]], init: str | None, voices=("en-gb", "en-us"),
                manifest_name: str | None = None) -> Path:
    """One trajectory folder as `train` writes it, with one checkpoint whose manifest names it (strategy none: no
    weights are needed to read it)."""
    traj = root / name
    traj.mkdir(parents=True)
    cfg = {"name": name, "init": init, "voices": list(voices)}
    (traj / "train_config.json").write_text(json.dumps(cfg))
    (traj / "train_targets.jsonl").write_text("".join(json.dumps({"example_id": i, "question": q}) + "\n"
                                                      for i, q in rows))
    ck = traj / f"{name}-step1"
    ck.mkdir()
    (ck / "manifest.json").write_text(json.dumps({"name": manifest_name or ck.name, "llm": "embedded:x",
                                                  "encoder": "embedded:y", "strategy": "none"}))
    return ck


@pytest.fixture
def no_model(monkeypatch):
    """Any model load fails the test: the refusals below must come before one."""
    import lsl_core.model.loading as loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(loading, "load_checkpoint", refuse)


# --------------------------------------------------------------------------- exposure = training clips
def test_exposure_counts_each_id_and_voice_once_a_duplicated_text_twice(tmp_path):
    """A clip is one (question id, voice): the SD-QA test split holds "What is the most abundant mineral on Earth?"
    under two ids, each spoken by every voice (two renditions each: 14 clips, not 7)."""
    a = _trajectory(tmp_path, "a", [("q1", "Who wrote Hamlet?"), ("q2", "Who wrote hamlet?"), ("v1", "Hamlet sat.")],
                    None)
    lin = lineage(a, sdqa_ids={"q1", "q2"})
    assert lin.exposure("hamlet") == 2 * 2 + 1  # two ids x two voices + one word sequence, spoken once
    assert lin.exposure("who") == 4 and lin.exposure("sat") == 1
    # a later stage re-speaking q1 with the same voices adds no clip, a new voice adds one per question
    b = _trajectory(tmp_path, "b", [("q1", "Who wrote Hamlet?")], str(a), voices=("en-gb", "en-us", "en-029"))
    lin_b = lineage(b, sdqa_ids={"q1", "q2"})
    assert lin_b.exposure("who") == 3 + 2  # q1: en-gb, en-us, en-029; q2: en-gb, en-us
    assert lin_b.voices == {"en-gb", "en-us", "en-029"}


def test_the_shipped_exposure_is_the_count_of_training_clips():
    """Independent count over the shipped lineage's train_targets: distinct (example_id, voice) clips holding the
    word (every stage spoke every training question with its config's voices)."""
    ck = ASSETS / "qa-lora" / "lora-step2900"
    lin = lineage(ck)
    clips: dict[str, set] = {}
    for stage in ("align-ctc", "align-repeat", "qa-lora"):
        cfg = json.loads((ASSETS / stage / "train_config.json").read_text())
        for line in (ASSETS / stage / "train_targets.jsonl").read_text().splitlines():
            row = json.loads(line)
            for w in set(words(row["question"])):
                clips.setdefault(w, set()).update((row["example_id"], v) for v in cfg["voices"])
    for w in ("mineral", "abundant", "earth", "the", "hamlet", "capital"):
        assert lin.exposure(w) == len(clips.get(w, ())), w
    assert lin.exposure("mineral") == 14  # the duplicated test question: two ids x 7 voices


# --------------------------------------------------------------------------- checkpoints of one name
def test_distinct_checkpoints_runs_a_folder_once_and_refuses_two_of_one_name(tmp_path):
    from lsl_core.experiments.hearing import distinct_checkpoints

    a = _trajectory(tmp_path / "run1", "t", [("q1", "Who?")], None, manifest_name="same")
    b = _trajectory(tmp_path / "run2", "t", [("q1", "Who?")], None, manifest_name="same")
    assert distinct_checkpoints([str(a), str(a / "manifest.json"), str(a) + "/"]) == [(str(a), "same")]
    with pytest.raises(LSLError, match="two checkpoints are named .same.*pooled"):
        distinct_checkpoints([str(a), str(b)])


def test_hearing_refuses_two_checkpoints_of_one_name_before_loading_a_model(tmp_path, no_model, capsys):
    a = _trajectory(tmp_path / "run1", "t", [("q1", "Who?")], None, manifest_name="same")
    b = _trajectory(tmp_path / "run2", "t", [("q1", "Who?")], None, manifest_name="same")
    assert cli_main(["hearing", "--checkpoint", str(a), "--checkpoint", str(b), "--n-questions", "1"]) == 2
    err = capsys.readouterr().err
    assert "two checkpoints are named 'same'" in err and str(a) in err and str(b) in err


# --------------------------------------------------------------------------- the unseen voice
def test_unseen_voice_check_by_hand():
    from lsl_core.experiments.hearing import unseen_voice_check

    lin = lineage(ASSETS / "qa-lora" / "lora-step2900")
    here = ["en-gb", "en-us", "en-gb-scotland"]
    unseen_voice_check(here, "en-gb-scotland", True, {"lora": lin}, "hearing")  # held out: fine
    unseen_voice_check(["en-gb"], "en-gb-scotland", False, {"lora": lin}, "hearing")  # the default, absent: fine
    with pytest.raises(LSLError, match="--unseen-voice 'en-scotland' is not a voice of these samples"):
        unseen_voice_check(here, "en-scotland", True, {"lora": lin}, "hearing")
    with pytest.raises(LSLError, match="'en-gb' was a training voice of lora"):
        unseen_voice_check(here, "en-gb", True, {"lora": lin}, "hearing")


def test_hearing_refuses_an_unseen_voice_no_sample_has_before_loading_a_model(no_model, capsys):
    ck = ASSETS / "align-repeat" / "align-step2700"
    assert cli_main(["hearing", "--checkpoint", str(ck), "--unseen-voice", "en-scotland", "--n-questions", "1"]) == 2
    err = capsys.readouterr().err
    assert "--unseen-voice 'en-scotland' is not a voice of these samples" in err and "en-gb-scotland" in err


def test_hearing_refuses_an_unseen_voice_the_lineage_was_trained_on(tmp_path, no_model, capsys):
    ck = _trajectory(tmp_path, "t", [("q1", "Who?")], None, voices=("en-gb", "en-gb-scotland"))
    assert cli_main(["hearing", "--checkpoint", str(ck), "--n-questions", "1"]) == 2
    err = capsys.readouterr().err
    assert "'en-gb-scotland' was a training voice of t-step1" in err and "--unseen-voice" in err


# --------------------------------------------------------------------------- evaluated questions that training spoke
def test_trained_questions_are_named(tmp_path):
    from lsl_core.experiments.hearing import trained_questions

    ck = _trajectory(tmp_path, "t", [("q1", "Who wrote Hamlet?"), ("v1", "Lavender kingdom.")], None)
    lin = lineage(ck, sdqa_ids={"q1"})
    qs = ["who wrote HAMLET", "Who wrote Hamlet, then?", "Lavender kingdom!", "Who wrote Hamlet?"]
    assert trained_questions(qs, lin) == ["who wrote HAMLET", "Lavender kingdom!"]  # distinct normalised texts
    assert trained_questions(["Where is Nepal?"], lin) == []
    shipped = lineage(ASSETS / "qa-lora" / "lora-step2900")
    from lsl_core.data.sdqa import load_sdqa_dev

    assert trained_questions([q.question for q in load_sdqa_dev()], shipped) == []  # dev never trained on


def test_hearing_says_when_seen_voices_were_never_spoken_in_training(tmp_path, no_model, capsys):
    """Every voice but the unseen one is pooled as "seen": one no stage spoke is named, before the model loads."""
    ck = _trajectory(tmp_path, "t", [("q1", "Who?")], None, voices=("en-gb", "en-us"))
    with pytest.raises(AssertionError, match="a model was loaded"):
        cli_main(["hearing", "--checkpoint", str(ck), "--n-questions", "1"])
    out = capsys.readouterr().out
    assert "note: t-step1's training never spoke the voices en-029, en-gb-x-rp" in out and "'seen'" in out
    shipped = ASSETS / "align-repeat" / "align-step2700"  # trained on all of sd-qa-mini's other voices: no note
    with pytest.raises(AssertionError, match="a model was loaded"):
        cli_main(["hearing", "--checkpoint", str(shipped), "--n-questions", "1"])
    assert "never spoke the voices" not in capsys.readouterr().out


def test_hearing_names_evaluated_questions_that_training_spoke_before_loading(tmp_path, no_model, capsys):
    from lsl_core.data.sets import load_sample_set

    first = next(iter(load_sample_set("sd-qa-mini"))).question  # a dev question, spoken here by a made-up stage
    ck = _trajectory(tmp_path, "t", [("x", first.upper())], None, voices=("en-gb", "en-us", "en-029", "en-gb-x-rp"))
    with pytest.raises(AssertionError, match="a model was loaded"):
        cli_main(["hearing", "--checkpoint", str(ck), "--n-questions", "2"])
    out = capsys.readouterr().out
    assert f"note: 1 of the 2 questions here were spoken in t-step1's training (e.g. {first!r})" in out
