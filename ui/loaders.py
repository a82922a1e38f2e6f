"""Cached loaders: models once per process (st.cache_resource), everything computed from them cached
by every input that changes the result (st.cache_data).

Cache keys: a model is identified by `ModelHandle.key` = manifest folder + weight digest (which
includes device and dtype); a sample by `sample_key` = set spec + sample id + audio digest. Objects
that are not hashable (the model, the sample) are passed as leading-underscore arguments, so they
do not enter the key; the string keys stand for them.

Device access is serialized: every call into a model runs under its `lock` (an RLock shared by all
sessions of this process), and long loops take the lock per sample, so other sessions interleave.
Regeneration goes through the model's GenerationServer (lsl_core.serving): concurrent sessions' requests
are generated together in one batch instead of one after another.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st

from lsl_core.analysis import AnalysisOptions, SampleAnalysis, SetAnalysis, analyze_sample, analyze_set
from lsl_core.data.audio import audio_digest
from lsl_core.errors import LSLError
from lsl_core.model.lslm import locked_items
from lsl_core.model.loading import CheckpointManifest, list_zoo, read_manifest
from lsl_core.results import Results, load_results
from ui import config


# =============================================================================== models
@dataclass(frozen=True, eq=False)
class ModelHandle:
    """A loaded model with what the pages show about it."""

    model: object  # lsl_core.model.lslm.LSLM
    path: str  # manifest folder
    seconds: float  # load time

    @property
    def key(self) -> str:
        return f"{self.path}|{self.model.digest}"

    @property
    def name(self) -> str:
        return self.model.name


@st.cache_data(show_spinner=False, ttl=30)
def zoo(folders: tuple[str, ...]) -> tuple[list[CheckpointManifest], list[str]]:
    """Manifests under the folders (a folder may also be one checkpoint), deduplicated; + notes on problems."""
    found: dict[str, CheckpointManifest] = {}
    notes = []
    for f in folders:
        p = Path(f).expanduser()
        if (p.is_file() and p.name.endswith(".json")) or (p / "manifest.json").is_file():
            try:
                m = read_manifest(p)
                found.setdefault(m.root, m)
            except LSLError as exc:
                notes.append(str(exc))
        elif p.is_dir():
            ms = list_zoo(p)
            if not ms:
                notes.append(f"No readable manifest.json under {p}.")
            for m in ms:
                found.setdefault(m.root, m)
        elif p.exists():
            notes.append(f"{p} is a file, not a folder of checkpoints or a manifest .json; give the folder that "
                         "holds the checkpoints' manifest.json files.")
        else:
            notes.append(f"Model folder {p} does not exist; give a folder of checkpoints (manifest.json files).")
    return list(found.values()), notes


@st.cache_resource(show_spinner=False, max_entries=3)
def load_model(manifest_root: str, device: str | None) -> ModelHandle:
    """Load a checkpoint once per process (errors are not cached: a fixed manifest loads on the next try)."""
    from lsl_core.model.loading import load_checkpoint

    t0 = time.perf_counter()
    try:
        model = load_checkpoint(manifest_root, device=device)
    except LSLError:
        raise
    except Exception as exc:  # torch/transformers/peft errors for a foreign checkpoint
        from lsl_core.errors import ModelLoadError

        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ModelLoadError(f"Could not load the checkpoint at {manifest_root}: {type(exc).__name__}: {first}. "
                             "Check its manifest and weights.") from exc
    return ModelHandle(model, manifest_root, time.perf_counter() - t0)


# =============================================================================== samples
def sample_set(spec: str):
    """A SampleSet (lazy audio) per spec; shared by all sessions, and read again when its index files change (a
    researcher fixing a question or reference answer in questions.csv while the app runs)."""
    return _sample_set(spec, _set_stamp(spec))


def _set_stamp(spec: str) -> tuple:
    """(file, mtime, size) of the files a sample-set spec's questions and answers come from."""
    kind, _, arg = str(spec).partition(":")
    if kind not in ("folder", "voicebench", "manifest") or not arg.strip():
        return ()
    p = Path(arg.strip()).expanduser()
    if kind == "folder":
        files = [p / "questions.csv"]
    elif kind == "manifest":
        files = [p / "manifest.jsonl"]
    else:  # the depths lsl_core.data.voicebench reads
        files = [f for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet") for f in p.glob(pattern)]
    try:
        return tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in sorted(files) if f.is_file())
    except OSError:  # unreadable: load_sample_set says what is wrong
        return ()


@st.cache_resource(show_spinner=False, max_entries=8)
def _sample_set(spec: str, stamp: tuple):
    from lsl_core.data.sets import load_sample_set

    return load_sample_set(spec)


