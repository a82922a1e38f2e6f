"""Data loaders (VoiceBench parquet: tests/test_voicebench.py): the shipped sd-qa-mini set, user folders, espeak-ng synthesis, SD-QA splits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lsl_core.data.sdqa import load_sdqa_dev, load_sdqa_train_questions, select_mini_questions
from lsl_core.data.sets import SampleSet, load_sample_set
from lsl_core.errors import AudioError, DataError

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "assets" / "sd-qa-mini"
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (scripts/setup.sh installs it)")


def sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# ------------------------------------------------------------------ the shipped sd-qa-mini set
def test_mini_set_shape_and_audio(mini_set):
    assert len(mini_set) == 300
    rows = [json.loads(x) for x in (MINI / "manifest.jsonl").read_text().splitlines() if x.strip()]
    info = json.loads((MINI / "set.json").read_text())
    voices = ["en-gb", "en-gb-x-rp", "en-us", "en-029", "en-gb-scotland"]
    assert info["voices"] == voices and info["unseen_voice"] == "en-gb-scotland"
    assert info["counts"]["questions"] == 60 and info["counts"]["clips"] == 300
    assert info["synthetic"].startswith("espeak-ng")
    assert mini_set.voices() == [f"espeak:{v}" for v in voices]
    for v in voices:
        assert len(mini_set.filter(voice=v)) == 60
    assert len({r["example_id"] for r in rows}) == 60
    for r in rows:  # the files themselves are 16 kHz mono (not only after prepare_audio)
        assert r["synthetic"] is True and r["id"] == f"{r['example_id']}__{r['voice']}"
        meta = sf.info(str(MINI / r["audio"]))
        assert (meta.samplerate, meta.channels, meta.format) == (16_000, 1, "FLAC")
    for s in mini_set:
        assert s.sr == 16_000 and s.audio.dtype == np.float32 and s.audio.ndim == 1
        assert abs(s.duration - s.meta["duration_s"]) < 1e-3
        assert s.meta["synthetic"] is True and s.accent.startswith("espeak:")
    size_mb = sum(p.stat().st_size for p in MINI.rglob("*") if p.is_file()) / 1e6
    assert size_mb < 30


def test_mini_set_questions_are_dev_questions_with_answers(mini_set):
    dev = {q.example_id: q for q in load_sdqa_dev()}
    for s in mini_set:
        q = dev[s.meta["example_id"]]
        assert s.question == q.question and s.answers == q.answers and s.answers
    # the documented deterministic selection reproduces the shipped questions, in order
    picked = [q.example_id for q in select_mini_questions(load_sdqa_dev(), 60)]
    assert list(dict.fromkeys(s.meta["example_id"] for s in mini_set)) == picked
    # the next 60 (synth --skip-questions 60): the same rule continued, disjoint from the shipped set
    nxt = [q.example_id for q in select_mini_questions(load_sdqa_dev(), 60, offset=60)]
    assert [q.example_id for q in select_mini_questions(load_sdqa_dev(), 120)] == picked + nxt
    assert len(set(nxt)) == 60 and not set(nxt) & set(picked)
    with pytest.raises(DataError, match="skipped ones included"):
        select_mini_questions(load_sdqa_dev(), 60, offset=10_000)


def test_no_training_question_leaks_into_dev(mini_set):
    train = load_sdqa_train_questions()
    assert len(train) == 1031 and sum(bool(q.answers) for q in train) == 109
    train_ids = {q.example_id for q in train}
    train_texts = {q.question.strip().lower() for q in train}
    mini_ids = {s.meta["example_id"] for s in mini_set}
    assert not train_ids & mini_ids
    assert not train_texts & {s.question.strip().lower() for s in mini_set}
    assert not train_ids & {q.example_id for q in load_sdqa_dev()}  # the whole dev split, too


def test_sample_set_indexing_slicing_and_errors(mini_set):
    first = mini_set[0]
    assert mini_set[first.id].id == first.id and mini_set[-1].id == mini_set.ids()[-1]
    head = mini_set[:5]
    assert isinstance(head, SampleSet) and len(head) == 5 and head.ids() == mini_set.ids()[:5]
    assert first.id in mini_set and "nope" not in mini_set
    with pytest.raises(DataError, match="No sample with id"):
        mini_set["nope"]
    with pytest.raises(IndexError):
        mini_set[len(mini_set)]
    with pytest.raises(DataError, match=r"index 99999 is out of range .* from 0 to 299 or a sample id"):
        mini_set[99999]  # a user error (report-case --sample 99999): one message, no traceback
    with pytest.raises(DataError, match="Unknown sample set"):
        load_sample_set("sd-qa-maxi")
    assert list(mini_set.to_frame().columns[:5]) == ["id", "question", "answers", "accent", "source"]


def test_with_voice_refuses_a_voice_the_set_lacks_and_names_its_voices(mini_set):
    assert mini_set.with_voice("en-gb").ids() == mini_set.filter(voice="en-gb").ids()
    with pytest.raises(DataError, match=r"No sample of voice 'en-gbb' .* en-gb, en-gb-x-rp"):
        mini_set.with_voice("en-gbb")


def test_manifest_set_reports_missing_audio(tmp_path):
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"id": "x", "question": "q?", "audio": "audio/x.flac"}) + "\n")
    with pytest.raises(DataError, match="missing"):
        load_sample_set(f"manifest:{tmp_path}")


# ------------------------------------------------------------------ folder of audio + questions.csv
def make_folder(root: Path, csv_text: str | None) -> Path:
    (root / "sub").mkdir(parents=True)
    left = sine(1.0, 44_100)
    sf.write(str(root / "a.wav"), np.stack([left, left], axis=1), 44_100, subtype="PCM_16")
    sf.write(str(root / "sub" / "b.flac"), sine(0.5, 16_000), 16_000, subtype="PCM_16")
    if csv_text is not None:
        (root / "questions.csv").write_text(csv_text, encoding="utf-8")
    return root


def test_folder_happy_path(tmp_path):
    d = make_folder(tmp_path / "mine", "file,question,answers,accent\n"
                    'a.wav,"Who wrote ""Happy Days""?",Norman Gimbel | Charles Fox,usa\n'
                    "sub/b.flac,When did Alfred die?,,\n")
    s = load_sample_set(f"folder:{d}")
    assert s.ids() == ["a", "sub/b"] and s.voices() == ["usa", ""]
    a, b = s[0], s[1]
    assert a.question == 'Who wrote "Happy Days"?' and a.answers == ("Norman Gimbel", "Charles Fox")
    assert (a.sr, a.audio.size) == (16_000, 16_000) and a.source == "folder"
    assert b.answers == () and b.audio.size == 8_000 and b.accent == ""


@pytest.mark.parametrize("csv_text, pattern", [
    (None, "No questions.csv"),
    ("file,text\na.wav,hi\n", "no column 'question'"),
    ("question\nhi\n", "no column 'file'"),
    ("file,question\n", "no rows"),
    ("file,question\nmissing.wav,hi\n", "missing.wav"),
    ("file,question\na.wav,\n", "line 2: empty question"),
    ("file,question\na.wav,hi\na.wav,again\n", "listed twice"),
])
def test_folder_errors(tmp_path, csv_text, pattern):
    d = make_folder(tmp_path / "mine", csv_text)
    with pytest.raises(DataError, match=pattern):
        load_sample_set(f"folder:{d}")


def test_folder_missing_dir_and_bad_audio(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_sample_set(f"folder:{tmp_path / 'nowhere'}")
    (tmp_path / "clip.wav").write_bytes(b"")
    with pytest.raises(DataError, match="is a file, not a folder"):
        load_sample_set(f"folder:{tmp_path / 'clip.wav'}")
    synth_set = tmp_path / "synth"  # a set written by `synth --out` opened with the wrong prefix
    synth_set.mkdir()
    (synth_set / "manifest.jsonl").write_text("")
    with pytest.raises(DataError, match=f"open it as manifest:{synth_set}"):
        load_sample_set(f"folder:{synth_set}")
    d = make_folder(tmp_path / "mine", "file,question\nbad.wav,hi\n")
    (d / "bad.wav").write_bytes(b"not a wav file")
    s = load_sample_set(f"folder:{d}")
    with pytest.raises(AudioError, match="bad.wav"):
        s[0]


# ------------------------------------------------------------------ espeak-ng synthesis
def test_synth_reports_missing_espeak(monkeypatch):
    from lsl_core.data import synth

    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match=r"espeak-ng not installed: run scripts/setup.sh"):
        synth.synthesize("Hello there.", "en-gb")


@needs_espeak
def test_synthesize_is_deterministic_16k():
    from lsl_core.data.synth import synthesize

    a = synthesize("Who invented air conditioning?", "en-gb")
    b = synthesize("Who invented air conditioning?", "en-gb")
    assert a.dtype == np.float32 and a.ndim == 1 and a.tobytes() == b.tobytes()
    assert 0.8 < a.size / 16_000 < 5.0 and np.abs(a).max() > 0.05
    assert synthesize("Who invented air conditioning?", "en-us").tobytes() != a.tobytes()
    slow = synthesize("Who invented air conditioning?", "en-gb", speed=120)
    assert slow.size > a.size
    with pytest.raises(DataError, match="espeak-ng failed"):
        synthesize("Hello.", "xx-nonexistent")
    with pytest.raises(DataError, match="Invalid espeak-ng voice"):
        synthesize("Hello.", "-v en")
    with pytest.raises(DataError, match="empty"):
        synthesize("   ", "en-gb")


@needs_espeak
def test_build_mini_set_same_bytes_twice(tmp_path):
    from lsl_core.data.synth import build_mini_set

    qs = select_mini_questions(load_sdqa_dev(), 2)
    outs = [tmp_path / "one", tmp_path / "two"]
    for out in outs:
        build_mini_set(out, qs, ["en-gb", "en-029"], unseen_voice="en-029")
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".flac"]) == 4
    for f in files:
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    s = load_sample_set(f"manifest:{outs[0]}")
    assert s.ids() == [f"{qs[0].example_id}__en-gb", f"{qs[0].example_id}__en-029",
                       f"{qs[1].example_id}__en-gb", f"{qs[1].example_id}__en-029"]
    assert s[0].answers == qs[0].answers and s[1].accent == "espeak:en-029"
    assert json.loads((outs[0] / "set.json").read_text())["unseen_voice"] == "en-029"


@needs_espeak
def test_synth_training_set_caches_flacs(tmp_path, monkeypatch):
    from lsl_core.data.synth import synth_training_set

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    qs = load_sdqa_train_questions()[:2]
    first = synth_training_set(qs, ["en-gb"])
    cached = sorted((tmp_path / "cache" / "synth").rglob("*.flac"))
    assert len(cached) == 2
    again = synth_training_set(qs, ["en-gb"])
    assert [s.audio.tobytes() for s in first] == [s.audio.tobytes() for s in again]
    assert first[0].id == f"{qs[0].example_id}__en-gb" and first[0].accent == "espeak:en-gb"
    assert first[0].sr == 16_000 and first[0].meta["synthetic"] is True and first[0].source == "synth:train"


@needs_espeak
def test_synth_cli(tmp_path, capsys):
    from lsl_core.cli import main

    out = tmp_path / "mini"
    assert main(["synth", "--set", "sd-qa-mini", "--out", str(out), "--n-questions", "2", "--voices", "en-gb"]) == 0
    info = json.loads((out / "set.json").read_text())
    assert info["counts"]["clips"] == 2 and info["unseen_voice"] is None
    assert main(["synth", "--set", "train", "--split", "dev"]) == 2  # dev questions never train
    assert "never used for training" in capsys.readouterr().err
