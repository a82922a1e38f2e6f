"""`python -m lsl_core voicebench`: checkpoints x VoiceBench subsets x modality -> answers, scores, GAP, R².

    python -m lsl_core voicebench --data /data/voicebench \\
        --subsets sd-qa:usa,mmsu,openbookqa,ifeval,advbench --zoo ckpts/ --out results/vb
    torchrun --nproc-per-node 8 -m lsl_core voicebench ...same flags...      # one model copy per GPU
    python -m lsl_core voicebench --out results/vb --data ... --score-only      # rescore / merge shards

Modalities: text (the row's typed `prompt`, as VoiceBench), speech (its audio through encoder and
adaptor), cascade (the encoder's own Whisper decoder transcribes the audio; the transcript is the
text query). Greedy answers are appended to <out>/answers/answers.<rank>-of-<world>.jsonl, one
line per (checkpoint, modality, sample), flushed and fsync'ed per batch: a crash or Ctrl-C loses
at most the batch in flight, and a rerun skips every row already there (a torn last line is
ignored). A rerun into the same folder must match what made its answers (run.json: max_new_tokens, the
weights' dtype, each checkpoint's weights, each row's prompt and source file), else it is refused.
Work is planned in fixed batches ("units") over all rows, sorted by prompt length, and
unit u goes to rank u % world, so 1 process and N processes run the very same batches.

Then (rank 0, after every rank is done; only the answers of the selected rows, missing ones counted and
said): the optional LLM judge (LSL_JUDGE_URL), per-sample scores,
per-subset scores with bootstrap CIs, GAP per subset and overall (sample-weighted), the R² of
every alignment metric vs GAP across checkpoints (alignment from --align N samples per subset, or
an `analyze` parquet via --alignment), written to <out>/{scores,summary,gap,r2,alignment}.parquet,
results.json (with config, versions, seeds, problems) and report.md (header: command + code version),
each written to a temporary file and renamed into place.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from lsl_core.cli import add_device_args
from lsl_core.errors import AudioError, DataError, LSLError
from lsl_core.results import read_table

RUN_VERSION = 1  # bump when answers change meaning (prompting, decoding)
MODALITIES = ("text", "speech", "cascade")


@dataclass(frozen=True)
class RunConfig:
    """What one VoiceBench run answers and how; stored in results.json and checked on resume."""

    data: str  # a VoiceBench folder (root or subset folder), or a sample-set spec with as_subset
    subsets: tuple[str, ...] = ()  # selection like ("sd-qa:usa", "mmsu"); () = every subset found
    modalities: tuple[str, ...] = ("text", "speech")  # any of text, speech, cascade
    max_new_tokens: int = 128  # greedy answer length (all modalities)
    batch_size: int = 8  # rows per generate call (one unit of work)
    limit: int = 0  # first N rows of each subset (0 = all)
    align: int = 0  # alignment metrics on the first N rows of each subset per checkpoint (0 = none)
    as_subset: str = ""  # score a non-VoiceBench sample set as this subset (e.g. sd-qa-mini as "sd-qa")
    seed: int = 0  # torch seed (greedy decoding does not sample) and bootstrap seed
    n_boot: int = 1000  # bootstrap replicates for the CIs

    def __post_init__(self) -> None:
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise LSLError(f"RunConfig.modalities must be a non-empty subset of {MODALITIES}, got {self.modalities}.")
        for name in ("max_new_tokens", "batch_size", "n_boot"):
            if getattr(self, name) <= 0:
                raise LSLError(f"RunConfig.{name} must be positive, got {getattr(self, name)}.")
        for name in ("limit", "align"):
            if getattr(self, name) < 0:
                raise LSLError(f"RunConfig.{name} must be >= 0, got {getattr(self, name)}.")
        if self.as_subset:
            from lsl_core.data.voicebench import SUBSETS

            if self.as_subset not in SUBSETS:
                raise LSLError(f"RunConfig.as_subset must be a VoiceBench subset ({', '.join(SUBSETS)}), "
                               f"got {self.as_subset!r}.")

    def answer_fields(self, dtype: str | None = None) -> dict:
        """The settings that change an answer: a rerun into the same folder must match them (dtype: the
        weights' precision, bf16 on CUDA and float32 on the CPU by default)."""
        return {"max_new_tokens": self.max_new_tokens, "run_version": RUN_VERSION,
                **({"dtype": dtype} if dtype else {})}


# =========================================================================== samples
def load_samples(cfg: RunConfig):
    """The run's samples (metadata; audio decodes lazily) with loader problems in `.problems`."""
    from lsl_core.data.sets import SampleRecord, SampleSet, load_sample_set
    from lsl_core.data.voicebench import load_voicebench

    if Path(cfg.data).expanduser().is_dir() and not cfg.as_subset:
        s = load_voicebench(cfg.data, subsets=list(cfg.subsets) or None, on_error="collect")
    else:
        if not cfg.as_subset:
            raise LSLError(f"--data {cfg.data!r} is not a folder; for a sample-set spec give --as-subset "
                           "(e.g. --data sd-qa-mini --as-subset sd-qa).")
        base = load_sample_set(cfg.data)
        recs = []
        for i in range(len(base)):
            r = base.record(i)
            meta = dict(r.meta or {}, subset=cfg.as_subset, split=r.accent or "test")
            recs.append(SampleRecord(id=r.id, question=r.question, load_audio=r.load_audio if hasattr(r, "load_audio")
                                     else (lambda r=r: r.audio), answers=tuple(r.answers), accent=r.accent,
                                     source=r.source, meta=meta))
        s = SampleSet(base.name, recs, problems=getattr(base, "problems", []))
    if cfg.limit:
        seen: dict[str, int] = {}
        keep = []
        for i in range(len(s)):
            sub = s.record(i).meta.get("subset")
            seen[sub] = seen.get(sub, 0) + 1
            if seen[sub] <= cfg.limit:
                keep.append(s.record(i).id)
        s = s.filter(ids=keep)
    if len(s) == 0:
        raise DataError(f"No usable rows in {cfg.data}: " + "; ".join(str(p) for p in s.problems[:3]))
    return s


# =========================================================================== the answers store
def _key(row: dict) -> tuple[str, str, str]:
    return (row["checkpoint"], row["modality"], row["sample_id"])


def read_jsonl_rows(folder: Path) -> list[dict]:
    """Every complete JSON line of every *.jsonl in folder (a torn last line from a crash is skipped)."""
    rows = []
    for f in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for line in f.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: its row is simply redone
    return rows


class AppendLog:
    """One process's JSONL file: rows appended, flushed and fsync'ed together (one unit at a time)."""

    def __init__(self, folder: Path, rank: int, world: int):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"answers.{rank:03d}-of-{world:03d}.jsonl"
        if folder.name != "answers":
            self.path = folder / f"{folder.name}.{rank:03d}-of-{world:03d}.jsonl"

    def append(self, rows: Sequence[dict]) -> None:
        if not rows:
            return
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with open(self.path, "a", encoding="utf-8") as fh:
            if fh.tell() > 0:  # a torn line from a killed run must not swallow the next row
                with open(self.path, "rb") as rd:
                    rd.seek(-1, os.SEEK_END)
                    if rd.read(1) != b"\n":
                        fh.write("\n")
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


# =========================================================================== planning
@dataclass
class Unit:
    """One batch of work: rows of one checkpoint and modality answered by one generate call."""

    checkpoint: str
    modality: str
    items: list[tuple[str, list[str]]] = field(default_factory=list)  # (prompt or sample id, sample ids)

    def keys(self) -> list[tuple[str, str, str]]:
        return [(self.checkpoint, self.modality, sid) for _, ids in self.items for sid in ids]


def plan_units(checkpoint: str, samples, modalities: Sequence[str], batch_size: int) -> list[Unit]:
    """Every unit of one checkpoint, in a fixed order that does not depend on shards or progress.

    text: one item per distinct prompt (its answer serves every sample with that prompt);
    speech/cascade: one item per sample. Items are sorted by prompt length (similar lengths batch
    with little padding), then cut into batches of batch_size.
    """
    recs = [samples.record(i) for i in range(len(samples))]
    units = []
    for modality in modalities:
        if modality == "text":
            by_prompt: dict[str, list[str]] = {}
            for r in recs:
                by_prompt.setdefault(r.question, []).append(r.id)
            items = sorted(by_prompt.items(), key=lambda kv: (len(kv[0]), kv[0]))
        else:
            items = sorted(((r.id, [r.id]) for r in recs), key=lambda kv: (len(samples.record(kv[0]).question), kv[0]))
        for start in range(0, len(items), batch_size):
            units.append(Unit(checkpoint, modality, list(items[start:start + batch_size])))
    return units


def shard_of(world: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """(rank, world) from arguments or the launcher's RANK / WORLD_SIZE (torchrun)."""
    w = world if world is not None else int(os.environ.get("WORLD_SIZE", "1"))
    r = rank if rank is not None else int(os.environ.get("RANK", "0"))
    if w < 1 or not 0 <= r < w:
        raise LSLError(f"Shard {r} of {w} is not valid; RANK must be in [0, WORLD_SIZE).")
    return r, w


# =========================================================================== answering
def _meta_cols(m) -> dict:
    return {"checkpoint": m.name, "family": m.family, "strategy": m.strategy, "step": int(m.step)}


def answer_unit(model, unit: Unit, samples, m, cfg: RunConfig, run_id: str) -> list[dict]:
    """Generate one unit's answers -> JSONL rows (a sample whose audio fails gets an `error` row)."""
    import torch

    from lsl_core.model import batch as B

    base = {**_meta_cols(m), "modality": unit.modality, "run": run_id}
    rows: list[dict] = []
    t0 = time.time()
    # a family (prompt and weights per modality, no separate encoder) answers whole prompts; the plain stack answers
    # query embeddings, its encoder states cached on disk
    whole = bool(getattr(model, "weights_per_modality", False))
    text_in = (lambda q: model.prompt_for(text=q)) if whole else (lambda q: B.text_query(model, q))

    def answer(queries: list) -> list[str]:
        if whole:
            return model.generate_answers(queries, cfg.max_new_tokens, batch_size=max(1, len(queries)))
        return B.generate_batch(model, queries, cfg.max_new_tokens, batch_size=max(1, len(queries)))

    with torch.no_grad():
        if unit.modality == "text":
            answers = answer([text_in(p) for p, _ in unit.items])
            for (_, ids), ans in zip(unit.items, answers):
                rows += [{**base, "sample_id": sid, "answer": ans} for sid in ids]
        else:
            queries, ok, transcripts = [], [], {}
            for sid, _ in unit.items:
                try:
                    s = samples[sid]
                except AudioError as exc:  # the row's audio is unusable: the sample leaves every modality
                    rows.append({**base, "sample_id": sid, "answer": None, "error": str(exc), "error_scope": "sample"})
                    continue
                if unit.modality == "speech" and whole:
                    try:
                        queries.append(model.prompt_for(audio=s.audio, sr=s.sr))
                    except AudioError as exc:  # e.g. too short for one speech position of this family
                        rows.append({**base, "sample_id": sid, "answer": None, "error": str(exc),
                                     "error_scope": "modality"})
                        continue
                elif unit.modality == "speech":
                    st = B.cached_encoder_states(model.encoder, str(s.meta.get("subset", "set")), sid,
                                                 lambda s=s: s.audio, B.audio_key(s.audio))
                    queries.append(B.speech_query(model, st))
                else:
                    try:
                        transcripts[sid] = model.transcribe(s.audio, s.sr)
                    except Exception as exc:  # noqa: BLE001 - an ASR failure costs only this cascade answer
                        rows.append({**base, "sample_id": sid, "answer": None, "error_scope": "modality",
                                     "error": f"ASR failed ({type(exc).__name__}: {exc})"})
                        continue
                    queries.append(text_in(transcripts[sid] or "."))
                ok.append(sid)
            answers = answer(queries) if queries else []
            for sid, ans in zip(ok, answers):
                row = {**base, "sample_id": sid, "answer": ans}
                if unit.modality == "cascade":
                    row["transcript"] = transcripts[sid]
                rows.append(row)
    dt = (time.time() - t0) / max(1, len(rows))
    for r in rows:
        r["subset"] = samples.record(r["sample_id"]).meta.get("subset")
        r["seconds"] = round(dt, 4)
    return rows


def alignment_todo(samples, checkpoint: str, n_per_subset: int, rank: int, world: int, done: set) -> list[str]:
    """This rank's share of the first n rows of each subset not analyzed yet for the checkpoint."""
    picked, seen = [], {}
    for i in range(len(samples)):
        r = samples.record(i)
        sub = r.meta.get("subset")
        seen[sub] = seen.get(sub, 0) + 1
        if seen[sub] <= n_per_subset:
            picked.append(r.id)
    return [sid for j, sid in enumerate(picked) if j % world == rank and (checkpoint, sid) not in done]


def alignment_rows(model, samples, m, ids: Sequence[str]) -> list[dict]:
    """Alignment scalars (lsl_core.analysis, layers 1..L means) of the given rows; errors as rows."""
    from lsl_core.analysis import AnalysisOptions, analyze_sample

    rows = []
    for sid in ids:
        try:
            a = analyze_sample(model, samples[sid], AnalysisOptions(cka=False))
        except LSLError as exc:
            rows.append({**_meta_cols(m), "sample_id": sid, "error": str(exc)})
            continue
        sc = {k: v for k, v in a.scalars().items() if not isinstance(v, list)}
        rows.append({**_meta_cols(m), **sc, "sample_id": sid, "subset": samples.record(sid).meta.get("subset")})
    return rows


# =========================================================================== the run
def _versions() -> dict:
    import numpy
    import torch
    import transformers

    commit = ""
    try:
        import subprocess

        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": numpy.__version__, "pandas": pd.__version__, "platform": platform.platform(),
            "lsl_core_commit": commit}


def row_fingerprints(samples) -> dict[str, str]:
    """sample id -> a short hash of what the row is (prompt, source file name and size, row, split): ids are
    positions in the files, so this tells the same rows (also moved to another folder) from other rows."""
    import hashlib

    sizes: dict[str, int] = {}
    out = {}
    for i in range(len(samples)):
        r = samples.record(i)
        meta = r.meta or {}
        path = meta.get("path")
        if isinstance(path, str) and path not in sizes:
            try:
                sizes[path] = Path(path).stat().st_size
            except OSError:
                sizes[path] = -1
        key = json.dumps([r.question, meta.get("file"), sizes.get(path), meta.get("row"), r.accent], default=str)
        out[r.id] = hashlib.sha256(key.encode()).hexdigest()[:12]
    return out


def _check_config(out: Path, cfg: RunConfig, digests: dict[str, str], rank: int, dtype: str | None = None,
                  rows: dict[str, str] | None = None) -> None:
    """Refuse to mix answers made with other settings, other weights under the same names, or other data rows
    under the same sample ids (rows: row_fingerprints of the run's samples)."""
    path = out / "run.json"
    want = {"answer_fields": cfg.answer_fields(dtype), "checkpoints": digests, "rows": rows or {}}
    if path.is_file():
        have = json.loads(path.read_text())
        stored = dict(have.get("answer_fields") or {})
        if "dtype" not in stored and "dtype" in want["answer_fields"]:  # a folder from before dtype was recorded
            stored["dtype"] = want["answer_fields"]["dtype"]
        if stored != want["answer_fields"]:
            raise LSLError(f"{out} holds answers made with {have.get('answer_fields')}; this run asks for "
                           f"{want['answer_fields']}. Use another --out, or --fresh to start over.")
        clash = [k for k, d in digests.items() if have.get("checkpoints", {}).get(k, d) != d]
        if clash:
            raise LSLError(f"{out} holds answers of other weights named {', '.join(clash)}; use another --out, "
                           "or --fresh to start over.")
        old_rows = have.get("rows") or {}
        changed = [k for k, fp in (rows or {}).items() if old_rows.get(k, fp) != fp]
        if changed:
            raise LSLError(f"{out} holds answers of other data rows under the ids {', '.join(changed[:3])}"
                           f"{' ...' if len(changed) > 3 else ''} ({len(changed)} rows: other prompts or audio files "
                           f"than in {cfg.data}); use another --out, or --fresh to start over.")
        want["checkpoints"] = {**have.get("checkpoints", {}), **digests}
        want["rows"] = {**old_rows, **(rows or {})}
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".run.json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(want, indent=1) + "\n")
        os.replace(tmp, path)


def run_answers(cfg: RunConfig, manifests, out: Path, *, device: str | None = None, rank: int = 0, world: int = 1,
                samples=None, on_unit: Callable[[Unit, int], None] | None = None, progress: bool = True,
                answer_fn: Callable[..., list[dict]] | None = None) -> dict:
    """Answer every pending unit of this rank (and its alignment rows); returns counts.

    on_unit(unit, n_done_by_this_call) is called after each unit is stored (progress, tests).
    answer_fn(model, unit, samples, manifest, cfg, run_id) -> rows replaces `answer_unit` (e.g. to
    replay answers produced elsewhere through the same store, resume and scoring).
    """
    answer_fn = answer_fn or answer_unit
    import torch

    from lsl_core.model import loading
    from lsl_core.model.loading import load_checkpoint, manifest_digest

    samples = samples if samples is not None else load_samples(cfg)
    dev = torch.device(device) if device is not None else loading.default_device()
    dtype = str(loading.default_dtype(dev)).removeprefix("torch.")  # what load_checkpoint will load
    _check_config(out, cfg, {m.name: manifest_digest(m) for m in manifests}, rank, dtype, row_fingerprints(samples))
    log = AppendLog(out / "answers", rank, world)
    align_log = AppendLog(out / "alignment", rank, world)
    done = {_key(r) for r in read_jsonl_rows(out / "answers")}
    align_done = {(r["checkpoint"], r["sample_id"]) for r in read_jsonl_rows(out / "alignment")}
    run_id = uuid.uuid4().hex[:8]
    counts = {"units": 0, "rows": 0, "skipped_rows": 0, "alignment_rows": 0}
    torch.manual_seed(cfg.seed)
    for m in manifests:
        units = plan_units(m.name, samples, cfg.modalities, cfg.batch_size)
        mine = [u for i, u in enumerate(units) if i % world == rank]
        pending = []
        for u in mine:
            todo = [(p, [s for s in ids if (u.checkpoint, u.modality, s) not in done]) for p, ids in u.items]
            todo = [(p, ids) for p, ids in todo if ids]
            counts["skipped_rows"] += sum(len(ids) for _, ids in u.items) - sum(len(ids) for _, ids in todo)
            if todo:
                pending.append(Unit(u.checkpoint, u.modality, todo))
        align_ids = alignment_todo(samples, m.name, cfg.align, rank, world, align_done) if cfg.align else []
        if not pending and not align_ids:
            continue
        model = load_checkpoint(m, device=device)
        if "cascade" in cfg.modalities and not model.has_asr:
            print(f"note: {m.name} has no ASR decoder; its cascade answers are skipped", flush=True)
            pending = [u for u in pending if u.modality != "cascade"]
        bar = None
        if progress and pending:
            from tqdm import tqdm

            bar = tqdm(total=len(pending), desc=f"voicebench {m.name} [{rank}/{world}]", unit="batch")
        for u in pending:
            rows = answer_fn(model, u, samples, m, cfg, run_id)
            log.append(rows)
            done.update(_key(r) for r in rows)
            counts["units"] += 1
            counts["rows"] += len(rows)
            if bar is not None:
                bar.update(1)
            if on_unit is not None:
                on_unit(u, counts["units"])
        if bar is not None:
            bar.close()
        if align_ids:
            rows = alignment_rows(model, samples, m, align_ids)
            align_log.append(rows)
            counts["alignment_rows"] += len(rows)
        del model
    return counts


# =========================================================================== scoring (rank 0)
def collect_answers(out: Path) -> pd.DataFrame:
    """All shards' answer rows, one per (checkpoint, modality, sample) (the first written wins)."""
    rows, seen = [], set()
    for r in read_jsonl_rows(out / "answers"):
        k = _key(r)
        if k not in seen:
            seen.add(k)
            rows.append(r)
    if not rows:
        raise LSLError(f"No answers in {out / 'answers'}; run without --score-only first.")
    df = pd.DataFrame(rows)
    return df.sort_values(["checkpoint", "modality", "sample_id"], kind="stable", ignore_index=True)


def judge_answers(answers: pd.DataFrame, samples, out: Path) -> tuple[pd.DataFrame | None, dict | None]:
    """LLM-judge rows for sd-qa and open-ended answers when LSL_JUDGE_URL is set (resumable), else (None, None)."""
    from lsl_core.scoring import evaluator_for
    from lsl_core.scoring.judge import JudgeConfig, judge_open, judge_qa

    cfg = JudgeConfig.from_env()
    if cfg is None:
        return None, None
    folder = out / "judge"
    log = AppendLog(folder, 0, 1)
    have = {(r["checkpoint"], r["modality"], r["sample_id"]): r for r in read_jsonl_rows(folder)
            if r.get("judge_model") == cfg.model}
    for a in answers.to_dict("records"):
        if a.get("error") or not isinstance(a.get("answer"), str):
            continue
        rec = samples.record(a["sample_id"])
        ev = evaluator_for(rec.meta.get("subset"))
        k = (a["checkpoint"], a["modality"], a["sample_id"])
        if ev.name not in ("sdqa", "open") or k in have:
            continue
        if ev.name == "sdqa":
            res = judge_qa(cfg, rec.question, rec.answers[0] if rec.answers else "", a["answer"])
        else:
            res = judge_open(cfg, rec.question, a["answer"])
        row = {"checkpoint": k[0], "modality": k[1], "sample_id": k[2], "judge_model": cfg.model, **res}
        log.append([row])
        have[k] = row
    return (pd.DataFrame(list(have.values())) if have else None), cfg.record()


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) then rename tmp over path: a reader (or a crash) sees the old file or the new one, never part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def finalize(out: Path, cfg: RunConfig, samples=None, alignment_file: str | None = None,
             command: str = "") -> dict:
    """Answers in `out` -> scores, summary, gap, alignment, r2 (parquet), results.json, report.md.

    Only answers of this run's rows (`samples`, i.e. cfg's --subsets / --limit) are scored; others stored in
    `out` are counted in meta["answers_not_selected"]. Every file is computed first, then each is written to a
    temporary file and renamed over the old one.
    """
    from lsl_core.data.voicebench import count_notes
    from lsl_core.experiments import voicebench_scores as vs
    from lsl_core.experiments.pages import code_version

    samples = samples if samples is not None else load_samples(cfg)
    answers = collect_answers(out)
    selected = set(samples.ids())
    in_run = answers["sample_id"].isin(selected)
    not_selected = int((~in_run).sum())
    answers = answers[in_run].reset_index(drop=True)
    if answers.empty:
        raise LSLError(f"None of the {not_selected} answers in {out / 'answers'} is for a row of this run's "
                       f"selection ({cfg.data}, subsets {','.join(cfg.subsets) or 'all'}); pass the --data / "
                       "--subsets / --limit / --as-subset the answers were made with.")
    # every (checkpoint, modality) that has answers should have one for every selected row: fewer means shards
    # that are not in `out` (several nodes without a shared filesystem, a merge that missed files) or a run
    # still going; the tables then cover part of the rows, so it is counted and said
    have_keys = set(zip(answers["checkpoint"], answers["modality"], answers["sample_id"]))
    missing = [(ck, mod, sid) for ck, mod in dict.fromkeys(zip(answers["checkpoint"], answers["modality"]))
               for sid in samples.ids() if (ck, mod, sid) not in have_keys]
    judged, judge_record = judge_answers(answers, samples, out)
    scores, errors = vs.score_answers(answers, samples, judged)
    problems = [str(p) for p in samples.problems]
    tables = vs.summarize_scores(scores, n_boot=cfg.n_boot, seed=cfg.seed, errors=problems + errors)
    align = pd.DataFrame([r for r in read_jsonl_rows(out / "alignment")
                          if not r.get("error") and r.get("sample_id") in selected])
    if alignment_file:
        extra = read_table(alignment_file)
        if "checkpoint" not in extra.columns or "sample_id" not in extra.columns:
            raise DataError(f"{alignment_file} has no checkpoint/sample_id columns; give the output of "
                            "`python -m lsl_core analyze`.")
        align = pd.concat([align, extra], ignore_index=True) if len(align) else extra
    if len(align):
        align = align.drop_duplicates(["checkpoint", "sample_id"], keep="first")
        subset_of = {samples.record(i).id: samples.record(i).meta.get("subset") for i in range(len(samples))}
        align["subset"] = [subset_of.get(s, sub if isinstance(sub, str) else None)
                           for s, sub in zip(align["sample_id"], align.get("subset", [None] * len(align)))]
    r2 = vs.r2_table(tables.gap, align) if len(align) else None
    meta = {"command": command or "python -m lsl_core voicebench ...", "code_version": code_version(),
            "data": cfg.data, "config": asdict(cfg),
            "versions": _versions(), "seeds": {"torch": cfg.seed, "bootstrap": cfg.seed, "n_boot": cfg.n_boot},
            "max_new_tokens": cfg.max_new_tokens, "judge": judge_record,
            "checkpoints": list(dict.fromkeys(answers["checkpoint"])), "count_notes": count_notes(samples),
            "problems": problems, "errors": errors, "answers_not_selected": not_selected,
            "missing_answers": len(missing), "missing_example": "/".join(missing[0]) if missing else None,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    payload = {"meta": meta, "summary": json.loads(tables.summary.to_json(orient="records")),
               "gap": json.loads(tables.gap.to_json(orient="records")),
               "r2": None if r2 is None else json.loads(r2.to_json(orient="records"))}
    results_json = json.dumps(payload, indent=1) + "\n"
    report = vs.markdown_report(tables, r2, meta)
    out.mkdir(parents=True, exist_ok=True)
    tabs = {"scores": tables.scores, "summary": tables.summary, "gap": tables.gap,
            "alignment": align if len(align) else None, "r2": r2}
    for name, df in tabs.items():
        if df is not None:
            write_atomically(out / f"{name}.parquet", lambda p, df=df: df.to_parquet(p, index=False))
        else:  # an earlier finalize's table must not pass for this one's (the Benchmark page reads r2.parquet)
            (out / f"{name}.parquet").unlink(missing_ok=True)
    write_atomically(out / "results.json", lambda p: p.write_text(results_json))
    write_atomically(out / "report.md", lambda p: p.write_text(report))
    return {"tables": tables, "r2": r2, "meta": meta}


# =========================================================================== distributed
def _dist_init(world: int) -> bool:
    """A gloo process group for the end-of-run barrier when launched by torchrun with world > 1."""
    if world <= 1 or "MASTER_ADDR" not in os.environ:
        return False
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=_dt.timedelta(days=2))  # ranks may finish hours apart
    return True


