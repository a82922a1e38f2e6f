"""The IFEval instruction checkers (Zhou et al. 2023), one function per instruction id.

Each checker reads one response and the instruction's arguments (the row's `kwargs` entry) and
returns whether the response follows the instruction, with the official checker's semantics:
    keywords:existence            every keyword occurs (case-insensitive substring)
    keywords:frequency            occurrences of keyword (case-insensitive substring) <relation> frequency
    keywords:forbidden_words      no forbidden word occurs as a whole word (case-insensitive)
    keywords:letter_frequency     occurrences of the letter (case-insensitive) <let_relation> let_frequency
    language:response_language    langdetect's language of the whole response == language
    length_constraints:number_sentences   sentences <relation> num_sentences
    length_constraints:number_paragraphs  paragraphs split by *** == num_paragraphs (no empty inner ones)
    length_constraints:number_words       \\w+ words <relation> num_words
    length_constraints:nth_paragraph_first_word   paragraphs split by blank lines == num_paragraphs and
                                          paragraph nth_paragraph starts with first_word
    detectable_content:number_placeholders   [bracketed] placeholders >= num_placeholders
    detectable_content:postscript         a line part starting with the marker (P.S. / P.P.S / other)
    detectable_format:number_bullet_lists lines starting with "* " or "-" == num_bullets
    detectable_format:constrained_response  contains "My answer is yes./no./maybe."
    detectable_format:number_highlighted_sections  *text* or **text** spans >= num_highlights
    detectable_format:multiple_sections   "<section_spliter> <n>" markers >= num_sections
    detectable_format:json_format         the response (markdown fences removed) parses as JSON
    detectable_format:title               a <<title>> on one line
    combination:two_responses             exactly two different responses separated by ******
    combination:repeat_prompt             starts with prompt_to_repeat (case-insensitive)
    startend:end_checker                  ends with end_phrase (case-insensitive, outer quotes ignored)
    startend:quotation                    wrapped in double quotes
    change_case:capital_word_frequency    ALL-CAPS words <capital_relation> capital_frequency
    change_case:english_capital           all upper case and detected as English
    change_case:english_lowercase         all lower case and detected as English
    punctuation:no_comma                  no comma
<relation> is "less than" (<) or "at least" (>=). Language detection uses `langdetect` (as the
official code, seed 0; if it cannot decide, the instruction counts as followed, as there).
Missing or invalid arguments raise MetricInputError naming the instruction - the official code
would draw random ones.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from lsl_core.errors import MetricInputError
from lsl_core.scoring.ifeval.text import count_sentences, count_words, word_tokens

RELATIONS = ("less than", "at least")
CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _compare(value: int, relation: str, threshold: int, what: str) -> bool:
    if relation == "less than":
        return value < threshold
    if relation == "at least":
        return value >= threshold
    raise MetricInputError(f"{what}: relation must be one of {RELATIONS}, got {relation!r}.")


def _detect_language(text: str) -> str | None:
    """langdetect's ISO 639-1 code (deterministic: seed 0), or None when it cannot decide."""
    try:
        from langdetect import DetectorFactory, LangDetectException, detect
    except ImportError:  # pragma: no cover - langdetect is pinned in requirements.txt
        raise MetricInputError("IFEval's language checks need the `langdetect` package "
                               "(pip install -r requirements.txt).") from None
    DetectorFactory.seed = 0
    try:
        return detect(text)
    except LangDetectException:
        return None


# ------------------------------------------------------------------ keywords
def keywords_existence(r: str, *, keywords) -> bool:
    return all(re.search(re.escape(k), r, flags=re.IGNORECASE) for k in keywords)


def keywords_frequency(r: str, *, keyword: str, frequency: int, relation: str) -> bool:
    n = len(re.findall(re.escape(keyword.strip()), r, flags=re.IGNORECASE))
    return _compare(n, relation, int(frequency), "keywords:frequency")


def keywords_forbidden_words(r: str, *, forbidden_words) -> bool:
    return not any(re.search(rf"\b{re.escape(w)}\b", r, flags=re.IGNORECASE) for w in forbidden_words)


