"""Review of the headline numbers' code paths (evaluate, compare, curriculum, self-cascade, layer profile): each test
is a defect that silently changed or mis-joined a number, shown on hand-made rows or a tiny model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_evaluate import VOICES, _manifest_set, _samples

from lsl_core.cli import main as cli_main
from lsl_core.data.samples import Sample
from lsl_core.data.sets import SampleSet
from lsl_core.errors import LSLError
from lsl_core.experiments.compare import paired_difference
from lsl_core.experiments.evaluate import (EvalOptions, evaluate_checkpoint, headline_intervals, select_samples,
                                           summarize, text_answers)
from lsl_core.scoring import answer_agreement, score_sdqa

UNSEEN = "en-gb-scotland"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- evaluate: inputs
def test_a_voice_the_set_lacks_is_refused_not_dropped():
    """--voices en-gb,<typo>: the typo used to vanish, leaving a run without the voice asked for."""
    s = _samples()
    with pytest.raises(LSLError, match=r"en-gb-scotlnd.*en-gb, en-us, en-gb-scotland"):
        select_samples(s, voices=["en-gb", "en-gb-scotlnd"])
    with pytest.raises(LSLError, match="nope"):
        select_samples(s, 2, voices=["nope"])
    assert select_samples(s, voices=["espeak:en-us"]).ids() == [f"q{i}__en-us" for i in (1, 2, 3)]  # label form too


def test_two_checkpoints_of_one_name_are_refused_before_any_model_loads(tiny_parts, tmp_path, capsys):
    """evaluate groups rows by checkpoint name (headline, style baseline, summary): two seeds' runs of one name were
    pooled into one row, the text answers of one read as the other's."""
    from lsl_core.model.loading import CheckpointManifest, write_manifest

    for seed in (1, 2):
        write_manifest(CheckpointManifest(name="lora-step10", llm=str(tiny_parts["llm"]),
                                          encoder=str(tiny_parts["encoder"]), family="tiny", strategy="none", step=10,
                                          seed=seed), tmp_path / f"seed{seed}")
    sset = _manifest_set(tmp_path / "set")
    rc = cli_main(["evaluate", "--checkpoint", str(tmp_path / "seed1"), "--checkpoint", str(tmp_path / "seed2"),
                   "--samples", f"manifest:{sset}", "--n-questions", "1", "--max-new-tokens", "2",
                   "--out", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "lora-step10" in err and "seed1" in err and "seed2" in err and "compare" in err
    assert not (tmp_path / "out").exists()


def test_cached_answers_are_scored_against_the_current_references(tiny_model):
    """The answer cache is keyed by what the answers depend on; the gold answers were not in it, so a corrected
    reference list kept the old scores. Scores are now recomputed from the cached answers."""
    s = _samples()
    opts = EvalOptions(max_new_tokens=4, batch_size=4, cascade=False)
    first = evaluate_checkpoint(tiny_model, s, opts)
    text_of = dict(zip(first["question"], first["text_answer"]))
    fixed = SampleSet("tiny-set", [Sample(id=x.id, audio=x.audio, sr=x.sr, question=x.question,
                                          answers=(text_of[x.question] or "x", "zzz"), accent=x.accent,
                                          source=x.source, meta=x.meta) for x in s])
    again = evaluate_checkpoint(tiny_model, fixed, opts)
    assert list(again["speech_answer"]) == list(first["speech_answer"])  # the answers came from the cache
    for _, r in again.iterrows():
        refs = tuple(fixed[r["sample_id"]].answers)
        assert r["references"] == " | ".join(refs)
        for side in ("text", "speech"):
            want = score_sdqa(r[f"{side}_answer"], refs)
            assert r[f"{side}_f1"] == pytest.approx(want["f1"]) and r[f"{side}_containment"] == want["containment"]
        assert r["agreement"] == pytest.approx(answer_agreement(r["speech_answer"], r["text_answer"]))
    assert list(again.columns) == list(first.columns)


def test_text_answers_are_not_shared_between_prompts(tiny_parts):
    """Checkpoints that leave the LLM untouched share their text answers within a run; two with different prompts
    (a manifest's 'prompt') ask different things and must not."""
    from lsl_core.model.loading import CheckpointManifest, load_checkpoint

    q = "who wrote hamlet ?"
    answers = []
    for fmt in ("Question: {query}\nAnswer:", "Q {query} hamlet hamlet A"):
        m = CheckpointManifest(name="tiny", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                               family="tiny", strategy="none", seed=1, prompt={"kind": "plain", "plain_format": fmt})
        model = load_checkpoint(m, device="cpu")
        got = text_answers(model, [q], 6, 1)[0]
        assert got == model.generate(text=q, max_new_tokens=6)
        answers.append(got)
    assert answers[0] != answers[1]  # the two prompts do give different answers (else this test shows nothing)


# ----------------------------------------------------------------------------- evaluate: ratios
def _headline_rows(cascade: float) -> pd.DataFrame:
    rows = []
    for q, (a, c) in {"q1": (0.2, cascade), "q2": (0.4, cascade), "q3": (0.0, cascade)}.items():
        for v in ("en-gb", UNSEEN):
            rows.append(dict(checkpoint="A", family="f", strategy="lora", step=1, question=q, voice=v,
                             unseen=v == UNSEEN, agreement=a, cascade_agreement=c, agreement_other_q=0.0,
                             cascade_agreement_other_q=0.0, text_containment=0.0, speech_containment=0.0,
                             text_f1=0.0, speech_f1=0.0))
    return pd.DataFrame(rows)


def test_no_ratio_where_the_cascade_agrees_zero():
    """e2e / cascade with a cascade agreement of 0 (an ASR that heard nothing) is undefined; it was
    agreement / 1e-12 (a ratio of 2e11)."""
    head = headline_intervals(_headline_rows(0.0), UNSEEN)
    assert head["ratio"].isna().all() and head["ratio_lo"].isna().all() and head["ratio_hi"].isna().all()
    assert "ratio_specific" not in head or head["ratio_specific"].isna().all()
    assert summarize(_headline_rows(0.0))["agreement_vs_cascade"].isna().all()
    ok = headline_intervals(_headline_rows(0.5), UNSEEN).iloc[0]
    assert ok["ratio"] == pytest.approx(0.2 / 0.5)


def test_compare_has_no_ratio_where_a_cascade_agrees_zero():
    a = _headline_rows(0.0).assign(sample_id=lambda d: d["question"] + "__" + d["voice"])
    b = a.assign(checkpoint="B", cascade_agreement=0.5)
    d = paired_difference(pd.concat([a, b]), "A", "B", UNSEEN).iloc[0]
    assert np.isnan(d["base_ratio"]) and np.isnan(d["delta_ratio"]) and d["other_ratio"] == pytest.approx(0.2 / 0.5)
    assert d["delta_agreement"] == pytest.approx(0.0)


# ----------------------------------------------------------------------------- compare: joins
def _rows(ck: str, questions: list[str], seed: int) -> pd.DataFrame:
    g = np.random.default_rng(seed)
    return pd.DataFrame([{"checkpoint": ck, "sample_id": f"{q}__{v}", "question": f"what is {q}?", "voice": v,
                          "agreement": g.uniform(0, 0.5), "cascade_agreement": g.uniform(0.2, 0.6)}
                         for q in questions for v in VOICES])


def test_compare_refuses_one_clip_id_holding_two_questions():
    """Two results folders from different sample sets whose ids collide (folder sets number their clips): the
    pairing on sample_id paired different questions."""
    a = _rows("A", ["q0", "q1", "q2"], 0)
    b = _rows("B", ["q0", "q1", "q2"], 1)
    b.loc[b["sample_id"].str.startswith("q1__"), "question"] = "something else?"
    with pytest.raises(LSLError, match=r"q1__en-gb.*different question"):
        paired_difference(pd.concat([a, b]), "A", "B", UNSEEN)


def test_compare_says_when_the_two_clip_sets_differ(tmp_path, capsys):
    for ck, qs, seed in (("A", ["q0", "q1", "q2", "q3"], 0), ("B", ["q1", "q2", "q3", "q4", "q5"], 1)):
        (tmp_path / ck).mkdir()
        _rows(ck, qs, seed).to_parquet(tmp_path / ck / "checkpoints_samples.parquet")
    assert cli_main(["compare", "--results", str(tmp_path / "A"), "--results", str(tmp_path / "B"),
                     "--base", "A", "--other", "B"]) == 0
    out = capsys.readouterr().out
    assert "paired on the 9 clips both have" in out and "3 only in A" in out and "6 only in B" in out


# ----------------------------------------------------------------------------- self-cascade, layer profile
def test_self_cascade_rows_refuse_samples_out_of_order():
    from lsl_core.experiments.self_cascade import self_cascade_rows

    rows = pd.DataFrame({"sample_id": ["a", "b"], "question": ["q1", "q2"], "voice": ["en-gb"] * 2,
                         "text_answer": ["x", "y"], "agreement": [0.1, 0.2], "cascade_agreement": [0.3, 0.4]})
    clips = [Sample(id=i, audio=np.zeros(1600, np.float32), sr=16_000, question=q)
             for i, q in (("b", "q2"), ("a", "q1"))]
    with pytest.raises(LSLError, match="order"):
        self_cascade_rows(None, None, rows, clips)


def test_layer_profile_refuses_rows_of_two_runs():
    """evaluate --intervention stores every checkpoint's rows in one file: a profile of them paired clips across
    checkpoints and counted n once per clip."""
    from lsl_core.experiments.layer_profile import layer_profile
    from lsl_core.interventions import Intervention

    rows = pd.DataFrame([{"sample_id": f"s{i}", "condition": c, "checkpoint": ck,
                          "title": "Original" if c == "original" else Intervention.parse(c).title(),
                          "containment": 0.0, "f1": 0.0, "agreement": v}
                         for ck in ("A", "B") for c in ("original", "angle:all", "angle:all@4")
                         for i, v in enumerate([0.1, 0.2, 0.3])])
    with pytest.raises(LSLError, match="checkpoint"):
        layer_profile(rows)
    assert len(layer_profile(rows[rows["checkpoint"] == "A"])) == 2


# ----------------------------------------------------------------------------- curriculum
def test_r2_table_says_when_no_checkpoint_has_the_gap():
    """Zero answerable questions at every checkpoint: the answerable GAP is missing everywhere, which was reported as
    'needs at least 3 checkpoints, got 0; evaluate more checkpoints'."""
    from lsl_core.experiments.curriculum import r2_table

    df = pd.DataFrame({"checkpoint": ["a", "b", "c", "d"], "step": [0, 10, 20, 30],
                       "gap_f1": [0.05, 0.04, 0.045, 0.03], "gap_answerable": [np.nan] * 4,
                       "aps_cos": [0.1, 0.2, 0.25, 0.3]})
    r2 = r2_table(df)
    ans = r2[r2["gap"].str.startswith("answerable")]
    assert len(ans) == 1 and "no checkpoint" in ans.iloc[0]["note"] and "evaluate more" not in ans.iloc[0]["note"]
    assert (r2[r2["gap"].str.startswith("GAP F1")]["n"] == 4).all()


# ----------------------------------------------------------------------------- pages and CLI messages
def test_overview_without_seen_voices_leaves_the_seen_columns_empty():
    """evaluate --voices en-gb-scotland (docs/demo_model.md's commands): no 'seen' group; the overview printed the
    unseen voice's numbers in the 'seen' columns."""
    from lsl_core.experiments.evaluate import markdown_tables

    rows = [dict(checkpoint="A", family="f", strategy="lora", step=10, sample_id=f"{q}3", voice="vx", unseen=True,
                 text_containment=1.0, speech_containment=0.0, text_f1=0.8, speech_f1=sf, agreement=ag)
            for q, sf, ag in (("a", 0.2, 0.3), ("b", 0.4, 0.5))]
    summary = summarize(pd.DataFrame(rows))
    md = markdown_tables(summary, {"command": "x", "samples": "s", "n_questions": 2, "voices": ["vx"],
                                   "unseen_voice": "vx", "max_new_tokens": 5, "device": "cpu", "pedant": "."})
    line = next(x for x in md.splitlines() if x.startswith("| A | lora | 10 |"))
    # text F1 | speech F1 seen | unseen | GAP F1 seen | unseen | text cont. | speech cont. seen | GAP cont. seen |
    # agreement seen | unseen | other-q seen
    assert line == "| A | lora | 10 | 80.0 | – | 30.0 | – | 50.0 | 100.0 | – | – | – | 40.0 | – |"


def test_curriculum_with_a_zoo_names_the_missing_results_first(tiny_parts, tmp_path, capsys):
    """With --zoo the silence margin read <results>/checkpoints_summary.parquet before the files were checked: a
    FileNotFoundError traceback instead of the message naming the command that writes them."""
    from lsl_core.model.loading import CheckpointManifest, write_manifest

    write_manifest(CheckpointManifest(name="a", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                                      family="tiny", strategy="none", seed=1), tmp_path / "zoo" / "a")
    (tmp_path / "results").mkdir()
    rc = cli_main(["curriculum", "--results", str(tmp_path / "results"), "--zoo", str(tmp_path / "zoo")])
    err = capsys.readouterr().err
    assert rc == 2 and "checkpoints_summary.parquet" in err and "lsl_core evaluate" in err
