"""A user's own folder: audio files plus questions.csv.

questions.csv columns: file (audio path relative to the folder), question (the typed question),
answers (optional, several separated by '|'), accent (optional label). Ids are the file paths
without extension. Audio (wav/flac/ogg/mp3, any rate, mono or stereo) is decoded lazily to 16 kHz mono.
UTF-8 (a BOM is fine), any line endings; a field holding a comma must be in double quotes (a row with more
fields than the header is refused, never silently cut); rows with no text are skipped.
"""

from __future__ import annotations

import csv
from pathlib import Path

from lsl_core.data.samples import SampleRecord, SampleSet, audio_file_loader
from lsl_core.errors import DataError

CSV_NAME = "questions.csv"
REQUIRED_COLUMNS = ("file", "question")
OPTIONAL_COLUMNS = ("answers", "accent")
_SCHEMA = "file,question[,answers,accent] (answers separated by '|')"


def _read_csv(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a UTF-8 CSV (BOM and CRLF allowed); rows with no text are skipped."""
    try:
        with csv_path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None) or []
            rows = [(reader.line_num, values) for values in reader if any(v.strip() for v in values)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path} is not a readable UTF-8 CSV file ({exc}). Save it as CSV (UTF-8).") from None
    return header, rows


def _resolve(folder: Path, file: str) -> tuple[str, Path]:
    """(file as named, its path under folder); a Windows path (sub\\clip.wav) is read with '/' when only that exists."""
    path = folder / file
    if not path.is_file() and "\\" in file and (folder / file.replace("\\", "/")).is_file():
        file = file.replace("\\", "/")
        path = folder / file
    return file, path


def load_folder(folder: str | Path) -> SampleSet:
    """Samples from <folder>/questions.csv and the audio files it names."""
    folder = Path(folder).expanduser().absolute()  # audio is decoded later: not against a later CWD
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise DataError(f"Sample folder {folder} {what}. Give a folder with audio files and {CSV_NAME}.")
    csv_path = folder / CSV_NAME
    if not csv_path.is_file():
        if (folder / "manifest.jsonl").is_file():  # a set written by `synth --out`
            raise DataError(f"No {CSV_NAME} in {folder}, but a manifest.jsonl (a set written by `synth --out`): "
                            f"open it as manifest:{folder}.")
        raise DataError(f"No {CSV_NAME} in {folder}. Create it with the columns {_SCHEMA}.")
    header, rows = _read_csv(csv_path)
    columns = [c.strip().lower() for c in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{csv_path} has no column {', '.join(repr(c) for c in missing)} (found: "
                        f"{', '.join(columns) or 'none'}). Expected columns {_SCHEMA}.")
    if not rows:
        raise DataError(f"{csv_path} has a header but no rows; add one row per audio file.")
    records, absent, seen = [], [], {}
    for n, values in rows:
        if len(values) > len(columns) and any(v.strip() for v in values[len(columns):]):
            raise DataError(f"{csv_path} line {n} has more fields than the header ({len(values)} > {len(columns)}): "
                            "a comma inside an unquoted question or answer? Put that field in double quotes.")
        row = {c: v.strip() for c, v in zip(columns, values)}
        file, question = row.get("file") or "", row.get("question") or ""
        if not file or not question:
            raise DataError(f"{csv_path} line {n}: empty {'file' if not file else 'question'}; "
                            "every row needs an audio file and its typed question.")
        file, path = _resolve(folder, file)
        if not path.is_file():
            absent.append(file)
            continue
        sid = Path(file).with_suffix("").as_posix()
        if sid in seen:
            first = seen[sid]
            if (folder / first).resolve() == path.resolve():
                raise DataError(f"{csv_path} line {n}: {file} is listed twice; list each audio file once.")
            raise DataError(f"{csv_path} line {n}: {first} and {file} would get the same id {sid!r} (ids are the "
                            "paths without extension); rename one of the files.")
        seen[sid] = file
        answers = tuple(a.strip() for a in (row.get("answers") or "").split("|") if a.strip())
        records.append(SampleRecord(id=sid, question=question, load_audio=audio_file_loader(path, file),
                                    answers=answers, accent=row.get("accent") or "", source="folder",
                                    meta={"path": str(path), "file": file}))
    if absent:
        raise DataError(f"{len(absent)} audio file(s) named in {csv_path} are missing from {folder}: "
                        f"{', '.join(absent[:3])}{' ...' if len(absent) > 3 else ''}. Fix the 'file' column "
                        "(paths are relative to the folder) or add the files.")
    return SampleSet(f"folder:{folder.name}", records)


__all__ = ["load_folder", "CSV_NAME", "REQUIRED_COLUMNS", "OPTIONAL_COLUMNS"]
