"""Review of batched serving and generation (lsl_core.serving, LSLM.generate_ids, model.batch/padding).

The session's tiny model answers every prompt with one repeated token, so a batched-equals-alone check on it
cannot fail; these tests use a "vivid" tiny Llama (larger init scale) whose greedy answers differ per prompt
and per step. Batched results are compared with the same request run alone: exact token ids for generation,
a tolerance for hidden states."""

from __future__ import annotations

import threading

import pytest
import torch

from conftest import tone
from lsl_core.data.samples import Sample
from lsl_core.errors import LSLError
from lsl_core.model import batch as B
from lsl_core.serving import Batcher, GenerationRow, SideBySideRequest, generate_rows, serve_side_by_side

QUESTIONS = ("what is the capital of france ?", "who wrote hamlet ?", "how many legs does a spider have ?")


@pytest.fixture(scope="module")
def vivid(vivid_model):
    """conftest's vivid_model: a tiny Llama whose greedy answers differ per prompt, and the tiny Whisper."""
    return vivid_model


def _samples() -> list[Sample]:
    return [Sample(id=f"v{i}", audio=tone(0.8 + 0.35 * i, freq=180 + 50 * i), sr=16_000, question=q, answers=())
            for i, q in enumerate(QUESTIONS)]


def _prompts(model) -> list:
    """Speech and text prompts of different lengths (speech first)."""
    return [model.prompt_for(audio=s.audio, sr=s.sr) for s in _samples()] + [model.prompt_for(text=q)
                                                                            for q in QUESTIONS]


def _rows(sbs) -> list[tuple]:
    return [(a.condition, a.answer, a.frames, a.tokens) for a in sbs.answers()] + [(sbs.transcript,)]


# =============================================================================== generate_ids
def test_vivid_model_answers_differ_so_equality_checks_can_fail(vivid):
    ans = [vivid.generate_ids([p], 6)[0] for p in _prompts(vivid)]
    assert len({tuple(a) for a in ans}) == len(ans) and all(len(set(a)) > 1 for a in ans)


def test_left_padded_batch_equals_each_prompt_alone_with_several_stop_ids(vivid, monkeypatch):
    """Rows of different lengths, some stopping early at a generation-config stop id: same ids as alone."""
    prompts = _prompts(vivid)
    assert len({p.inputs_embeds.shape[1] for p in prompts}) > 3  # real left padding
    free = [vivid.generate_ids([p], 10)[0] for p in prompts]
    stop = max({t for a in free for t in a}, key=lambda t: sum(t in a[:-1] for a in free))  # a mid-answer token
    monkeypatch.setattr(vivid.llm.generation_config, "eos_token_id", [vivid.eos_id, stop])
    alone = [vivid.generate_ids([p], 10)[0] for p in prompts]
    assert any(len(a) < 10 and a[-1] == stop for a in alone)  # some rows stop early
    assert vivid.generate_ids(prompts, 10, batch_size=len(prompts), sort=False) == alone
    assert vivid.generate_ids(prompts, 10, batch_size=4) == alone  # sorted + chunked, input order back
    assert vivid.generate_ids(prompts, 1, batch_size=len(prompts)) == [a[:1] for a in alone]


def test_zero_new_tokens_give_empty_answers_and_a_negative_count_is_refused(vivid):
    prompts = _prompts(vivid)[:2]
    seen = []
    assert vivid.generate_ids(prompts, 0, batch_size=1, on_batch=lambda idx, ids: seen.append((idx, ids))) == [[], []]
    assert sorted(i for idx, _ in seen for i in idx) == [0, 1]  # progress still covers every prompt
    assert vivid.generate_answers(prompts, 0) == ["", ""]
    with pytest.raises(LSLError, match="max_new_tokens"):
        vivid.generate_ids(prompts, -1)


def test_no_new_tokens_batched_or_alone_agree_in_serving(vivid):
    """A row asking for 0 tokens next to longer rows answers '' -- as it does alone."""
    p = _prompts(vivid)
    rows = [GenerationRow(p[0], (), 0), GenerationRow(p[3], (), 5)]
    assert generate_rows(vivid, rows) == [vivid.generate_from_prompt(r.prompt, r.max_new_tokens) for r in rows]
    assert generate_rows(vivid, rows[:1]) == [""]


