"""A dose-response experiment of hearing: new words spoken a set number of times, the rest held back.

`hearing` shows that the shipped speech path hears the words it was trained on and almost none of the others,
and that recall rises with how many training clips spoke a word. That is observational (frequent words are
also short, common and predictable). This module makes it causal: a repeat stage whose config sets
`vocab_doses` (e.g. [3, 10, 30]) draws new words - word tokens of the LLM vocabulary (the first `vocab_words`,
`vocab_cased` as for word sequences) that no SD-QA training question holds and that the backbone reads as
complete words (not BPE fragments such as "oblig") - assigns them at random (seeded)
to dose groups of `vocab_dose_words` words each plus one control group (`vocab_control_words`, by default as
large as a group) that training never speaks, and adds sentences in which every word of a dose-d group occurs
in exactly d clips. `vocab_dose_words: 0` gives the dose groups every new word left after the control (an
open-vocabulary stage: every word of the vocabulary spoken d times); `vocab_dictionary: true` keeps only new
words an English dictionary lists (pyspellchecker's), since the completeness probe lets through fragments
such as "comp" or "diff":

    python -m lsl_core train --config configs/train/experiments/dose_repeat.json
    python -m lsl_core dose-test --config configs/train/experiments/dose_repeat.json --out results/dose-test
    python -m lsl_core hearing --checkpoint <its last checkpoint> --samples manifest:results/dose-test --asr

The test sentences (`held_out_sentences`, another seed: none is a training sentence) mix one word of every group,
control included, and are spoken by voices and renditions of their own; `hearing`'s exposure bins then read
recall per dose against the control, on the same clips, with Whisper's transcript as the open-vocabulary
reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lsl_core.data.synth import UNSEEN_VOICE
from lsl_core.errors import LSLError
from lsl_core.experiments.train.vocab import as_sentence, vocabulary_words

DOSE_SEED = 104723  # offsets the config seed for the group assignment
TEST_SEED = 611953  # ... and for the test sentences (never a training sentence's seed)
TEST_WORDS = 6  # words per test sentence
COMPLETE_P = 0.5  # a word is complete when the backbone continues it with less than this probability


def new_words(tokenizer, n_words: int, cased: bool, trained: set[str]) -> list[str]:
    """Word tokens of the vocabulary (vocab.vocabulary_words(tokenizer, n_words, cased), in id order) whose
    normalised form is in no training text (`trained`: normalised words), each once."""
    from lsl_core.model.asr import normalize_transcript

    out, seen = [], set()
    for w in vocabulary_words(tokenizer, n_words, cased):
        norm = normalize_transcript(w)
        if norm and norm not in trained and norm not in seen:
            seen.add(norm)
            out.append(w)
    return out


def complete_words(model, candidates: list[str], need: int, threshold: float = COMPLETE_P,
                   batch_size: int = 64) -> list[str]:
    """The first `need` candidates (in their order) that the backbone reads as complete words: after
    "Dictionary entry: <word>" it gives under `threshold` of its next-token probability to tokens that continue
    the word (ASCII tokens starting with a letter, i.e. without a leading space). BPE fragments such as "oblig"
    or "acqu" are mostly continued; "output" or "leather" are not. Fewer than `need` when the candidates run out.
    model: an LSLM (its llm and tokenizer). The answer is cached on disk (complete_words_cache_path): every start
    and resume of a stage asks again, and on a CPU a 12,000-token vocabulary takes over a minute of forwards."""
    import json
    import os

    path = complete_words_cache_path(model, candidates, need, threshold, batch_size)
    if path.is_file():
        return json.loads(path.read_text())
    kept = _complete_words(model, candidates, need, threshold, batch_size)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(kept))
    os.replace(tmp, path)
    return kept


def complete_words_cache_path(model, candidates: list[str], need: int, threshold: float, batch_size: int) -> Path:
    """cache_dir("dose-words") / <key>.json. Key: the backbone's weight digest (batch.module_digest, which names its
    device), its tokenizer's vocabulary, the candidates in order, need, threshold and batch size (left padding
    within a batch changes the logits a little)."""
    import hashlib
    import json

    from lsl_core.cache import cache_dir
    from lsl_core.model.batch import module_digest

    vocab = sorted(model.tokenizer.get_vocab().items())
    key = json.dumps([module_digest(model.llm), vocab, candidates, need, threshold, batch_size])
    return cache_dir("dose-words") / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _complete_words(model, candidates: list[str], need: int, threshold: float, batch_size: int) -> list[str]:
    """complete_words without its cache."""
    import torch

    tok = model.tokenizer
    cont = torch.zeros(len(tok))  # [V] 1 = a token that continues a word
    for t, i in tok.get_vocab().items():
        if t[:1].isascii() and t[:1].isalpha() and i < len(cont):
            cont[i] = 1.0
    device = next(model.llm.parameters()).device
    kept: list[str] = []
    for i in range(0, len(candidates), batch_size):
        chunk = candidates[i:i + batch_size]
        enc = tok([f"Dictionary entry: {w}" for w in chunk], return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            logits = model.llm(**{k: v.to(device) for k, v in enc.items()}).logits[:, -1].float()  # [b, V']
        p = logits.softmax(-1)[:, :len(cont)].cpu() @ cont  # [b] probability of continuing the word
        kept += [w for w, x in zip(chunk, p.tolist()) if x < threshold]
        if len(kept) >= need:
            return kept[:need]
    return kept


def dose_groups(words: list[str], doses: tuple[int, ...], per_group: int,
                control: int | None = None) -> dict[int, list[str]]:
    """dose -> its words, and 0 -> the control words: consecutive chunks of `words` (pass them in a random order:
    the assignment is then random), per_group words for each dose in the order of doses, then `control` words
    (None: per_group). per_group 0: every word left after the control, split evenly (the remainder unused).

    >>> dose_groups([f"w{i}" for i in range(9)], (2, 5), 3)
    {2: ['w0', 'w1', 'w2'], 5: ['w3', 'w4', 'w5'], 0: ['w6', 'w7', 'w8']}
    >>> dose_groups([f"w{i}" for i in range(8)], (2, 5), 0, control=1)
    {2: ['w0', 'w1', 'w2'], 5: ['w3', 'w4', 'w5'], 0: ['w6']}
    """
    if not doses or len(set(doses)) != len(doses) or min(doses) <= 0:
        raise LSLError(f"train config field 'vocab_doses' must list distinct positive clip counts, got {list(doses)}.")
    control = per_group if control is None else control
    per_group = per_group or (len(words) - control) // len(doses)  # 0: every word left after the control
    need = max(per_group, 1) * len(doses) + control
    if control <= 0 or len(words) < need:
        raise LSLError(f"vocab_doses: {len(doses)} dose groups of {max(per_group, 1)} words + a control of "
                       f"{control} need {need} new words, but the first vocab_words word tokens hold {len(words)} "
                       "complete words that no training question has; raise vocab_words or lower vocab_dose_words / "
                       "vocab_control_words.")
    out = {int(d): list(words[k * per_group:(k + 1) * per_group]) for k, d in enumerate(doses)}
    out[0] = list(words[len(doses) * per_group:need])
    return out


def dictionary_words(words: list[str]) -> list[str]:
    """The words (in their order) that pyspellchecker's English dictionary lists, case-insensitively: real words
    ("leather", "lavender"), not the BPE fragments the backbone's vocabulary also holds ("comp", "diff", "acc")."""
    from spellchecker import SpellChecker

    listed = SpellChecker(language="en").word_frequency
    return [w for w in words if w.lower() in listed]


