"""Interventions (DESIGN §3): edit speech positions at layer ℓ during prefill, then generate.

For a speech frame s (a row of the speech query span at layer ℓ) and its aligned text token t:

    angle      s' = ‖s‖ · t/‖t‖                  direction of t, norm of s
    length     s' = s · ‖t‖/‖s‖                  norm of t, direction of s
    calibrate  s' = (s − μ_s)/σ_s · σ_t + μ_t    per dimension; μ, σ over the whole query span

The pieces, read top-down (pyvene habit: an intervention is data, resolved through one hook site):
  Intervention      what to do: op, target (bottom-k | all | explicit frames | span), layer ℓ, path metric.
                    `Intervention.parse("angle:bottom3@0")` / `.label()` round-trip for CLI and URLs.
  plan_intervention resolve an Intervention on one sample's UNEDITED states (HiddenStates at layer ℓ)
                    into an EditPlan: which prompt positions, which target vectors / statistics.
  EditPlan.apply    the formula on a live hidden-state tensor [B, T, d] (float32 math, cast back).
  intervention_hooks  a context manager registering one forward pre-hook per plan on
                    decoder_layers()[ℓ] (which receives hidden_states[ℓ]); the hook edits only the
                    prefill pass (sequence length == prompt length; decode steps have length 1), so
                    the KV cache carries the edit into decoding and decoding itself is never edited.
                    It removes exactly its own handles in `finally`, also on error.
  generate_side_by_side  text / speech / cascade / one answer per intervention, scored.

Conventions (documented choices where DESIGN leaves freedom):
  - Targets. "bottom" = the path frames i*_j of the k text tokens with the lowest path score at
    layer ℓ (highest distance for the distance metric; `metrics.tokenwise.bottom_k_tokens`);
    "all" = the path frames of every text token; "frames" = explicit query-frame indices;
    "span" = every speech frame of the query.
  - A frame aligned to several targeted tokens is edited once, towards the MEAN of its tokens'
    text states t̄ = mean_j t_j (angle uses the direction of t̄, length its norm ‖t̄‖).
  - Explicit / span frames are paired with the tokens whose path picks them; a frame no path
    token picks is paired with its best-matching token (row-wise argmax cosine / argmin distance).
  - calibrate: μ, σ are per-dimension mean and population std (correction 0) over the whole
    speech span and the whole text span at layer ℓ of the unedited states; it edits only the
    targeted frames (use target "span" to calibrate every frame).
  - eps-guards: angle keeps s when ‖t̄‖ = 0, length keeps s when ‖s‖ = 0, σ_s is clamped to 1e-6.
  - Several plans compose in order: each formula is applied to the (possibly already edited)
    live state, with targets/statistics planned from the unedited states.
  - ℓ ranges over 0..L-1 (hidden_states[L] is after the final norm and feeds no decoder layer).
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator, Literal, Sequence, Union

import torch
from torch import Tensor

from lsl_core.errors import LSLError
from lsl_core.metrics.tokenwise import (alignment_path, bottom_k_tokens, path_scores, token_cosine_matrix,
                                        token_distance_matrix)

if TYPE_CHECKING:  # pragma: no cover
    from lsl_core.data.samples import Sample
    from lsl_core.model.lslm import LSLM, HiddenStates, PromptInputs

Op = Literal["angle", "length", "calibrate"]
Target = Literal["bottom", "all", "frames", "span"]
PathMetric = Literal["cosine", "distance"]
OPS: tuple[str, ...] = ("angle", "length", "calibrate")
TARGETS: tuple[str, ...] = ("bottom", "all", "frames", "span")
PATH_METRICS: tuple[str, ...] = ("cosine", "distance")
SIGMA_EPS = 1e-6  # floor for σ_s in calibrate (a constant dimension maps onto μ_t)
GRAMMAR = ("op:target[@layer][:metric], e.g. angle:bottom3@0, angle:all, length:bottom5@4:distance, "
           "calibrate:frames=1,2,3")


# =============================================================================== the config
@dataclass(frozen=True)
class Intervention:
    """One edit of speech positions at layer ℓ during prefill (data only; see module docstring)."""

    op: Op = "angle"  # angle: take t's direction; length: take t's norm; calibrate: match span mean/std
    target: Target = "bottom"  # which frames: bottom-k path frames, all path frames, explicit frames, whole span
    k: int = 3  # number of least-aligned text tokens for target "bottom" (k = 0 edits nothing)
    frames: tuple[int, ...] = ()  # query-frame indices (0-based, inside the speech span) for target "frames"
    layer: int = 0  # ℓ: edit the input of decoder layer ℓ = hidden_states[ℓ]; 0 = the LLM input embeddings
    metric: PathMetric = "cosine"  # path metric choosing i*_j and the bottom-k scores

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise LSLError(f"Intervention.op must be one of {OPS}, got {self.op!r}.")
        if self.target not in TARGETS:
            raise LSLError(f"Intervention.target must be one of {TARGETS}, got {self.target!r}.")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise LSLError(f"Intervention.k must be a non-negative integer (3 for Bottom3), got {self.k!r}.")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise LSLError(f"Intervention.layer must be a non-negative integer (0 = LLM input), got {self.layer!r}.")
        if self.metric not in PATH_METRICS:
            raise LSLError(f"Intervention.metric must be 'cosine' or 'distance', got {self.metric!r}.")
        frames = tuple(self.frames)
        if any(isinstance(f, bool) or not isinstance(f, int) or f < 0 for f in frames):
            raise LSLError(f"Intervention.frames must be non-negative integer frame indices, got {self.frames!r}.")
        if self.target == "frames" and not frames:
            raise LSLError("Intervention.frames is empty; target 'frames' needs at least one frame index.")
        if self.target != "frames" and frames:
            raise LSLError(f"Intervention.frames is only used with target 'frames' (target is {self.target!r}).")
        object.__setattr__(self, "frames", tuple(sorted(set(frames))))

    # ------------------------------------------------------------------ text round-trip
    @classmethod
    def parse(cls, spec: str) -> "Intervention":
        """'angle:bottom3@0' | 'angle:all' | 'length:bottom5@4:distance' | 'calibrate:frames=1,2,3' -> Intervention."""
        if isinstance(spec, Intervention):
            return spec
        text = str(spec).strip().lower().replace(" ", "")
        parts = text.split(":")
        if len(parts) < 2 or len(parts) > 3 or not parts[1]:
            raise LSLError(f"Cannot parse intervention {spec!r}; expected {GRAMMAR}.")
        op, target_part = parts[0], parts[1]
        metric = "cosine"
        layer = 0
        if len(parts) == 3:
            metric_part = parts[2]
            if "@" in metric_part:  # tolerate 'angle:all:distance@4'
                metric_part, layer_s = metric_part.split("@", 1)
                layer = _parse_int(layer_s, "layer", spec)
            metric = metric_part
            if metric not in PATH_METRICS:
                raise LSLError(f"Intervention {spec!r}: metric must be 'cosine' or 'distance', got {metric!r}.")
        if "@" in target_part:
            target_part, layer_s = target_part.split("@", 1)
            layer = _parse_int(layer_s, "layer", spec)
        if op not in OPS:
            raise LSLError(f"Intervention {spec!r}: op must be one of {OPS}, got {op!r}; expected {GRAMMAR}.")
        k, frames = 3, ()
        m = re.fullmatch(r"bottom(\d*)", target_part)
        if m:
            target = "bottom"
            k = int(m.group(1)) if m.group(1) else 3
        elif target_part in ("all", "span"):
            target = target_part
        elif target_part.startswith("frames="):
            target = "frames"
            items = [x for x in target_part[len("frames="):].split(",") if x]
            frames = tuple(_parse_int(x, "frame index", spec) for x in items)
        else:
            raise LSLError(
                f"Intervention {spec!r}: target must be bottomK, all, span or frames=i,j,..., got {target_part!r}."
            )
        return cls(op=op, target=target, k=k, frames=frames, layer=layer, metric=metric)

    def label(self) -> str:
        """Canonical text form, parse(label()) == self: 'angle:bottom3', 'length:all@4:distance'."""
        if self.target == "bottom":
            tgt = f"bottom{self.k}"
        elif self.target == "frames":
            tgt = "frames=" + ",".join(str(f) for f in self.frames)
        else:
            tgt = self.target
        out = f"{self.op}:{tgt}"
        if self.layer:
            out += f"@{self.layer}"
        if self.metric != "cosine":
            out += f":{self.metric}"
        return out

    def title(self) -> str:
        """Display name in the seed paper's Table 1 style: 'Angle·Bottom3', 'Length·All @ℓ4 (distance)'."""
        if self.target == "bottom":
            tgt = f"Bottom{self.k}"
        elif self.target == "frames":
            tgt = "Frames[" + ",".join(str(f) for f in self.frames) + "]"
        else:
            tgt = self.target.capitalize()
        out = f"{self.op.capitalize()}·{tgt}"
        if self.layer:
            out += f" @ℓ{self.layer}"
        if self.metric != "cosine":
            out += f" ({self.metric})"
        return out


