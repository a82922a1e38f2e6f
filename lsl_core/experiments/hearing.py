"""What the speech path hears: word recall of a checkpoint's spoken-question repeat, split by whether the
word was ever spoken to it in training.

    python -m lsl_core hearing --checkpoint assets/checkpoints/align-repeat/align-step2700 --samples sd-qa-mini

Each clip goes through the checkpoint with the repeat instruction of the alignment curriculum (the
stage-1 target; the `repeat_system` its newest stage's config names, by default "Repeat the user's message
exactly, word for word."), greedy. A word of the spoken
question (normalize_transcript, every occurrence) counts as recalled when the output contains it. Words
are grouped by the checkpoint's **lineage**: every text its training stages spoke, read from each
stage's `train_targets.jsonl` beside its `train_config.json` (the checkpoint's trajectory, then its
`init`'s, and so on):

- ``question``: the word occurs in a training question (SD-QA English test split);
- ``other``: only in other training text (word sequences, written questions);
- ``never``: in no training text of the lineage.

A model that maps sounds to the LLM's tokens in general recalls ``never`` words about as well as the
others; one that learned a closed vocabulary recalls them almost never. With ``--asr`` the transcript of
the checkpoint's own Whisper decoder (the cascade's first half, cached as evaluate caches it) is scored on
the same clips and groups: the open-vocabulary reference (once per encoder and grouping of the clips' words:
checkpoints whose training gives every word here the same group and exposure share the row). Recall is per
voice group (the unseen voice vs the rest) with a 95% bootstrap interval over questions.

**Exposure** (how often training spoke a word) refines the split: a word's exposure is the number of training
clips that spoke it: distinct (example id, voice) pairs over the lineage's texts holding it (a training question
is spoken by each of its stage's voices, other text once; a clip several stages speak counts once, and a text held
under two ids, as the SD-QA test split holds one question, is two sets of clips).
`exposure_table` pools recall in bins of it (EXPOSURE_EDGES), the dose-response of hearing: how many
renditions a word needs before the speech path hears it as well as the Whisper transcript does.

**Chance** is each recall's null baseline: the share of the *other* questions' clips (same checkpoint, same
voice group) whose output holds the word, pooled like recall. Words every answer or repeat holds ("the",
"what") are recalled by chance alone; recall above chance is what the clip itself gave.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from lsl_core.cli import add_device_args
from lsl_core.data.synth import UNSEEN_VOICE
from lsl_core.errors import LSLError

GROUPS = ("question", "other", "never")  # where a spoken word was heard in training (module docstring)
REPEAT_SYSTEM = "Repeat the user's message exactly, word for word."  # TrainConfig.repeat_system's default
ASR_SUFFIX = ": Whisper ASR"  # rows of a checkpoint's Whisper transcript are named "<checkpoint>: Whisper ASR"
EXPOSURE_EDGES = (1, 10, 30, 100, 1000)  # bins of training clips per word: 0 | 1-9 | 10-29 | 30-99 | 100-999 | >= 1000
RESULTS_FILE = "hearing.parquet"  # the rows the Checkpoints page reads from the results folder
COMMAND = ("python -m lsl_core hearing --checkpoint assets/checkpoints/align-ctc/ctc-step1500 "
           "--checkpoint assets/checkpoints/align-repeat/align-step1800 "
           "--checkpoint assets/checkpoints/align-repeat/align-step2700 "
           "--checkpoint assets/checkpoints/qa-frozen/frozen-step2900 "
           "--checkpoint assets/checkpoints/qa-lora/lora-step2900 "
           "--samples sd-qa-mini --asr --out assets/results/hearing.parquet")  # writes the page's stored rows


@dataclass(frozen=True)
class Lineage:
    """Every text a checkpoint's training stages spoke: SD-QA training questions and other text, as
    normalised word sets, with the trajectory folders read (newest stage first) and any init not found."""

    question_words: frozenset[str]
    other_words: frozenset[str]
    stages: tuple[str, ...]
    missing: str = ""  # an init path named by a train config that could not be found ("" = complete)
    repeat_system: str = REPEAT_SYSTEM  # the repeat instruction the newest stage's config names
    clips: Mapping[str, int] = field(default_factory=dict)  # word -> training clips that spoke it (docstring)
    voices: frozenset[str] = frozenset()  # every voice a stage spoke its questions with (not "unseen" then)
    texts: frozenset[str] = frozenset()  # every spoken training text, normalised (words joined by a space)

    def group(self, word: str) -> str:
        """"question", "other" or "never" for one normalised word."""
        if word in self.question_words:
            return "question"
        return "other" if word in self.other_words else "never"

    def exposure(self, word: str) -> int:
        """Training clips that spoke a normalised word (0 = never spoken)."""
        return int(self.clips.get(word, 0))


def words(text: str) -> list[str]:
    """Normalised words of a text (normalize_transcript, split), in order, repeats kept."""
    from lsl_core.model.asr import normalize_transcript

    return normalize_transcript(text).split()


def _find(ref: str) -> Path | None:
    """An init path as a train config names it: relative to the working folder or to the project root."""
    from lsl_core.data.paths import assets_dir

    for p in (Path(ref), assets_dir().parent / ref):
        if p.exists():
            return p.parent if p.name == "manifest.json" else p
    return None


def lineage(checkpoint: str | Path, sdqa_ids: set[str] | None = None) -> Lineage:
    """The training texts of a checkpoint folder's lineage (module docstring).

    A row of `train_targets.jsonl` counts as a training question when its example_id is an SD-QA
    English test id (sdqa_ids; default: every training question's), else as other text; a question was
    spoken by each voice of its stage's config (`voices`, default TrainConfig's), other text once, which gives
    each word's exposure (`clips`: distinct (example id, voice) clips of the texts holding it; one a later stage
    speaks again counts once). Raises LSLError
    when the checkpoint's own trajectory has no train_targets.jsonl (an untrained or foreign checkpoint:
    nothing to split by) or an unreadable one; a missing *init* further up ends the walk and is reported
    in `missing`.
    """
    from lsl_core.experiments.train.checkpoints import CONFIG_NAME, TARGETS_NAME
    from lsl_core.data.synth import TRAIN_VOICE_FAMILY

    if sdqa_ids is None:
        from lsl_core.data.sdqa import load_sdqa_train_questions

        sdqa_ids = {str(q.example_id) for q in load_sdqa_train_questions()}
    folder = Path(checkpoint)
    folder = folder.parent if folder.name == "manifest.json" else folder
    qw: set[str] = set()
    ow: set[str] = set()
    spoken_by: dict[tuple[str, str], set[str]] = {}  # (example id, normalised text) -> voices that spoke it
    all_voices: set[str] = set()
    stages: list[str] = []
    missing = ""
    system = REPEAT_SYSTEM
    seen: set[Path] = set()
    while folder is not None:
        traj = folder.resolve().parent
        targets, config = traj / TARGETS_NAME, traj / CONFIG_NAME
        if traj in seen:
            break  # a config whose init points back into its own lineage
        seen.add(traj)
        if not targets.is_file() or not config.is_file():
            if not stages:
                raise LSLError(f"hearing: {folder} is not a trained checkpoint of this project (its trajectory "
                               f"{traj} has no {TARGETS_NAME} / {CONFIG_NAME}); pass a checkpoint that "
                               "`python -m lsl_core train` wrote.")
            missing = str(folder)
            break
        try:
            rows = [json.loads(line) for line in targets.read_text().splitlines() if line.strip()]
            cfg = json.loads(config.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LSLError(f"hearing: {traj} holds an unreadable {TARGETS_NAME} or {CONFIG_NAME} ({exc}); "
                           "restore it from the training run that wrote it.") from None
        voices = {str(v) for v in (cfg.get("voices") or TRAIN_VOICE_FAMILY)}
        all_voices |= voices
        for row in rows:
            is_question = str(row.get("example_id")) in sdqa_ids
            ws = words(str(row.get("question", "")))
            (qw if is_question else ow).update(ws)
            key = (str(row.get("example_id")), " ".join(ws))  # one id = its own renditions: its own clips
            spoken_by.setdefault(key, set()).update(voices if is_question else {""})  # other text: one clip
        if not stages:
            system = str(cfg.get("repeat_system") or REPEAT_SYSTEM)
        stages.append(traj.name)
        init = cfg.get("init")
        if not init:
            break
        folder = _find(str(init))
        if folder is None:
            missing = str(init)
    clips: dict[str, int] = {}
    for (_, text), vs in spoken_by.items():
        for w in set(text.split()):
            clips[w] = clips.get(w, 0) + len(vs)
    texts = frozenset(t for _, t in spoken_by)
    return Lineage(frozenset(qw), frozenset(ow - qw), tuple(stages), missing, system, clips, frozenset(all_voices),
                   texts)


def distinct_checkpoints(refs: list[str]) -> list[tuple[str, str]]:
    """(ref, manifest name) of each checkpoint folder once, in the order given (model.loading.distinct_manifests:
    a folder named twice runs once, two folders of one name are refused). Reads manifests only."""
    from lsl_core.model.loading import distinct_manifests, read_manifest

    manifests = [read_manifest(r) for r in refs]
    kept = {id(m) for m in distinct_manifests(manifests, "hearing", "Run `python -m lsl_core hearing` on each with "
                                                                    "its own --out.")}
    return [(r, m.name) for r, m in zip(refs, manifests) if id(m) in kept]

def unseen_voice_check(voices: list[str], unseen: str, explicit: bool, lineages: Mapping[str, Lineage],
                       command: str) -> None:
    """Refuse (LSLError) an --unseen-voice the clips do not have when one was given (else every clip would count
    as seen without a word), and an unseen voice among the clips that a lineage (name -> Lineage) trained on (its
    rows would be labelled unseen)."""
    from lsl_core.experiments.evaluate import check_unseen_voice

    check_unseen_voice(unseen if explicit else None, voices, command=command)
    if unseen in set(voices):
        for name, lin in lineages.items():
            if unseen in lin.voices:
                raise LSLError(f"{command}: {unseen!r} was a training voice of {name} (its lineage's train configs "
                               f"list it), so its clips are not an unseen voice; pass --unseen-voice with a voice "
                               f"that training never spoke (training voices: {', '.join(sorted(lin.voices))}).")


def untrained_voice_notes(voices: list[str], unseen: str, lineages: Mapping[str, Lineage],
                          fix: str = "leave them out with --voices") -> list[str]:
    """One note per lineage (name -> Lineage) that never spoke some voice of the clips other than the unseen one:
    the tables pool every such voice as "seen" (fix: how the command leaves them out). Lineages without voices
    (built by hand) give none."""
    have = sorted(set(voices) - {unseen})
    notes = []
    for name, lin in lineages.items():
        if lin.voices and (never := [v for v in have if v not in lin.voices]):
            notes.append(f"note: {name}'s training never spoke the voices {', '.join(never)}, yet the tables count "
                         f"them as 'seen' (every voice but {unseen}); {fix} to keep 'seen' to training voices.")
    return notes


def trained_questions(questions: list[str], lin: Lineage) -> list[str]:
    """The questions (distinct normalised texts, first spelling) that the lineage spoke in training.

    >>> trained_questions(["Who?", "who", "Why?"], Lineage(frozenset({"who"}), frozenset(), ("t",),
    ...                   texts=frozenset({"who"})))
    ['Who?']
    """
    first: dict[str, str] = {}  # normalised text -> its first spelling
    for q in questions:
        first.setdefault(" ".join(words(q)), q)
    return [q for t, q in first.items() if t in lin.texts]


def trained_note(questions: list[str], lin: Lineage, name: str, what: str) -> str | None:
    """A note naming the questions here the lineage spoke in training (trained_questions), with `what` that means
    for the command's numbers; None when every question is fresh."""
    if not (trained := trained_questions(questions, lin)):
        return None
    n = len({" ".join(words(q)) for q in questions})
    return (f"note: {len(trained)} of the {n} questions here were spoken in {name}'s training (e.g. {trained[0]!r}): "
            f"{what}")


