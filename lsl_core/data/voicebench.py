"""VoiceBench parquet folders (hlt-lab/voicebench, brought by the user; nothing is downloaded).

Layout: <root>/<subset>/<split>-00000-of-00001.parquet (e.g. sd-qa/usa-00000-of-00001.parquet,
ifeval/test-00000-of-00001.parquet), or the hub's converted form <root>/<subset>/<split>/0000.parquet.
Point at the root (every subset folder under it) or at one subset folder. Columns:
    audio      the Hugging Face Audio feature: struct<bytes: binary (an encoded wav/flac/mp3 file),
               path: string>; decoded with soundfile and resampled to 16 kHz mono on first use
    prompt     the typed instruction: the text modality of the sample, as VoiceBench feeds it
    reference  gold answer (sd-qa, mmsu, openbookqa, bbh)
    id         bbh: names the task;  key, instruction_id_list, kwargs: ifeval
Splits are accents (sd-qa: aus gbr ind_n ind_s irl kenya nga nzl phl usa zaf, 553 rows each) or
domains (mmsu: 3,074 rows over 12 domains); other subsets have one split ("test"). `SUBSETS` lists
every subset with its evaluator, columns and published row count.

Sample ids are "<split>-<row>" for a subset folder and "<subset>/<split>-<row>" for a root, with
<row> counted over the split's rows (bad rows keep their number, so ids never shift). Every
further column is kept in Sample.meta (lists and structs too), with subset, split, file and row.

Problems (missing column, unknown subset, empty prompt/reference, malformed ifeval kwargs) name the
file and row: `on_error="raise"` raises the first as DataError; "collect" skips the bad file or row
and lists them in `SampleSet.problems`, so the rest can still be evaluated. An undecodable audio
cell is found when that sample is first decoded (AudioError naming the file and row). A subset folder
without parquet files is such a problem; a selected subset or split with no file at all is always a
DataError (naming what the folder holds), never a smaller table.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from lsl_core.data.audio import load_audio_file, prepare_audio
from lsl_core.data.samples import DataProblem, SampleRecord, SampleSet
from lsl_core.errors import AudioError, DataError, MetricInputError

REQUIRED_COLUMNS = ("audio", "prompt")
EXPECTED_SCHEMA = ("audio: struct<bytes: binary, path: string> (Hugging Face Audio), prompt: string, "
                   "reference: string (sd-qa, mmsu, openbookqa, bbh)")
SDQA_ACCENTS = ("aus", "gbr", "ind_n", "ind_s", "irl", "kenya", "nga", "nzl", "phl", "usa", "zaf")


@dataclass(frozen=True)
class SubsetSpec:
    """One VoiceBench subset: how it is scored and what its parquet files hold."""

    name: str  # folder name, e.g. "sd-qa"
    evaluator: str  # key of lsl_core.scoring.EVALUATORS
    columns: tuple[str, ...]  # required columns besides audio + prompt
    n: int  # published number of rows (per split when `per_split`)
    task: str  # what the subset tests (one line)
    splits: tuple[str, ...] = ()  # published split names where they are fixed
    per_split: bool = False  # n counts rows per split (sd-qa: per accent)


SUBSETS: dict[str, SubsetSpec] = {s.name: s for s in (
    SubsetSpec("alpacaeval", "open", (), 199, "open-ended QA (Google TTS)"),
    SubsetSpec("alpacaeval_full", "open", (), 636, "open-ended QA (Google TTS)"),
    SubsetSpec("commoneval", "open", (), 200, "open-ended QA (human speech)"),
    SubsetSpec("wildvoice", "open", (), 1000, "open-ended QA (human speech)"),
    SubsetSpec("openbookqa", "mcq", ("reference",), 455, "multiple-choice QA (Google TTS)"),
    SubsetSpec("mmsu", "mcq", ("reference",), 3074, "multiple-choice QA, 12 domains (Google TTS)"),
    SubsetSpec("sd-qa", "sdqa", ("reference",), 553, "reference-based QA, 11 accents (human speech)",
               splits=SDQA_ACCENTS, per_split=True),
    SubsetSpec("ifeval", "ifeval", ("key", "instruction_id_list", "kwargs"), 345,
               "instruction following (Google TTS)"),
    SubsetSpec("bbh", "bbh", ("reference", "id"), 1000, "reasoning, 4 BBH tasks (human speech)"),
    SubsetSpec("advbench", "harm", (), 520, "safety: refusal of harmful requests (Google TTS)"),
)}
UNSUPPORTED = {"mtbench": "multi-turn QA (several spoken turns per row); not supported by this tool"}
# The first seed paper's table: sd-qa (one accent) + mmsu + openbookqa + ifeval + advbench = 4,947 rows.
PAPER_SUBSETS = ("sd-qa:usa", "mmsu", "openbookqa", "ifeval", "advbench")
_SHARD = re.compile(r"^(?P<prefix>.+?)-\d{5}-of-\d{5}$")


def file_prefix(path: Path) -> str:
    """"usa" for usa-00000-of-00001.parquet; the stem for other names."""
    m = _SHARD.match(path.stem)
    return m.group("prefix") if m else path.stem


def parse_selection(items) -> dict[str, set[str] | None]:
    """["sd-qa:usa", "sd-qa:gbr", "mmsu"] -> {"sd-qa": {"usa", "gbr"}, "mmsu": None (all splits)}."""
    out: dict[str, set[str] | None] = {}
    for item in items:
        name, _, split = str(item).strip().partition(":")
        if name not in SUBSETS:
            hint = f" ({UNSUPPORTED[name]})" if name in UNSUPPORTED else ""
            raise DataError(f"Unknown VoiceBench subset {name!r}{hint}; known: {', '.join(SUBSETS)}.")
        if not split:
            out[name] = None
        elif out.get(name, set()) is not None:
            out.setdefault(name, set()).add(split)
    return out


# ------------------------------------------------------------------ audio
def _audio_kind(path: Path, schema, spec: SubsetSpec | None) -> str:
    """"struct" or "binary" for a usable audio column; DataError naming file and schema otherwise."""
    import pyarrow as pa

    need = REQUIRED_COLUMNS + (spec.columns if spec else ())
    missing = [c for c in need if c not in schema.names]
    if missing:
        raise DataError(f"{path} has no column {', '.join(repr(c) for c in missing)} (columns: "
                        f"{', '.join(schema.names)}). Expected a VoiceBench "
                        f"{spec.name if spec else ''} file with {EXPECTED_SCHEMA}"
                        + (f"; this subset also needs {', '.join(spec.columns)}" if spec and spec.columns else "")
                        + ".")
    t = schema.field("audio").type
    if pa.types.is_struct(t) and any(t.field(i).name in ("bytes", "path") for i in range(t.num_fields)):
        return "struct"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    raise DataError(f"{path}: column 'audio' has type {t}; expected {EXPECTED_SCHEMA}.")


# Decoding needs a file's whole audio column; keep the last two in memory (a VoiceBench file is ~50 MB).
_COLUMN_CACHE: OrderedDict[tuple[str, float], object] = OrderedDict()
_COLUMN_LOCK = threading.Lock()


def _audio_column(path: Path):
    import pyarrow.parquet as pq

    key = (str(path), path.stat().st_mtime)
    with _COLUMN_LOCK:
        if key in _COLUMN_CACHE:
            _COLUMN_CACHE.move_to_end(key)
            return _COLUMN_CACHE[key]
    col = pq.read_table(path, columns=["audio"]).column("audio")
    with _COLUMN_LOCK:
        _COLUMN_CACHE[key] = col
        while len(_COLUMN_CACHE) > 2:
            _COLUMN_CACHE.popitem(last=False)
    return col


def _loader(path: Path, row: int, label: str):
    def load() -> np.ndarray:
        cell = _audio_column(path)[row].as_py()
        if isinstance(cell, dict):
            data, ref = cell.get("bytes"), cell.get("path")
        else:
            data, ref = cell, None
        try:
            if data:
                audio, sr = load_audio_file(bytes(data))
            elif ref and (Path(ref).is_file() or (path.parent / ref).is_file()):
                audio, sr = load_audio_file(Path(ref) if Path(ref).is_file() else path.parent / ref)
            else:
                raise AudioError("the audio cell has no bytes"
                                 + (f" and its path {ref!r} does not exist" if ref else "")
                                 + f". Expected {EXPECTED_SCHEMA} with the encoded file in `bytes`.")
            return prepare_audio(audio, sr)
        except AudioError as exc:
            raise AudioError(f"{label} ({path} row {row}): {exc}") from None

    return load


# ------------------------------------------------------------------ rows
def _answers(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value if v is not None)
    return (str(value),)


def _row_problem(spec: SubsetSpec | None, row: dict) -> str | None:
    """Why a row cannot be used (None if it can)."""
    prompt = row.get("prompt")
    if prompt is None or not str(prompt).strip():
        return "empty 'prompt'; every row needs the typed instruction"
    for c in spec.columns if spec else ():
        v = row.get(c)
        if v is None or (isinstance(v, str) and not v.strip()):
            return f"empty {c!r}; the {spec.name} subset needs it in every row"
    if spec and spec.name == "ifeval":
        ids, kwargs = row["instruction_id_list"], row["kwargs"]
        if isinstance(kwargs, str):
            import json

            try:
                kwargs = json.loads(kwargs)
            except json.JSONDecodeError as exc:
                return f"'kwargs' is text but not JSON ({exc})"
        if not isinstance(ids, (list, tuple)) or not isinstance(kwargs, (list, tuple)) or len(ids) != len(kwargs):
            return ("'instruction_id_list' and 'kwargs' must be lists of equal length (one kwargs entry per "
                    "instruction)")
        from lsl_core.scoring.ifeval.checkers import INSTRUCTIONS

        unknown = [i for i in ids if i not in INSTRUCTIONS]
        if unknown:
            return f"unknown IFEval instruction id(s) {', '.join(map(repr, unknown))}"
        from lsl_core.scoring.ifeval import instruction_pairs

        try:  # entries that are not objects, missing or malformed arguments
            instruction_pairs({"instruction_id_list": ids, "kwargs": kwargs})
        except MetricInputError as exc:
            return str(exc).rstrip(".")
    return None


def _discover(folder: Path) -> tuple[bool, list[tuple[str, str, Path]]]:
    """(is_root, [(subset, split, file)]) for a subset folder or a root of subset folders."""
    direct = sorted(folder.glob("*.parquet"))
    if direct:  # a subset folder: <subset>/<split>-0000x-of-0000y.parquet
        return False, [(folder.name, file_prefix(f), f) for f in direct]
    if folder.name in SUBSETS:  # a subset folder in the hub's converted layout: <subset>/<split>/0000.parquet
        return False, [(folder.name, f.parent.name, f) for f in sorted(folder.glob("*/*.parquet"))]
    out = [(f.parent.name, file_prefix(f), f) for f in sorted(folder.glob("*/*.parquet"))]
    out += [(f.parent.parent.name, f.parent.name, f) for f in sorted(folder.glob("*/*/*.parquet"))]
    return True, sorted(out, key=lambda t: (t[0], t[1], str(t[2])))


def load_voicebench(folder: str | Path, *, subsets=None,
                    on_error: Literal["raise", "collect"] = "raise") -> SampleSet:
    """VoiceBench parquet files of a subset folder (or of every subset folder under a root) -> SampleSet.

    subsets: optional selection like ["sd-qa:usa", "mmsu"] (subset or subset:split; default all).
    on_error: "raise" the first problem as DataError, or "collect" them in `SampleSet.problems`.
    """
    import pyarrow.parquet as pq

    if on_error not in ("raise", "collect"):
        raise DataError(f"on_error must be 'raise' or 'collect', got {on_error!r}.")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"VoiceBench folder {folder} {what}. Point at a folder holding files like "
                        "sd-qa/usa-00000-of-00001.parquet (download hlt-lab/voicebench yourself).")
    is_root, files = _discover(folder)
    if not files:
        raise DataError(f"No .parquet files in {folder} or its subfolders. Expected VoiceBench files like "
                        "sd-qa/usa-00000-of-00001.parquet.")
    selection = parse_selection(subsets) if subsets else None
    problems: list[DataProblem] = []

    def problem(p: DataProblem) -> None:
        if on_error == "raise":
            raise DataError(str(p))
        problems.append(p)

    # a subset folder without any parquet file (a partial download) is named, never silently dropped
    found = {subset for subset, _, _ in files}
    empty = sorted(d.name for d in folder.iterdir()
                   if d.is_dir() and d.name in SUBSETS and d.name not in found) if is_root else []
    if selection is not None:  # everything asked for must be there: a missing subset would shrink the table
        have = {(subset, split) for subset, split, _ in files}
        missing = [name for name, splits in selection.items() if not any(s == name for s, _ in have)]
        missing += [f"{name}:{split}" for name, splits in selection.items() if splits and name not in missing
                    for split in sorted(splits) if (name, split) not in have]
        if missing:
            held = ", ".join(f"{s} ({', '.join(sorted(p for t, p in have if t == s))})" for s in sorted(found))
            raise DataError(f"{folder} has no VoiceBench files for {', '.join(missing)}"
                            + (f" (empty folder: {', '.join(str(folder / e) for e in empty if e in selection)})"
                               if any(e in selection for e in empty) else "")
                            + f". It holds: {held or 'no subset'}. Add the missing parquet files, or leave "
                            "them out of --subsets.")
    for e in empty if selection is None else []:
        problem(DataProblem(str(folder / e), None, "the subset folder holds no .parquet files (a partial "
                                                   "download?); the subset is skipped."))

    records, counters = [], {}
    for subset, split, f in files:
        if selection is not None and (subset not in selection
                                      or (selection[subset] is not None and split not in selection[subset])):
            continue
        spec = SUBSETS.get(subset)
        if spec is None:
            why = UNSUPPORTED.get(subset, "the folder name must be the subset's name")
            problem(DataProblem(str(f), None, f"unknown VoiceBench subset {subset!r} ({why}); known: "
                                              f"{', '.join(SUBSETS)}. Its rows are skipped."))
            continue
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # pyarrow raises several types for a non-parquet file
            problem(DataProblem(str(f), None, f"not a readable parquet file ({exc})."))
            continue
        try:
            _audio_kind(f, schema, spec)
        except DataError as exc:
            problem(DataProblem(str(f), None, str(exc).removeprefix(f"{f} ").removeprefix(f"{f}: ")))
            continue
        rows = pq.read_table(f, columns=[c for c in schema.names if c != "audio"]).to_pylist()
        for r, row in enumerate(rows):
            k = counters.get((subset, split), 0)  # continues across shards of one split
            counters[(subset, split)] = k + 1
            why = _row_problem(spec, row)
            if why:
                problem(DataProblem(str(f), r, why + "."))
                continue
            sid = f"{subset}/{split}-{k}" if is_root else f"{split}-{k}"
            meta = {c: v for c, v in row.items() if c != "prompt"}
            meta.update(subset=subset, split=split, file=f.name, path=str(f), row=r)
            records.append(SampleRecord(
                id=sid, question=str(row["prompt"]).strip(), load_audio=_loader(f, r, sid),
                answers=_answers(row.get("reference")), accent=split, source=f"voicebench:{subset}", meta=meta))
    if not records and not problems:
        raise DataError(f"No rows of {', '.join(subsets or [])} in {folder}; check the subset names and splits.")
    return SampleSet(f"voicebench:{folder.name}", records, problems=problems)


def subset_counts(samples: SampleSet) -> dict[str, dict[str, int]]:
    """{subset: {split: rows}} of a loaded VoiceBench set (no audio decoded)."""
    out: dict[str, dict[str, int]] = {}
    for i in range(len(samples)):
        m = samples.record(i).meta
        out.setdefault(m.get("subset", "?"), {}).setdefault(m.get("split", "?"), 0)
        out[m.get("subset", "?")][m.get("split", "?")] += 1
    return out


def count_notes(samples: SampleSet) -> list[str]:
    """One line per subset whose row count differs from the published one (partial folder, fixture)."""
    notes = []
    for subset, splits in subset_counts(samples).items():
        spec = SUBSETS.get(subset)
        if spec is None:
            continue
        if spec.per_split:
            for split, n in splits.items():
                if n != spec.n:
                    notes.append(f"{subset}:{split} has {n} rows; the published split has {spec.n}.")
        elif sum(splits.values()) != spec.n:
            notes.append(f"{subset} has {sum(splits.values())} rows; the published subset has {spec.n}.")
    return notes


__all__ = ["load_voicebench", "file_prefix", "parse_selection", "subset_counts", "count_notes", "SubsetSpec",
           "SUBSETS", "UNSUPPORTED", "PAPER_SUBSETS", "SDQA_ACCENTS", "REQUIRED_COLUMNS", "EXPECTED_SCHEMA"]
