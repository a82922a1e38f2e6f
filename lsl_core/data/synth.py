"""Deterministic speech from text with espeak-ng (DESIGN §4): the embedded sample set and training audio.

espeak-ng voices stand in for accents and are always labelled synthetic ("espeak:<voice>").
The same text, voice, speed and espeak-ng version give the same samples, bit for bit.

    python -m lsl_core synth --set sd-qa-mini            # regenerate assets/sd-qa-mini
    python -m lsl_core synth --set train --n-questions 200   # warm the training-audio cache
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np

from lsl_core.data.audio import TARGET_SR
from lsl_core.data.samples import Sample
from lsl_core.errors import DataError

MINI_SET = "sd-qa-mini"
MINI_VOICES = ("en-gb", "en-gb-x-rp", "en-us", "en-029", "en-gb-scotland")
UNSEEN_VOICE = "en-gb-scotland"  # held out of training: the "unseen accent"
TRAIN_VOICES = tuple(v for v in MINI_VOICES if v != UNSEEN_VOICE)
# every working English espeak-ng voice but the unseen one: the demo checkpoints' training voices
TRAIN_VOICE_FAMILY = (*TRAIN_VOICES, "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
MINI_N_QUESTIONS = 60
TAIL_SILENCE_S = 0.1  # espeak-ng appends ~0.3 s of silence; keep 0.1 s of it
_VOICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+\-]*$")
_NOT_INSTALLED = "espeak-ng not installed: run scripts/setup.sh (apt-get install espeak-ng)"


# ------------------------------------------------------------------ espeak-ng
def espeak_available() -> bool:
    """True if the espeak-ng program is on PATH."""
    return shutil.which("espeak-ng") is not None


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError(_NOT_INSTALLED)
    return exe


@lru_cache(maxsize=1)
def espeak_version() -> str:
    """The installed espeak-ng version, e.g. "1.51" (part of every cache key)."""
    out = subprocess.run([_espeak(), "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"text-to-speech:\s*([0-9][\w.\-]*)", out)
    return m.group(1) if m else "unknown"


def _check_voice(voice: str) -> str:
    if not isinstance(voice, str) or not _VOICE_RE.match(voice):
        raise DataError(f"Invalid espeak-ng voice name {voice!r}; use a name like en-gb, en-us or en-gb-scotland "
                        "(`espeak-ng --voices=en` lists them).")
    return voice


@lru_cache(maxsize=64)
def _voice_file(language: str) -> str:
    """The espeak-ng voice file of a language name ("en-gb" -> "gmw/en"), MBROLA voices skipped.

    A variant ("+m3") only takes effect on a voice file: "en-gb+m3" is silently spoken as plain en-gb
    (espeak-ng 1.51), while "gmw/en+m3" is the m3 timbre.
    """
    out = subprocess.run([_espeak(), f"--voices={language}"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5 and cols[1] == language and not cols[4].startswith("mb/"):
            return cols[4]
    raise DataError(f"espeak-ng has no voice {language!r}; `espeak-ng --voices=en` lists them.")


@lru_cache(maxsize=1)
def _variants() -> frozenset[str]:
    """Names of the installed espeak-ng voice variants ("m3", "klatt", "Alex"; `espeak-ng --voices=variant`)."""
    out = subprocess.run([_espeak(), "--voices=variant"], capture_output=True, text=True, check=False).stdout
    rows = [ln.split() for ln in out.splitlines()[1:]]  # Pty Language Age/Gender VoiceName File (!v/m3)
    return frozenset(cols[4].split("/", 1)[-1] for cols in rows if len(cols) >= 5)


def _voice_arg(voice: str) -> str:
    """What `espeak-ng -v` takes for a voice name, with a variant resolved onto its voice file.

    espeak-ng speaks an unknown variant as the plain voice without a word, so the variant is checked here.
    """
    if "+" not in voice:
        return voice
    language, variant = voice.split("+", 1)
    if variant not in _variants():
        raise DataError(f"espeak-ng has no voice variant {variant!r} (in {voice!r}); `espeak-ng --voices=variant` "
                        "lists them (m1..m8, f1..f5, klatt, ...).")
    return f"{_voice_file(language)}+{variant}"


def _trim_tail(a: np.ndarray, sr: int) -> np.ndarray:
    loud = np.flatnonzero(np.abs(a) > 1e-3)
    if loud.size == 0:
        return a
    return a[: min(a.size, int(loud[-1]) + 1 + int(TAIL_SILENCE_S * sr))]


def synthesize(text: str, voice: str, speed: int | None = None, pitch: int | None = None) -> np.ndarray:
    """Speak `text` with an espeak-ng voice -> mono float32 [n] at 16 kHz (deterministic).

    espeak-ng writes 22050 Hz 16-bit WAV; it is resampled with a polyphase filter (320/441) and
    the trailing silence is cut to 0.1 s. speed: words per minute (espeak-ng default 175);
    pitch: 0..99 (espeak-ng default 50). voice may carry a variant (speaker timbre), "en-gb+m3"
    (`espeak-ng --voices=variant` lists them).
    """
    _check_voice(voice)
    text = " ".join(str(text).split())
    if not text:
        raise DataError("Cannot synthesize an empty question; give some text.")
    if speed is not None and not (80 <= int(speed) <= 450):
        raise DataError(f"speed must be 80..450 words per minute, got {speed}.")
    if pitch is not None and not (0 <= int(pitch) <= 99):
        raise DataError(f"pitch must be 0..99 (espeak-ng), got {pitch}.")
    cmd = [_espeak(), "-v", _voice_arg(voice), "--stdout"] + (["-s", str(int(speed))] if speed is not None else [])
    cmd += ["-p", str(int(pitch))] if pitch is not None else []
    # text on stdin, never on the command line: a question starting with "-" is not an option
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
    if proc.returncode != 0 or len(proc.stdout) <= 44:
        msg = proc.stderr.decode("utf-8", "replace").strip().rstrip(".") or f"exit status {proc.returncode}"
        raise DataError(f"espeak-ng failed for voice {voice!r}: {msg}. Check the voice name "
                        "(`espeak-ng --voices=en`); MBROLA voices are not supported.")
    import soundfile as sf
    from scipy.signal import resample_poly

    a, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=False)  # [n] at 22050 Hz
    if a.ndim == 2:
        a = a.mean(axis=1)
    a = _trim_tail(a, sr)
    g = gcd(int(sr), TARGET_SR)
    a = resample_poly(a, TARGET_SR // g, int(sr) // g)  # [n * 16000/22050]
    return np.clip(a, -1.0, 1.0).astype(np.float32)


def phonemes(words: list[str], voice: str = "en-us") -> list[tuple[str, ...]]:
    """espeak-ng's phonemes of each word (its -x mnemonics, stress marks dropped), one espeak-ng call for all.

    >>> phonemes(["hangul", "hangi"])
    [('h', 'a', 'N', 'g', 'V', 'l'), ('h', 'a', 'N', 'g', 'i')]
    """
    _check_voice(voice)
    if not words:
        return []
    if any(not w.strip() or "\n" in w for w in words):
        raise DataError("phonemes: every word must be non-empty text on one line.")
    cmd = [_espeak(), "-q", "-x", "--sep= ", "-v", _voice_arg(voice)]
    text = "\n".join(f"{w.strip()}." for w in words) + "\n"  # one clause per line: one output line each
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
    lines = [ln for ln in proc.stdout.decode("utf-8", "replace").splitlines() if ln.strip()]
    if proc.returncode == 0 and lines and len(lines) != len(words):  # a word read as two clauses ("3.5"?)
        if len(words) > 1:
            return [phonemes([w], voice)[0] for w in words]
        lines = [" ".join(lines)]
    if proc.returncode != 0 or len(lines) != len(words):
        msg = proc.stderr.decode("utf-8", "replace").strip() or f"{len(lines)} lines for {len(words)} words"
        raise DataError(f"espeak-ng could not phonemize the words with voice {voice!r}: {msg}.")
    return [tuple(p for p in (s.strip("',") for s in ln.split()) if p) for ln in lines]


def write_flac(path: Path, audio: np.ndarray) -> None:
    """Write 16 kHz mono audio as FLAC PCM_16, atomically (a temp file of this process and thread + rename)."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    # threads of one run may write one path (two questions with the same text): a temp file per thread
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        sf.write(str(tmp), np.asarray(audio, dtype=np.float32), TARGET_SR, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_flac(path: Path) -> np.ndarray:
    """Read a 16 kHz mono FLAC written by write_flac -> float32 [n]."""
    import soundfile as sf

    a, sr = sf.read(str(path), dtype="float32", always_2d=False)
    if sr != TARGET_SR or a.ndim != 1:
        raise DataError(f"{path} is not 16 kHz mono (sr={sr}, shape={a.shape}); delete it and regenerate.")
    return a


# ------------------------------------------------------------------ questions
def _question_fields(q) -> tuple[str, str, tuple[str, ...], str]:
    """(example_id, question, answers, split) of an SDQAQuestion, a mapping or a plain string."""
    if isinstance(q, str):
        return "q" + hashlib.sha1(q.encode("utf-8")).hexdigest()[:12], q, (), ""
    get = q.get if isinstance(q, dict) else (lambda k, d=None: getattr(q, k, d))
    if get("question") is None or get("example_id") is None:
        raise DataError(f"A question needs example_id and question fields, got {q!r}.")
    return str(get("example_id")), str(get("question")), tuple(get("answers", ()) or ()), str(get("split", "") or "")


def _voices(voices: Iterable[str]) -> list[str]:
    vs = [_check_voice(v.strip()) for v in voices if v and v.strip()]
    if not vs:
        raise DataError("Give at least one espeak-ng voice (e.g. en-gb).")
    if len(set(vs)) != len(vs):
        raise DataError(f"Voices are listed twice: {vs}.")
    return vs


def _map(fn, jobs: list, workers: int, progress: str | None) -> list:
    """fn over jobs in order, on `workers` threads (espeak-ng runs as a subprocess, so threads overlap)."""
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc=progress, unit="clip")
    out = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for r in pool.map(fn, jobs):
            out.append(r)
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    return out