def word_recall(output: str, question: str, lin: Lineage) -> dict[str, tuple[int, int]]:
    """group -> (recalled, spoken): the question's words (every occurrence) found in the output's words.

    >>> lin = Lineage(frozenset({"who", "invented"}), frozenset({"paper"}), ("t",))
    >>> word_recall("Who invented the paper clip?", "Who invented hangul paper?", lin)
    {'question': (2, 2), 'other': (1, 1), 'never': (0, 1)}
    """
    heard = set(words(output))
    out = {g: [0, 0] for g in GROUPS}
    for w in words(question):
        g = out[lin.group(w)]
        g[0] += w in heard
        g[1] += 1
    return {g: (h, n) for g, (h, n) in out.items()}


def coverage(questions: list[str], lin: Lineage) -> dict[str, int]:
    """How much of a question set the lineage ever spoke, over distinct questions: words (every occurrence),
    those never heard in training, questions, and questions with at least one never-heard word.

    >>> coverage(["Who wrote Hamlet?", "Who wrote Hamlet?", "Who is Zog?"], Lineage(frozenset({"who", "wrote", "is"}),
    ...          frozenset(), ("t",)))
    {'words': 6, 'never': 2, 'questions': 2, 'questions_with_never': 2}
    """
    qs = list(dict.fromkeys(questions))
    groups = [[lin.group(w) for w in words(q)] for q in qs]
    return {"words": sum(map(len, groups)), "never": sum(g.count("never") for g in groups), "questions": len(qs),
            "questions_with_never": sum("never" in g for g in groups)}