# =========================================================================== CLI
def register(subparsers) -> None:
    """Add `voicebench` to `python -m lsl_core`."""
    p = subparsers.add_parser("voicebench", help="VoiceBench text vs speech (vs cascade): answers, scores, GAP, R²",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="VoiceBench folder (root or one subset folder), or a sample-set "
                   "spec with --as-subset")
    p.add_argument("--subsets", default="", help="comma-separated subsets, subset:split to pick splits "
                   "(e.g. sd-qa:usa,mmsu,openbookqa,ifeval,advbench); default: every subset found")
    src = p.add_argument_group("checkpoints (default: the app's default checkpoint)")
    src.add_argument("--zoo", type=Path, default=None, help="folder of manifests (searched recursively)")
    src.add_argument("--checkpoint", action="append", default=[], help="a manifest.json or its folder (repeatable)")
    p.add_argument("--modalities", default="text,speech", help="comma-separated: text, speech, cascade")
    p.add_argument("--max-new-tokens", type=int, default=128, help="greedy answer length")
    p.add_argument("--batch-size", type=int, default=8, help="rows per generate call")
    p.add_argument("--limit", type=int, default=0, help="first N rows of each subset (0 = all)")
    p.add_argument("--align", type=int, default=0, help="alignment metrics on the first N rows of each subset")
    p.add_argument("--alignment", default=None, help="an `analyze` parquet with alignment metrics per sample")
    p.add_argument("--as-subset", default="", help="score a non-VoiceBench --data set as this subset (e.g. sd-qa)")
    p.add_argument("--seed", type=int, default=0, help="torch and bootstrap seed")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates for CIs")
    p.add_argument("--out", type=Path, required=True, help="results folder (answers are kept there: rerun to resume)")
    add_device_args(p, device_help="cpu | cuda | cuda:1 (default: cuda:$LOCAL_RANK if available)")
    p.add_argument("--score-only", action="store_true", help="skip generation: score the answers already in --out "
                   "(also merges shard files copied together from several nodes)")
    p.add_argument("--fresh", action="store_true", help="delete the answers in --out first")
    p.set_defaults(func=main)


