"""Audio decoding and validation: anything in, 16 kHz mono float32 out, or one clear AudioError.

Two layers, kept apart on purpose:
  prepare_audio   format sanity (numeric, finite, scaled, non-empty, <= MAX_SECONDS, 16 kHz). The
                  encoder path calls it, so controls can still analyse silence on purpose.
  check_speech    content sanity for user input (uploads and files of a sample set): a clip with no
                  speech energy is refused, very short speech gets a warning the app shows.

Speech energy is measured as the level of the loudest SPEECH_WINDOW_S window,
    level = 20·log10( max_t sqrt(mean(x[t : t+W]²)) )  dBFS  (0 dBFS = a full-scale square wave),
and a clip is refused when level < SILENCE_DBFS. Active speech is the span from the first to the last
20 ms frame whose own level reaches SILENCE_DBFS; under SHORT_SPEECH_S it warns.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsl_core.errors import AudioError

TARGET_SR = 16_000
WINDOW_SECONDS = 30.0  # the Whisper encoder window; longer clips are encoded window by window (encoder.py)
MAX_SECONDS = 120.0  # at most four windows: hundreds of LLM positions are still a question, not a lecture
AUDIO_FORMATS = ("wav", "flac", "ogg", "mp3")  # what soundfile (libsndfile >= 1.1) decodes; the uploader offers these
SILENCE_DBFS = -50.0  # THE speech-energy threshold: loudest 100 ms window below this -> no speech (refused).
#   Digital silence is -inf dBFS; room noise of a quiet recording sits near -60..-50 dBFS; speech peaks at
#   about -30..-10 dBFS (the shipped espeak clips: -18..-11 dBFS), so the line is >= 20 dB below any speech.
SPEECH_WINDOW_S = 0.1  # window of the level measurement (about one syllable)
FRAME_S = 0.02  # frame of the active-speech span (one Whisper encoder frame)
SHORT_SPEECH_S = 0.5  # active speech shorter than this warns: a question needs more than one word
FLOAT_PEAK_MAX = 16.0  # float samples beyond this (24 dB over full scale) are integer PCM left unscaled: refused.
#   Overs of a float WAV stay far below it; int16 PCM cast to float peaks in the hundreds or thousands, and Whisper's
#   log-mel is not scale-free (an unscaled int16 clip shifts every feature by log10(32768²)/4 ≈ 2.3).


def load_audio_file(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """Decode a wav/flac/ogg/mp3 file (path or raw bytes) -> (samples [n] or [n, ch], sr)."""
    import soundfile as sf

    name = "the uploaded file" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise AudioError(f"Audio file not found: {name}. Check the path or re-upload the file.")
    try:
        data, sr = sf.read(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source),
                           dtype="float32", always_2d=False)
    except Exception as exc:  # soundfile raises several types for undecodable input
        raise AudioError(
            f"Could not decode audio from {name}: {_decode_reason(exc)}. "
            f"Use a {_formats()} file (16 kHz mono is ideal)."
        ) from None
    return data, int(sr)


def _formats() -> str:
    names = [f.upper() for f in AUDIO_FORMATS]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _decode_reason(exc: Exception) -> str:
    """soundfile's message without the Python object it embeds (`<_io.BytesIO object at 0x...>`)."""
    import re

    text = re.sub(r"<[^<>]* object at 0x[0-9a-fA-F]+>", "", str(exc))
    text = re.sub(r"^Error opening\s*:?\s*", "", text.strip()).strip(" :.")
    return text or "the file is not an audio format this reader knows"


