"""Text units the IFEval checkers count: words, sentences, word tokens (no model files, no downloads).

The official checkers use NLTK: `RegexpTokenizer(r"\\w+")` for words (reproduced exactly here), the
Punkt sentence model for sentences and `word_tokenize` for all-capital words. Punkt and
word_tokenize need pickled model files fetched at run time, so sentences and word tokens use the
rule-based versions below instead; they agree with Punkt on ordinary prose and on the official
examples (tests/test_scoring_ifeval.py), and differ only on rare abbreviations.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+")
# Periods that do not end a sentence: titles, common abbreviations, initials, decimals, acronyms.
_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "inc", "ltd", "co", "no",
                  "fig", "e.g", "i.e", "cf", "approx", "dept", "est", "mt", "capt", "lt", "gen", "col", "ph.d")
_PROTECT = re.compile(
    r"\b(?:" + "|".join(re.escape(a) for a in sorted(_ABBREVIATIONS, key=len, reverse=True)) + r")\.(?=\s)"
    r"|(?<=\d)\.(?=\d)"  # 3.14
    r"|\b[A-Za-z]\.(?=\s*[A-Za-z]\.)"  # U.S., e.g. initials J. R.
    r"|(?<=[A-Za-z]\.)[A-Za-z]\.(?=\s)"  # the last letter of U.S.
    r"|(?<=\s)[A-Z]\.(?=\s)"  # a single initial: "John F. Kennedy"
    r"|\.(?=com\b|org\b|net\b|io\b|gov\b|edu\b)",  # domain names
    flags=re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")


def count_words(text: str) -> int:
    """Number of \\w+ runs (exactly NLTK's RegexpTokenizer(r"\\w+"), as the official checker)."""
    return len(_WORD.findall(text))


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`: split after . ! ? (with closing quotes) followed by space or the end,
    except after abbreviations, initials, decimals and domain names; blank pieces dropped."""
    protected = _PROTECT.sub(lambda m: m.group(0).replace(".", "\x00"), text)
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(protected):
        pieces.append(protected[start:m.end()])
        start = m.end()
    pieces.append(protected[start:])
    return [p.replace("\x00", ".").strip() for p in pieces if p.strip()]


def count_sentences(text: str) -> int:
    """len(split_sentences(text))."""
    return len(split_sentences(text))


_TOKEN = re.compile(r"\w+(?:['’.\-]\w+)*\.?(?<=\w\.\w\.)|\w+(?:['’\-]\w+)*|[^\w\s]")


def word_tokens(text: str) -> list[str]:
    """Words and punctuation as separate tokens, Treebank style ("U.S." stays one token)."""
    return _TOKEN.findall(text)


__all__ = ["count_words", "split_sentences", "count_sentences", "word_tokens"]
