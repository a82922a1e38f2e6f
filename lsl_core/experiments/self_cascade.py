"""The self-cascade: the speech path's own transcript of the question, read by the text path.

    python -m lsl_core self-cascade --checkpoint assets/checkpoints/qa-lora/lora-step2900 \
        --transcriber assets/checkpoints/align-repeat/align-step2700 --results assets/results --samples sd-qa-mini

Speech LLMs can be taught to transcribe the question before answering it (SpeechGPT's chain of modality): the
answer then comes from the LLM reading text, its own transcript, instead of from the speech states. This
measures what that route could give before anyone trains for it. Each clip is repeated, greedy, by a
**transcriber** checkpoint with the repeat instruction of its lineage (`hearing.repeat_outputs`; the repeat
stage's own target, so the repeat-stage checkpoint is the natural transcriber; `--repeat-system` names the
instruction for a checkpoint this project did not train), and the **answerer**
checkpoint's text path answers that transcript (greedy, as the cascade answers Whisper's). Its agreement with
the answerer's text answer (token F1, `answer_agreement`) is set against the cascade's on the same clips with
the paired bootstrap of `headline_intervals`, next to the answerer's real end-to-end speech answers, and
paired against those answers clip by clip (`compare.paired_difference`): a route through the speech path's own
hearing that agrees less than the end-to-end answers do cannot lift them by being trained for.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from lsl_core.cli import add_device_args
from lsl_core.data.synth import UNSEEN_VOICE
from lsl_core.errors import LSLError
from lsl_core.experiments.hearing import REPEAT_SYSTEM

CONDITION = "self-cascade: repeat by {name}, read by the text path"  # a transcriber's condition label


def self_cascade_rows(answerer, transcriber, rows: pd.DataFrame, samples, system: str = REPEAT_SYSTEM,
                      max_new_tokens: int = 24, repeat_tokens: int = 32, batch_size: int = 16,
                      progress: bool = False) -> pd.DataFrame:
    """One row per clip: the transcriber's repeat of the clip, the answerer's text-path answer to it and that
    answer's agreement with the answerer's text answer.

    rows: the answerer's evaluate rows (sample_id, question, voice, text_answer, agreement, cascade_agreement);
    samples: the Sample of each row, in row order (ids checked; its audio is repeated); system: the repeat
    instruction (the transcriber lineage's, hearing.lineage(...).repeat_system). Columns added: condition,
    repeat, answer, agreement (the self-cascade's), speech_agreement (the real end-to-end answer's). progress:
    one bar over the phases (encoder states, repeats, answers to the distinct repeats).
    """
    from tqdm import tqdm

    from lsl_core.experiments.evaluate import text_answers
    from lsl_core.experiments.hearing import repeat_outputs
    from lsl_core.scoring import answer_agreement

    if len(samples) != len(rows):
        raise LSLError(f"self-cascade: {len(rows)} evaluate rows but {len(samples)} samples; pass the sample set "
                       "the rows were evaluated on.")
    if [s.id for s in samples] != list(rows["sample_id"]):  # rows and clips are joined by position below
        raise LSLError("self-cascade: the samples are not the rows' clips in the rows' order (sample_id); pass "
                       "[sample_by_id[i] for i in rows['sample_id']].")
    bar = tqdm(total=2 * len(samples), desc=f"self-cascade via {transcriber.name}: repeats", unit="step",
               disable=not progress)
    repeats = repeat_outputs(transcriber, list(samples), repeat_tokens, batch_size, system, progress=False,
                             on_done=bar.update)
    bar.total += len(set(repeats))
    bar.set_description_str(f"self-cascade via {transcriber.name}: answers")
    answers = text_answers(answerer, repeats, max_new_tokens, batch_size, bar.update)
    bar.close()
    return rows.assign(condition=CONDITION.format(name=transcriber.name), repeat=repeats, answer=answers,
                       speech_agreement=rows["agreement"],
                       agreement=[float(answer_agreement(a, t)) for a, t in zip(answers, rows["text_answer"])])


def self_cascade_table(parts: list[pd.DataFrame], unseen_voice: str = UNSEEN_VOICE) -> pd.DataFrame:
    """The answerer's end-to-end speech answers (closed_vocab.SPEECH_ROW) and each transcriber's self-cascade
    x {seen, unseen}: agreement, cascade agreement, ratio, 95% bootstrap CIs over questions (ratio_table; its
    closed_share is 0 here: no word is closed). closed_vocab.format_table(..., share=None) prints it."""
    from lsl_core.experiments.closed_vocab import SPEECH_ROW, ratio_table

    speech = parts[0].assign(condition=SPEECH_ROW, agreement=parts[0]["speech_agreement"])
    both = pd.concat([speech, *parts], ignore_index=True).assign(chunks_closed=0, chunks=1)
    return ratio_table(both, unseen_voice)


def self_cascade_deltas(part: pd.DataFrame, unseen_voice: str = UNSEEN_VOICE) -> pd.DataFrame:
    """One transcriber's self-cascade − the answerer's end-to-end speech answers on the same clips, per voice
    group: compare.paired_difference with the speech answers as base (one bootstrap replicate draws the same
    questions for both; Δ cascade is 0 by construction, both read the same cascade answers)."""
    from lsl_core.experiments.closed_vocab import SPEECH_ROW
    from lsl_core.experiments.compare import paired_difference

    label = part["condition"].iloc[0]
    both = pd.concat([part.assign(checkpoint=SPEECH_ROW, agreement=part["speech_agreement"]),
                      part.assign(checkpoint=label)], ignore_index=True)
    return paired_difference(both, SPEECH_ROW, label, unseen_voice)


def register(subparsers) -> None:
    """Add `self-cascade` to `python -m lsl_core`."""
    p = subparsers.add_parser("self-cascade", help="the speech path's own transcript read by the text path, vs "
                                                   "the end-to-end answers", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="the answerer: a checkpoint folder or its manifest.json")
    p.add_argument("--results", type=Path, required=True,
                   help="an evaluate --out folder holding the answerer's rows (its text and cascade answers)")
    p.add_argument("--samples", required=True, help="the sample set those rows were evaluated on (its audio)")
    p.add_argument("--transcriber", nargs="+", default=None,
                   help="checkpoint(s) whose repeat is the transcript (default: the answerer itself)")
    p.add_argument("--repeat-system", default=None,
                   help="the repeat instruction every transcriber gets (default: the one its training lineage "
                        "learned; needed for a checkpoint this project did not train, e.g. a public speech LLM)")
    p.add_argument("--n-questions", type=int, default=None, help="only the first N distinct questions (all voices)")
    p.add_argument("--unseen-voice", default=UNSEEN_VOICE, help="the voice held out of training")
    p.add_argument("--max-new-tokens", type=int, default=24, help="greedy answer length (as evaluate's)")
    p.add_argument("--repeat-tokens", type=int, default=32, help="greedy repeat length (as hearing's)")
    p.add_argument("--batch-size", type=int, default=50, help="prompts per batched generate call")
    p.add_argument("--examples", type=int, default=0, help="also print this many clips per transcriber")
    p.add_argument("--out", type=Path, default=None, help="write the per-clip rows here (parquet)")
    add_device_args(p)
    p.set_defaults(func=main)


def _learned_system(checkpoint: str) -> str:
    """The repeat instruction a checkpoint's training lineage learned (hearing.lineage); one without a lineage
    (untrained, or not trained by this project) is refused with the way out."""
    from lsl_core.experiments.hearing import lineage

    try:
        return lineage(checkpoint).repeat_system
    except LSLError as exc:
        raise LSLError(f"self-cascade: {exc} Or name the instruction it follows with --repeat-system.") from None


def main(args: argparse.Namespace) -> int:
    import torch

    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.closed_vocab import SPEECH_ROW, evaluate_files, format_table, stored_rows
    from lsl_core.experiments.compare import format_table as compare_table
    from lsl_core.model.loading import load_checkpoint, read_manifest

    if args.n_questions is not None and args.n_questions <= 0:
        raise LSLError(f"self-cascade: --n-questions must be positive, got {args.n_questions}.")
    transcribers = args.transcriber or [args.checkpoint]
    if args.repeat_system is not None and not args.repeat_system.strip():
        raise LSLError("self-cascade: --repeat-system is empty; give the instruction, or leave it out to use the "
                       "one each transcriber's training learned.")
    systems = [args.repeat_system or _learned_system(t) for t in transcribers]  # before any model loads
    evaluate_files(args.results, "self-cascade")
    # the stored rows are checked before any model loads: their checkpoint, and the answer length they were made with
    rows = stored_rows(args.results, read_manifest(args.checkpoint).name, "self-cascade",
                       max_new_tokens=args.max_new_tokens)
    answerer = load_checkpoint(args.checkpoint, device=args.device)
    if args.n_questions is not None:
        rows = rows[rows["question"].isin(list(dict.fromkeys(rows["question"]))[:args.n_questions])]
    by_id = {s.id: s for s in load_sample_set(args.samples)}
    if missing := [i for i in rows["sample_id"] if i not in by_id]:
        raise LSLError(f"self-cascade: {len(missing)} evaluated clips (e.g. {missing[0]!r}) are not in --samples "
                       f"{args.samples!r}; pass the sample set the rows were evaluated on.")
    rows = rows.reset_index(drop=True)
    samples = [by_id[i] for i in rows["sample_id"]]
    print(f"{answerer.name}: {len(rows)} clips of {rows['question'].nunique()} questions", flush=True)
    parts = []
    for t, system in zip(transcribers, systems):
        model = answerer if Path(t).resolve() == Path(args.checkpoint).resolve() else load_checkpoint(
            t, device=args.device)
        with torch.no_grad():
            part = self_cascade_rows(answerer, model, rows, samples, system, args.max_new_tokens,
                                     args.repeat_tokens, args.batch_size, progress=True)
        parts.append(part)
        for _, r in part.head(args.examples).iterrows():
            print(f"   [{model.name}] {r['question']} -> {r['repeat']} | {r['answer']}")
    print("Agreement with the text answers (%, 95% bootstrap over questions); ratio = / the cascade's on the "
          "same clips:")
    print(format_table(self_cascade_table(parts, args.unseen_voice), share=None))
    for part in parts:
        label = part["condition"].iloc[0]
        print(f"\n{label} − {SPEECH_ROW}, paired on the same clips:")
        print(compare_table(self_cascade_deltas(part, args.unseen_voice), SPEECH_ROW, "self-cascade"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(parts, ignore_index=True).to_parquet(args.out)
        print(f"rows: {args.out}")
    return 0