def sample_key(spec: str, sample) -> str:
    """Identity of a sample for cache keys: set spec + id + audio bytes + question."""
    return f"{spec}#{sample.id}#{audio_digest(sample.audio)}#{hashlib.sha1(sample.question.encode()).hexdigest()[:8]}"


# =============================================================================== analyses
@st.cache_data(show_spinner=False, max_entries=128)
def sample_analysis(model_key: str, sample_key: str, options_key: str, _model, _sample,
                    _options: AnalysisOptions) -> SampleAnalysis:
    """Every metric of one sample, all layers (lsl_core also keeps it on disk)."""
    with _model.lock:
        return analyze_sample(_model, _sample, _options)


@st.cache_data(show_spinner=False, max_entries=256)
def transcript(model_key: str, sample_key: str, _model, _sample) -> str | None:
    """The ASR transcript of the clip (None when the encoder has no ASR decoder)."""
    if not _model.has_asr:
        return None
    text = _model.transcribe(_sample.audio, _sample.sr)
    _KNOWN_TRANSCRIPTS[(model_key, sample_key)] = text
    return text


_KNOWN_TRANSCRIPTS: dict[tuple[str, str], str] = {}  # transcripts this process computed (regeneration reuses them)


def known_transcript(model_key: str, sample_key: str) -> str | None:
    """The transcript `transcript()` already computed for this model + sample, else None (never computes)."""
    return _KNOWN_TRANSCRIPTS.get((model_key, sample_key))


@st.cache_data(show_spinner=False, max_entries=64)
def side_by_side(model_key: str, sample_key: str, labels: tuple[str, ...], max_new_tokens: int, cascade: bool,
                 _model, _sample, _transcript: str | None = None, donor_question: str | None = None,
                 references: tuple[str, ...] | None = None) -> dict:
    """Text / speech / cascade / intervened answers, scored; plain data (rows with edited frames/tokens).

    references: the sample's reference answers, part of the cache key (sample_key holds the audio and the question,
    not the answers; an uploaded clip's typed references change its scores, not its analysis). None: _sample's.

    Served by the model's lsl_core.serving.GenerationServer: requests of concurrent sessions are gathered
    and generated in one batch; while waiting, this session sees its queue position and the batch's progress.
    """
    from lsl_core.case_report import rows_from_side_by_side
    from lsl_core.interventions import needs_donor
    from lsl_core.serving import SideBySideRequest, server_for

    request = SideBySideRequest(_sample, tuple(labels), int(max_new_tokens), bool(cascade), _transcript,
                                donor_question if needs_donor(labels) else None)
    ticket = server_for(_model).submit(request)
    box = st.empty()
    try:
        while not ticket.wait(0.3):
            status = ticket.status()
            box.progress(min(1.0, max(0.0, status["progress"])), text=status["text"])
        sbs = ticket.result()
    finally:
        box.empty()
    return {**rows_from_side_by_side(sbs), "references": list(sbs.references),
            "labels": list(labels), "max_new_tokens": max_new_tokens, "sample_id": sbs.sample_id,
            "question": sbs.question, "batch_size": ticket.batch_size, "batch_id": ticket.batch_id}


@st.cache_data(show_spinner=False, max_entries=32)
def lens(model_key: str, sample_key: str, k: int, layers: tuple[int, ...], path: str, metric: str,
         alignment_layer: int | None, _model, _sample):
    """analysis.lens_sample: the logit lens of one sample over the given layers (one forward per modality)."""
    from lsl_core.analysis import lens_sample

    with _model.lock:
        return lens_sample(_model, _sample, k=k, layers=list(layers), path=path, metric=metric,
                           alignment_layer=alignment_layer)


@st.cache_data(show_spinner=False, max_entries=8)
def stability(model_key: str, set_key: str, ids: tuple[str, ...], _model, _samples: Sequence):
    """analysis.analyze_stability over the samples (the default grid of CKA configurations), with a progress bar."""
    from lsl_core.analysis import analyze_stability

    bar = st.progress(0.0, text=f"CKA under every configuration, {len(ids)} samples …")

    def progress(i: int, total: int | None, sid: str) -> None:
        bar.progress(min(1.0, i / max(1, len(ids))), text=f"CKA under every configuration: {i}/{len(ids)} ({sid})")

    gen = locked_items(_samples, _model.lock)
    try:
        return analyze_stability(_model, gen, progress=progress, total=len(ids))
    finally:
        gen.close()
        bar.empty()


