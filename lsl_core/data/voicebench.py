"""VoiceBench parquet folders (hlt-lab/voicebench, brought by the user; nothing is downloaded).

Layout: <root>/<subset>/<prefix>-00000-of-00001.parquet, e.g. sd-qa/usa-00000-of-00001.parquet.
Columns: `audio` — the Hugging Face Audio feature, struct<bytes: binary (an encoded wav/flac/mp3
file), path: string>; `prompt` — the typed question; sd-qa also has `reference` (gold answer).
Other subsets (openbookqa, mmsu, advbench, ifeval, ...) share audio + prompt; any further scalar
columns are kept in Sample.meta. The file-name prefix is the accent (sd-qa) or split name;
ids are "<prefix>-<row>" ("<subset>/<prefix>-<row>" when several subsets are loaded at once).
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from lsl_core.data.audio import load_audio_file, prepare_audio
from lsl_core.data.sets import SampleRecord, SampleSet
from lsl_core.errors import AudioError, DataError

REQUIRED_COLUMNS = ("audio", "prompt")
EXPECTED_SCHEMA = ("audio: struct<bytes: binary, path: string> (Hugging Face Audio), prompt: string, "
                   "reference: string (sd-qa; optional elsewhere)")
_SHARD = re.compile(r"^(?P<prefix>.+?)-\d{5}-of-\d{5}$")


def file_prefix(path: Path) -> str:
    """"usa" for usa-00000-of-00001.parquet; the stem for other names."""
    m = _SHARD.match(path.stem)
    return m.group("prefix") if m else path.stem


def _audio_kind(path: Path, schema) -> str:
    """"struct" or "binary" for a usable audio column; DataError naming file and schema otherwise."""
    import pyarrow as pa

    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise DataError(f"{path} has no column {', '.join(repr(c) for c in missing)} (columns: "
                        f"{', '.join(schema.names)}). Expected a VoiceBench file with {EXPECTED_SCHEMA}.")
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
                raise DataError(f"{path} row {row}: the audio cell has no bytes"
                                + (f" and its path {ref!r} does not exist" if ref else "")
                                + f". Expected {EXPECTED_SCHEMA} with the encoded file in `bytes`.")
            return prepare_audio(audio, sr)
        except AudioError as exc:
            raise AudioError(f"{label} ({path.name} row {row}): {exc}") from None

    return load


def _answers(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value if v is not None)
    return (str(value),)


def load_voicebench(folder: str | Path) -> SampleSet:
    """All VoiceBench parquet files in a subset folder (or in the subset folders under a root)."""
    import pyarrow.parquet as pq

    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"VoiceBench folder {folder} does not exist. Point at a folder holding files like "
                        "sd-qa/usa-00000-of-00001.parquet (download hlt-lab/voicebench yourself).")
    files = sorted(folder.glob("*.parquet")) or sorted(folder.glob("*/*.parquet"))
    if not files:
        raise DataError(f"No .parquet files in {folder} or its subfolders. Expected VoiceBench files like "
                        "sd-qa/usa-00000-of-00001.parquet.")
    several = len({f.parent for f in files}) > 1
    records, counters = [], {}
    for f in files:
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # pyarrow raises several types for a non-parquet file
            raise DataError(f"{f} is not a readable parquet file ({exc}).") from None
        _audio_kind(f, schema)
        subset, prefix = f.parent.name, file_prefix(f)
        rows = pq.read_table(f, columns=[c for c in schema.names if c != "audio"]).to_pylist()
        for r, row in enumerate(rows):
            prompt = row.get("prompt")
            if prompt is None or not str(prompt).strip():
                raise DataError(f"{f} row {r} has an empty 'prompt'; every row needs the typed question.")
            k = counters.get((subset, prefix), 0)  # continues across shards of one prefix
            counters[(subset, prefix)] = k + 1
            sid = f"{subset}/{prefix}-{k}" if several else f"{prefix}-{k}"
            meta = {c: v for c, v in row.items() if c not in ("prompt",)
                    and (isinstance(v, (str, int, float, bool)) or v is None)}
            meta.update(subset=subset, file=f.name, row=r)
            records.append(SampleRecord(
                id=sid, question=str(prompt).strip(), load_audio=_loader(f, r, sid),
                answers=_answers(row.get("reference")), accent=prefix, source=f"voicebench:{subset}", meta=meta))
    return SampleSet(f"voicebench:{folder.name}", records)


__all__ = ["load_voicebench", "file_prefix", "REQUIRED_COLUMNS", "EXPECTED_SCHEMA"]