def dose_sentences(groups: dict[int, list[str]], seed: int, cased: bool = False) -> list[tuple[str, str]]:
    """Seeded (id, sentence) pairs of 4-10 words in which every word of dose group d (d > 0) occurs in exactly d
    sentences (once each) and no control word occurs. Ids "dose<seed>-<i>".

    >>> s = dose_sentences({3: ["alpha", "beta"], 1: ["gamma"], 0: ["delta"]}, seed=0)
    >>> sorted(w for _, t in s for w in t.lower().rstrip(".").split())
    ['alpha', 'alpha', 'alpha', 'beta', 'beta', 'beta', 'gamma']
    """
    rng = np.random.default_rng(seed + DOSE_SEED + 1)
    tokens = [w for d, ws in groups.items() if d > 0 for w in ws for _ in range(d)]
    queue = [tokens[i] for i in rng.permutation(len(tokens))]
    # Each sentence takes the first k distinct words of the queue (at their first places) and leaves the rest in
    # order. The queue is a linked list, so a sentence costs the places it reads, not the queue's length (a list
    # rebuilt per sentence made 8,391 words x 30 clips take minutes: quadratic).
    n = len(queue)
    nxt = list(range(1, n + 1))  # nxt[i]: the next place still in the queue (n: the end)
    prv = list(range(-1, n - 1))  # prv[i]: the previous one (-1: the head)
    head = 0  # the first place still in the queue
    out: list[tuple[str, str]] = []
    while head < n:
        k = int(rng.integers(4, 11))
        cur: list[str] = []
        i = head
        while i < n and len(cur) < k:
            j = nxt[i]
            if queue[i] not in cur:  # take it: unlink place i
                cur.append(queue[i])
                if prv[i] < 0:
                    head = j
                else:
                    nxt[prv[i]] = j
                if j < n:
                    prv[j] = prv[i]
            i = j
        out.append((f"dose{seed}-{len(out):05d}", as_sentence(cur, cased)))
    return out


