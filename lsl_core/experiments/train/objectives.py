"""Training objectives, one function each (the curriculum's stages; see config.py).

ctc_alignment_loss   speech frames h [Ts, d] (adaptor output) are scored against the frozen LLM
                     input-embedding table E [V, d] and a learned blank vector b [d]:
                         logits_i = τ · [cos(h_i, b), cos(h_i, E_1), ..., cos(h_i, E_V)]   [Ts, V+1]
                     CTC (blank = class 0) over the question's token ids, per-token normalised, plus
                     λ · mean_i (‖h_i‖ / m − 1)², m = mean ‖E_v‖, so frames take the direction of the
                     spoken tokens' embeddings at an embedding's norm. No LLM pass: a step costs the
                     adaptor and one [N, d] x [d, V] product.
response_loss        cross-entropy of the LLM on response tokens after the speech query, in the
                     checkpoint's prompt template (lsl_core.model.batch.response_batch/response_loss);
                     the `repeat` and `qa` objectives differ only in the response and the template.
distillation_loss    qa with distill_weight > 0 (DiVA / BLSP-KD style): the teacher is the backbone reading the
                     typed question, the student the same backbone hearing it; over the response tokens r_t,
                         KL(p_teacher(. | text, r_<t) || p_student(. | speech, r_<t)), mean over tokens,
                     so the speech path learns the whole next-token distribution, not only its argmax.
sequence_alignment_loss
                     qa with align_weight > 0 (align_loss "cosine"): the paper's sequence-level alignment made a
                     loss. With h̄_l = the mean of layer l's states over the query span, student hearing the
                     question, teacher (no grad) reading it typed:  mean over layers l = 1..L and clips of
                         1 − cos(h̄_l^speech, h̄_l^text),
                     i.e. one minus the sequence cosine f_cos of metrics.sequence, averaged as the app averages it.
sequence_contrastive_loss
                     align_loss "contrastive": only the part of that cosine specific to the question counts. Per
                     layer, each clip's speech mean must pick its own typed question among the batch's (InfoNCE):
                         mean_l,i −log softmax_j(cos(h̄_l,i^speech, h̄_l,j^text) / τ)[i],
                     other clips of the same question left out of the candidates (speech -> text retrieval,
                     the controls' top-1, made a loss).
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lsl_core.errors import LSLError
from lsl_core.model import batch as B
from lsl_core.model.lslm import LSLM


class CTCHead(nn.Module):
    """Cosine scores of frames against the LLM's own input embeddings plus one learned blank vector."""

    def __init__(self, embeddings: Tensor, temperature: float = 20.0, norm_weight: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        E = embeddings.detach().float()  # [V, d]
        self.register_buffer("unit", F.normalize(E, dim=-1), persistent=False)  # [V, d]
        self.mean_norm = float(E.norm(dim=-1).mean())
        g = torch.Generator().manual_seed(seed)
        self.blank = nn.Parameter(torch.randn(E.shape[1], generator=g) * 0.02)  # [d]
        self.temperature = float(temperature)
        self.norm_weight = float(norm_weight)

    def logits(self, h: Tensor) -> Tensor:
        """Frames h [N, d] -> logits [N, V+1] (class 0 = blank, class v+1 = token v)."""
        hn = F.normalize(h.float(), dim=-1)  # [N, d]
        lb = hn @ F.normalize(self.blank, dim=0)[:, None]  # [N, 1]
        lv = hn @ self.unit.T  # [N, V]
        return self.temperature * torch.cat([lb, lv], dim=-1)  # [N, V+1]

    def greedy(self, h: Tensor) -> list[int]:
        """Best-path decoding of frames h [Ts, d]: collapse repeats, drop blanks -> token ids."""
        best = self.logits(h).argmax(-1).tolist()  # [Ts]
        out, prev = [], None
        for c in best:
            if c != prev and c != 0:
                out.append(c - 1)
            prev = c
        return out


def load_ctc_head(checkpoint: str | Path, embeddings: Tensor) -> CTCHead:
    """The head a ctc stage saved with `checkpoint` (its learned blank [d], temperature and norm weight), over
    the LLM's input embeddings [V, d] (the frozen table it was trained against), in eval mode."""
    from safetensors import safe_open

    from lsl_core.experiments.train.checkpoints import CTC_HEAD_NAME

    path = Path(checkpoint) / CTC_HEAD_NAME
    if not path.is_file():
        raise LSLError(f"{checkpoint} has no {CTC_HEAD_NAME}: only checkpoints of a ctc stage keep their CTC head "
                       "(and only those trained since heads were saved); retrain that stage to decode it.")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        blank = f.get_tensor("blank")  # [d]
    if blank.shape != (embeddings.shape[1],):
        raise LSLError(f"{path} holds a blank of shape {tuple(blank.shape)}; the LLM's embeddings are "
                       f"{tuple(embeddings.shape)}: load the checkpoint's own LLM.")
    head = CTCHead(embeddings, float(meta["temperature"]), float(meta["norm_weight"]))
    with torch.no_grad():
        head.blank.copy_(blank)
    return head.to(embeddings.device).eval()


def ctc_alignment_loss(head: CTCHead, frames: Sequence[Tensor], targets: Sequence[Sequence[int]]) -> Tensor:
    """Mean over clips of CTC(frames_i [Ts_i, d], token ids_i) / len(ids_i) + the norm term (scalar).

    A clip whose frames cannot hold its tokens (CTC needs Ts >= len + repeats) contributes 0
    (zero_infinity) rather than inf.
    """
    assert len(frames) == len(targets) and frames, "one target sequence per clip"
    lengths = [f.shape[0] for f in frames]
    logp = F.log_softmax(head.logits(torch.cat(list(frames), 0)), dim=-1)  # [N, V+1]
    T = max(lengths)
    padded = logp.new_zeros(T, len(frames), logp.shape[1])  # [T, B, V+1] (CTC's time-major layout)
    start = 0
    for b, n in enumerate(lengths):
        padded[:n, b] = logp[start:start + n]
        start += n
    tgt = torch.tensor([t + 1 for ids in targets for t in ids], dtype=torch.long)  # tokens shifted past blank
    tgt_len = torch.tensor([len(ids) for ids in targets], dtype=torch.long)
    ctc = F.ctc_loss(padded, tgt, torch.tensor(lengths), tgt_len, blank=0, reduction="none", zero_infinity=True)  # [B]
    ctc = (ctc / tgt_len.clamp_min(1).float()).mean()
    h = torch.cat(list(frames), 0).float()  # [N, d]
    norm = ((h.norm(dim=-1) / head.mean_norm - 1) ** 2).mean()
    return ctc + head.norm_weight * norm


def response_loss(model: LSLM, queries: Sequence[Tensor], responses: Sequence[Sequence[int]]) -> Tensor:
    """Mean cross-entropy over the response tokens after each query [Tq_i, d] (scalar, float32)."""
    return B.response_loss(model, B.response_batch(model, list(queries), [list(r) for r in responses]))


class PairedLosses(NamedTuple):
    """The loss terms of one student forward on speech paired with a teacher forward on the typed questions."""

    ce: Tensor  # mean cross-entropy of the student over the response tokens (scalar, float32)
    kl: Tensor | None  # mean KL(teacher || student) over response tokens, when asked
    align: Tensor | None  # the alignment loss of the two query spans' means, when asked


def span_means(states: Sequence[Tensor], start: int, lengths: Sequence[int]) -> Tensor:
    """Per-layer states (L+1 tensors [B, T, d], right-padded rows whose query span is [start, start + lengths_b))
    -> the mean state of each row's query span at layers 1..L, [L, B, d] float32 (grad flows)."""
    h = torch.stack(list(states[1:]))  # [L, B, T, d]
    T = h.shape[2]
    idx = torch.arange(T, device=h.device)
    n = torch.as_tensor(list(lengths), device=h.device)
    mask = ((idx[None] >= start) & (idx[None] < start + n[:, None])).to(torch.float32)  # [B, T]
    return torch.einsum("lbtd,bt->lbd", h.float(), mask) / n[None, :, None].float()


def sequence_alignment_loss(speech_means: Tensor, text_means: Tensor) -> Tensor:
    """Mean over layers and clips of 1 − cos(h̄^speech, h̄^text) for span means [L, B, d] each (scalar)."""
    return (1 - F.cosine_similarity(speech_means, text_means, dim=-1)).mean()


def sequence_contrastive_loss(speech_means: Tensor, text_means: Tensor, questions: Sequence[str],
                              temperature: float = 0.1) -> Tensor:
    """InfoNCE of speech -> typed question over the batch, per layer, for span means [L, B, d] (scalar): mean over
    layers and clips of the cross-entropy of softmax_j(cos(s_i, t_j) / temperature) at j = i; clips j != i of
    the same question are no candidates."""
    s = F.normalize(speech_means, dim=-1)  # [L, B, d]
    t = F.normalize(text_means, dim=-1)  # [L, B, d]
    logits = torch.einsum("lid,ljd->lij", s, t) / temperature  # [L, B, B]
    q = list(questions)
    same = torch.tensor([[a == b and i != j for j, b in enumerate(q)] for i, a in enumerate(q)], device=s.device)
    logits = logits.masked_fill(same[None], float("-inf"))
    L, n = logits.shape[:2]
    target = torch.arange(n, device=s.device).repeat(L)  # [L*B]
    return F.cross_entropy(logits.reshape(L * n, n), target)


def paired_losses(student: LSLM, teacher: LSLM, speech: Sequence[Tensor], text: Sequence[Tensor],
                  responses: Sequence[Sequence[int]], teacher_context=None, *, kl: bool = True,
                  align: Callable[[Tensor, Tensor], Tensor] | None = None) -> PairedLosses:
    """One student forward on the speech queries [Ts_i, d] and one teacher forward (no grad, inside
    `teacher_context`, e.g. peft's disable_adapter) on the typed queries [Tt_i, d], both followed by the same
    responses: the student's cross-entropy (= response_loss), with kl the mean over response tokens of
    KL(teacher || student) (the two batches' response positions pair up in order), with align that function of
    the two query spans' per-layer means [L, B, d] (speech, text), e.g. sequence_alignment_loss."""
    resp = [list(r) for r in responses]
    want = align is not None
    with torch.no_grad(), (teacher_context if teacher_context is not None else nullcontext()):
        t = B.response_forward(teacher, B.response_batch(teacher, list(text), resp), hidden_states=want, logits=kl)
        t_means = span_means(t.hidden_states, len(teacher.prefix_ids), [q.shape[0] for q in text]) if want else None
    s = B.response_forward(student, B.response_batch(student, list(speech), resp), hidden_states=want)
    assert torch.equal(t.target, s.target), "teacher and student batches must hold the same response tokens"
    s_logp = F.log_softmax(s.logits, dim=-1)  # [N, V]
    div = F.kl_div(s_logp, F.log_softmax(t.logits, dim=-1), log_target=True, reduction="batchmean") if kl else None
    al = None
    if want:
        al = align(span_means(s.hidden_states, len(student.prefix_ids), [q.shape[0] for q in speech]), t_means)
    return PairedLosses(F.nll_loss(s_logp, s.target), div, al)


def distillation_loss(student: LSLM, teacher: LSLM, speech: Sequence[Tensor], text: Sequence[Tensor],
                      responses: Sequence[Sequence[int]], teacher_context=None) -> tuple[Tensor, Tensor]:
    """(cross-entropy, KL) over the response tokens from one student forward (scalars, float32): paired_losses
    with kl only."""
    out = paired_losses(student, teacher, speech, text, responses, teacher_context)
    return out.ce, out.kl


def token_error_rate(hyps: Sequence[Sequence[int]], refs: Sequence[Sequence[int]]) -> float:
    """Levenshtein distance summed over clips / reference tokens summed (0 = every token right)."""
    errors = total = 0
    for h, r in zip(hyps, refs):
        prev = list(range(len(h) + 1))
        for i, rt in enumerate(r, 1):
            cur = [i] + [0] * len(h)
            for j, ht in enumerate(h, 1):
                cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rt != ht))
            prev = cur
        errors += prev[-1]
        total += len(r)
    return errors / max(1, total)