@st.cache_data(show_spinner=False, max_entries=16)
def set_analysis(model_key: str, set_key: str, ids: tuple[str, ...], options_key: str, _model, _samples: Sequence,
                 _options: AnalysisOptions) -> SetAnalysis:
    """analyze_set over the given samples with a progress bar (replayed as nothing on a cache hit)."""
    bar = st.progress(0.0, text=f"Analyzing {len(ids)} samples …")

    def progress(i: int, total: int | None, sid: str) -> None:
        bar.progress(min(1.0, i / max(1, len(ids))), text=f"Analyzed {i}/{len(ids)}: {sid}")

    gen = locked_items(_samples, _model.lock)
    try:
        res = analyze_set(_model, gen, _options, progress=progress, total=len(ids))
    finally:
        gen.close()
        bar.empty()
    return res


@st.cache_data(show_spinner=False, max_entries=8)
def checkpoint_sweep(manifest_roots: tuple[str, ...], set_key: str, ids: tuple[str, ...], device: str | None,
                     _samples: Sequence, _current: ModelHandle | None = None) -> tuple[pd.DataFrame, list[str]]:
    """experiments.analyze.analyze_checkpoints over the samples (the analyze CLI's rows), with a progress bar.

    _current (the sidebar's model) is reused; a checkpoint that fails is reported in the notes and skipped.
    """
    from lsl_core.experiments.analyze import analyze_checkpoints
    from lsl_core.model.loading import read_manifest

    manifests = [read_manifest(root) for root in manifest_roots]
    order = {m.name: k for k, m in enumerate(manifests)}
    total = len(manifests) * len(ids)
    bar = st.progress(0.0, text=f"{len(manifests)} checkpoints × {len(ids)} samples …")

    def progress(m, i: int, _t: int, sid: str) -> None:
        done = order[m.name] * len(ids) + i
        bar.progress(min(1.0, done / max(1, total)), text=f"{m.name}: {i}/{len(ids)} samples ({sid})")

    try:
        sweep = analyze_checkpoints(manifests, _samples, AnalysisOptions(), device=device,
                                    loaded={_current.path: _current.model} if _current is not None else None,
                                    progress=progress, skip_failed=True)
    finally:
        bar.empty()
    # the rows carry each sample's aligned CKA (cka_diag_mean and its null; it adds ~3 % to a sample's analysis);
    # the pooled CKA, which needs >= 4 samples, is the Cross-layer CKA page's, so its note is not shown here
    return sweep.rows, [n for n in sweep.notes if "pooled CKA" not in n]


@st.cache_data(show_spinner=False, max_entries=64)
def sample_controls(model_key: str, sample_key: str, pool_key: str, options_key: str, _model, _sample,
                    _pool: Sequence[str], _options) -> "object":
    """One clip's controls (lsl_core.analysis_controls.sample_controls): other questions, silence, shuffled frames."""
    from lsl_core.analysis_controls import sample_controls as compute

    with _model.lock:
        return compute(_model, _sample, list(_pool), _options)


@st.cache_data(show_spinner=False, max_entries=8)
def checkpoint_controls(manifest_roots: tuple[str, ...], set_key: str, ids: tuple[str, ...], device: str | None,
                        options_key: str, _samples: Sequence, _options, _current: ModelHandle | None = None
                        ) -> tuple[pd.DataFrame, list[str]]:
    """`analyze --controls` rows (retrieval + specific alignment) per checkpoint, with a progress bar.

    Checkpoints are loaded one after the other (the sidebar's model is reused); one that fails is named
    in the notes and skipped. Results are also cached on disk by lsl_core.
    """
    from lsl_core.analysis_controls import analyze_controls, controls_table
    from lsl_core.model.loading import load_checkpoint, read_manifest

    bar = st.progress(0.0, text=f"Controls: {len(manifest_roots)} checkpoints × {len(ids)} samples …")
    frames, notes = [], []
    samples = list(_samples)
    try:
        for k, root in enumerate(manifest_roots):
            m = read_manifest(root)
            try:
                same = _current is not None and _current.path == m.root
                model = _current.model if same else load_checkpoint(m, device=device)
            except Exception as exc:  # one bad checkpoint must not stop the sweep
                notes.append(f"{m.name}: not loaded ({exc})")
                continue

            def progress(done, total, label, k=k, name=m.name):
                frac = (k + done / max(1, total)) / max(1, len(manifest_roots))
                bar.progress(min(1.0, frac), text=f"{name}: {done}/{total} forwards ({label})")

            try:
                res = analyze_controls(model, samples, _options, progress=progress, lock=model.lock)
            except LSLError as exc:
                notes.append(f"{m.name}: {exc}")
                continue
            notes += [f"{m.name}: {n}" for n in res.notes]
            frames.append(controls_table(res, checkpoint=m.name, family=m.family, strategy=m.strategy, step=m.step))
            del model
    finally:
        bar.empty()
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()), notes


