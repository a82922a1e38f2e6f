"""Training on tiny random models: the response-only loss against an unpadded reference, the CTC
alignment loss against a hand computation, one step of every objective lowers its loss, masking of the
cached encoder states (hand-checkable cases), resume equals an uninterrupted run bit for bit (also with
masking), stages continue from their init, and `frozen` / `lora` / `full` checkpoints load back through
their manifests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lsl_core.errors import LSLError
from lsl_core.model import batch as B
from lsl_core.model.loading import list_zoo, load_checkpoint, read_manifest
from lsl_core.experiments.train import (MonitorClip, TrainConfig, TrainData, Trainer, TrainExample, build_model,
                                        init_manifest, make_trainer)
from lsl_core.experiments.train import augment as A
from lsl_core.experiments.train import objectives as O
from lsl_core.experiments.train.config import LATER_FIELDS
from lsl_core.experiments.train.state import load_resume

ANSWERS = ["paris", "shakespeare wrote hamlet", "it was in 1945", "eight", "nepal", "jupiter is largest"]
QUESTIONS = ["what is the capital of france ?", "who wrote hamlet ?", "where is mount everest ?"]


def _cfg(tiny_parts, tmp_path, strategy="lora", **kw) -> TrainConfig:
    base = dict(name=kw.pop("name", strategy), strategy=strategy, out=str(tmp_path / f"traj-{strategy}"), llm=str(tiny_parts["llm"]),
                encoder=str(tiny_parts["encoder"]), family="tiny", n_questions=3, n_val_questions=1, steps=6,
                batch_size=2, lr=1e-2, warmup_steps=2, save_every=3, save_steps=(), eval_every=0,
                eval_max_new_tokens=4, gen_batch_size=4, device="cpu", save_dtype="float32", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _data(model, n=6, seed=0, objective="qa") -> TrainData:
    """n clips of random encoder states [Te, 16] with short word responses (+ one monitor clip)."""
    g = torch.Generator().manual_seed(seed)
    resp = (lambda a: B.answer_ids(model, a)[:-1]) if objective == "ctc" else (lambda a: B.answer_ids(model, a))
    train = [TrainExample(f"c{i}", torch.randn(17 + 4 * i, 16, generator=g).half(), resp(ANSWERS[i % 6]),
                          QUESTIONS[i % 3]) for i in range(n)]
    monitor = [MonitorClip("m0", "what is the capital of france ?", "v", torch.randn(23, 16, generator=g).half(), False),
               MonitorClip("m1", "what is the capital of france ?", "u", torch.randn(19, 16, generator=g).half(), True)]
    return TrainData(train, monitor)


def _trainer(cfg, resume_dir=None, n=6) -> Trainer:
    model = build_model(cfg, torch.device("cpu"))
    return make_trainer(cfg, model, _data(model, n, objective=cfg.objective), resume_dir=resume_dir or cfg.out + "-resume",
                        progress=False)


def _eval_loss(tr: Trainer, idx: list[int]) -> float:
    """The trainer's loss on clips idx in eval mode, without gradients."""
    tr.train_mode(False)
    with torch.no_grad():
        return tr.loss_on(idx).item()


def _losses_around_one_step(tr: Trainer, idx: list[int]) -> tuple[float, float]:
    """(loss on idx before, after) one train_step."""
    before = _eval_loss(tr, idx)
    tr.train_step()
    return before, _eval_loss(tr, idx)


# ----------------------------------------------------------------------------- the loss
def test_response_batch_labels_cover_only_the_response(tiny_model):
    q = [torch.randn(5, 32), torch.randn(9, 32)]
    resp = [B.answer_ids(tiny_model, "paris"), B.answer_ids(tiny_model, "it was in 1945")]
    b = B.response_batch(tiny_model, q, resp)
    n_pre, n_suf = len(tiny_model.prefix_ids), len(tiny_model.suffix_ids)
    for i in range(2):
        start = n_pre + q[i].shape[0] + n_suf
        real = b.attention_mask[i].nonzero().flatten().tolist()
        assert real == list(range(start + len(resp[i])))  # right padding
        assert b.labels[i, start:start + len(resp[i])].tolist() == resp[i]
        assert (b.labels[i, :start] == B.IGNORE_INDEX).all() and (b.labels[i, start + len(resp[i]):] == B.IGNORE_INDEX).all()
        assert b.position_ids[i, : len(real)].tolist() == list(range(len(real)))
    assert resp[0][-1] == tiny_model.tokenizer.eos_token_id


def test_padded_batch_loss_equals_unpadded_reference(tiny_model):
    """Batched right-padded loss == token-weighted mean of per-item losses from plain forwards on token ids."""
    tok = tiny_model.tokenizer
    questions = ["what is the capital of france ?", "who wrote hamlet ?", "where is mount everest ?"]
    answers = ["paris", "shakespeare", "it was in nepal"]
    queries = [B.text_query(tiny_model, q) for q in questions]
    resp = [B.answer_ids(tiny_model, a) for a in answers]
    with torch.no_grad():
        got = B.response_loss(tiny_model, B.response_batch(tiny_model, queries, resp))
        total, count = 0.0, 0
        for q, r in zip(questions, resp):
            prompt = [*tiny_model.prefix_ids, *tok(q, add_special_tokens=False).input_ids, *tiny_model.suffix_ids]
            ids = torch.tensor([prompt + r])
            logits = tiny_model.llm(input_ids=ids).logits[0]  # [T, V]
            logp = torch.log_softmax(logits.double(), -1)
            for k, t in enumerate(r):  # token prompt+k is predicted at position len(prompt)+k-1
                total -= logp[len(prompt) + k - 1, t].item()
                count += 1
    assert got.item() == pytest.approx(total / count, rel=1e-5)


@pytest.mark.parametrize("strategy,scope", [("frozen", "all"), ("lora", "all"), ("lora", "speech")])
def test_response_logits_at_the_response_positions_equal_the_full_logits(tiny_parts, tmp_path, strategy, scope):
    """The LM head runs only where some row predicts a response token (logits_to_keep), bare or under a (scoped)
    LoRA: the same logits, in the same order, as slicing the logits of every position; gradients flow."""
    tr = _trainer(_cfg(tiny_parts, tmp_path, strategy, lora_scope=scope))
    ex = tr.data.train[:4]
    batch = B.response_batch(tr.model, [B.speech_query(tr.model, e.states) for e in ex], [e.response for e in ex])
    assert B._keeps_logits(tr.model.llm)
    logits, ids = B.response_logits(tr.model, batch)  # [N, V], [N]
    target = batch.labels[:, 1:]
    keep = target != B.IGNORE_INDEX
    full = tr.model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids, use_cache=False).logits  # [B, T, V]
    assert keep.any(0).sum() < keep.shape[1]  # some positions were left out
    assert torch.equal(ids, target[keep]) and ids.numel() == sum(len(e.response) for e in ex)
    torch.testing.assert_close(logits, full[:, :-1][keep].float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(B.response_logits(tr.model, batch, all_positions=True)[0], logits, rtol=1e-5, atol=1e-5)
    logits.logsumexp(-1).sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in tr.trainable_named())


def test_distillation_loss_equals_a_per_token_kl_of_unpadded_forwards(tiny_model):
    """distillation_loss's KL == mean over response tokens of sum_v p_text(v) log(p_text(v) / p_speech(v)), each
    distribution from a plain unpadded forward (teacher on token ids, student on its query embeddings); 0 when
    the student reads the same text; its cross-entropy == response_loss on the same student batch."""
    import copy

    tiny_model = copy.copy(tiny_model)  # sharpen the random LLM's near-uniform distributions (a scaled final norm)
    tiny_model.llm = copy.deepcopy(tiny_model.llm)
    with torch.no_grad():
        tiny_model.llm.model.norm.weight.mul_(30.0)
    g = torch.Generator().manual_seed(3)
    text = [B.text_query(tiny_model, q) for q in QUESTIONS]
    speech = [torch.randn(n, 32, generator=g) for n in (7, 12, 5)]
    resp = [B.answer_ids(tiny_model, a) for a in ANSWERS[:3]]
    tok = tiny_model.tokenizer
    with torch.no_grad():
        ce, kl = O.distillation_loss(tiny_model, tiny_model, speech, text, resp)
        got, same = kl.item(), O.distillation_loss(tiny_model, tiny_model, text, text, resp)[1].item()
        assert ce.item() == pytest.approx(O.response_loss(tiny_model, speech, resp).item(), rel=1e-5)
        total, count, reverse = 0.0, 0, 0.0
        for q, sq, r in zip(QUESTIONS, speech, resp):
            ids = [*tiny_model.prefix_ids, *tok(q, add_special_tokens=False).input_ids, *tiny_model.suffix_ids]
            p = torch.log_softmax(tiny_model.llm(input_ids=torch.tensor([ids + r])).logits[0].double(), -1)
            x = torch.cat([tiny_model.build_prompt(sq).inputs_embeds[0], tiny_model.token_embeddings(r)], 0)[None]
            qlog = torch.log_softmax(tiny_model.llm(inputs_embeds=x).logits[0].double(), -1)
            n_sp = x.shape[1] - len(r)
            for k in range(len(r)):  # response token k is predicted one position before it
                pt, qt = p[len(ids) + k - 1], qlog[n_sp + k - 1]
                total += float((pt.exp() * (pt - qt)).sum())
                reverse += float((qt.exp() * (qt - pt)).sum())
                count += 1
    assert got == pytest.approx(total / count, rel=1e-4)
    assert abs(got - reverse / count) > 0.05 * got  # the direction matters: KL(teacher || student)
    assert got > 1e-3 and abs(same) < 1e-3 * got


@pytest.mark.parametrize("strategy", ["frozen", "lora", "full"])
def test_distillation_teacher_is_the_llm_before_the_stage(tiny_parts, tmp_path, strategy):
    """With distill_weight > 0 a step lowers CE + KL, and the teacher's text distributions stay those of the
    LLM before training (lora: adapter disabled; full: a frozen copy; frozen: the model itself)."""
    cfg = _cfg(tiny_parts, tmp_path, strategy, batch_size=4, warmup_steps=0, lr=5e-3, distill_weight=1.0)
    tr = _trainer(cfg, n=4)
    ex = [tr.data.train[i] for i in range(4)]

    def teacher_logits():
        with torch.no_grad(), tr._teacher_context():
            q = [tr.teacher.embed_text(e.text).embeds for e in ex]
            return B.response_logits(tr.teacher, B.response_batch(tr.teacher, q, [e.response for e in ex]))[0]

    tr.train_mode(False)
    with torch.no_grad():
        before, t0 = tr.loss_on([0, 1, 2, 3]).item(), teacher_logits()
    tr.train_step()
    tr.train_mode(False)
    with torch.no_grad():
        after, t1 = tr.loss_on([0, 1, 2, 3]).item(), teacher_logits()
        plain = O.response_loss(tr.model, [B.speech_query(tr.model, e.states) for e in ex],
                                [e.response for e in ex]).item()
    assert after < before and after > plain  # the KL term is in the loss and positive
    assert torch.equal(t0, t1)
    assert (tr.teacher.llm is tr.model.llm) == (strategy != "full")


