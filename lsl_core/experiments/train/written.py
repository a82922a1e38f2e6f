"""Questions the backbone writes: more training text in the style of the SD-QA questions, never evaluation data.

The ~1,000 SD-QA test questions are all the natural question text the project may train on. The backbone
can write more: a raw few-shot list of five seeded training questions ("Trivia questions:\\n1. ...\\n5. ...\\n6.")
continued by sampling up to the end of the line. A written question is kept only if it

- ends with "?", has 3-25 words and is printable ASCII (espeak-ng reads it as English);
- is not a training question and no other kept question (exact, after normalisation);
- is not near any *banned* question - every SD-QA dev question (the evaluation split) and every
  monitoring question: word-set Jaccard < `NEAR` (so "What is the capital of Finland?" is dropped when a
  dev question asks "What's the capital city of Finland?").

Sampling is seeded per batch (seed, batch index) and every batch's raw continuations are cached on disk
(key: LLM weights, prompt format, sampling settings, the example pool), so a run that asks for more
questions reuses the batches it already has and the same config always gives the same questions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time

import numpy as np
import torch

from lsl_core.model import batch as B
from lsl_core.model.lslm import LSLM

NEAR = 0.5  # word-set Jaccard at or above which a written question counts as a near copy of a banned one
N_SHOT = 5
TEMPERATURE, TOP_P, MAX_NEW_TOKENS = 1.0, 0.95, 24
_FORMAT = "v1: Trivia questions list, 5 shots, sampled to end of line"


def few_shot_prompt(examples: list[str]) -> str:
    """The raw (no chat template) list prompt whose next line is a new question."""
    return "Trivia questions:\n" + "".join(f"{k + 1}. {q}\n" for k, q in enumerate(examples)) + f"{len(examples) + 1}."


def normalised(text: str) -> str:
    """Lower case, single spaces: the form in which two questions count as the same."""
    return " ".join(text.lower().split())


def words(text: str) -> frozenset[str]:
    """Lower-cased alphanumeric words of a question (apostrophes kept: "what's")."""
    return frozenset(re.findall(r"[a-z0-9']+", text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def verdict(text: str, known: set[str], banned: list[frozenset[str]]) -> str:
    """Why a written question is dropped - "malformed", "repeat" (a training or already kept question),
    "near" (near a banned one) - or "kept" (module docstring). known: normalised() questions."""
    n = len(text.split())
    if not (text.endswith("?") and 3 <= n <= 25 and text.isascii() and text.isprintable()):
        return "malformed"
    if normalised(text) in known:
        return "repeat"
    w = words(text)
    return "kept" if all(jaccard(w, b) < NEAR for b in banned) else "near"


def _batch_prompts(pool: list[str], seed: int, index: int, size: int) -> list[str]:
    rng = np.random.default_rng([seed, index, 104729])
    return [few_shot_prompt([pool[i] for i in rng.choice(len(pool), N_SHOT, replace=False)]) for _ in range(size)]


@torch.no_grad()
def _sample_batch(model: LSLM, prompts: list[str], seed: int, index: int) -> list[str]:
    """One batch of sampled first lines (stripped), seeded by (seed, index)."""
    tok, llm = model.tokenizer, model.llm
    side, tok.padding_side = tok.padding_side, "left"
    try:
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    finally:
        tok.padding_side = side
    newline = tok("\n", add_special_tokens=False).input_ids
    cuda = [model.device.index or 0] if model.device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):  # the caller's random streams stay as they were
        torch.manual_seed(int.from_bytes(hashlib.sha256(f"{seed}|{index}".encode()).digest()[:6], "little"))
        out = llm.generate(**enc, max_new_tokens=MAX_NEW_TOKENS, do_sample=True, temperature=TEMPERATURE,
                           top_p=TOP_P, pad_token_id=tok.pad_token_id, eos_token_id=[*newline, B.eos_id(model)])
    return [tok.decode(row, skip_special_tokens=True).split("\n")[0].strip() for row in out[:, enc.input_ids.shape[1]:]]


def written_questions(model: LSLM, pool: list[str], banned: list[str], n: int, seed: int, batch_size: int = 64,
                      max_batches: int | None = None, progress: bool = True) -> list[tuple[str, str]]:
    """n (id, question) pairs the backbone writes from few-shot lists of `pool` questions (module docstring).

    pool: the training questions (the only examples shown); banned: questions no kept one may be near
    (dev + monitoring). Stops early, with fewer than n, after `max_batches` batches (default: enough for
    n at a 25 % keep rate).
    """
    from lsl_core.cache import cache_dir

    if n <= 0:
        return []
    key = hashlib.sha256(json.dumps([B.module_digest(model.llm), _FORMAT, TEMPERATURE, TOP_P, MAX_NEW_TOKENS,
                                     N_SHOT, seed, batch_size, pool], sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("written") / f"{key}.json"
    batches: dict[str, list[str]] = json.loads(path.read_text()) if path.is_file() else {}
    known = {normalised(q) for q in pool}
    banned_w = [words(q) for q in banned]
    kept: list[tuple[str, str]] = []
    counts: dict[str, int] = {}
    limit = max_batches if max_batches is not None else 4 * n // batch_size + 1
    t0 = time.time()
    for index in range(limit):
        fresh = str(index) not in batches
        if fresh:
            batches[str(index)] = _sample_batch(model, _batch_prompts(pool, seed, index, batch_size), seed, index)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(batches))
            os.replace(tmp, path)
        for text in batches[str(index)]:
            if len(kept) >= n:
                break
            v = verdict(text, known, banned_w)
            counts[v] = counts.get(v, 0) + 1
            if v == "kept":
                known.add(normalised(text))
                kept.append((f"written{seed}-{len(kept):05d}", text))
        if progress and fresh:
            print(f"written questions: {len(kept)}/{n} kept after {index + 1} batches ({time.time() - t0:.0f} s)",
                  flush=True)
        if len(kept) >= n:
            break
    if progress:
        print(f"written questions: kept {len(kept)} of {sum(counts.values())} sampled; dropped "
              f"{counts.get('near', 0)} near a dev/monitoring question, {counts.get('malformed', 0)} malformed, "
              f"{counts.get('repeat', 0)} repeats", flush=True)
    return kept
