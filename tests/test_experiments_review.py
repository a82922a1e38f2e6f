"""Review of the experiment runners (voicebench run/scores/data, table1, layer_profile, stability, report):
each test pins a defect found in review (it failed before the fix).

VoiceBench folders here hold silent clips (no espeak-ng needed): the scores come from answers replayed through
the run's store (tests/voicebench_fixtures.make_replay), so no model runs unless a test says so.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from lsl_core.errors import DataError, LSLError
from voicebench_fixtures import ROWS, encoded_wav, make_replay, write_split


def _silent_voicebench(root: Path, subsets=("sd-qa", "advbench", "openbookqa")) -> Path:
    """root/<subset>/<split>-00000-of-00001.parquet of ROWS' subsets, every clip 0.5 s of silence."""
    blob = encoded_wav(np.zeros(8000, np.float32), 16_000)
    for subset in subsets:
        for split, rows in ROWS[subset].items():
            write_split(root / subset / f"{split}-00000-of-00001.parquet", subset, rows, blobs=[blob] * len(rows))
    return root


def _replayed_answers(out: Path, cfg, checkpoints=("tiny-0", "tiny-1", "tiny-2")) -> None:
    """Known answers (voicebench_fixtures' replay) for every row of cfg, written through the run's store."""
    from lsl_core.experiments.voicebench_run import AppendLog, load_samples, plan_units

    samples = load_samples(cfg)
    replay = make_replay(lambda name: int(name.rsplit("-", 1)[1]))
    log = AppendLog(out / "answers", 0, 1)
    for k, name in enumerate(checkpoints):
        m = SimpleNamespace(name=name, family="tiny", strategy="none", step=10 * k)
        for u in plan_units(name, samples, cfg.modalities, cfg.batch_size):
            log.append(replay(None, u, samples, m, cfg, "r"))


# ============================================================================ VoiceBench data: missing / empty folders
def test_a_requested_subset_or_split_that_is_not_there_is_one_clear_error(tmp_path):
    """--subsets sd-qa:usa,openbookqa on a folder without openbookqa (or with a mistyped split) used to run the
    other subsets silently, so the "five-subset" table and its overall GAP quietly covered fewer subsets."""
    from lsl_core.data.voicebench import load_voicebench
    from lsl_core.experiments.voicebench_run import RunConfig, load_samples

    root = _silent_voicebench(tmp_path / "vb", subsets=("sd-qa", "advbench"))
    with pytest.raises(DataError, match="openbookqa") as e:
        load_voicebench(root, subsets=["sd-qa:usa", "openbookqa"], on_error="collect")
    assert "advbench" in str(e.value) and "sd-qa" in str(e.value)  # it names what the folder does hold
    with pytest.raises(DataError, match="sd-qa:usaa"):
        load_voicebench(root, subsets=["sd-qa:usaa", "advbench"], on_error="collect")
    with pytest.raises(LSLError, match="openbookqa"):
        load_samples(RunConfig(data=str(root), subsets=("advbench", "openbookqa")))
    # what is there still loads
    assert len(load_voicebench(root, subsets=["sd-qa:usa", "advbench"])) == 4


def test_an_empty_subset_folder_is_reported_or_refused(tmp_path):
    from lsl_core.data.voicebench import load_voicebench

    root = _silent_voicebench(tmp_path / "vb", subsets=("sd-qa",))
    (root / "mmsu").mkdir()
    s = load_voicebench(root, on_error="collect")  # every subset found: the empty one is reported, the rest loads
    assert len(s) == 3 and any("mmsu" in str(p) and "no .parquet" in str(p) for p in s.problems)
    with pytest.raises(DataError, match="mmsu"):
        load_voicebench(root)  # on_error="raise"
    with pytest.raises(DataError, match="mmsu"):
        load_voicebench(root, subsets=["mmsu", "sd-qa"], on_error="collect")


