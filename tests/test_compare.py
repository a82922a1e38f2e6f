"""compare: two evaluated checkpoints paired on the same clips, against hand-computed cases and a loop
reference of the paired bootstrap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lsl_core.cli import main as cli_main
from lsl_core.errors import LSLError
from lsl_core.experiments.compare import paired_difference, read_samples
from lsl_core.metrics.stats import N_BOOT, SEED, bootstrap_indices

UNSEEN = "en-gb-scotland"
VOICES = ("en-gb", "en-us", UNSEEN)


def _rows(ck: str, agreement: dict, cascade: dict) -> pd.DataFrame:
    """One row per (question, voice) clip; agreement/cascade: {(q, voice): value}."""
    return pd.DataFrame([{"checkpoint": ck, "sample_id": f"{q}__{v}", "question": q, "voice": v,
                          "agreement": agreement[q, v], "cascade_agreement": cascade[q, v]}
                         for (q, v) in agreement])


def _random(ck: str, n_q: int, seed: int) -> pd.DataFrame:
    g = np.random.default_rng(seed)
    keys = [(f"q{i}", v) for i in range(n_q) for v in VOICES]
    return _rows(ck, {k: g.uniform(0, 0.5) for k in keys}, {k: g.uniform(0.2, 0.6) for k in keys})


def test_estimates_equal_a_hand_computed_case():
    a = _rows("A", {("q1", "en-gb"): 0.2, ("q1", "en-us"): 0.4, ("q1", UNSEEN): 0.1,
                    ("q2", "en-gb"): 0.0, ("q2", "en-us"): 0.2, ("q2", UNSEEN): 0.3},
              {("q1", "en-gb"): 0.5, ("q1", "en-us"): 0.5, ("q1", UNSEEN): 0.4,
               ("q2", "en-gb"): 0.3, ("q2", "en-us"): 0.3, ("q2", UNSEEN): 0.2})
    b = a.assign(checkpoint="B", agreement=a["agreement"] + 0.1, cascade_agreement=a["cascade_agreement"] / 2)
    d = paired_difference(pd.concat([a, b]), "A", "B", UNSEEN).set_index("voice")
    seen, un = d.loc["seen"], d.loc[UNSEEN]
    assert seen["n_q"] == 2 and seen["n_clips"] == 4 and un["n_q"] == 2 and un["n_clips"] == 2
    # seen: question means (voices averaged first) A agreement 0.3, 0.1 -> 0.2; cascade 0.5, 0.3 -> 0.4
    assert seen["base_agreement"] == pytest.approx(0.2) and seen["base_cascade_agreement"] == pytest.approx(0.4)
    assert seen["other_agreement"] == pytest.approx(0.3) and seen["other_cascade_agreement"] == pytest.approx(0.2)
    assert seen["base_ratio"] == pytest.approx(0.5) and seen["other_ratio"] == pytest.approx(1.5)
    assert seen["delta_agreement"] == pytest.approx(0.1) and seen["delta_ratio"] == pytest.approx(1.0)
    # a constant shift is the same in every replicate: its interval is the point
    assert seen["delta_agreement_lo"] == pytest.approx(0.1) and seen["delta_agreement_hi"] == pytest.approx(0.1)
    # unseen: A 0.1, 0.3 -> 0.2 over cascade 0.4, 0.2 -> 0.3
    assert un["base_ratio"] == pytest.approx(0.2 / 0.3) and un["other_ratio"] == pytest.approx(0.3 / 0.15)


def test_intervals_equal_a_loop_over_the_same_replicates():
    """The paired interval: one replicate draws the same questions for both checkpoints."""
    a, b = _random("A", 12, 0), _random("B", 12, 1)
    d = paired_difference(pd.concat([a, b]), "A", "B", UNSEEN).set_index("voice").loc["seen"]
    seen = lambda df: df[df["voice"] != UNSEEN].groupby("question", sort=False)[  # noqa: E731
        ["agreement", "cascade_agreement"]].mean().to_numpy()
    qa, qb = seen(a), seen(b)  # [12, 2] each, same question order
    reps = []
    for idx in bootstrap_indices(12, N_BOOT, SEED):
        ra, rb = qa[idx].mean(0), qb[idx].mean(0)
        reps.append((rb[0] - ra[0], rb[0] / rb[1] - ra[0] / ra[1]))
    lo, hi = np.quantile(np.array(reps), [0.025, 0.975], axis=0)
    assert d["delta_agreement_lo"] == pytest.approx(lo[0]) and d["delta_agreement_hi"] == pytest.approx(hi[0])
    assert d["delta_ratio_lo"] == pytest.approx(lo[1]) and d["delta_ratio_hi"] == pytest.approx(hi[1])
    assert d["delta_ratio_lo"] < d["delta_ratio"] < d["delta_ratio_hi"]


def test_a_checkpoint_against_itself_differs_by_exactly_zero_and_only_shared_clips_count():
    a = _random("A", 5, 0)
    d = paired_difference(pd.concat([a, a.assign(checkpoint="B")]), "A", "B", UNSEEN)
    for m in ("agreement", "cascade_agreement", "ratio"):
        assert (d[f"delta_{m}"] == 0).all() and (d[f"delta_{m}_lo"] == 0).all() and (d[f"delta_{m}_hi"] == 0).all()
    part = a.assign(checkpoint="B")[~a["sample_id"].str.startswith("q0__")]  # B lacks question q0
    d = paired_difference(pd.concat([a, part]), "A", "B", UNSEEN).set_index("voice")
    assert d.loc["seen", "n_q"] == 4 and d.loc["seen", "n_clips"] == 8


def test_bad_input_is_one_clear_error():
    a = _random("A", 3, 0)
    with pytest.raises(LSLError, match="'B' is not in the results .*A"):
        paired_difference(a, "A", "B", UNSEEN)
    with pytest.raises(LSLError, match="share no clips"):
        paired_difference(pd.concat([a, a.assign(checkpoint="B", sample_id="x" + a["sample_id"])]), "A", "B")
    with pytest.raises(LSLError, match="two rows for one clip"):
        paired_difference(pd.concat([a, a, a.assign(checkpoint="B")]), "A", "B")
    with pytest.raises(LSLError, match="lack cascade_agreement"):
        paired_difference(pd.concat([a, a.assign(checkpoint="B")]).drop(columns="cascade_agreement"), "A", "B")


def test_cli_reads_two_results_folders(tmp_path, capsys):
    for ck, seed in (("A", 0), ("B", 1)):
        (tmp_path / ck).mkdir()
        _random(ck, 6, seed).to_parquet(tmp_path / ck / "checkpoints_samples.parquet")
    rc = cli_main(["compare", "--results", str(tmp_path / "A"), "--results", str(tmp_path / "B"),
                   "--base", "A", "--other", "B"])
    out = capsys.readouterr().out
    assert rc == 0 and "B − A, paired on the same clips" in out
    assert "| seen | 6 |" in out and f"| {UNSEEN} | 6 |" in out
    assert cli_main(["compare", "--results", str(tmp_path / "A"), "--base", "A", "--other", "A"]) == 2  # a typo
    assert "both 'A'" in capsys.readouterr().err
    rc = cli_main(["compare", "--results", str(tmp_path / "nowhere"), "--base", "A", "--other", "B"])
    assert rc == 2 and "not found" in capsys.readouterr().err
    rc = cli_main(["compare", "--results", str(tmp_path / "A"), "--results", str(tmp_path / "B"), "--base", "A",
                   "--other", "B", "--unseen-voice", "en-gb-scotlnd"])  # a typo would count it as a seen voice
    err = capsys.readouterr().err
    assert rc == 2 and "'en-gb-scotlnd' is not a voice of these results" in err and UNSEEN in err


def test_two_checkpoints_of_one_name_are_told_apart_by_their_results_folder(tmp_path, capsys):
    """Two seeds' runs both write 'A': NAME@N picks the one of the N-th --results folder, and gives what the same
    rows under two names give."""
    for sub, seed in (("s0", 0), ("s1", 1)):
        (tmp_path / sub).mkdir()
        _random("A", 6, seed).to_parquet(tmp_path / sub / "checkpoints_samples.parquet")
    folders = ["--results", str(tmp_path / "s0"), "--results", str(tmp_path / "s1")]
    assert cli_main(["compare", *folders, "--base", "A", "--other", "A"]) == 2
    assert "Write it 'A@N' for the one in the N-th --results folder" in capsys.readouterr().err
    assert cli_main(["compare", *folders, "--base", "A@1", "--other", "A@2"]) == 0
    named = paired_difference(pd.concat([_random("A", 6, 0), _random("B", 6, 1)]), "A", "B", UNSEEN)
    assert f"{100 * named.iloc[0]['delta_agreement']:+.1f}" in capsys.readouterr().out
    by_folder = paired_difference(read_samples([tmp_path / "s0", tmp_path / "s1"]), "A@1", "A@2", UNSEEN)
    cols = [c for c in named.columns if c != "voice"]
    assert by_folder[cols].equals(named[cols]) and (by_folder["delta_agreement"] != 0).any()
    assert cli_main(["compare", *folders, "--base", "A@1", "--other", "A@3"]) == 2  # no third folder
    assert "'A@3' is not in the results" in capsys.readouterr().err