def repeat_outputs(model, samples, max_new_tokens: int = 32, batch_size: int = 16,
                   system: str = REPEAT_SYSTEM, progress: bool = True,
                   on_done: Callable[[int], None] | None = None) -> list[str]:
    """Greedy repeat of each sample's speech by the checkpoint (the repeat instruction as system prompt).

    Encoder states come from the on-disk feature cache (the same keys evaluate uses). progress: one bar over
    both phases (encoder states, then repeats: 2 steps a clip); on_done(n) is told of each n steps done (a
    caller's own bar)."""
    from tqdm import tqdm

    from lsl_core.experiments.evaluate import voice_of
    from lsl_core.experiments.train.trainer import with_template
    from lsl_core.model import batch as B
    from lsl_core.model.prompt import PromptTemplate

    repeat = with_template(model, PromptTemplate(**{**model.template.to_dict(), "system": system}))
    bar = tqdm(total=2 * len(samples), desc=f"repeat by {model.name}: encoder states", unit="step",
               disable=not progress, mininterval=5)

    def done(n: int) -> None:
        bar.update(n)
        if on_done is not None:
            on_done(n)

    queries = []
    for s in samples:
        st = B.cached_encoder_states(model.encoder, voice_of(s), s.id, lambda s=s: s.audio, B.audio_key(s.audio))
        queries.append(B.speech_query(model, st))  # [Tq, d]
        done(1)
    bar.set_description_str(f"repeat by {model.name}: repeats")
    out = B.generate_batch(repeat, queries, max_new_tokens, batch_size, on_batch=lambda idx, _ids: done(len(idx)))
    bar.close()
    return out