# ------------------------------------------------------------------ the shipped set
def _manifest_audio(manifest: Path) -> set[Path]:
    """The FLAC files a previous build listed in `manifest` (empty when it is missing or unreadable)."""
    out: set[Path] = set()
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines() if manifest.is_file() else []
    except (OSError, UnicodeDecodeError):
        return out
    for line in lines:
        try:
            rel = json.loads(line).get("audio")
        except (json.JSONDecodeError, AttributeError):
            continue
        if isinstance(rel, str) and rel.startswith("audio/") and rel.endswith(".flac") and ".." not in rel:
            out.add(manifest.parent / rel)
    return out


def build_mini_set(out_dir: str | Path, questions: Sequence, voices: Sequence[str] = MINI_VOICES, *,
                   speed: int | None = None, unseen_voice: str | None = None, name: str = MINI_SET,
                   workers: int = 2, progress: bool = False) -> Path:
    """Synthesize questions × voices into out_dir -> path of its manifest.jsonl.

    Writes audio/<voice>/<example_id>.flac (16 kHz mono FLAC PCM_16), manifest.jsonl (one row per
    clip, question-major, voices in the given order) and set.json (voices, counts, licence).
    FLAC files the previous manifest.jsonl listed that the new one does not are removed; files this
    function never wrote (a user's own audio under out_dir) are left alone.
    """
    out = Path(out_dir)
    vs = _voices(voices)
    qs = [_question_fields(q) for q in questions]
    if not qs:
        raise DataError("No questions to synthesize.")
    if len({q[0] for q in qs}) != len(qs):
        raise DataError("Question example_ids must be unique.")
    if unseen_voice is not None and unseen_voice not in vs:
        raise DataError(f"unseen_voice {unseen_voice!r} is not one of the voices {vs}.")
    version = espeak_version()
    jobs = [(q, v) for q in qs for v in vs]

    def make(job):
        (qid, text, answers, split), voice = job
        rel = Path("audio") / voice / f"{qid}.flac"
        audio = synthesize(text, voice, speed)
        write_flac(out / rel, audio)
        return {
            "id": f"{qid}__{voice}", "example_id": qid, "question": text, "answers": list(answers),
            "voice": voice, "accent": f"espeak:{voice}", "audio": rel.as_posix(),
            "duration_s": round(audio.size / TARGET_SR, 3), "synthetic": True, "split": split,
        }

    manifest = out / "manifest.jsonl"
    written_before = _manifest_audio(manifest)
    rows = _map(make, jobs, workers, f"synth {name}" if progress else None)
    for old in sorted(written_before - {out / r["audio"] for r in rows}):
        old.unlink(missing_ok=True)
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    n_bytes = sum((out / r["audio"]).stat().st_size for r in rows)
    meta = {
        "name": name,
        "synthetic": f"espeak-ng {version}",
        "voices": vs,
        "accent_labels": [f"espeak:{v}" for v in vs],
        "unseen_voice": unseen_voice,
        "counts": {"questions": len(qs), "clips": len(rows), "per_voice": {v: len(qs) for v in vs}},
        "total_duration_s": round(sum(r["duration_s"] for r in rows), 1),
        "audio_mb": round(n_bytes / 1e6, 2),
        "format": "FLAC PCM_16, 16 kHz mono",
        "speed_wpm": speed,
        "source": "SD-QA English (Faisal et al. 2021), questions and gold answers",
        "licence": "questions/answers: Apache-2.0 (SD-QA); audio: synthesized with espeak-ng "
                   f"{version}, labelled synthetic",
        "regenerate": "python -m lsl_core synth --set sd-qa-mini" if name == MINI_SET else None,
    }
    (out / "set.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


# ------------------------------------------------------------------ training audio
def _cache_path(text: str, voice: str, speed: int | None) -> Path:
    from lsl_core.cache import cache_dir

    version = espeak_version()
    key = hashlib.sha256(f"{version}|{voice}|{speed}|{' '.join(text.split())}".encode("utf-8")).hexdigest()[:20]
    return cache_dir("synth", f"espeak-ng-{version}", voice) / f"{key}.flac"


def _cached_clip(text: str, voice: str, speed: int | None) -> np.ndarray:
    """synthesize(text, voice, speed) through the FLAC cache; an unreadable cached file is made again."""
    path = _cache_path(text, voice, speed)
    if path.is_file():
        try:
            return read_flac(path)
        except Exception:  # noqa: BLE001 (a damaged or foreign file: libsndfile errors, DataError) -> regenerate
            pass
    write_flac(path, synthesize(text, voice, speed))
    return read_flac(path)


def synth_training_set(questions: Sequence, voices: Sequence[str] = TRAIN_VOICES, cache: bool = True, *,
                       speed: int | None = None, workers: int = 2, progress: bool = False) -> list[Sample]:
    """Samples for training: every question × voice, as 16 kHz float32 audio (question-major order).

    With cache=True each clip is stored once as FLAC under cache_dir("synth", "espeak-ng-<ver>",
    <voice>) keyed by (version, voice, speed, text) and read back from there, so fresh and cached
    runs return identical samples. Voices default to TRAIN_VOICES (the unseen voice held out).
    Memory: ~3 s × 64 kB/s per clip, i.e. ~0.8 GB for 1031 questions × 4 voices.
    """
    vs = _voices(voices)
    qs = [_question_fields(q) for q in questions]
    jobs = [(q, v) for q in qs for v in vs]

    def make(job):
        (qid, text, answers, split), voice = job
        if cache:
            audio = _cached_clip(text, voice, speed)
        else:
            audio = synthesize(text, voice, speed)
        return Sample(id=f"{qid}__{voice}", audio=audio, sr=TARGET_SR, question=" ".join(text.split()),
                      answers=answers, accent=f"espeak:{voice}", source="synth:train",
                      meta={"example_id": qid, "voice": voice, "synthetic": True, "split": split})

    return _map(make, jobs, workers, "synth train" if progress else None)


# ------------------------------------------------------------------ CLI
def register(subparsers) -> None:
    """Add `synth` to `python -m lsl_core`."""
    p = subparsers.add_parser(
        "synth", help="synthesize SD-QA questions with espeak-ng voices",
        description="Synthesize SD-QA questions with espeak-ng (deterministic, labelled synthetic). "
                    "--set sd-qa-mini rebuilds the shipped sample set; --set train synthesizes the "
                    "training questions (SD-QA test split) into the cache, or into --out as a manifest set.")
    p.add_argument("--set", dest="set_name", choices=[MINI_SET, "train"], default=MINI_SET,
                   help="which set to build (default: sd-qa-mini)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (sd-qa-mini default: assets/sd-qa-mini; train default: the cache only)")
    p.add_argument("--voices", default=None,
                   help=f"comma-separated espeak-ng voices (sd-qa-mini default: {','.join(MINI_VOICES)}; "
                        f"train default: {','.join(TRAIN_VOICES)})")
    p.add_argument("--n-questions", type=int, default=None,
                   help=f"number of questions (sd-qa-mini default {MINI_N_QUESTIONS}; train default all)")
    p.add_argument("--skip-questions", type=int, default=0,
                   help="sd-qa-mini rule only: skip this many qualifying questions first (60: the next 60 dev "
                        "questions, disjoint from sd-qa-mini, e.g. to confirm a result on clips no choice was made on)")
    p.add_argument("--split", choices=["dev", "test"], default=None,
                   help="SD-QA split the questions come from (sd-qa-mini default dev; train must be test)")
    p.add_argument("--speed", type=int, default=None, help="words per minute (espeak-ng default 175)")
    p.add_argument("--workers", type=int, default=2, help="parallel espeak-ng processes (default 2)")
    p.set_defaults(func=main)


def main(args) -> int:
    """Run `synth` from parsed arguments; prints a one-line summary."""
    from lsl_core.data.paths import assets_dir
    from lsl_core.data.sdqa import load_sdqa_dev, load_sdqa_test, load_sdqa_train_questions, select_mini_questions

    _espeak()
    n = args.n_questions
    if n is not None and n <= 0:
        raise DataError(f"--n-questions must be positive, got {n}.")
    if args.skip_questions < 0 or (args.skip_questions and (args.set_name != MINI_SET or args.out is None)):
        raise DataError("--skip-questions takes a number >= 0, with --set sd-qa-mini and an --out folder (the "
                        "shipped sd-qa-mini is the first 60 questions; it is not overwritten).")
    if args.set_name == MINI_SET:
        voices = _voices(args.voices.split(",")) if args.voices else list(MINI_VOICES)
        split = args.split or "dev"
        other = [flag for flag, changed in (("--n-questions", n not in (None, MINI_N_QUESTIONS)),
                                            ("--voices", voices != list(MINI_VOICES)),
                                            ("--speed", args.speed is not None), ("--split", split != "dev"))
                 if changed]
        if other and args.out is None:  # the shipped set would be rebuilt with them, its other clips deleted
            raise DataError(f"{', '.join(other)} change sd-qa-mini, and without --out the shipped "
                            f"{assets_dir() / MINI_SET} would be rebuilt with them (its other clips deleted); "
                            "give --out FOLDER for the new set.")
        pool = load_sdqa_dev() if split == "dev" else load_sdqa_test()
        questions = select_mini_questions(pool, n or MINI_N_QUESTIONS, offset=args.skip_questions)
        out = args.out or assets_dir() / MINI_SET
        manifest = build_mini_set(out, questions, voices, speed=args.speed, workers=args.workers, progress=True,
                                  unseen_voice=UNSEEN_VOICE if UNSEEN_VOICE in voices else None)
        meta = json.loads((manifest.parent / "set.json").read_text())
        print(f"wrote {meta['counts']['clips']} clips ({meta['audio_mb']} MB, {meta['total_duration_s']} s) "
              f"-> {manifest}")
        return 0
    if (args.split or "test") != "test":
        raise DataError("--set train uses the SD-QA test questions; the dev split is the evaluation set "
                        "and is never used for training. Drop --split or use --split test.")
    voices = _voices(args.voices.split(",")) if args.voices else list(TRAIN_VOICES)
    questions = load_sdqa_train_questions()[: n or None]
    if args.out:
        manifest = build_mini_set(args.out, questions, voices, speed=args.speed, name="sd-qa-train",
                                  workers=args.workers, progress=True)
        print(f"wrote {len(questions) * len(voices)} clips -> {manifest}")
    else:
        samples = synth_training_set(questions, voices, cache=True, speed=args.speed, workers=args.workers,
                                     progress=True)
        print(f"cached {len(samples)} clips under {_cache_path('x', voices[0], args.speed).parent.parent}")
    return 0


__all__ = ["MINI_SET", "MINI_VOICES", "UNSEEN_VOICE", "TRAIN_VOICES", "MINI_N_QUESTIONS", "espeak_available",
           "espeak_version", "synthesize", "write_flac", "read_flac", "build_mini_set", "synth_training_set",
           "register", "main"]