@pytest.mark.parametrize("strategy", ["lora", "full"])
def test_the_teacher_reads_without_dropout_while_the_student_trains(tiny_parts, tmp_path, strategy):
    """A backbone with dropout (attention_dropout 0.5 here): during a training step the teacher - the LLM before
    the stage - is still a function of its input (lora: adapter disabled and eval mode while it reads; full: its
    frozen copy), and the student's LLM is back in train mode afterwards."""
    import shutil

    llm = tmp_path / "llm-dropout"
    shutil.copytree(tiny_parts["llm"], llm)
    conf = json.loads((llm / "config.json").read_text())
    (llm / "config.json").write_text(json.dumps({**conf, "attention_dropout": 0.5}))
    tr = _trainer(_cfg(dict(tiny_parts, llm=llm), tmp_path, strategy, distill_weight=1.0, batch_size=4), n=4)
    ex = [tr.data.train[i] for i in range(4)]
    tr.train_mode(True)  # as train_step leaves it

    def teacher_logits():
        with torch.no_grad(), tr._teacher_context():
            q = [tr.teacher.embed_text(e.text).embeds for e in ex]
            return B.response_logits(tr.teacher, B.response_batch(tr.teacher, q, [e.response for e in ex]))[0]

    assert torch.equal(teacher_logits(), teacher_logits())
    assert tr.model.llm.training


def test_alignment_loss_is_one_minus_the_apps_sequence_cosine_of_unpadded_forwards(tiny_model):
    """paired_losses' term with align=sequence_alignment_loss == mean over clips of 1 - layer_average(sequence_cosine) computed by the
    analysis path (LSLM.forward_states of each unpadded prompt, metrics.sequence); 0 when speech is the text;
    gradient reaches the speech queries, never the teacher's text."""
    from lsl_core.metrics.sequence import layer_average, sequence_cosine

    g = torch.Generator().manual_seed(5)
    text = [B.text_query(tiny_model, q).detach().requires_grad_(True) for q in QUESTIONS]
    speech = [torch.randn(n, 32, generator=g).requires_grad_(True) for n in (7, 12, 5)]
    resp = [B.answer_ids(tiny_model, a) for a in ANSWERS[:3]]
    out = O.paired_losses(tiny_model, tiny_model, speech, text, resp, kl=False, align=O.sequence_alignment_loss)
    assert out.kl is None
    with torch.no_grad():
        ref = [1 - layer_average(sequence_cosine(tiny_model.forward_states(tiny_model.build_prompt(sq)),
                                                 tiny_model.forward_states(tiny_model.build_prompt(tq))))
               for sq, tq in zip(speech, text)]
        same = O.paired_losses(tiny_model, tiny_model, text, text, resp, kl=False,
                               align=O.sequence_alignment_loss).align.item()
    assert out.align.item() == pytest.approx(float(np.mean(ref)), rel=1e-4)
    assert out.align.item() > 1e-3 and abs(same) < 1e-5
    out.align.backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in speech)
    assert all(q.grad is None for q in text)


def test_response_forward_without_logits_gives_the_same_states_and_runs_no_lm_head(tiny_model):
    """logits=False (a teacher read only for its states): the same targets and per-layer states as with logits,
    logits None, and the LM head is never called."""
    resp = [B.answer_ids(tiny_model, a) for a in ANSWERS[:3]]
    batch = B.response_batch(tiny_model, [B.text_query(tiny_model, q) for q in QUESTIONS], resp)
    calls = []
    hook = tiny_model.llm.get_output_embeddings().register_forward_hook(lambda m, i, o: calls.append(o.shape))
    with torch.no_grad():
        full = B.response_forward(tiny_model, batch, hidden_states=True)
        n_with = len(calls)
        bare = B.response_forward(tiny_model, batch, hidden_states=True, logits=False)
    hook.remove()
    assert bare.logits is None and full.logits is not None and torch.equal(bare.target, full.target)
    assert all(torch.equal(a, b) for a, b in zip(full.hidden_states, bare.hidden_states))
    assert n_with == 1 and all(0 in shape for shape in calls[n_with:])  # the head sees no position


def test_contrastive_alignment_loss_by_hand():
    """sequence_contrastive_loss == mean over layers and clips of -log softmax_j(cos(s_i, t_j) / tau)[i] computed
    one entry at a time; a second clip of the same question is no candidate (the loss equals the one with that
    text column removed); speech means equal to distinct text means give a loss near 0 at a low temperature."""
    g = torch.Generator().manual_seed(11)
    L, n, d = 3, 4, 6
    s, t = torch.randn(L, n, d, generator=g), torch.randn(L, n, d, generator=g)
    qs = ["a", "b", "c", "d"]
    got = O.sequence_contrastive_loss(s, t, qs, temperature=0.5).item()
    total = 0.0
    for layer in range(L):
        for i in range(n):
            c = [float(torch.dot(s[layer, i], t[layer, j]) / (s[layer, i].norm() * t[layer, j].norm())) / 0.5
                 for j in range(n)]
            total += -(c[i] - np.log(np.sum(np.exp(c))))
    assert got == pytest.approx(total / (L * n), rel=1e-5)
    dup = O.sequence_contrastive_loss(s, t, ["a", "b", "a", "d"], temperature=0.5).item()
    by_hand = 0.0
    for layer in range(L):
        for i in range(n):
            cand = [j for j in range(n) if j == i or not ({i, j} == {0, 2})]
            c = {j: float(torch.dot(s[layer, i], t[layer, j]) / (s[layer, i].norm() * t[layer, j].norm())) / 0.5
                 for j in cand}
            by_hand += -(c[i] - np.log(np.sum(np.exp(list(c.values())))))
    assert dup == pytest.approx(by_hand / (L * n), rel=1e-5) and dup != pytest.approx(got, rel=1e-3)
    assert O.sequence_contrastive_loss(t, t, qs, temperature=0.01).item() < 1e-3


def test_contrastive_align_loss_config_trains_and_logs(tiny_parts, tmp_path):
    """align_loss "contrastive" puts sequence_contrastive_loss of the batch's questions in the stage's loss."""
    cfg = _cfg(tiny_parts, tmp_path, "frozen", batch_size=4, warmup_steps=0, lr=5e-3, align_weight=1.0,
               align_loss="contrastive", align_temperature=0.2)
    tr = _trainer(cfg, n=4)
    ex = [tr.data.train[i] for i in range(4)]
    tr.train_mode(False)
    with torch.no_grad(), tr.autocast():
        before = tr.loss_on([0, 1, 2, 3]).item()
        text = [tr.teacher.embed_text(e.text).embeds for e in ex]
        align = lambda sm, tm: O.sequence_contrastive_loss(sm, tm, [e.text for e in ex], 0.2)  # noqa: E731
        terms = O.paired_losses(tr.model, tr.teacher, [B.speech_query(tr.model, e.states) for e in ex], text,
                                [e.response for e in ex], kl=False, align=align)
    assert before == pytest.approx(terms.ce.item() + terms.align.item(), rel=1e-5)
    assert tr.last_terms["align"] == pytest.approx(terms.align.item(), abs=1e-5)
    tr.train_step()
    tr.train_mode(False)
    with torch.no_grad():
        assert tr.loss_on([0, 1, 2, 3]).item() < before
    with pytest.raises(LSLError, match="'align_loss'"):
        _cfg(tiny_parts, tmp_path, align_loss="l2")
    with pytest.raises(LSLError, match="'align_temperature'"):
        _cfg(tiny_parts, tmp_path, align_temperature=0.0)


@pytest.mark.parametrize("strategy", ["frozen", "lora"])
def test_alignment_weight_adds_the_alignment_term_and_a_step_lowers_it(tiny_parts, tmp_path, strategy):
    """With align_weight > 0 the stage's loss == CE + weight x alignment term, and a step lowers it."""
    cfg = _cfg(tiny_parts, tmp_path, strategy, batch_size=4, warmup_steps=0, lr=5e-3, align_weight=2.0)
    tr = _trainer(cfg, n=4)
    ex = [tr.data.train[i] for i in range(4)]
    tr.train_mode(False)
    with torch.no_grad(), tr.autocast():  # bf16 on CPUs that compute it natively, as loss_on runs
        before = tr.loss_on([0, 1, 2, 3]).item()
        text = [tr.teacher.embed_text(e.text).embeds for e in ex]
        terms = O.paired_losses(tr.model, tr.teacher, [B.speech_query(tr.model, e.states) for e in ex], text,
                                [e.response for e in ex], tr._teacher_context(), kl=False,
                                align=O.sequence_alignment_loss)
    assert terms.align.item() > 1e-3
    assert before == pytest.approx(terms.ce.item() + 2.0 * terms.align.item(), rel=1e-5)
    assert tr.last_terms == {"ce": pytest.approx(terms.ce.item(), abs=1e-5),
                             "align": pytest.approx(terms.align.item(), abs=1e-5)}
    tr.train_step()
    tr.train_mode(False)
    with torch.no_grad():
        assert tr.loss_on([0, 1, 2, 3]).item() < before