def recall_rows(outputs: list[str], questions: list[str], voices: list[str], lin: Lineage) -> pd.DataFrame:
    """One row per spoken word occurrence of each clip: question, voice, word, group, clips (its exposure),
    recalled (0/1: word_recall's test), spoken (1) and the clip's output, so sums over a clip's rows of a group
    give word_recall."""
    rows = []
    for out, q, v in zip(outputs, questions, voices, strict=True):
        heard = set(words(out))
        for w in words(q):
            rows.append({"question": q, "voice": v, "word": w, "group": lin.group(w), "clips": lin.exposure(w),
                         "recalled": int(w in heard), "spoken": 1, "output": out})
    return pd.DataFrame(rows, columns=["question", "voice", "word", "group", "clips", "recalled", "spoken", "output"])


def chance(rows: pd.DataFrame, unseen_voice: str = UNSEEN_VOICE) -> pd.Series:
    """Each word row's chance recall (module docstring): the share of the clips of *other* questions, same
    checkpoint (column `checkpoint`, if any) and voice group, whose `output` holds the word; NaN when there is
    no such clip. -> float Series aligned with rows. Needs the columns word, question, voice, output."""
    for c in ("word", "question", "voice", "output"):
        if c not in rows.columns:
            raise LSLError(f"hearing: the rows have no {c!r} column (written by an older version); re-run "
                           "`python -m lsl_core hearing --out <file>.parquet`.")
    out = pd.Series(np.nan, index=rows.index, dtype=float)
    keys = [rows["checkpoint"]] if "checkpoint" in rows.columns else []
    keys.append(rows["voice"] == unseen_voice)
    for _, part in rows.groupby(keys, sort=False):
        clips = part.drop_duplicates(["question", "voice"])  # one output per clip
        heard = [set(words(o)) for o in clips["output"]]
        n_clips = len(clips)
        per_q = clips.groupby("question", sort=False).size()  # clips of each question
        holds: dict[str, int] = {}  # word -> clips whose output holds it
        same: dict[tuple[str, str], int] = {}  # (word, question) -> clips of that question whose output holds it
        for q, h in zip(clips["question"], heard):
            for w in h:
                holds[w] = holds.get(w, 0) + 1
                same[(w, q)] = same.get((w, q), 0) + 1
        vals = [(holds.get(w, 0) - same.get((w, q), 0)) / (n_clips - per_q[q]) if n_clips > per_q[q] else np.nan
                for w, q in zip(part["word"], part["question"])]
        out.loc[part.index] = vals
    return out