def test_cli_refuses_a_missing_subset_with_one_line_and_exit_2(tmp_path, capsys):
    from lsl_core.cli import main

    root = _silent_voicebench(tmp_path / "vb", subsets=("advbench",))
    rc = main(["voicebench", "--data", str(root), "--subsets", "advbench,ifeval", "--out", str(tmp_path / "o"),
               "--score-only"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "ifeval" in err[0]


# ============================================================================ VoiceBench finalize
def test_report_page_header_names_the_command_and_the_code_version(tmp_path):
    """report.md is a results page: its header is pages.page_header's (command + code version), like every page."""
    from lsl_core.experiments.pages import code_version, read_header
    from lsl_core.experiments.voicebench_run import RunConfig, finalize

    cfg = RunConfig(data=str(_silent_voicebench(tmp_path / "vb")), batch_size=3, n_boot=20)
    out = tmp_path / "out"
    _replayed_answers(out, cfg)
    cmd = f"python -m lsl_core voicebench --data {cfg.data} --out {out} --score-only"
    res = finalize(out, cfg, command=cmd)
    head = read_header((out / "report.md").read_text())
    assert head["command"] == cmd and head["version"] == code_version()
    assert res["meta"]["code_version"] == code_version()
    assert json.loads((out / "results.json").read_text())["meta"]["code_version"] == code_version()


def test_voicebench_command_line_comes_from_the_cli_argv(tmp_path, monkeypatch):
    """`cli.main(argv)` (a notebook, a test, a wrapper script) records the argv it ran, not the Python process's."""
    import sys

    from lsl_core.cli import main
    from lsl_core.experiments.pages import read_header
    from lsl_core.experiments.voicebench_run import RunConfig

    cfg = RunConfig(data=str(_silent_voicebench(tmp_path / "vb")), batch_size=3, n_boot=20)
    out = tmp_path / "out"
    _replayed_answers(out, cfg)
    monkeypatch.setattr(sys, "argv", ["/somewhere/lsl_core/__main__.py", "unrelated", "--flags"])
    argv = ["voicebench", "--data", cfg.data, "--out", str(out), "--score-only", "--n-boot", "20"]
    assert main(argv) == 0
    assert read_header((out / "report.md").read_text())["command"] == "python -m lsl_core " + shlex.join(argv)


def test_outputs_are_written_atomically(tmp_path, monkeypatch):
    """A crash while writing (disk full, Ctrl-C) leaves the previous results readable, not a torn parquet."""
    from lsl_core.experiments.voicebench_run import RunConfig, finalize

    cfg = RunConfig(data=str(_silent_voicebench(tmp_path / "vb")), batch_size=3, n_boot=20)
    out = tmp_path / "out"
    _replayed_answers(out, cfg, checkpoints=("tiny-0", "tiny-1"))
    finalize(out, cfg)
    before = {n: pd.read_parquet(out / f"{n}.parquet") for n in ("summary", "gap", "scores")}
    report = (out / "report.md").read_text()
    _replayed_answers(out, cfg, checkpoints=("tiny-2",))  # new answers: the next finalize has more to write

    real = pd.DataFrame.to_parquet

    def torn(self, path, *a, **kw):
        Path(path).write_bytes(b"PAR1 torn")  # part of a file, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", torn)
    with pytest.raises(OSError):
        finalize(out, cfg)
    monkeypatch.setattr(pd.DataFrame, "to_parquet", real)
    for n, df in before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(out / f"{n}.parquet"), df)
    assert (out / "report.md").read_text() == report
    assert sorted(p.name for p in out.iterdir()) == sorted(["answers", "summary.parquet", "gap.parquet",
                                                            "scores.parquet", "results.json", "report.md"])


def test_failing_page_render_leaves_the_previous_results_consistent(tmp_path, monkeypatch):
    """Tables, results.json and report.md come from one finalize: a failure before the last one is written must
    not leave new tables beside an old page."""
    import lsl_core.experiments.voicebench_scores as vs
    from lsl_core.experiments.voicebench_run import RunConfig, finalize

    cfg = RunConfig(data=str(_silent_voicebench(tmp_path / "vb")), batch_size=3, n_boot=20)
    out = tmp_path / "out"
    _replayed_answers(out, cfg, checkpoints=("tiny-0", "tiny-1"))
    finalize(out, cfg)
    gap = pd.read_parquet(out / "gap.parquet")
    results = (out / "results.json").read_text()
    _replayed_answers(out, cfg, checkpoints=("tiny-2",))

    def boom(*a, **kw):
        raise RuntimeError("render failed")

    monkeypatch.setattr(vs, "markdown_report", boom)
    with pytest.raises(RuntimeError):
        finalize(out, cfg)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "gap.parquet"), gap)
    assert (out / "results.json").read_text() == results


