"""The curriculum report: silence margin against a direct computation, the trajectory Spearman and the R²
with its bootstrap CI on hand-made numbers, and the per-checkpoint table joined from stored results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tone

from lsl_core.data.samples import Sample
from lsl_core.errors import LSLError
from lsl_core.experiments.curriculum import (curriculum_table, frame_sink, markdown, r2_table, silence_margin,
                                             step_spearman, trajectories)
from lsl_core.metrics.tokenwise import alignment_path, path_scores, token_cosine_matrix


def _aps(hs: torch.Tensor, ht: torch.Tensor) -> float:
    """APS by hand: best frame per token by cosine, its value, mean over tokens and layers 1..L."""
    cos = token_cosine_matrix(hs, ht)  # [L+1, Ts, Tt]
    return float(path_scores(cos, alignment_path(cos, "cosine"))[1:].mean())


def test_silence_margin_is_real_minus_silent_aps(tiny_model):
    from lsl_core.analysis_controls import silence_states, speech_states, text_states

    clips = [Sample(id=f"c{k}", audio=tone(0.8 + 0.3 * k, freq=180 + 40 * k), sr=16_000, question=q)
             for k, q in enumerate(["who wrote hamlet ?", "how many legs does a spider have ?"])]
    got = silence_margin(tiny_model, clips)
    real, silent = [], []
    for s in clips:
        hs, _ = speech_states(tiny_model, s.audio, s.sr)
        ht = text_states(tiny_model, s.question)[0]
        real.append(_aps(hs, ht))
        silent.append(_aps(silence_states(tiny_model, len(s.audio) / 16_000), ht))
    assert got["n"] == 2
    assert got["aps_real"] == pytest.approx(np.mean(real), abs=1e-6)
    assert got["silence_margin_aps"] == pytest.approx(np.mean(real) - np.mean(silent), abs=1e-6)


def test_frame_sink_is_the_norm_ratio_of_the_whole_prompt_at_its_largest_layer(tiny_model):
    clips = [Sample(id=f"c{k}", audio=tone(0.8 + 0.3 * k, freq=180 + 40 * k), sr=16_000, question="q")
             for k in range(2)]
    got = frame_sink(tiny_model, clips)
    first, p0 = [], []
    for s in clips:  # by hand: one forward over the whole prompt, row norms, median over the speech span
        with torch.no_grad():
            prompt = tiny_model.build_prompt(tiny_model.embed_speech(s.audio, s.sr).embeds)
            out = tiny_model.llm(inputs_embeds=prompt.inputs_embeds, output_hidden_states=True)
        norms = torch.stack([h[0].double().norm(dim=-1) for h in out.hidden_states])  # [L+1, T]
        med = norms[:, prompt.span].median(dim=-1).values[:, None]
        first.append((norms / med)[1:, prompt.span.start])
        p0.append((norms / med)[1:, 0])
    f, z = torch.stack(first).mean(0), torch.stack(p0).mean(0)
    assert got["n"] == 2
    assert got["sink_first_frame"] == pytest.approx(float(f.max()), rel=1e-5)
    assert got["sink_first_frame_layer"] == int(f.argmax()) + 1
    assert got["sink_prompt0"] == pytest.approx(float(z.max()), rel=1e-5)
    assert got["sink_max_frame"] >= got["sink_first_frame"] - 1e-9


def test_step_spearman_on_hand_made_points():
    assert step_spearman([1, 2, 3, 4], [0.1, 0.2, 0.15, 0.3]) == pytest.approx(0.8)
    assert np.isnan(step_spearman([1, 2], [0.1, 0.2]))


def _stored(tmp_path):
    cks = [("u", "none", 0), ("a1", "frozen", 10), ("a2", "frozen", 20), ("l1", "lora", 25), ("l2", "lora", 30),
           ("f1", "frozen", 25)]
    summ, head, rows = [], [], []
    for k, (ck, strat, step) in enumerate(cks):
        summ.append({"checkpoint": ck, "strategy": strat, "step": step, "voice": "all", "text_f1": 0.5,
                     "speech_f1": 0.05 * k, "gap_f1": 0.5 - 0.05 * k, "gap_answerable": 1 - 0.1 * k, "n_answerable": 9})
        for v in ("seen", "en-gb-scotland"):
            a = 0.1 * k
            head.append({"checkpoint": ck, "voice": v, "agreement": a, "agreement_lo": a - 0.01,
                         "agreement_hi": a + 0.01, "cascade_agreement": 0.4, "cascade_agreement_lo": 0.3,
                         "cascade_agreement_hi": 0.5, "ratio": a / 0.4, "ratio_lo": 0.0, "ratio_hi": 1.0})
        for j in range(2):
            rows.append({"checkpoint": ck, "family": "f", "strategy": strat, "step": step, "seq_cos_mean": 0.1 * k + j,
                         "aps_cos": 0.2 * k, "spearman_cos_mean": 0.05 * k * k, "spearman_dist_mean": 0.0,
                         "collapsed_cos_frac": 1.0 - 0.1 * k})
    pd.DataFrame(summ).to_parquet(tmp_path / "checkpoints_summary.parquet")
    pd.DataFrame(head).to_parquet(tmp_path / "checkpoints_headline.parquet")
    pd.DataFrame(rows).to_parquet(tmp_path / "analysis.parquet")
    return cks


def test_table_joins_scores_alignment_and_orders_trajectories(tmp_path):
    cks = _stored(tmp_path)
    df = curriculum_table(tmp_path, {"l2": {"aps_real": 0.5, "aps_silence": 0.3, "silence_margin_aps": 0.2, "n": 3}})
    assert list(df["checkpoint"]) == ["u", "a1", "a2", "f1", "l1", "l2"]  # untrained, frozen by step, lora
    r = df.set_index("checkpoint")
    assert r.loc["a2", "seq_cos_mean"] == pytest.approx(0.2 + 0.5)  # mean over the 2 sample rows
    assert r.loc["l1", "agreement_unseen"] == pytest.approx(0.3) and r.loc["l1", "agreement_lo_seen"] == pytest.approx(0.29)
    assert r.loc["l2", "silence_margin_aps"] == pytest.approx(0.2) and np.isnan(r.loc["u", "silence_margin_aps"])
    tr = trajectories(df)
    assert list(tr["frozen"]["checkpoint"]) == ["u", "a1", "a2", "f1"]
    assert list(tr["lora"]["checkpoint"]) == ["u", "a1", "a2", "l1", "l2"]  # the shared start, then LoRA
    # a LoRA stage after the frozen QA checkpoints (LoRA from the repeat stage on): the stage names keep the
    # frozen QA checkpoint f1 (step 25) out of the LoRA path, which the step rule alone would take in
    late = df.assign(step=df["step"].where(~df["checkpoint"].isin(["l1", "l2"]), df["step"] + 10))
    assert list(trajectories(late)["lora"]["checkpoint"]) == ["u", "a1", "a2", "f1", "l1", "l2"]
    stages = {"u": "", "a1": "ctc", "a2": "repeat", "f1": "qa", "l1": "repeat", "l2": "qa"}
    staged = curriculum_table(tmp_path, stages=stages)
    assert dict(zip(staged["checkpoint"], staged["stage"])) == stages
    staged = staged.assign(step=staged["step"].where(~staged["checkpoint"].isin(["l1", "l2"]), staged["step"] + 10))
    tr = trajectories(staged)
    assert list(tr["lora"]["checkpoint"]) == ["u", "a1", "a2", "l1", "l2"]
    assert list(tr["frozen"]["checkpoint"]) == ["u", "a1", "a2", "f1"]
    r2 = r2_table(df).set_index(["gap", "metric"])
    gap = df["gap_f1"].to_numpy()
    x = df["aps_cos"].to_numpy()
    expect = np.corrcoef(x, gap)[0, 1] ** 2
    assert r2.loc[("GAP F1 (all voices)", "APS, cosine path"), "r2"] == pytest.approx(expect)
    assert len(cks) == r2.loc[("GAP F1 (all voices)", "APS, cosine path"), "n"]
    from lsl_core.metrics.gap import r2_added

    base = r2.loc[("GAP F1 (all voices)", "training step (baseline: progress alone)")]  # the baseline row
    assert base["r2"] == pytest.approx(np.corrcoef(df["step"], gap)[0, 1] ** 2) and pd.isna(base["r2_added"])
    aps = r2.loc[("GAP F1 (all voices)", "APS, cosine path")]
    assert aps["r2_added"] == pytest.approx(r2_added(x, gap, df["step"].to_numpy()))
    from lsl_core.metrics.gap import r2_interval, r2_null

    assert (aps["r2_lo"], aps["r2_hi"]) == pytest.approx(r2_interval(x, gap))  # the metrics' null baselines
    assert (aps["r2_null95"], aps["p_perm"]) == pytest.approx(r2_null(x, gap))
    sink = {"sink_first_frame": 1.2, "sink_first_frame_layer": 3, "sink_max_frame": 1.9, "sink_prompt0": 40.0,
            "sink_prompt0_layer": 2}
    page = markdown(curriculum_table(tmp_path, {"l2": {"silence_margin_aps": 0.2, **sink}}), r2_table(df),
                    {"command": "python -m lsl_core curriculum", "inputs": "x"})
    assert "| l2 | 1.20 (ℓ3) | 1.90 | 40.0 (ℓ2) |" in page and "| u |" in page.split("sink?")[0]
    assert "| u | 1." not in page.split("sink?")[1]  # checkpoints without the measurement get no row
    # retrieval at 4 layers (-1 = a layer mean, left out): the best layer's top-1 and its own chance level (the best
    # of 4 layers beats 1/Nc by luck alone)
    from lsl_core.metrics.controls import best_layer_chance

    pd.DataFrame([{"table": "retrieval", "scorer": "seq_cos", "layer": layer, "top1": 0.1 * (layer + 1) * (k + 1) / 6,
                   "top5": 0.5, "mrr": 0.3, "chance_top1": 0.05, "chance_top5": 0.25, "chance_mrr": 0.18, "n": 40,
                   "candidates": 20, "checkpoint": ck}
                  for k, (ck, *_) in enumerate(cks) for layer in (-1, 0, 1, 2, 3)]).to_parquet(
        tmp_path / "analysis_controls.parquet")
    df = curriculum_table(tmp_path)
    assert list(df["retrieval_best_layer"]) == [3] * len(cks)
    page = markdown(df, r2_table(df), {"command": "python -m lsl_core curriculum", "inputs": "x"})
    chance = best_layer_chance(40, 20, 4)[0]
    assert 0.05 < chance and f"the best of 4 layers beats that by chance alone: {chance:.3f}" in page
    flat = r2_table(df.assign(gap_answerable=1.0))
    [note] = flat[flat["gap"] == "answerable GAP (all voices)"]["note"]
    assert "100.0 for every checkpoint" in note  # a constant GAP is reported, not fitted as R² = 0
    rounded = [0.5 - 0.2, 0.7 - 0.4] * len(df)  # one GAP, unequal in the last bit
    assert len(set(rounded)) == 2
    flat = r2_table(df.assign(gap_answerable=rounded[:len(df)]))
    [note] = flat[flat["gap"] == "answerable GAP (all voices)"]["note"]  # one row, as for an exact constant
    assert "30.0 for every checkpoint" in note


def test_a_set_that_was_only_evaluated_gets_scores_and_trajectories_without_alignment(tmp_path):
    """No analysis.parquet (e.g. fresh questions scored by `evaluate` alone): scores, ratios and the trajectory
    Spearman are there, the alignment columns are not, and the page says how to add them instead of failing."""
    _stored(tmp_path)
    (tmp_path / "analysis.parquet").unlink()
    df = curriculum_table(tmp_path)
    assert list(df["checkpoint"]) == ["u", "a1", "a2", "f1", "l1", "l2"]
    assert "seq_cos_mean" not in df.columns and "aps_cos" not in df.columns
    assert df.set_index("checkpoint").loc["l1", "agreement_unseen"] == pytest.approx(0.3)
    assert r2_table(df).empty  # nothing to fit without alignment metrics
    page = markdown(df, r2_table(df), {"command": "python -m lsl_core curriculum", "inputs": "x"})
    assert "| lora | 5 | 1.00 | 1.00 |" in page  # agreement rises with step along u, a1, a2, l1, l2
    assert "No alignment metric in these results" in page and "| GAP | alignment metric |" not in page
    assert "Spearman cos" not in page and "Retrieval chance" not in page and "not measured" in page
    [row] = [x for x in page.splitlines() if x.startswith("| l1 |")]
    assert row.count("|") == 11  # 10 score columns, no empty alignment cells
    (tmp_path / "checkpoints_headline.parquet").unlink()
    with pytest.raises(LSLError, match="checkpoints_headline.parquet"):
        curriculum_table(tmp_path)