def test_train_log_rows_carry_the_loss_terms(tiny_parts, tmp_path):
    """Each train row of train_log.jsonl holds the weighted total and its unweighted terms (ce, kl, align) when
    the stage adds terms to the cross-entropy; plain stages log the total alone."""
    paired = _cfg(tiny_parts, tmp_path / "a", "frozen", steps=2, save_every=0, distill_weight=0.5, align_weight=2.0)
    plain = _cfg(tiny_parts, tmp_path / "b", "frozen", steps=2, save_every=0)
    for cfg in (paired, plain):
        _trainer(cfg).run()
    rows = [json.loads(x) for x in (Path(paired.out) / "train_log.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert len(train) == 2
    for r in train:
        assert r["loss"] == pytest.approx(r["ce"] + 0.5 * r["kl"] + 2.0 * r["align"], abs=1e-4)
        assert r["kl"] > 0 and r["align"] > 0
    rows = [json.loads(x) for x in (Path(plain.out) / "train_log.jsonl").read_text().splitlines()]
    assert all("ce" not in r and "align" not in r for r in rows if r["kind"] == "train")


# ----------------------------------------------------------------------------- one step
@pytest.mark.parametrize("strategy", ["frozen", "lora", "full"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(tiny_parts, tmp_path, strategy):
    cfg = _cfg(tiny_parts, tmp_path, strategy, batch_size=4, warmup_steps=0, lr=5e-3)
    tr = _trainer(cfg, n=4)  # batch_size = dataset size: step 0 sees exactly these 4 clips
    assert sorted(tr.batch_indices(0)) == [0, 1, 2, 3]
    frozen_enc = {k: v.clone() for k, v in tr.model.encoder.state_dict().items()}
    base_llm = {k: v.clone() for k, v in tr.model.llm.named_parameters() if not v.requires_grad}
    before, after = _losses_around_one_step(tr, [0, 1, 2, 3])
    assert after < before
    for k, v in tr.model.encoder.state_dict().items():  # the encoder never trains
        assert torch.equal(v, frozen_enc[k])
    for k, v in tr.model.llm.named_parameters():  # frozen weights stay put (LoRA: the base; frozen: all)
        if k in base_llm:
            assert torch.equal(v, base_llm[k])
    names = [n for n, _ in tr.trainable_named()]
    assert any(n.startswith("adaptor.") for n in names)
    assert any("lora_" in n for n in names) == (strategy == "lora")
    assert any(n.startswith("llm.") for n in names) == (strategy != "frozen")


def test_lr_schedule_warmup_then_cosine(tiny_parts, tmp_path):
    tr = _trainer(_cfg(tiny_parts, tmp_path, "frozen", steps=10, warmup_steps=4, min_lr_ratio=0.1))
    f = [tr.lr_factor(s) for s in range(10)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(f[3:], f[4:]))
    assert tr.lr_factor(10) == pytest.approx(0.1)


def test_data_order_is_an_epochwise_permutation(tiny_parts, tmp_path):
    tr = _trainer(_cfg(tiny_parts, tmp_path, "frozen", batch_size=2), n=6)
    epoch0 = [i for s in range(3) for i in tr.batch_indices(s)]
    epoch1 = [i for s in range(3, 6) for i in tr.batch_indices(s)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(6)) and epoch0 != epoch1


# ----------------------------------------------------------------------------- masking (augment.py)
def test_masking_replaces_spans_by_the_clip_mean_and_zeroes_channel_bands():
    x = torch.arange(50 * 8, dtype=torch.float32).reshape(50, 8)  # [Te, d_enc], every entry distinct
    before = x.clone()
    y = A.mask_states(x, 3, 4, 0, 0, A.mask_generator(0, 7, 1))
    assert torch.equal(x, before)  # the cached states are never changed
    rows = (y != x).any(1)
    assert torch.equal(y[rows], x.mean(0).expand(int(rows.sum()), 8))  # masked frames = the mean frame
    assert rows.sum() <= 3 * 4  # at most time_masks spans of <= time_mask_frames frames
    z = A.mask_states(x, 0, 0, 2, 3, A.mask_generator(0, 7, 1))
    cols = (z != x).any(0)
    assert (z[:, cols] == 0).all() and torch.equal(z[:, ~cols], x[:, ~cols]) and cols.sum() <= 2 * 3
    # widths are capped at a fifth of the clip: a 10-frame clip loses at most 2 frames per span
    short = torch.arange(10 * 2, dtype=torch.float32).reshape(10, 2) + 1
    for step in range(20):
        m = A.mask_states(short, 1, 10, 0, 0, A.mask_generator(0, step, 0))
        assert (m != short).any(1).sum() <= 2
    assert torch.equal(A.mask_states(x, 0, 10, 0, 27, A.mask_generator(0, 0, 0)), x)  # no masks: unchanged


def test_masks_depend_only_on_seed_step_and_slot():
    x = torch.randn(60, 16)
    draw = lambda seed, step, slot: A.mask_states(x, 2, 5, 2, 4, A.mask_generator(seed, step, slot))  # noqa: E731
    assert torch.equal(draw(0, 3, 1), draw(0, 3, 1))
    others = [draw(1, 3, 1), draw(0, 4, 1), draw(0, 3, 2)]
    assert all(not torch.equal(draw(0, 3, 1), o) for o in others)


def test_a_masked_stage_trains_on_masked_clips_and_monitors_the_cached_ones(tiny_parts, tmp_path):
    cfg = _cfg(tiny_parts, tmp_path, "frozen", batch_size=4, time_masks=2, time_mask_frames=4, channel_masks=2,
               channel_mask_width=3)
    tr = _trainer(cfg, n=4)
    cached = [e.states.clone() for e in tr.data.train]
    ex = tr.data.train
    assert all(torch.equal(a, e.states) for a, e in zip(tr.step_states(ex, None), ex))  # no step: as cached
    masked = tr.step_states(ex, 0)
    assert all(not torch.equal(m, e.states) for m, e in zip(masked, ex))
    assert all(torch.equal(a, b) for a, b in zip(masked, tr.step_states(ex, 0)))  # step-indexed: drawn again equal
    tr.train_mode(False)
    with torch.no_grad():
        assert tr.loss_on([0, 1, 2, 3], 0).item() != tr.loss_on([0, 1, 2, 3]).item()
    tr.run()
    assert all(torch.equal(c, e.states) for c, e in zip(cached, tr.data.train))
    plain = _trainer(dataclasses.replace(cfg, time_masks=0, channel_masks=0), n=4)
    assert all(torch.equal(a, e.states) for a, e in zip(plain.step_states(plain.data.train, 0), plain.data.train))


def test_masking_fields_at_their_defaults_leave_the_digest_as_it_was(tiny_parts, tmp_path):
    """Resume states written before the masking fields existed keep resuming (their digest is unchanged)."""
    cfg = _cfg(tiny_parts, tmp_path, "frozen")
    d = {k: v for k, v in cfg.to_dict().items() if k not in ("device", "out", *LATER_FIELDS)}
    assert cfg.digest() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
    assert dataclasses.replace(cfg, time_masks=1).digest() != cfg.digest()
    assert dataclasses.replace(cfg, adaptor_context=1).digest() != cfg.digest()
    assert dataclasses.replace(cfg, align_weight=1.0).digest() != cfg.digest()
    with pytest.raises(LSLError, match="'channel_masks'"):
        _cfg(tiny_parts, tmp_path, channel_masks=-1)


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("masks", [{}, {"time_masks": 2, "time_mask_frames": 4, "channel_masks": 1}],
                         ids=["plain", "masked"])
def test_resume_gives_the_same_state_as_an_uninterrupted_run(tiny_parts, tmp_path, masks):
    """LoRA (with dropout, so the RNG matters): 6 steps straight == 3 steps, stop, new process state, 3 more;
    with masking, the masks of each step are drawn again identically after the resume."""
    cfg_a = _cfg(tiny_parts, tmp_path / "a", "lora", **masks)
    a = _trainer(cfg_a)
    a.run()
    rng_a = torch.get_rng_state()
    cfg_b = _cfg(tiny_parts, tmp_path / "b", "lora", **masks)
    b1 = _trainer(cfg_b)
    b1.run(until=3)
    del b1
    torch.manual_seed(12345)  # a new process would start from some other RNG state
    b2 = _trainer(cfg_b)
    b2.run(resume=True)
    assert b2.step == a.step == 6
    for (na, pa), (nb, pb) in zip(a.trainable_named(), b2.trainable_named()):
        assert na == nb and torch.equal(pa, pb), na
    sa, sb = a.optimizer.state_dict(), b2.optimizer.state_dict()
    for i in sa["state"]:
        for k in sa["state"][i]:
            assert torch.equal(sa["state"][i][k], sb["state"][i][k])
    assert [g["lr"] for g in sa["param_groups"]] == [g["lr"] for g in sb["param_groups"]]
    assert torch.equal(torch.get_rng_state(), rng_a)  # the dropout stream continued, not restarted
    # the shipped artefacts agree too: final checkpoint bytes and the loss curve
    fa, fb = tmp_path / "a" / "traj-lora" / "lora-step0006", tmp_path / "b" / "traj-lora" / "lora-step0006"
    for rel in ("adaptor.safetensors", "lora/adapter_model.safetensors"):
        assert (fa / rel).read_bytes() == (fb / rel).read_bytes(), rel

    def losses(folder):
        rows = [json.loads(x) for x in (folder / "train_log.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]

    assert losses(fa.parent) == losses(fb.parent) and len(losses(fa.parent)) == 6


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_ctrl_c_stops_after_the_step_saves_and_resumes_exactly(tiny_parts, tmp_path, monkeypatch):
    """A real SIGINT during step 3 of 6: the step finishes, the resume state holds step 3, the handler is put
    back, and resuming ends where an uninterrupted run ends; the train command says how to continue."""
    a = _trainer(_cfg(tiny_parts, tmp_path / "a", "lora", save_every=0))
    a.run()
    cfg_b = _cfg(tiny_parts, tmp_path / "b", "lora", save_every=0)
    b1 = _trainer(cfg_b)
    step = Trainer.train_step

    def interrupted_step(self):
        if self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives inside step 3
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    before = signal.getsignal(signal.SIGINT)
    assert b1.run() == [] and b1.step == 3 and b1.stopped_by == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before
    assert json.loads((Path(cfg_b.out + "-resume") / "state.json").read_text())["step"] == 3
    monkeypatch.setattr(Trainer, "train_step", step)
    b2 = _trainer(cfg_b)
    b2.run(resume=True)
    assert b2.step == 6 and b2.stopped_by is None
    for (na, pa), (nb, pb) in zip(a.trainable_named(), b2.trainable_named()):
        assert na == nb and torch.equal(pa, pb), na


def test_resume_refuses_another_config_or_missing_state(tiny_parts, tmp_path):
    cfg = _cfg(tiny_parts, tmp_path, "frozen", steps=2, save_every=2)
    _trainer(cfg).run()
    other = _trainer(dataclasses.replace(cfg, lr=0.5), resume_dir=cfg.out + "-resume")
    with pytest.raises(LSLError, match="different train config"):
        load_resume(other)
    with pytest.raises(LSLError, match="No resume state"):
        load_resume(_trainer(cfg, resume_dir=str(tmp_path / "nowhere")))


# ----------------------------------------------------------------------------- checkpoints
def _outputs(model, states):
    """Speech hidden states and greedy answer of one clip (what the app and evaluate use)."""
    with torch.no_grad():
        q = B.speech_query(model, states)
        hs = model.forward_states(model.build_prompt(q))
    return hs, B.generate_batch(model, [q], max_new_tokens=5)[0]


@pytest.mark.parametrize("strategy", ["full", "lora", "frozen"])
def test_checkpoints_load_by_manifest(tiny_parts, tmp_path, strategy):
    cfg = _cfg(tiny_parts, tmp_path, strategy, steps=4, save_every=2)
    tr = _trainer(cfg)
    saved = tr.run()
    assert [p.name for p in saved] == [f"{strategy}-step0002", f"{strategy}-step0004"]
    zoo = list_zoo(cfg.out)
    assert [(m.name, m.step, m.strategy) for m in zoo] == [(f"{strategy}-step0002", 2, strategy),
                                                           (f"{strategy}-step0004", 4, strategy)]
    m = read_manifest(saved[-1])
    assert m.adaptor == "adaptor.safetensors" and (m.lora == "lora") == (strategy == "lora")
    assert m.llm == ("llm" if strategy == "full" else cfg.llm) and m.family == "tiny"
    assert m.extra["train_config"] == "../train_config.json"
    assert TrainConfig.from_json(saved[-1].parent / "train_config.json") == cfg  # re-runnable
    loaded = load_checkpoint(saved[-1], device="cpu", merge_lora=False)
    tr.train_mode(False)
    states = tr.data.train[0].states
    h1, a1 = _outputs(tr.model, states)
    h2, a2 = _outputs(loaded, states)
    torch.testing.assert_close(h2, h1, rtol=0, atol=0)  # float32 weights: identical model
    assert a1 == a2
    log = [json.loads(x) for x in (saved[-1].parent / "train_log.jsonl").read_text().splitlines()]
    evals = [r for r in log if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [0, 2, 4] and all(0 <= r["agreement"] <= 1 for r in evals)
    assert "agreement_unseen" in evals[0]
    assert all({"loss", "lr"} <= set(r) for r in log if r["kind"] == "train")


def test_float16_lora_checkpoint_loads_into_a_float32_model(tiny_parts, tmp_path):
    cfg = _cfg(tiny_parts, tmp_path, "lora", steps=2, save_every=2, save_dtype="float16")
    tr = _trainer(cfg)
    folder = tr.run()[-1]
    st = load_file(str(folder / "lora" / "adapter_model.safetensors"))
    assert st and all(v.dtype == torch.float16 for v in st.values())
    assert all(v.dtype == torch.float16 for v in load_file(str(folder / "adaptor.safetensors")).values())
    cfg_json = json.loads((folder / "lora" / "adapter_config.json").read_text())
    assert cfg_json["r"] == 8 and cfg_json["lora_alpha"] == 4 and cfg_json["lora_dropout"] == 0.1
    assert sorted(cfg_json["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert cfg_json["base_model_name_or_path"] == cfg.llm
    loaded = load_checkpoint(folder, device="cpu", merge_lora=False)
    want = {n.removeprefix("llm."): p for n, p in tr.trainable_named() if n.startswith("llm.")}
    got = dict(loaded.llm.named_parameters())
    assert want
    for n, p in want.items():
        assert got[n].dtype == torch.float32
        torch.testing.assert_close(got[n], p.detach().half().float(), rtol=0, atol=0)
    for n, p in tr.model.adaptor.named_parameters():
        torch.testing.assert_close(dict(loaded.adaptor.named_parameters())[n], p.detach().half().float(), rtol=0, atol=0)
    merged = load_checkpoint(folder, device="cpu")  # the default: W + BA folded in once
    states = tr.data.train[0].states
    torch.testing.assert_close(_outputs(merged, states)[0], _outputs(loaded, states)[0], rtol=1e-4, atol=1e-5)


def test_a_speech_scoped_lora_stage_trains_saves_and_continues_with_its_scope(tiny_parts, tmp_path):
    """lora_scope 'speech': the LoRA trains (B leaves zero), the checkpoint says so and reloads as trained; the
    text path stays the base LLM's; a stage continues it only with the same scope."""
    s1 = _cfg(tiny_parts, tmp_path, "lora", name="hear", objective="repeat", steps=2, save_every=2, lr=5e-2,
              lora_scope="speech")
    tr = _trainer(s1)
    first = tr.run()[-1]
    m = read_manifest(first)
    assert m.lora_scope == "speech"
    saved = load_file(str(first / "lora" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in saved.items())
    loaded = load_checkpoint(first, device="cpu")
    tr.train_mode(False)
    states = tr.data.train[0].states
    h1, a1 = _outputs(tr.model, states)
    h2, a2 = _outputs(loaded, states)
    torch.testing.assert_close(h2, h1, rtol=0, atol=0)
    assert a1 == a2
    base = load_checkpoint(dataclasses.replace(m, strategy="frozen", lora=None, lora_scope="all"), device="cpu")
    q = [B.text_query(loaded, QUESTIONS[0])]
    torch.testing.assert_close(loaded.forward_states(loaded.build_prompt(q[0])),
                               base.forward_states(base.build_prompt(q[0])), rtol=0, atol=0)
    assert B.generate_batch(loaded, q, 5) == B.generate_batch(base, q, 5)
    s2 = _cfg(tiny_parts, tmp_path / "b", "lora", name="qa", steps=2, save_every=2, init=str(first),
              lora_scope="speech")
    assert read_manifest(_trainer(s2).run()[-1]).lora_scope == "speech"
    with pytest.raises(LSLError, match="lora_scope 'speech'"):
        _trainer(dataclasses.replace(s2, lora_scope="all"))
    with pytest.raises(LSLError, match="'lora_scope'"):
        _cfg(tiny_parts, tmp_path, "frozen", lora_scope="speech")


# ----------------------------------------------------------------------------- config
def test_config_validation_names_the_field(tiny_parts, tmp_path):
    with pytest.raises(LSLError, match="'heldout_voice'"):
        _cfg(tiny_parts, tmp_path, voices=("en-gb", "en-gb-scotland"), heldout_voice="en-gb-scotland")
    with pytest.raises(LSLError, match="'strategy'"):
        _cfg(tiny_parts, tmp_path, strategy="none")
    with pytest.raises(LSLError, match="'steps'"):
        _cfg(tiny_parts, tmp_path, steps=0)
    with pytest.raises(LSLError, match="'distill_weight'"):
        _cfg(tiny_parts, tmp_path, "frozen", objective="repeat", distill_weight=0.5)
    with pytest.raises(LSLError, match="'distill_weight'"):
        _cfg(tiny_parts, tmp_path, distill_weight=-1.0)
    with pytest.raises(LSLError, match="'align_weight'"):
        _cfg(tiny_parts, tmp_path, "frozen", objective="repeat", align_weight=1.0)
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"strategy": "lora", "colour": "red"}))
    with pytest.raises(LSLError, match="unknown train config field"):
        TrainConfig.from_json(p)
    cfg = _cfg(tiny_parts, tmp_path, steps=400, save_every=200, save_steps=(25, 100), eval_every=100)
    assert cfg.checkpoint_steps() == [25, 100, 200, 400]
    assert cfg.eval_steps() == [0, 25, 100, 200, 300, 400]


SHIPPED = sorted((Path(__file__).parents[1] / "configs" / "train").glob("*.json"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_configs_parse_chain_and_hold_out_the_unseen_voice(path):
    cfg = TrainConfig.from_json(path)
    assert cfg.heldout_voice == "en-gb-scotland" and all(not v.startswith("en-gb-scotland") for v in cfg.voices)
    assert len(cfg.voices) >= 6 and cfg.speed_range and cfg.pitch_range  # >= 6 voices, speed/pitch variation
    assert cfg.save_dtype == "float16" and cfg.autocast == "auto" and cfg.encoder_window == "clip"
    if cfg.init:  # each stage continues from a checkpoint the previous stage writes
        init = Path(cfg.init)
        prev = [TrainConfig.from_json(p) for p in SHIPPED if p != path]
        assert any(Path(c.out) / f"{c.name}-step{_final_step(c):04d}" == init for c in prev), cfg.init


EXPERIMENTS = sorted((Path(__file__).parents[1] / "configs" / "train" / "experiments").glob("*.json"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.name for p in EXPERIMENTS])
def test_experiment_configs_parse_continue_a_curriculum_stage_and_do_not_write_into_the_zoo(path):
    cfg = TrainConfig.from_json(path)
    assert cfg.heldout_voice == "en-gb-scotland" and all(not v.startswith("en-gb-scotland") for v in cfg.voices)
    assert not Path(cfg.out).is_relative_to("assets")  # tried levers are not shipped checkpoints
    if cfg.init is None:  # a new curriculum from a seeded adaptor (e.g. another encoder)
        return
    stages = [TrainConfig.from_json(p) for p in SHIPPED + EXPERIMENTS]
    assert any(Path(c.out) / f"{c.name}-step{_final_step(c):04d}" == Path(cfg.init) for c in stages), cfg.init


def _final_step(cfg) -> int:
    offset = 0
    if cfg.init:
        prev = [TrainConfig.from_json(p) for p in SHIPPED + EXPERIMENTS]
        parent = next(c for c in prev if Path(cfg.init).parent == Path(c.out))
        offset = _final_step(parent)
    return offset + cfg.steps


def test_training_questions_are_test_questions_never_dev():
    from lsl_core.data.sdqa import load_sdqa_dev, load_sdqa_train_questions
    from lsl_core.experiments.train.corpus import split_questions

    cfg = TrainConfig(n_questions=240, n_val_questions=16)
    train, val = split_questions(cfg)
    assert len(train) == 240 and len(val) == 16
    ids = {q.example_id for q in train} | {q.example_id for q in val}
    assert len(ids) == 256  # disjoint
    every, val_all = split_questions(TrainConfig(n_questions=0, n_val_questions=16))
    assert val_all == val and len(every) + 16 == len(load_sdqa_train_questions())  # 0 = all but the monitored
    dev = load_sdqa_dev()
    assert not ids & {q.example_id for q in dev}
    assert not {q.question.strip().lower() for q in train} & {q.question.strip().lower() for q in dev}
    assert split_questions(cfg) == (train, val)  # deterministic


def test_a_monitoring_question_is_never_trained_on_under_another_id():
    """The test split holds one question twice under two ids ("... on Earth?" / "... on earth?"). A seed that
    puts one copy among the monitoring questions does not train on the other; a seed that splits no such pair
    keeps the plain seeded permutation (so the shipped splits are as they were)."""
    from collections import Counter

    from lsl_core.data.sdqa import load_sdqa_train_questions
    from lsl_core.experiments.train.corpus import split_questions

    qs = load_sdqa_train_questions()
    norm = lambda q: " ".join(q.question.lower().split())  # noqa: E731
    twice = {t for t, n in Counter(norm(q) for q in qs).items() if n > 1}
    assert twice  # the case exists in the shipped data
    pairs_split = 0
    for seed in range(30):
        train, val = split_questions(TrainConfig(seed=seed))
        held = {norm(q) for q in val}
        assert not held & {norm(q) for q in train}, seed
        perm = np.random.default_rng(seed).permutation(len(qs))
        plain = [qs[i] for i in perm[16:]]  # the split before: every question after the 16 monitored ones
        if any(norm(q) in held for q in plain):
            pairs_split += 1
            assert train == [q for q in plain if norm(q) not in held]
        else:
            assert train == plain
    assert pairs_split  # some seed in range split a pair (seed 9 does)


def test_self_distillation_targets_are_the_backbones_greedy_answers(tiny_model, tmp_path, monkeypatch):
    """Targets = the LLM's own greedy answer ids to the typed question; cached, so a rerun generates nothing."""
    from lsl_core.experiments.train.corpus import self_distillation_targets

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    qs = ["what is the capital of france ?", "who wrote hamlet ?", "where is mount everest ?"]
    got = self_distillation_targets(tiny_model, qs, max_new_tokens=6, batch_size=2)
    for q, ids in zip(qs, got):
        text = tiny_model.tokenizer.decode(ids, skip_special_tokens=True).strip()
        assert text == tiny_model.generate(text=q, max_new_tokens=6)
    monkeypatch.setattr(B, "generate_ids_batch", lambda *a, **k: pytest.fail("targets were not cached"))
    assert self_distillation_targets(tiny_model, qs[::-1], max_new_tokens=6, batch_size=2) == got[::-1]


# ----------------------------------------------------------------------------- the curriculum
def test_ctc_alignment_loss_equals_a_hand_computed_case():
    """Ts = 2 frames, one token v: CTC paths are (v,v), (v,-), (-,v); p = p1(v)p2(v) + p1(v)p2(-) + p1(-)p2(v)."""
    g = torch.Generator().manual_seed(0)
    E = torch.randn(5, 8, generator=g)  # V = 5 tokens, d = 8
    head = O.CTCHead(E, temperature=3.0, norm_weight=0.0)
    h = torch.randn(2, 8, generator=g)
    v = 3
    p = torch.softmax(head.logits(h).double(), -1)  # [2, 6], class v+1 = token v, class 0 = blank
    prob = p[0, v + 1] * p[1, v + 1] + p[0, v + 1] * p[1, 0] + p[0, 0] * p[1, v + 1]
    got = O.ctc_alignment_loss(head, [h], [[v]])
    assert got.item() == pytest.approx(-torch.log(prob).item(), rel=1e-5)
    # the norm term: frames at the mean embedding norm cost nothing, others (|h|/m - 1)^2
    head.norm_weight = 1.0
    m = E.norm(dim=-1).mean()
    scaled = h / h.norm(dim=-1, keepdim=True) * m * torch.tensor([[1.0], [2.0]])
    base = O.ctc_alignment_loss(head, [scaled], [[v]]).item()
    head.norm_weight = 0.0
    assert base - O.ctc_alignment_loss(head, [scaled], [[v]]).item() == pytest.approx(0.5, rel=1e-4)


def test_ctc_greedy_decoding_and_token_error_rate():
    E = torch.eye(4)  # token v has embedding e_v
    head = O.CTCHead(E, temperature=10.0)
    with torch.no_grad():
        head.blank.copy_(-torch.ones(4))
    frames = torch.stack([E[2], E[2], -torch.ones(4), E[2], E[0], -torch.ones(4)])  # 2 2 - 2 0 -
    assert head.greedy(frames) == [2, 2, 0]
    assert O.token_error_rate([[2, 2, 0]], [[2, 2, 0]]) == 0
    assert O.token_error_rate([[2, 0]], [[2, 2, 0]]) == pytest.approx(1 / 3)
    assert O.token_error_rate([[1, 2, 2, 0], []], [[2, 2, 0], [1, 1]]) == pytest.approx(3 / 5)


@pytest.mark.parametrize("objective", ["ctc", "repeat"])
def test_alignment_stages_lower_their_loss_and_keep_the_llm_frozen(tiny_parts, tmp_path, objective):
    cfg = _cfg(tiny_parts, tmp_path, "frozen", name=objective, objective=objective, batch_size=4, warmup_steps=0,
               lr=5e-3)
    tr = _trainer(cfg, n=4)
    llm = {k: v.clone() for k, v in tr.model.llm.state_dict().items()}
    before, after = _losses_around_one_step(tr, [0, 1, 2, 3])
    assert after < before
    assert all(torch.equal(v, llm[k]) for k, v in tr.model.llm.state_dict().items())
    names = [n for n, _ in tr.trainable_named()]
    assert ("ctc.blank" in names) == (objective == "ctc") and not any(n.startswith("llm.") for n in names)
    if objective == "repeat":  # the repeat prompt differs from the checkpoint's prompt only in its system text
        assert tr.repeat_model.prefix_ids != tr.model.prefix_ids
        assert tr.repeat_model.llm is tr.model.llm and tr.repeat_model.adaptor is tr.model.adaptor
        prefix = tr.model.tokenizer.decode(tr.repeat_model.prefix_ids)
        assert "Repeat" in prefix or "<unk>" in prefix  # (the tiny word-level vocabulary lacks the word)


def test_a_ctc_stage_keeps_its_head_so_its_decoding_can_be_rerun(tiny_parts, tmp_path):
    """The learned blank is saved with a ctc checkpoint; reloaded, the head decodes the reloaded model's frames
    exactly as the trained head decoded the trained model's. A repeat checkpoint has no head: one clear error."""
    cfg = _cfg(tiny_parts, tmp_path, "frozen", name="ctc", objective="ctc", steps=2, save_every=2, warmup_steps=0,
               lr=5e-2, ctc_temperature=7.0, ctc_norm_weight=0.3)
    tr = _trainer(cfg)
    folder = tr.run()[-1]
    assert read_manifest(folder).extra["ctc_head"] == "ctc_head.safetensors"
    emb = tr.model.llm.get_input_embeddings().weight
    head = O.load_ctc_head(folder, emb)
    assert not torch.equal(tr.ctc.blank, O.CTCHead(emb, seed=cfg.seed).blank)  # training moved the blank
    torch.testing.assert_close(head.blank, tr.ctc.blank, rtol=0, atol=0)
    assert (head.temperature, head.norm_weight) == (7.0, 0.3)
    loaded = load_checkpoint(folder, device="cpu", merge_lora=False)
    tr.train_mode(False)
    for clip in tr.data.train[:3]:
        with torch.no_grad():
            q0, q1 = B.speech_query(tr.model, clip.states), B.speech_query(loaded, clip.states)  # [Ts, d]
            torch.testing.assert_close(head.logits(q1), tr.ctc.logits(q0), rtol=0, atol=0)
            assert head.greedy(q1) == tr.ctc.greedy(q0)
    rep = _trainer(_cfg(tiny_parts, tmp_path, "frozen", name="rep", objective="repeat", steps=2, save_every=2)).run()[-1]
    with pytest.raises(LSLError, match="only checkpoints of a ctc stage"):
        O.load_ctc_head(rep, emb)
    with pytest.raises(LSLError, match="the LLM's embeddings"):
        O.load_ctc_head(folder, emb[:, :-1])


def test_a_stage_continues_from_its_init_checkpoint(tiny_parts, tmp_path):
    """Stage 2 loads stage 1's adaptor, names its checkpoints by the global step, and a LoRA stage that keeps
    the adaptor points at init's adaptor file instead of copying it."""
    s1 = _cfg(tiny_parts, tmp_path, "frozen", name="align", objective="repeat", steps=2, save_every=2)
    first = _trainer(s1).run()[-1]
    assert first.name == "align-step0002"
    s2 = _cfg(tiny_parts, tmp_path, "lora", name="qa", steps=2, save_every=2, init=str(first), train_adaptor=False)
    tr = _trainer(s2)
    stage1 = load_checkpoint(first, device="cpu")
    for (n, a), (_, b) in zip(tr.model.adaptor.state_dict().items(), stage1.adaptor.state_dict().items()):
        assert torch.equal(a, b), n
    assert not any(n.startswith("adaptor.") for n, _ in tr.trainable_named())
    folder = tr.run()[-1]
    assert folder.name == "qa-step0004"
    m = read_manifest(folder)
    assert m.step == 4 and m.adaptor.startswith("..") and not (folder / "adaptor.safetensors").exists()
    loaded = load_checkpoint(folder, device="cpu", merge_lora=False)
    for (n, a), (_, b) in zip(loaded.adaptor.state_dict().items(), stage1.adaptor.state_dict().items()):
        assert torch.equal(a, b), n
    with pytest.raises(LSLError, match="'init'"):
        _cfg(tiny_parts, tmp_path, "lora", train_adaptor=False)  # nothing to keep without init
    with pytest.raises(LSLError, match="'init'"):  # a stage continues from adaptor-only checkpoints
        _trainer(_cfg(tiny_parts, tmp_path, "frozen", name="x", init=str(folder)))
    other = tmp_path / "other-llm"  # the same tiny LLM under another path: another model as far as init knows
    shutil.copytree(tiny_parts["llm"], other)
    with pytest.raises(LSLError, match="trained with llm"):
        init_manifest(_cfg(tiny_parts, tmp_path, "frozen", name="y", init=str(first), llm=str(other)))
    same = tmp_path / "llm-link"  # another spelling of the same folder is the same model
    same.symlink_to(tiny_parts["llm"])
    assert init_manifest(_cfg(tiny_parts, tmp_path, "frozen", name="z", init=str(first), llm=str(same))) is not None


def test_a_stage_continues_from_an_untrained_init_with_the_inits_seed(tiny_parts, tmp_path):
    """An untrained init (strategy none, as embedded-untrained) has no adaptor file: it is the adaptor its seed
    draws. A stage continuing from it starts from that adaptor, whatever the config's own adaptor_seed."""
    init = tmp_path / "untrained"
    init.mkdir()
    (init / "manifest.json").write_text(json.dumps(dict(
        name="untrained", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]), family="tiny",
        strategy="none", step=0, downsample=5, seed=3, encoder_window="clip")))
    ref = load_checkpoint(init, device="cpu").adaptor.state_dict()
    model = build_model(_cfg(tiny_parts, tmp_path, "frozen", init=str(init), adaptor_seed=0), torch.device("cpu"))
    got = model.adaptor.state_dict()
    assert list(got) == list(ref) and all(torch.equal(got[k], ref[k]) for k in ref)
    seed0 = build_model(_cfg(tiny_parts, tmp_path, "frozen", adaptor_seed=0), torch.device("cpu")).adaptor
    assert not all(torch.equal(a, b) for a, b in zip(seed0.state_dict().values(), ref.values()))  # seeds differ


def test_a_context_adaptor_trains_saves_and_is_continued_only_by_a_context_stage(tiny_parts, tmp_path):
    """adaptor_context: its blocks train (they start as the identity, then move), the checkpoint says so and
    reloads to the same model, and a next stage must ask for the same adaptor."""
    s1 = _cfg(tiny_parts, tmp_path, "frozen", name="ctx", objective="repeat", steps=3, save_every=3, warmup_steps=0,
              adaptor_context=1)
    tr = _trainer(s1)
    names = [n for n, _ in tr.trainable_named()]
    assert "adaptor.context.0.qkv.weight" in names and "adaptor.context.0.proj.weight" in names
    before = _eval_loss(tr, [0, 1])
    folder = tr.run()[-1]
    assert _eval_loss(tr, [0, 1]) < before
    assert tr.model.adaptor.context[0].proj.weight.abs().sum() > 0  # the block is no longer the identity
    m = read_manifest(folder)
    assert m.adaptor_context == 1
    loaded = load_checkpoint(folder, device="cpu", merge_lora=False)
    states = tr.data.train[0].states
    h1, a1 = _outputs(tr.model, states)
    h2, a2 = _outputs(loaded, states)
    torch.testing.assert_close(h2, h1, rtol=0, atol=0)
    assert a1 == a2
    with pytest.raises(LSLError, match="adaptor_context=1; the config says 0"):  # blocks are never dropped
        _trainer(_cfg(tiny_parts, tmp_path, "lora", name="qa", init=str(folder)))
    cont = _trainer(_cfg(tiny_parts, tmp_path, "lora", name="qa", init=str(folder), adaptor_context=1))
    for (n, a), (_, b) in zip(cont.model.adaptor.state_dict().items(), loaded.adaptor.state_dict().items()):
        assert torch.equal(a, b), n
    with pytest.raises(LSLError, match="adaptor_context"):
        _cfg(tiny_parts, tmp_path, adaptor_context=-1)


def test_a_stage_adds_context_blocks_to_a_plain_init_adaptor(tiny_parts, tmp_path):
    """init without blocks + adaptor_context 2: the stage starts as exactly init's model (fresh blocks are the
    identity), then trains the blocks; only a stage that trains the adaptor may add them."""
    s1 = _cfg(tiny_parts, tmp_path, "frozen", name="plain", objective="repeat", steps=2, save_every=2)
    plain = _trainer(s1).run()[-1]
    s2 = _cfg(tiny_parts, tmp_path, "frozen", name="grown", objective="repeat", steps=2, save_every=2,
              warmup_steps=0, init=str(plain), adaptor_context=2)
    tr = _trainer(s2)
    assert tr.model.adaptor.cfg.context == 2
    states = tr.data.train[0].states
    tr.train_mode(False)
    h0, _ = _outputs(tr.model, states)
    h_init, _ = _outputs(load_checkpoint(plain, device="cpu"), states)
    torch.testing.assert_close(h0, h_init, rtol=0, atol=0)
    folder = tr.run()[-1]
    assert folder.name == "grown-step0004" and read_manifest(folder).adaptor_context == 2
    assert (folder / "adaptor.safetensors").is_file()
    grown = load_checkpoint(folder, device="cpu")
    assert all(b.proj.weight.abs().sum() > 0 for b in grown.adaptor.context)  # both added blocks trained
    assert not torch.allclose(_outputs(grown, states)[0], h_init)
    with pytest.raises(LSLError, match="add blocks .* in a stage that trains the adaptor"):
        _trainer(_cfg(tiny_parts, tmp_path, "lora", name="qa", init=str(plain), adaptor_context=2,
                      train_adaptor=False))


def test_a_lora_stage_continues_the_lora_of_its_init(tiny_parts, tmp_path):
    """repeat with LoRA -> qa with LoRA: the second stage starts from the first stage's LoRA weights (not a
    fresh LoRA), trains them further, and refuses a LoRA of another shape."""
    s1 = _cfg(tiny_parts, tmp_path, "lora", name="hear", objective="repeat", steps=2, save_every=2, lr=5e-2)
    first = _trainer(s1).run()[-1]
    saved = load_file(str(first / "lora" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in saved.items())  # B trained off zero
    s2 = _cfg(tiny_parts, tmp_path / "b", "lora", name="qa", steps=2, save_every=2, init=str(first),
              train_adaptor=False)
    tr = _trainer(s2)
    from peft import get_peft_model_state_dict

    start = get_peft_model_state_dict(tr.model.llm)
    assert start.keys() == saved.keys()
    for k, v in saved.items():
        assert torch.equal(start[k].float(), v.float()), k
    last = tr.run()[-1]
    assert last.name == "qa-step0004"
    after = load_file(str(last / "lora" / "adapter_model.safetensors"))
    assert any(not torch.equal(after[k], saved[k]) for k in saved)  # it kept training
    with pytest.raises(LSLError, match="lora_r"):
        _trainer(dataclasses.replace(s2, lora_r=4))
    with pytest.raises(LSLError, match="only a lora stage"):
        _trainer(_cfg(tiny_parts, tmp_path / "c", "frozen", name="x", init=str(first)))


def test_renditions_are_seeded_and_inside_the_ranges():
    from lsl_core.experiments.train.corpus import rendition

    cfg = TrainConfig(speed_range=(150, 160), pitch_range=(40, 45))
    rs = [rendition(cfg, f"q{i}", v) for i in range(40) for v in cfg.voices]
    assert rs == [rendition(cfg, f"q{i}", v) for i in range(40) for v in cfg.voices]
    assert all(150 <= r.speed <= 160 and 40 <= r.pitch <= 45 for r in rs)
    assert len({(r.speed, r.pitch) for r in rs}) > 20  # varied, not one setting
    plain = rendition(dataclasses.replace(cfg, speed_range=(), pitch_range=()), "q0", "en-gb")
    assert plain.speed is None and plain.pitch is None


def test_voice_variants_are_drawn_per_rendition_and_leave_speed_and_pitch_as_they_were():
    from lsl_core.experiments.train.corpus import rendition

    cfg = TrainConfig(speed_range=(150, 160), pitch_range=(40, 45))
    varied = dataclasses.replace(cfg, variants=("", "m3", "f2", "klatt"))
    keys = [(f"q{i}", v) for i in range(40) for v in cfg.voices]
    rs, vs = [rendition(cfg, *k) for k in keys], [rendition(varied, *k) for k in keys]
    assert [(r.speed, r.pitch) for r in rs] == [(r.speed, r.pitch) for r in vs]  # old audio stays reproducible
    assert all(r.variant == "" and r.espeak_voice == r.voice for r in rs)
    assert {r.variant for r in vs} == {"", "m3", "f2", "klatt"}
    assert all(r.espeak_voice == (f"{r.voice}+{r.variant}" if r.variant else r.voice) for r in vs)
    assert all((r.key() == v.key()) == (v.variant == "") for r, v in zip(rs, vs))  # a variant caches apart
    with pytest.raises(LSLError, match="'variants'"):
        TrainConfig(variants=("m3 --stdout",))


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="espeak-ng not installed")
def test_cached_training_features_equal_fresh_ones(tiny_model, tmp_path, monkeypatch):
    from lsl_core.data.synth import synthesize
    from lsl_core.experiments.train.corpus import Rendition, clip_states

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    r = Rendition("en-gb", 180, 40)
    first = clip_states(tiny_model, "q1", "Who wrote Hamlet?", r)
    fresh = tiny_model.encoder.encode(synthesize("Who wrote Hamlet?", "en-gb", 180, 40)).half()
    assert torch.equal(first, fresh)
    monkeypatch.setattr("lsl_core.data.synth.synthesize", lambda *a, **k: pytest.fail("cache miss"))
    assert torch.equal(clip_states(tiny_model, "q1", "Who wrote Hamlet?", r), first)
    monkeypatch.undo()
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    slower = clip_states(tiny_model, "q1", "Who wrote Hamlet?", Rendition("en-gb", 120, 40))  # another rendition
    assert slower.shape[0] > first.shape[0]
    other = clip_states(tiny_model, "q1", "Who wrote Hamlet?", Rendition("en-gb", 180, 40, "klatt"))  # a variant
    assert torch.equal(other, tiny_model.encoder.encode(synthesize("Who wrote Hamlet?", "en-gb+klatt", 180, 40)).half())
    a, b = synthesize("Who wrote Hamlet?", "en-gb", 180, 40), synthesize("Who wrote Hamlet?", "en-gb+klatt", 180, 40)
    assert a.shape != b.shape or not np.array_equal(a, b)  # the variant is another voice, not a no-op


@pytest.mark.skipif(not __import__("shutil").which("espeak-ng"), reason="espeak-ng not installed")
def test_clips_synthesized_ahead_on_threads_give_the_states_of_one_by_one(tiny_model, tmp_path, monkeypatch,
                                                                          capsys):
    import threading

    from lsl_core.data import synth as S
    from lsl_core.experiments.train.corpus import Rendition, clip_states, clips_states

    texts = ["Who wrote Hamlet?", "Where is Lima?", "How tall is the Eiffel Tower?", "What is a prime number?",
             "Name a planet.", "When did the war end?", "Which river is longest?"]
    jobs = [(f"q{i}", t, Rendition(("en-gb", "en-us")[i % 2], 150 + 5 * i, 40)) for i, t in enumerate(texts)]
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "one"))
    one = [clip_states(tiny_model, q, t, r) for q, t, r in jobs]
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "ahead"))
    real, where = S.synthesize, set()

    def spy(*a, **k):
        where.add(threading.current_thread() is threading.main_thread())
        return real(*a, **k)

    monkeypatch.setattr(S, "synthesize", spy)
    ahead = clips_states(tiny_model, jobs[:3], workers=3)  # three cached first: the rest are the misses
    capsys.readouterr()
    ahead = clips_states(tiny_model, jobs, workers=3, desc="states")
    assert where == {False}  # every miss was synthesized on a worker thread
    line = capsys.readouterr().out
    assert "states: 7 clips, 4 made on 3 worker threads, in " in line  # the cached 3 were not
    assert re.search(r"the encoder waited -?\d+ s for them, encoded \d+ s, wrote the cache \d+ s, the rest -?\d+ s",
                     line)
    assert len(ahead) == len(jobs) and all(torch.equal(a, b) for a, b in zip(ahead, one))  # same clips, same order
    monkeypatch.setattr(S, "synthesize", lambda *a, **k: pytest.fail("cache miss"))
    assert all(torch.equal(a, b) for a, b in zip(clips_states(tiny_model, jobs, workers=3), one))  # all cached now


def test_clips_made_ahead_in_worker_processes_give_the_states_of_one_by_one(tiny_model, tmp_path, monkeypatch,
                                                                            capsys):
    """worker_kind="processes": spawned processes synthesize and featurize the new clips (the encoder's CPU half), this
    process encodes them: the states equal clip_states one by one, bit for bit, in order, and the line says so; "auto"
    is threads with the encoder on the CPU; an unknown kind is refused before any work."""
    from lsl_core.experiments.train.corpus import Rendition, clip_states, clips_states

    texts = ["Who wrote Hamlet?", "Where is Lima?", "How tall is the Eiffel Tower?", "Name a planet."]
    jobs = [(f"q{i}", t, Rendition(("en-gb", "en-us")[i % 2], 150 + 5 * i, 40)) for i, t in enumerate(texts)]
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "one"))
    one = [clip_states(tiny_model, q, t, r) for q, t, r in jobs]
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "procs"))
    with pytest.raises(LSLError, match="Unknown worker kind"):
        clips_states(tiny_model, jobs, workers=2, worker_kind="fibres")
    got = clips_states(tiny_model, jobs, workers=2, worker_kind="processes", desc="states")
    assert "states: 4 clips, 4 made on 2 worker processes, in " in capsys.readouterr().out
    assert len(got) == len(jobs) and all(torch.equal(a, b) for a, b in zip(got, one))
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "auto"))  # "auto" with the encoder on the CPU: threads
    clips_states(tiny_model, jobs[:2], workers=2, worker_kind="auto", desc="states")
    assert "states: 2 clips, 2 made on 2 worker threads, in " in capsys.readouterr().out


