"""Multiple choice (VoiceBench openbookqa, mmsu): read the chosen option letter from a free-form answer.

    letter  = extract_mcq_letter(answer)         "A".."D", or None when no letter can be read
    correct = [letter == reference]              a missing letter counts as wrong
    acc     = 100 * mean(correct)                no_letter = 100 * share of answers with no letter

VoiceBench's own evaluator replaces a missing letter by a random one (so ~25% of unreadable answers
count as right, and two runs differ); here they count as wrong and their share is reported as
`no_letter`, so a model that stops naming options shows up as failures, not as noise.
`acc_answered` is the accuracy over the answers where a letter was found.
"""

from __future__ import annotations

import re
import unicodedata

from lsl_core.errors import MetricInputError
from lsl_core.scoring.evaluator import ScoreItem, mean_pct

LETTERS = "ABCD"  # VoiceBench's multiple-choice subsets have four options
_L = "[{letters}]"  # filled with the allowed letters (lowercase, the text is lowercased first)
# Answer cues, tried in order; the first that matches wins. Each holds one group: the letter.
_MCQ_PATTERNS = (
    r"(?:final answer|correct answer|best answer|right answer|answer)\s*(?:is|would be|should be)?\s*"
    r"(?:option|choice)?\s*[:\-]?\s*[\*\"'(\[{{]*\s*({L})(?![a-z])",
    r"(?:would|will|i)\s+(?:select|choose|pick|go with)\s+(?:option|choice)?\s*[\*\"'(\[]*({L})(?![a-z])",
    r"(?:option|choice)\s*[\*\"'(\[]*({L})(?![a-z])[\*\"')\]]*\s*(?:is|would be|seems)\s+(?:the\s+)?"
    r"(?:correct|right|best|most)",
    r"\\boxed\{{\s*(?:\\text(?:bf)?\{{)?\s*({L})\s*\}}",
    r"(?:^|\s)\(?({L})\)?\s+is\s+(?:the\s+)?(?:correct|right|best)",
    r"(?:option|choice)\s*[\*\"'(\[]*({L})(?![a-z])",
    r"^\s*[\*\"'(\[]*({L})\s*(?:[.,:)\]\*\"']|$)",  # "B", "(B)", "b.", "C) fish"
    r"(?:^|[\s:])[\*\"'(\[]+({L})[\*\"')\]]+(?![a-z])",  # "... (C)" or "**C**" anywhere
    r"\b(?:is|be|say)\s*:?\s*[\*\"']*({L})[\*\"']*\s*(?:[.,:;!]|$)",  # "it would be c.", "i'd say b"
)


def extract_mcq_letter(text: str, letters: str = LETTERS) -> str | None:
    """The chosen option letter in a free-form answer ("A", "(B)", "the answer is C", "**D**"), or None.

    Case-insensitive; only letters in `letters` count; a bare article-like "a" inside a sentence is
    not read as option A (patterns need an answer cue, brackets, or the letter alone at the start).
    """
    if not text:
        return None
    t = unicodedata.normalize("NFKC", str(text)).strip().lower()
    t = re.sub(r"^<\d>", "", t).strip()  # some models prefix a turn tag
    allowed = "".join(sorted({c.lower() for c in letters if c.isalpha()}))
    for pat in _MCQ_PATTERNS:
        for m in re.finditer(pat.format(L=_L.format(letters=allowed)), t):
            if _plausible_letter(t, m):
                return m.group(1).upper()
    return None


def _plausible_letter(t: str, m: re.Match) -> bool:
    """Reject an unbracketed "a" that starts a noun phrase ("the answer is a bit unclear")."""
    if m.group(1) != "a":
        return True
    before = t[m.start(1) - 1] if m.start(1) > 0 else ""
    if before and before in "*\"'([{":
        return True
    after = t[m.end(1):]
    return not re.match(r"\s+[a-z]", after) or bool(re.match(r"\s+(?:because|since|as|which)\b", after))


def reference_letter(reference: str, letters: str = LETTERS) -> str:
    """The gold option letter from a `reference` cell ("B", "(b)", "B." -> "B")."""
    ref = str(reference).strip().strip("().*").strip().upper()
    if len(ref) != 1 or ref not in letters.upper():
        raise MetricInputError(f"A multiple-choice reference must be one of the letters {', '.join(letters)}; "
                               f"got {reference!r}. Use the subset's parquet `reference` column unchanged.")
    return ref


def score_mcq(answer: str, item: ScoreItem) -> dict:
    """One answer -> {letter: "A".."D" | None, correct: 0/1, no_letter: 0/1}."""
    gold = reference_letter(item.reference("multiple-choice scoring"))
    letter = extract_mcq_letter(answer)
    return {"letter": letter, "correct": float(letter == gold), "no_letter": float(letter is None)}


def aggregate_mcq(rows) -> dict[str, float]:
    """Per subset, in %: acc (no letter = wrong), no_letter (share with no letter), acc_answered."""
    answered = [r for r in rows if not r.get("no_letter")]
    return {"n": float(len(rows)), "acc": mean_pct(rows, "correct"), "no_letter": mean_pct(rows, "no_letter"),
            "acc_answered": mean_pct(answered, "correct")}


__all__ = ["extract_mcq_letter", "reference_letter", "score_mcq", "aggregate_mcq", "LETTERS"]