def _split(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in str(text or "").split(",") if x.strip())


def main(args: argparse.Namespace) -> int:
    import shutil

    import torch

    from lsl_core.model.loading import default_checkpoint, list_zoo, read_manifest

    cfg = RunConfig(data=str(args.data), subsets=_split(args.subsets), modalities=_split(args.modalities),
                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, limit=args.limit,
                    align=args.align, as_subset=args.as_subset, seed=args.seed, n_boot=args.n_boot)
    if args.alignment and not Path(args.alignment).expanduser().is_file():  # read only at the end: check it now
        raise LSLError(f"--alignment {args.alignment} is not a file; give the parquet that `python -m lsl_core analyze "
                       "--out FILE` wrote, or leave --alignment out.")
    rank, world = shard_of()
    out = Path(args.out)
    from lsl_core.experiments.pages import command_line

    command = command_line(getattr(args, "argv", None))  # the argv cli.main ran (sys.argv[1:] without one)
    samples = load_samples(cfg)
    if rank == 0:
        from lsl_core.data.voicebench import count_notes

        for p in samples.problems:
            print(f"warning: {p}", flush=True)
        for note in count_notes(samples):
            print(f"note: {note}", flush=True)
    if not args.score_only:
        if args.fresh and rank == 0:
            for sub in ("answers", "alignment", "judge"):
                shutil.rmtree(out / sub, ignore_errors=True)
            (out / "run.json").unlink(missing_ok=True)
        distributed = _dist_init(world)
        if distributed:
            import torch.distributed as dist

            dist.barrier()  # --fresh done before anyone reads the folder
        manifests = list_zoo(args.zoo) if args.zoo else []
        manifests += [read_manifest(c) for c in args.checkpoint]
        if not manifests:
            manifests = [read_manifest(default_checkpoint())]
        device = args.device
        if device is None and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        t0 = time.time()
        counts = run_answers(cfg, manifests, out, device=device, rank=rank, world=world, samples=samples)
        print(f"[{rank}/{world}] {counts['rows']} new answers in {counts['units']} batches "
              f"({counts['skipped_rows']} already done) in {time.time() - t0:.0f} s", flush=True)
        if distributed:
            import torch.distributed as dist

            dist.barrier()
            if rank != 0:
                dist.destroy_process_group()
                return 0
            dist.destroy_process_group()
        elif world > 1:
            print(f"[{rank}/{world}] shard done; score all shards with --score-only when every rank has finished.")
            return 0
    if rank != 0:
        return 0
    res = finalize(out, cfg, samples, args.alignment, command)
    gap = res["tables"].gap
    cols = [c for c in ("checkpoint", "subset", "n", "text", "speech", "cascade", "gap", "gap_ci_low", "gap_ci_high")
            if c in gap.columns]
    print(gap[cols].round(2).to_string(index=False))
    if res["meta"]["missing_answers"]:
        print(f"warning: {res['meta']['missing_answers']} answers of this selection are not in {out / 'answers'} "
              f"(e.g. {res['meta']['missing_example']}): the tables cover only the rows answered. Copy every "
              "node's answers/*.jsonl into it and rerun with --score-only.", flush=True)
    notes = res["meta"]["problems"] + res["meta"]["errors"]
    if notes:
        print(f"{len(notes)} rows/files left out (listed in {out / 'results.json'} and report.md), e.g. {notes[0]}")
    print(f"wrote {out}/{{scores,summary,gap}}.parquet, results.json, report.md", flush=True)
    return 0


__all__ = ["RunConfig", "load_samples", "plan_units", "run_answers", "collect_answers", "finalize", "Unit",
           "read_jsonl_rows", "AppendLog", "write_atomically", "register", "main"]
