"""The closed-vocabulary ceiling: how far could a speech path that hears the words its training spoke, and no
others, agree with the text answers?

    python -m lsl_core closed-vocab --checkpoint assets/checkpoints/qa-lora/lora-step2900 --results assets/results

`hearing` finds that the demo speech path hears the words training spoke (often enough) and almost none of the
others. This asks what that costs, with no speech model in the loop: each clip's question is **closed**, every
word the checkpoint's lineage (hearing.lineage) spoke in fewer than `min_clips` training clips (1 = never
spoken) is

- ``drop``: removed (its trailing punctuation stays), or
- ``nearest``: replaced by the known word of the most similar spelling (difflib ratio; the closed-vocabulary
  speech path puts a known word of similar sound or topic in an unknown one's place), or
- ``sound``: replaced by the known word whose espeak-ng phonemes are most similar (difflib ratio over phoneme
  sequences, data.synth.phonemes),

in one of two texts:

- ``typed``: the typed question, i.e. perfect hearing of the known words;
- ``asr``: the checkpoint's Whisper transcript (the cascade's input), i.e. Whisper's hearing of them.

The checkpoint's own text path answers each closed text (greedy, as the cascade answers its transcript), and
its agreement with the text answer (token F1, `answer_agreement`) is set against the cascade's on the same
clips: ratio = closed / cascade, with the paired bootstrap over questions of `headline_intervals`. Only
unknown words change, case and punctuation of the rest stay as typed or transcribed, so a text without an
unknown word is the text (or cascade) prompt itself and keeps its stored answer. `--vocab-words N` also counts
the LLM's first N word tokens as known: the ceiling a training vocabulary that wide would allow.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import re
from pathlib import Path
from typing import Callable

import pandas as pd

from lsl_core.cli import add_device_args
from lsl_core.data.synth import UNSEEN_VOICE
from lsl_core.errors import LSLError
from lsl_core.experiments.hearing import (Lineage, lineage, trained_note, unseen_voice_check, untrained_voice_notes,
                                         words)
from lsl_core.results import read_table

SOURCES = ("typed", "asr")  # which text is closed (module docstring)
MODES = ("drop", "nearest", "sound")  # what becomes of an unknown word (module docstring)
DEFAULT_MODES = ("drop", "nearest")  # the command's default (sound: one espeak-ng call per unknown word)
SPEECH_ROW = "end-to-end speech"  # the condition label of the checkpoint's real speech answers
RESULTS_FILE = "closed_vocab.parquet"  # the rows the Checkpoints page reads from the results folder
COMMAND = ("python -m lsl_core closed-vocab --checkpoint assets/checkpoints/qa-lora/lora-step2900 "
           "--results assets/results --min-clips 1 30 --mode drop nearest sound "
           "--out assets/results/closed_vocab.parquet")  # writes them
_CHUNK = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)  # leading punctuation, core, trailing punctuation


def known_words(lin: Lineage, min_clips: int = 1) -> list[str]:
    """The words a lineage spoke in at least min_clips training clips, sorted (min_clips 1 = every spoken word).

    >>> known_words(Lineage(frozenset({"who", "is"}), frozenset({"nepal"}), ("t",), clips={"who": 9, "is": 9,
    ...     "nepal": 1}), min_clips=2)
    ['is', 'who']
    """
    if min_clips < 1:
        raise LSLError(f"closed-vocab: min_clips must be at least 1 (1 = words never spoken), got {min_clips}.")
    spoken = lin.question_words | lin.other_words
    return sorted(w for w in spoken if (lin.exposure(w) >= min_clips if lin.clips else min_clips == 1))


def nearest_word(word: str, vocab: list[str]) -> str:
    """The vocabulary word of the most similar spelling (difflib ratio; ties: the later word alphabetically).

    >>> nearest_word("argentine", ["angola", "argent", "tine"])
    'argent'
    """
    if not vocab:
        raise LSLError("closed-vocab: the known vocabulary is empty; lower --min-clips.")
    return difflib.get_close_matches(word, vocab, n=1, cutoff=0.0)[0]


def nearest_by_sound(ph: tuple[str, ...], vocab: list[str], vocab_ph: list[tuple[str, ...]]) -> str:
    """The vocabulary word whose phonemes are most similar to `ph` (difflib ratio over phoneme sequences; ties:
    the later word alphabetically, as nearest_word).

    >>> hangul = ("h", "a", "N", "g", "V", "l")
    >>> nearest_by_sound(hangul, ["hang", "hungry"], [("h", "a", "N"), ("h", "V", "N", "g", "r", "i")])
    'hang'
    """
    if not vocab:
        raise LSLError("closed-vocab: the known vocabulary is empty; lower --min-clips.")
    s = difflib.SequenceMatcher(autojunk=False)
    s.set_seq2(ph)
    best = (-1.0, "")
    for w, p in zip(vocab, vocab_ph):
        s.set_seq1(p)
        if s.real_quick_ratio() < best[0] or s.quick_ratio() < best[0]:
            continue  # upper bounds of the ratio: cannot reach the best
        best = max(best, (s.ratio(), w))
    return best[1]


def close_text(text: str, known: set[str], mode: str, nearest: Callable[[str], str] | None = None
               ) -> tuple[str, int, int]:
    """A text with every whitespace chunk holding an unknown word dropped or replaced (module docstring).

    Returns (closed text, chunks changed, chunks with words). A chunk's words are hearing.words of it
    ("Federation's?" -> ["federations"]); it is unknown when any of them is not in `known`. The replacing modes
    need `nearest` (the chunk's words joined -> the known word to put there) and keep a leading capital.

    >>> close_text("Who founded Hangul's court?", {"who", "founded", "court"}, "drop")
    ('Who founded court?', 1, 4)
    >>> close_text("Who founded Hangul?", {"who", "founded", "hang"}, "nearest", lambda w: "hang")
    ('Who founded Hang?', 1, 3)
    """
    if mode not in MODES:
        raise LSLError(f"closed-vocab: mode must be one of {MODES}, got {mode!r}.")
    if mode != "drop" and nearest is None:
        raise LSLError(f"closed-vocab: mode {mode!r} needs the known word nearest to each unknown one.")
    out: list[str] = []
    changed = with_words = 0
    for chunk in text.split():
        ws = words(chunk)
        if not ws:
            out.append(chunk)
            continue
        with_words += 1
        if all(w in known for w in ws):
            out.append(chunk)
            continue
        changed += 1
        pre, core, post = _CHUNK.match(chunk).groups()
        if mode == "drop":
            if post and out:
                out[-1] += post
            continue
        new = nearest("".join(ws))
        out.append(pre + (new[:1].upper() + new[1:] if core[:1].isupper() else new) + post)
    return " ".join(out), changed, with_words


def condition_label(source: str, mode: str, min_clips: int, extra: int = 0) -> str:
    """A condition's name in tables and figures.

    >>> condition_label("asr", "nearest", 30)
    'Whisper transcript, words of < 30 clips -> nearest known'
    >>> condition_label("typed", "drop", 1, 12000)
    'typed question, never-spoken words dropped (+ 12000 vocabulary words)'
    """
    what = "never-spoken words" if min_clips == 1 else f"words of < {min_clips} clips"
    how = {"drop": "dropped", "nearest": "-> nearest known", "sound": "-> nearest-sounding known"}[mode]
    text = f"{'typed question' if source == 'typed' else 'Whisper transcript'}, {what} {how}"
    return text + (f" (+ {extra} vocabulary words)" if extra else "")


def closed_rows(model, rows: pd.DataFrame, lin: Lineage, sources=SOURCES, modes=DEFAULT_MODES, min_clips=(1,),
                max_new_tokens: int = 24, batch_size: int = 16, progress: bool = False,
                extra_words: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per clip x condition (source, mode, min_clips): the closed text, its answer by the checkpoint's
    text path and that answer's agreement with the text answer, next to the cascade's agreement.

    rows: the checkpoint's evaluate rows (question, voice, text_answer, transcript, cascade_answer,
    cascade_agreement, ...). Columns added: condition, source, mode, min_clips, closed_text, chunks_closed,
    chunks, answer, agreement (replaced: the closed answer's), speech_agreement (the real speech answer's).
    progress: print a line per condition (texts answered, seconds). extra_words: known besides the lineage's
    (normalised words, e.g. the LLM's commonest word tokens: the ceiling of a wider training vocabulary).
    """
    import time

    from lsl_core.experiments.evaluate import text_answers
    from lsl_core.scoring import answer_agreement

    need = {"question", "voice", "text_answer", "transcript", "cascade_answer", "cascade_agreement", "agreement"}
    if "asr" not in sources:
        need -= {"transcript", "cascade_answer"}
    if not need <= set(rows.columns):
        raise LSLError(f"closed-vocab: the evaluate rows lack {sorted(need - set(rows.columns))}; evaluate the "
                       "checkpoint with its cascade (no --no-cascade) first.")
    parts = []
    for k in min_clips:
        vocab = sorted(set(known_words(lin, k)) | set(extra_words))
        known = set(vocab)
        replacers = {"nearest": functools.cache(lambda w: nearest_word(w, vocab))}  # once per word
        if "sound" in modes:
            from lsl_core.data.synth import phonemes

            vocab_ph = phonemes(vocab)
            replacers["sound"] = functools.cache(lambda w: nearest_by_sound(phonemes([w])[0], vocab, vocab_ph))
        for source in sources:
            col, stored = ("question", "text_answer") if source == "typed" else ("transcript", "cascade_answer")
            for mode in modes:
                texts = rows[col].fillna("").astype(str)
                closed = [close_text(t, known, mode, replacers.get(mode)) for t in texts]
                todo = [c for (c, n, _), t in zip(closed, texts) if n and c.strip()]
                label = condition_label(source, mode, k, len(set(extra_words)))
                t0 = time.time()
                answers = dict(zip(todo, text_answers(model, todo, max_new_tokens, batch_size))) if todo else {}
                if progress:
                    print(f"  {label}: {len(set(todo))} changed texts answered in {time.time() - t0:.0f} s", flush=True)
                ans = [(answers.get(c, "") if n else s) if t.strip() else ""
                       for (c, n, _), t, s in zip(closed, texts, rows[stored].fillna("").astype(str))]
                parts.append(rows.assign(
                    condition=label, source=source, mode=mode, min_clips=k, closed_text=[c for c, _, _ in closed],
                    chunks_closed=[n for _, n, _ in closed], chunks=[m for _, _, m in closed], answer=ans,
                    speech_agreement=rows["agreement"],
                    agreement=[float(answer_agreement(a, t)) for a, t in zip(ans, rows["text_answer"])]))
    return pd.concat(parts, ignore_index=True)


def ceiling_table(closed: pd.DataFrame, unseen_voice: str = UNSEEN_VOICE) -> pd.DataFrame:
    """Per condition (and the checkpoint's real speech answers first, SPEECH_ROW) x {seen, unseen}: agreement,
    cascade agreement and their ratio with 95% bootstrap CIs over questions (headline_intervals), plus the share
    of word-holding chunks closed (0 for the speech row).

    closed: closed_rows (one condition's rows give the speech row: agreement = their speech_agreement).
    """
    one = closed[closed["condition"] == closed["condition"].iloc[0]]
    speech = one.assign(agreement=one["speech_agreement"], chunks_closed=0).assign(condition=SPEECH_ROW)
    return ratio_table(pd.concat([speech, closed], ignore_index=True), unseen_voice)


def coverage_label(never: int) -> str:
    """The coverage_table row of questions holding `never` words training never spoke.

    >>> [coverage_label(n).removeprefix(SPEECH_ROW) for n in (0, 1, 2, 5)]
    [', every word spoken in training', ', 1 word never spoken', ', 2+ words never spoken', ', 2+ words never spoken']
    """
    if never == 0:
        return f"{SPEECH_ROW}, every word spoken in training"
    return f"{SPEECH_ROW}, {'1 word' if never == 1 else '2+ words'} never spoken"


def never_spoken(questions: pd.Series, lin: Lineage) -> pd.Series:
    """Per row, how many words of the question (every occurrence) the lineage never spoke."""
    return questions.map(lambda q: sum(lin.group(w) == "never" for w in words(q))).astype(int)


def coverage_table(rows: pd.DataFrame, unseen_voice: str = UNSEEN_VOICE) -> pd.DataFrame:
    """The checkpoint's measured speech answers (no model run), all questions (SPEECH_ROW) and then split by how
    many words of the question its lineage never spoke (coverage_label): the ceiling table's columns, with
    closed_share = the share of the questions' words never spoken. Beside the ceiling it says how far the
    speech path falls short on questions it could in principle hear, and how much each unknown word costs.

    rows: evaluate's per-clip rows of one checkpoint (question, voice, agreement, cascade_agreement) with
    never_spoken (never_spoken(); closed-vocab writes it into its rows, whose speech_agreement is used then).
    """
    if "speech_agreement" in rows.columns:  # closed rows: one condition's copy of the clips
        rows = rows[rows["condition"] == rows["condition"].iloc[0]].assign(agreement=rows["speech_agreement"])
    n_never = rows["never_spoken"].astype(int)
    both = rows.assign(chunks_closed=n_never, chunks=rows["question"].map(lambda q: len(words(q))))
    order = [coverage_label(n) for n in (0, 1, 2)]
    bins = both.assign(condition=n_never.map(coverage_label))
    bins = bins.iloc[bins["condition"].map(order.index).argsort(kind="stable")]
    return ratio_table(pd.concat([both.assign(condition=SPEECH_ROW), bins], ignore_index=True), unseen_voice)


def ratio_table(both: pd.DataFrame, unseen_voice: str) -> pd.DataFrame:
    """headline_intervals per condition x {seen, unseen} of rows (condition, question, voice, agreement,
    cascade_agreement, chunks_closed, chunks), in the rows' order, with closed_share = closed / all chunks."""
    from lsl_core.experiments.evaluate import headline_intervals

    keep = ["question", "voice", "agreement", "cascade_agreement", "chunks_closed", "chunks"]
    name = str(both["checkpoint"].iloc[0]) if "checkpoint" in both.columns else None
    both = both[keep].assign(checkpoint=both["condition"].to_numpy(), strategy="", step=0,
                             text_containment=float("nan"))  # no gold scoring here
    table = headline_intervals(both, unseen_voice).rename(columns={"checkpoint": "condition"})
    both["group"] = both["voice"].where(both["voice"] == unseen_voice, "seen")
    sums = both.groupby(["checkpoint", "group"], sort=False)[["chunks_closed", "chunks"]].sum()
    share = sums["chunks_closed"] / sums["chunks"].clip(lower=1)
    table["closed_share"] = [float(share.get((c, v), float("nan"))) for c, v in zip(table["condition"],
                                                                                    table["voice"])]
    if name is not None:
        table.insert(0, "checkpoint", name)
    return table[[c for c in ("checkpoint", "condition", "voice", "n_q", "closed_share", "agreement",
                              "agreement_lo", "agreement_hi", "cascade_agreement", "ratio", "ratio_lo", "ratio_hi")
                  if c in table.columns]]


def format_table(table: pd.DataFrame, share: str | None = "words closed") -> str:
    """The ceiling (or coverage) table as markdown (percent; ratio as ×); `share` heads closed_share's column
    (None: no such column)."""
    lines = [f"| what answers | voices | questions |{f' {share} |' if share else ''} agreement | cascade | ratio |",
             "|---|---|--:|" + ("--:|" if share else "") + "--:|--:|--:|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['condition']} | {r['voice']} | {r['n_q']} | "
                     + (f"{100 * r['closed_share']:.0f} % | " if share else "")
                     + f"{100 * r['agreement']:.1f} [{100 * r['agreement_lo']:.1f}, {100 * r['agreement_hi']:.1f}] | "
                     f"{100 * r['cascade_agreement']:.1f} | "
                     f"{r['ratio']:.2f}× [{r['ratio_lo']:.2f}, {r['ratio_hi']:.2f}] |")
    return "\n".join(lines)


def evaluate_files(results: Path, command: str = "closed-vocab") -> list[Path]:
    """The `*_samples.parquet` files of an evaluate results folder; LSLError (prefixed with `command`) when there
    are none. Cheap: the commands call it before any model loads."""
    files = sorted(Path(results).glob("*_samples.parquet"))
    if not files:
        other = ", or --samples to evaluate now" if command == "closed-vocab" else ""
        raise LSLError(f"{command}: {results} holds no evaluate rows (*_samples.parquet); pass the --out folder "
                       f"of `python -m lsl_core evaluate`{other}.")
    return files


def stored_rows(results: Path, checkpoint: str, command: str = "closed-vocab",
                max_new_tokens: int | None = None) -> pd.DataFrame:
    """A checkpoint's per-clip rows from an evaluate results folder (the one `*_samples.parquet` in it that holds
    them; two such files, two runs of the checkpoint, are refused rather than pooled). max_new_tokens: the answer
    length the caller answers new texts with; refused when the run's `<name>_summary.json` says its answers had
    another (stored and new answers would then differ in length, not only in their text)."""
    files = evaluate_files(results, command)
    holding = []
    for f in files:
        d = read_table(f)
        if "checkpoint" in d.columns and (d["checkpoint"] == checkpoint).any():
            holding.append((f, d[d["checkpoint"] == checkpoint]))
    if not holding:
        raise LSLError(f"{command}: {results} has no rows of checkpoint {checkpoint!r}; evaluate it there first.")
    if len(holding) > 1:
        raise LSLError(f"{command}: {checkpoint!r} has rows in {len(holding)} evaluate files of {results} "
                       f"({', '.join(f.name for f, _ in holding)}): two runs, which would be pooled; move all but "
                       "one into another folder and pass that folder.")
    f, rows = holding[0]
    meta_file = f.with_name(f.name.removesuffix("_samples.parquet") + "_summary.json")
    if max_new_tokens is not None and meta_file.is_file():
        try:
            stored = json.loads(meta_file.read_text()).get("meta", {}).get("max_new_tokens")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            stored = None  # unreadable meta: nothing to check against
        if stored is not None and int(stored) != int(max_new_tokens):
            raise LSLError(f"{command}: the evaluate rows in {f} were answered with --max-new-tokens {stored}, new "
                           f"texts would be answered with {max_new_tokens}; pass --max-new-tokens {stored}.")
    return rows.drop_duplicates("sample_id").reset_index(drop=True)


def register(subparsers) -> None:
    """Add `closed-vocab` to `python -m lsl_core`."""
    p = subparsers.add_parser("closed-vocab", help="the closed-vocabulary ceiling: answers to questions with the "
                                                   "words training never spoke removed",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a trained checkpoint folder or its manifest.json")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--results", type=Path, help="an evaluate --out folder holding this checkpoint's rows")
    src.add_argument("--samples", help="evaluate on this sample set now (cached like evaluate)")
    p.add_argument("--n-questions", type=int, default=None, help="only the first N distinct questions (all voices)")
    p.add_argument("--source", nargs="+", choices=SOURCES, default=list(SOURCES), help="texts to close")
    p.add_argument("--mode", nargs="+", choices=MODES, default=list(DEFAULT_MODES),
                   help="what becomes of an unknown word: dropped, or the known word nearest in spelling / sound")
    p.add_argument("--min-clips", nargs="+", type=int, default=[1],
                   help="a word is known when training spoke it in at least this many clips (1 = ever spoken)")
    p.add_argument("--vocab-words", type=int, default=0,
                   help="also count the LLM's first N word tokens as known (train config field vocab_words): "
                        "the ceiling of a training vocabulary that wide")
    p.add_argument("--vocab-cased", action="store_true", help="... capitalised word tokens too (vocab_cased)")
    p.add_argument("--unseen-voice", default=None,
                   help=f"the voice held out of training (default {UNSEEN_VOICE}; one you give must be in the "
                        "samples, and the checkpoint's training may not have spoken it)")
    p.add_argument("--max-new-tokens", type=int, default=24,
                   help="greedy answer length (as evaluate's; with --results it must be the stored rows' length)")
    p.add_argument("--batch-size", type=int, default=50, help="prompts per batched generate call")
    p.add_argument("--examples", type=int, default=0, help="also print this many closed questions per condition")
    p.add_argument("--out", type=Path, default=None, help="write the per-clip rows here (parquet)")
    add_device_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import torch

    from lsl_core.experiments.evaluate import text_answers
    from lsl_core.model.loading import load_checkpoint, read_manifest

    if args.n_questions is not None and args.n_questions <= 0:
        raise LSLError(f"closed-vocab: --n-questions must be positive, got {args.n_questions}.")
    if args.vocab_words < 0:
        raise LSLError(f"closed-vocab: --vocab-words must be 0 or more, got {args.vocab_words}.")
    for k in args.min_clips:
        if k < 1:
            raise LSLError(f"closed-vocab: --min-clips must be at least 1 (1 = words never spoken), got {k}.")
    # before the model loads: an untrained checkpoint has nothing to close, and the stored rows must be usable
    lin = lineage(args.checkpoint)
    name = read_manifest(args.checkpoint).name
    unseen = args.unseen_voice or UNSEEN_VOICE
    if args.results is not None:
        rows = stored_rows(args.results, name, max_new_tokens=args.max_new_tokens)
        if args.n_questions is not None:
            rows = rows[rows["question"].isin(list(dict.fromkeys(rows["question"]))[:args.n_questions])]
        voices = list(rows["voice"])
        unseen_voice_check(voices, unseen, args.unseen_voice is not None, {name: lin}, "closed-vocab")
        if "asr" in args.source and "transcript" not in rows.columns:
            raise LSLError("closed-vocab: these rows have no cascade (the encoder has no ASR decoder, or evaluate "
                           "ran with --no-cascade); pass --source typed.")
    else:
        from lsl_core.data.sets import load_sample_set
        from lsl_core.experiments.evaluate import EvalOptions, evaluate_checkpoint, select_samples, voice_of

        opts = EvalOptions(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, unseen_voice=unseen)
        samples = select_samples(load_sample_set(args.samples), args.n_questions)
        voices = [voice_of(s) for s in samples]
        unseen_voice_check(voices, unseen, args.unseen_voice is not None, {name: lin}, "closed-vocab")
    for note in untrained_voice_notes(voices, unseen, {name: lin}, "evaluate without them"):
        print(note)
    questions = list(rows["question"]) if args.results is not None else [s.question for s in samples]
    if note := trained_note(questions, lin, name, "none of their words is unknown, so their ceiling is the "
                                                  "cascade's by construction; evaluate on questions training never "
                                                  "spoke."):
        print(note)
    model = load_checkpoint(args.checkpoint, device=args.device)
    if args.results is None:
        rows = evaluate_checkpoint(model, samples, opts, progress=True)
        if "asr" in args.source and "transcript" not in rows.columns:
            raise LSLError("closed-vocab: this checkpoint has no cascade (its encoder has no ASR decoder); pass "
                           "--source typed.")
    first = list(dict.fromkeys(rows["question"]))[:4]  # the stored rows must be this checkpoint's answers
    with torch.no_grad():
        now = text_answers(model, first, args.max_new_tokens, args.batch_size)
    stored = rows.drop_duplicates("question").set_index("question")["text_answer"]
    if differ := sum(a != stored[q] for q, a in zip(first, now)):
        print(f"note: {differ} of {len(first)} stored text answers differ from this checkpoint's answers now "
              "(another digest, or numerics); the unchanged texts keep the stored answers.")
    print(f"{model.name}: lineage {' <- '.join(lin.stages)}; {len(rows)} clips of "
          f"{rows['question'].nunique()} questions; known words: "
          + ", ".join(f"{len(known_words(lin, k))} spoken in >= {k} clips" for k in args.min_clips), flush=True)
    print("Its measured speech answers by how many words of the question training never spoke (%, 95% bootstrap "
          "over questions; ratio = / the cascade's on the same clips):")
    rows = rows.assign(never_spoken=never_spoken(rows["question"], lin))  # kept in --out: the page's split
    print(format_table(coverage_table(rows, unseen), share="words never spoken"), flush=True)
    extra: tuple[str, ...] = ()
    if args.vocab_words:
        from lsl_core.experiments.train.vocab import vocabulary_words

        extra = tuple(sorted({w for v in vocabulary_words(model.tokenizer, args.vocab_words, args.vocab_cased)
                              for w in words(v)}))
        print(f"  + {len(extra)} word tokens of the LLM's vocabulary count as known "
              f"({len(set(extra) - set(known_words(lin)))} of them never spoken in training)", flush=True)
    with torch.no_grad():
        closed = closed_rows(model, rows, lin, args.source, args.mode, args.min_clips, args.max_new_tokens,
                             args.batch_size, progress=True, extra_words=extra)
    for cond, d in closed.groupby("condition", sort=False):
        for _, r in d.drop_duplicates("closed_text").head(args.examples).iterrows():
            print(f"   [{cond}] {r['question']} -> {r['closed_text']} | {r['answer']}")
    print("Agreement with the text answers (%, 95% bootstrap over questions); ratio = / the cascade's on the "
          "same clips:")
    print(format_table(ceiling_table(closed, unseen)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        closed.to_parquet(args.out)
        print(f"rows: {args.out}")
    return 0
