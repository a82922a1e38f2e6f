"""Audio decoding and validation: anything in, 16 kHz mono float32 out, or one clear AudioError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from lsl_core.errors import AudioError

TARGET_SR = 16_000
WINDOW_SECONDS = 30.0  # the Whisper encoder window; longer clips are encoded window by window (encoder.py)
MAX_SECONDS = 120.0  # at most four windows: hundreds of LLM positions are still a question, not a lecture


def load_audio_file(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Decode a wav/flac/ogg/mp3 file (path or raw bytes) -> (samples [n] or [n, ch], sr)."""
    import soundfile as sf

    name = "uploaded bytes" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise AudioError(f"Audio file not found: {name}. Check the path or re-upload the file.")
    try:
        data, sr = sf.read(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source),
                           dtype="float32", always_2d=False)
    except Exception as exc:  # soundfile raises several types for undecodable input
        raise AudioError(
            f"Could not decode audio from {name} ({exc}). Use a WAV, FLAC or OGG file."
        ) from None
    return data, int(sr)


def prepare_audio(audio: np.ndarray, sr: int, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Validate and convert audio to the encoder's input: mono float32 at 16 kHz, shape [n].

    Stereo/multichannel ([n, ch] or [ch, n] with ch <= 8) is averaged to mono; any sample rate
    is resampled with a polyphase filter. Raises AudioError for empty, silent-length, NaN/inf or
    over-long audio, naming the fix.
    """
    a = np.asarray(audio)
    if a.dtype.kind not in "fiu":
        raise AudioError(f"Audio must be numeric samples, got dtype {a.dtype}. Decode the file first.")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AudioError(f"Sample rate must be a positive integer, got {sr!r}.")
    if a.dtype.kind in "iu":  # integer PCM -> [-1, 1]
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max)
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        ch_axis = 1 if a.shape[1] <= 8 else 0  # [n, ch] (soundfile) or [ch, n]
        a = a.mean(axis=ch_axis)
    if a.ndim != 1:
        raise AudioError(f"Audio must be 1-D (mono) or 2-D (channels), got shape {tuple(a.shape)}.")
    if a.size == 0:
        raise AudioError("Audio is empty (zero samples). Record or upload a non-empty clip.")
    if not np.isfinite(a).all():
        raise AudioError("Audio contains NaN or infinite samples. Re-export the file.")
    if sr != TARGET_SR:
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(int(sr), TARGET_SR)
        a = resample_poly(a, TARGET_SR // g, int(sr) // g).astype(np.float32)
    seconds = a.size / TARGET_SR
    if seconds > max_seconds:
        raise AudioError(
            f"Audio is {seconds:.1f} s long; the app reads at most {max_seconds:.0f} s (the speech encoder "
            f"takes {WINDOW_SECONDS:.0f} s windows, longer clips are read window by window). "
            "Trim the clip to the spoken question."
        )
    if a.size < TARGET_SR // 50:  # shorter than one 20 ms encoder frame
        raise AudioError(
            f"Audio is only {a.size} samples ({seconds * 1000:.1f} ms); the encoder needs at least 20 ms."
        )
    return a


def audio_digest(audio: np.ndarray) -> str:
    """Content identity of a decoded clip for cache keys: sha256 of its float32 samples (16 hex digits).

    The one audio hash of the project (analysis cache, evaluation cache, encoder-state cache, app caches).
    """
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()[:16]