def _parse_int(s: str, what: str, spec: str) -> int:
    if not re.fullmatch(r"\d+", s or ""):
        raise LSLError(f"Intervention {spec!r}: {what} must be a non-negative integer, got {s!r}; expected {GRAMMAR}.")
    return int(s)


# A condition is one intervention or several composed in order (label 'a+b').
Condition = Union[Intervention, str, Sequence[Union[Intervention, str]]]


def parse_condition(cond: Condition) -> tuple[Intervention, ...]:
    """'angle:bottom3+length:all' / Intervention / [Intervention | str, ...] -> interventions in order."""
    if isinstance(cond, Intervention):
        return (cond,)
    if isinstance(cond, str):
        parts = [p for p in cond.split("+") if p.strip()]
        if not parts:
            raise LSLError(f"Empty intervention condition {cond!r}; expected {GRAMMAR} (join several with '+').")
        return tuple(Intervention.parse(p) for p in parts)
    out = tuple(iv for c in cond for iv in parse_condition(c))
    if not out:
        raise LSLError("An intervention condition holds no intervention.")
    return out


def condition_label(cond: Condition) -> str:
    """Canonical text of a condition: labels joined by '+'."""
    return "+".join(iv.label() for iv in parse_condition(cond))


def condition_title(cond: Condition) -> str:
    """Display name of a condition: titles joined by ' + '."""
    return " + ".join(iv.title() for iv in parse_condition(cond))


