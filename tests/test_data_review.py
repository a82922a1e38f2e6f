"""Review of how user data is read and results are cached: each test pins a defect found in review
(it failed on the code before the fix) or a property a fix must keep (resampling, stereo)."""

from __future__ import annotations

import json
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lsl_core.data.audio import TARGET_SR, load_audio_file, prepare_audio
from lsl_core.data.sets import load_sample_set
from lsl_core.errors import AudioError, DataError

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _twice_at_once(job) -> list[Exception]:
    """Run job() in two threads at once; the exceptions they raised (none when both succeed)."""
    errors: list[Exception] = []

    def run():
        try:
            job()
        except Exception as exc:  # noqa: BLE001 (recorded for the caller's assert)
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(a: np.ndarray, sr: int = TARGET_SR) -> float:
    """Frequency of the largest FFT bin of a (1 Hz bins for a 1 s clip)."""
    return float(np.argmax(np.abs(np.fft.rfft(a))) * sr / a.size)


# ------------------------------------------------------------------ audio
@pytest.mark.parametrize("sr", [8_000, 22_050, 44_100, 48_000])
def test_resampling_keeps_a_sines_frequency(sr):
    out = prepare_audio(sine(1.0, sr, freq=3_000.0), sr)
    assert out.size == TARGET_SR and peak_hz(out) == 3_000.0


def test_resampling_filters_a_tone_above_the_new_nyquist_instead_of_aliasing_it():
    # 10 kHz at 48 kHz would fold to 6 kHz at 16 kHz without an anti-aliasing filter
    out = prepare_audio(sine(1.0, 48_000, freq=10_000.0, amp=0.5), 48_000)[800:-800]  # past the edge transients
    assert np.abs(out).max() < 0.5 * 10 ** (-40 / 20)  # at least 40 dB down


def test_int16_array_equals_soundfiles_reading_of_the_same_pcm(tmp_path):
    pcm = (sine(0.5, TARGET_SR) * 32767).astype(np.int16)
    pcm[:2] = (-32768, 16384)  # full-scale negative is exactly -1.0, half scale exactly 0.5
    sf.write(str(tmp_path / "x.wav"), pcm, TARGET_SR, subtype="PCM_16")
    from_file = prepare_audio(*load_audio_file(tmp_path / "x.wav"))
    np.testing.assert_array_equal(prepare_audio(pcm, TARGET_SR), from_file)
    assert from_file[0] == -1.0 and from_file[1] == 0.5


def test_unsigned_8bit_pcm_is_centred_on_zero():
    x = sine(0.5, TARGET_SR)
    u8 = np.round(x * 127 + 128).astype(np.uint8)  # offset binary, as in 8-bit WAV
    out = prepare_audio(u8, TARGET_SR)
    assert abs(float(out.mean())) < 0.01
    assert np.abs(out - x).max() <= 1 / 128 + 1e-6


def test_float_audio_at_integer_scale_is_refused():
    loud = sine(0.5, TARGET_SR) * 32767  # int16 PCM cast to float without scaling
    with pytest.raises(AudioError, match=r"integer PCM .* divide by 32768"):
        prepare_audio(loud, TARGET_SR)
    clipped = np.clip(sine(0.5, TARGET_SR, amp=2.0), -1.2, 1.2)  # overs of a float WAV are still audio
    assert prepare_audio(clipped, TARGET_SR).size == 8_000


def test_a_wav_with_many_channels_is_averaged_over_channels(tmp_path):
    x = sine(1.0, TARGET_SR)
    sf.write(str(tmp_path / "array.wav"), np.stack([x] * 10, axis=1), TARGET_SR, subtype="FLOAT")  # [n, 10]
    out = prepare_audio(*load_audio_file(tmp_path / "array.wav"))
    assert out.size == TARGET_SR
    np.testing.assert_allclose(out, x, atol=1e-6)


