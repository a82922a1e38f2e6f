"""self-cascade: the table by hand from stand-in rows, the command end to end on the shipped checkpoints (the
repeat-stage checkpoint transcribes, the QA checkpoint answers its transcript), and bad input refused before a
model loads."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from lsl_core.cli import main as cli_main
from lsl_core.experiments.closed_vocab import SPEECH_ROW, format_table
from lsl_core.experiments.self_cascade import CONDITION, self_cascade_deltas, self_cascade_table
from lsl_core.scoring import answer_agreement

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets" / "checkpoints"
UNSEEN = "en-gb-scotland"


def _part(agreement: list[float], name: str) -> pd.DataFrame:
    """Two questions x (en-gb, unseen voice); the real speech answers agree 0.2 / 0.0 / 0.4 / 0.2."""
    return pd.DataFrame({
        "checkpoint": "ck", "sample_id": ["s1", "s2", "s3", "s4"], "question": ["q1", "q1", "q2", "q2"],
        "voice": ["en-gb", UNSEEN] * 2,
        "speech_agreement": [0.2, 0.0, 0.4, 0.2], "cascade_agreement": [0.5, 0.25, 0.5, 0.75],
        "agreement": agreement, "condition": CONDITION.format(name=name)})


def test_table_by_hand():
    parts = [_part([0.1, 0.3, 0.5, 0.1], "a"), _part([0.0, 0.0, 0.6, 0.4], "b")]
    table = self_cascade_table(parts, UNSEEN).set_index(["condition", "voice"])
    assert list(dict.fromkeys(table.index.get_level_values(0))) == [SPEECH_ROW, CONDITION.format(name="a"),
                                                                     CONDITION.format(name="b")]
    assert table.loc[(SPEECH_ROW, "seen"), "agreement"] == pytest.approx((0.2 + 0.4) / 2)
    assert table.loc[(SPEECH_ROW, UNSEEN), "ratio"] == pytest.approx((0.0 + 0.2) / (0.25 + 0.75))
    a = table.loc[(CONDITION.format(name="a"), UNSEEN)]
    assert a["agreement"] == pytest.approx((0.3 + 0.1) / 2) and a["cascade_agreement"] == pytest.approx(0.5)
    b = table.loc[(CONDITION.format(name="b"), "seen")]
    assert b["ratio"] == pytest.approx((0.0 + 0.6) / (0.5 + 0.5)) and b["n_q"] == 2
    text = format_table(table.reset_index(), share=None)
    assert text.splitlines()[0] == "| what answers | voices | questions | agreement | cascade | ratio |"
    assert f"| {CONDITION.format(name='b')} | seen | 2 | 30.0 [" in text and "| 0.60× [" in text


def test_paired_deltas_by_hand():
    """Self-cascade − the real speech answers on the same clips, per voice group, by hand from _part."""
    d = self_cascade_deltas(_part([0.1, 0.3, 0.5, 0.1], "a"), UNSEEN).set_index("voice")
    assert d.loc["seen", "delta_agreement"] == pytest.approx((0.1 + 0.5) / 2 - (0.2 + 0.4) / 2)
    unseen = d.loc[UNSEEN]
    assert unseen["base_agreement"] == pytest.approx(0.1) and unseen["other_agreement"] == pytest.approx(0.2)
    assert unseen["delta_agreement"] == pytest.approx(0.1)
    assert unseen["delta_ratio"] == pytest.approx(0.2 / 0.5 - 0.1 / 0.5)
    assert unseen["delta_cascade_agreement"] == pytest.approx(0.0) and unseen["n_q"] == 2
    assert unseen["delta_agreement_lo"] <= 0.1 <= unseen["delta_agreement_hi"]


def test_self_cascade_command_on_the_shipped_checkpoints(capsys, tmp_path):
    """lora-step2900's stored sd-qa-mini rows, its first question (5 voices): align-step2700 repeats each clip,
    lora-step2900's text path answers the repeat; the answer is the checkpoint's own greedy answer to it."""
    from lsl_core.model.loading import load_checkpoint

    ck, tr = ASSETS / "qa-lora" / "lora-step2900", ASSETS / "align-repeat" / "align-step2700"
    out = tmp_path / "self.parquet"
    assert cli_main(["self-cascade", "--checkpoint", str(ck), "--transcriber", str(tr), "--results",
                     str(ROOT / "assets" / "results"), "--samples", "sd-qa-mini", "--n-questions", "1",
                     "--batch-size", "1", "--examples", "1", "--out", str(out), "--threads", "2"]) == 0
    captured = capsys.readouterr()
    text, label = captured.out, CONDITION.format(name="align-step2700")
    # progress: one bar over 5 encoder states + 5 repeats + the distinct repeats answered, ending full
    bars = [ln for ln in captured.err.replace("\r", "\n").splitlines() if "self-cascade via align-step2700" in ln]
    assert bars and "answers" in bars[-1] and re.search(r" (\d+)/\1 ", bars[-1])
    assert f"| {SPEECH_ROW} | seen | 1 |" in text and f"| {label} | {UNSEEN} | 1 |" in text
    assert f"{label} − {SPEECH_ROW}, paired on the same clips:" in text and "| Δ agreement |" in text
    rows = pd.read_parquet(out)
    assert len(rows) == 5 and rows["voice"].nunique() == 5 and (rows["condition"] == label).all()
    assert rows["repeat"].str.strip().str.len().gt(0).all()
    model = load_checkpoint(ck)
    one = rows.iloc[0]
    again = model.generate_answers([model.prompt_for(text=one["repeat"])], 24, batch_size=1)[0]
    assert again == one["answer"]
    assert rows["agreement"].tolist() == pytest.approx([answer_agreement(a, t) for a, t in
                                                        zip(rows["answer"], rows["text_answer"])])


def test_self_cascade_refuses_bad_input_before_loading_a_model(capsys):
    ck = str(ASSETS / "qa-lora" / "lora-step2900")
    assert cli_main(["self-cascade", "--checkpoint", ck, "--results", ".", "--samples", "sd-qa-mini",
                     "--n-questions", "0"]) == 2
    assert "--n-questions must be positive" in capsys.readouterr().err
    assert cli_main(["self-cascade", "--checkpoint", ck, "--transcriber", str(ASSETS / "embedded-untrained"),
                     "--results", ".", "--samples", "sd-qa-mini"]) == 2
    err = capsys.readouterr().err
    assert "not a trained checkpoint" in err and "--repeat-system" in err
    assert cli_main(["self-cascade", "--checkpoint", ck, "--repeat-system", "  ", "--results", ".",
                     "--samples", "sd-qa-mini"]) == 2
    assert "--repeat-system is empty" in capsys.readouterr().err


def test_a_checkpoint_without_lineage_transcribes_with_the_instruction_given(capsys, tmp_path):
    """--repeat-system lets any checkpoint transcribe (here the untrained embedded one): its repeat is its own
    greedy output under that instruction."""
    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.hearing import repeat_outputs
    from lsl_core.model.loading import load_checkpoint

    tr, system, out = ASSETS / "embedded-untrained", "Say the question again.", tmp_path / "rows.parquet"
    assert cli_main(["self-cascade", "--checkpoint", str(ASSETS / "qa-lora" / "lora-step2900"), "--transcriber",
                     str(tr), "--repeat-system", system, "--results", str(ROOT / "assets" / "results"),
                     "--samples", "sd-qa-mini", "--n-questions", "1", "--repeat-tokens", "4", "--max-new-tokens", "24",
                     "--out", str(out), "--threads", "2"]) == 0
    rows = pd.read_parquet(out)
    by_id = {x.id: x for x in load_sample_set("sd-qa-mini")}
    first = by_id[rows["sample_id"].iloc[0]]
    steps: list[int] = []
    again = repeat_outputs(load_checkpoint(tr), [first], 4, 1, system, progress=False, on_done=steps.append)
    assert again == [rows["repeat"].iloc[0]] and sum(steps) == 2  # its encoder state, then its repeat
    assert f"| {CONDITION.format(name='embedded-untrained')} | {UNSEEN} | 1 |" in capsys.readouterr().out


def test_self_cascade_names_rows_the_samples_do_not_hold(capsys, tmp_path):
    """Rows evaluated on sd-qa-mini with another set's audio: one message naming the clip and what to pass."""
    import shutil

    shutil.copy(next((ROOT / "assets" / "sd-qa-mini").rglob("*.flac")), tmp_path / "a.flac")  # real speech
    (tmp_path / "questions.csv").write_text("file,question\na.flac,Who is it?\n")
    assert cli_main(["self-cascade", "--checkpoint", str(ASSETS / "qa-lora" / "lora-step2900"), "--results",
                     str(ROOT / "assets" / "results"), "--samples", f"folder:{tmp_path}", "--n-questions", "1"]) == 2
    err = capsys.readouterr().err
    assert "are not in --samples" in err and "the sample set the rows were evaluated on" in err


def test_self_cascade_refuses_other_answer_lengths_than_the_stored_rows_before_loading(monkeypatch, capsys):
    """The stored speech/cascade answers were made with 24 new tokens (the run's summary says so): answering the
    repeats with 32 would set answers of two lengths side by side. Refused before any model loads."""
    import lsl_core.model.loading as loading

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(loading, "load_checkpoint", refuse)
    root = Path(__file__).resolve().parents[1]
    ck = root / "assets" / "checkpoints" / "qa-lora" / "lora-step2900"
    assert cli_main(["self-cascade", "--checkpoint", str(ck), "--results", str(root / "assets" / "results"),
                     "--samples", "sd-qa-mini", "--max-new-tokens", "32"]) == 2
    assert "answered with --max-new-tokens 24" in capsys.readouterr().err