# =============================================================================== hidden states per row
def test_batched_forward_states_of_each_row_equal_the_row_alone(vivid):
    """response_forward's L+1 states of a right-padded batch, on each row's query span, equal forward_states."""
    s = _samples()
    queries = [vivid.embed_text(q).embeds for q in QUESTIONS] + [vivid.embed_speech(x.audio, x.sr).embeds for x in s]
    resp = [[5, 6, 2], [7, 2], [9, 9, 9, 2], [3, 2], [4, 4, 4, 4, 2], [2]]
    with torch.no_grad():
        f = B.response_forward(vivid, B.response_batch(vivid, queries, resp), hidden_states=True)
    assert len(f.hidden_states) == vivid.num_layers + 1
    for i, q in enumerate(queries):
        p = vivid.build_prompt(q)
        got = torch.stack([h[i, p.span] for h in f.hidden_states]).float()  # [L+1, Tq, d]
        torch.testing.assert_close(got, vivid.forward_states(p), rtol=1e-4, atol=1e-4)


# =============================================================================== serving
def test_generate_rows_with_edits_equals_one_at_a_time_on_a_vivid_model(vivid):
    from lsl_core.interventions import generate_with_interventions, plan_interventions, sample_states

    rows, want = [], []
    for i, s in enumerate(_samples()):
        sp, tx, states = sample_states(vivid, s)
        plans = tuple(plan_interventions(["angle:all", "length:bottom2@1", "calibrate:all"][i], states, sp))
        rows += [GenerationRow(tx, (), 6), GenerationRow(sp, plans, 4 + i), GenerationRow(sp, (), 7)]
        want += [vivid.generate_from_prompt(tx, 6), generate_with_interventions(vivid, sp, plans, 4 + i),
                 vivid.generate_from_prompt(sp, 7)]
    assert len(set(want)) == len(want)  # the edits and prompts change the answers: the check can fail
    assert generate_rows(vivid, rows) == want


def test_a_negative_length_request_fails_alone_and_the_others_are_served(vivid):
    """max_new_tokens < 0 used to cut that request's answers short silently (ids[:-2]) inside a batch."""
    s = _samples()
    out = serve_side_by_side(vivid, [SideBySideRequest(s[0], ("angle:all",), 5, cascade=False),
                                     SideBySideRequest(s[1], ("angle:all",), -2, cascade=False)])
    assert isinstance(out[1], LSLError) and "max_new_tokens" in str(out[1])
    alone = serve_side_by_side(vivid, [SideBySideRequest(s[0], ("angle:all",), 5, cascade=False)])[0]
    assert _rows(out[0]) == _rows(alone)
    with pytest.raises(LSLError, match="max_new_tokens"):
        GenerationRow(vivid.prompt_for(text=QUESTIONS[0]), (), -1)


def _failing_when(model, monkeypatch, bad) -> None:
    """Make model.generate_ids raise RuntimeError whenever `bad(prompts)` holds (e.g. out of memory)."""
    real = model.generate_ids

    def generate_ids(prompts, *args, **kwargs):
        if bad(prompts):
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(prompts, *args, **kwargs)

    monkeypatch.setattr(model, "generate_ids", generate_ids)


def test_a_batch_too_big_for_the_device_is_served_request_by_request(vivid, monkeypatch):
    """The gathered batch fails (out of memory) where each request alone fits: every user still gets an answer."""
    s = _samples()
    reqs = [SideBySideRequest(x, ("angle:all",), 4, cascade=False) for x in s[:2]]
    want = [_rows(serve_side_by_side(vivid, [r])[0]) for r in reqs]
    _failing_when(vivid, monkeypatch, lambda prompts: len(prompts) > 3)  # one request = 3 rows
    got = serve_side_by_side(vivid, reqs)
    assert [_rows(g) for g in got] == want


def test_a_request_whose_generation_fails_does_not_fail_the_others(vivid, monkeypatch):
    """A failure tied to one request's prompt (here: its text prompt's length) stays with that request."""
    s = _samples()
    reqs = [SideBySideRequest(x, ("angle:all",), 4, cascade=False) for x in s]
    want = [_rows(serve_side_by_side(vivid, [r])[0]) for r in reqs]
    lengths = [p.inputs_embeds.shape[1] for p in _prompts(vivid)]  # speech 0..2, then text 0..2
    bad_len = lengths[4]  # request 1's text prompt
    assert bad_len not in lengths[:4] + lengths[5:]
    _failing_when(vivid, monkeypatch, lambda prompts: any(p.inputs_embeds.shape[1] == bad_len for p in prompts))
    out = serve_side_by_side(vivid, reqs)
    assert isinstance(out[1], RuntimeError) and "out of memory" in str(out[1])
    assert [_rows(out[0]), _rows(out[2])] == [want[0], want[2]]


