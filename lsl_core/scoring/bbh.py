"""BBH (VoiceBench `bbh`: four Big-Bench-Hard tasks, spoken): read the model's verdict, per task rules.

Tasks (named inside the row's `id`) and what an answer decides, with the gold `reference` mapped
as VoiceBench does (yes -> 1, no -> 0, (a) -> 0, (b) -> 1):
    sports_understanding   is the sentence plausible?                 yes / no
    navigate               do the steps return to the starting point?  yes / no
    web_of_lies            does the person asked about tell the truth? yes / no
    hyperbaton             which sentence has the right adjective order? (A) / (B)

1. VoiceBench's own rules decide first (`voicebench_verdict`; `read_by` = "voicebench"): its
   normalization (lowercase; : ** " - , . replaced by spaces) and its phrase tables in its order
   (voicebench_rules.py: the yes/no verdicts, then the task's phrases, then a bare verdict at the
   start or end), with three slips corrected: a bare "b" is (B), "... must be lying" is a lie, and
   "the sentence ... is not plausible" is implausible.
2. Where those read nothing VoiceBench guesses at random; here extra rules are tried instead
   (`read_by` = "extra"), the last explicit verdict winning ("answer is no", "conclusion: true",
   \\boxed{no}, "option A is correct"), then the task's own wording ("(not) plausible"; "(do not)
   return to the starting point"; "<name asked about> tells the truth / lies"), then a bare yes/no
   at the start or end of the answer.
An answer nothing reads is `unparsed`: wrong, and reported as a share. `acc_voicebench` is
VoiceBench's expected score: its rules' verdict where they read one, a coin flip elsewhere.
"""

from __future__ import annotations

import re

from lsl_core.errors import MetricInputError
from lsl_core.scoring.evaluator import ScoreItem, mean_pct
from lsl_core.scoring.voicebench_rules import BBH_RULES, YES_NO, apply_rules

TASKS = ("sports_understanding", "navigate", "web_of_lies", "hyperbaton")
GOLD = {"yes": 1, "no": 0, "(a)": 0, "(b)": 1, "a": 0, "b": 1, "true": 1, "false": 0}
_YN = {"yes": 1, "no": 0, "true": 1, "false": 0}
_NEG = r"(?:not|never|no longer|cannot|\w+n't)"  # "haven't", "wouldn't", ... (apostrophes folded)


def task_of(sample_id: str) -> str:
    """The BBH task named in a row id ("navigate_17" -> "navigate")."""
    for t in TASKS:
        if t in str(sample_id):
            return t
    raise MetricInputError(f"BBH row id {sample_id!r} names none of the tasks {', '.join(TASKS)}; "
                           "use VoiceBench's bbh parquet `id` column unchanged.")


def voicebench_normalize(text: str) -> str:
    """VoiceBench's normalization of a BBH answer: lowercase, drop a trailing "<|user|>", a leading
    "<1>".."<3>" and every "<|turn_end|>"; : ** " - , . and the fullwidth colon become spaces; squeeze."""
    r = str(text or "").lower()
    if r.endswith("<|user|>"):
        r = r[: -len("<|user|>")].strip()
    if r.startswith(("<1>", "<2>", "<3>")):
        r = r[3:].strip()
    r = r.replace("<|turn_end|>", "")
    for ch in (":", "**", '"', "-", ",", ".", "\uff1a"):
        r = r.replace(ch, " ")
    return " ".join(r.split())


def voicebench_verdict(answer: str, task: str) -> int | None:
    """VoiceBench's verdict (src/evaluator/bbh.py, slips corrected): 1 / 0, or None where it would guess."""
    t = voicebench_normalize(answer)
    if task != "hyperbaton":
        v = apply_rules(t, YES_NO)
        if v is not None:
            return v
    return apply_rules(t, BBH_RULES[task])


def normalize(text: str) -> str:
    """Lowercase, fold apostrophes, drop turn tags ("<1>", "<|user|>") and markdown emphasis, squeeze spaces."""
    t = str(text or "").lower().replace("\u2019", "'").replace("\u2018", "'")
    t = re.sub(r"^<\d>", "", t.strip())
    t = t.replace("<|user|>", " ").replace("<|turn_end|>", " ").replace("**", " ").replace("__", " ")
    return " ".join(t.split())