def keywords_letter_frequency(r: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    letter = str(letter).strip().lower()
    if len(letter) != 1 or not "a" <= letter <= "z":
        raise MetricInputError(f"keywords:letter_frequency: letter must be one ASCII letter, got {letter!r}.")
    return _compare(Counter(r.lower())[letter], let_relation, int(let_frequency), "keywords:letter_frequency")


# ------------------------------------------------------------------ language and case
def language_response_language(r: str, *, language: str) -> bool:
    got = _detect_language(r)
    return True if got is None else got == language


def change_case_english_capital(r: str) -> bool:
    got = _detect_language(r)
    return r.isupper() and (got is None or got == "en")


def change_case_english_lowercase(r: str) -> bool:
    got = _detect_language(r)
    return r.islower() and (got is None or got == "en")


def change_case_capital_word_frequency(r: str, *, capital_frequency: int, capital_relation: str) -> bool:
    n = sum(1 for w in word_tokens(r) if w.isupper())
    return _compare(n, capital_relation, int(capital_frequency), "change_case:capital_word_frequency")


# ------------------------------------------------------------------ length
def length_number_sentences(r: str, *, num_sentences: int, relation: str) -> bool:
    return _compare(count_sentences(r), relation, int(num_sentences), "length_constraints:number_sentences")


def length_number_words(r: str, *, num_words: int, relation: str) -> bool:
    return _compare(count_words(r), relation, int(num_words), "length_constraints:number_words")


def length_number_paragraphs(r: str, *, num_paragraphs: int) -> bool:
    parts = re.split(r"\s?\*\*\*\s?", r)
    n = len(parts)
    for i, p in enumerate(parts):
        if not p.strip():
            if i in (0, len(parts) - 1):
                n -= 1  # a divider at the very start or end opens no paragraph
            else:
                return False  # two dividers with nothing between
    return n == int(num_paragraphs)


def length_nth_paragraph_first_word(r: str, *, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    parts = re.split(r"\n\n", r)
    n = sum(1 for p in parts if p.strip())
    nth = int(nth_paragraph)
    if not 1 <= nth <= n:
        return False
    paragraph = parts[nth - 1].strip()  # counted over all pieces, as the official checker
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for ch in word:
        if ch in ".,?!'\"":
            break
        first += ch.lower()
    return n == int(num_paragraphs) and first == str(first_word).lower()


# ------------------------------------------------------------------ content and format
def content_number_placeholders(r: str, *, num_placeholders: int) -> bool:
    return len(re.findall(r"\[.*?\]", r)) >= int(num_placeholders)


def content_postscript(r: str, *, postscript_marker: str) -> bool:
    marker = str(postscript_marker).strip()
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pattern, r.lower(), flags=re.MULTILINE))


