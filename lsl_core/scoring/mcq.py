"""Multiple choice (VoiceBench openbookqa, mmsu): read the chosen option letter from a free-form answer.

    letter  = extract_mcq_letter(answer)         "A".."D", or None when no letter can be read
    correct = [letter == reference]              a missing letter counts as wrong
    acc     = 100 * mean(correct)                no_letter = 100 * share of answers with no letter

The letter is read by VoiceBench's own rules first (`voicebench_letter`: its ~160 templates in its
order, then a bare letter; `read_by` = "voicebench"). Where those read nothing VoiceBench draws a
random letter (so ~25% of unreadable answers count as right, and two runs differ); here a few extra
cues are tried instead ("Answer: B", "**B**", "\\boxed{B}"; `read_by` = "extra"), and an answer
nothing reads counts as wrong, its share reported as `no_letter`. `acc_voicebench` is VoiceBench's
expected score: its rules' letter where they read one, a 1-in-4 guess elsewhere.
`acc_answered` is the accuracy over the answers where a letter was found.
"""

from __future__ import annotations

import re
import unicodedata

from lsl_core.errors import MetricInputError
from lsl_core.scoring.evaluator import ScoreItem, mean_pct
from lsl_core.scoring.voicebench_rules import MCQ_LETTER_FOLLOWERS, MCQ_TEMPLATES

LETTERS = "ABCD"  # VoiceBench's multiple-choice subsets have four options
_L = "[{letters}]"  # filled with the allowed letters (lowercase, the text is lowercased first)
# Extra answer cues (where VoiceBench's rules read nothing), tried in order; the first that matches
# wins. Each holds one group: the letter.
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


def voicebench_letter(text: str, letters: str = LETTERS) -> str | None:
    """The letter VoiceBench's evaluator reads (src/evaluator/mcq.py), or None where it would guess.

    Lowercase; drop a "<1>".."<3>" turn tag; the first of its templates (in order; letters a..d within
    one) found in the answer; else the answer is a bare letter or starts with "b." / "b," / "b:" / "b)".
    """
    if not text:
        return None
    r = str(text).lower()
    if r.startswith(("<1>", "<2>", "<3>")):
        r = r[3:].strip()
    choices = sorted({c.lower() for c in letters if c.isalpha()})
    for template in MCQ_TEMPLATES:
        for c in choices:
            if template.replace("[CHOICE]", c) in r:
                return c.upper()
    for c in choices:
        if r == c or r.startswith(tuple(c + p for p in MCQ_LETTER_FOLLOWERS)):
            return c.upper()
    return None


def read_mcq_letter(text: str, letters: str = LETTERS) -> tuple[str | None, str | None]:
    """(letter, read_by): VoiceBench's rules ("voicebench"), else the extra cues ("extra"), else (None, None)."""
    letter = voicebench_letter(text, letters)
    if letter is not None:
        return letter, "voicebench"
    letter = _extra_letter(text, letters)
    return (letter, "extra") if letter is not None else (None, None)


def extract_mcq_letter(text: str, letters: str = LETTERS) -> str | None:
    """The chosen option letter in a free-form answer ("A", "(B)", "the answer is C", "**D**"), or None."""
    return read_mcq_letter(text, letters)[0]


def _extra_letter(text: str, letters: str = LETTERS) -> str | None:
    """The extra cues: case-insensitive; only letters in `letters` count; a bare article-like "a"
    inside a sentence is not read as option A (patterns need an answer cue, brackets, or the letter
    alone at the start)."""
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
    """One answer -> {letter: "A".."D" | None, correct: 0/1, no_letter: 0/1, read_by: "voicebench" | "extra" | None}."""
    gold = reference_letter(item.reference("multiple-choice scoring"))
    letter, read_by = read_mcq_letter(answer)
    return {"letter": letter, "correct": float(letter == gold), "no_letter": float(letter is None),
            "read_by": read_by}


def aggregate_mcq(rows) -> dict[str, float]:
    """Per subset, in %: acc (no letter = wrong), no_letter (share with no letter), acc_answered, and
    acc_voicebench (VoiceBench's expected score: a 1-in-4 guess where its own rules read no letter)."""
    answered = [r for r in rows if not r.get("no_letter")]
    out = {"n": float(len(rows)), "acc": mean_pct(rows, "correct"), "no_letter": mean_pct(rows, "no_letter"),
           "acc_answered": mean_pct(answered, "correct")}
    if rows and all("read_by" in r for r in rows):
        vb = [float(r["correct"]) if r["read_by"] == "voicebench" else 1.0 / len(LETTERS) for r in rows]
        out["acc_voicebench"] = 100.0 * sum(vb) / len(vb)
    return out


__all__ = ["extract_mcq_letter", "read_mcq_letter", "voicebench_letter", "reference_letter", "score_mcq",
           "aggregate_mcq", "LETTERS"]
