"""sd-qa scoring (VoiceBench's reference-based QA), pure text: containment / token F1 / EM, answer agreement.

SD-QA (VoiceBench's sd-qa subset) is scored offline here with SQuAD/TyDi answer normalization:
- containment: some normalized gold answer occurs, on word boundaries, in the normalized prediction
  (a free-form LLM answer is a sentence, so exact match against a span is almost always 0);
- token F1: bag-of-words F1 against each gold, max over golds (SQuAD convention);
- exact match after normalization.
GAP (DESIGN §3) = score on text input − score on speech input; `answer_agreement` compares the two
answers of the same model directly. PEDANT (qa-metrics, VoiceBench's official sd-qa scorer) loads
pickled classifiers it would download from the web, so it is never used unless the user installed
its model files themselves (`pedant_available()`), and it is off by default.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable

from lsl_core.errors import MetricInputError

# ------------------------------------------------------------------ normalization
_ASCII_PUNCT = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", flags=re.UNICODE)


def _is_punct(ch: str) -> bool:
    # SQuAD removes string.punctuation; TyDi/MLQA remove every Unicode "P*" character (– “ ” …). Both.
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str) -> str:
    """SQuAD/TyDi normalization: lowercase, drop punctuation, drop articles a/an/the, squeeze whitespace.

    One deliberate difference from SQuAD's script: dashes (- – —) become spaces instead of being
    deleted, so "19th-century" and "19th century" normalize alike ("19th century"); every other
    punctuation character (ASCII string.punctuation and Unicode category P*) is deleted.
    """
    text = str(text).lower()
    text = "".join(" " if ch in "-–—" else ch for ch in text)  # "England–Wales" -> two words, like TyDi
    text = "".join(ch for ch in text if not _is_punct(ch))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalized_tokens(text: str) -> list[str]:
    """The whitespace tokens of normalize_answer(text)."""
    return normalize_answer(text).split()


# ------------------------------------------------------------------ span metrics
def exact_match(pred: str, gold: str) -> int:
    """1 if the two strings are equal after normalization, else 0."""
    return int(normalize_answer(pred) == normalize_answer(gold))


def token_f1(pred: str, gold: str) -> float:
    """Bag-of-tokens F1 between normalized prediction and gold (SQuAD v2 convention).

    If either side normalizes to no tokens, F1 is 1.0 when both are empty, else 0.0.
    """
    p, g = normalized_tokens(pred), normalized_tokens(gold)
    if not p or not g:
        return float(p == g)
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _gold_list(golds: str | Iterable[str]) -> list[str]:
    return [golds] if isinstance(golds, str) else [str(g) for g in golds]


def containment(pred: str, golds: str | Iterable[str]) -> int:
    """1 if some normalized gold (non-empty) occurs in the normalized prediction on word boundaries.

    Word boundaries keep "83" from matching inside "1983"; golds that normalize to "" never match.
    """
    p = f" {normalize_answer(pred)} "
    return int(any(g and f" {g} " in p for g in map(normalize_answer, _gold_list(golds))))


def score_sdqa(pred: str, golds: str | Iterable[str]) -> dict[str, float]:
    """Score one sd-qa answer against its gold answers -> {containment: 0/1, f1: max over golds, em: 0/1}."""
    gl = _gold_list(golds)
    if not gl:
        raise MetricInputError("score_sdqa needs at least one gold answer; this sample has none "
                               "(use answer_agreement to compare speech and text answers instead).")
    return {
        "containment": containment(pred, gl),
        "f1": max(token_f1(pred, g) for g in gl),
        "em": max(exact_match(pred, g) for g in gl),
    }


def answer_agreement(speech_answer: str, text_answer: str) -> float:
    """Token F1 between the answer to the spoken and to the typed question (1.0 = same words).

    Equals 1.0 whenever the two answers are an exact match after normalization; see
    `answer_agreement_scores` for both numbers.
    """
    return token_f1(speech_answer, text_answer)


def answer_agreement_scores(speech_answer: str, text_answer: str) -> dict[str, float]:
    """{f1: token F1, em: exact match after normalization} between the speech and text answers."""
    return {"f1": token_f1(speech_answer, text_answer), "em": float(exact_match(speech_answer, text_answer))}


# ------------------------------------------------------------------ PEDANT (opt-in)
_PEDANT_FILES = ("classifier/lr_classifier.pkl", "classifier/tf-idf_vectorizer.pkl")


def pedant_available() -> bool:
    """True only if `qa-metrics` is installed AND its PEDANT classifier files are already on disk.

    Never imports qa_metrics (its PEDANT constructor downloads pickles from the web) and never
    downloads; callers use PEDANT only when the user opted in and this returns True.
    """
    import importlib.util
    from pathlib import Path

    try:
        spec = importlib.util.find_spec("qa_metrics")
    except (ImportError, ValueError):
        return False
    if spec is None or not spec.submodule_search_locations:
        return False
    roots = [Path(p) for p in spec.submodule_search_locations]
    return any(all((r / f).is_file() for f in _PEDANT_FILES) for r in roots)


def pedant_score(pred: str, golds: str | Iterable[str], question: str) -> int:
    """PEDANT judgement (1 correct / 0 not) — only with locally installed model files (opt-in).

    Loads the classifier files the user installed (joblib/pickle): call it only on explicit opt-in.
    """
    if not pedant_available():
        raise MetricInputError(
            "PEDANT is not available: install `qa-metrics` and place its classifier files "
            f"({', '.join(_PEDANT_FILES)}) in the package folder yourself; this app never downloads them."
        )
    from qa_metrics.pedant import PEDANT  # noqa: PLC0415 - opt-in only

    return int(bool(PEDANT().evaluate(_gold_list(golds), str(pred), str(question))))


# ------------------------------------------------------------------ the sd-qa evaluator
def score_sdqa_item(answer: str, item) -> dict[str, float]:
    """One sd-qa answer (ScoreItem with the gold `reference`) -> {containment, f1, em} (0/1, 0..1, 0/1)."""
    item.reference("sd-qa scoring")
    return {k: float(v) for k, v in score_sdqa(answer, item.references).items()}


def aggregate_sdqa(rows) -> dict[str, float]:
    """Per-subset sd-qa numbers in %: containment (headline offline), f1, em; `judge` (share of
    "yes" majority votes) only where the optional LLM judge scored the rows."""
    from lsl_core.scoring.evaluator import mean_pct

    out = {"n": float(len(rows)), "containment": mean_pct(rows, "containment"), "f1": mean_pct(rows, "f1"),
           "em": mean_pct(rows, "em")}
    if any(r.get("judge_yes") is not None for r in rows):
        out["judge"] = mean_pct(rows, "judge_yes")
    return out


__all__ = [
    "score_sdqa_item", "aggregate_sdqa",
    "normalize_answer", "normalized_tokens", "exact_match", "token_f1", "containment", "score_sdqa",
    "answer_agreement", "answer_agreement_scores", "pedant_available", "pedant_score",
]