# ------------------------------------------------------------------ folder of audio + questions.csv
def folder(root: Path, csv_text: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    sf.write(str(root / "a.wav"), sine(1.0, TARGET_SR), TARGET_SR, subtype="PCM_16")
    sf.write(str(root / "a.flac"), sine(1.0, TARGET_SR), TARGET_SR, subtype="PCM_16")
    sf.write(str(root / "sub" / "my clip.wav"), sine(1.0, TARGET_SR), TARGET_SR, subtype="PCM_16")
    (root / "questions.csv").write_text(csv_text, encoding="utf-8", newline="")
    return root


@pytest.mark.parametrize("csv_text", [
    "file,question\na.wav,Who wrote Happy Days, the TV show?\n",
    "file,question,answers\na.wav,Who wrote Happy Days, the TV show?,Norman Gimbel\n",
])
def test_folder_refuses_an_unquoted_comma_instead_of_cutting_the_question(tmp_path, csv_text):
    d = folder(tmp_path / "f", csv_text)
    with pytest.raises(DataError, match=r"line 2 has more fields than the header .* quote"):
        load_sample_set(f"folder:{d}")


def test_folder_error_names_the_real_line_after_blank_lines(tmp_path):
    d = folder(tmp_path / "f", "file,question\r\n\r\na.wav,Hi there?\r\n\r\nsub/my clip.wav,\r\n")
    with pytest.raises(DataError, match=r"line 5: empty question"):
        load_sample_set(f"folder:{d}")


def test_folder_two_files_with_one_stem_are_named_as_such(tmp_path):
    d = folder(tmp_path / "f", "file,question\na.wav,Hi?\na.flac,Ho?\n")
    with pytest.raises(DataError, match=r"a\.wav and a\.flac .* same id 'a'"):
        load_sample_set(f"folder:{d}")


def test_folder_skips_all_empty_rows_and_reads_windows_paths(tmp_path):
    d = folder(tmp_path / "f", "\ufefffile,question\r\nsub\\my clip.wav,Where is it?\r\n,\r\n")
    s = load_sample_set(f"folder:{d}")
    assert s.ids() == ["sub/my clip"] and s[0].question == "Where is it?" and s[0].audio.size == TARGET_SR


# ------------------------------------------------------------------ manifest sets
def manifest(root: Path, rows: list, bom: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    sf.write(str(root / "x.wav"), sine(1.0, TARGET_SR), TARGET_SR, subtype="PCM_16")
    text = "".join((r if isinstance(r, str) else json.dumps(r)) + "\r\n" for r in rows)
    (root / "manifest.jsonl").write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return root


def test_manifest_with_a_bom_and_numeric_ids_loads(tmp_path):
    d = manifest(tmp_path / "m", [{"id": 0, "question": "Qué?", "audio": "x.wav", "answers": ["sí"]}], bom=True)
    s = load_sample_set(f"manifest:{d}")
    assert s.ids() == ["0"] and s[0].question == "Qué?" and s[0].answers == ("sí",)


@pytest.mark.parametrize("row, pattern", [
    ("[1, 2]", r"line 2 is not a JSON object"),
    ({"id": "y", "question": "q?", "audio": 5}, r"line 2: 'audio' must be a relative path"),
    ({"id": "y", "question": "q?", "audio": "x.wav", "answers": 5}, r"line 2: 'answers' must be"),
    ({"id": "x", "question": "again?", "audio": "x.wav"}, r"line 2: id 'x' is also on line 1"),
])
def test_manifest_malformed_rows_get_one_clear_message(tmp_path, row, pattern):
    d = manifest(tmp_path / "m", [{"id": "x", "question": "q?", "audio": "x.wav"}, row])
    with pytest.raises(DataError, match=pattern):
        load_sample_set(f"manifest:{d}")


def test_sets_opened_by_a_relative_path_still_decode_after_the_working_directory_changes(tmp_path, monkeypatch):
    manifest(tmp_path / "m", [{"id": "x", "question": "q?", "audio": "x.wav"}])
    folder(tmp_path / "f", "file,question\na.wav,Hi?\n")
    monkeypatch.chdir(tmp_path)
    sets = [load_sample_set("manifest:m"), load_sample_set("folder:f")]
    monkeypatch.chdir(tmp_path / "f" / "sub")
    assert [s[0].audio.size for s in sets] == [TARGET_SR, TARGET_SR]


# ------------------------------------------------------------------ SD-QA files
@pytest.fixture
def sdqa_dir(tmp_path, monkeypatch):
    from lsl_core.data import sdqa

    monkeypatch.setenv("LSL_ASSETS_DIR", str(tmp_path))
    (tmp_path / "data").mkdir()
    sdqa._read_jsonl.cache_clear()
    yield tmp_path / "data"
    sdqa._read_jsonl.cache_clear()


def test_sdqa_jsonl_with_a_bom_loads(sdqa_dir):
    from lsl_core.data.sdqa import load_sdqa_dev

    row = {"example_id": "7", "question": "Who?", "answers": ["Me"]}
    (sdqa_dir / "sdqa_eng_dev.jsonl").write_text("\ufeff" + json.dumps(row) + "\r\n", encoding="utf-8")
    assert [(q.example_id, q.question, q.answers) for q in load_sdqa_dev()] == [("7", "Who?", ("Me",))]


def test_sdqa_answers_given_as_a_string_are_refused_not_split_into_letters(sdqa_dir):
    from lsl_core.data.sdqa import load_sdqa_dev

    row = {"example_id": "7", "question": "Who?", "answers": "Me"}
    (sdqa_dir / "sdqa_eng_dev.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 1 is not an SD-QA record"):
        load_sdqa_dev()


# ------------------------------------------------------------------ the result cache
@dataclass
class Entry:
    values: np.ndarray
    name: str


def test_a_torn_npz_is_a_miss_not_a_crash(tmp_path):
    from lsl_core.cache import NpzJsonStore

    store = NpzJsonStore(tmp_path)
    store.write("k", Entry(np.arange(1000.0), "x"))
    npz, _ = store.paths("k")
    whole = npz.read_bytes()
    for torn in (whole[: len(whole) // 2], whole[:10], b""):
        npz.write_bytes(torn)
        assert store.read("k") is None


def test_a_crash_between_the_two_files_leaves_no_mixed_entry(tmp_path, monkeypatch):
    from lsl_core import cache

    store = cache.NpzJsonStore(tmp_path)
    store.write("k", Entry(np.zeros(3), "old"))

    def crash(*a, **k):
        raise KeyboardInterrupt  # the process dies after the arrays were replaced, before the json

    monkeypatch.setattr(cache.json, "dumps", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write("k", Entry(np.ones(3), "new"))
    monkeypatch.undo()
    got = store.read("k")
    assert got is None or (got[0]["name"] == "new") == bool(got[1]["values"].all())


def test_two_writers_of_one_key_at_once_both_succeed(tmp_path, monkeypatch):
    from lsl_core.cache import NpzJsonStore

    store, barrier = NpzJsonStore(tmp_path), threading.Barrier(2, timeout=10)
    real = np.savez

    def savez_then_wait(*a, **k):  # both writers finish their temp file before either renames it
        real(*a, **k)
        barrier.wait()

    monkeypatch.setattr(np, "savez", savez_then_wait)

    assert _twice_at_once(lambda: store.write("k", Entry(np.arange(5.0), "x"))) == []
    meta, arrays = store.read("k")
    assert meta == {"name": "x"} and arrays["values"].tolist() == [0, 1, 2, 3, 4]


# ------------------------------------------------------------------ espeak-ng
@needs_espeak
def test_an_unknown_voice_variant_is_refused_not_spoken_as_the_plain_voice():
    from lsl_core.data.synth import synthesize

    with pytest.raises(DataError, match=r"no voice variant 'nosuchvariant'.*--voices=variant"):
        synthesize("Hello.", "en-gb+nosuchvariant")
    assert synthesize("Hello.", "en-gb+m3").size > 0


def test_two_threads_writing_one_flac_both_succeed(tmp_path, monkeypatch):
    from lsl_core.data.synth import read_flac, write_flac

    barrier, real = threading.Barrier(2, timeout=10), sf.write

    def write_then_wait(*a, **k):
        real(*a, **k)
        barrier.wait()

    monkeypatch.setattr(sf, "write", write_then_wait)

    assert _twice_at_once(lambda: write_flac(tmp_path / "x.flac", sine(0.5, TARGET_SR))) == []
    assert read_flac(tmp_path / "x.flac").size == 8_000


@needs_espeak
def test_a_corrupt_cached_clip_is_regenerated(tmp_path, monkeypatch):
    from lsl_core.data.synth import _cache_path, synth_training_set

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path))
    fresh = synth_training_set(["Who wrote Hamlet?"], ["en-gb"], cache=False)[0].audio
    path = _cache_path("Who wrote Hamlet?", "en-gb", None)
    path.write_bytes(b"fLaC and then nothing")
    again = synth_training_set(["Who wrote Hamlet?"], ["en-gb"])[0].audio
    np.testing.assert_allclose(again, fresh, atol=1 / 32768)


@needs_espeak
def test_rebuilding_a_set_keeps_audio_it_did_not_write(tmp_path):
    from lsl_core.data.synth import build_mini_set

    out = tmp_path / "set"
    mine = out / "audio" / "recorded" / "keep.flac"
    mine.parent.mkdir(parents=True)
    sf.write(str(mine), sine(0.5, TARGET_SR), TARGET_SR, format="FLAC")
    qs = [{"example_id": "a", "question": "Who?"}, {"example_id": "b", "question": "Where?"}]
    build_mini_set(out, qs, ["en-gb"])
    build_mini_set(out, qs[:1], ["en-gb"])  # fewer questions: b's clip is the set's own, removed
    assert mine.is_file()
    assert not (out / "audio" / "en-gb" / "b.flac").exists() and (out / "audio" / "en-gb" / "a.flac").is_file()


def test_the_training_loader_drops_a_test_question_spoken_as_a_dev_question(tmp_path, monkeypatch):
    """english.test.txt rows whose words are a dev question's (other case, spacing or punctuation) are spoken
    identically, so the loader drops them (it compared stripped lower-cased text: "who wrote  hamlet ?" stayed)."""
    import json

    import lsl_core.data.sdqa as S

    (tmp_path / S.DEV_FILE).write_text(json.dumps({"example_id": "d1", "question": "Who wrote Hamlet?",
                                                   "answers": ["Shakespeare"]}) + "\n")
    (tmp_path / S.TEST_FILE).write_text("")
    (tmp_path / S.TRAIN_QUESTIONS_FILE).write_text(
        "ID\tin XOR test\tsentence\nt1\t0\twho wrote  hamlet ?\nt2\t0\tWho wrote Hamlet's sonnets?\n")
    monkeypatch.setattr(S, "sdqa_data_dir", lambda: tmp_path)
    for fn in (S._read_jsonl, S._train_questions):
        fn.cache_clear()
    try:
        assert [q.example_id for q in S.load_sdqa_train_questions()] == ["t2"]
    finally:
        for fn in (S._read_jsonl, S._train_questions):
            fn.cache_clear()
    assert S.spoken_form("Who wrote  Hamlet ?") == S.spoken_form("who wrote hamlet") == "who wrote hamlet"


@pytest.mark.parametrize("flags", [["--n-questions", "5"], ["--voices", "en-us"], ["--speed", "120"],
                                   ["--split", "test"]])
def test_synth_never_rebuilds_the_shipped_set_with_other_options(flags, monkeypatch, capsys):
    """`synth --n-questions 5` without --out rebuilt assets/sd-qa-mini with 5 questions, deleting the other clips;
    an option that changes the set needs --out. Nothing is synthesized or deleted."""
    import lsl_core.data.synth as S
    from lsl_core.cli import main

    monkeypatch.setattr(S, "build_mini_set", lambda *a, **k: pytest.fail("the shipped set would be rebuilt"))
    assert main(["synth", "--set", "sd-qa-mini", *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flags[0] in err and "--out" in err


def test_a_cache_dir_that_cannot_be_created_is_one_error_naming_the_variable(tmp_path, monkeypatch, capsys):
    """LSL_CACHE_DIR pointing at a file gave a FileExistsError traceback in every command, `info` included."""
    from lsl_core.cache import cache_dir
    from lsl_core.errors import LSLError

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("LSL_CACHE_DIR", str(blocker))
    with pytest.raises(LSLError, match="LSL_CACHE_DIR"):
        cache_dir("analysis")