# =============================================================================== the plan
@dataclass(frozen=True, eq=False)
class EditPlan:
    """An Intervention resolved on one sample: prompt positions and what to write there.

    frames are query-frame indices (ascending); positions = span_start + frames in the prompt.
    targets [n, d] float32 (angle/length): the mean text state t̄ of each frame's tokens.
    stats (calibrate): μ_s, σ_s, μ_t, σ_t, each [d] float32, over the unedited spans at layer ℓ.
    """

    intervention: Intervention
    span_start: int  # first query position in the prompt
    prompt_len: int  # T of the prompt: the hook edits only a pass of this length (the prefill)
    frames: tuple[int, ...]  # [n] edited query-frame indices
    frame_times: tuple[float, ...]  # [n] start time (s) of each edited frame
    frame_tokens: tuple[tuple[int, ...], ...]  # [n] text tokens each frame is moved towards (angle/length)
    tokens: tuple[int, ...]  # targeted text tokens (bottom-k worst first; else ascending)
    token_strings: tuple[str, ...]  # display strings of `tokens`
    targets: Tensor | None = None  # [n, d] float32 (angle, length)
    stats: tuple[Tensor, Tensor, Tensor, Tensor] | None = None  # (μ_s, σ_s, μ_t, σ_t) [d] each (calibrate)
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
        """The formula on the edited rows: s [..., n, d] float32 -> s' [..., n, d] float32."""
        dev = dev or self._on(s.device)
        op = self.intervention.op
        if op == "calibrate":
            mu_s, sd_s, mu_t, sd_t = dev["stats"]
            return (s - mu_s) / sd_s.clamp_min(SIGMA_EPS) * sd_t + mu_t
        t = dev["t"]  # [n, d]
        norm_s = torch.linalg.vector_norm(s, dim=-1, keepdim=True)  # [..., n, 1]
        norm_t = torch.linalg.vector_norm(t, dim=-1, keepdim=True)  # [n, 1]
        if op == "angle":
            edited = norm_s * t / torch.where(norm_t > 0, norm_t, torch.ones_like(norm_t))
            return torch.where(norm_t > 0, edited, s)
        edited = s * norm_t / torch.where(norm_s > 0, norm_s, torch.ones_like(norm_s))  # length
        return torch.where(norm_s > 0, edited, s)

    def apply(self, h: Tensor, rows: Sequence[int] | None = None) -> Tensor:
        """Live hidden states h [B, T, d] -> edited copy on the prefill pass; h itself otherwise.

        rows: the batch rows to edit (None = every row), for several conditions in one batch.
        """
        if not self.frames or h.ndim != 3 or h.shape[1] != self.prompt_len:
            return h  # decode step (T == 1) or nothing to edit
        dev = self._on(h.device)
        pos = dev["pos"]  # [n]
        if rows is None:
            idx = (slice(None), pos)
        else:
            idx = (torch.as_tensor(list(rows), dtype=torch.long, device=h.device)[:, None], pos[None, :])
        s = h[idx].float()  # [B or R, n, d]
        out = h.clone()
        out[idx] = self.edit_rows(s, dev).to(h.dtype)
        return out


