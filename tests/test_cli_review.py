"""The CLI as a new user meets it: bad input is one line `error: ...` and exit 2 before any work starts,
Ctrl-C is one line, and `info` lists what its help promises. Every case here runs in-process and fails
before a model loads (a load or a run is an AssertionError)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lsl_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
CK = str(ROOT / "assets" / "checkpoints" / "qa-lora" / "lora-step2900")
DOSE_CONFIG = str(ROOT / "configs" / "train" / "experiments" / "dose_repeat.json")
TRAIN_CONFIG = str(ROOT / "configs" / "train" / "1_align_ctc.json")


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model, building a dose backbone or training is a failure: the arguments come first."""
    import lsl_core.experiments.train as train
    import lsl_core.experiments.train.dose as dose
    import lsl_core.model.loading as loading

    def refuse(*a, **k):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(loading, "load_checkpoint", refuse)
    monkeypatch.setattr(dose, "backbone", refuse)
    monkeypatch.setattr(train, "train", refuse)


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ----------------------------------------------------------------------- --name is a file-name prefix
@pytest.mark.parametrize("argv", [
    ["evaluate", "--checkpoint", CK, "--out", "{dir}/e"],
    ["table1", "--checkpoint", CK, "--out", "{dir}/t"],
])
@pytest.mark.parametrize("name", ["a/b", "", "..", "../up"])
def test_a_results_name_with_a_folder_in_it_is_refused_before_the_run(tmp_path, capsys, no_work, argv, name):
    """`--name a/b` wrote <out>/a/b_*.parquet into a folder nobody made: a traceback after the whole run
    (table1: OSError 'Cannot save file into a non-existent directory'); '' and '..' name hidden or outside files."""
    args = [a.format(dir=tmp_path) for a in argv] + ["--name", name]
    assert main(args) == 2
    line = _one_error(capsys)
    assert "--name" in line and repr(name) in line
    assert list(tmp_path.iterdir()) == []  # nothing written


# ----------------------------------------------------------------------- train --resume-dir
def test_a_file_as_resume_dir_is_refused_before_training(tmp_path, capsys, no_work):
    """save_resume renamed the file to <file>.old and put a folder in its place, then failed with a traceback at
    the next save; refused at once now, the file untouched."""
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    assert main(["train", "--config", TRAIN_CONFIG, "--out", str(tmp_path / "traj"), "--resume-dir", str(f)]) == 2
    line = _one_error(capsys)
    assert f"--resume-dir {f} is a file, not a folder" in line
    assert f.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


