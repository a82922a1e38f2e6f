"""The interface every VoiceBench scorer implements, and the item it reads.

    score(answer, item)  -> {column: value}     one answer; 0/1 flags, counts or labels (never a guess)
    aggregate(rows)      -> {name: value}       one subset; shares in % (0..100), plus `n`

`ScoreItem` is everything a scorer may read about a sample: the typed prompt (VoiceBench's text
modality), the reference answer(s) and the row's other columns (`id` for bbh; `key`,
`instruction_id_list`, `kwargs` for ifeval). An `Evaluator` bundles one scorer with the aggregate
that names its headline score (`primary`, used for GAP) and its failure shares (`failures`: answers
the scorer could not read, e.g. no option letter found), so callers never special-case a subset.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lsl_core.errors import MetricInputError

Row = Mapping[str, Any]


@dataclass(frozen=True)
class ScoreItem:
    """What a scorer reads about one sample (no audio)."""

    prompt: str  # the typed instruction/question (VoiceBench `prompt` column)
    references: tuple[str, ...] = ()  # gold answer(s) (`reference` column); empty where there is none
    meta: Mapping[str, Any] = field(default_factory=dict)  # the row's other columns (id, kwargs, ...)

    @classmethod
    def of(cls, sample) -> ScoreItem:
        """From a Sample or SampleRecord (question, answers, meta)."""
        return cls(prompt=str(sample.question), references=tuple(sample.answers), meta=dict(sample.meta or {}))

    def reference(self, what: str) -> str:
        """The single reference answer; MetricInputError naming `what` when there is none."""
        if not self.references or not str(self.references[0]).strip():
            raise MetricInputError(f"{what} needs the sample's `reference` column (the gold answer); this row "
                                   "has none. Use the VoiceBench parquet file of that subset unchanged.")
        return str(self.references[0]).strip()


@dataclass(frozen=True)
class Evaluator:
    """One VoiceBench evaluator: per-answer scorer + per-subset aggregate."""

    name: str  # "mcq", "bbh", ... (VoiceBench's --evaluator names where they exist)
    description: str  # one line for tables and the docs
    primary: str  # aggregate key of the headline score (GAP = text - speech of this)
    score: Callable[[str, ScoreItem], dict]
    aggregate: Callable[[Sequence[Row]], dict[str, float]]
    failures: tuple[str, ...] = ()  # aggregate keys that are failure shares (%), e.g. "no_letter"
    judged: bool = False  # True when the headline needs the optional LLM judge (absent without one)


def mean_pct(rows: Sequence[Row], column: str) -> float:
    """100 * mean of a 0/1 (or 0..1) column over rows that have it; NaN when none do."""
    vals = [float(r[column]) for r in rows if r.get(column) is not None]
    return 100.0 * sum(vals) / len(vals) if vals else float("nan")


__all__ = ["ScoreItem", "Evaluator", "mean_pct", "Row"]