def test_batcher_threads_get_their_own_results_and_a_crash_fails_only_its_batch():
    """Eight threads submit at once; results go back by position (payloads echo), a crash fails one batch."""
    gate, started = threading.Event(), threading.Event()

    def run(payloads, progress=None):
        started.set()
        gate.wait(30)
        if "crash" in payloads:
            raise RuntimeError("boom")
        return [f"answer to {p}" for p in payloads]

    b = Batcher(run, window_s=0.0, max_batch=8)
    first = b.submit("p-first")
    assert started.wait(30)  # batch 1 = [p-first] runs (blocked); the threads below queue for batch 2
    barrier, tickets = threading.Barrier(8), {}

    def session(i: int) -> None:
        barrier.wait()
        tickets[i] = b.submit(f"p{i}")

    threads = [threading.Thread(target=session, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    gate.set()
    assert first.result(30) == "answer to p-first"
    assert all(tickets[i].result(30) == f"answer to p{i}" for i in range(8))
    assert len({tickets[i].batch_id for i in range(8)}) == 1 and b.sizes == [1, 8]
    crashed = b.submit("crash")
    with pytest.raises(RuntimeError, match="boom"):
        crashed.result(30)
    assert b("after", timeout=30) == "answer to after"
    b.close()


# =============================================================================== model.batch
def test_batch_generation_refuses_a_model_whose_prompts_depend_on_the_modality(vivid, monkeypatch):
    """batch.generate_batch gets bare query embeddings and wraps every one as build_prompt(q): for a model family
    (weights_per_modality: a speech template with audio markers and a speech-only LoRA) a typed question would be
    answered inside the speech template with the speech weights. Refused with a pointer to the one path."""
    q = [B.text_query(vivid, QUESTIONS[0])]
    assert B.generate_batch(vivid, q, 3) == [vivid.generate(text=QUESTIONS[0], max_new_tokens=3)]  # built-in: fine
    monkeypatch.setattr(vivid, "weights_per_modality", True)
    with pytest.raises(LSLError, match="generate_ids"):
        B.generate_batch(vivid, q, 3)
    with pytest.raises(LSLError, match="generate_ids"):
        B.prompt_batch(vivid, q)


@pytest.mark.parametrize("plain_format", ["Question: {query}\nAnswer:", "Q: {query} A:", "{query}\nAnswer:"])
def test_a_plain_template_gives_the_text_prompt_the_rendered_prompts_tokens(tiny_model, plain_format):
    """A base model's plain template ('Question: {query}'): with a byte-level BPE tokenizer the prefix and the
    question tokenized apart gave 'Question', ':', 'Ġ', 'what' instead of the rendered prompt's 'Question', ':',
    'Ġwhat'; the text prompt's ids must be the rendered prompt's, and the query span exactly the question."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lsl_core.model.families.tiny import make_bpe_tokenizer
    from lsl_core.model.lslm import LSLM
    from lsl_core.model.prompt import PromptTemplate

    tok = make_bpe_tokenizer(["<|endoftext|>"], bos=None, eos="<|endoftext|>", pad="<|endoftext|>")
    d = tiny_model.llm.get_input_embeddings().weight.shape[1]
    llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=2 * d,
                                       num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)).eval()
    template = PromptTemplate(kind="plain", plain_format=plain_format)
    model = LSLM(tiny_model.encoder, tiny_model.adaptor, llm, tok, template, name="plain")
    for q in ("what is the capital of france?", "Who wrote Hamlet?", "how many legs does a spider have"):
        p = model.prompt_for(text=q)
        assert p.prompt_ids == tok(template.render(tok, q), add_special_tokens=False).input_ids, q
        assert tok.decode(p.prompt_ids[p.span]).strip() == q


def test_a_released_model_ends_its_servers_worker_thread():
    """The app's model cache drops models; the server's worker thread (blocked waiting for requests) must end
    with its model instead of staying behind, one thread per model ever loaded."""
    import gc

    from lsl_core.serving import server_for

    class Model:  # a stand-in: the request fails in serving, which is returned to its ticket
        name = "released"

    model = Model()
    srv = server_for(model, window_s=0.0)
    ticket = srv.submit(object())
    with pytest.raises(Exception):
        ticket.result(timeout=30)
    worker = srv._thread
    assert worker is not None and worker.is_alive()
    del model, ticket  # (the ticket's error holds the model in its traceback)
    gc.collect()
    worker.join(timeout=30)
    assert not worker.is_alive() and srv._closed