def prepare_audio(audio: np.ndarray, sr: int, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Validate and convert audio to the encoder's input: mono float32 at 16 kHz, shape [n].

    Stereo/multichannel ([n, ch] or [ch, n]; the shorter axis is the channels) is averaged to mono;
    integer PCM is scaled as soundfile scales it (signed / 2^(bits-1), unsigned centred first); any
    sample rate is resampled with a polyphase filter. Raises AudioError for empty, too-short, NaN/inf,
    unscaled (float peak > FLOAT_PEAK_MAX) or over-long audio, naming the fix.
    """
    a = np.asarray(audio)
    if a.dtype.kind not in "fiu":
        raise AudioError(f"Audio must be numeric samples, got dtype {a.dtype}. Decode the file first.")
    if not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise AudioError(f"Sample rate must be a positive integer, got {sr!r}.")
    if a.dtype.kind in "iu":
        a = _pcm_to_float(a)
    a = a.astype(np.float32, copy=False)
    if a.ndim == 2:
        ch_axis = 1 if a.shape[1] <= a.shape[0] else 0  # channels are the short axis: [n, ch] (soundfile) or [ch, n]
        a = a.mean(axis=ch_axis)
    if a.ndim != 1:
        raise AudioError(f"Audio must be 1-D (mono) or 2-D (channels), got shape {tuple(a.shape)}.")
    if a.size == 0:
        raise AudioError("Audio is empty (zero samples). Record or upload a non-empty clip.")
    if not np.isfinite(a).all():
        raise AudioError("Audio contains NaN or infinite samples. Re-export the file.")
    peak = float(np.abs(a).max())
    if peak > FLOAT_PEAK_MAX:
        raise AudioError(
            f"Audio samples reach {peak:.0f}, but float audio lies in [-1, 1]: this looks like integer PCM stored as "
            "float. Pass the integer array itself, or divide by 32768 (16-bit) or 2147483648 (32-bit) first."
        )
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
            f"Audio lasts only {seconds * 1000:.1f} ms ({a.size} sample{'s' if a.size != 1 else ''} at 16 kHz); "
            "the encoder needs at least 20 ms. Record or upload the whole spoken question."
        )
    return a


def _pcm_to_float(a: np.ndarray) -> np.ndarray:
    """Integer PCM -> float32 in [-1, 1), as soundfile reads it: signed / 2^(bits-1); unsigned (8-bit WAV)
    is offset binary, centred on 2^(bits-1) first."""
    info = np.iinfo(a.dtype)
    half = float(info.max // 2 + 1) if a.dtype.kind == "u" else -float(info.min)  # 2^(bits-1)
    centred = a.astype(np.float64) - half if a.dtype.kind == "u" else a.astype(np.float64)
    return (centred / half).astype(np.float32)


def audio_digest(audio: np.ndarray) -> str:
    """Content identity of a decoded clip for cache keys: sha256 of its float32 samples (16 hex digits).

    The one audio hash of the project (analysis cache, evaluation cache, encoder-state cache, app caches).
    """
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(audio, dtype=np.float32).tobytes()).hexdigest()[:16]


# =============================================================================== speech content
@dataclass(frozen=True)
class SpeechCheck:
    """What check_speech measured on a clip that has speech energy, and what to tell the user."""

    level_dbfs: float  # level of the loudest SPEECH_WINDOW_S window
    active_seconds: float  # first to last 20 ms frame reaching SILENCE_DBFS
    warnings: tuple[str, ...] = ()  # user-facing notes (e.g. very short speech); empty when all is well


def _window_rms(a: np.ndarray, n: int) -> np.ndarray:
    """RMS of every window of n samples (hop 1) via a cumulative sum: [N] -> [max(1, N - n + 1)] float64."""
    a = a.astype(np.float64)
    n = max(1, min(n, a.size))
    c = np.concatenate([[0.0], np.cumsum(a * a)])  # [N+1]
    return np.sqrt(np.maximum(c[n:] - c[:-n], 0.0) / n)


def _dbfs(rms: np.ndarray | float) -> np.ndarray | float:
    """RMS -> dBFS (-inf for exact zeros, without a divide-by-zero warning)."""
    with np.errstate(divide="ignore"):
        out = 20.0 * np.log10(np.asarray(rms, dtype=np.float64))
    return out if out.ndim else float(out)


def speech_level_dbfs(audio: np.ndarray, sr: int = TARGET_SR) -> float:
    """Level of the loudest SPEECH_WINDOW_S window of mono audio [n], in dBFS (-inf for digital silence)."""
    a = np.asarray(audio, dtype=np.float64).reshape(-1)
    if a.size == 0:
        return float("-inf")
    return float(_dbfs(_window_rms(a, int(round(SPEECH_WINDOW_S * sr))).max()))


def active_speech_seconds(audio: np.ndarray, sr: int = TARGET_SR) -> float:
    """Seconds from the first to the last FRAME_S frame whose level reaches SILENCE_DBFS (0.0 if none)."""
    a = np.asarray(audio, dtype=np.float64).reshape(-1)
    n = max(1, int(round(FRAME_S * sr)))
    frames = a[: a.size // n * n].reshape(-1, n) if a.size >= n else a.reshape(1, -1)  # [F, n]
    loud = np.nonzero(_dbfs(np.sqrt((frames * frames).mean(axis=1))) >= SILENCE_DBFS)[0]
    return 0.0 if loud.size == 0 else float((loud[-1] - loud[0] + 1) * frames.shape[1] / sr)


def check_speech(audio: np.ndarray, sr: int = TARGET_SR) -> SpeechCheck:
    """Refuse a clip with no speech energy; warn on very short speech. audio: mono float [n] (prepare_audio output).

    Raises AudioError when the loudest SPEECH_WINDOW_S window is below SILENCE_DBFS (digital silence,
    near silence). Called on user input only (uploads, files of a sample set), never by the encoder,
    so silence can still be analysed on purpose as a control.
    """
    level = speech_level_dbfs(audio, sr)
    seconds = np.asarray(audio).size / float(sr)
    if not level >= SILENCE_DBFS:  # also catches -inf
        shown = "digital silence (all samples zero)" if level == float("-inf") else f"{level:.0f} dBFS"
        raise AudioError(
            f"The clip has no speech energy: its loudest {SPEECH_WINDOW_S * 1000:.0f} ms are {shown}, below the "
            f"{SILENCE_DBFS:.0f} dBFS speech threshold ({seconds:.2f} s of audio). Metrics on silence look like "
            "real numbers but say nothing about speech: record the spoken question closer to the microphone "
            "or upload the right file."
        )
    active = active_speech_seconds(audio, sr)
    warnings = []
    if active < SHORT_SPEECH_S:
        warnings.append(
            f"Very short speech: only {active:.2f} s of the clip is above {SILENCE_DBFS:.0f} dBFS (under "
            f"{SHORT_SPEECH_S:.1f} s). A question usually needs more than one word; alignment paths and CKA over "
            "so few frames are fragile."
        )
    return SpeechCheck(level_dbfs=level, active_seconds=active, warnings=tuple(warnings))