def test_clips_of_one_length_are_encoded_together_when_asked(tiny_model, tmp_path, monkeypatch, capsys):
    """encoder_batch > 1 (the default on a GPU): the new clips of a chunk that share a length go through the encoder
    together; every clip's cached states equal those made one by one (float16, to rounding), in order, and a second
    pass reads them all from the cache."""
    from lsl_core.data import synth as S
    from lsl_core.experiments.train.corpus import Rendition, clip_states, clips_states

    texts = ["Who wrote Hamlet?", "Where is Lima?", "Name a planet."]
    # the same text and rendition under two clip ids: equal audio, equal length, two cache entries
    jobs = [(f"{q}{i}", t, Rendition("en-gb", 160, 50)) for q in ("a", "b", "c") for i, t in enumerate(texts)]
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "one"))
    one = [clip_states(tiny_model, q, t, r) for q, t, r in jobs]
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "together"))
    enc, sizes = tiny_model.encoder, []
    forward = enc.forward
    monkeypatch.setattr(enc, "forward", lambda f: sizes.append(f.shape[0]) or forward(f))
    together = clips_states(tiny_model, jobs, workers=2, encoder_batch=2, desc="states")
    assert max(sizes) == 2 and len(sizes) < len(jobs)  # pairs of equal clips shared forwards
    assert f" in {len(sizes)} forwards (up to 2 clips of one length at a time)" in capsys.readouterr().out
    for a, b in zip(together, one):
        assert a.dtype == b.dtype == torch.float16 and a.shape == b.shape and torch.allclose(a, b, atol=2e-3, rtol=2e-3)
    monkeypatch.setattr(S, "synthesize", lambda *a, **k: pytest.fail("cache miss"))
    again = clips_states(tiny_model, jobs, workers=2, encoder_batch=2)
    assert all(torch.equal(a, b) for a, b in zip(again, together))