def _pooled(part: pd.DataFrame, label: dict) -> dict:
    """One table row of word rows: words spoken, questions holding one, pooled recall with its 95% bootstrap
    interval over those questions (a replicate pools the clips of the questions it draws; lo/hi NaN below 2
    questions) and pooled chance (NaN without a chance column)."""
    from lsl_core.metrics.stats import bootstrap_ci

    per_q = part.groupby("question", sort=False)[["recalled", "spoken"]].sum()  # [n_q, 2]
    per_q = per_q[per_q["spoken"] > 0].to_numpy(dtype=float)
    n = int(per_q[:, 1].sum()) if len(per_q) else 0
    row = {**label, "spoken": n, "questions": len(per_q),
           "recall": float(per_q[:, 0].sum() / n) if n else float("nan"), "lo": float("nan"), "hi": float("nan"),
           "chance": float("nan")}
    if len(per_q) >= 2:
        ci = bootstrap_ci(per_q, lambda m: m[:, 0].sum() / max(m[:, 1].sum(), 1e-12))
        row["lo"], row["hi"] = float(ci.low), float(ci.high)
    if n and "chance" in part.columns:
        c = part["chance"].to_numpy(dtype=float) * part["spoken"].to_numpy(dtype=float)
        if np.isfinite(c).any():
            row["chance"] = float(np.nansum(c) / part.loc[np.isfinite(c), "spoken"].sum())
    return row


def _voice_groups(rows: pd.DataFrame, unseen_voice: str):
    """("seen", rows of the other voices), ("unseen", rows of unseen_voice), each only when non-empty."""
    for vg, sel in (("seen", rows["voice"] != unseen_voice), ("unseen", rows["voice"] == unseen_voice)):
        if sel.any():
            yield vg, rows[sel]


def with_chance(rows: pd.DataFrame, unseen_voice: str = UNSEEN_VOICE) -> pd.DataFrame:
    """rows + a chance column when they hold the word and output columns (rows of older versions do not) and
    have none yet; the tables compute it themselves, so add it once when building several tables from rows."""
    if "chance" in rows.columns or not {"word", "output"} <= set(rows.columns):
        return rows
    return rows.assign(chance=chance(rows, unseen_voice))


