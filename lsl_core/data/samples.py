"""The Sample record shared by every loader, analysis and the app, and the containers loaders fill.

Sample        one spoken question (decoded audio, transcript, gold answers).
SampleRecord  a sample without its audio: metadata + a function that decodes it on demand.
SampleSet     an ordered, indexable collection of records with lazily decoded audio.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsl_core.data.audio import TARGET_SR, check_speech, load_audio_file, prepare_audio
from lsl_core.errors import AudioError, DataError


class SampleIndexError(DataError, IndexError):
    """A sample index outside the set: a user error (DataError) that still ends iteration like an IndexError."""


@dataclass(frozen=True, eq=False)
class Sample:
    """One spoken question with its transcript and gold answers.

    audio: mono float32 samples [n] at `sr` Hz (loaders return 16 kHz).
    question: the typed question (the text modality's query).
    answers: gold reference answers (may be empty, e.g. for uploads).
    accent: accent or synthetic voice label (e.g. "usa" or "espeak:en-gb").
    source: where the sample came from ("sd-qa-mini", "voicebench:sd-qa", "folder", "upload").
    """

    id: str
    audio: np.ndarray
    sr: int
    question: str
    answers: tuple[str, ...] = ()
    accent: str = ""
    source: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return len(self.audio) / float(self.sr)


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
            raise SampleIndexError(f"Sample index {i} is out of range for set {self.name!r} ({len(self)} samples); "
                                   f"give an index from 0 to {len(self) - 1} or a sample id.")
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

    def with_voice(self, voice: str) -> SampleSet:
        """filter(voice=voice), refusing a voice no sample has (DataError naming the set's voices)."""
        sub = self.filter(voice=voice)
        if self._items and not len(sub):
            raise DataError(f"No sample of voice {voice!r} in set {self.name!r}; its voices are: "
                            f"{', '.join(_voice_key(v) or repr(v) for v in self.voices())}. Pass one of them.")
        return sub

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
