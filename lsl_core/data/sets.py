"""Sample sets behind one loader: `load_sample_set(spec) -> SampleSet`.

Specs:
- "sd-qa-mini"          the embedded set (assets/sd-qa-mini: 60 SD-QA dev questions × 5 espeak-ng voices)
- "voicebench:<folder>" VoiceBench parquet files (a subset folder like .../sd-qa, or the root holding
                        every subset folder; lsl_core.data.voicebench lists the subsets and their columns)
- "folder:<dir>"        audio files + questions.csv (file, question[, answers, accent])
- "manifest:<dir>"      a folder written by `python -m lsl_core synth ... --out <dir>` (manifest.jsonl)

A SampleSet (lsl_core.data.samples) keeps per-sample metadata in memory and decodes audio lazily
(a small LRU cache), so big sets cost little until samples are used. Indexing returns Sample with
16 kHz mono float32 audio (prepare_audio). The loaders import the containers from samples.py and
this module imports the loaders: no cycle.
"""

from __future__ import annotations

import json
from pathlib import Path

from lsl_core.data.folder import load_folder
from lsl_core.data.paths import assets_dir
from lsl_core.data.samples import (DataProblem, Sample, SampleRecord, SampleSet,  # noqa: F401 (re-exported)
                                   audio_file_loader)
from lsl_core.data.voicebench import load_voicebench
from lsl_core.errors import DataError

EMBEDDED_SETS = ("sd-qa-mini",)
SPEC_FORMS = "sd-qa-mini, voicebench:<folder>, folder:<dir>, manifest:<dir>"


# ------------------------------------------------------------------ manifest sets (sd-qa-mini)
_MANIFEST_REQUIRED = ("id", "question", "audio")


def _manifest_row(manifest: Path, n: int, line: str) -> dict:
    """One manifest.jsonl line -> its row (a JSON object with id, question, audio), or one DataError naming line n."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{manifest} line {n} is not valid JSON ({exc}).") from None
    if not isinstance(row, dict):
        raise DataError(f"{manifest} line {n} is not a JSON object; every row is {{\"id\": ..., \"question\": ..., "
                        "\"audio\": ...}.")
    absent = [k for k in _MANIFEST_REQUIRED if row.get(k) is None or not str(row[k]).strip()]
    if absent:
        raise DataError(f"{manifest} line {n} lacks {', '.join(absent)}; every row needs "
                        f"{', '.join(_MANIFEST_REQUIRED)} (plus optional answers, voice, accent).")
    if not isinstance(row["audio"], str):
        raise DataError(f"{manifest} line {n}: 'audio' must be a relative path (text), got {row['audio']!r}.")
    answers = row.get("answers")
    if answers is not None and not (isinstance(answers, str)
                                    or (isinstance(answers, list) and all(isinstance(a, (str, int, float))
                                                                          for a in answers))):
        raise DataError(f"{manifest} line {n}: 'answers' must be a text or a list of texts, got {answers!r}.")
    return row


def load_manifest_set(folder: str | Path, name: str | None = None) -> SampleSet:
    """A folder with manifest.jsonl (rows: id, question, audio [relative path], answers, voice, accent,
    ...) and optional set.json, as written by `python -m lsl_core synth`."""
    folder = Path(folder).expanduser().absolute()  # audio is decoded later: not against a later CWD
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise DataError(f"No manifest.jsonl in {folder}. Build the set with `python -m lsl_core synth "
                        f"--set sd-qa-mini --out {folder}` or point at a folder that has one.")
    info = {}
    if (folder / "set.json").is_file():
        try:
            info = json.loads((folder / "set.json").read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{folder / 'set.json'} is not valid JSON ({exc}); regenerate the set.") from None
        info = info if isinstance(info, dict) else {}
    name = name or info.get("name") or folder.name
    records, missing, lines_of = [], [], {}
    try:
        lines = manifest.read_text(encoding="utf-8-sig").splitlines()  # a BOM (Windows editors) is not JSON
    except UnicodeDecodeError as exc:
        raise DataError(f"{manifest} is not UTF-8 text ({exc}); save it as UTF-8.") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = _manifest_row(manifest, n, line)
        if str(row["id"]) in lines_of:
            raise DataError(f"{manifest} line {n}: id {str(row['id'])!r} is also on line {lines_of[str(row['id'])]}; "
                            "ids must be unique (regenerate the set or rename one).")
        lines_of[str(row["id"])] = n
        path = folder / row["audio"]
        if not path.is_file():
            missing.append(row["audio"])
            continue
        meta = {k: v for k, v in row.items() if k not in ("id", "question", "answers", "accent", "audio")}
        meta["path"] = str(path)
        answers = row.get("answers") or ()
        records.append(SampleRecord(
            id=str(row["id"]), question=str(row["question"]), load_audio=audio_file_loader(path),
            answers=(answers,) if isinstance(answers, str) else tuple(str(a) for a in answers),
            accent=str(row.get("accent") or (f"espeak:{row['voice']}" if row.get("voice") else "")),
            source=name, meta=meta))
    if missing:
        raise DataError(f"{len(missing)} audio file(s) listed in {manifest} are missing (e.g. {missing[0]}). "
                        f"Regenerate with `python -m lsl_core synth --set {name}`"
                        + (f" --out {folder}" if name != "sd-qa-mini" else "") + ".")
    if not records:
        raise DataError(f"{manifest} lists no samples.")
    return SampleSet(name, records)


# ------------------------------------------------------------------ one entry point
def load_sample_set(spec: str) -> SampleSet:
    """Load a sample set from a spec string (see the module docstring for the forms)."""
    spec = str(spec).strip()
    kind, _, arg = spec.partition(":")
    if spec in EMBEDDED_SETS:
        return load_manifest_set(assets_dir() / spec, name=spec)
    if kind == "voicebench" and arg:
        return load_voicebench(arg)
    if kind == "folder" and arg:
        return load_folder(arg)
    if kind == "manifest" and arg:
        return load_manifest_set(arg)
    raise DataError(f"Unknown sample set {spec!r}. Use one of: {SPEC_FORMS}.")


__all__ = ["Sample", "SampleSet", "SampleRecord", "DataProblem", "load_sample_set", "load_manifest_set",
           "audio_file_loader", "EMBEDDED_SETS", "SPEC_FORMS"]
