"""lsl_core.serving: concurrent requests gathered into one batch, each user getting exactly its own answers.

The batched answers are compared with the one-request-at-a-time path of lsl_core.interventions on a tiny
random model whose answers differ per prompt (conftest's vivid_model; same greedy tokens), the batcher's
gathering/queueing with a fake run_batch whose timing the test controls, and failures stay with the request that caused them."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from conftest import tone
from lsl_core.data.samples import Sample
from lsl_core.serving import Batcher, GenerationRow, SideBySideRequest, generate_rows, serve_side_by_side, server_for


def _samples() -> list[Sample]:
    qs = ["what is the capital of france ?", "who wrote hamlet ?", "how many legs does a spider have ?",
          "when did it end ?"]
    return [Sample(id=f"s{i}", audio=tone(0.8 + 0.35 * i, freq=180 + 50 * i), sr=16_000, question=q,
                   answers=("paris",) if i % 2 == 0 else ()) for i, q in enumerate(qs)]


def _rows(sbs) -> list[tuple]:
    return [(a.condition, a.answer, a.frames, a.tokens) for a in sbs.answers()] + [(sbs.transcript,)]


def test_generate_rows_equals_one_at_a_time(vivid_model):
    """Rows of different lengths and different edits in one batch = each generated alone."""
    from lsl_core.interventions import generate_with_interventions, plan_interventions, sample_states

    rows, want = [], []
    for i, s in enumerate(_samples()[:3]):
        sp, tx, states = sample_states(vivid_model, s)
        plans = tuple(plan_interventions(["angle:all", "length:bottom2@1"][i % 2], states, sp))
        rows += [GenerationRow(tx, (), 6), GenerationRow(sp, plans, 4 + i)]
        want += [vivid_model.generate_from_prompt(tx, 6), generate_with_interventions(vivid_model, sp, plans, 4 + i)]
    assert len({r.prompt.inputs_embeds.shape[1] for r in rows}) > 2  # real left padding
    assert len(set(want)) > 3  # the answers differ, so a row given another row's answer would fail below
    seen = []
    assert generate_rows(vivid_model, rows, progress=seen.append) == want
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)  # progress per decoding step


def test_batched_side_by_side_equals_the_unbatched_view(vivid_model, monkeypatch):
    from lsl_core.interventions import generate_side_by_side

    # the tiny random Whisper cannot transcribe: a fixed transcript exercises the cascade row on both paths
    monkeypatch.setattr(vivid_model, "transcribe", lambda audio, sr: "who wrote hamlet ?", raising=False)
    reqs = [SideBySideRequest(s, (c,), 5, cascade=True) for s, c in
            zip(_samples(), ("angle:bottom3", "angle:all", "calibrate:bottom2@1", "length:all"))]
    got = serve_side_by_side(vivid_model, reqs)
    assert len({a.answer for g in got for a in g.answers()}) > 3  # answers differ between requests and rows
    for req, g in zip(reqs, got):
        want = generate_side_by_side(vivid_model, req.sample, list(req.conditions), 5, cascade=True)
        assert _rows(g) == _rows(want)
        assert g.sample_id == req.sample.id and g.tokens == want.tokens
        assert g.speech.f1 == want.speech.f1 or (np.isnan(g.speech.f1) and np.isnan(want.speech.f1))


def test_layer0_planning_needs_no_forward_and_matches_the_full_states(tiny_model, monkeypatch):
    from lsl_core.interventions import parse_condition, plan_interventions, sample_states
    from lsl_core.serving import planning_states

    s = _samples()[1]
    sp, _, full = sample_states(tiny_model, s)
    conds = [parse_condition("angle:bottom3"), parse_condition("calibrate:all+length:bottom2")]
    calls = []
    monkeypatch.setattr(tiny_model, "forward_states", lambda *a, **k: calls.append(1))
    sp0, tx0, light = planning_states(tiny_model, s, conds)
    assert not calls and light.speech.shape == full.speech.shape
    assert torch.equal(light.speech[0], full.speech[0]) and torch.equal(light.text[0], full.text[0])
    for c in conds:
        a, b = plan_interventions(c, light, sp0), plan_interventions(c, full, sp)
        assert [(p.frames, p.tokens) for p in a] == [(p.frames, p.tokens) for p in b]
        for pa, pb in zip(a, b):
            for x, y in ((pa.targets, pb.targets), *(zip(pa.stats or (), pb.stats or ()))):
                assert (x is None and y is None) or torch.equal(x, y)


def test_a_failing_request_does_not_fail_the_others(tiny_model):
    s = _samples()
    out = serve_side_by_side(tiny_model, [SideBySideRequest(s[0], ("angle:all@99",), 4, False),
                                          SideBySideRequest(s[1], ("angle:all",), 4, False)])
    assert isinstance(out[0], Exception) and "out of range" in str(out[0])
    assert out[1].interventions[0].condition == "angle:all"


def test_concurrent_sessions_share_one_batch_and_get_their_own_answers(vivid_model):
    """Four sessions (threads) submit at once: one batch, each result is the session's own sample."""
    from lsl_core.interventions import generate_side_by_side

    srv = server_for(vivid_model, window_s=0.5)
    assert server_for(vivid_model) is srv  # one server per model
    samples = _samples()
    conds = ["angle:bottom3", "angle:all", "length:bottom2", "calibrate:all"]
    results, errors = {}, []
    start = threading.Barrier(4)

    def session(i: int) -> None:
        try:
            start.wait()
            t = srv.submit(SideBySideRequest(samples[i], (conds[i],), 5, cascade=False))
            st = t.status()
            assert st["state"] in ("queued", "running", "done") and st["text"]
            results[i] = (t.result(timeout=120), t.batch_id, t.batch_size)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    before = srv.batches
    threads = [threading.Thread(target=session, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(180)
    assert not errors, errors
    assert srv.batches == before + 1 and srv.sizes[-1] == 4
    assert len({r[1] for r in results.values()}) == 1  # the same batch
    for i, (sbs, _, size) in results.items():
        assert size == 4 and sbs.sample_id == samples[i].id and sbs.question == samples[i].question
        want = generate_side_by_side(vivid_model, samples[i], [conds[i]], 5, cascade=False)
        assert _rows(sbs) == _rows(want)


def test_batcher_gathers_within_the_window_and_queues_the_rest():
    gate = threading.Event()
    calls = []

    def run(payloads, progress=None):
        calls.append(list(payloads))
        progress(0.5, "half way")
        gate.wait(10)
        return [p * 10 if p >= 0 else ValueError(f"bad {p}") for p in payloads]

    b = Batcher(run, window_s=0.3, max_batch=3)
    first = [b.submit(i) for i in (1, 2)]
    time.sleep(0.6)  # the window closed: batch 1 = [1, 2] is running (blocked on the gate)
    st = first[0].status()
    assert st["state"] == "running" and st["batch"] == 2 and st["progress"] == 0.5 and "half way" in st["text"]
    later = [b.submit(i) for i in (3, -4, 5, 6)]
    st = later[1].status()
    assert st["state"] == "queued" and st["position"] == 2 and st["ahead"] == 2 and "next batch" in st["text"]
    gate.set()
    assert [t.result(10) for t in first] == [10, 20]
    assert later[0].result(10) == 30 and later[2].result(10) == 50 and later[3].result(10) == 60
    with pytest.raises(ValueError, match="bad -4"):
        later[1].result(10)
    assert calls == [[1, 2], [3, -4, 5], [6]]  # max_batch = 3; FIFO
    assert later[0].batch_id == later[2].batch_id != first[0].batch_id
    assert first[0].status()["state"] == "done"
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit(7)


def test_batcher_survives_a_crashing_batch():
    def run(payloads, progress=None):
        if 0 in payloads:
            raise RuntimeError("boom")
        return list(payloads)

    b = Batcher(run, window_s=0.0)
    with pytest.raises(RuntimeError, match="boom"):
        b(0, timeout=10)
    assert b(5, timeout=10) == 5
    b.close()