def format_number_bullet_lists(r: str, *, num_bullets: int) -> bool:
    stars = re.findall(r"^\s*\*[^\*].*$", r, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", r, flags=re.MULTILINE)
    return len(stars) + len(dashes) == int(num_bullets)


def format_constrained_response(r: str) -> bool:
    return any(option in r.strip() for option in CONSTRAINED_RESPONSES)


def format_number_highlighted_sections(r: str, *, num_highlights: int) -> bool:
    n = sum(1 for h in re.findall(r"\*[^\n\*]*\*", r) if h.strip("*").strip())
    n += sum(1 for h in re.findall(r"\*\*[^\n\*]*\*\*", r) if h.removeprefix("**").removesuffix("**").strip())
    return n >= int(num_highlights)


def format_multiple_sections(r: str, *, section_spliter: str, num_sections: int) -> bool:
    sections = re.split(r"\s?" + re.escape(str(section_spliter).strip()) + r"\s?\d+\s?", r)
    return len(sections) - 1 >= int(num_sections)


def format_json(r: str) -> bool:
    v = r.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        v = v.removeprefix(fence)
    v = v.removesuffix("```").strip()
    try:
        json.loads(v)
    except ValueError:
        return False
    return True


def format_title(r: str) -> bool:
    return any(t.lstrip("<").rstrip(">").strip() for t in re.findall(r"<<[^\n]+>>", r))


def combination_two_responses(r: str) -> bool:
    parts = r.split("******")
    valid = []
    for i, p in enumerate(parts):
        if not p.strip():
            if i not in (0, len(parts) - 1):
                return False
        else:
            valid.append(p)
    return len(valid) == 2 and valid[0].strip() != valid[1].strip()


def combination_repeat_prompt(r: str, *, prompt_to_repeat: str) -> bool:
    return r.strip().lower().startswith(str(prompt_to_repeat).strip().lower())


def startend_end_checker(r: str, *, end_phrase: str) -> bool:
    return r.strip().strip('"').lower().endswith(str(end_phrase).strip().lower())


def startend_quotation(r: str) -> bool:
    v = r.strip()
    return len(v) > 1 and v[0] == '"' and v[-1] == '"'


def punctuation_no_comma(r: str) -> bool:
    return "," not in r


# ------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Instruction:
    """One instruction id: its checker and the kwargs it needs."""

    id: str
    check: Callable[..., bool]
    args: tuple[str, ...] = ()


INSTRUCTIONS: dict[str, Instruction] = {i.id: i for i in (
    Instruction("keywords:existence", keywords_existence, ("keywords",)),
    Instruction("keywords:frequency", keywords_frequency, ("keyword", "frequency", "relation")),
    Instruction("keywords:forbidden_words", keywords_forbidden_words, ("forbidden_words",)),
    Instruction("keywords:letter_frequency", keywords_letter_frequency, ("letter", "let_frequency", "let_relation")),
    Instruction("language:response_language", language_response_language, ("language",)),
    Instruction("length_constraints:number_sentences", length_number_sentences, ("num_sentences", "relation")),
    Instruction("length_constraints:number_paragraphs", length_number_paragraphs, ("num_paragraphs",)),
    Instruction("length_constraints:number_words", length_number_words, ("num_words", "relation")),
    Instruction("length_constraints:nth_paragraph_first_word", length_nth_paragraph_first_word,
                ("num_paragraphs", "nth_paragraph", "first_word")),
    Instruction("detectable_content:number_placeholders", content_number_placeholders, ("num_placeholders",)),
    Instruction("detectable_content:postscript", content_postscript, ("postscript_marker",)),
    Instruction("detectable_format:number_bullet_lists", format_number_bullet_lists, ("num_bullets",)),
    Instruction("detectable_format:constrained_response", format_constrained_response),
    Instruction("detectable_format:number_highlighted_sections", format_number_highlighted_sections,
                ("num_highlights",)),
    Instruction("detectable_format:multiple_sections", format_multiple_sections, ("section_spliter", "num_sections")),
    Instruction("detectable_format:json_format", format_json),
    Instruction("detectable_format:title", format_title),
    Instruction("combination:two_responses", combination_two_responses),
    Instruction("combination:repeat_prompt", combination_repeat_prompt, ("prompt_to_repeat",)),
    Instruction("startend:end_checker", startend_end_checker, ("end_phrase",)),
    Instruction("startend:quotation", startend_quotation),
    Instruction("change_case:capital_word_frequency", change_case_capital_word_frequency,
                ("capital_frequency", "capital_relation")),
    Instruction("change_case:english_capital", change_case_english_capital),
    Instruction("change_case:english_lowercase", change_case_english_lowercase),
    Instruction("punctuation:no_comma", punctuation_no_comma),
)}


WHOLE_NUMBER_ARGS = frozenset({"num_sentences", "num_paragraphs", "num_words", "nth_paragraph", "num_placeholders",
                               "num_bullets", "num_highlights", "num_sections", "frequency", "let_frequency",
                               "capital_frequency"})
WORD_LIST_ARGS = frozenset({"keywords", "forbidden_words"})
RELATION_ARGS = frozenset({"relation", "let_relation", "capital_relation"})


def _arg_value(instruction_id: str, name: str, value: object) -> object:
    """One argument checked and converted: whole numbers to int (3, 3.0 and "3" alike), word lists to a
    list of str, relations one of RELATIONS, the rest str; MetricInputError naming instruction and argument."""
    where = f"IFEval instruction {instruction_id!r}: {name}"
    if name in WHOLE_NUMBER_ARGS:
        try:
            x = float(value.strip()) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            x = float("nan")
        if isinstance(value, bool) or not x.is_integer():
            raise MetricInputError(f"{where} must be a whole number, got {value!r}.")
        return int(x)
    if name in WORD_LIST_ARGS:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or not all(
                isinstance(w, str) for w in value):
            raise MetricInputError(f"{where} must be a list of strings, got {value!r}.")
        return list(value)
    if name in RELATION_ARGS and value not in RELATIONS:
        raise MetricInputError(f"{where}: relation must be one of {RELATIONS}, got {value!r}.")
    return str(value)


def instruction_args(instruction_id: str, kwargs: dict | None) -> dict:
    """The checker's arguments from a row's kwargs entry: empty values dropped (the dataset stores
    every kwarg name, null where unused), each argument checked (`_arg_value`); unknown ids, missing
    or malformed arguments -> MetricInputError."""
    if instruction_id not in INSTRUCTIONS:
        raise MetricInputError(f"Unknown IFEval instruction id {instruction_id!r}; known: "
                               f"{', '.join(sorted(INSTRUCTIONS))}.")
    spec = INSTRUCTIONS[instruction_id]
    given = {k: v for k, v in (kwargs or {}).items() if v is not None and v != "" and v != []}
    missing = [a for a in spec.args if a not in given]
    if missing:
        raise MetricInputError(f"IFEval instruction {instruction_id!r} needs kwargs {', '.join(missing)}; "
                               f"the row gives {sorted(given) or 'none'}.")
    return {a: _arg_value(instruction_id, a, given[a]) for a in spec.args}


def check_instruction(instruction_id: str, response: str, kwargs: dict | None = None) -> bool:
    """Does `response` follow one instruction (strictly: as written)? An empty response never does."""
    args = instruction_args(instruction_id, kwargs)
    return bool(response.strip()) and bool(INSTRUCTIONS[instruction_id].check(response, **args))


__all__ = ["INSTRUCTIONS", "Instruction", "RELATIONS", "instruction_args", "check_instruction"]
