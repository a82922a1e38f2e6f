"""An uploaded audio file + its typed question -> Sample, or one AudioError/LSLError naming the fix."""

from __future__ import annotations

import hashlib

from lsl_core.data.audio import AUDIO_FORMATS, MAX_SECONDS, TARGET_SR, check_speech, load_audio_file, prepare_audio
from lsl_core.data.samples import Sample
from lsl_core.errors import AudioError, LSLError

AUDIO_TYPES = AUDIO_FORMATS  # the uploader accepts exactly what the decoder reads


def sample_from_upload(name: str, data: bytes, question: str, answers: str = "", *,
                       max_mb: float = 20.0) -> Sample:
    """Validate an upload (not empty, not huge, decodable, <= MAX_SECONDS, has speech energy) -> Sample (16 kHz mono).

    Very short speech passes with its warning in sample.meta["audio_warnings"] (the app shows it).

    answers: reference answers separated by '|' (optional). The id is derived from the file bytes,
    so the same clip keeps its cached analysis.
    """
    name = name or "upload"
    if not data:
        raise AudioError(f"The uploaded file '{name}' is empty (0 bytes). Upload a "
                         f"{', '.join(t.upper() for t in AUDIO_TYPES)} recording of the question.")
    size_mb = len(data) / 2**20
    if size_mb > max_mb:
        raise AudioError(f"The uploaded file '{name}' is {size_mb:.1f} MB; uploads are limited to {max_mb:g} MB. "
                         f"A spoken question needs at most {MAX_SECONDS:.0f} s (a 16 kHz 16-bit WAV of that length is "
                         f"about {MAX_SECONDS * TARGET_SR * 2 / 2**20:.1f} MB): trim or re-encode the clip.")
    try:
        wav, sr = load_audio_file(bytes(data))
        audio = prepare_audio(wav, sr)
        check = check_speech(audio, TARGET_SR)
    except AudioError as exc:
        raise AudioError(f"'{name}': {exc}") from None
    q = (question or "").strip()
    if not q:
        raise LSLError("Type the question that the clip speaks (its transcript) in the sidebar: the text "
                       "modality needs it.")
    refs = tuple(a.strip() for a in (answers or "").split("|") if a.strip())
    digest = hashlib.sha1(bytes(data) + q.encode()).hexdigest()[:12]
    return Sample(id=f"upload-{digest}", audio=audio, sr=TARGET_SR, question=q, answers=refs, accent="upload",
                  source="upload", meta={"file": name, "audio_warnings": list(check.warnings),
                                            "level_dbfs": check.level_dbfs})
