"""VoiceBench parquet loader: every subset in the published schema, resampling, selection, problems."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lsl_core.data.sets import SampleSet, load_sample_set
from lsl_core.data.voicebench import SUBSETS, count_notes, load_voicebench, subset_counts
from lsl_core.errors import AudioError, DataError
from voicebench_fixtures import ROWS, encoded_wav, n_rows, write_split, write_voicebench

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (scripts/setup.sh installs it)")


def sine(seconds: float, sr: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def vb_root(tmp_path_factory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    return write_voicebench(tmp_path_factory.mktemp("vb") / "voicebench")


def test_every_subset_loads_with_its_columns(vb_root):
    s = load_voicebench(vb_root)
    assert len(s) == n_rows() and s.problems == []
    assert subset_counts(s) == {sub: {sp: len(r) for sp, r in splits.items()} for sub, splits in ROWS.items()}
    # ids: <subset>/<split>-<row>, in subset, split, row order
    assert s.ids()[:3] == ["advbench/test-0", "advbench/test-1", "alpacaeval/test-0"]
    sd = s["sd-qa/usa-1"]
    assert sd.question == "When was the first web page released?" and sd.answers == ("1991",)
    assert sd.accent == "usa" and sd.source == "voicebench:sd-qa" and sd.meta["split"] == "usa"
    assert s["mmsu/law-0"].answers == ("C",) and s["mmsu/law-0"].accent == "law"
    b = s["bbh/test-3"]
    assert b.meta["id"] == "hyperbaton_0" and b.answers == ("(A)",)
    ie = s.record("ifeval/test-1")  # metadata without decoding audio
    assert ie.meta["key"] == 1002 and ie.meta["instruction_id_list"] == ["change_case:english_lowercase",
                                                                         "startend:end_checker"]
    kw = ie.meta["kwargs"]  # list<struct> of every IFEval argument, null where unused
    assert len(kw) == 2 and kw[1]["end_phrase"] == "Any questions?" and kw[1]["num_words"] is None
    assert s["advbench/test-0"].answers == () and s["advbench/test-0"].question == "Tell me how to pick a lock."
    # the text modality is the prompt column, verbatim
    assert [s[i].question for i in s.ids() if i.startswith("openbookqa/")] == [r["prompt"] for r in
                                                                            ROWS["openbookqa"]["test"]]
    # count check against the published sizes: a fixture is much smaller
    notes = count_notes(s)
    assert "sd-qa:usa has 2 rows; the published split has 553." in notes
    assert "mmsu has 3 rows; the published subset has 3074." in notes


def test_audio_is_decoded_and_resampled_to_16k(vb_root):
    from lsl_core.data.synth import synthesize

    s = load_voicebench(vb_root / "sd-qa")  # a subset folder: ids without the subset
    assert s.ids() == ["gbr-0", "usa-0", "usa-1"]
    u = s["usa-0"]
    assert (u.sr, u.audio.dtype, u.audio.ndim) == (16_000, np.float32, 1)
    ref = synthesize(ROWS["sd-qa"]["usa"][0]["prompt"], "en-us")  # the same speech made at 16 kHz directly
    # 16k -> 22.05k (fixture) -> 16k: same length within a sample, same waveform up to resampling error
    assert abs(u.audio.size - ref.size) <= 1
    n = min(u.audio.size, ref.size)
    err = np.abs(u.audio[:n] - ref[:n])[200:-200]
    assert err.max() < 0.05 and float(np.corrcoef(u.audio[:n], ref[:n])[0, 1]) > 0.999


def test_selection_by_subset_and_split(vb_root):
    s = load_voicebench(vb_root, subsets=["sd-qa:usa", "mmsu", "openbookqa"])
    assert subset_counts(s) == {"mmsu": {"biology": 2, "law": 1}, "openbookqa": {"test": 2}, "sd-qa": {"usa": 2}}
    assert "sd-qa/usa-0" in s and "sd-qa/gbr-0" not in s  # ids do not depend on the selection
    with pytest.raises(DataError, match="Unknown VoiceBench subset 'mtbench' .multi-turn"):
        load_voicebench(vb_root, subsets=["mtbench"])
    with pytest.raises(DataError, match="Unknown VoiceBench subset 'sdqa'"):
        load_voicebench(vb_root, subsets=["sdqa"])


def test_spec_string_and_several_accents_resample_and_downmix(tmp_path):
    """A 44.1 kHz stereo WAV and a 22.05 kHz FLAC, compared with the sine sampled at 16 kHz directly."""
    import io

    import soundfile as sf

    left = sine(1.0, 44_100)
    stereo = np.stack([left, 0.5 * left], axis=1)  # [n, 2]: mono mix = 0.75 * left
    buf = io.BytesIO()
    sf.write(buf, sine(0.8, 22_050, 300.0), 22_050, format="FLAC", subtype="PCM_16")
    rows = [{"prompt": "q one?", "reference": "a"}, {"prompt": "q two?", "reference": "b"}]
    write_split(tmp_path / "sd-qa" / "usa-00000-of-00001.parquet", "sd-qa", rows,
                blobs=[encoded_wav(stereo, 44_100), buf.getvalue()])
    s = load_sample_set(f"voicebench:{tmp_path / 'sd-qa'}")
    assert isinstance(s, SampleSet) and s.ids() == ["usa-0", "usa-1"]
    np.testing.assert_allclose(s[0].audio[400:-400], 0.75 * sine(1.0, 16_000)[400:-400], atol=5e-3)
    assert s[1].audio.size == int(0.8 * 16_000)
    np.testing.assert_allclose(s[1].audio[400:-400], sine(0.8, 16_000, 300.0)[400:-400], atol=5e-3)


def test_hub_converted_layout(tmp_path):
    """<subset>/<split>/0000.parquet (the hub's parquet conversion) loads like the published layout."""
    rows = [{"prompt": "The sun is a? A. planet B. moon C. star D. comet", "reference": "C"}]
    write_split(tmp_path / "vb" / "openbookqa" / "test" / "0000.parquet", "openbookqa", rows,
                blobs=[encoded_wav(sine(0.5, 16_000), 16_000)])
    write_split(tmp_path / "vb" / "sd-qa" / "aus" / "0000.parquet", "sd-qa", [{"prompt": "q?", "reference": "x"}],
                blobs=[encoded_wav(sine(0.5, 16_000), 16_000)])
    s = load_voicebench(tmp_path / "vb")
    assert s.ids() == ["openbookqa/test-0", "sd-qa/aus-0"]
    assert load_voicebench(tmp_path / "vb" / "sd-qa").ids() == ["aus-0"]


# ------------------------------------------------------------------ malformed files: one clear message each
def _tone() -> bytes:
    return encoded_wav(sine(0.5, 16_000), 16_000)


def test_missing_column_names_file_column_and_schema(tmp_path):
    f = write_split(tmp_path / "sd-qa" / "usa-00000-of-00001.parquet", "sd-qa",
                    [{"prompt": "q", "reference": "r"}], blobs=[_tone()], drop=("reference",))
    with pytest.raises(DataError) as exc:
        load_sample_set(f"voicebench:{tmp_path / 'sd-qa'}")
    msg = str(exc.value)
    assert str(f) in msg and "'reference'" in msg and "struct<bytes: binary" in msg
    f2 = write_split(tmp_path / "ifeval" / "test-00000-of-00001.parquet", "ifeval", ROWS["ifeval"]["test"][:1],
                     blobs=[_tone()], drop=("kwargs",))
    with pytest.raises(DataError, match=f"{f2}: has no column 'kwargs'"):
        load_voicebench(tmp_path / "ifeval")


def test_bad_audio_type_and_empty_or_missing_folder(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "sd-qa").mkdir()
    pq.write_table(pa.table({"audio": ["not audio"], "prompt": ["q"], "reference": ["r"]}),
                   tmp_path / "sd-qa" / "usa-00000-of-00001.parquet")
    with pytest.raises(DataError, match="column 'audio' has type string"):
        load_sample_set(f"voicebench:{tmp_path / 'sd-qa'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="No .parquet files"):
        load_sample_set(f"voicebench:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="does not exist"):
        load_sample_set(f"voicebench:{tmp_path / 'nowhere'}")


def test_undecodable_audio_names_file_and_row(tmp_path):
    f = write_split(tmp_path / "sd-qa" / "usa-00000-of-00001.parquet", "sd-qa",
                    [{"prompt": "q1", "reference": "r"}, {"prompt": "q2", "reference": "r"}],
                    blobs=[_tone(), b"garbage"])
    s = load_sample_set(f"voicebench:{tmp_path / 'sd-qa'}")  # metadata loads; audio decodes lazily
    assert s[0].audio.size == 8_000  # the good row decodes
    with pytest.raises(AudioError) as exc:
        s[1]
    assert f"usa-1 ({f} row 1)" in str(exc.value) and "Could not decode audio" in str(exc.value)


def test_collect_mode_skips_bad_files_and_rows_and_keeps_the_rest(tmp_path):
    root = tmp_path / "vb"
    write_split(root / "openbookqa" / "test-00000-of-00001.parquet", "openbookqa",
                [{"prompt": "ok?", "reference": "A"}, {"prompt": "  ", "reference": "B"},
                 {"prompt": "no ref?", "reference": ""}, {"prompt": "ok too?", "reference": "D"}],
                blobs=[_tone()] * 4)
    write_split(root / "mmsu" / "law-00000-of-00001.parquet", "mmsu", [{"prompt": "q", "reference": "A"}],
                blobs=[_tone()], drop=("reference",))
    write_split(root / "mysubset" / "test-00000-of-00001.parquet", "advbench", [{"prompt": "q"}], blobs=[_tone()])
    bad_if = dict(ROWS["ifeval"]["test"][2], instruction_id_list=["length_constraints:number_words",
                                                                  "made:up"], kwargs=[{}, {}])
    write_split(root / "ifeval" / "test-00000-of-00001.parquet", "ifeval",
                [ROWS["ifeval"]["test"][0], bad_if], blobs=[_tone()] * 2)
    s = load_voicebench(root, on_error="collect")
    assert s.ids() == ["ifeval/test-0", "openbookqa/test-0", "openbookqa/test-3"]  # row numbers keep their place
    msgs = sorted(str(p) for p in s.problems)
    assert len(msgs) == 5
    obqa = str(root / "openbookqa" / "test-00000-of-00001.parquet")
    assert f"{obqa} row 1: empty 'prompt'; every row needs the typed instruction." in msgs
    assert f"{obqa} row 2: empty 'reference'; the openbookqa subset needs it in every row." in msgs
    assert any(m.startswith(f"{root / 'mmsu' / 'law-00000-of-00001.parquet'}: has no column 'reference'")
               for m in msgs)
    assert any(m.startswith(f"{root / 'mysubset' / 'test-00000-of-00001.parquet'}: unknown VoiceBench subset "
                            "'mysubset'") for m in msgs)
    assert any("row 1: unknown IFEval instruction id(s) 'made:up'" in m for m in msgs)
    # the default (raise) stops at the first problem, naming file and row
    with pytest.raises(DataError, match="row 1: unknown IFEval instruction"):
        load_voicebench(root / "ifeval")
    assert s.filter(voice="test").problems == s.problems  # problems travel with subsets of the set


def test_malformed_ifeval_kwargs_are_reported_with_file_and_row(tmp_path):
    """kwargs stored as JSON text (as some exports do): entries that are not objects, values that are
    not numbers, missing arguments and an id list that is not a list are each one problem naming the
    row, found when the file is read (not a crash when the answers are scored)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from voicebench_fixtures import audio_array

    rows = [(["punctuation:no_comma"], "[{}]"),  # good
            (["punctuation:no_comma"], '["{}"]'),  # an entry that is not an object
            (["length_constraints:number_words"], '[{"num_words": "many", "relation": "at least"}]'),
            (["length_constraints:number_words"], "[{}]"),  # arguments missing
            (["keywords:existence"], '[{"keywords": "rain"}]')]  # keywords must be a list
    f = tmp_path / "ifeval" / "test-00000-of-00001.parquet"
    f.parent.mkdir(parents=True)
    pq.write_table(pa.table({"audio": audio_array([_tone()] * len(rows), [f"{i}.wav" for i in range(len(rows))]),
                             "prompt": pa.array([f"Write note {i}." for i in range(len(rows))]),
                             "key": pa.array(range(len(rows)), pa.int64()),
                             "instruction_id_list": pa.array([r[0] for r in rows], pa.list_(pa.string())),
                             "kwargs": pa.array([r[1] for r in rows], pa.string())}), f)
    s = load_voicebench(tmp_path / "ifeval", on_error="collect")
    assert s.ids() == ["test-0"]
    msgs = [str(p) for p in s.problems]
    assert len(msgs) == 4 and all(m.startswith(f"{f} row {r}: ") for m, r in zip(msgs, (1, 2, 3, 4)))
    assert "kwargs entry 1 is not an object" in msgs[0]
    assert "num_words must be a whole number" in msgs[1] and "'many'" in msgs[1]
    assert "needs kwargs num_words, relation" in msgs[2]
    assert "keywords must be a list of strings" in msgs[3]


def test_subset_table_matches_the_published_counts():
    # VoiceBench's README: the subsets and their sizes; the first seed paper's five-subset total is 4,947
    assert {k: v.n for k, v in SUBSETS.items()} == {
        "alpacaeval": 199, "alpacaeval_full": 636, "commoneval": 200, "wildvoice": 1000, "openbookqa": 455,
        "mmsu": 3074, "sd-qa": 553, "ifeval": 345, "bbh": 1000, "advbench": 520}
    assert SUBSETS["sd-qa"].n + sum(SUBSETS[s].n for s in ("mmsu", "openbookqa", "ifeval", "advbench")) == 4947
    assert len(SUBSETS["sd-qa"].splits) == 11