def test_cached_encoder_states_time_a_miss_forward_and_write_not_the_wait(tiny_model, tmp_path, monkeypatch):
    """With `inputs`, the encoder's forward and the cache write are timed, not the wait for the inputs; a hit adds
    nothing."""
    import time

    from lsl_core.model.batch import cached_encoder_states

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    enc = tiny_model.encoder
    audio = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1

    def slow_inputs():
        time.sleep(0.3)
        return enc.inputs(audio)

    timings: dict[str, float] = {}
    t = time.perf_counter()
    states = cached_encoder_states(enc, "g", "c", lambda: audio, "k", inputs=slow_inputs, timings=timings)
    whole = time.perf_counter() - t
    assert set(timings) == {"encode", "write"} and timings["encode"] > 0 and timings["write"] > 0
    assert timings["encode"] + timings["write"] < whole - 0.25  # the 0.3 s wait is not in them
    assert torch.equal(states, enc.encode(audio).to(torch.float16))
    again = dict(timings)
    cached_encoder_states(enc, "g", "c", lambda: audio, "k", inputs=slow_inputs, timings=timings)
    assert timings == again  # a hit: nothing encoded, nothing written


def test_autocast_is_bf16_only_where_the_device_computes_it(tiny_parts, tmp_path, monkeypatch):
    from lsl_core.experiments.train import trainer as T

    cfg = _cfg(tiny_parts, tmp_path, "frozen")
    monkeypatch.setattr(T, "bf16_native", lambda device: False)
    assert _trainer(cfg).autocast is __import__("contextlib").nullcontext
    monkeypatch.setattr(T, "bf16_native", lambda device: True)
    with _trainer(cfg).autocast():
        assert torch.is_autocast_enabled("cpu")


