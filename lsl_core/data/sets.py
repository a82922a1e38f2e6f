"""Sample sets behind one loader: `load_sample_set(spec) -> SampleSet`.

Specs:
- "sd-qa-mini"          the embedded set (assets/sd-qa-mini: 60 SD-QA dev questions × 5 espeak-ng voices)
- "voicebench:<folder>" VoiceBench parquet files (a subset folder like .../sd-qa, or the root holding
                        every subset folder; lsl_core.data.voicebench lists the subsets and their columns)
- "folder:<dir>"        audio files + questions.csv (file, question[, answers, accent])
- "manifest:<dir>"      a folder written by `python -m lsl_core synth ... --out <dir>` (manifest.jsonl)

A SampleSet keeps per-sample metadata in memory and decodes audio lazily (a small LRU cache), so
big sets cost little until samples are used. Indexing returns lsl_core.data.samples.Sample with
16 kHz mono float32 audio (prepare_audio).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsl_core.data.audio import TARGET_SR, check_speech, load_audio_file, prepare_audio
from lsl_core.data.samples import Sample
from lsl_core.errors import AudioError, DataError

EMBEDDED_SETS = ("sd-qa-mini",)
SPEC_FORMS = "sd-qa-mini, voicebench:<folder>, folder:<dir>, manifest:<dir>"


@dataclass(frozen=True, eq=False)
class SampleRecord:
    """A sample without its audio: metadata plus a function that decodes the audio on demand.

    load_audio() -> mono float32 [n] at 16 kHz (already through prepare_audio).
    """

    id: str
    question: str
    load_audio: Callable[[], np.ndarray]
    answers: tuple[str, ...] = ()
    accent: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict)

    def materialize(self) -> Sample:
        """Decode the audio -> Sample; a clip with no speech energy raises AudioError (check_speech),
        and its warnings (very short speech) land in meta["audio_warnings"]."""
        audio = self.load_audio()
        try:
            check = check_speech(audio, TARGET_SR)
        except AudioError as exc:
            raise AudioError(f"Sample {self.id}: {exc}") from None
        meta = dict(self.meta)
        if check.warnings:
            meta["audio_warnings"] = list(check.warnings)
        return Sample(id=self.id, audio=audio, sr=TARGET_SR, question=self.question,
                      answers=self.answers, accent=self.accent, source=self.source, meta=meta)


def audio_file_loader(path: Path, label: str | None = None) -> Callable[[], np.ndarray]:
    """A load_audio function for an audio file: decode + prepare_audio, errors naming the file."""

    def load() -> np.ndarray:
        data, sr = load_audio_file(path)
        try:
            return prepare_audio(data, sr)
        except AudioError as exc:
            raise AudioError(f"{label or path}: {exc}") from None

    return load


@dataclass(frozen=True)
class DataProblem:
    """One unusable file or row of a sample set (kept instead of raised with on_error="collect")."""

    file: str  # path of the file
    row: int | None  # 0-based row in that file; None when the whole file is unusable
    message: str  # what is wrong and what to do

    def __str__(self) -> str:
        return f"{self.file}{'' if self.row is None else f' row {self.row}'}: {self.message}"


def _voice_key(accent: str) -> str:
    return accent.split(":", 1)[1] if accent.startswith("espeak:") else accent


class SampleSet:
    """An ordered, indexable collection of samples with lazily decoded audio.

    items: SampleRecord (lazy) or Sample (eager) objects, all with distinct ids.
    set[i] / set["id"] -> Sample; set[a:b] -> SampleSet; iteration yields Samples.
    """

    def __init__(self, name: str, items: Sequence[SampleRecord | Sample], cache_size: int = 32,
                 problems: Sequence[DataProblem] = ()):
        self.name = name
        self.problems = list(problems)  # files/rows skipped while loading (voicebench on_error="collect")
        self._items = list(items)
        self._index = {it.id: i for i, it in enumerate(self._items)}
        if len(self._index) != len(self._items):
            seen, dup = set(), None
            for it in self._items:
                if it.id in seen:
                    dup = it.id
                    break
                seen.add(it.id)
            raise DataError(f"Sample set {name!r} has the id {dup!r} more than once; ids must be unique.")
        self._cache: OrderedDict[int, Sample] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # -- container protocol
    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self._items)):
            yield self[i]

    def __contains__(self, sample_id: object) -> bool:
        return sample_id in self._index

    def __getitem__(self, key: int | str | slice) -> Sample | SampleSet:
        if isinstance(key, slice):
            return SampleSet(self.name, self._items[key], self._cache_size, self.problems)
        if isinstance(key, str):
            if key not in self._index:
                raise DataError(f"No sample with id {key!r} in set {self.name!r} ({len(self)} samples).")
            key = self._index[key]
        i = int(key)
        if not -len(self._items) <= i < len(self._items):
            raise IndexError(f"sample index {i} out of range for set {self.name!r} ({len(self)} samples)")
        i %= len(self._items)
        item = self._items[i]
        if isinstance(item, Sample):
            return item
        with self._lock:
            if i in self._cache:
                self._cache.move_to_end(i)
                return self._cache[i]
        sample = item.materialize()  # decode outside the lock
        with self._lock:
            self._cache[i] = sample
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return sample

    def __repr__(self) -> str:
        return f"SampleSet({self.name!r}, {len(self)} samples, voices={self.voices()})"

    # -- metadata (no audio decoded)
    def ids(self) -> list[str]:
        """Sample ids in set order."""
        return [it.id for it in self._items]

    def voices(self) -> list[str]:
        """Distinct accent/voice labels (e.g. "espeak:en-gb", "usa") in first-seen order."""
        return list(dict.fromkeys(it.accent for it in self._items))

    def questions(self) -> list[str]:
        """The typed question of every sample, in set order."""
        return [it.question for it in self._items]

    def record(self, key: int | str):
        """The metadata of one sample (SampleRecord or Sample) without decoding its audio."""
        return self._items[self._index[key] if isinstance(key, str) else key]

    def filter(self, voice: str | Iterable[str] | None = None, text: str | None = None,
               ids: Iterable[str] | None = None) -> SampleSet:
        """A subset (same order): voice matches an accent label ("espeak:en-gb") or a bare voice
        ("en-gb"), one or several; text is a case-insensitive substring of the question; ids a list."""
        items = self._items
        if voice is not None:
            want = {voice} if isinstance(voice, str) else set(voice)
            items = [it for it in items if it.accent in want or _voice_key(it.accent) in want]
        if text:
            t = text.lower()
            items = [it for it in items if t in it.question.lower()]
        if ids is not None:
            keep = set(ids)
            items = [it for it in items if it.id in keep]
        return SampleSet(self.name, items, self._cache_size, self.problems)

    def to_frame(self):
        """A pandas DataFrame of the metadata (id, question, answers, accent, source + meta), no audio."""
        import pandas as pd

        rows = []
        for it in self._items:
            row = {"id": it.id, "question": it.question, "answers": " | ".join(it.answers),
                   "accent": it.accent, "source": it.source}
            row.update({k: v for k, v in it.meta.items() if isinstance(v, (str, int, float, bool)) or v is None})
            rows.append(row)
        return pd.DataFrame(rows)


# ------------------------------------------------------------------ manifest sets (sd-qa-mini)
_MANIFEST_REQUIRED = ("id", "question", "audio")


def load_manifest_set(folder: str | Path, name: str | None = None) -> SampleSet:
    """A folder with manifest.jsonl (rows: id, question, audio [relative path], answers, voice, accent,
    ...) and optional set.json, as written by `python -m lsl_core synth`."""
    folder = Path(folder).expanduser()
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise DataError(f"No manifest.jsonl in {folder}. Build the set with `python -m lsl_core synth "
                        f"--set sd-qa-mini --out {folder}` or point at a folder that has one.")
    info = {}
    if (folder / "set.json").is_file():
        try:
            info = json.loads((folder / "set.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{folder / 'set.json'} is not valid JSON ({exc}); regenerate the set.") from None
    name = name or info.get("name") or folder.name
    records, missing = [], []
    for n, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{manifest} line {n} is not valid JSON ({exc}).") from None
        absent = [k for k in _MANIFEST_REQUIRED if not row.get(k)]
        if absent:
            raise DataError(f"{manifest} line {n} lacks {', '.join(absent)}; every row needs "
                            f"{', '.join(_MANIFEST_REQUIRED)} (plus optional answers, voice, accent).")
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
        from lsl_core.data.paths import assets_dir

        return load_manifest_set(assets_dir() / spec, name=spec)
    if kind == "voicebench" and arg:
        from lsl_core.data.voicebench import load_voicebench

        return load_voicebench(arg)
    if kind == "folder" and arg:
        from lsl_core.data.folder import load_folder

        return load_folder(arg)
    if kind == "manifest" and arg:
        return load_manifest_set(arg)
    raise DataError(f"Unknown sample set {spec!r}. Use one of: {SPEC_FORMS}.")


__all__ = ["SampleSet", "SampleRecord", "DataProblem", "load_sample_set", "load_manifest_set", "audio_file_loader",
           "EMBEDDED_SETS", "SPEC_FORMS"]