def test_answers_outside_the_runs_selection_are_left_out_not_a_crash(tmp_path):
    """An --out that holds answers of more rows than this run selects (a narrower --subsets or --limit on a rerun,
    --score-only on part of a run) used to die with a bare KeyError in scoring."""
    from lsl_core.experiments.voicebench_run import RunConfig, finalize

    root = _silent_voicebench(tmp_path / "vb")
    out = tmp_path / "out"
    _replayed_answers(out, RunConfig(data=str(root), batch_size=3, n_boot=20))
    narrow = RunConfig(data=str(root), subsets=("advbench", "sd-qa:usa"), batch_size=3, n_boot=20)
    res = finalize(out, narrow)
    sc = res["tables"].scores
    assert set(sc["subset"]) == {"advbench", "sd-qa"} and set(sc["split"]) == {"usa", "test"}
    assert set(res["tables"].gap["subset"]) == {"advbench", "sd-qa", "overall"}
    # said in the results: how many stored answers this selection leaves out
    assert res["meta"]["answers_not_selected"] == 3 * 2 * (1 + 2)  # 3 checkpoints x 2 modalities x (gbr + obqa)
    limited = finalize(out, RunConfig(data=str(root), subsets=("sd-qa",), limit=1, batch_size=3, n_boot=20))
    assert set(limited["tables"].scores["sample_id"]) == {"sd-qa/gbr-0"}  # the first row of the subset


def test_scoring_an_incomplete_merge_says_how_many_answers_are_missing(tmp_path):
    """Several nodes without a shared --out: each node's rank-0 folder holds only its own ranks' shards. Scoring
    such a folder (or a merge that forgot one node's files) used to give tables over a random part of the rows
    with nothing saying so."""
    from lsl_core.experiments.voicebench_run import AppendLog, RunConfig, finalize, load_samples, plan_units

    cfg = RunConfig(data=str(_silent_voicebench(tmp_path / "vb")), batch_size=2, n_boot=20)
    samples = load_samples(cfg)
    replay = make_replay(lambda name: int(name.rsplit("-", 1)[1]))
    out = tmp_path / "out"
    logs = [AppendLog(out / "answers", r, 2) for r in range(2)]
    expected = 0
    for k in range(2):
        m = SimpleNamespace(name=f"tiny-{k}", family="tiny", strategy="none", step=10 * k)
        for i, u in enumerate(plan_units(m.name, samples, cfg.modalities, cfg.batch_size)):
            logs[i % 2].append(replay(None, u, samples, m, cfg, "r"))
            expected += len(u.keys())
    complete = finalize(out, cfg)
    assert complete["meta"]["missing_answers"] == 0
    lost = len(json.loads("[" + ",".join(logs[1].path.read_text().splitlines()) + "]"))
    logs[1].path.unlink()  # the other node's shard never arrived
    res = finalize(out, cfg)
    assert res["meta"]["missing_answers"] == lost > 0
    assert f"{lost} answers" in (out / "report.md").read_text()


def test_resume_refuses_answers_made_at_another_precision(tiny_parts, tmp_path, monkeypatch):
    """A trial on the CPU (float32) and the full run on a GPU (bf16) into one --out used to mix the two
    precisions' answers in one table; a rerun must match the dtype as it matches max_new_tokens."""
    import torch

    import lsl_core.model.loading as loading
    from lsl_core.experiments.voicebench_run import RunConfig, run_answers
    from lsl_core.model.loading import CheckpointManifest, read_manifest, write_manifest

    write_manifest(CheckpointManifest(name="tiny-0", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                                      family="tiny", strategy="none", downsample=5, seed=1), tmp_path / "c0")
    zoo = [read_manifest(tmp_path / "c0")]
    cfg = RunConfig(data=str(_silent_voicebench(tmp_path / "vb", subsets=("advbench",))), max_new_tokens=2,
                    batch_size=2, n_boot=20)
    out = tmp_path / "out"
    replay = make_replay(lambda name: 0)
    assert run_answers(cfg, zoo, out, device="cpu", answer_fn=replay, progress=False)["rows"] == 4
    monkeypatch.setattr(loading, "default_dtype", lambda device: torch.bfloat16)  # as on a GPU
    with pytest.raises(LSLError, match="bfloat16"):
        run_answers(cfg, zoo, out, device="cpu", answer_fn=replay, progress=False)


# ============================================================================ table1, stability
@pytest.fixture()
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))