def _last(pattern: str, text: str) -> re.Match | None:
    hits = list(re.finditer(pattern, text))
    return hits[-1] if hits else None


# ------------------------------------------------------------------ yes/no verdicts
_VERDICT_YN = (r"(?:final answer|the answer|my answer|answer|conclusion|i would answer|i'd answer|verdict)"
               r"(?:\s+to (?:the|this|your) question)?\s*(?:is|would be|will be|should be|:|-)?\s*"
               r"(?:without any modification\s*)?(?:directly\s*)?(?:[:\-]\s*)?[\"'(\[]*(yes|no|true|false)\b")
_BOXED_YN = r"\\boxed\{\s*(?:\\text\{)?\s*(yes|no|true|false)\s*\}"


def _explicit_yn(t: str) -> int | None:
    m = _last(f"{_VERDICT_YN}|{_BOXED_YN}", t)
    if m is None:
        return None
    return _YN[m.group(1) or m.group(2)]


def _bare_yn(t: str) -> int | None:
    m = re.match(r"^[\"'(\[]*(yes|no|true|false)\b", t)
    if m:
        return _YN[m.group(1)]
    m = re.search(r"\b(yes|no)[\s.!\"')\]]*$", t)  # a bare "... true." at the end is often "cannot be true"
    return _YN[m.group(1)] if m else None


def _sports(t: str, item: ScoreItem) -> int | None:
    if re.search(rf"\bimplausible\b|\b{_NEG}\s+(?:\w+\s+){{0,3}}(?:plausible|possible|realistic|likely)\b"
                 r"|\bunlikely\b|\bunrealistic\b", t):
        return 0
    if re.search(r"\b(?:plausible|realistic)\b", t):
        return 1
    return None


def _navigate(t: str, item: ScoreItem) -> int | None:
    target = r"(?:starting (?:point|position|location)|start(?:ing)?\b|original (?:position|point|location)|where (?:i|you|we) started)"
    back = r"(?:return|returns|returned|returning|back|end up|ends up|ended up|arrive|come back)"
    if re.search(rf"\b{_NEG}\s+(?:\w+\s+){{0,4}}{back}\b(?:\s+\w+){{0,4}}\s+{target}", t):
        return 0
    if re.search(rf"\b{back}\b(?:\s+\w+){{0,4}}\s+{target}", t):
        return 1
    return None


def _asked_person(prompt: str) -> str | None:
    m = _last(r"does (\w+) tell the truth", str(prompt).lower())
    return m.group(1) if m else None


def _web_of_lies(t: str, item: ScoreItem) -> int | None:
    name = _asked_person(item.prompt) or r"\w+"
    lie = rf"\b{name}\s+(?:{_NEG}\s+(?:\w+\s+)?tell(?:s|ing)? the truth|(?:is\s+)?(?:lies|lying|a liar)|tells a lie)"
    truth = rf"\b{name}\s+(?:(?:does|do|is|indeed|also)\s+)?(?:tells|telling|tell) the truth"
    m_lie, m_truth = _last(lie, t), _last(truth, t)
    if m_lie and (not m_truth or m_lie.start() >= m_truth.start()):
        return 0
    return 1 if m_truth else None


# ------------------------------------------------------------------ hyperbaton (A / B)
_AB = r"\(?([ab])\)?(?![a-z'])"


def _hyperbaton(t: str, item: ScoreItem) -> int | None:
    lead = r"(?:option|sentence|choice)\s*"
    verdicts = (
        rf"(?:answer|option|choice|sentence|order|one)\s*(?:is|would be|should be|:)\s*(?:option\s*|sentence\s*|choice\s*)?{_AB}",
        rf"{lead}{_AB}\s*(?:is|has|follows|uses|would be|seems)\s+(?:\w+\s+){{0,3}}(?:correct|right|proper|better|closest|grammatical)",
        rf"(?:correct|right|proper)\s+(?:\w+\s+){{0,3}}(?:is|in|would be)\s+(?:found in\s+)?{lead}{_AB}",
        r"\\boxed\{\s*(?:\\text\{)?\s*\(?([ab])\)?\s*\}",
    )
    m = _last("|".join(f"(?:{v})" for v in verdicts), t)
    if m:
        letter = next(g for g in m.groups() if g)
        return 0 if letter == "a" else 1
    m = re.match(r"^(?:option\s*)?\(?([ab])\)?(?:$|[\s.,:)])", t)
    if m and not (m.group(1) == "a" and re.match(r"^a\s+[a-z]", t)):  # "a bright ..." is an article
        return 0 if m.group(1) == "a" else 1
    return None


