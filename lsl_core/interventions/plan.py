"""Planning (DESIGN §3): resolve an Intervention on one sample's UNEDITED states into an EditPlan.

plan_intervention(iv, states, span, prompt_len) -> EditPlan: which prompt positions to edit and
what the registered op needs there (per-frame text targets or span statistics, `ops.OPERATIONS`).
EditPlan.apply(h [B, T, d]) edits a live hidden-state tensor on the prefill pass only (float32
math, one cast back); the hooks (hooks.py) call it.

Conventions (documented choices where DESIGN leaves freedom):
  - A frame aligned to several targeted tokens is edited once, towards t̃ = t̄/‖t̄‖ · mean_j ‖t_j‖: the
    direction of their mean state t̄ = mean_j t_j with their mean norm (`frame_target`). Angle takes the
    direction of t̄; length a norm the tokens have (‖t̄‖ is smaller than every ‖t_j‖ when their directions
    differ: about ‖t‖/√m for m unrelated tokens). One token: t̃ = t_j; t̄ = 0 (states that cancel exactly):
    the direction of the first token with a state ≠ 0.
  - Explicit / span frames are paired with the tokens whose path picks them; a frame no path
    token picks is paired with its best-matching token (row-wise argmax cosine / argmin distance).
  - Statistics ops (calibrate) edit only the targeted frames, with μ, σ over the whole spans
    (use target "span" to calibrate every frame); with targets frames/span no token is involved.
  - Several plans compose in order: each formula is applied to the (possibly already edited)
    live state, with targets/statistics planned from the unedited states.
  - ℓ ranges over 0..L-1 (hidden_states[L] is after the final norm and feeds no decoder layer).
  - The nulls (config.py): target "random" draws k tokens uniformly without replacement; pairing
    "shuffled" re-pairs every token j with π(j), a random derangement of the transcript's tokens
    (a one-token transcript has nothing to re-pair with and keeps its token); pairing "other" plans
    exactly as "path" but against the donor question's text states (DonorText). The draws come from
    one generator seeded by the transcript's tokens, Ts and ℓ (`null_rng`): fixed per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from lsl_core.errors import LSLError
from lsl_core.interventions.config import Condition, Intervention, parse_condition
from lsl_core.interventions.ops import OPERATIONS, Stats, span_statistics
from lsl_core.metrics.controls import stable_hash
from lsl_core.metrics.tokenwise import (alignment_path, bottom_k_tokens, path_scores, token_cosine_matrix,
                                        token_distance_matrix)

if TYPE_CHECKING:  # pragma: no cover
    from lsl_core.model.lslm import HiddenStates, PromptInputs


# =============================================================================== the nulls' inputs
class DonorText(NamedTuple):
    """Another question's typed transcript as the model sees it (pairing "other"): text [L+1, Tt', d], tokens [Tt']."""

    question: str
    text: Tensor
    tokens: Sequence[str]


def null_rng(tokens: Sequence[str], n_frames: int, layer: int) -> np.random.Generator:
    """The generator of a sample's random null draws: fixed by its transcript tokens, Ts and ℓ."""
    return np.random.default_rng([stable_hash("\x1f".join(tokens)), int(n_frames), int(layer)])


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniform random permutation of range(n) with no fixed point (n >= 2; n = 1 -> [0]): -> int64 [n]."""
    if n < 2:
        return np.arange(n)
    while True:  # rejection: about e tries on average
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm


def frame_target(t: Tensor) -> Tensor:
    """The target of a frame aligned to m tokens: their states t [m, d] -> t̃ [d] = t̄/‖t̄‖ · mean_j ‖t_j‖, float32
    (t̄ = mean_j t_j; t̃ = t_j for m = 1; when t̄ = 0, the first nonzero t_j's direction; 0 when every t_j = 0)."""
    t = t.float()
    if t.shape[0] == 1:
        return t[0]
    norms = torch.linalg.vector_norm(t, dim=-1)  # [m]
    direction = t.mean(0)  # [d] t̄
    if not bool(torch.linalg.vector_norm(direction) > 0):
        nonzero = (norms > 0).nonzero()
        if len(nonzero) == 0:
            return direction  # every state is 0
        direction = t[int(nonzero[0])]
    return direction / torch.linalg.vector_norm(direction) * norms.mean()


# =============================================================================== the plan
@dataclass(frozen=True, eq=False)
class EditPlan:
    """An Intervention resolved on one sample: prompt positions and what to write there.

    frames are query-frame indices (ascending); positions = span_start + frames in the prompt.
    targets [n, d] float32 (ops with inputs "targets"): each frame's target t̃ (`frame_target`: the direction of
    its tokens' mean state, their mean norm).
    stats (ops with inputs "statistics"): μ_s, σ_s, μ_t, σ_t, each [d] float32, over the unedited
    spans at layer ℓ (ops.span_statistics).
    """

    intervention: Intervention
    span_start: int  # first query position in the prompt
    prompt_len: int  # T of the prompt: the hook edits a pass at least this long (the prefill; longer = left padded)
    frames: tuple[int, ...]  # [n] edited query-frame indices
    frame_times: tuple[float, ...]  # [n] start time (s) of each edited frame
    frame_tokens: tuple[tuple[int, ...], ...]  # [n] text tokens each frame is moved towards (targets ops)
    tokens: tuple[int, ...]  # targeted text tokens (bottom-k worst first; else ascending); of the donor for "other"
    token_strings: tuple[str, ...]  # display strings of `tokens`
    targets: Tensor | None = None  # [n, d] float32 t̃ per frame (ops with inputs "targets")
    stats: Stats | None = None  # (μ_s, σ_s, μ_t, σ_t) [d] each (ops with inputs "statistics")
    _device_cache: dict = field(default_factory=dict, repr=False)

    @property
    def layer(self) -> int:
        return self.intervention.layer

    @property
    def positions(self) -> list[int]:
        """Prompt positions of the edited frames."""
        return [self.span_start + f for f in self.frames]

    def _on(self, device: torch.device) -> dict:
        """Index + float32 tensors on `device` (moved once per device)."""
        key = str(device)
        if key not in self._device_cache:
            d = {"pos": torch.tensor(self.positions, dtype=torch.long, device=device)}
            if self.targets is not None:
                d["t"] = self.targets.to(device=device, dtype=torch.float32)
            if self.stats is not None:
                d["stats"] = tuple(x.to(device=device, dtype=torch.float32) for x in self.stats)
            self._device_cache[key] = d
        return self._device_cache[key]

    def edit_rows(self, s: Tensor, dev: dict | None = None) -> Tensor:
        """The registered formula on the edited rows: s [..., n, d] float32 -> s' [..., n, d] float32."""
        dev = dev or self._on(s.device)
        return OPERATIONS[self.intervention.op](s, dev.get("t"), dev.get("stats"))

    def apply(self, h: Tensor, rows: Sequence[int] | None = None) -> Tensor:
        """Live hidden states h [B, T, d] -> edited copy on the prefill pass; h itself otherwise.

        The prefill is a pass with T >= prompt_len; T > prompt_len is a left-padded batch (generation's one
        pad rule, LSLM.generate_ids), where this prompt fills the last prompt_len positions, so the edited
        positions move right by T - prompt_len. A shorter pass (a decode step, T == 1) is never edited.
        rows: the batch rows to edit (None = every row), for several conditions in one batch.
        """
        if not self.frames or h.ndim != 3 or h.shape[1] < self.prompt_len:
            return h  # decode step (T == 1) or nothing to edit
        dev = self._on(h.device)
        pos = dev["pos"] + (h.shape[1] - self.prompt_len)  # [n] shifted by this row's left padding
        if rows is None:
            idx = (slice(None), pos)
        else:
            rows = list(rows)
            if any(not 0 <= r < h.shape[0] for r in rows):
                raise LSLError(f"An edit asks for batch rows {rows}, but this batch has rows 0..{h.shape[0] - 1}; "
                               "pass one row selection per plan, within the batch.")
            idx = (torch.as_tensor(rows, dtype=torch.long, device=h.device)[:, None], pos[None, :])
        s = h[idx].float()  # [B or R, n, d]
        out = h.clone()
        out[idx] = self.edit_rows(s, dev).to(h.dtype)
        return out


def plan_intervention(iv: Intervention, states: "HiddenStates", span: slice, prompt_len: int,
                      donor: DonorText | None = None) -> EditPlan:
    """Resolve an Intervention on one sample's unedited states.

    states.speech [L+1, Ts, d], states.text [L+1, Tt, d] (float32 CPU); span: the speech query
    span in the prompt (its length must be Ts); prompt_len: T of the speech prompt; donor: another
    question's text states [L+1, Tt', d] (needed by pairing "other", which plans against them).
    """
    n_layers = states.speech.shape[0] - 1
    ell = iv.layer
    if ell >= n_layers:
        raise LSLError(
            f"Intervention layer {ell} is out of range: the model has L={n_layers} decoder layers, so ℓ must be "
            f"in 0..{n_layers - 1} (hidden_states[{n_layers}] is after the final norm and feeds no layer)."
        )
    text, text_tokens = states.text, states.tokens
    if iv.pairing == "other":
        if donor is None:
            raise LSLError(f"Intervention {iv.label()!r} edits with another question's text states; pass that "
                           "question (generate_side_by_side(..., donor_question=...); `table1` and `evaluate` take "
                           "the next question of the sample set).")
        text, text_tokens = donor.text, donor.tokens
    hs = states.speech[ell].float()  # [Ts, d]
    ht = text[ell].float()  # [Tt, d] (the donor's Tt' for pairing "other")
    ts, tt = hs.shape[0], ht.shape[0]
    if span.stop - span.start != ts:
        raise LSLError(
            f"The speech span holds {span.stop - span.start} positions but the states have Ts={ts} frames; "
            "pass the HiddenStates computed for this sample's audio."
        )
    mat_fn = token_cosine_matrix if iv.metric == "cosine" else token_distance_matrix
    A = mat_fn(hs[None], ht[None])  # [1, Ts, Tt]
    path = alignment_path(A, iv.metric)  # [1, Tt]

    rng = null_rng(text_tokens, ts, ell)
    if iv.target in ("bottom", "all", "random"):
        if iv.target == "bottom":
            tokens = bottom_k_tokens(path_scores(A, path)[0], iv.k, iv.metric).tolist()  # worst first
        elif iv.target == "random":
            tokens = sorted(rng.choice(tt, size=min(iv.k, tt), replace=False).tolist())
        else:
            tokens = list(range(tt))
        by_frame: dict[int, list[int]] = {}
        for j in tokens:
            by_frame.setdefault(int(path[0, j]), []).append(j)
    else:
        frames_req = list(range(ts)) if iv.target == "span" else list(iv.frames)
        bad = [f for f in frames_req if f >= ts]
        if bad:
            raise LSLError(
                f"Intervention frames {bad} are outside the speech span (Ts={ts} frames, indices 0..{ts - 1})."
            )
        best = A[0].argmax(dim=1) if iv.metric == "cosine" else A[0].argmin(dim=1)  # [Ts] best token per frame
        by_frame = {}
        for f in frames_req:
            on_path = [j for j in range(tt) if int(path[0, j]) == f]
            by_frame[f] = on_path or [int(best[f])]
        tokens = sorted({j for js in by_frame.values() for j in js})

    frames = sorted(by_frame)
    if iv.pairing == "shuffled":  # frame i*_j takes token π(j)'s state; same frames, alignment broken
        perm = derangement(tt, rng)
        by_frame = {f: [int(perm[j]) for j in js] for f, js in by_frame.items()}
    frame_tokens = tuple(tuple(sorted(by_frame[f])) for f in frames)
    op = OPERATIONS[iv.op]
    if op.inputs == "statistics" and iv.target in ("frames", "span"):
        tokens, frame_tokens = [], tuple(() for _ in frames)  # no token is involved in the edit
    targets = stats = None
    if op.inputs == "statistics":
        stats = span_statistics(hs, ht)  # [d] each
    elif frames:
        targets = torch.stack([frame_target(ht[list(js)]) for js in frame_tokens])  # [n, d] t̃ per frame
    else:
        targets = ht.new_zeros((0, ht.shape[1]))  # [0, d]
    times = tuple(float(states.frame_times[f]) for f in frames)
    strings = tuple(text_tokens[j] for j in tokens)
    return EditPlan(iv, span.start, prompt_len, tuple(frames), times, frame_tokens, tuple(tokens), strings,
                    targets, stats)


def plan_interventions(cond: Condition, states: "HiddenStates", prompt: "PromptInputs",
                       donor: DonorText | None = None) -> list[EditPlan]:
    """Plans for a condition (one or several interventions, in order) on the speech prompt."""
    return [plan_intervention(iv, states, prompt.span, prompt.inputs_embeds.shape[1], donor)
            for iv in parse_condition(cond)]


def needs_donor(conds: Sequence[Condition]) -> bool:
    """Whether any intervention of these conditions edits with another question's states (pairing "other")."""
    return any(iv.pairing == "other" for c in conds for iv in parse_condition(c))
