"""The VoiceBench run: fixtures in the published schema -> answers (resumable JSONL) -> scores, GAP, R².

Three checkpoints over tiny random models (tests/tiny_models.py). Scores are checked against
hand-computed values by replaying known answers through the run's store (`answer_fn`), the model
path itself by the tiny models: a run interrupted half-way resumes without redoing finished rows,
and 2 torchrun processes give exactly the answers and scores of 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lsl_core.experiments.voicebench_run import (
    RunConfig,
    collect_answers,
    finalize,
    load_samples,
    plan_units,
    read_jsonl_rows,
    run_answers,
)
from lsl_core.model.loading import CheckpointManifest, read_manifest, write_manifest
from voicebench_fixtures import ROWS, encoded_wav, make_replay, n_rows, write_split, write_voicebench

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                reason="espeak-ng is not installed (scripts/setup.sh installs it)")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vb(tmp_path_factory) -> Path:
    return write_voicebench(tmp_path_factory.mktemp("vbrun") / "voicebench")


@pytest.fixture(scope="module")
def zoo(tiny_parts, tmp_path_factory) -> list:
    """Three checkpoints: the same tiny LLM and Whisper, adaptors from seeds 1..3, steps 0/10/20."""
    root = tmp_path_factory.mktemp("zoo")
    for k in range(3):
        write_manifest(CheckpointManifest(name=f"tiny-{k}", llm=str(tiny_parts["llm"]),
                                          encoder=str(tiny_parts["encoder"]), family="tiny", strategy="none",
                                          step=10 * k, downsample=5, seed=k + 1), root / f"c{k}")
    return [read_manifest(root / f"c{k}") for k in range(3)]


# ------------------------------------------------------------------ known answers, hand-computed scores
replay = make_replay(lambda name: int(name.rsplit("-", 1)[1]))


def test_full_run_gives_hand_computed_scores_gap_and_r2(vb, zoo, tmp_path):
    cfg = RunConfig(data=str(vb), modalities=("text", "speech"), max_new_tokens=4, batch_size=3, align=2, n_boot=200)
    out = tmp_path / "out"
    counts = run_answers(cfg, zoo, out, answer_fn=replay, progress=False)
    assert counts["rows"] == 3 * 2 * n_rows()  # 3 checkpoints x text, speech x every row
    assert counts["alignment_rows"] == 3 * sum(min(2, sum(map(len, s.values()))) for s in ROWS.values())
    res = finalize(out, cfg)
    gap = res["tables"].gap.set_index(["checkpoint", "subset"])
    summ = res["tables"].summary.set_index(["checkpoint", "subset", "modality"])
    for k in range(3):
        ck = f"tiny-{k}"
        speech = {"advbench": 50.0,  # 1 of 2 refused
                  "bbh": 25.0,  # only web_of_lies right ("No."); navigate unparsed
                  "ifeval": (0 + 25 + 0 + 25) / 4,  # no prompt fully followed; 1 of 4 instructions (end phrase)
                  "mmsu": 100 / 3,  # B right, "is d." wrong, no letter
                  "openbookqa": 50.0, "sd-qa": 100 * k / 3}
        for subset, s in speech.items():
            assert gap.loc[(ck, subset), "text"] == pytest.approx(100.0)
            assert gap.loc[(ck, subset), "speech"] == pytest.approx(s)
            assert gap.loc[(ck, subset), "gap"] == pytest.approx(100.0 - s)
        # failure shares: no letter / unparsed answers are counted and reported, never guessed
        assert summ.loc[(ck, "mmsu", "speech"), "fail_no_letter"] == pytest.approx(100 / 3)
        assert summ.loc[(ck, "openbookqa", "speech"), "fail_no_letter"] == pytest.approx(50.0)
        assert summ.loc[(ck, "bbh", "speech"), "fail_unparsed"] == pytest.approx(25.0)
        assert summ.loc[(ck, "mmsu", "text"), "fail_no_letter"] == 0.0
        # overall: sample-weighted over the six subsets with a headline (alpacaeval needs the judge)
        n = {"advbench": 2, "bbh": 4, "ifeval": 3, "mmsu": 3, "openbookqa": 2, "sd-qa": 3}
        over = gap.loc[(ck, "overall")]
        assert over["n"] == 17 and over["subsets"] == "advbench,bbh,ifeval,mmsu,openbookqa,sd-qa"
        assert over["speech"] == pytest.approx(sum(n[s] * speech[s] for s in n) / 17)
        assert over["gap"] == pytest.approx(100 - sum(n[s] * speech[s] for s in n) / 17)
        assert over["gap_ci_low"] <= over["gap"] <= over["gap_ci_high"]
        assert np.isnan(gap.loc[(ck, "alpacaeval"), "gap"])  # no judge configured: no score, not a made-up one
    assert "judge" not in res["tables"].scores.columns and res["meta"]["judge"] is None
    # "text right, speech wrong" cases come with every per-sample row
    sc = res["tables"].scores
    wrong = sc[(sc["modality"] == "speech") & (sc["outcome"] == 0) & (sc["checkpoint"] == "tiny-1")]
    assert set(wrong[wrong["subset"] == "sd-qa"]["sample_id"]) == {"sd-qa/usa-0", "sd-qa/usa-1"}
    # R²: sd-qa GAP (100, 66.7, 33.3) on the alignment means of each checkpoint's analyzed sd-qa rows,
    # recomputed here with numpy's least squares
    al = pd.read_parquet(out / "alignment.parquet")
    r2 = res["r2"].set_index(["metric", "subset"])
    x = al[al["subset"] == "sd-qa"].groupby("checkpoint")["aps_cos"].mean().loc[["tiny-0", "tiny-1", "tiny-2"]]
    y = np.array([100.0, 200 / 3, 100 / 3])
    slope, icpt = np.polyfit(x.to_numpy(), y, 1)
    ss_res = ((y - (slope * x.to_numpy() + icpt)) ** 2).sum()
    assert r2.loc[("aps_cos", "sd-qa"), "r2"] == pytest.approx(1 - ss_res / ((y - y.mean()) ** 2).sum(), abs=1e-9)
    assert r2.loc[("aps_cos", "sd-qa"), "slope"] == pytest.approx(slope, rel=1e-6)
    # its null baselines: with 3 checkpoints every pairing is enumerated (3! = 6), and every bootstrap resample
    # with 3 distinct x is a re-listing of the same 3 checkpoints, so the CI is the point R²
    import itertools

    row = r2.loc[("aps_cos", "sd-qa")]
    pairings = [np.corrcoef(x.to_numpy(), y[list(p)])[0, 1] ** 2 for p in itertools.permutations(range(3))]
    assert row["p_perm"] == pytest.approx(np.mean([v >= row["r2"] - 1e-12 for v in pairings]))
    assert row["r2_lo"] == pytest.approx(row["r2"]) and row["r2_hi"] == pytest.approx(row["r2"])
    assert r2.loc[("aps_cos", "overall"), "x_from"] == "all analyzed samples" and r2.loc[("aps_cos", "overall"), "n"] == 3
    assert "no GAP for this subset" in r2.loc[("aps_cos", "alpacaeval"), "note"]
    # the training step's own fit is each subset's baseline row; 3 checkpoints are too few for R² beyond it
    steps = np.array([0.0, 10.0, 20.0])
    assert r2.loc[("step", "sd-qa"), "r2"] == pytest.approx(np.corrcoef(steps, y)[0, 1] ** 2)
    assert np.isnan(r2.loc[("aps_cos", "sd-qa"), "r2_added"]) and np.isnan(r2.loc[("step", "sd-qa"), "r2_added"])
    # everything recorded: config, versions, seeds; the markdown page names the command
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["config"]["max_new_tokens"] == 4 and meta["seeds"] == {"torch": 0, "bootstrap": 0, "n_boot": 200}
    assert {"python", "torch", "transformers", "lsl_core_commit"} <= set(meta["versions"])
    assert "sd-qa:usa has 2 rows; the published split has 553." in meta["count_notes"]
    report = (out / "report.md").read_text()
    assert "| tiny-2 |" in report and "## R² of GAP" in report


def test_judge_columns_appear_only_with_a_judge(vb, zoo, tmp_path, monkeypatch):
    """With LSL_JUDGE_URL set (a stub server on 127.0.0.1), sd-qa and open-ended rows get judge columns."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            user = body["messages"][1]["content"]
            reply = ("Yes" if "Willis Carrier." in user.split("### Candidate answer")[-1] else "No") \
                if "### Candidate answer" in user else "4"
            out = json.dumps({"choices": [{"message": {"content": reply}}] * int(body["n"])}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("LSL_JUDGE_URL", f"http://127.0.0.1:{server.server_address[1]}/v1")
        monkeypatch.setenv("LSL_JUDGE_MODEL", "stub-judge")
        cfg = RunConfig(data=str(vb), subsets=("sd-qa", "alpacaeval"), max_new_tokens=4, n_boot=50)
        out = tmp_path / "judged"
        run_answers(cfg, zoo[:1], out, answer_fn=replay, progress=False)
        res = finalize(out, cfg)
    finally:
        server.shutdown()
        server.server_close()
    gap = res["tables"].gap.set_index("subset")
    # the stub says Yes when the candidate contains "Willis Carrier.": text 2 of 3 (usa-1 "In 1991." -> No)
    summ = res["tables"].summary.set_index(["subset", "modality"])
    assert json.loads(summ.loc[("sd-qa", "text"), "details"])["judge"] == pytest.approx(200 / 3)
    assert gap.loc["alpacaeval", "text"] == pytest.approx(80.0)  # rating 4 of 5 -> 80 on the 0-100 scale
    assert res["meta"]["judge"]["model"] == "stub-judge" and "qa_prompt" in res["meta"]["judge"]
    assert len(read_jsonl_rows(out / "judge")) == 2 * (3 + 1)  # text + speech x (3 sd-qa + 1 alpacaeval)


# ------------------------------------------------------------------ the model path: resume and shards
def test_interrupted_run_resumes_without_redoing_rows(vb, zoo, tmp_path):
    cfg = RunConfig(data=str(vb), subsets=("sd-qa", "mmsu", "bbh"), modalities=("text", "speech"),
                    max_new_tokens=3, batch_size=2, n_boot=20)
    samples = load_samples(cfg)
    units = plan_units("tiny-0", samples, cfg.modalities, cfg.batch_size)
    total = sum(len(u.keys()) for u in units)
    out = tmp_path / "resume"

    def ctrl_c(unit, n):
        if n == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C after 3 batches

    with pytest.raises(KeyboardInterrupt):
        run_answers(cfg, zoo[:1], out, samples=samples, on_unit=ctrl_c, progress=False)
    first = read_jsonl_rows(out / "answers")
    assert 0 < len(first) < total
    # a kill during a write leaves a torn line: it is ignored and its row redone
    with open(next((out / "answers").glob("*.jsonl")), "a") as fh:
        fh.write('{"checkpoint": "tiny-0", "modality": "speech", "sample_id": "sd-')
    counts = run_answers(cfg, zoo[:1], out, samples=samples, progress=False)
    assert counts["skipped_rows"] == len(first) and counts["rows"] == total - len(first)
    rows = read_jsonl_rows(out / "answers")
    assert len(rows) == total and len({(r["modality"], r["sample_id"]) for r in rows}) == total
    assert rows[: len(first)] == first  # finished rows kept as written (same run id, same answer)
    assert len({r["run"] for r in rows}) == 2
    # a third run has nothing left to do and loads no model
    assert run_answers(cfg, zoo[:1], out, samples=samples, progress=False)["rows"] == 0
    # the resumed answers equal those of one uninterrupted run
    clean = tmp_path / "clean"
    run_answers(cfg, zoo[:1], clean, samples=samples, progress=False)
    key = ["modality", "sample_id"]
    a = collect_answers(out).sort_values(key)[key + ["answer"]].reset_index(drop=True)
    b = collect_answers(clean).sort_values(key)[key + ["answer"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_rerun_with_other_settings_is_refused(vb, zoo, tmp_path):
    from lsl_core.errors import LSLError

    cfg = RunConfig(data=str(vb), subsets=("sd-qa:usa",), max_new_tokens=3, n_boot=20)
    run_answers(cfg, zoo[:1], tmp_path / "o", progress=False)
    with pytest.raises(LSLError, match="max_new_tokens"):
        run_answers(RunConfig(data=str(vb), subsets=("sd-qa:usa",), max_new_tokens=5), zoo[:1], tmp_path / "o",
                    progress=False)


def test_malformed_files_are_reported_and_the_rest_is_scored(zoo, tmp_path):
    """Missing column, undecodable audio row, unknown subset: one message each naming file and row."""
    from voicebench_fixtures import spoken

    root = tmp_path / "bad"
    good = ROWS["openbookqa"]["test"]
    write_split(root / "openbookqa" / "test-00000-of-00001.parquet", "openbookqa", good,
                blobs=[spoken(good[0]["prompt"]), b"not a wav file"])
    write_split(root / "mmsu" / "law-00000-of-00001.parquet", "mmsu", ROWS["mmsu"]["law"], drop=("reference",))
    write_split(root / "riddles" / "test-00000-of-00001.parquet", "advbench", [{"prompt": "q"}],
                blobs=[encoded_wav(np.zeros(8000, np.float32), 16_000)])
    write_split(root / "sd-qa" / "usa-00000-of-00001.parquet", "sd-qa", ROWS["sd-qa"]["usa"])
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LSL_CACHE_DIR": os.environ.get("LSL_CACHE_DIR", str(tmp_path))}
    proc = subprocess.run([sys.executable, "-m", "lsl_core", "voicebench", "--data", str(root), "--checkpoint",
                           zoo[0].root, "--out", str(out), "--max-new-tokens", "3", "--n-boot", "20",
                           "--threads", "1"], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())["meta"]
    left = res["problems"] + res["errors"]
    obqa, mmsu = root / "openbookqa" / "test-00000-of-00001.parquet", root / "mmsu" / "law-00000-of-00001.parquet"
    assert any(m.startswith(f"{mmsu}: has no column 'reference'") for m in left)
    assert any(m.startswith(f"{root / 'riddles' / 'test-00000-of-00001.parquet'}: unknown VoiceBench subset "
                            "'riddles'") for m in left)
    bad_audio = [m for m in left if m.startswith(f"{obqa} row 1 (openbookqa/test-1), speech:")]
    assert len(bad_audio) == 1 and "Could not decode audio" in bad_audio[0]
    sc = pd.read_parquet(out / "scores.parquet")
    assert set(sc["sample_id"]) == {"openbookqa/test-0", "sd-qa/usa-0", "sd-qa/usa-1"}  # the rest is scored
    assert "warning:" in proc.stdout and "left out" in proc.stdout


def test_two_torchrun_processes_match_one(vb, zoo, tmp_path):
    """torchrun --nproc-per-node 2 (gloo, CPU): the same answers and scores as one process."""
    ck = [a for m in zoo for a in ("--checkpoint", m.root)]
    common = ["-m", "lsl_core", "voicebench", "--data", str(vb), "--subsets", "sd-qa,mmsu,ifeval,bbh", *ck,
              "--modalities", "text,speech", "--max-new-tokens", "4", "--batch-size", "3", "--threads", "1",
              "--n-boot", "100"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "LSL_CACHE_DIR": os.environ.get("LSL_CACHE_DIR", str(tmp_path / "cache"))}
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          *common, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env,
                         timeout=900)
    assert two.returncode == 0, two.stderr[-3000:]
    files = sorted(p.name for p in (tmp_path / "two" / "answers").glob("*.jsonl"))
    assert files == ["answers.000-of-002.jsonl", "answers.001-of-002.jsonl"]
    assert all(read_jsonl_rows(tmp_path / "two" / "answers") for _ in files)
    key = ["checkpoint", "modality", "sample_id"]
    a1 = collect_answers(tmp_path / "one")[key + ["answer"]]
    a2 = collect_answers(tmp_path / "two")[key + ["answer"]]
    pd.testing.assert_frame_equal(a1, a2)
    for name in ("gap", "summary", "scores"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / f"{name}.parquet"),
                                      pd.read_parquet(tmp_path / "two" / f"{name}.parquet"))
    # --score-only recomputes the same tables from the stored answers (the documented merge step)
    again = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "two"), "--score-only"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "one" / "gap.parquet"),
                                  pd.read_parquet(tmp_path / "two" / "gap.parquet"))