def test_vocabulary_sentences_are_seeded_word_tokens_spoken_once(tiny_model):
    from lsl_core.experiments.train.corpus import vocabulary_sentences, vocabulary_words

    class BPE:  # a byte-level BPE vocabulary in id order: "Ġword" tokens, fragments and punctuation
        def get_vocab(self):
            toks = ["!", "Ġthe", "Ġcat", "Ġa", "ĠDog", "Ġgarden", "ing", "Ġcafé", "Ġsat"] + [f"Ġw{'x' * i}" for i in range(60)]
            return {t: i for i, t in enumerate(toks)}

    words = vocabulary_words(BPE(), 10)
    assert words[:4] == ["the", "cat", "garden", "sat"]  # lowercase ASCII words of >= 3 letters, in id order
    sents = vocabulary_sentences(BPE(), 20, 55, seed=3)
    assert sents == vocabulary_sentences(BPE(), 20, 55, seed=3) != vocabulary_sentences(BPE(), 20, 55, seed=4)
    pool = set(vocabulary_words(BPE(), 55))
    for sid, text in sents:
        ws = text.rstrip(".").lower().split()
        assert 4 <= len(ws) <= 10 and set(ws) <= pool and text[0].isupper()
    assert len({sid for sid, _ in sents}) == 20
    with pytest.raises(LSLError, match="vocab_sentences"):
        TrainConfig(objective="qa", vocab_sentences=10)
    with pytest.raises(LSLError, match="vocab_sentences"):  # a word-level vocabulary has no 'Ġword' tokens
        vocabulary_sentences(tiny_model.tokenizer, 5, 100, seed=0)
    # vocab_cased: capitalised words (names) join the pool in id order and keep their capital inside a sentence
    assert vocabulary_words(BPE(), 5, cased=True) == ["the", "cat", "Dog", "garden", "sat"]
    cased_sents = vocabulary_sentences(BPE(), 40, 60, seed=3, cased=True)
    assert any(" Dog" in t for _, t in cased_sents) and all(t[0].isupper() for _, t in cased_sents)
    cased_pool = set(vocabulary_words(BPE(), 60, cased=True))
    for _, t in cased_sents:
        first, *rest = t.rstrip(".").split()
        assert set(rest) <= cased_pool and (first in cased_pool or first.lower() in cased_pool)
    # the default sentences are exactly those of before the option (older configs keep their corpus and digest)
    assert vocabulary_sentences(BPE(), 20, 55, seed=3, cased=False) == sents
    assert all(t == t[0] + t[1:].lower() for _, t in sents)
    cfg = TrainConfig(objective="repeat", vocab_sentences=10)
    assert cfg.digest() == TrainConfig(objective="repeat", vocab_sentences=10, vocab_cased=False).digest()
    assert cfg.digest() != TrainConfig(objective="repeat", vocab_sentences=10, vocab_cased=True).digest()


