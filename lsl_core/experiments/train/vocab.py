"""Word tokens of the LLM's own vocabulary, and seeded word sequences over them (train config fields
`vocab_sentences`, `vocab_words`, `vocab_cased`; the dose groups of dose.py draw from the same words)."""

from __future__ import annotations

import numpy as np

from lsl_core.errors import LSLError


def vocabulary_words(tokenizer, n: int, cased: bool = False) -> list[str]:
    """The first n word tokens of a byte-level BPE vocabulary ("Ġword": ASCII letters, >= 3 of them), in id
    order - BPE merge order, roughly by frequency. Lowercase words only, or (cased) also capitalised ones
    ("ĠIran": names, places), kept as written; all-capital tokens never (espeak-ng may spell them)."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])

    def is_word(w: str) -> bool:
        if not (w.isascii() and w.isalpha() and len(w) >= 3):
            return False
        return w.islower() or (cased and w[0].isupper() and w[1:].islower())

    words = [t[1:] for t, _ in vocab if t[:1] in ("Ġ", "▁") and is_word(t[1:])]
    return words[:n]


def as_sentence(words: list[str], cased: bool = False) -> str:
    """Words as a spoken sentence: first letter capitalised (the rest lowercase unless cased), a final period.

    >>> as_sentence(["lavender", "Kingdom"]), as_sentence(["lavender", "Kingdom"], cased=True)
    ('Lavender kingdom.', 'Lavender Kingdom.')
    """
    text = " ".join(words)
    return (text[0].upper() + text[1:] if cased else text.capitalize()) + "."


def vocabulary_sentences(tokenizer, n: int, n_words: int, seed: int, cased: bool = False) -> list[tuple[str, str]]:
    """n seeded (id, sentence) pairs of 4-10 words drawn uniformly from vocabulary_words(tokenizer, n_words,
    cased); the first letter is capitalised (and, when not cased, the rest lowercase, as before the option)."""
    words = vocabulary_words(tokenizer, n_words, cased)
    if n and len(words) < 50:
        raise LSLError("train config field 'vocab_sentences' needs a tokenizer with word tokens ('Ġword'); "
                       f"this one has {len(words)}. Set vocab_sentences to 0.")
    rng = np.random.default_rng(seed + 7919)
    out = []
    for i in range(n):
        k = int(rng.integers(4, 11))
        ws = [words[j] for j in rng.integers(0, len(words), k)]
        out.append((f"vocab{seed}-{i:05d}", as_sentence(ws, cased)))
    return out