# ----------------------------------------------------------------------- dose-test --n-sentences
@pytest.mark.parametrize("n", ["0", "-1"])
def test_dose_test_refuses_a_non_positive_sentence_count_before_the_model_loads(tmp_path, capsys, no_work, n):
    """It was refused only after the backbone loaded and the dose groups were built (a minute on CPU)."""
    assert main(["dose-test", "--config", DOSE_CONFIG, "--out", str(tmp_path / "d"), "--n-sentences", n]) == 2
    line = _one_error(capsys)
    assert f"--n-sentences must be at least 1, got {n}" in line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_is_one_line_and_exit_130_not_a_traceback(monkeypatch, capsys):
    import lsl_core.cli_info as cli_info

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_info, "run", interrupted)
    try:
        rc = main(["info"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C left main as a KeyboardInterrupt (a Python traceback on the terminal)")
    assert rc == 130
    line = _one_error(capsys)
    assert "interrupted" in line.lower()


# ----------------------------------------------------------------------- info
def test_info_lists_the_sample_sets_its_help_promises(capsys):
    """`info --help` says 'device, cache dir, model zoo, sample sets'; the sample sets were never printed."""
    from lsl_core.data.sets import EMBEDDED_SETS, SPEC_FORMS, load_sample_set

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in EMBEDDED_SETS:
        s = load_sample_set(name)
        line = next((ln for ln in out.splitlines() if ln.split()[:1] == [name]), None)
        assert line is not None, out
        assert f"{len(s)} clips" in line and f"{len(s.voices())} voices" in line
    assert SPEC_FORMS.split(", ", 1)[1] in out  # the other forms a user can pass


def test_info_says_when_the_shipped_sample_set_is_unusable(tmp_path, monkeypatch, capsys):
    """A broken install is what `info` is run for: it names the problem instead of stopping."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "sd-qa-mini").mkdir()
    monkeypatch.setenv("LSL_ASSETS_DIR", str(tmp_path))
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("sd-qa-mini"))
    assert "No manifest.jsonl" in line


class _ClosedPipe:
    """A stdout whose reader has gone (`| head`): every write and flush is EPIPE."""

    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        raise BrokenPipeError(32, "Broken pipe")

    def fileno(self):
        raise ValueError("no file descriptor")


def test_a_closed_pipe_is_no_traceback(monkeypatch, capsys):
    """`python -m lsl_core info | head -3` ended in a BrokenPipeError traceback once head had its lines."""
    import sys

    monkeypatch.setattr(sys, "stdout", _ClosedPipe())
    assert main(["info"]) == 1
    assert capsys.readouterr().err == ""


def test_a_broken_pipe_that_is_not_stdout_still_raises(monkeypatch):
    """Only a closed stdout is quiet: a pipe or socket of the command's own that breaks is a bug to see."""
    import lsl_core.cli_info as cli_info

    def judge_gone(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli_info, "run", judge_gone)
    with pytest.raises(BrokenPipeError):
        main(["info"])


# ----------------------------------------------------------------------- analyze --out x.json
@pytest.mark.parametrize("flag", ["--out", "--merge"])
def test_analyze_refuses_a_json_out_where_its_aggregates_would_overwrite_the_rows(tmp_path, capsys, no_work, flag):
    """`analyze --out a.json` wrote the Parquet rows to a.json, then the aggregates (a.json beside it) over them:
    'wrote 1 rows -> a.json (+ aggregates a.json)', and the rows were gone."""
    out = tmp_path / "a.json"
    assert main(["analyze", "--checkpoint", CK, "--limit", "1", flag, str(out)]) == 2
    line = _one_error(capsys)
    assert f"{flag} {out}" in line and str(tmp_path / "a.parquet") in line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- --threads out of range
@pytest.mark.parametrize("threads", ["100000", "10000000000"])
def test_an_absurd_thread_count_is_refused_not_handed_to_torch(monkeypatch, capsys, threads):
    """`--threads 100000` (a typo for 10) made libgomp abort ('Thread creation failed') at the first matmul, and
    10000000000 was a ValueError traceback ('Overflow when unpacking long') from torch.set_num_threads."""
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert main(["table1", "--threads", threads, "--checkpoint", "/nonexistent/manifest.json"]) == 2
    line = _one_error(capsys)
    assert line.startswith(f"error: --threads {threads} is more than") and "CPU cores" in line
    assert calls == []


def test_a_thread_count_within_the_bound_is_applied(monkeypatch):
    import argparse
    import os

    import torch

    from lsl_core.cli import apply_threads

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    apply_threads(argparse.Namespace(threads=2))  # the table1 default, even on a one-core machine
    apply_threads(argparse.Namespace(threads=os.cpu_count() or 1))
    assert calls == [2, os.cpu_count() or 1]


# ----------------------------------------------------------------------- voicebench --seed
def test_voicebench_refuses_a_negative_seed_before_generating(tmp_path, capsys, no_work):
    """`--seed -1` generated every answer, then the bootstrap's numpy generator raised a ValueError traceback
    ('expected non-negative integer')."""
    out = tmp_path / "vb"
    assert main(["voicebench", "--data", "sd-qa-mini", "--as-subset", "sd-qa", "--seed", "-1", "--out", str(out)]) == 2
    line = _one_error(capsys)
    assert "--seed must be 0 or more, got -1" in line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------- voicebench --alignment of the wrong kind
def test_voicebench_refuses_an_alignment_file_that_is_not_parquet_before_generating(tmp_path, capsys, no_work):
    """`--alignment analysis.json` (the aggregates beside analyze's Parquet) generated every answer, then failed
    with pyarrow's ArrowInvalid traceback ('Parquet magic bytes not found')."""
    js = tmp_path / "analysis.json"
    js.write_text('{"meta": {}}')
    out = tmp_path / "vb"
    assert main(["voicebench", "--data", "sd-qa-mini", "--as-subset", "sd-qa", "--alignment", str(js),
                 "--out", str(out)]) == 2
    line = _one_error(capsys)
    assert f"--alignment {js} is not a Parquet file" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["analysis.json"]


def test_a_real_parquet_alignment_file_passes_the_check(tmp_path):
    import pandas as pd

    from lsl_core.cli import check_input

    f = tmp_path / "a.parquet"
    pd.DataFrame({"checkpoint": ["x"], "sample_id": ["s"]}).to_parquet(f)
    check_input(f, "--alignment", "parquet")  # no error


def test_name_and_input_checks_name_real_options():
    """cli.NAMES / cli.INPUTS name argparse dests of their commands (a renamed flag would drop its check)."""
    import argparse

    from lsl_core.cli import INPUTS, NAMES, build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for command, dests in [*NAMES.items(), *INPUTS.items()]:
        assert set(dests) <= {a.dest for a in action.choices[command]._actions}, command


# ----------------------------------------------------------------------- an empty output path
@pytest.mark.parametrize("argv", [
    ["analyze", "--checkpoint", CK, "--limit", "1", "--out", ""],
    ["stability", "--checkpoint", CK, "--limit", "1", "--out", ""],
    ["report-case", "--checkpoint", CK, "--out", ""],
    ["families", "make-tiny", "--family", "voxtral", "--out", ""],
])
def test_an_empty_output_path_is_refused_before_the_run(tmp_path, monkeypatch, capsys, no_work, argv):
    """`--out ""` (an unset shell variable) ran the whole analysis, then failed with a traceback writing '.'
    (analyze: IsADirectoryError; stability: "PosixPath('.') has an empty name"; report-case: IsADirectoryError);
    families make-tiny wrote its checkpoints into the current folder."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    line = _one_error(capsys)
    assert "--out is empty" in line
    assert list(tmp_path.iterdir()) == []


def test_analyze_merge_without_a_value_still_means_the_out_shards(tmp_path, capsys):
    out = tmp_path / "r.parquet"
    assert main(["analyze", "--merge", "--out", str(out)]) == 2  # no shards there: the command's own message
    assert "No shard files like r.shard-000-of-NNN.parquet" in _one_error(capsys)


def test_a_resume_dir_holding_other_files_is_refused_not_replaced(tmp_path, capsys, no_work):
    """The resume state replaces its folder as a whole (state.save_resume: the folder goes to <dir>.old, which is
    removed): `--resume-dir ~/runs` would have deleted every file in ~/runs at the first checkpoint."""
    mine = tmp_path / "runs"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["train", "--config", TRAIN_CONFIG, "--out", str(tmp_path / "traj"), "--resume-dir", str(mine)]) == 2
    line = _one_error(capsys)
    assert f"--resume-dir {mine} holds files that are not a resume state" in line
    assert (mine / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("state", ["missing", "empty", "a resume state"])
def test_a_new_empty_or_resume_state_folder_is_a_fine_resume_dir(tmp_path, state):
    from lsl_core.cli import check_output

    d = tmp_path / "resume"
    if state != "missing":
        d.mkdir()
    if state == "a resume state":
        (d / "state.json").write_text("{}")
        (d / "trainable.safetensors").write_bytes(b"x")
    check_output(d, "--resume-dir", "state")  # no error


# ----------------------------------------------------------------------- --device
@pytest.mark.parametrize("device, cuda, message", [
    ("gpu", 0, "--device 'gpu' is not a device"),  # RuntimeError 'Expected one of cpu, cuda, ...' traceback
    ("banana", 0, "--device 'banana' is not a device"),
    ("cuda", 0, "--device cuda: no CUDA GPU is usable here"),  # AssertionError 'Torch not compiled with CUDA'
    ("cuda:3", 2, "--device cuda:3: this machine has 2 CUDA device(s), cuda:0 .. cuda:1"),
])
def test_a_device_this_machine_lacks_is_one_error_before_the_model_loads(monkeypatch, capsys, no_work, tmp_path,
                                                                         device, cuda, message):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    assert main(["stability", "--checkpoint", CK, "--limit", "1", "--device", device,
                 "--out", str(tmp_path / "s.json")]) == 2
    assert message in _one_error(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("device, cuda", [("cpu", 0), ("cuda", 1), ("cuda:1", 2), (None, 0)])
def test_a_device_this_machine_has_passes(monkeypatch, device, cuda):
    import argparse

    import torch

    from lsl_core.cli import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    check_device(argparse.Namespace(command="stability", device=device))  # no error
    check_device(argparse.Namespace(command="train", device="auto"))  # train checks its own (auto = by the machine)


def test_a_results_file_that_is_not_parquet_is_one_line_not_a_traceback(tmp_path, capsys):
    """report / compare read stored Parquet tables; a text file given instead was a pyarrow traceback."""
    from lsl_core.cli import main

    notes = tmp_path / "notes.txt"
    notes.write_text("not a table\n")
    assert main(["report", "alignment", "--results", str(notes), "--markdown", str(tmp_path / "a.md")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "notes.txt" in err
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoints_samples.parquet").write_text("garbage")
    assert main(["compare", "--results", str(tmp_path / "r"), "--base", "A", "--other", "B"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "checkpoints_samples.parquet" in err


def test_report_case_and_table1_refuse_typos_before_the_model_loads(monkeypatch, tmp_path, capsys):
    """A negative --sample picked the last sample (the message says 0..n-1); a typo in report-case's
    --intervention or table1's --set was found only after the model had loaded."""
    import lsl_core.model.loading as loading
    from lsl_core.cli import main

    monkeypatch.setattr(loading, "load_checkpoint", lambda *a, **k: pytest.fail("the model was loaded"))
    out = str(tmp_path / "case.html")
    for argv, says in ((["report-case", "--sample", "-1", "--out", out], "0 to"),
                       (["report-case", "--sample", "0", "--intervention", "angel:all", "--out", out], "angel"),
                       (["table1", "--set", "folder:/no/such/folder", "--out", str(tmp_path)], "/no/such/folder")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and says in err, (argv, err)