def plan_intervention(iv: Intervention, states: "HiddenStates", span: slice, prompt_len: int) -> EditPlan:
    """Resolve an Intervention on one sample's unedited states.

    states.speech [L+1, Ts, d], states.text [L+1, Tt, d] (float32 CPU); span: the speech query
    span in the prompt (its length must be Ts); prompt_len: T of the speech prompt.
    """
    n_layers = states.speech.shape[0] - 1
    ell = iv.layer
    if ell >= n_layers:
        raise LSLError(
            f"Intervention layer {ell} is out of range: the model has L={n_layers} decoder layers, so ℓ must be "
            f"in 0..{n_layers - 1} (hidden_states[{n_layers}] is after the final norm and feeds no layer)."
        )
    hs = states.speech[ell].float()  # [Ts, d]
    ht = states.text[ell].float()  # [Tt, d]
    ts, tt = hs.shape[0], ht.shape[0]
    if span.stop - span.start != ts:
        raise LSLError(
            f"The speech span holds {span.stop - span.start} positions but the states have Ts={ts} frames; "
            "pass the HiddenStates computed for this sample's audio."
        )
    mat_fn = token_cosine_matrix if iv.metric == "cosine" else token_distance_matrix
    A = mat_fn(hs[None], ht[None])  # [1, Ts, Tt]
    path = alignment_path(A, iv.metric)  # [1, Tt]

    if iv.target in ("bottom", "all"):
        if iv.target == "bottom":
            tokens = bottom_k_tokens(path_scores(A, path)[0], iv.k, iv.metric).tolist()  # worst first
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
    frame_tokens = tuple(tuple(sorted(by_frame[f])) for f in frames)
    if iv.op == "calibrate" and iv.target in ("frames", "span"):
        tokens, frame_tokens = [], tuple(() for _ in frames)  # no token is involved in the edit
    targets = stats = None
    if iv.op == "calibrate":
        stats = (hs.mean(0), hs.std(0, correction=0), ht.mean(0), ht.std(0, correction=0))  # [d] each
    elif frames:
        targets = torch.stack([ht[list(js)].mean(0) for js in frame_tokens])  # [n, d] mean t̄ per frame
    else:
        targets = ht.new_zeros((0, ht.shape[1]))
    times = tuple(float(states.frame_times[f]) for f in frames)
    strings = tuple(states.tokens[j] for j in tokens)
    return EditPlan(iv, span.start, prompt_len, tuple(frames), times, frame_tokens, tuple(tokens), strings,
                    targets, stats)


def plan_interventions(cond: Condition, states: "HiddenStates", prompt: "PromptInputs") -> list[EditPlan]:
    """Plans for a condition (one or several interventions, in order) on the speech prompt."""
    return [plan_intervention(iv, states, prompt.span, prompt.inputs_embeds.shape[1]) for iv in parse_condition(cond)]


# =============================================================================== the hooks
def _prefill_hook(plan: EditPlan, rows: Sequence[int] | None = None):
    """A forward pre-hook (with_kwargs=True) editing hidden_states, positional or keyword."""

    def hook(module, args, kwargs):
        if args:
            h = args[0]
            new = plan.apply(h, rows)
            return None if new is h else ((new, *args[1:]), kwargs)
        if "hidden_states" in kwargs:
            h = kwargs["hidden_states"]
            new = plan.apply(h, rows)
            return None if new is h else (args, {**kwargs, "hidden_states": new})
        raise LSLError(
            f"Decoder layer {type(module).__name__} was called without hidden_states (positional or keyword); "
            "this backbone's layer signature is not supported by interventions."
        )

    return hook