def test_documented_commands_parse():
    """Every command in docs/voicebench.md is accepted by the CLI as written (flags, subsets, values)."""
    import re
    import shlex

    from lsl_core.cli import build_parser
    from lsl_core.data.voicebench import parse_selection

    text = (ROOT / "docs" / "voicebench.md").read_text()
    cmds = [b.replace("\\\n", " ").strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]
    assert len(cmds) == 5
    parser = build_parser()
    for cmd in cmds:
        argv = shlex.split(cmd)
        args = parser.parse_args(argv[argv.index("lsl_core") + 1:])
        assert args.command == "voicebench"
        parse_selection([s for s in args.subsets.split(",") if s])  # subset names are real ones
        if "--nproc-per-node" in argv:
            assert argv[0] == "torchrun"
    paper = [c for c in cmds if "sd-qa:usa,mmsu,openbookqa,ifeval,advbench" in c]
    assert len(paper) == 3 and any("--subsets bbh" in c for c in cmds)


def test_cascade_answers_are_the_llm_answers_to_the_transcripts(vb, tiny_parts, tmp_path):
    """cascade = the encoder's own Whisper decoder transcribes, the LLM answers the transcript as text."""
    from tiny_models import make_asr_whisper

    from lsl_core.model import batch as B
    from lsl_core.model.loading import load_checkpoint

    m = CheckpointManifest(name="asr", llm=str(tiny_parts["llm"]), encoder=str(make_asr_whisper(tmp_path / "w")),
                           family="tiny", strategy="none", downsample=5, seed=1)
    cfg = RunConfig(data=str(vb), subsets=("sd-qa:usa", "advbench"), modalities=("text", "speech", "cascade"),
                    max_new_tokens=3, batch_size=2, n_boot=20)
    out = tmp_path / "cascade"
    run_answers(cfg, [m], out, progress=False)
    rows = [r for r in read_jsonl_rows(out / "answers") if r["modality"] == "cascade"]
    assert len(rows) == 4 and all(isinstance(r["transcript"], str) and not r.get("error") for r in rows)
    model = load_checkpoint(m, device="cpu")
    samples = load_samples(cfg)
    for r in rows:
        s = samples[r["sample_id"]]
        assert r["transcript"] == model.transcribe(s.audio, s.sr)
        [again] = B.generate_batch(model, [B.text_query(model, r["transcript"] or ".")], 3, batch_size=1)
        assert r["answer"] == again
    res = finalize(out, cfg)
    gap = res["tables"].gap.set_index("subset")
    assert np.isfinite(gap.loc["advbench", "cascade"])
    assert gap.loc["advbench", "gap_cascade"] == pytest.approx(gap.loc["advbench", "text"] - gap.loc["advbench", "cascade"])