def _tiny_checkpoint_and_set(tiny_parts, tmp_path: Path) -> tuple[Path, Path]:
    from test_experiments import _sample_folder

    from lsl_core.model.loading import CheckpointManifest, write_manifest

    ck = tmp_path / "ck"
    write_manifest(CheckpointManifest(name="tiny", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                                      family="tiny", strategy="none", step=5, downsample=5, seed=1), ck)
    return ck, _sample_folder(tmp_path / "set")


def test_table1_stored_rows_are_written_atomically(tiny_parts, tmp_path, monkeypatch, _private_cache):
    """table1 --out rewrites <name>_interventions.parquet (the Benchmark page's stored run): a crash while writing
    it used to leave a torn parquet and the page unable to read the run."""
    from lsl_core.cli import main

    ck, sset = _tiny_checkpoint_and_set(tiny_parts, tmp_path)
    out = tmp_path / "res"
    argv = ["table1", "--checkpoint", str(ck), "--set", f"manifest:{sset}", "--n", "2", "--max-new-tokens", "2",
            "--interventions", "angle:all", "--out", str(out), "--markdown", str(tmp_path / "p.md")]
    assert main(argv) == 0
    rows = pd.read_parquet(out / "table1_interventions.parquet")
    meta = (out / "table1.json").read_text()

    def torn(self, path, *a, **kw):
        Path(path).write_bytes(b"PAR1 torn")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", torn)
    with pytest.raises(OSError):
        main([*argv[:-4], "angle:bottom3", *argv[-4:]])
    monkeypatch.undo()
    pd.testing.assert_frame_equal(pd.read_parquet(out / "table1_interventions.parquet"), rows)
    assert (out / "table1.json").read_text() == meta
    assert sorted(p.name for p in out.iterdir()) == ["table1.json", "table1_interventions.parquet"]


def test_stability_json_records_the_command_and_code_version(tiny_parts, tmp_path, _private_cache):
    """Every stored result names the command and the code version it came from (pages.provenance)."""
    from lsl_core.cli import main
    from lsl_core.experiments.pages import code_version, command_line

    ck, sset = _tiny_checkpoint_and_set(tiny_parts, tmp_path)
    out = tmp_path / "stab.json"
    argv = ["stability", "--checkpoint", str(ck), "--samples", f"manifest:{sset}", "--limit", "2", "--device", "cpu",
            "--out", str(out)]
    assert main(argv) == 0
    got = json.loads(out.read_text())
    assert got["command"] == command_line(argv) and got["code_version"] == code_version()


def test_report_of_other_results_does_not_overwrite_the_shipped_page(tiny_parts, tmp_path, monkeypatch, capsys,
                                                                     _private_cache):
    """`report interventions --results MY_RUN` (or --name another run; analyze's sharded hint says `report alignment
    --results FILE`) used to write the page to its shipped path docs/results/<page>.md, replacing the published
    results with the user's. Only the page's own stored results may go there by default."""
    import lsl_core.experiments.report as report
    from lsl_core.cli import main

    ck, sset = _tiny_checkpoint_and_set(tiny_parts, tmp_path)
    mine = tmp_path / "mine"
    assert main(["table1", "--checkpoint", str(ck), "--set", f"manifest:{sset}", "--n", "1", "--max-new-tokens", "2",
                 "--interventions", "angle:all", "--out", str(mine), "--name", "run2"]) == 0
    repo = tmp_path / "repo"  # stands for the checkout: the shipped page is repo/docs/results/interventions.md
    monkeypatch.setattr(report, "ROOT", repo)
    capsys.readouterr()
    assert main(["report", "interventions", "--results", str(mine), "--name", "run2"]) == 2
    assert "--markdown" in capsys.readouterr().err
    assert not (repo / "docs" / "results" / "interventions.md").exists()
    # with --markdown it renders; the page's own results (the defaults) still go to the shipped path
    assert main(["report", "interventions", "--results", str(mine), "--name", "run2", "--markdown",
                 str(tmp_path / "p.md")]) == 0
    (repo / "assets").mkdir(parents=True)
    shutil.copytree(mine, repo / "assets" / "results")
    for f in (repo / "assets" / "results").iterdir():
        f.rename(f.with_name(f.name.replace("run2", "table1")))
    assert main(["report", "interventions"]) == 0
    assert (repo / "docs" / "results" / "interventions.md").is_file()