def recall_table(rows: pd.DataFrame, unseen_voice: str = UNSEEN_VOICE) -> pd.DataFrame:
    """Per voice group (seen, unseen) and word group: words spoken, questions holding such a word, recall
    (recalled / spoken, pooled over clips), its 95% bootstrap interval over those questions and chance (module
    docstring). -> columns voices, words, spoken, questions, recall, lo, hi, chance (fractions)."""
    rows = with_chance(rows, unseen_voice)
    return pd.DataFrame([_pooled(part[part["group"] == g], {"voices": vg, "words": g})
                         for vg, part in _voice_groups(rows, unseen_voice) for g in GROUPS])


def exposure_label(k: int, edges: tuple[int, ...] = EXPOSURE_EDGES) -> str:
    """Name of exposure bin k (0 = never spoken): "0", "1–9", ..., "≥ 1000".

    >>> [exposure_label(k, (1, 10, 30)) for k in range(4)]
    ['0', '1–9', '10–29', '≥ 30']
    """
    if k == 0:
        return "0"
    return f"≥ {edges[-1]}" if k == len(edges) else f"{edges[k - 1]}–{edges[k] - 1}"


def exposure_bin(clips, edges: tuple[int, ...] = EXPOSURE_EDGES) -> np.ndarray:
    """Bin index of each exposure (0 = never spoken, k = edges[k-1] <= clips < edges[k]). -> int array."""
    return np.searchsorted(np.asarray(edges), np.asarray(clips), side="right")


def exposure_table(rows: pd.DataFrame, unseen_voice: str = UNSEEN_VOICE,
                   edges: tuple[int, ...] = EXPOSURE_EDGES) -> pd.DataFrame:
    """Recall by exposure (module docstring): per voice group and bin of training clips per word, the words
    spoken, distinct words, questions, pooled recall with its 95% bootstrap interval over questions, chance.
    -> columns voices, bin (0 = never spoken), exposure (bin label), distinct, spoken, questions, recall, lo,
    hi, chance; bins with no spoken word are left out."""
    if "clips" not in rows.columns:
        raise LSLError("hearing: the rows have no 'clips' column (written by an older version); re-run "
                       "`python -m lsl_core hearing --out <file>.parquet`.")
    rows = with_chance(rows, unseen_voice)
    out = []
    for vg, part in _voice_groups(rows, unseen_voice):
        b = exposure_bin(part["clips"].to_numpy(), edges)
        for k in range(len(edges) + 1):
            sel = part[b == k]
            if len(sel):
                out.append(_pooled(sel, {"voices": vg, "bin": k, "exposure": exposure_label(k, edges),
                                         "distinct": int(sel["word"].nunique())}))
    return pd.DataFrame(out)


def _per_checkpoint(rows: pd.DataFrame, table: Callable[[pd.DataFrame], pd.DataFrame]) -> pd.DataFrame:
    """table() of each checkpoint's rows, in the rows' order with the transcripts last, checkpoint first."""
    if rows.empty or "checkpoint" not in rows.columns:
        raise LSLError("hearing: no rows with a checkpoint column; write them with `python -m lsl_core hearing "
                       "--out <file>.parquet`.")
    parts = [table(r).assign(checkpoint=name) for name, r in rows.groupby("checkpoint", sort=False)]
    parts.sort(key=lambda t: str(t["checkpoint"].iloc[0]).endswith(ASR_SUFFIX))  # transcripts last (stable)
    t = pd.concat(parts, ignore_index=True)
    return t[["checkpoint", *[c for c in t.columns if c != "checkpoint"]]]


def recall_tables(rows: pd.DataFrame, unseen_voice: str = UNSEEN_VOICE) -> pd.DataFrame:
    """recall_table per checkpoint of `hearing --out` rows (column checkpoint; a checkpoint's Whisper transcript
    is the checkpoint "<name>: Whisper ASR"), in the rows' order with the transcripts last, checkpoint first."""
    return _per_checkpoint(rows, lambda r: recall_table(r, unseen_voice))


