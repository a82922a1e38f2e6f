"""The logit lens against a hand computation on the tiny Llama (RMSNorm written out, tied head), the
last layer against the model's own logits, an untied head with bias and soft-capping, the frame
alignment it pairs frames with, and the pipeline on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tone

from lsl_core.data.samples import Sample
from lsl_core.errors import MetricInputError
from lsl_core.metrics.lens import LensHead, logit_lens, speech_logit_lens
from lsl_core.metrics.tokenwise import dtw_alignment, frame_alignment, token_cosine_matrix

QUESTION = "who wrote hamlet in one short sentence ?"


@pytest.fixture(scope="module")
def sample():
    return Sample(id="lens", audio=tone(1.1), sr=16_000, question=QUESTION)


def _hand_logits(model, h: torch.Tensor, final: bool) -> torch.Tensor:
    """W_E · RMSNorm(h) by hand: h / sqrt(mean(h^2) + eps) * w, then the (tied) embedding matrix."""
    base = model.llm
    w = base.model.norm.weight.detach().double()
    eps = base.config.rms_norm_eps
    x = h.double()
    if not final:
        x = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w
    E = base.get_input_embeddings().weight.detach().double()  # tied: the LM head is the embedding table
    return x @ E.T  # [T, V]


def _rank(logits: torch.Tensor, target: int) -> int:
    order = sorted(range(logits.shape[0]), key=lambda v: -float(logits[v]))
    return order.index(target) + 1  # no ties among random float logits


def test_lens_equals_a_hand_computation_on_the_tiny_model(tiny_model, sample):
    head = tiny_model.lens_head()
    assert head.weight.data_ptr() == tiny_model.llm.get_input_embeddings().weight.data_ptr()  # tied, as the model has it
    st = tiny_model.hidden_states(sample)
    L, Ts = st.num_layers, st.speech.shape[1]
    targets = torch.arange(Ts) % head.vocab_size  # arbitrary vocabulary ids, one per frame
    got = logit_lens(st.speech, head, k=4, targets=targets)
    assert got.layers.tolist() == list(range(L + 1)) and got.top_ids.shape == (L + 1, Ts, 4)
    for layer in range(L + 1):
        logits = _hand_logits(tiny_model, st.speech[layer], final=layer == L)  # [Ts, V]
        probs = torch.softmax(logits, -1)
        for i in range(Ts):
            top = sorted(range(head.vocab_size), key=lambda v: -float(probs[i, v]))[:4]
            assert got.top_ids[layer, i].tolist() == top
            np.testing.assert_allclose(got.top_probs[layer, i].numpy(), probs[i, top].numpy(), rtol=1e-4, atol=1e-6)
            assert got.target_rank[layer, i].item() == _rank(logits[i], int(targets[i]))
            assert got.target_prob[layer, i].item() == pytest.approx(float(probs[i, targets[i]]), rel=1e-4, abs=1e-7)


def test_last_layer_is_the_models_own_next_token_distribution(tiny_model, sample):
    prompt = tiny_model.prompt_for(text=sample.question)
    with torch.no_grad():
        out = tiny_model.llm(inputs_embeds=prompt.inputs_embeds, output_hidden_states=True)
    logits = out.logits[0, prompt.span].float()  # [Tt, V]
    st = tiny_model.hidden_states(sample)
    L = st.num_layers
    got = logit_lens(st.text, tiny_model.lens_head(), k=3, layers=[L])
    assert got.layers.tolist() == [L]
    assert torch.equal(got.top_ids[0], logits.topk(3, dim=-1).indices)
    probs = torch.softmax(logits, -1).gather(1, got.top_ids[0])
    np.testing.assert_allclose(got.top_probs[0].numpy(), probs.numpy(), rtol=1e-4, atol=1e-7)


def test_untied_head_with_bias_divisor_and_softcap():
    g = torch.Generator().manual_seed(3)
    V, d = 11, 6
    W, b = torch.randn(V, d, generator=g), torch.randn(V, generator=g)
    head = LensHead(norm=lambda x: 2.0 * x, weight=W, bias=b, softcap=1.5, divisor=3.0)
    h = torch.randn(3, 4, d, generator=g)  # [L+1=3, T=4, d]
    got = logit_lens(h, head, k=V, targets=torch.tensor([0, 3, 5, 10]))
    for layer in range(3):
        x = h[layer] if layer == 2 else 2.0 * h[layer]  # layer L = 2 is already normed
        logits = 1.5 * torch.tanh((x @ W.T + b) / 3.0 / 1.5)
        probs = torch.softmax(logits, -1)
        assert torch.equal(got.top_ids[layer], probs.argsort(dim=-1, descending=True))
        np.testing.assert_allclose(got.top_probs[layer].numpy(), probs.sort(dim=-1, descending=True).values.numpy(),
                                   rtol=1e-5, atol=1e-7)
        assert got.target_rank[layer].tolist() == [_rank(logits[i], t) for i, t in enumerate([0, 3, 5, 10])]
    one = logit_lens(h, head, k=2, layers=[1])  # a subset of layers reads the same numbers
    assert torch.equal(one.top_ids[0], got.top_ids[1, :, :2])


def test_chunked_rows_equal_one_pass(monkeypatch):
    import lsl_core.metrics.lens as lens

    g = torch.Generator().manual_seed(4)
    head = LensHead(norm=torch.nn.LayerNorm(5, elementwise_affine=False), weight=torch.randn(7, 5, generator=g))
    h = torch.randn(2, 9, 5, generator=g)
    whole = logit_lens(h, head, k=3, targets=torch.arange(9) % 7)
    monkeypatch.setattr(lens, "MAX_CHUNK_ENTRIES", 14)  # two rows per chunk
    chunked = logit_lens(h, head, k=3, targets=torch.arange(9) % 7)
    assert torch.equal(whole.top_ids, chunked.top_ids) and torch.equal(whole.target_rank, chunked.target_rank)


def test_speech_lens_targets_the_aligned_token(tiny_model, sample):
    st = tiny_model.hidden_states(sample)
    ids = tiny_model.embed_text(sample.question).token_ids
    A = token_cosine_matrix(st.speech, st.text)
    ft = frame_alignment(A, "cosine", "dtw")  # [L+1, Ts]
    assert torch.equal(ft, dtw_alignment(A, "cosine").frame_token)
    res = speech_logit_lens(st.speech, st.text, ids, tiny_model.lens_head(), ft, k=2, layers=[0, 2])
    direct = logit_lens(st.speech, tiny_model.lens_head(), k=2, layers=[0, 2], targets=torch.tensor(ids)[ft])
    assert torch.equal(res.speech.target_rank, direct.target_rank)
    assert torch.equal(res.frame_token, ft[[0, 2]])
    own = logit_lens(st.text, tiny_model.lens_head(), k=2, layers=[0, 2], targets=torch.tensor(ids))
    assert torch.equal(res.text.target_rank, own.target_rank)
    # the argmax frame alignment is each frame's best token
    assert torch.equal(frame_alignment(A, "cosine"), A.argmax(dim=2))


def test_lens_sample_pipeline(tiny_model, sample):
    from lsl_core.analysis import lens_sample

    a = lens_sample(tiny_model, sample, k=3, layers=[0, 1, 2], path="dtw", alignment_layer=1)
    st = tiny_model.hidden_states(sample)
    Ts, Tt = st.speech.shape[1], st.text.shape[1]
    assert a.speech_top.shape == (3, Ts, 3) and a.text_top.shape == (3, Tt, 3)
    assert (a.frame_token == a.frame_token[1]).all()  # one fixed alignment, taken at layer 1
    ft = frame_alignment(token_cosine_matrix(st.speech, st.text), "cosine", "dtw")[1]
    np.testing.assert_array_equal(a.frame_token[0], ft.numpy())
    top1 = logit_lens(st.speech, tiny_model.lens_head(), k=1, layers=[2]).top_ids[0, :, 0]
    assert list(a.speech_top[2, :, 0]) == [tiny_model.tokenizer.decode([i]) for i in top1.tolist()]
    assert (a.speech_rank >= 1).all() and (a.speech_rank <= a.vocab_size).all()
    table = a.table()
    assert len(table) == 3 * Ts and table["rank_of_aligned_token"].tolist() == a.speech_rank.reshape(-1).tolist()


def test_errors_name_the_problem(tiny_model):
    head = tiny_model.lens_head()
    d = head.weight.shape[1]
    with pytest.raises(MetricInputError, match="width"):
        logit_lens(torch.zeros(2, 3, d + 1), head)
    with pytest.raises(MetricInputError, match="k must be"):
        logit_lens(torch.zeros(2, 3, d), head, k=0)
    with pytest.raises(MetricInputError, match="subset of 0..1"):
        logit_lens(torch.zeros(2, 3, d), head, layers=[2])
    with pytest.raises(MetricInputError, match="outside the vocabulary"):
        logit_lens(torch.zeros(2, 3, d), head, targets=torch.tensor([0, 1, 10**6]))
    with pytest.raises(MetricInputError, match="frame_alignment"):
        speech_logit_lens(torch.zeros(2, 3, d), torch.zeros(2, 2, d), [1, 2], head, torch.zeros(4, dtype=torch.long))
    with pytest.raises(MetricInputError, match="outside 0..1"):
        speech_logit_lens(torch.zeros(2, 3, d), torch.zeros(2, 2, d), [1, 2], head, torch.full((3,), 2))


FAMILIES = ("qwen2-audio", "qwen2.5-omni", "voxtral", "granite-speech")


@pytest.fixture(scope="module")
def family_root(tmp_path_factory):
    from lsl_core.model.families.tiny import make_all

    root = tmp_path_factory.mktemp("families")
    make_all(root)
    return root


@pytest.mark.parametrize("family", FAMILIES)
def test_lens_head_of_every_model_family_reads_its_own_logits(family_root, family, sample):
    """Each public speech-LLM class (tiny random weights): the head found by lens_head gives, at layer L,
    the model's own next-token distribution on the text span."""
    from lsl_core.model.loading import load_checkpoint

    model = load_checkpoint(family_root / family, device="cpu")
    head = model.lens_head()
    st = model.hidden_states(sample)
    prompt = model.prompt_for(text=sample.question)
    with torch.no_grad():
        logits = model.llm(inputs_embeds=prompt.inputs_embeds).logits[0, prompt.span].float()  # [Tt, V]
    got = logit_lens(st.text, head, k=3, layers=[st.num_layers])
    assert torch.equal(got.top_ids[0], logits.topk(3, dim=-1).indices)
    np.testing.assert_allclose(got.top_probs[0].numpy(), torch.softmax(logits, -1).gather(1, got.top_ids[0]).numpy(),
                               rtol=1e-4, atol=1e-7)