def test_a_rescore_without_alignment_drops_the_previous_r2(tmp_path):
    """r2.parquet / alignment.parquet of an earlier finalize (e.g. with --alignment) used to stay beside the new
    tables when the rescore had none, and the Benchmark page showed that stale R² with the new GAP."""
    from lsl_core.experiments.voicebench_run import RunConfig, finalize
    from lsl_core.experiments.voicebench_scores import load_voicebench_results

    cfg = RunConfig(data=str(_silent_voicebench(tmp_path / "vb")), batch_size=3, n_boot=20)
    out = tmp_path / "out"
    _replayed_answers(out, cfg)
    al = pd.DataFrame([{"checkpoint": f"tiny-{k}", "sample_id": sid, "aps_cos": 0.1 * k + 0.01 * i}
                       for k in range(3) for i, sid in enumerate(["sd-qa/usa-0", "advbench/test-0"])])
    al.to_parquet(tmp_path / "analysis.parquet", index=False)
    assert finalize(out, cfg, alignment_file=str(tmp_path / "analysis.parquet"))["r2"] is not None
    assert load_voicebench_results(out).r2 is not None
    assert finalize(out, cfg)["r2"] is None
    assert load_voicebench_results(out).r2 is None and not (out / "alignment.parquet").exists()


def test_table1_decodes_only_the_clips_it_uses(tiny_parts, tmp_path, _private_cache):
    """table1 used to decode every clip of --set before picking --n of them: a whole VoiceBench split held in memory
    for 60 samples, and one unreadable clip it would never use stopped the run."""
    from lsl_core.cli import main

    ck, sset = _tiny_checkpoint_and_set(tiny_parts, tmp_path)
    (sset / "audio" / "en-gb" / "q2.flac").write_bytes(b"not audio")  # q2 is not among the --n 2 picked
    (sset / "audio" / "en-gb-scotland" / "q2.flac").write_bytes(b"not audio")
    out = tmp_path / "res"
    assert main(["table1", "--checkpoint", str(ck), "--set", f"manifest:{sset}", "--n", "2", "--max-new-tokens", "2",
                 "--interventions", "angle:all", "--out", str(out), "--markdown", str(tmp_path / "p.md")]) == 0
    rows = pd.read_parquet(out / "table1_interventions.parquet")
    assert list(dict.fromkeys(rows["sample_id"])) == ["q0__en-gb", "q1__en-gb-scotland"]  # voices in rotation


