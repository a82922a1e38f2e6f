"""Side by side (the Interventions page, Table 1): text, speech, cascade and intervened answers, scored.

generate_side_by_side(model, sample, conditions) -> SideBySide: one ConditionAnswer per answer,
each scored with sd-qa containment / F1 / EM against the references and its agreement (token F1)
with the text answer; intervened answers carry the EditPlans that made them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from lsl_core.errors import LSLError
from lsl_core.interventions.config import Condition, condition_label, condition_title, parse_condition
from lsl_core.interventions.hooks import generate_conditions, generate_with_interventions
from lsl_core.interventions.plan import DonorText, EditPlan, needs_donor, plan_interventions

if TYPE_CHECKING:  # pragma: no cover
    from lsl_core.data.samples import Sample
    from lsl_core.model.lslm import LSLM, HiddenStates


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
        """Tokens of this sample's transcript whose path frames were edited (union), ascending; the
        donor's tokens of pairing "other" are not this transcript's and are left out (see token_text)."""
        return sorted({j for p in self.plans if p.intervention.pairing != "other" for j in p.tokens})

    @property
    def token_text(self) -> list[str]:
        """Display strings of the edited tokens: this transcript's (ascending), then any donor's ('other: ...')."""
        own, donor = {}, {}
        for p in self.plans:
            into = donor if p.intervention.pairing == "other" else own
            for j, text in zip(p.tokens, p.token_strings):
                into.setdefault(j, text)
        return [own[j] for j in sorted(own)] + [f"other: {donor[j]}" for j in sorted(donor)]


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
                "tokens": a.token_text,
            })
        return out


def score_answer(answer: str, references: Sequence[str], text_answer: str | None) -> dict:
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
    """(speech prompt, text prompt, HiddenStates): an alias of LSLM.prompts_and_states(sample)."""
    return model.prompts_and_states(sample)


def donor_text(model: "LSLM", question: str | None, conds: Sequence[Condition], own_question: str) -> DonorText:
    """Another question's text states for pairing "other": [L+1, Tt', d] float32 CPU and its tokens.

    One text forward when an intervention sits at ℓ > 0; at ℓ = 0 only the token embeddings (the
    LLM input, broadcast over the layer axis without a copy), as serving.planning_states does.
    """
    if question is None:
        raise LSLError("A condition with pairing 'other' edits with another question's transcript, and none was "
                       "given: pass donor_question= (any question other than the sample's).")
    if not question.strip():
        raise LSLError("Pairing 'other' needs another question's transcript; got an empty donor question.")
    if question.strip() == own_question.strip():
        raise LSLError("Pairing 'other' needs a DIFFERENT question than the sample's own; the donor question "
                       f"{question!r} is the sample's.")
    tx = model.embed_text(question)
    prompt = model.build_prompt(tx.embeds, tx.token_ids)
    deep = any(iv.layer > 0 for c in conds for iv in parse_condition(c))
    text = model.forward_states(prompt) if deep else model.input_states(prompt)  # [L+1, Tt', d]
    return DonorText(question, text, list(tx.tokens))


def generate_side_by_side(model: "LSLM", sample: "Sample", interventions: Sequence[Condition],
                          max_new_tokens: int = 40, states: "HiddenStates | None" = None, *,
                          cascade: bool = True, batched: bool = False,
                          donor_question: str | None = None) -> SideBySide:
    """Text, speech, cascade (ASR → LLM) and one intervened speech answer per condition, all scored.

    Plans come from the unedited states at each intervention's layer: `states` when given (the
    HiddenStates of this sample, e.g. from the explorer's cache), else one speech + one text forward.
    Each entry of `interventions` is one condition: an Intervention, a label string, or a sequence
    composed in order ('angle:bottom3+length:all'). cascade=False skips the ASR baseline;
    batched=True generates the speech answer and every condition in one batch (faster; see
    generate_conditions for the rounding caveat). donor_question: another question, whose typed
    transcript the conditions with pairing "other" edit with (their null: the same edit without this
    question's content).
    """
    conds = [parse_condition(c) for c in interventions]
    donor = donor_text(model, donor_question, conds, sample.question) if needs_donor(conds) else None
    if states is None and conds:
        speech_prompt, text_prompt, states = model.prompts_and_states(sample)
    else:
        speech_prompt = model.prompt_for(audio=sample.audio, sr=sample.sr)
        text_prompt = model.prompt_for(text=sample.question)
    refs = tuple(sample.answers)

    text_answer = model.generate_from_prompt(text_prompt, max_new_tokens)
    text = ConditionAnswer("text", "Text", text_answer, **score_answer(text_answer, refs, None))
    plans_per_cond = [tuple(plan_interventions(ivs, states, speech_prompt, donor)) for ivs in conds]
    if batched:
        speech_answer, *iv_answers = generate_conditions(model, speech_prompt, [(), *plans_per_cond], max_new_tokens)
    else:
        speech_answer = model.generate_from_prompt(speech_prompt, max_new_tokens)
        iv_answers = [generate_with_interventions(model, speech_prompt, plans, max_new_tokens)
                      for plans in plans_per_cond]
    speech = ConditionAnswer("speech", "Speech", speech_answer, **score_answer(speech_answer, refs, text_answer))
    casc, transcript = None, None
    if cascade and model.has_asr:
        transcript, casc_answer = model.cascade(sample.audio, sample.sr, max_new_tokens)
        casc = ConditionAnswer("cascade", "Cascade (ASR → LLM)", casc_answer, **score_answer(casc_answer, refs, text_answer))

    outs = []
    for ivs, plans, ans in zip(conds, plans_per_cond, iv_answers):
        outs.append(ConditionAnswer(condition_label(ivs), condition_title(ivs), ans,
                                    **score_answer(ans, refs, text_answer), plans=plans))
    frame_times = tuple(float(t) for t in states.frame_times) if states is not None else ()
    tokens = tuple(states.tokens) if states is not None else ()
    return SideBySide(sample.id, sample.question, refs, text, speech, casc, transcript, tuple(outs),
                      frame_times, tokens)