def exposure_tables(rows: pd.DataFrame, unseen_voice: str = UNSEEN_VOICE,
                    edges: tuple[int, ...] = EXPOSURE_EDGES) -> pd.DataFrame:
    """exposure_table per checkpoint of `hearing --out` rows, ordered as recall_tables."""
    return _per_checkpoint(rows, lambda r: exposure_table(r, unseen_voice, edges))


def format_table(table: pd.DataFrame) -> str:
    """Markdown of recall_tables: one row per checkpoint x voice group, recall in % with its interval, the
    words spoken and chance per word group."""
    head = "| checkpoint | voices | " + " | ".join(f"recall, {g} words" for g in GROUPS) + " |"
    lines = [head, "|---|---|" + "--:|" * len(GROUPS)]
    for (name, vg), t in table.groupby(["checkpoint", "voices"], sort=False):
        cells = []
        for g in GROUPS:
            r = t[t["words"] == g].iloc[0]
            if not r["spoken"]:
                cells.append("– (0 words)")
                continue
            cells.append(_cell(r))
        lines.append(f"| {name} | {vg} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(r) -> str:
    """"recall [lo, hi] (n words, chance c)" in % for one table row."""
    ci = f" [{100 * r['lo']:.1f}, {100 * r['hi']:.1f}]" if np.isfinite(r["lo"]) else ""
    ch = f", chance {100 * r['chance']:.1f}" if "chance" in r and np.isfinite(r["chance"]) else ""
    return f"{100 * r['recall']:.1f}{ci} ({r['spoken']} words{ch})"


def format_exposure(table: pd.DataFrame) -> str:
    """Markdown of exposure_tables: one row per checkpoint x voice group, one column per exposure bin (training
    clips per word), recall in % with its interval, the words spoken and chance."""
    order = table.drop_duplicates("bin").sort_values("bin")
    head = "| checkpoint | voices | " + " | ".join(f"recall, {e} clips" for e in order["exposure"]) + " |"
    lines = [head, "|---|---|" + "--:|" * len(order)]
    for (name, vg), t in table.groupby(["checkpoint", "voices"], sort=False):
        by_bin = {int(r["bin"]): r for _, r in t.iterrows()}
        lines.append(f"| {name} | {vg} | " + " | ".join(_cell(by_bin[k]) if k in by_bin else "–"
                                                         for k in order["bin"]) + " |")
    return "\n".join(lines)


def register(subparsers) -> None:
    """Add `hearing` to `python -m lsl_core`."""
    p = subparsers.add_parser("hearing", help="word recall of the speech path: words heard in training vs never heard",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True,
                   help="a trained checkpoint folder or its manifest.json (repeatable)")
    p.add_argument("--samples", default="sd-qa-mini", help="sample set spec (sd-qa-mini, manifest:<dir>, ...)")
    p.add_argument("--voices", default=None, help="comma-separated voices to keep (default: all)")
    p.add_argument("--n-questions", type=int, default=None, help="first N distinct questions of the set (all voices)")
    p.add_argument("--unseen-voice", default=None,
                   help=f"the voice held out of training (default {UNSEEN_VOICE}; one you give must be in the "
                        "samples, and no checkpoint's training may have spoken it)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="greedy repeat length")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per batched generate call")
    p.add_argument("--asr", action="store_true",
                   help="also score the transcript of each checkpoint's Whisper decoder (the cascade's ASR), "
                        "same groups")
    p.add_argument("--examples", type=int, default=0, help="also print this many clips (question | repeat)")
    p.add_argument("--out", type=Path, default=None, help="write the per-clip rows here (parquet)")
    add_device_args(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.evaluate import select_samples, transcripts, voice_of
    from lsl_core.model import batch as B
    from lsl_core.model.loading import load_checkpoint

    samples = select_samples(load_sample_set(args.samples), args.n_questions,
                             [v.strip() for v in args.voices.split(",")] if args.voices else None)
    if not len(samples):
        raise LSLError("hearing: no samples; check --samples, --voices and --n-questions.")
    # every checkpoint checked before any model loads: one folder once, no two of one name, each with a lineage
    checkpoints = distinct_checkpoints(args.checkpoint)
    lineages = {ck: lineage(ck) for ck, _ in checkpoints}
    clips = list(samples)
    questions, voices = [s.question for s in clips], [voice_of(s) for s in clips]
    unseen = args.unseen_voice or UNSEEN_VOICE
    by_name = {name: lineages[ck] for ck, name in checkpoints}
    unseen_voice_check(voices, unseen, args.unseen_voice is not None, by_name, "hearing")
    for note in untrained_voice_notes(voices, unseen, by_name):
        print(note)
    for name, lin in by_name.items():
        if note := trained_note(questions, lin, name, "their recall is of training sentences, not of fresh "
                                                      "questions; evaluate on questions training never spoke."):
            print(note)
    all_rows = []
    asr_done: dict[tuple, str] = {}  # (encoder, words' groups and exposures) -> the checkpoint whose ASR row has them
    for ck, lin in lineages.items():
        model = load_checkpoint(ck, device=args.device)
        name = model.name or Path(ck).name
        outs = repeat_outputs(model, clips, args.max_new_tokens, args.batch_size, lin.repeat_system)
        rows = recall_rows(outs, questions, voices, lin)
        all_rows.append(rows.assign(checkpoint=name))
        where = " <- ".join(lin.stages)
        if lin.missing:
            where += f" (init {lin.missing} not found: lineage incomplete)"
        cov = coverage(questions, lin)
        never_pct = 100 * cov["never"] / max(cov["words"], 1)
        q_pct = 100 * cov["questions_with_never"] / max(cov["questions"], 1)
        print(f"{name}: lineage {where}; training spoke {len(lin.question_words)} distinct words in questions, "
              f"{len(lin.other_words)} more in other text. Of the {cov['words']} words of the {cov['questions']} "
              f"questions here, {cov['never']} ({never_pct:.0f}%) were never spoken in training; "
              f"{cov['questions_with_never']} questions ({q_pct:.0f}%) hold at least one.")
        for q, o in list(zip(questions, outs))[: args.examples]:
            print(f"   {q} | {o}")
        asr_key = (str((model.manifest or {}).get("encoder", "")),
                   tuple((lin.group(w), lin.exposure(w)) for q in dict.fromkeys(questions) for w in words(q)))
        if args.asr and model.has_asr and asr_key in asr_done:  # its transcript rows would repeat that row
            print(f"{name}: same encoder, and the words here have the same groups and exposures as for "
                  f"{asr_done[asr_key]}: its Whisper ASR row stands.")
        elif args.asr and model.has_asr:  # the cascade's first half on the same clips, grouped by this lineage
            asr_done[asr_key] = name
            heard = transcripts(model, clips, [B.audio_key(s.audio) for s in clips])
            asr_rows = recall_rows(heard, questions, voices, lin)
            all_rows.append(asr_rows.assign(checkpoint=name + ASR_SUFFIX))
        elif args.asr:
            print(f"{name}: its encoder has no ASR decoder; no transcript row.")
        del model
    what = "repeat (rows ': Whisper ASR': its Whisper transcript)" if args.asr else "repeat"
    print(f"Word recall of the spoken question in each checkpoint's {what} (%, 95% bootstrap over questions), "
          f"{len(clips)} clips of {args.samples}:")
    every = pd.concat(all_rows, ignore_index=True)
    scored = with_chance(every, unseen)  # once for both tables; not stored (it depends on the clips)
    print(format_table(recall_tables(scored, unseen)))
    print("The same by exposure: training clips that spoke the word (a training question counts once per voice "
          "of its stage), chance = the word in the outputs of the other questions' clips:")
    print(format_exposure(exposure_tables(scored, unseen)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        every.to_parquet(args.out)
        print(f"rows: {args.out}")
    return 0