def test_stability_lists_an_unreadable_clip_and_goes_on(tiny_parts, tmp_path, _private_cache):
    """analyze_stability skips a sample with bad audio and lists it in `errors`; the command used to decode every
    clip of the set up front (list(set)), so one bad clip, used or not, stopped it."""
    from lsl_core.cli import main

    ck, sset = _tiny_checkpoint_and_set(tiny_parts, tmp_path)
    (sset / "audio" / "en-gb-scotland" / "q0.flac").write_bytes(b"not audio")  # the 2nd sample of the set
    (sset / "audio" / "en-gb" / "q2.flac").write_bytes(b"not audio")  # beyond --limit
    out = tmp_path / "stab.json"
    assert main(["stability", "--checkpoint", str(ck), "--samples", f"manifest:{sset}", "--limit", "4",
                 "--device", "cpu", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["n"] == 3 and len(got["errors"]) >= 1 and got["errors"][0].startswith("q0__en-gb-scotland")


def test_report_refuses_a_page_it_cannot_re_render(tmp_path, monkeypatch, capsys):
    """`report curriculum` (a page in PAGES that only its own command writes) fell through to the alignment
    renderer and wrote the alignment page over docs/results/curriculum.md."""
    import lsl_core.experiments.report as report
    from lsl_core.cli import main
    from lsl_core.experiments.pages import PAGES

    assert PAGES["curriculum"].render == ""
    repo = tmp_path / "repo"  # stands for the checkout, with the shipped stored alignment results
    (repo / "assets" / "results").mkdir(parents=True)
    for f in ("analysis.parquet", "analysis.json"):
        shutil.copy(Path(report.ROOT) / "assets" / "results" / f, repo / "assets" / "results" / f)
    monkeypatch.setattr(report, "ROOT", repo)
    assert main(["report", "curriculum"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and PAGES["curriculum"].command in err
    assert not (repo / "docs" / "results" / "curriculum.md").exists()


def test_resume_refuses_a_data_folder_whose_rows_changed_under_the_same_ids(tiny_parts, tmp_path):
    """Sample ids are positions ("advbench/test-0"): a rerun into the same --out with another folder of the same
    layout (re-voiced audio, an updated release) used to take the first folder's answers for the second's rows."""
    from lsl_core.experiments.voicebench_run import RunConfig, run_answers
    from lsl_core.model.loading import CheckpointManifest, read_manifest, write_manifest

    write_manifest(CheckpointManifest(name="tiny-0", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                                      family="tiny", strategy="none", downsample=5, seed=1), tmp_path / "c0")
    zoo = [read_manifest(tmp_path / "c0")]
    a = _silent_voicebench(tmp_path / "a", subsets=("advbench",))
    b = tmp_path / "b"  # the same prompts and file names, other audio
    rows = ROWS["advbench"]["test"]
    write_split(b / "advbench" / "test-00000-of-00001.parquet", "advbench", rows,
                blobs=[encoded_wav(0.1 * np.ones(12000, np.float32), 16_000)] * len(rows))
    replay = make_replay(lambda name: 0)
    out = tmp_path / "out"
    cfg_a = RunConfig(data=str(a), max_new_tokens=2, batch_size=2)
    assert run_answers(cfg_a, zoo, out, device="cpu", answer_fn=replay, progress=False)["rows"] == 4
    assert run_answers(cfg_a, zoo, out, device="cpu", answer_fn=replay, progress=False)["rows"] == 0  # resumes
    with pytest.raises(LSLError, match="advbench/test-0"):
        run_answers(RunConfig(data=str(b), max_new_tokens=2, batch_size=2), zoo, out, device="cpu",
                    answer_fn=replay, progress=False)
    # the same rows moved to another folder are the same rows: the run resumes
    shutil.copytree(a, tmp_path / "moved")
    assert run_answers(RunConfig(data=str(tmp_path / "moved"), max_new_tokens=2, batch_size=2), zoo, out,
                       device="cpu", answer_fn=replay, progress=False)["rows"] == 0


def test_a_family_answers_each_modality_with_its_own_prompt(tmp_path):
    """A public speech LLM family (prompt and weights per modality): VoiceBench's text and cascade units are
    answered from the family's text prompt, the speech unit from its speech prompt (the bare-query helpers
    wrapped a typed question as speech; they now refuse families), and a whole run goes through."""
    import torch

    from lsl_core.experiments.voicebench_run import (RunConfig, answer_unit, load_samples, plan_units,
                                                     read_jsonl_rows, run_answers)
    from lsl_core.model.families.tiny import make_tiny
    from lsl_core.model.loading import load_checkpoint, read_manifest
    from voicebench_fixtures import write_voicebench

    folder = make_tiny("qwen2-audio", tmp_path / "qwen2-audio")
    model = load_checkpoint(folder, device="cpu")
    model.asr_token_limit = 3  # random weights never stop a transcript on their own
    cfg = RunConfig(data=str(write_voicebench(tmp_path / "vb")), subsets=("sd-qa:usa",),
                    modalities=("text", "speech", "cascade"), max_new_tokens=2, batch_size=2, n_boot=20)
    samples = load_samples(cfg)
    seen: list = []
    real = model.generate_ids
    model.generate_ids = lambda prompts, *a, **k: (seen.append(list(prompts)), real(prompts, *a, **k))[1]
    m = read_manifest(folder)
    for unit in plan_units(m.name, samples, cfg.modalities, cfg.batch_size)[:6]:
        seen.clear()
        rows = answer_unit(model, unit, samples, m, cfg, "r")
        assert rows and all(r["answer"] is not None for r in rows)
        prompts = seen[-1]  # the answers' call (a cascade unit transcribes through generate_ids first)
        assert len(prompts) == len(unit.items)
        for (item, _), p in zip(unit.items, prompts):
            if unit.modality == "speech":
                s = samples[item]
                want = model.prompt_for(audio=s.audio, sr=s.sr)
            else:
                r = next(r for r in rows if r["sample_id"] == item) if unit.modality == "cascade" else None
                want = model.prompt_for(text=r["transcript"] or "." if r else item)
            assert torch.equal(p.inputs_embeds, want.inputs_embeds)
    out = tmp_path / "run"
    run_answers(cfg, [m], out, progress=False)
    done = read_jsonl_rows(out / "answers")
    assert {r["modality"] for r in done} == {"text", "speech", "cascade"}