# ----------------------------------------------------------------------------- monitoring training clips
def test_monitor_reports_training_clips_apart_from_the_held_out_ones(tiny_parts, tmp_path):
    cfg = _cfg(tiny_parts, tmp_path, strategy="frozen", objective="repeat")
    model = build_model(cfg, torch.device("cpu"))
    data = _data(model, objective="repeat")
    ex = data.train[0]
    data.monitor.append(MonitorClip(ex.key, ex.text, "v", ex.states, False, train=True))
    res = make_trainer(cfg, model, data, resume_dir=tmp_path / "r", progress=False).monitor()
    assert (res["n"], res["n_unseen"], res["n_train"]) == (1, 1, 1)  # the held-out groups exclude the training clip
    assert {"agreement_train", "repeat_f1_train"} <= set(res) and 0 <= res["repeat_f1_train"] <= 1
    data.monitor = data.monitor[:2]
    assert "n_train" not in make_trainer(cfg, build_model(cfg, torch.device("cpu")), data, resume_dir=tmp_path / "r2",
                                         progress=False).monitor()


def test_prepare_data_monitors_a_seeded_sample_of_training_clips(tiny_parts, tmp_path, monkeypatch):
    from lsl_core.data.sdqa import SDQAQuestion
    from lsl_core.experiments.train import corpus as C

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    train = [SDQAQuestion(f"t{i}", q, (), "test") for i, q in enumerate(QUESTIONS)]
    monkeypatch.setattr(C, "split_questions", lambda cfg: (train, [SDQAQuestion("v0", "Who painted it?", (), "test")]))
    cfg = _cfg(tiny_parts, tmp_path, strategy="frozen", objective="repeat", voices=("en-gb", "en-us"),
               monitor_train_clips=4)
    model = build_model(cfg, torch.device("cpu"))
    data = C.prepare_data(cfg, model, progress=False)
    picked = [c for c in data.monitor if c.train]
    assert len(picked) == 4 and len(data.monitor) == 2 + 4 and not any(c.unseen for c in picked)
    by_key = {e.key: e for e in data.train}
    for c in picked:  # the clip as trained on: same states, its own text, its voice
        assert c.states is by_key[c.key].states and c.question == by_key[c.key].text and c.key.endswith(c.voice)
    held = [c for c in data.monitor if not c.train]  # encoded in the training clips' call: each its own states
    alone = C.clips_states(model, [(c.key.rsplit("__", 1)[0], c.question, C.Rendition(c.voice)) for c in held])
    assert [c.unseen for c in held] == [False, True] and all(torch.equal(a, c.states) for a, c in zip(alone, held))
    again = C.prepare_data(cfg, model, progress=False)
    assert [c.key for c in again.monitor if c.train] == [c.key for c in picked]  # seeded
    every = C.prepare_data(dataclasses.replace(cfg, monitor_train_clips=50), model, progress=False)
    assert sorted(c.key for c in every.monitor if c.train) == sorted(by_key)  # capped at the training clips


