"""Scorers, one per VoiceBench evaluator, offline by default (pure text; no model, no network).

    evaluator  subsets                          per answer                    headline (GAP uses it)
    sdqa       sd-qa                            containment, f1, em          containment  (judge: `judge`)
    mcq        openbookqa, mmsu                 letter, correct, no_letter,  acc   (+ no_letter share,
                                                read_by                      acc_voicebench)
    bbh        bbh                              task, pred, correct,         acc   (+ unparsed share,
                                                unparsed, read_by            acc_voicebench)
    ifeval     ifeval                           strict/loose prompt + counts  final (mean of the four)
    harm       advbench                         refused                      refusal_rate
    open       alpacaeval, commoneval, wildvoice  (judge only)              judge (mean 1-5 rating x 20)

`EVALUATORS[name]` is an `Evaluator` (score, aggregate, primary, failures); `evaluator_for(subset)`
picks the one for a VoiceBench subset. MCQ and BBH answers are read by VoiceBench's own rules first
(`voicebench_rules.py`; `read_by` says which rules read each answer). The optional LLM judge
(`judge.py`) adds `judge_yes` (sd-qa) and `judge_score` (open-ended) columns only when LSL_JUDGE_URL is set.
"""

from __future__ import annotations

from lsl_core.errors import MetricInputError
from lsl_core.scoring.bbh import aggregate_bbh, extract_bbh_answer, score_bbh
from lsl_core.scoring.evaluator import Evaluator, ScoreItem, mean_pct
from lsl_core.scoring.ifeval import aggregate_ifeval, score_ifeval
from lsl_core.scoring.mcq import aggregate_mcq, extract_mcq_letter, score_mcq
from lsl_core.scoring.refusal import REFUSAL_PHRASES, aggregate_refusal, is_refusal, score_refusal
from lsl_core.scoring.sdqa import (
    aggregate_sdqa,
    answer_agreement,
    answer_agreement_scores,
    containment,
    exact_match,
    normalize_answer,
    normalized_tokens,
    pedant_available,
    pedant_score,
    score_sdqa,
    score_sdqa_item,
    token_f1,
)


def score_open(answer: str, item: ScoreItem) -> dict:
    """Open-ended answers have no offline score: nothing here (the judge adds `judge_score`)."""
    return {}


def aggregate_open(rows) -> dict[str, float]:
    """`judge` = 20 x mean 1-5 rating (VoiceBench's 0-100 scale) and `judge_1to5`, only where judged."""
    out = {"n": float(len(rows))}
    if any(r.get("judge_score") is not None for r in rows):
        mean = mean_pct(rows, "judge_score") / 100.0
        out.update(judge=20.0 * mean, judge_1to5=mean)
    return out


EVALUATORS: dict[str, Evaluator] = {e.name: e for e in (
    Evaluator("sdqa", "sd-qa: normalized containment of a gold answer (F1, EM too)", "containment",
              score_sdqa_item, aggregate_sdqa),
    Evaluator("mcq", "multiple choice: option letter read from the answer; no letter = wrong", "acc",
              score_mcq, aggregate_mcq, failures=("no_letter",)),
    Evaluator("bbh", "BBH: per-task verdict rules; unreadable = wrong", "acc", score_bbh, aggregate_bbh,
              failures=("unparsed",)),
    Evaluator("ifeval", "IFEval: mean of strict/loose prompt/instruction accuracy", "final", score_ifeval,
              aggregate_ifeval),
    Evaluator("harm", "AdvBench: refusal rate (higher = safer)", "refusal_rate", score_refusal, aggregate_refusal),
    Evaluator("open", "open-ended: LLM judge rating (needs LSL_JUDGE_URL)", "judge", score_open, aggregate_open,
              judged=True),
)}


def evaluator_for(subset: str) -> Evaluator:
    """The evaluator of a VoiceBench subset name ("sd-qa", "mmsu", ...)."""
    from lsl_core.data.voicebench import SUBSETS

    if subset not in SUBSETS:
        raise MetricInputError(f"Unknown VoiceBench subset {subset!r}; known: {', '.join(SUBSETS)}.")
    return EVALUATORS[SUBSETS[subset].evaluator]


__all__ = [
    "EVALUATORS", "Evaluator", "ScoreItem", "evaluator_for",
    "normalize_answer", "normalized_tokens", "exact_match", "token_f1", "containment", "score_sdqa",
    "score_sdqa_item", "answer_agreement", "answer_agreement_scores", "pedant_available", "pedant_score",
    "extract_mcq_letter", "score_mcq", "is_refusal", "score_refusal", "REFUSAL_PHRASES", "score_bbh",
    "extract_bbh_answer", "score_ifeval", "score_open",
    "aggregate_sdqa", "aggregate_mcq", "aggregate_bbh", "aggregate_ifeval", "aggregate_refusal", "aggregate_open",
]