@st.cache_data(show_spinner=False, max_entries=16)
def intervention_tables(rows: pd.DataFrame) -> dict:
    """The Benchmark page's tables of one intervention run (evaluate_interventions' rows), cached by the rows'
    content: Table 1 with its intervals ("table1"), each intervention against its nulls ("nulls"), and across
    layers ("layers"). Their bootstraps take about a second for a 40-condition layer sweep; the page reruns on
    every widget."""
    from lsl_core.experiments.layer_profile import layer_profile
    from lsl_core.experiments.table1 import table1_nulls, table1_with_intervals

    return {"table1": table1_with_intervals(rows), "nulls": table1_nulls(rows), "layers": layer_profile(rows)}


@st.cache_data(show_spinner=False, max_entries=8)
def intervention_rows(model_key: str, set_key: str, ids: tuple[str, ...], conditions: tuple[str, ...],
                      max_new_tokens: int, _model, _samples: Sequence,
                      donors: tuple[str | None, ...] | None = None) -> pd.DataFrame:
    """experiments.table1.evaluate_interventions over the samples, with a progress bar; donors: per sample the
    question its pairing-"other" nulls edit with (table1.donor_questions over the whole sample set)."""
    from lsl_core.experiments.table1 import evaluate_interventions

    bar = st.progress(0.0, text=f"Generating answers for {len(ids)} samples × {len(conditions) + 1} conditions …")
    gen = locked_items(_samples, _model.lock)
    try:
        return evaluate_interventions(
            _model, gen, list(conditions), max_new_tokens, donors=donors,
            progress=lambda d, _n: bar.progress(min(1.0, d / max(1, len(ids))), text=f"{d}/{len(ids)} samples"))
    finally:
        gen.close()
        bar.empty()


# =============================================================================== intervals
@st.cache_data(show_spinner=False, max_entries=8)
def _summary_ci(folder: str, stamp: tuple, _samples: pd.DataFrame) -> pd.DataFrame:
    from lsl_core.metrics.stats import summary_intervals

    return summary_intervals(_samples)


def with_intervals(summary_rows: pd.DataFrame, res: Results) -> pd.DataFrame:
    """Evaluation summary rows + <score>_lo / _hi (95% bootstrap over each row's samples), when the per-sample
    results are there (lsl_core.results.with_intervals; the intervals cached per results folder state)."""
    from lsl_core.results import with_intervals

    if res.samples is None or summary_rows.empty:
        return summary_rows
    return with_intervals(summary_rows, res.samples, _summary_ci(str(res.folder), _stamp(res.folder), res.samples))


def nulls_across(res: Results, steps: dict) -> pd.DataFrame:
    """experiments.table1.nulls_across of the stored intervention runs (pairs on >= 2 checkpoints), cached per
    results folder state and zoo steps: its bootstraps take a few tenths of a second, the page reruns often."""
    return _nulls_across(str(res.folder), _stamp(res.folder), tuple(sorted(steps.items())), res.interventions)


@st.cache_data(show_spinner=False, max_entries=8)
def _nulls_across(folder: str, stamp: tuple, steps: tuple, _rows: pd.DataFrame) -> pd.DataFrame:
    from lsl_core.experiments.table1 import nulls_across

    return nulls_across(_rows, dict(steps), min_checkpoints=2)


def paired_table(res: Results, base: str, other: str, unseen_voice: str) -> pd.DataFrame:
    """lsl_core.experiments.compare.paired_difference of two checkpoints in the results folder (cached per
    results folder state: its bootstrap takes about a second, and the page reruns on every widget)."""
    return _paired(str(res.folder), _stamp(res.folder), base, other, unseen_voice, res.samples)


@st.cache_data(show_spinner=False, max_entries=16)
def _paired(folder: str, stamp: tuple, base: str, other: str, unseen_voice: str,
            _samples: pd.DataFrame) -> pd.DataFrame:
    from lsl_core.experiments.compare import paired_difference

    return paired_difference(_samples, base, other, unseen_voice)


