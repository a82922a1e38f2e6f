"""SD-QA English questions (Faisal et al. 2021, Apache-2.0), shipped under assets/data/.

Splits and their roles:
- dev  (`sdqa_eng_dev.jsonl`, 497 questions with answers): the evaluation split — VoiceBench's sd-qa
  draws on it, and the embedded sample set `sd-qa-mini` is chosen from it.
- test (`english.test.txt`, 1031 typed questions; answers for the first 109 from
  `sdqa_eng_test.jsonl`): the training questions. No dev question is ever a training question.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lsl_core.data.paths import assets_dir
from lsl_core.errors import DataError

DEV_FILE = "sdqa_eng_dev.jsonl"
TEST_FILE = "sdqa_eng_test.jsonl"
TRAIN_QUESTIONS_FILE = "english.test.txt"
ATTRIBUTION = ("SD-QA: Spoken Dialectal Question Answering for the Real World (Faisal, Keshava, ibn Alam, "
               "Anastasopoulos, 2021), github.com/ffaisal93/SD-QA, Apache License 2.0")


@dataclass(frozen=True)
class SDQAQuestion:
    """One typed SD-QA question; answers are the gold spans (empty where the split has none)."""

    example_id: str
    question: str
    answers: tuple[str, ...] = ()
    split: str = ""


def sdqa_data_dir() -> Path:
    """assets/data: the shipped copies of the SD-QA files (see ATTRIBUTION.md there)."""
    return assets_dir() / "data"


def _path(name: str) -> Path:
    p = sdqa_data_dir() / name
    if not p.is_file():
        raise DataError(f"SD-QA file {p} is missing. Restore assets/data/ from the repository "
                        "(it ships sdqa_eng_dev.jsonl, sdqa_eng_test.jsonl and english.test.txt).")
    return p


@lru_cache(maxsize=None)
def _read_jsonl(name: str) -> tuple[SDQAQuestion, ...]:
    p = _path(name)
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), 1):  # a BOM is not JSON
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            answers = row["answers"]
            if not isinstance(answers, list):  # a bare string would become one answer per letter
                raise TypeError(f"answers is {type(answers).__name__}, not a list")
            if not isinstance(row["question"], str) or not row["question"].strip():
                raise TypeError(f"question is {row['question']!r}, not text")
            out.append(SDQAQuestion(str(row["example_id"]), str(row["question"]).strip(),
                                    tuple(str(a) for a in answers), str(row.get("split", ""))))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{p} line {n} is not an SD-QA record ({exc!r}); expected JSON with "
                            "example_id, question, answers (list). Restore the file from the repository.") from None
    return tuple(out)


def load_sdqa_dev() -> list[SDQAQuestion]:
    """The 497 SD-QA English dev questions with gold answers, in file order (the evaluation split)."""
    return list(_read_jsonl(DEV_FILE))


def load_sdqa_test() -> list[SDQAQuestion]:
    """The first 109 SD-QA English test questions with gold answers, in file order."""
    return list(_read_jsonl(TEST_FILE))


@lru_cache(maxsize=None)
def _train_questions() -> tuple[SDQAQuestion, ...]:
    p = _path(TRAIN_QUESTIONS_FILE)
    answers = {q.example_id: q.answers for q in _read_jsonl(TEST_FILE)}
    dev = _read_jsonl(DEV_FILE)
    dev_ids = {q.example_id for q in dev}
    dev_texts = {spoken_form(q.question) for q in dev}
    out = []
    with p.open(encoding="utf-8-sig", newline="") as fh:
        rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if not header or len(header) < 3 or header[0] != "ID":
            raise DataError(f"{p} does not start with the header 'ID<TAB>in XOR test<TAB>sentence'. "
                            "Restore the file from the repository.")
        for n, row in enumerate(rows, 2):
            if not row:
                continue
            if len(row) < 3 or not row[2].strip():
                raise DataError(f"{p} line {n} has no question text; expected ID<TAB>flag<TAB>sentence.")
            qid, text = row[0].strip(), row[2].strip()
            if qid in dev_ids or spoken_form(text) in dev_texts:  # never train on an evaluation question, as spoken
                continue
            out.append(SDQAQuestion(qid, text, answers.get(qid, ()), "test"))
    return tuple(out)


def spoken_form(text: str) -> str:
    """The words of a question as espeak-ng speaks them: lower case, punctuation and spacing dropped
    ("Who wrote  Hamlet ?" -> "who wrote hamlet"); two questions of one spoken form are one clip."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def load_sdqa_train_questions() -> list[SDQAQuestion]:
    """Training questions: the 1031 typed SD-QA *test* questions (never dev), answers where known."""
    return list(_train_questions())


def select_mini_questions(questions: list[SDQAQuestion], n: int = 60, max_answer_chars: int = 60,
                          max_words: int = 20, offset: int = 0) -> list[SDQAQuestion]:
    """The first n questions (file order) whose shortest answer has <= max_answer_chars characters
    and whose question has <= max_words words — the deterministic rule behind sd-qa-mini. offset skips
    that many qualifying questions first (offset 60: the next 60, disjoint from sd-qa-mini's)."""
    if n <= 0 or offset < 0:
        raise DataError(f"n must be a positive number of questions and offset >= 0, got n={n}, offset={offset}.")
    picked = [q for q in questions
              if q.answers and min(len(a) for a in q.answers) <= max_answer_chars
              and len(q.question.split()) <= max_words]
    if len(picked) < offset + n:
        raise DataError(f"Only {len(picked)} questions satisfy the selection rule (answer <= {max_answer_chars} "
                        f"chars, question <= {max_words} words); ask for at most that many (skipped ones included).")
    return picked[offset:offset + n]


__all__ = ["SDQAQuestion", "ATTRIBUTION", "sdqa_data_dir", "load_sdqa_dev", "load_sdqa_test",
           "load_sdqa_train_questions", "select_mini_questions"]