@contextmanager
def intervention_hooks(model: "LSLM", plans: Sequence[EditPlan],
                       rows: Sequence[Sequence[int] | None] | None = None) -> Iterator[list[EditPlan]]:
    """Register one prefill pre-hook per plan (in order) on decoder_layers()[ℓ]; remove them on exit.

    Use as `model.generate_from_prompt(prompt, edit=intervention_hooks(model, plans))`. Only the
    handles registered here are removed, always (also when generation raises). rows[i] restricts
    plan i to those batch rows (None: every row).
    """
    layers = model.decoder_layers()
    rows = list(rows) if rows is not None else [None] * len(plans)
    if len(rows) != len(plans):
        raise LSLError(f"intervention_hooks got {len(plans)} plans but {len(rows)} row selections; pass one per plan.")
    for p in plans:
        if not 0 <= p.layer < len(layers):
            raise LSLError(f"Intervention layer {p.layer} is out of range 0..{len(layers) - 1} for this model.")
    handles = []
    try:
        for p, r in zip(plans, rows):
            handles.append(layers[p.layer].register_forward_pre_hook(_prefill_hook(p, r), with_kwargs=True))
        yield list(plans)
    finally:
        for h in handles:
            h.remove()


def generate_with_interventions(model: "LSLM", prompt: "PromptInputs", plans: Sequence[EditPlan],
                                max_new_tokens: int = 40, **gen_kwargs) -> str:
    """Greedy answer for the speech prompt with the plans applied during prefill."""
    return model.generate_from_prompt(prompt, max_new_tokens, edit=intervention_hooks(model, plans), **gen_kwargs)


@torch.no_grad()
def generate_conditions(model: "LSLM", prompt: "PromptInputs", conditions: Sequence[Sequence[EditPlan]],
                        max_new_tokens: int = 40, **gen_kwargs) -> list[str]:
    """One greedy answer per condition, all conditions in ONE batch (row b edited by conditions[b]).

    The prompt [1, T, d] is repeated to [B, T, d] (same length, no padding); an empty condition is
    the unedited prompt. Rows of one batch are computed alike, but batched kernels can round
    differently from a batch of 1, so in rare near-ties an answer may differ from
    generate_with_interventions (used by the app's side-by-side view, which is exact).
    """
    B = len(conditions)
    if B == 0:
        return []
    x = prompt.inputs_embeds.expand(B, -1, -1)  # [B, T, d] (a view; the hooks edit a copy)
    mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
    plans = [p for c in conditions for p in c]
    rows = [[b] for b, c in enumerate(conditions) for _ in c]
    kwargs = dict(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                  pad_token_id=model.tokenizer.pad_token_id or model.tokenizer.eos_token_id)
    kwargs.update(gen_kwargs)
    with model.lock, intervention_hooks(model, plans, rows):
        out = model.llm.generate(inputs_embeds=x, attention_mask=mask, **kwargs)  # [B, new]
    return [model.tokenizer.decode(o, skip_special_tokens=True).strip() for o in out]


# =============================================================================== side by side
@dataclass(frozen=True, eq=False)
class ConditionAnswer:
    """One answer of the side-by-side view, scored against the references and the text answer."""

    condition: str  # "text" | "speech" | "cascade" | an intervention label ('angle:bottom3', 'a+b')
    title: str  # display name ('Text', 'Speech', 'Cascade (ASR → LLM)', 'Angle·Bottom3')
    answer: str
    containment: float  # score_sdqa vs the references (NaN without references)
    f1: float
    em: float
    agreement: float  # answer_agreement with the text answer (1.0 for the text answer itself)
    plans: tuple[EditPlan, ...] = ()  # what was edited (interventions only)

    @property
    def frames(self) -> list[int]:
        """Edited query frames (union over the composed plans), ascending."""
        return sorted({f for p in self.plans for f in p.frames})

    @property
    def tokens(self) -> list[int]:
        """Text tokens whose path frames were edited (union), ascending."""
        return sorted({j for p in self.plans for j in p.tokens})


@dataclass(frozen=True, eq=False)
class SideBySide:
    """Every answer for one sample: text, speech, cascade and one per intervention condition."""

    sample_id: str
    question: str
    references: tuple[str, ...]
    text: ConditionAnswer
    speech: ConditionAnswer
    cascade: ConditionAnswer | None  # None when the model has no ASR decoder (or cascade=False)
    transcript: str | None
    interventions: tuple[ConditionAnswer, ...]
    frame_times: tuple[float, ...] = ()  # [Ts] all speech frame start times (for the heatmap axis)
    tokens: tuple[str, ...] = ()  # [Tt] all text token strings

    def answers(self) -> list[ConditionAnswer]:
        """text, speech, cascade (if any), then the interventions, in order."""
        return [self.text, self.speech, *([self.cascade] if self.cascade else []), *self.interventions]

    def rows(self) -> list[dict]:
        """One flat dict per answer (for a table); edited frames/tokens as lists."""
        out = []
        for a in self.answers():
            out.append({
                "condition": a.condition, "title": a.title, "answer": a.answer, "containment": a.containment,
                "f1": a.f1, "em": a.em, "agreement": a.agreement, "frames": a.frames,
                "frame_times": [self.frame_times[f] for f in a.frames] if self.frame_times else [],
                "tokens": [self.tokens[j] for j in a.tokens] if self.tokens else [],
            })
        return out