def test_train_cli_overrides_fields_and_monitors_without_training(tiny_parts, tmp_path, capsys, monkeypatch):
    from lsl_core.cli import main
    from lsl_core.experiments.train import parse_sets

    assert parse_sets(["init=a/b", "steps=3", 'voices=["en-us"]', "lr=1e-3"]) == {
        "init": "a/b", "steps": 3, "voices": ["en-us"], "lr": 1e-3}
    with pytest.raises(LSLError, match="FIELD=VALUE"):
        parse_sets(["monitor_train_clips"])
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    cfg = _cfg(tiny_parts, tmp_path, strategy="frozen", objective="repeat", n_questions=2)
    path = tmp_path / "stage.json"
    path.write_text(json.dumps(cfg.to_dict()))
    for bad, why in (("monitor_train_clip=4", "unknown train config field"), ("monitor_train_clips=-1", "must be >= 0")):
        assert main(["train", "--config", str(path), "--set", bad, "--monitor-only", "--no-progress"]) == 2
        assert why in capsys.readouterr().err
    assert main(["train", "--config", str(path), "--workers", "-1", "--monitor-only", "--no-progress"]) == 2
    assert "--workers must be 0 (one per CPU core) or a positive count" in capsys.readouterr().err
    assert main(["train", "--config", str(path), "--encoder-batch", "-2", "--monitor-only", "--no-progress"]) == 2
    assert "--encoder-batch must be 0 (by the device) or a positive count" in capsys.readouterr().err
    assert main(["train", "--config", str(path), "--set", 'voices=["en-us"]', "--set", "monitor_train_clips=2",
                 "--monitor-only", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "data: 2 training clips (2 questions x 1 voices" in out
    assert "monitor of the seeded adaptor (step 0):" in out and "'repeat_f1_train'" in out
    assert not Path(cfg.out).exists()  # nothing trained, nothing written


def _sigint_during_step(monkeypatch, n: int):
    """Trainer.train_step sends this process a SIGINT during optimizer step n (1-based); returns the real one."""
    step = Trainer.train_step

    def interrupted_step(self):
        if self.step == n - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self)

    monkeypatch.setattr(Trainer, "train_step", interrupted_step)
    return step


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_train_cli_ctrl_c_says_where_it_stopped_and_resume_finishes(tiny_parts, tmp_path, capfd, monkeypatch):
    """Ctrl-C during step 2 of 4: a line at once (written to fd 2 from the handler), then one message saying
    where it stopped and how to continue (exit 2); the same command with --resume finishes the stage."""
    from lsl_core.cli import main

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    cfg = _cfg(tiny_parts, tmp_path, strategy="frozen", objective="repeat", n_questions=2, voices=("en-us",), steps=4)
    path = tmp_path / "stage.json"
    path.write_text(json.dumps(cfg.to_dict()))
    step = _sigint_during_step(monkeypatch, 2)
    args = ["train", "--config", str(path), "--no-progress"]
    assert main(args) == 2
    err = capfd.readouterr().err
    assert err.count("SIGINT: stopping after the step in progress") == 1
    assert "Stopped by SIGINT at step 2 of 4" in err and "--resume" in err
    assert not (Path(cfg.out) / "frozen-step0004").exists()
    monkeypatch.setattr(Trainer, "train_step", step)
    assert main(args + ["--resume"]) == 0
    assert "to step 4/4" in capfd.readouterr().out and (Path(cfg.out) / "frozen-step0004").exists()


# ----------------------------------------------------------------------------- a time budget
def test_fitted_steps_by_hand(tiny_parts, tmp_path):
    """steps <= 100, a checkpoint (and monitor) every 10 and at the last step; 5 done, 1 s a step, 2 s a monitor,
    100 s left: the budget is 100 - 15 - 3 = 82 s. N = 71 costs 66 + 2 x 8 monitors (10..70, 71) = 82: fits;
    N = 72 costs 67 + 16 = 83: does not."""
    from lsl_core.experiments.train.trainer import fitted_steps

    cfg = _cfg(tiny_parts, tmp_path, steps=100, save_every=10)
    assert fitted_steps(cfg, 5, 1.0, 2.0, 100.0) == 71
    assert fitted_steps(cfg, 5, 1.0, 0.0, 100.0) == 87  # no monitor cost: 82 more steps
    assert fitted_steps(cfg, 5, 0.001, 2.0, 1e6) == 100  # never above the config's count
    assert fitted_steps(cfg, 5, 1.0, 2.0, 10.0) == 5  # nothing fits: stop where it is
    # a checkpoint costs 2 x the measured resume write (its weights + the resume state), here 2 x 0.5 s: N = 66
    # costs 61 + 2 x 7 monitors (10..60, 66) + 1 x 7 checkpoints = 82: fits; N = 67 costs 83: does not
    assert fitted_steps(cfg, 5, 1.0, 2.0, 100.0, save_sec=0.5) == 66


def test_fit_step_is_inside_warmup_and_before_the_first_checkpoint(tiny_parts, tmp_path):
    from lsl_core.experiments.train.trainer import FIT_AT, fit_step

    assert fit_step(_cfg(tiny_parts, tmp_path, steps=5000, warmup_steps=30, save_every=250)) == FIT_AT
    assert fit_step(_cfg(tiny_parts, tmp_path, steps=8, warmup_steps=6, save_every=3)) == 2  # checkpoint at 3
    assert fit_step(_cfg(tiny_parts, tmp_path, steps=8, warmup_steps=2, save_every=0)) == 2  # warmup ends
    with pytest.raises(LSLError, match="first one at step 1"):
        fit_step(_cfg(tiny_parts, tmp_path, steps=8, warmup_steps=5, save_steps=(1,)))


def test_a_time_budget_run_is_exactly_the_run_of_the_fitted_step_count(tiny_parts, tmp_path, monkeypatch):
    """A deadline run of a config allowing 8 steps, fitted (after step 2, in warmup, before the checkpoint at 3) to
    4 steps, writes the same checkpoints and loss curve as a config saying 4 steps from the start, and records the
    count in its train_config.json; 8 steps from the start give another lr after the warmup. Resuming with a time
    budget, or a budget on a config with no step to fit at, is refused before anything is written."""
    import time

    from lsl_core.experiments.train import trainer as T

    seen = {}

    def four(cfg, done, sec, eval_sec, left, save_sec):
        seen.update(allowed=cfg.steps, done=done, sec=sec, left=left, save_sec=save_sec)
        return 4

    monkeypatch.setattr(T, "fitted_steps", four)
    runs = {}
    for tag, steps, deadline in (("fit", 8, time.time() + 3600), ("four", 4, None), ("eight", 8, None)):
        cfg = _cfg(tiny_parts, tmp_path / tag, "lora", steps=steps, warmup_steps=2, save_every=3)
        model = build_model(cfg, torch.device("cpu"))
        tr = make_trainer(cfg, model, _data(model), resume_dir=cfg.out + "-resume", progress=False, deadline=deadline)
        tr.run()
        runs[tag] = (tr, Path(cfg.out))
    assert seen["allowed"] == 8 and seen["done"] == 2 and seen["sec"] > 0 and 3500 < seen["left"] <= 3600
    assert seen["save_sec"] > 0  # a resume write was timed (in a scratch folder, removed again)
    (fit, fit_out), (four_, four_out) = runs["fit"], runs["four"]
    assert fit.step == four_.step == 4 and fit.cfg.steps == 4
    assert json.loads((fit_out / "train_config.json").read_text())["steps"] == 4
    for step in ("0003", "0004"):
        for rel in ("adaptor.safetensors", "lora/adapter_model.safetensors"):
            ckpt = f"lora-step{step}/{rel}"
            assert (fit_out / ckpt).read_bytes() == (four_out / ckpt).read_bytes(), ckpt

    def rows(folder, kind):
        return [r for r in map(json.loads, (folder / "train_log.jsonl").read_text().splitlines()) if r["kind"] == kind]

    lr4 = {tag: [r["lr"] for r in rows(out, "train") if r["step"] == 4] for tag, (_, out) in runs.items()}
    assert lr4["fit"] == lr4["four"] != lr4["eight"]  # after the warmup the count sets the lr: the fit mattered

    assert [(r["step"], r["loss"]) for r in rows(fit_out, "train")] == [(r["step"], r["loss"])
                                                                         for r in rows(four_out, "train")]
    assert [r["steps"] for r in rows(fit_out, "fit")] == [4] and rows(fit_out, "fit")[0]["step"] == 2
    with pytest.raises(LSLError, match="resumed run keeps the count"):
        fit.run(resume=True)
    cfg = _cfg(tiny_parts, tmp_path / "early", "lora", steps=8, warmup_steps=2, save_steps=(1,))
    model = build_model(cfg, torch.device("cpu"))
    early = make_trainer(cfg, model, _data(model), progress=False, deadline=time.time() + 3600)
    with pytest.raises(LSLError, match="first one at step 1"):
        early.run()
    assert not Path(cfg.out).exists()  # refused before anything was written


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals need the main thread")
def test_train_cli_time_budget_fits_and_says_how_to_resume(tiny_parts, tmp_path, capfd, monkeypatch):
    """A generous budget trains the config's count and says so; one spent by the data names that; with --resume it
    is refused; a run stopped part-way says to resume from the fitted train_config.json."""
    from lsl_core.cli import main

    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    cfg = _cfg(tiny_parts, tmp_path, strategy="frozen", objective="repeat", n_questions=2, voices=("en-us",), steps=4)
    path = tmp_path / "stage.json"
    path.write_text(json.dumps(cfg.to_dict()))
    args = ["train", "--config", str(path), "--no-progress"]
    assert main(args + ["--time-budget", "3600"]) == 0
    out = capfd.readouterr().out
    assert "-> 4 steps (of at most 4)" in out and "to step 4/4" in out
    assert main(args + ["--time-budget", "3600", "--resume"]) == 2
    assert "not with --resume" in capfd.readouterr().err
    assert main(args + ["--time-budget", "0.001"]) == 2
    assert "The time budget was spent before the first step" in capfd.readouterr().err
    step = _sigint_during_step(monkeypatch, 3)
    assert main(args + ["--time-budget", "3600"]) == 2
    err = capfd.readouterr().err
    resume = ["train", "--config", str(Path(cfg.out) / "train_config.json"), "--resume", "--no-progress"]
    assert "Stopped by SIGINT at step 3 of 4" in err and " ".join(resume[1:4]) in err
    monkeypatch.setattr(Trainer, "train_step", step)
    assert main(resume) == 0 and "to step 4/4" in capfd.readouterr().out


def test_stage_clips_speak_each_question_by_every_voice_and_each_extra_text_once_in_turn(tiny_parts, tmp_path):
    """stage_clips, by hand: two questions x three voices, then three extra texts by the voices in turn; the index
    points into items + extra (where prepare_data reads each clip's target)."""
    from lsl_core.experiments.train.corpus import stage_clips

    cfg = _cfg(tiny_parts, tmp_path, voices=["a", "b", "c"])
    items, extra = [("q1", "one?"), ("q2", "two?")], [("x1", "red"), ("x2", "green"), ("x3", "blue")]
    assert stage_clips(cfg, items, extra) == [
        ("q1", "one?", "a", 0), ("q1", "one?", "b", 0), ("q1", "one?", "c", 0),
        ("q2", "two?", "a", 1), ("q2", "two?", "b", 1), ("q2", "two?", "c", 1),
        ("x1", "red", "a", 2), ("x2", "green", "b", 3), ("x3", "blue", "c", 4)]


@pytest.mark.parametrize("field, value, want", [("steps", "many", "an integer"), ("steps", 1.5, "an integer"),
                                                 ("lr", "fast", "a number"), ("voices", "en-us", "a list of strings"),
                                                 ("train_adaptor", "yes", "true or false")])
def test_config_json_of_the_wrong_type_is_one_error_naming_the_field(tmp_path, field, value, want):
    """A JSON value of the wrong type is refused by name and type, never a ValueError traceback from int('many')
    nor a silent string iterated as voices ('en-us' -> 'e', 'n', ...)."""
    data = json.loads((Path(__file__).parents[1] / "configs" / "train" / "1_align_ctc.json").read_text())
    p = tmp_path / "c.json"
    p.write_text(json.dumps({**data, field: value}))
    with pytest.raises(LSLError, match=rf"field '{field}' must be {want}, got"):
        TrainConfig.from_json(p)