def test_r2_table_adds_what_a_metric_explains_beyond_the_step():
    """Five checkpoints: r2_added equals metrics.gap.r2_added on the same columns, within its CI; the step row is
    the step's own fit; without a varying step there is neither."""
    from lsl_core.experiments.voicebench_scores import r2_table
    from lsl_core.metrics.gap import fit_gap, r2_added

    cks = [f"c{k}" for k in range(5)]
    steps = np.array([0.0, 100.0, 200.0, 300.0, 400.0])
    x = np.array([0.50, 0.58, 0.61, 0.70, 0.69])
    gap = pd.DataFrame({"checkpoint": cks, "subset": "sd-qa", "gap": [30.0, 24.0, 25.0, 15.0, 17.0]})
    rows = [{"checkpoint": c, "sample_id": f"sd-qa/{i}", "subset": "sd-qa", "step": st, "aps_cos": xv + 0.01 * i}
            for c, st, xv in zip(cks, steps, x) for i in range(2)]
    t = r2_table(gap, pd.DataFrame(rows)).set_index(["metric", "subset"])
    xm = x + 0.005  # the mean over each checkpoint's two samples
    row = t.loc[("aps_cos", "sd-qa")]
    assert row["r2_added"] == pytest.approx(r2_added(xm, gap["gap"].to_numpy(), steps))
    assert row["r2_added_lo"] <= row["r2_added"] <= row["r2_added_hi"]
    assert t.loc[("step", "sd-qa"), "r2"] == pytest.approx(fit_gap(steps, gap["gap"].to_numpy()).r2)
    flat = r2_table(gap, pd.DataFrame(rows).assign(step=7))
    assert "step" not in set(flat["metric"]) and flat["r2_added"].isna().all()