def _score(answer: str, references: Sequence[str], text_answer: str | None) -> dict:
    """score_sdqa vs references (NaN without references) + agreement with the text answer."""
    from lsl_core.scoring import answer_agreement, score_sdqa

    if references:
        s = score_sdqa(answer, list(references))
        scores = {k: float(s[k]) for k in ("containment", "f1", "em")}
    else:
        scores = {"containment": math.nan, "f1": math.nan, "em": math.nan}
    scores["agreement"] = 1.0 if text_answer is None else float(answer_agreement(answer, text_answer))
    return scores


def sample_states(model: "LSLM", sample: "Sample"):
    """(speech prompt, text prompt, HiddenStates) with one encoder pass and one forward per modality."""
    from lsl_core.model.lslm import HiddenStates

    sp = model.embed_speech(sample.audio, sample.sr)
    tx = model.embed_text(sample.question)
    speech_prompt = model.build_prompt(sp.embeds)
    text_prompt = model.build_prompt(tx.embeds, tx.token_ids)
    states = HiddenStates(model.forward_states(speech_prompt), model.forward_states(text_prompt), sp.frame_times,
                          sp.frame_seconds, tx.tokens, meta={"model": model.name, "digest": model.digest})
    return speech_prompt, text_prompt, states


def generate_side_by_side(model: "LSLM", sample: "Sample", interventions: Sequence[Condition],
                          max_new_tokens: int = 40, states: "HiddenStates | None" = None, *,
                          cascade: bool = True, batched: bool = False) -> SideBySide:
    """Text, speech, cascade (ASR → LLM) and one intervened speech answer per condition, all scored.

    Plans come from the unedited states at each intervention's layer: `states` when given (the
    HiddenStates of this sample, e.g. from the explorer's cache), else one speech + one text forward.
    Each entry of `interventions` is one condition: an Intervention, a label string, or a sequence
    composed in order ('angle:bottom3+length:all'). cascade=False skips the ASR baseline;
    batched=True generates the speech answer and every condition in one batch (faster; see
    generate_conditions for the rounding caveat).
    """
    conds = [parse_condition(c) for c in interventions]
    if states is None and conds:
        speech_prompt, text_prompt, states = sample_states(model, sample)
    else:
        speech_prompt = model.prompt_for(audio=sample.audio, sr=sample.sr)
        text_prompt = model.prompt_for(text=sample.question)
    refs = tuple(sample.answers)

    text_answer = model.generate_from_prompt(text_prompt, max_new_tokens)
    text = ConditionAnswer("text", "Text", text_answer, **_score(text_answer, refs, None))
    plans_per_cond = [tuple(plan_interventions(ivs, states, speech_prompt)) for ivs in conds]
    if batched:
        speech_answer, *iv_answers = generate_conditions(model, speech_prompt, [(), *plans_per_cond], max_new_tokens)
    else:
        speech_answer = model.generate_from_prompt(speech_prompt, max_new_tokens)
        iv_answers = [generate_with_interventions(model, speech_prompt, plans, max_new_tokens)
                      for plans in plans_per_cond]
    speech = ConditionAnswer("speech", "Speech", speech_answer, **_score(speech_answer, refs, text_answer))
    casc, transcript = None, None
    if cascade and model.has_asr:
        transcript, casc_answer = model.cascade(sample.audio, sample.sr, max_new_tokens)
        casc = ConditionAnswer("cascade", "Cascade (ASR → LLM)", casc_answer, **_score(casc_answer, refs, text_answer))

    outs = []
    for ivs, plans, ans in zip(conds, plans_per_cond, iv_answers):
        outs.append(ConditionAnswer(condition_label(ivs), condition_title(ivs), ans,
                                    **_score(ans, refs, text_answer), plans=plans))
    frame_times = tuple(float(t) for t in states.frame_times) if states is not None else ()
    tokens = tuple(states.tokens) if states is not None else ()
    return SideBySide(sample.id, sample.question, refs, text, speech, casc, transcript, tuple(outs),
                      frame_times, tokens)