def held_out_sentences(groups: dict[int, list[str]], n: int, seed: int, cased: bool = False) -> list[tuple[str, str]]:
    """n seeded held-out (id, sentence) pairs of TEST_WORDS distinct words: one word of every group (control
    included), the rest from groups drawn at random, in random order; each group's words are used in turn
    (a seeded order), so every word is tested about equally often. Ids "dosetest<seed>-<i>"."""
    if n <= 0:
        raise LSLError(f"the dose test set needs a positive number of sentences, got {n}.")
    rng = np.random.default_rng(seed + TEST_SEED)
    keys = sorted(groups)
    orders = {d: [groups[d][i] for i in rng.permutation(len(groups[d]))] for d in keys}
    nxt = {d: 0 for d in keys}
    out = []
    for i in range(n):
        picks = keys + [keys[int(j)] for j in rng.integers(0, len(keys), max(0, TEST_WORDS - len(keys)))]
        ws: list[str] = []
        for d in picks:
            for _ in range(len(orders[d])):  # next word of the group not already in this sentence
                w = orders[d][nxt[d] % len(orders[d])]
                nxt[d] += 1
                if w not in ws:
                    ws.append(w)
                    break
        ws = [ws[j] for j in rng.permutation(len(ws))]
        out.append((f"dosetest{seed}-{i:04d}", as_sentence(ws, cased)))
    return out


def config_groups(cfg, model) -> dict[int, list[str]]:
    """The dose groups of a train config (vocab_doses, vocab_dose_words, vocab_control_words, vocab_dictionary,
    vocab_words, vocab_cased, seed): the new words (new_words; trained = the words of every SD-QA training
    question, the English test split; with vocab_dictionary only dictionary_words) in a seeded random order,
    kept when complete (complete_words, by the config's backbone `model`), then cut into groups (dose_groups)."""
    from lsl_core.data.sdqa import load_sdqa_train_questions
    from lsl_core.model.asr import normalize_transcript

    trained = {w for q in load_sdqa_train_questions() for w in normalize_transcript(q.question).split()}
    pool = new_words(model.tokenizer, cfg.vocab_words, cfg.vocab_cased, trained)
    if cfg.vocab_dictionary:
        pool = dictionary_words(pool)
    shuffled = [pool[i] for i in np.random.default_rng(cfg.seed + DOSE_SEED).permutation(len(pool))]
    control = cfg.vocab_dose_words if cfg.vocab_control_words is None else cfg.vocab_control_words
    need = cfg.vocab_dose_words * len(cfg.vocab_doses) + control if cfg.vocab_dose_words else len(shuffled)
    return dose_groups(complete_words(model, shuffled, need), tuple(cfg.vocab_doses), cfg.vocab_dose_words,
                       control)


DOSE_VOICES = ("en-gb", UNSEEN_VOICE)  # a training voice (at espeak-ng's default rendition) and the unseen one
DOSE_N_SENTENCES = 200


def backbone(cfg):
    """The config's LLM (and tokenizer) as an LSLM with a seeded adaptor: what complete_words reads."""
    import torch

    from lsl_core.model.loading import CheckpointManifest, load_checkpoint

    m = CheckpointManifest(name=f"{cfg.name}-backbone", llm=cfg.llm, encoder=cfg.encoder, family=cfg.family,
                           strategy="none", downsample=cfg.downsample, seed=cfg.adaptor_seed,
                           encoder_window=cfg.encoder_window)
    return load_checkpoint(m, device=torch.device("cpu"), dtype=torch.float32)


def register(subparsers) -> None:
    """Add `dose-test` to `python -m lsl_core`."""
    p = subparsers.add_parser("dose-test", help="held-out test sentences of a dose-response train config",
                              description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, type=Path, help="the train config with vocab_doses")
    p.add_argument("--out", required=True, type=Path, help="output folder (a manifest sample set: manifest:<out>)")
    p.add_argument("--n-sentences", type=int, default=DOSE_N_SENTENCES, help="held-out sentences")
    p.add_argument("--voices", default=",".join(DOSE_VOICES), help="comma-separated espeak-ng voices")
    p.add_argument("--workers", type=int, default=2, help="parallel espeak-ng processes")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from lsl_core.data.synth import build_mini_set
    from lsl_core.experiments.train.config import TrainConfig

    cfg = TrainConfig.from_json(args.config)
    if not cfg.vocab_doses:
        raise LSLError(f"{args.config} sets no vocab_doses: it has no dose groups to test.")
    voices = [v.strip() for v in args.voices.split(",") if v.strip()]
    groups = config_groups(cfg, backbone(cfg))
    pairs = held_out_sentences(groups, args.n_sentences, cfg.seed, cfg.vocab_cased)
    questions = [{"example_id": i, "question": t, "split": "dose-test"} for i, t in pairs]
    manifest = build_mini_set(args.out, questions, voices, name="dose-test", workers=args.workers, progress=True,
                              unseen_voice=UNSEEN_VOICE if UNSEEN_VOICE in voices else None)
    sizes = ", ".join(f"dose {d}: {len(w)}" for d, w in sorted(groups.items()))
    print(f"wrote {len(pairs) * len(voices)} clips of {len(pairs)} held-out sentences over the dose groups "
          f"({sizes} words; dose 0 = the control) -> {manifest}")
    return 0