def hearing_table() -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
    """lsl_core.experiments.hearing's recall_tables and exposure_tables of the stored word-recall rows (results
    folder; exposure None for rows of an older version, which carry no exposure), or None when there are none;
    cached per file state (each table bootstraps every checkpoint and group)."""
    from lsl_core.errors import LSLError
    from lsl_core.experiments.hearing import COMMAND, RESULTS_FILE

    path = config.results_dir() / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return _hearing(str(path), path.stat().st_mtime_ns)
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors are ValueError / OSError subclasses
        raise LSLError(f"Could not read {path.name} in {path.parent} ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160]}); re-run `{COMMAND}`.") from None


def closed_vocab_table() -> tuple[pd.DataFrame, pd.DataFrame | None] | None:
    """lsl_core.experiments.closed_vocab's ceiling_table of the stored closed-vocabulary rows (results folder)
    and their coverage_table (None for rows written before they kept never_spoken), or None when there are
    none; cached per file state (it bootstraps every condition and voice group)."""
    from lsl_core.errors import LSLError
    from lsl_core.experiments.closed_vocab import COMMAND, RESULTS_FILE

    path = config.results_dir() / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return _closed_vocab(str(path), path.stat().st_mtime_ns)
    except (OSError, ValueError, KeyError, IndexError) as exc:  # pyarrow's errors are ValueError / OSError
        raise LSLError(f"Could not read {path.name} in {path.parent} ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); re-run `{COMMAND}`.") from None


@st.cache_data(show_spinner=False, max_entries=4)
def _closed_vocab(path: str, stamp: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    from lsl_core.data.synth import UNSEEN_VOICE
    from lsl_core.experiments.closed_vocab import ceiling_table, coverage_table

    rows = pd.read_parquet(path)
    coverage = coverage_table(rows, UNSEEN_VOICE) if "never_spoken" in rows.columns else None
    return ceiling_table(rows, UNSEEN_VOICE), coverage


@st.cache_data(show_spinner=False, max_entries=4)
def _hearing(path: str, stamp: int) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    from lsl_core.data.synth import UNSEEN_VOICE
    from lsl_core.experiments.hearing import exposure_tables, recall_tables, with_chance

    rows = with_chance(pd.read_parquet(path), UNSEEN_VOICE)  # once for both tables
    exposure = exposure_tables(rows, UNSEEN_VOICE) if {"clips", "word"} <= set(rows.columns) else None
    return recall_tables(rows, UNSEEN_VOICE), exposure


def gap_fits(table: pd.DataFrame, metrics, by) -> pd.DataFrame:
    """lsl_core.metrics.gap.gap_fits of a GAP table (its bootstrap and permutation nulls take ~0.3 s, and the
    page reruns on every widget), cached by the content of the columns it reads."""
    cols = [c for c in dict.fromkeys([*by, *metrics, "gap", "step"]) if c in table.columns]
    return _gap_fits(table[cols].reset_index(drop=True), tuple(metrics), tuple(by))


@st.cache_data(show_spinner=False, max_entries=32)
def _gap_fits(table: pd.DataFrame, metrics: tuple[str, ...], by: tuple[str, ...]) -> pd.DataFrame:
    from lsl_core.metrics.gap import gap_fits as fits

    return fits(table, metrics, by=by)


@st.cache_data(show_spinner=False, max_entries=16)
def alignment_intervals(means: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """results.alignment_intervals, cached: checkpoint means + 95% intervals over questions."""
    from lsl_core.results import alignment_intervals as intervals

    return intervals(means, rows)


# =============================================================================== results
def _stamp(folder: Path) -> tuple:
    return tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.parquet"))) if folder.is_dir() else ()


def results() -> Results:
    """The evaluation results folder (re-read when a parquet file in it changes)."""
    folder = config.results_dir()
    stamp: tuple = ()
    if folder.is_dir():
        stamp = tuple((p.name, p.stat().st_mtime_ns) for p in sorted(folder.glob("*.parquet")))
    return _results(str(folder), stamp)


@st.cache_data(show_spinner=False, max_entries=4)
def _results(folder: str, stamp: tuple) -> Results:
    return load_results(folder)


# =============================================================================== VoiceBench results
def voicebench_results(folder: str):
    """A VoiceBench run's tables (lsl_core.experiments.voicebench_scores), re-read when its files change."""
    p = Path(folder).expanduser()
    stamp: tuple = ()
    if p.is_dir():
        stamp = tuple((f.name, f.stat().st_mtime_ns) for f in sorted([*p.glob("*.parquet"), *p.glob("*.json")]))
    return _voicebench_results(str(p), stamp)


@st.cache_data(show_spinner=False, max_entries=4)
def _voicebench_results(folder: str, stamp: tuple):
    from lsl_core.experiments.voicebench_scores import load_voicebench_results

    return load_voicebench_results(folder)
