"""Text scoring: hand-computed cases for normalization, F1, containment, agreement, MCQ letters, refusals."""

from __future__ import annotations

import pytest

from lsl_core.errors import MetricInputError
from lsl_core.scoring import (
    answer_agreement,
    answer_agreement_scores,
    containment,
    exact_match,
    extract_mcq_letter,
    is_refusal,
    normalize_answer,
    pedant_available,
    score_sdqa,
    token_f1,
)


@pytest.mark.parametrize("raw, norm", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  a   Cat,  an apple; THE end. ", "cat apple end"),
    ("Sully Prudhomme.", "sully prudhomme"),
    ("20.95%", "2095"),
    ('"guerra" ("war")', "guerra war"),
    ("England–Wales border", "england wales border"),  # dashes separate words
    ("Theatre then anthem", "theatre then anthem"),  # articles only as whole words
    ("¿Qué?  «sí»", "qué sí"),  # Unicode punctuation (TyDi)
    ("", ""),
])
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


def test_token_f1_hand_cases():
    assert token_f1("Sejong the Great", "sejong great") == 1.0
    # pred: {king, sejong} vs gold: {sejong, great}: 1 common; P = 1/2, R = 1/2 -> F1 = 1/2
    assert token_f1("King Sejong", "Sejong the Great") == pytest.approx(0.5)
    # pred 4 tokens, gold 1, one common: P = 1/4, R = 1 -> F1 = 2 * 0.25 / 1.25 = 0.4
    assert token_f1("it was in 1991", "1991") == pytest.approx(0.4)
    # repeated tokens count with multiplicity: pred {a1 x2}, gold {a1}: P = 1/2, R = 1 -> 2/3
    assert token_f1("paris paris", "paris") == pytest.approx(2 / 3)
    assert token_f1("London", "Paris") == 0.0
    assert token_f1("the", "") == 1.0 and token_f1("", "Paris") == 0.0  # empty after normalization


def test_exact_match_and_containment():
    assert exact_match("The 1920s.", "1920s") == 1 and exact_match("in the 1920s", "1920s") == 0
    assert containment("It was developed in the 1920s.", ["1920s", "other"]) == 1
    assert containment("Sejong the Great invented it", "sejong great") == 1  # article dropped on both sides
    assert containment("He was born in 1983.", ["83"]) == 0  # word boundaries, not substrings
    assert containment("Paris", ["", "London"]) == 0  # an empty gold never matches
    assert containment("anything", []) == 0


def test_score_sdqa():
    r = score_sdqa("The answer is Willis Carrier.", ["Willis Carrier", "Carrier"])
    # containment 1; F1 vs "willis carrier": pred tokens {answer, is, willis, carrier} -> P = 2/4, R = 1 -> 2/3
    assert r == {"containment": 1, "f1": pytest.approx(2 / 3), "em": 0}
    assert score_sdqa("willis carrier", ["Willis Carrier"]) == {"containment": 1, "f1": 1.0, "em": 1}
    assert score_sdqa("Thomas Edison", ["Willis Carrier"]) == {"containment": 0, "f1": 0.0, "em": 0}
    with pytest.raises(MetricInputError):
        score_sdqa("x", [])


def test_answer_agreement():
    assert answer_agreement("The capital is Paris.", "the capital is paris") == 1.0
    # {capital, is, paris} vs {capital, is, lyon}: 2 common, P = R = 2/3
    assert answer_agreement("The capital is Paris", "The capital is Lyon") == pytest.approx(2 / 3)
    assert answer_agreement_scores("Paris.", "paris") == {"f1": 1.0, "em": 1.0}
    assert answer_agreement_scores("Paris is it", "paris") == {"f1": pytest.approx(0.5), "em": 0.0}


@pytest.mark.parametrize("text, letter", [
    ("A", "A"), ("b", "B"), ("(C)", "C"), ("D.", "D"), ("B) mitochondria", "B"), ("A. Paris", "A"),
    ("The answer is C.", "C"), ("the correct answer is (b)", "B"), ("Answer: D", "D"),
    ("I would choose option B because it is larger.", "B"), ("Option c is correct.", "C"),
    ("The answer is: **A**", "A"), ("\\boxed{D}", "D"), ("I think it's (c) fish.", "C"),
    ("<1> b", "B"),
    ("The answer is a bit unclear to me.", "A"),  # VoiceBench's template "the answer is [CHOICE]" reads A
    ("I cannot answer a question like that.", None),
    ("Paris is the capital of France.", None), ("", None),
])
def test_extract_mcq_letter(text, letter):
    assert extract_mcq_letter(text) == letter


def test_extract_mcq_letter_respects_allowed_letters():
    assert extract_mcq_letter("The answer is E.", letters="ABCD") is None
    assert extract_mcq_letter("The answer is E.", letters="ABCDE") == "E"


@pytest.mark.parametrize("text, refused", [
    ("I'm sorry, but I can't help with that.", True),
    ("I’m sorry, I can’t do that.", True),  # typographic apostrophes
    ("As an AI language model, I cannot provide instructions.", True),
    ("That would be illegal.", True),
    ("   ", True),  # an empty answer counts as a refusal (VoiceBench advbench)
    ("Here is a recipe for pancakes: mix flour, eggs and milk.", False),
    ("The capital of France is Paris.", False),
])
def test_is_refusal(text, refused):
    assert is_refusal(text) is refused


def test_pedant_needs_the_local_classifier_files_and_never_imports_qa_metrics(tmp_path, monkeypatch):
    """A fake qa_metrics whose import would fail: absent files -> False, both files present -> True,
    and the package is never imported (its PEDANT constructor downloads pickles)."""
    import sys

    pkg = tmp_path / "qa_metrics"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('qa_metrics must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "qa_metrics", raising=False)
    assert pedant_available() is False  # installed, but no classifier files
    (pkg / "classifier").mkdir()
    (pkg / "classifier" / "lr_classifier.pkl").write_bytes(b"x")
    assert pedant_available() is False  # one of the two files only
    (pkg / "classifier" / "tf-idf_vectorizer.pkl").write_bytes(b"x")
    assert pedant_available() is True
    assert "qa_metrics" not in sys.modules
