"""Review of the analysis pipeline's edges: results loaders (shards next to their merge, missing columns),
and the analyze CLI refusing bad input before any model loads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lsl_core.errors import DataError


def _alignment_rows(checkpoint: str, ids: list[str], aps: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"checkpoint": checkpoint, "family": "f", "strategy": "s", "step": 1,
                         "sample_id": ids, "aps_cos": aps, "seq_cos_mean": aps,
                         "seq_cos": [[0.0, a, a] for a in aps]})


def test_load_results_reads_shards_or_their_merge_not_both(tmp_path):
    from lsl_core.results import checkpoint_means, load_results

    a = _alignment_rows("ck", ["s0", "s2"], [0.2, 0.4])
    b = _alignment_rows("ck", ["s1"], [0.9])
    a.to_parquet(tmp_path / "r.shard-000-of-002.parquet", index=False)
    b.to_parquet(tmp_path / "r.shard-001-of-002.parquet", index=False)
    shards_only = load_results(tmp_path).alignment
    assert sorted(shards_only.sample_id) == ["s0", "s1", "s2"]  # not merged yet: the shards are the data
    pd.concat([a, b], ignore_index=True).to_parquet(tmp_path / "r.parquet", index=False)  # what --merge writes
    res = load_results(tmp_path)
    assert sorted(res.alignment.sample_id) == ["s0", "s1", "s2"]  # each (checkpoint, sample) once
    means = checkpoint_means(res.alignment)
    assert means.loc[0, "n"] == 3 and means.loc[0, "aps_cos"] == pytest.approx((0.2 + 0.4 + 0.9) / 3)


def test_checkpoint_means_counts_a_duplicated_sample_once_or_refuses(tmp_path):
    from lsl_core.results import checkpoint_means

    rows = _alignment_rows("ck", ["s0", "s1"], [0.2, 0.4])
    twice = pd.concat([rows, rows], ignore_index=True)  # the same rows read from two files
    means = checkpoint_means(twice)
    assert means.loc[0, "n"] == 2 and means.loc[0, "aps_cos"] == pytest.approx(0.3)
    clash = pd.concat([rows, rows.assign(aps_cos=[0.8, 0.8])], ignore_index=True)  # two different runs
    with pytest.raises(DataError, match="sample_id"):
        checkpoint_means(clash)


def test_checkpoint_means_names_a_missing_checkpoint_column():
    from lsl_core.results import checkpoint_means

    rows = _alignment_rows("ck", ["s0"], [0.2]).drop(columns=["checkpoint", "family", "strategy", "step"])
    with pytest.raises(DataError, match="checkpoint"):
        checkpoint_means(rows)


def _clip_folder(tmp_path, n: int = 2):
    import soundfile as sf
    from conftest import tone

    folder = tmp_path / "clips"
    folder.mkdir()
    rows = ["file,question,accent"]
    for i in range(n):
        sf.write(folder / f"c{i}.wav", tone(0.8 + 0.1 * i), 16_000)
        rows.append(f"c{i}.wav,question number {i} ?,espeak:en-us")
    (folder / "questions.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.mark.parametrize("extra, says", [(["--limit", "-1"], "--limit"),
                                         (["--num-shards", "5", "--shard", "4"], "no sample")])
def test_analyze_cli_refuses_bad_input_before_loading_a_model(tmp_path, monkeypatch, capsys, extra, says):
    import lsl_core.model.loading as loading
    from lsl_core.cli import main

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(loading, "load_checkpoint", no_load)
    monkeypatch.setattr(loading, "read_manifest", lambda c: loading.CheckpointManifest(name="x", llm="l", encoder="e",
                                                                                   strategy="none"))
    folder = _clip_folder(tmp_path)
    rc = main(["analyze", "--checkpoint", "x", "--samples", f"folder:{folder}", "--device", "cpu",
               "--out", str(tmp_path / "o.parquet"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and says in err.lower() and err.count("error:") == 1


def test_set_of_one_sample_and_unequal_lengths(tiny_model, tmp_path):
    """A set of one sample: the mean curves are that sample's curves; samples of different Ts, Tt average per layer."""
    from conftest import tone

    from lsl_core.analysis import AnalysisCache, analyze_sample, analyze_set
    from lsl_core.data.samples import Sample

    cache = AnalysisCache(tmp_path)
    s = [Sample(id="a", audio=tone(0.7), sr=16_000, question="who wrote hamlet ?"),
         Sample(id="b", audio=tone(1.4, freq=300), sr=16_000, question="how many legs does a spider have ?")]
    one = analyze_set(tiny_model, s[:1], cache=cache)
    a = analyze_sample(tiny_model, s[0], cache=cache)
    np.testing.assert_allclose(one.mean_seq_cos, a.seq_cos, rtol=1e-12)
    assert one.n == 1 and one.mean_cka_low is None
    two = analyze_set(tiny_model, s, cache=cache)
    b = analyze_sample(tiny_model, s[1], cache=cache)
    assert a.cos.shape[1:] != b.cos.shape[1:]
    np.testing.assert_allclose(two.mean_seq_dist, (a.seq_dist.astype(np.float64) + b.seq_dist) / 2, rtol=1e-6)


def test_gap_table_counts_a_copied_summary_row_once_and_refuses_two_runs():
    """The GAP of a checkpoint comes from one evaluate run: an identical copy of its summary row counts once, two
    runs with different scores are refused (the first was silently taken)."""
    import pandas as pd

    from lsl_core.errors import DataError
    from lsl_core.results import gap_table

    means = pd.DataFrame({"checkpoint": ["a", "b"], "seq_cos_mean": [0.5, 0.6]})
    row = {"voice": "all", "text_f1": 0.3, "speech_f1": 0.1, "gap_f1": 0.2}
    summary = pd.DataFrame([{"checkpoint": "a", **row}, {"checkpoint": "a", **row},
                            {"checkpoint": "b", **row, "speech_f1": 0.2, "gap_f1": 0.1}])
    out = gap_table(means, summary)
    assert list(out["checkpoint"]) == ["a", "b"] and list(out["gap"]) == [0.2, 0.1]
    other_run = pd.concat([summary, pd.DataFrame([{"checkpoint": "b", **row}])], ignore_index=True)
    with pytest.raises(DataError, match="two different evaluations of checkpoint 'b'"):
        gap_table(means, other_run)


def test_the_analysis_cache_key_follows_the_prompt_around_the_query():
    """Cached analyses are keyed by the checkpoint digest; a change in how the prompt around the question is
    tokenized (another template, the plain template's query_lead) changes the text states, so it changes the key."""
    from types import SimpleNamespace

    from lsl_core.analysis import AnalysisOptions, sample_key
    from lsl_core.data.samples import Sample

    s = Sample(id="q1", audio=np.zeros(1600, dtype=np.float32) + 0.1, sr=16_000, question="who wrote hamlet?",
               answers=())
    a = SimpleNamespace(digest="d", prefix_ids=[1, 2, 3], suffix_ids=[4], query_lead="")
    keys = {sample_key(a, s, AnalysisOptions())}
    for change in ({"prefix_ids": [1, 2]}, {"query_lead": " "}, {"suffix_ids": [4, 5]}):
        keys.add(sample_key(SimpleNamespace(**{**vars(a), **change}), s, AnalysisOptions()))
    assert len(keys) == 4
    assert sample_key(SimpleNamespace(**vars(a)), s, AnalysisOptions()) in keys  # the same prompt: the same key
