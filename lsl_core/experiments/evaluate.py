"""Benchmark checkpoints on a sample set: sd-qa score on text and on speech input, GAP, agreement, per voice.

    python -m lsl_core evaluate --zoo assets/checkpoints --samples sd-qa-mini --n-questions 20 \\
        --max-new-tokens 24 --batch-size 25 --out assets/results --markdown docs/results/checkpoints.md
    python -m lsl_core evaluate --checkpoint <manifest> --samples sd-qa-mini --intervention angle:bottom3

For every checkpoint and sample: the greedy answer to the typed question (once per question) and
to the spoken one (batched, left padded), scored against the gold answers with normalized
containment and token F1 (lsl_core.scoring; PEDANT only when its model files are installed
locally and --pedant is given), plus the agreement (token F1) of the speech answer with the text
answer. The cascade baseline (the encoder's own Whisper decoder transcribes the clip, the same LLM
answers the transcript) is scored the same way, with its agreement with the text answer; the
*answerable* view keeps the questions whose text answer contains a gold answer, where GAP =
text containment - speech containment measures what speech loses of what the model knows. GAP = text score - speech score (DESIGN §3), per voice; the held-out voice is the
"unseen accent". Results go to <out>/<name>_samples.parquet (one row per checkpoint x sample) and
<out>/<name>_summary.{parquet,json} (one row per checkpoint x voice, plus "seen"/"all" means; the
JSON's meta records the command and the code version). The results page (--markdown, or later
`python -m lsl_core report checkpoints`) is rendered from those files by `markdown_tables`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from lsl_core.cli import add_device_args
from lsl_core.data.audio import audio_digest
from lsl_core.data.synth import UNSEEN_VOICE
from lsl_core.errors import LSLError
from lsl_core.experiments.pages import NOT_RECORDED, page_header
from lsl_core.results import read_table

EVAL_VERSION = 3  # bump when answers or scores change meaning: invalidates the on-disk cache
LOSS_WINDOW = 25  # training curves: the loss is averaged over this many steps up to each eval step
SCORER = "normalized containment + token F1 vs gold answers (SQuAD/TyDi normalization)"
SUMMARY_METRICS = ("text_containment", "speech_containment", "gap_containment", "text_f1", "speech_f1", "gap_f1",
                   "agreement", "cascade_containment", "cascade_f1", "cascade_agreement")
_ANSWERS: dict[tuple, str] = {}  # (LLM identity, max_new_tokens, typed prompt) -> answer: shared by checkpoints
#   whose LLM is the untouched base model (strategy none/frozen), so text and cascade answers run once per sweep


@dataclass(frozen=True)
class EvalOptions:
    max_new_tokens: int = 24  # greedy answer length (text and speech alike)
    batch_size: int = 16  # prompts per batched generate call
    pedant: bool = False  # also score with PEDANT (only if qa-metrics and its model files are installed)
    unseen_voice: str = UNSEEN_VOICE  # the voice held out of training (reported separately)
    cascade: bool = True  # also the ASR -> LLM cascade (when the encoder has an ASR decoder)

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise LSLError(f"EvalOptions.max_new_tokens must be positive, got {self.max_new_tokens}.")
        if self.batch_size <= 0:
            raise LSLError(f"EvalOptions.batch_size must be positive, got {self.batch_size}.")


# =========================================================================== samples
def voice_of(sample) -> str:
    """Bare voice/accent label of a sample ("en-gb" for "espeak:en-gb")."""
    v = sample.meta.get("voice") if isinstance(sample.meta, dict) else None
    return str(v or sample.accent.removeprefix("espeak:") or "unknown")


def check_unseen_voice(given: str | None, voices, what: str = "samples", command: str = "") -> None:
    """An --unseen-voice the user typed (`given`; None = the default, not checked) must be one of `voices`, else
    every clip would silently count as seen: LSLError naming the voices there are."""
    have = list(dict.fromkeys(voices))
    if given and given not in have:
        raise LSLError(f"{command + ': ' if command else ''}--unseen-voice {given!r} is not a voice of these {what} "
                       f"({', '.join(have)}); give one of them, or leave --unseen-voice out.")


def select_samples(samples, n_questions: int | None = None, voices: list[str] | None = None):
    """The samples of the first n distinct questions (set order), optionally only some voices; a voice no sample
    has is refused (LSLError naming the set's voices), not silently left out."""
    if voices:
        have = list(dict.fromkeys(voice_of(samples.record(i)) for i in range(len(samples))))
        missing = [v for v in voices if not len(samples.filter(voice=v))]
        if missing:
            raise LSLError(f"--voices: no sample of {', '.join(map(repr, missing))} in {samples.name!r}; its voices "
                           f"are {', '.join(have)}. Give some of those.")
        samples = samples.filter(voice=voices)
    if n_questions is None:
        return samples
    if n_questions <= 0:
        raise LSLError(f"--n-questions must be positive, got {n_questions}.")
    recs = [samples.record(i) for i in range(len(samples))]
    qkey = lambda r: str(r.meta.get("example_id") or r.question)  # noqa: E731
    keep_q = list(dict.fromkeys(qkey(r) for r in recs))[:n_questions]
    keep = set(keep_q)
    return samples.filter(ids=[r.id for r in recs if qkey(r) in keep])


# =========================================================================== one checkpoint
def _score_columns(prefix: str, answer: str, refs: tuple[str, ...], question: str, pedant: bool) -> dict:
    from lsl_core.scoring import pedant_score, score_sdqa

    if not refs:
        return {f"{prefix}_containment": float("nan"), f"{prefix}_f1": float("nan")}
    s = score_sdqa(answer, refs)
    out = {f"{prefix}_containment": float(s["containment"]), f"{prefix}_f1": float(s["f1"])}
    if pedant:
        out[f"{prefix}_pedant"] = float(pedant_score(answer, refs, question))
    return out


def llm_identity(model) -> str:
    """Who answers typed prompts: the base LLM id for checkpoints that leave it untouched (strategy
    none / frozen / pretrained without LoRA), else the checkpoint's own digest (LoRA, full fine-tune)."""
    m = model.manifest or {}
    if m.get("strategy") in ("none", "frozen") and not m.get("lora"):
        # the prompt template is part of what is asked: two manifests with different 'prompt's share no answer
        template = json.dumps([getattr(model, "prefix_ids", None), getattr(model, "suffix_ids", None)])
        prompt = hashlib.sha256(template.encode()).hexdigest()[:16]
        return f"base:{m.get('llm', '')}:{model.device}:{model.dtype}:{prompt}"
    return f"checkpoint:{model.digest}"


def text_answers(model, prompts_text: list[str], max_new_tokens: int, batch_size: int,
                 on_done: Callable[[int], None] | None = None) -> list[str]:
    """Greedy answers to typed prompts, memoized per LLM identity within the process (llm_identity).
    `on_done(n)` is told how many distinct prompts are answered as batches finish (progress)."""
    who = llm_identity(model)
    distinct = list(dict.fromkeys(prompts_text))
    todo = [t for t in distinct if (who, max_new_tokens, t) not in _ANSWERS]
    if on_done is not None and len(distinct) > len(todo):
        on_done(len(distinct) - len(todo))
    if todo:
        on_batch = (lambda idx, _ids: on_done(len(idx))) if on_done is not None else None
        out = model.generate_answers([model.prompt_for(text=t) for t in todo], max_new_tokens, batch_size=batch_size,
                                     on_batch=on_batch)
        _ANSWERS.update({(who, max_new_tokens, t): a for t, a in zip(todo, out)})
    return [_ANSWERS[(who, max_new_tokens, t)] for t in prompts_text]


def transcripts(model, items, audio_keys: list[str], on_done: Callable[[int], None] | None = None) -> list[str]:
    """ASR transcript of every clip by the checkpoint's Whisper decoder, cached on disk per (encoder, audio).
    `on_done(1)` after each clip (progress)."""
    from lsl_core.cache import cache_dir

    enc = str((model.manifest or {}).get("encoder", model.name))
    folder = cache_dir("asr", hashlib.sha256(enc.encode()).hexdigest()[:16])
    out = []
    for s, ak in zip(items, audio_keys):
        f = folder / f"{ak}.json"
        if f.is_file():
            t = json.loads(f.read_text())["transcript"]
        else:
            t = model.transcribe(s.audio, s.sr)
            tmp = f.with_name(f".{f.name}.tmp")
            tmp.write_text(json.dumps({"encoder": enc, "transcript": t}))
            tmp.replace(f)
        out.append(t)
        if on_done is not None:
            on_done(1)
    return out


def evaluate_checkpoint(model, samples, opts: EvalOptions = EvalOptions(), *, use_cache: bool = True,
                        progress: bool = False) -> pd.DataFrame:
    """One row per sample: text/speech answers, their sd-qa scores and the agreement between them.

    Text answers are generated once per distinct question; speech answers use cached encoder
    states (same convention as training: SpeechEncoder.encode). Answers are cached on disk per (checkpoint
    digest incl. device/dtype, samples, options); their scores are recomputed from the samples' current
    gold answers on every call (`score_rows`), so a corrected reference or scorer never meets a stale score.
    """
    import torch
    from tqdm import tqdm

    from lsl_core.cache import cache_dir
    from lsl_core.model.batch import cached_encoder_states
    from lsl_core.scoring import answer_agreement, pedant_available

    if opts.pedant and not pedant_available():
        raise LSLError("--pedant needs qa-metrics with its PEDANT classifier files installed locally; "
                       "this tool never downloads them. Drop --pedant to use containment and F1.")
    items = [samples[i] for i in range(len(samples))]
    if not items:
        raise LSLError("No samples to evaluate; check --samples, --n-questions and --voices.")
    audio_keys = [audio_digest(s.audio) for s in items]
    key_src = json.dumps([EVAL_VERSION, model.digest, asdict(opts), [s.id for s in items], audio_keys,
                          [s.question for s in items]], sort_keys=True)
    path = cache_dir("evaluate") / f"{hashlib.sha256(key_src.encode()).hexdigest()[:20]}.parquet"
    if use_cache and path.is_file():
        return score_rows(read_table(path), items, opts)
    t0 = time.time()
    questions = list(dict.fromkeys(s.question for s in items))
    cascade = opts.cascade and getattr(model, "has_asr", False)
    # one bar over the phases (text answers, ASR transcripts, cascade answers, encoder states, speech answers)
    bar = tqdm(total=len(questions) + len(items) * (3 if cascade else 2), unit="item", disable=not progress)

    def phase(what: str) -> None:
        bar.set_description_str(f"evaluate {model.name}: {what}")

    with torch.no_grad():
        phase("text answers")
        texts = text_answers(model, questions, opts.max_new_tokens, opts.batch_size, bar.update)
        text_of = dict(zip(questions, texts))
        if cascade:
            phase("ASR transcripts")
            heard = transcripts(model, items, audio_keys, bar.update)
            spoken = list(dict.fromkeys(t for t in heard if t and t.strip()))
            bar.total += len(spoken)
            phase("cascade answers")
            cas_of = dict(zip(spoken, text_answers(model, spoken, opts.max_new_tokens, opts.batch_size, bar.update)))
        else:
            heard = [None] * len(items)
        phase("speech encoder")
        prompts = []
        for s, ak in zip(items, audio_keys):
            st = cached_encoder_states(model.encoder, voice_of(s), s.id, lambda s=s: s.audio, ak)  # [Te, d_enc]
            prompts.append(model.build_prompt(model.adapt(st).embeds))
            bar.update(1)
        phase("speech answers")
        speech = model.generate_answers(prompts, opts.max_new_tokens, batch_size=opts.batch_size,
                                        on_batch=lambda idx, _ids: bar.update(len(idx)))
    bar.close()
    m = model.manifest or {}
    rows = []
    for s, sp, heard_s in zip(items, speech, heard):
        tx = text_of[s.question]
        refs = tuple(s.answers)
        voice = voice_of(s)
        cas = {}
        if cascade:
            ca = cas_of.get(heard_s, "") if heard_s and heard_s.strip() else ""
            cas = {"transcript": heard_s, "cascade_answer": ca,
                   **_score_columns("cascade", ca, refs, s.question, opts.pedant),
                   "cascade_agreement": float(answer_agreement(ca, tx))}
        rows.append({
            "checkpoint": model.name, "family": m.get("family", ""), "strategy": m.get("strategy", ""),
            "step": int(m.get("step", 0) or 0), "sample_id": s.id,
            "example_id": str(s.meta.get("example_id", "")), "voice": voice, "unseen": voice == opts.unseen_voice,
            "split": str(s.meta.get("split", "")), "synthetic": bool(s.meta.get("synthetic", False)),
            "question": s.question, "references": " | ".join(refs), "text_answer": tx, "speech_answer": sp,
            **_score_columns("text", tx, refs, s.question, opts.pedant),
            **_score_columns("speech", sp, refs, s.question, opts.pedant),
            "agreement": float(answer_agreement(sp, tx)),
            **cas,
        })
    df = pd.DataFrame(rows)
    df.attrs["seconds"] = time.time() - t0
    if progress:
        print(f"  {model.name}: {len(items)} speech + {len(questions)} text"
              + (f" + {len(items)} cascade" if cascade else "") + f" answers in {time.time() - t0:.0f} s", flush=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
    return df


def score_rows(df: pd.DataFrame, items, opts: EvalOptions) -> pd.DataFrame:
    """evaluate_checkpoint's rows (cached answers) with every score column recomputed against `items`' gold answers:
    references, text/speech(/cascade) containment and F1, agreement, cascade_agreement. items: the Sample of each
    row, in row order (LSLError if the ids differ)."""
    from lsl_core.scoring import answer_agreement

    if list(df["sample_id"]) != [s.id for s in items]:
        raise LSLError("evaluate: the cached rows do not match the samples (ids or order); rerun with --no-cache.")
    cascade = "cascade_answer" in df.columns
    recs = []
    for s, tx, sp, ca in zip(items, df["text_answer"], df["speech_answer"],
                             df["cascade_answer"] if cascade else [None] * len(df)):
        refs = tuple(s.answers)
        rec = {"references": " | ".join(refs), **_score_columns("text", tx, refs, s.question, opts.pedant),
               **_score_columns("speech", sp, refs, s.question, opts.pedant),
               "agreement": float(answer_agreement(sp, tx))}
        if cascade:
            rec.update({**_score_columns("cascade", ca, refs, s.question, opts.pedant),
                        "cascade_agreement": float(answer_agreement(ca, tx))})
        recs.append(rec)
    scores = pd.DataFrame(recs, index=df.index)
    out = df.copy()
    for c in scores.columns:  # in place: the column order stays the one evaluate_checkpoint wrote
        out[c] = scores[c]
    return out


def add_other_question_baseline(df: pd.DataFrame) -> pd.DataFrame:
    """Add `agreement_other_q`: mean agreement of each speech answer with the text answers of the
    *other* questions (same checkpoint) - what agreement reaches from answer style alone, without
    the content of the question. Matched agreement above it is question-specific. With a cascade, the
    same for its answers: `cascade_agreement_other_q`."""
    from lsl_core.scoring import answer_agreement

    answers = [c for c in ("speech_answer", "cascade_answer") if c in df.columns]
    out = []
    for _, d in df.groupby("checkpoint", sort=False):
        texts = d.drop_duplicates("question").set_index("question")["text_answer"]
        cols = {}
        for col in answers:
            other = []
            for a, q in zip(d[col], d["question"]):
                vals = [answer_agreement(a, t) for tq, t in texts.items() if tq != q]
                other.append(sum(vals) / len(vals) if vals else float("nan"))
            cols["agreement_other_q" if col == "speech_answer" else "cascade_agreement_other_q"] = other
        out.append(d.assign(**cols))
    return pd.concat(out).loc[df.index]


# =========================================================================== summaries
def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint x voice means (+ voice "seen" = all voices but the unseen one, and "all").

    Columns: checkpoint, family, strategy, step, voice, unseen, n, text/speech containment and F1,
    gap_containment = text - speech, gap_f1, agreement (and *_pedant when scored).
    """
    metrics = [c for c in ("text_containment", "speech_containment", "text_f1", "speech_f1", "agreement",
                           "agreement_other_q", "cascade_containment", "cascade_f1", "cascade_agreement",
                           "cascade_agreement_other_q", "text_pedant", "speech_pedant") if c in df.columns]
    keys = ["checkpoint", "family", "strategy", "step"]
    parts = []
    for group, sub in [("voice", df), ("seen", df[~df["unseen"]].assign(voice="seen")), ("all", df.assign(voice="all"))]:
        if sub.empty:
            continue
        g = sub.groupby(keys + ["voice"], sort=False)
        agg = g[metrics].mean().reset_index()
        agg["n"] = g.size().to_numpy()
        agg["unseen"] = g["unseen"].all().to_numpy() if group == "voice" else False
        # answerable: the samples whose text answer contains a gold answer (this checkpoint knows the answer)
        ans = sub[sub["text_containment"] == 1.0]
        ga = ans.groupby(keys + ["voice"], sort=False)
        extra = {"n_answerable": ga.size(), "speech_containment_answerable": ga["speech_containment"].mean()}
        if "cascade_containment" in ans.columns:
            extra["cascade_containment_answerable"] = ga["cascade_containment"].mean()
        agg = agg.join(pd.DataFrame(extra), on=keys + ["voice"])
        agg["n_answerable"] = agg["n_answerable"].fillna(0).astype(int)
        parts.append(agg)
    out = pd.concat(parts, ignore_index=True)
    out["gap_containment"] = out["text_containment"] - out["speech_containment"]
    out["gap_f1"] = out["text_f1"] - out["speech_f1"]
    out["gap_answerable"] = 1.0 - out["speech_containment_answerable"]  # text containment is 1 on these samples
    if "cascade_agreement" in out:  # undefined (NaN) where the cascade never agrees
        out["agreement_vs_cascade"] = out["agreement"] / out["cascade_agreement"].where(out["cascade_agreement"] > 0)
    if "text_pedant" in out:
        out["gap_pedant"] = out["text_pedant"] - out["speech_pedant"]
    order = {v: i for i, v in enumerate(dict.fromkeys(df["voice"]))} | {"seen": 10_000, "all": 10_001}
    rank = {"none": 0, "frozen": 1, "lora": 2, "full": 3}  # untrained baseline first, then by strategy
    out = out.assign(_s=out["strategy"].map(rank).fillna(9), _v=out["voice"].map(order))
    out = out.sort_values(["family", "_s", "strategy", "step", "checkpoint", "_v"], kind="stable")
    out = out.drop(columns=["_s", "_v"])
    cols = keys + ["voice", "unseen", "n"] + [c for c in out.columns if c not in keys + ["voice", "unseen", "n"]]
    return out[cols].reset_index(drop=True)


def ratio_of_means(r) -> float:
    """rows [n, 2] -> mean(column 0) / mean(column 1); NaN where the denominator's mean is not above 0 (a ratio
    over a cascade that never agrees is undefined, not agreement / 1e-12)."""
    den = float(r[:, 1].mean())
    return float(r[:, 0].mean()) / den if den > 0 else float("nan")


def headline_intervals(df: pd.DataFrame, unseen_voice: str = UNSEEN_VOICE) -> pd.DataFrame:
    """End-to-end vs cascade with 95% bootstrap intervals over *questions*, per checkpoint x {seen, unseen}.

    The voices of one question are averaged first (they share the question, so they are not independent),
    then questions are resampled. Columns (fractions, each with _lo / _hi): agreement (speech vs text
    answer), cascade_agreement, ratio = agreement / cascade_agreement (paired: one replicate draws the same
    questions for both), ratio_specific = the same ratio above each side's answer-style baseline,
    (agreement - agreement_other_q) / (cascade_agreement - cascade_agreement_other_q), with the two
    differences as agreement_specific / cascade_agreement_specific (absent unless the cascade is above its
    baseline), gap_answerable = 1 - speech containment on the questions whose text answer contains a gold
    answer (n_answerable_q of them); n_q = questions. A ratio is NaN where its denominator (the cascade's mean) is
    not above 0, and its interval NaN when some replicate's is not (`ratio_of_means`).
    """
    import numpy as np

    from lsl_core.metrics.stats import bootstrap_ci

    rows = []
    for ck, d in df.groupby("checkpoint", sort=False):
        for group, sub in (("seen", d[d["voice"] != unseen_voice]), (unseen_voice, d[d["voice"] == unseen_voice])):
            if sub.empty:
                continue
            cols = [c for c in ("agreement", "cascade_agreement", "agreement_other_q", "cascade_agreement_other_q",
                                "speech_containment", "text_containment") if c in sub.columns]
            q = sub.groupby("question", sort=False)[cols].mean()  # [n_q, cols]
            rec = {"checkpoint": ck, "strategy": d["strategy"].iloc[0], "step": int(d["step"].iloc[0]),
                   "voice": group, "n_q": len(q)}
            for c in ("agreement", "cascade_agreement"):
                if c in q:
                    ci = bootstrap_ci(q[c].to_numpy(np.float64))
                    rec.update({c: ci.estimate, f"{c}_lo": ci.low, f"{c}_hi": ci.high})
            if "cascade_agreement" in q:
                pair = q[["agreement", "cascade_agreement"]].to_numpy(np.float64)  # [n_q, 2]
                ci = bootstrap_ci(pair, ratio_of_means) if q["cascade_agreement"].mean() > 0 else None
                rec.update({"ratio": ci.estimate, "ratio_lo": ci.low, "ratio_hi": ci.high} if ci else
                           dict.fromkeys(("ratio", "ratio_lo", "ratio_hi"), float("nan")))
            if {"cascade_agreement", "agreement_other_q", "cascade_agreement_other_q"} <= set(q.columns) \
                    and (q["cascade_agreement"] - q["cascade_agreement_other_q"]).mean() > 0:  # else no ratio
                spec = np.stack([q["agreement"] - q["agreement_other_q"],
                                 q["cascade_agreement"] - q["cascade_agreement_other_q"]], 1)  # [n_q, 2]
                ci = bootstrap_ci(spec.astype(np.float64), ratio_of_means)
                rec.update({"agreement_specific": spec[:, 0].mean(), "cascade_agreement_specific": spec[:, 1].mean(),
                            "ratio_specific": ci.estimate, "ratio_specific_lo": ci.low, "ratio_specific_hi": ci.high})
            ans = q[q["text_containment"] == 1.0]
            rec["n_answerable_q"] = len(ans)
            if len(ans) >= 2:
                ci = bootstrap_ci(1.0 - ans["speech_containment"].to_numpy(np.float64))
                rec.update({"gap_answerable": ci.estimate, "gap_answerable_lo": ci.low,
                            "gap_answerable_hi": ci.high})
            rows.append(rec)
    return pd.DataFrame(rows)


def _ci(r, c: str) -> str:
    """'41.2 [35.0, 47.1]' (percent) from a headline row, or '–'."""
    if c not in r or pd.isna(r.get(c)):
        return "–"
    return f"{100 * r[c]:.1f} [{100 * r[c + '_lo']:.1f}, {100 * r[c + '_hi']:.1f}]"


def _pct(x: float) -> str:
    return "–" if pd.isna(x) else f"{100 * x:.1f}"


def _samples_line(meta: dict) -> str:
    """'sd-qa-mini — 20 questions of the dev split × 5 synthetic voices (…)', from the evaluated rows."""
    voices = list(meta["voices"])
    splits = ", ".join(meta.get("splits") or [])
    questions = f"{meta['n_questions']} questions" + (f" of the {splits} split" if splits else "")
    kind = "synthetic voices" if meta.get("synthetic") else "voices/accents"
    return f"{meta['samples']} — {questions} × {len(voices)} {kind} ({', '.join(voices)})"


def markdown_tables(summary: pd.DataFrame, meta: dict, curves: list[dict] | None = None,
                    headline: pd.DataFrame | None = None) -> str:
    """The results page: overview per checkpoint, then per checkpoint x voice, then training curves.

    meta: evaluate's meta (command, code_version, samples, n_questions, voices, unseen_voice,
    max_new_tokens, device, pedant; optional splits, synthetic, render = the report command).
    """
    unseen = meta["unseen_voice"]
    seen_voices = [v for v in meta["voices"] if v != unseen]
    render = meta.get("render")  # re-rendered by `report checkpoints` from stored results
    header = page_header(f"Checkpoints: text vs speech input — {meta['samples']}",
                         render["command"] if render else meta["command"],
                         render["code_version"] if render else meta.get("code_version", NOT_RECORDED),
                         source=meta["command"] if render else None,
                         source_version=meta.get("code_version", NOT_RECORDED) if render else None)
    lines = header + [
        f"- Samples: {_samples_line(meta)}. Unseen voice (never used in training): **{unseen}**.",
        f"- Greedy answers, {meta['max_new_tokens']} new tokens; device {meta['device']}.",
        f"- Score: {meta.get('scorer', SCORER)}. {meta['pedant']}",
        "- GAP = text score − speech score (percentage points). Agreement = token F1 between the speech answer and "
        "the same checkpoint's text answer (100 = identical words); *other-q* = its agreement with the text answers "
        "of the other questions, i.e. what answer style alone reaches (matched − other-q = question-specific).",
        "",
        f"## Overview (mean over questions; \"seen\" = the {len(seen_voices)} voices other than {unseen})",
        "",
        "| checkpoint | strategy | step | text F1 | speech F1 seen | speech F1 unseen | GAP F1 seen | GAP F1 unseen "
        "| text cont. | speech cont. seen | GAP cont. seen | agreement seen | agreement unseen | other-q seen |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for ck, sub in summary.groupby("checkpoint", sort=False):
        seen = sub[sub["voice"] == "seen"]
        uns = sub[sub["unseen"]]
        s = seen.iloc[0] if len(seen) else None  # no seen voice evaluated (e.g. --voices <unseen>): its columns "–"
        u = uns.iloc[0] if len(uns) else None
        every = s if s is not None else sub[sub["voice"] == "all"].iloc[0]  # strategy, step, text scores
        get = lambda row, k: _pct(row.get(k, float("nan"))) if row is not None else "–"  # noqa: E731
        lines.append(f"| {ck} | {every['strategy']} | {every['step']} | {_pct(every['text_f1'])} | "
                     f"{get(s, 'speech_f1')} | {get(u, 'speech_f1')} | {get(s, 'gap_f1')} | {get(u, 'gap_f1')} | "
                     f"{_pct(every['text_containment'])} | {get(s, 'speech_containment')} | "
                     f"{get(s, 'gap_containment')} | {get(s, 'agreement')} | {get(u, 'agreement')} | "
                     f"{get(s, 'agreement_other_q')} |")
    if headline is not None and len(headline):
        lines += ["", "## End-to-end vs cascade, and the answerable GAP (95% bootstrap CI over questions)", "",
                  "Agreement = token F1 with the same checkpoint's text answer. Cascade = the encoder's Whisper decoder "
                  "transcribes the clip and the same LLM answers the transcript. Ratio = end-to-end / cascade "
                  "agreement. Above style = the same ratio after subtracting from each side its agreement with the "
                  "text answers of the other questions (what answer style alone reaches): question-specific "
                  "agreement, end-to-end / cascade. Answerable GAP = 1 − speech containment on the questions whose "
                  "text answer contains a gold answer (n = those questions; GAP in percent).", "",
                  "| checkpoint | strategy | step | voices | questions | agreement | cascade agreement | ratio "
                  "| ratio above style | answerable q | answerable GAP |",
                  "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|"]
        for _, r in headline.iterrows():
            ratio = "–" if pd.isna(r.get("ratio")) else f"{r['ratio']:.2f} [{r['ratio_lo']:.2f}, {r['ratio_hi']:.2f}]"
            spec = "–" if pd.isna(r.get("ratio_specific", float("nan"))) else \
                f"{r['ratio_specific']:.2f} [{r['ratio_specific_lo']:.2f}, {r['ratio_specific_hi']:.2f}]"
            lines.append(f"| {r['checkpoint']} | {r['strategy']} | {r['step']} | {r['voice']} | {r['n_q']} | "
                         f"{_ci(r, 'agreement')} | {_ci(r, 'cascade_agreement')} | {ratio} | {spec} | "
                         f"{r['n_answerable_q']} | {_ci(r, 'gap_answerable')} |")
    lines += ["", "## Per voice", "",
              "| checkpoint | voice | n | text F1 | speech F1 | GAP F1 | text cont. | speech cont. | GAP cont. "
              "| agreement |",
              "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for _, r in summary[~summary["voice"].isin(["seen", "all"])].iterrows():
        v = f"{r['voice']} (unseen)" if r["unseen"] else r["voice"]
        lines.append(f"| {r['checkpoint']} | {v} | {r['n']} | {_pct(r['text_f1'])} | {_pct(r['speech_f1'])} | "
                     f"{_pct(r['gap_f1'])} | {_pct(r['text_containment'])} | {_pct(r['speech_containment'])} | "
                     f"{_pct(r['gap_containment'])} | {_pct(r['agreement'])} |")
    if curves:
        lines += ["", "## Training curves (from each trajectory's train_log.jsonl)", "",
                  f"Loss: mean response-token cross-entropy over the {LOSS_WINDOW} steps up to the step. Monitor "
                  f"agreement: speech vs text answer on held-out questions ({_monitor_note(curves)}).", "",
                  "| trajectory | step | loss | monitor agreement (seen voices) | monitor agreement (unseen voice) |",
                  "|---|--:|--:|--:|--:|"]
        for c in curves:
            loss = "–" if c["loss"] is None else f"{c['loss']:.3f}"
            lines.append(f"| {c['trajectory']} | {c['step']} | {loss} | {_pct(c.get('agreement', float('nan')))} | "
                         f"{_pct(c.get('agreement_unseen', float('nan')))} |")
    return "\n".join(lines) + "\n"


def _monitor_note(curves: list[dict]) -> str:
    """How the monitor was run, from each trajectory's train_config.json (one phrase per distinct setting)."""
    notes = []
    for c in curves:
        n, autocast = c.get("n_monitor"), c.get("autocast")
        parts = ([f"{n} questions"] if n else []) + ([f"{autocast} autocast"] if autocast else [])
        notes.append(", ".join(parts) or "settings not recorded")
    distinct = list(dict.fromkeys(notes))
    return distinct[0] if len(distinct) == 1 else "; ".join(
        f"{t}: {n}" for t, n in dict(zip((c["trajectory"] for c in curves), notes)).items())


def training_curves(manifests) -> list[dict]:
    """(trajectory, step, windowed loss, monitor agreement) at each eval point of each trajectory's log.

    The loss is the mean over the LOSS_WINDOW train steps up to the eval step; the monitor's settings
    (held-out questions, autocast) come from train_config.json beside the log when it is there.
    """
    from lsl_core.experiments.train.checkpoints import CONFIG_NAME, LOG_NAME

    out = []
    logs = dict.fromkeys(Path(m.root).parent / LOG_NAME for m in manifests)
    for log in logs:
        if not log.is_file():
            continue
        config = {}
        if (log.parent / CONFIG_NAME).is_file():
            config = json.loads((log.parent / CONFIG_NAME).read_text())
        rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        losses = {r["step"]: r["loss"] for r in rows if r.get("kind") == "train"}
        for r in rows:
            if r.get("kind") != "eval":
                continue
            window = [losses[s] for s in range(max(1, r["step"] - LOSS_WINDOW + 1), r["step"] + 1) if s in losses]
            out.append({"trajectory": log.parent.name, "step": r["step"],
                        "loss": sum(window) / len(window) if window else None,
                        "agreement": r.get("agreement", float("nan")),
                        "agreement_unseen": r.get("agreement_unseen", float("nan")),
                        "n_monitor": config.get("n_val_questions"), "autocast": config.get("autocast")})
    return out


def render_stored(folder: str | Path, name: str, render: dict, zoo: str | Path | None = None) -> str:
    """The results page from evaluate's stored files (<folder>/<name>_summary.{parquet,json}): nothing recomputed.

    render: provenance of the `report checkpoints` run; training curves from the logs under `zoo`
    (default: the folders of the checkpoints named in the stored meta, found under assets/checkpoints).
    """
    from lsl_core.data.paths import assets_dir
    from lsl_core.model.loading import list_zoo

    folder = Path(folder)
    table, meta_file = folder / f"{name}_summary.parquet", folder / f"{name}_summary.json"
    if not (table.is_file() and meta_file.is_file()):
        raise LSLError(f"No stored evaluation results {table.name} + {meta_file.name} in {folder}; write them with "
                       f"`python -m lsl_core evaluate ... --out {folder} --name {name}`.")
    summary = read_table(table)
    meta = json.loads(meta_file.read_text())["meta"]
    head_file = folder / f"{name}_headline.parquet"
    headline = read_table(head_file) if head_file.is_file() else None
    names = set(meta.get("checkpoints") or summary["checkpoint"])
    manifests = [m for m in list_zoo(zoo or assets_dir() / "checkpoints") if m.name in names]
    return markdown_tables(summary, {**meta, "render": render}, training_curves(manifests), headline)


# =========================================================================== CLI
def register(subparsers) -> None:
    """Add `evaluate` to `python -m lsl_core`."""
    p = subparsers.add_parser("evaluate", help="sd-qa scores on text vs speech input, GAP and agreement, per voice",
                              description=__doc__.splitlines()[0])
    src = p.add_argument_group("checkpoints (one or both)")
    src.add_argument("--zoo", type=Path, default=None, help="folder of manifests (searched recursively)")
    src.add_argument("--checkpoint", action="append", default=[], help="a manifest.json or its folder (repeatable)")
    p.add_argument("--samples", default="sd-qa-mini", help="sample set spec (sd-qa-mini, voicebench:<dir>, ...)")
    p.add_argument("--n-questions", type=int, default=None, help="first N distinct questions of the set (all voices)")
    p.add_argument("--voices", default=None, help="comma-separated voices/accents to keep (default: all)")
    p.add_argument("--unseen-voice", default=None,
                   help=f"the voice held out of training (default {UNSEEN_VOICE}; one you give must be in the samples)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="greedy answer length")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per batched generate call")
    p.add_argument("--pedant", action="store_true", help="also score with PEDANT (needs local qa-metrics files)")
    p.add_argument("--no-cascade", action="store_true", help="skip the ASR -> LLM cascade baseline")
    p.add_argument("--intervention", action="append", default=[], metavar="SPEC",
                   help="also evaluate speech answers under an intervention (e.g. angle:bottom3, see `table1 --help` "
                        "for the grammar); repeatable; rows go to <out>/<name>_interventions.parquet")
    p.add_argument("--out", type=Path, default=Path("assets/results"), help="folder for parquet/JSON results")
    p.add_argument("--name", default="checkpoints", help="file name prefix of the results")
    p.add_argument("--markdown", type=Path, default=None, help="also write the results page (markdown) here")
    add_device_args(p)
    p.add_argument("--no-cache", action="store_true", help="recompute answers even if cached")
    p.set_defaults(func=main)


def _pedant_note(opts: EvalOptions) -> str:
    from lsl_core.scoring import pedant_available

    if opts.pedant:
        return "PEDANT (qa-metrics, local model files) also reported."
    if pedant_available():
        return "PEDANT is installed locally but was not requested (--pedant)."
    return ("PEDANT (VoiceBench's sd-qa scorer) not used: qa-metrics cannot run offline here (it downloads "
            "pickled classifiers).")


def main(args: argparse.Namespace) -> int:
    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.pages import provenance
    from lsl_core.model.loading import distinct_manifests, list_zoo, load_checkpoint, read_manifest

    manifests = list_zoo(args.zoo) if args.zoo else []
    manifests += [read_manifest(c) for c in args.checkpoint]
    if not manifests:
        raise LSLError("No checkpoints to evaluate: pass --zoo <folder> and/or --checkpoint <manifest>.")
    manifests = distinct_manifests(manifests, "evaluate", "Evaluate them into separate --out folders and pair them "
                                   "with `python -m lsl_core compare --results A --results B --base NAME@1 --other "
                                   "NAME@2`.")
    if args.intervention:  # a typo is refused now, not after every checkpoint's answers
        from lsl_core.interventions.config import parse_condition

        for spec in args.intervention:
            parse_condition(spec)
    opts = EvalOptions(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, pedant=args.pedant,
                       unseen_voice=args.unseen_voice or UNSEEN_VOICE, cascade=not args.no_cascade)
    voices = [v.strip() for v in args.voices.split(",")] if args.voices else None
    samples = select_samples(load_sample_set(args.samples), args.n_questions, voices)
    check_unseen_voice(args.unseen_voice, (voice_of(s) for s in samples))
    print(f"evaluate: {len(manifests)} checkpoints x {len(samples)} samples of {args.samples}", flush=True)
    meta = provenance(getattr(args, "argv", None))  # before anything is written: the version of the code that ran
    frames, iv_frames, device = [], [], "cpu"
    t_all = time.time()
    for m in manifests:
        model = load_checkpoint(m, device=args.device)
        device = f"{model.device.type} {str(model.dtype).removeprefix('torch.')}"
        frames.append(evaluate_checkpoint(model, samples, opts, use_cache=not args.no_cache, progress=True))
        if args.intervention:
            iv_frames.append(_interventions(model, samples, args.intervention, opts.max_new_tokens))
        del model
    df = add_other_question_baseline(pd.concat(frames, ignore_index=True))
    summary = summarize(df)
    headline = headline_intervals(df, opts.unseen_voice)
    qkeys = df.drop_duplicates("sample_id")
    meta.update({
        "samples": args.samples, "n_questions": int(qkeys["question"].nunique()),
        "voices": list(dict.fromkeys(df["voice"])), "unseen_voice": opts.unseen_voice,
        "splits": sorted({x for x in df.get("split", pd.Series(dtype=str)) if x}),
        "synthetic": bool(df.get("synthetic", pd.Series([False])).all()),
        "max_new_tokens": opts.max_new_tokens, "batch_size": opts.batch_size, "device": device, "scorer": SCORER,
        "pedant": _pedant_note(opts), "checkpoints": [m.name for m in manifests], "eval_version": EVAL_VERSION,
    })
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.out / f"{args.name}_samples.parquet", index=False)
    summary.to_parquet(args.out / f"{args.name}_summary.parquet", index=False)
    headline.to_parquet(args.out / f"{args.name}_headline.parquet", index=False)
    (args.out / f"{args.name}_summary.json").write_text(json.dumps(
        {"meta": meta, "rows": json.loads(summary.to_json(orient="records"))}, indent=1) + "\n")
    if iv_frames:
        ivdf = pd.concat(iv_frames, ignore_index=True)
        ivdf.to_parquet(args.out / f"{args.name}_interventions.parquet", index=False)
    if args.markdown:
        from lsl_core.experiments.pages import write_page

        write_page(args.markdown, markdown_tables(summary, meta, training_curves(manifests), headline))
    print(summary[summary["voice"].isin(["seen", opts.unseen_voice])][
        [c for c in ("checkpoint", "voice", "text_f1", "speech_f1", "gap_f1", "agreement", "cascade_agreement",
                     "gap_answerable") if c in summary.columns]].to_string(index=False))
    print(f"wrote {args.out}/{args.name}_{{samples,summary}}.parquet"
          + (f" and {args.markdown}" if args.markdown else "") + f" in {time.time() - t_all:.0f} s", flush=True)
    return 0


def _interventions(model, samples, specs: list[str], max_new_tokens: int) -> pd.DataFrame:
    """Speech answers under each intervention (experiments.table1), printed as Table 1 per checkpoint, then each
    intervention against the nulls among `specs` (table1_nulls)."""
    from lsl_core.experiments.table1 import evaluate_interventions, nulls_markdown, table1, table1_markdown, table1_nulls

    out = evaluate_interventions(model, samples, specs, max_new_tokens)
    print(f"interventions, {model.name}:\n" + table1_markdown(table1(out)), flush=True)
    nulls = table1_nulls(out)
    if len(nulls):
        print(f"each intervention against its nulls, {model.name} (Δ = intervention − null, 95% CI):\n"
              + nulls_markdown(nulls), flush=True)
    out.insert(0, "checkpoint", model.name)
    return out
