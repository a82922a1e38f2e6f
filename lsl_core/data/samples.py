"""The Sample record shared by every loader, analysis and the app."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