_RULES = {"sports_understanding": _sports, "navigate": _navigate, "web_of_lies": _web_of_lies,
          "hyperbaton": _hyperbaton}


def read_bbh_answer(answer: str, task: str, prompt: str = "") -> tuple[int | None, str | None]:
    """(verdict, read_by): VoiceBench's rules ("voicebench"), else the extra rules ("extra"), else (None, None)."""
    if task not in _RULES:
        raise MetricInputError(f"Unknown BBH task {task!r}; known: {', '.join(TASKS)}.")
    v = voicebench_verdict(answer, task)
    if v is not None:
        return v, "voicebench"
    v = _extra_verdict(answer, task, prompt)
    return (v, "extra") if v is not None else (None, None)


def extract_bbh_answer(answer: str, task: str, prompt: str = "") -> int | None:
    """The verdict of one answer: 1 (yes / option B), 0 (no / option A), or None when unreadable."""
    return read_bbh_answer(answer, task, prompt)[0]


def _extra_verdict(answer: str, task: str, prompt: str) -> int | None:
    """The extra rules, for answers VoiceBench's rules do not read."""
    t = normalize(answer)
    if not t:
        return None
    item = ScoreItem(prompt=prompt)
    if task == "hyperbaton":
        return _hyperbaton(t, item)
    for rule in (_explicit_yn, lambda s: _RULES[task](s, item), _bare_yn):
        v = rule(t)
        if v is not None:
            return v
    return None


def gold_label(reference: str) -> int:
    """VoiceBench's mapping of a bbh reference: yes/(b) -> 1, no/(a) -> 0."""
    key = str(reference).strip().lower()
    if key not in GOLD:
        raise MetricInputError(f"A BBH reference must be yes, no, (A) or (B); got {reference!r}.")
    return GOLD[key]


def score_bbh(answer: str, item: ScoreItem) -> dict:
    """One answer -> {task, pred: 0/1/None, correct: 0/1, unparsed: 0/1, read_by} (unparsed counts as wrong)."""
    sid = item.meta.get("id")
    if sid is None:
        raise MetricInputError("BBH scoring needs the row's `id` column (it names the task).")
    task = task_of(sid)
    gold = gold_label(item.reference("BBH scoring"))
    pred, read_by = read_bbh_answer(answer, task, item.prompt)
    return {"task": task, "pred": pred, "correct": float(pred == gold), "unparsed": float(pred is None),
            "read_by": read_by}


def aggregate_bbh(rows) -> dict[str, float]:
    """Per subset, in %: acc (unparsed = wrong), unparsed share, acc per task (`acc_<task>`), and
    acc_voicebench (VoiceBench's expected score: a coin flip where its own rules read nothing)."""
    out = {"n": float(len(rows)), "acc": mean_pct(rows, "correct"), "unparsed": mean_pct(rows, "unparsed")}
    if rows and all("read_by" in r for r in rows):
        vb = [float(r["correct"]) if r["read_by"] == "voicebench" else 0.5 for r in rows]
        out["acc_voicebench"] = 100.0 * sum(vb) / len(vb)
    for t in TASKS:
        sub = [r for r in rows if r.get("task") == t]
        if sub:
            out[f"acc_{t}"] = mean_pct(sub, "correct")
    return out


__all__ = ["TASKS", "task_of", "extract_bbh_answer", "read_bbh_answer", "voicebench_verdict",
           "voicebench_normalize", "gold_label", "score_bbh", "aggregate_bbh", "normalize"]
