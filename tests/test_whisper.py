"""Whisper tiny.en from the CTranslate2 wheel: parser, strict weight mapping, an independent numpy
reference of the encoder, and the end-to-end check that the converted model transcribes speech."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from lsl_core.errors import AudioError, ModelLoadError
from lsl_core.model.asr import normalize_transcript
from lsl_core.model.embedded import embedded_ct2_source
from lsl_core.model.whisper_ct2 import (
    ct2_to_hf_state_dict,
    read_ct2_model,
    whisper_config_from_ct2,
)

ROOT = Path(__file__).resolve().parents[1]
MINI_MANIFEST = ROOT / "assets" / "sd-qa-mini" / "manifest.jsonl"
MINI_CLIP_ID = "1971662537536642354__en-gb"  # first en-gb clip in the manifest that tiny.en transcribes word for word


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def ct2_vars() -> dict[str, np.ndarray]:
    return read_ct2_model(embedded_ct2_source())


@pytest.fixture(scope="session")
def whisper_dir() -> Path:
    """The converted HF folder in the real cache (converted once, ~3 s; reused afterwards)."""
    from lsl_core.model.embedded import embedded_whisper_dir

    return embedded_whisper_dir()


@pytest.fixture(scope="session")
def asr(whisper_dir):
    from lsl_core.model.asr import WhisperASR

    return WhisperASR.from_pretrained(whisper_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="session")
def encoder(whisper_dir):
    from lsl_core.model.encoder import SpeechEncoder

    return SpeechEncoder.from_pretrained(whisper_dir, dtype=torch.float32, device="cpu")


def espeak(text: str, voice: str) -> np.ndarray:
    """Synthesize text with espeak-ng -> 16 kHz mono float32."""
    import io

    import soundfile as sf

    from lsl_core.data.audio import prepare_audio

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], check=True, capture_output=True).stdout
    a, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return prepare_audio(a, sr)


# ------------------------------------------------------------------ parser
def _ct2_string(s: str) -> bytes:
    b = s.encode() + b"\0"
    return struct.pack("<H", len(b)) + b


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str], version: int = 6) -> None:
    """Hand-built model.bin writer (the format as documented in docs/EMBEDDED_NOTES.md)."""
    codes = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3,
             np.dtype("float16"): 4}
    out = struct.pack("<I", version) + _ct2_string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, a in variables.items():
        out += _ct2_string(name) + struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
        out += struct.pack("<BI", codes[a.dtype], a.nbytes) + a.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(_ct2_string(k) + _ct2_string(v) for k, v in aliases.items())
    path.write_bytes(out)


def test_parser_reads_hand_built_file(tmp_path):
    w = np.arange(6, dtype=np.float16).reshape(2, 3)
    _write_ct2(tmp_path / "model.bin", {"a/weight": w, "a/num_heads": np.array(6, np.int16),
                                        "b": np.array([1.5, -2.0], np.float32)}, {"a/alias": "a/weight"})
    v = read_ct2_model(tmp_path)  # a folder is accepted too
    assert set(v) == {"a/weight", "a/num_heads", "b", "a/alias"}
    np.testing.assert_array_equal(v["a/weight"], w)
    assert v["a/weight"].dtype == np.float16 and v["a/alias"] is v["a/weight"]
    assert v["a/num_heads"].ndim == 0 and int(v["a/num_heads"]) == 6
    np.testing.assert_array_equal(v["b"], [1.5, -2.0])


def test_parser_rejects_truncated_and_unknown_versions(tmp_path):
    _write_ct2(tmp_path / "model.bin", {"a": np.ones(4, np.float32)}, {})
    data = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(data[:-3])
    with pytest.raises(ModelLoadError, match="truncated"):
        read_ct2_model(tmp_path / "model.bin")
    _write_ct2(tmp_path / "model.bin", {"a": np.ones(4, np.float32)}, {}, version=99)
    with pytest.raises(ModelLoadError, match="version 99"):
        read_ct2_model(tmp_path / "model.bin")
    with pytest.raises(ModelLoadError, match="not found"):
        read_ct2_model(tmp_path / "nowhere")


def test_embedded_model_bin_contents(ct2_vars):
    weights = {k: v for k, v in ct2_vars.items() if v.ndim > 0}
    assert len(ct2_vars) == 149  # 148 stored variables + the projection alias
    assert len(weights) == 140  # 139 stored weight tensors + the alias; 9 int settings (num_heads, activation...)
    assert ct2_vars["decoder/projection/weight"] is ct2_vars["decoder/embeddings/weight"]
    assert ct2_vars["decoder/embeddings/weight"].shape == (51864, 384)
    assert ct2_vars["decoder/embeddings/weight"].dtype == np.float16
    assert ct2_vars["encoder/conv1/weight"].shape == (384, 80, 3)
    assert ct2_vars["encoder/position_encodings/encodings"].shape == (1500, 384)
    assert ct2_vars["decoder/position_encodings/encodings"].shape == (448, 384)
    assert ct2_vars["encoder/layer_3/self_attention/linear_0/weight"].shape == (1152, 384)  # fused q|k|v
    assert ct2_vars["decoder/layer_3/attention/linear_1/weight"].shape == (768, 384)  # fused cross k|v
    assert int(ct2_vars["encoder/num_heads"]) == 6 and int(ct2_vars["decoder/num_heads"]) == 6


def test_hf_mapping_covers_every_parameter_once(ct2_vars):
    from transformers import WhisperForConditionalGeneration

    cfg = whisper_config_from_ct2(ct2_vars)
    assert (cfg.vocab_size, cfg.d_model, cfg.encoder_layers, cfg.decoder_layers) == (51864, 384, 4, 4)
    assert (cfg.encoder_attention_heads, cfg.encoder_ffn_dim, cfg.tie_word_embeddings) == (6, 1536, True)
    assert (cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id, cfg.decoder_start_token_id) == (50256, 50256,
                                                                                                   50257, 50257)
    state = ct2_to_hf_state_dict(ct2_vars, cfg)
    with torch.device("meta"):
        ref = WhisperForConditionalGeneration(cfg).state_dict()
    assert set(state) == set(ref) and len(state) == 168
    for k, v in state.items():
        assert v.dtype == torch.float32 and v.shape == ref[k].shape, k
    # the split of the fused tensors, spot-checked against the raw CT2 arrays
    qkv = ct2_vars["encoder/layer_2/self_attention/linear_0/weight"].astype(np.float32)
    np.testing.assert_array_equal(state["model.encoder.layers.2.self_attn.k_proj.weight"].numpy(), qkv[384:768])
    np.testing.assert_array_equal(state["model.encoder.layers.2.self_attn.v_proj.weight"].numpy(), qkv[768:])
    kv_b = ct2_vars["decoder/layer_1/attention/linear_1/bias"].astype(np.float32)
    np.testing.assert_array_equal(state["model.decoder.layers.1.encoder_attn.v_proj.bias"].numpy(), kv_b[384:])
    # the dropped key biases are zero in this export (and would be a softmax no-op anyway)
    assert not np.any(ct2_vars["encoder/layer_0/self_attention/linear_0/bias"][384:768])


def test_hf_mapping_is_strict(ct2_vars):
    broken = dict(ct2_vars)
    del broken["encoder/layer_1/ffn/linear_0/bias"]
    with pytest.raises(ModelLoadError, match="encoder/layer_1/ffn/linear_0/bias"):
        ct2_to_hf_state_dict(broken, whisper_config_from_ct2(ct2_vars))
    extra = dict(ct2_vars)
    extra["encoder/layer_9/ffn/linear_0/bias"] = np.zeros(1536, np.float16)
    with pytest.raises(ModelLoadError, match="non-contiguous|unused"):
        ct2_to_hf_state_dict(extra)
    misshapen = dict(ct2_vars)
    misshapen["encoder/layer_0/ffn/linear_1/bias"] = np.zeros(383, np.float16)
    with pytest.raises(ModelLoadError, match="shape mismatch"):
        ct2_to_hf_state_dict(misshapen, whisper_config_from_ct2(ct2_vars))


# ------------------------------------------------------------------ converted folder
def test_converted_folder_and_cache_reuse(whisper_dir):
    from lsl_core.model.embedded import embedded_whisper_dir

    for name in ("config.json", "model.safetensors", "generation_config.json", "preprocessor_config.json",
                 "tokenizer.json", "tokenizer_config.json", "SOURCE_DIGEST"):
        assert (whisper_dir / name).is_file(), name
    stamp = (whisper_dir / "model.safetensors").stat().st_mtime_ns
    assert embedded_whisper_dir() == whisper_dir
    assert (whisper_dir / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    gen = json.loads((whisper_dir / "generation_config.json").read_text())
    assert gen["no_timestamps_token_id"] == 50362 and gen["is_multilingual"] is False
    assert set(range(50363, 51864)) <= set(gen["suppress_tokens"])  # timestamps the tokenizer lacks
    pre = json.loads((whisper_dir / "preprocessor_config.json").read_text())
    assert (pre["feature_size"], pre["sampling_rate"], pre["n_fft"], pre["hop_length"], pre["chunk_length"]) == (
        80, 16000, 400, 160, 30)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(whisper_dir)
    ids = tok("How many players?", add_special_tokens=False).input_ids
    assert tok.decode(ids) == "How many players?"
    assert tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>", "<|endoftext|>"]) == [
        50257, 50362, 50256]


def _numpy_encoder(v: dict[str, np.ndarray], mel: np.ndarray) -> np.ndarray:
    """Independent float64 reference: Whisper's encoder straight from the CT2 arrays, mel [80, 3000] -> [1500, 384]."""
    from scipy.special import erf

    f = {k: a.astype(np.float64) for k, a in v.items() if a.ndim > 0 and k.startswith("encoder/")}
    gelu = lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))  # noqa: E731

    def conv(x, w, b, stride):  # x [C, T], w [O, C, 3], padding 1
        xp = np.pad(x, ((0, 0), (1, 1)))
        t_out = (x.shape[1] + 2 - 3) // stride + 1
        cols = np.stack([xp[:, k: k + stride * t_out: stride] for k in range(3)], axis=-1)  # [C, T', 3]
        return np.tensordot(w, cols, axes=([1, 2], [0, 2])) + b[:, None]  # [O, T']

    def ln(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * f[p + "/gamma"] + f[p + "/beta"]

    x = gelu(conv(mel.astype(np.float64), f["encoder/conv1/weight"], f["encoder/conv1/bias"], 1))
    x = gelu(conv(x, f["encoder/conv2/weight"], f["encoder/conv2/bias"], 2)).T  # [1500, 384]
    x = x + f["encoder/position_encodings/encodings"]
    heads, d = int(v["encoder/num_heads"]), x.shape[1]
    for i in range(4):
        p = f"encoder/layer_{i}"
        h = ln(x, p + "/self_attention/layer_norm")
        qkv = h @ f[p + "/self_attention/linear_0/weight"].T + f[p + "/self_attention/linear_0/bias"]
        q, k, val = (m.reshape(-1, heads, d // heads).transpose(1, 0, 2) for m in np.split(qkv, 3, axis=1))
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d // heads)  # [H, T, T]
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ val).transpose(1, 0, 2).reshape(-1, d)
        x = x + o @ f[p + "/self_attention/linear_1/weight"].T + f[p + "/self_attention/linear_1/bias"]
        h = ln(x, p + "/ffn/layer_norm")
        h = gelu(h @ f[p + "/ffn/linear_0/weight"].T + f[p + "/ffn/linear_0/bias"])
        x = x + h @ f[p + "/ffn/linear_1/weight"].T + f[p + "/ffn/linear_1/bias"]
    return ln(x, "encoder/layer_norm")


def test_encoder_matches_numpy_reference(encoder, ct2_vars):
    from conftest import tone

    audio = tone(1.3)
    feats = encoder.features(audio)  # [1, 80, 3000]
    assert feats.shape == (1, 80, 3000) and feats.dtype == torch.float32
    with torch.no_grad():
        got = encoder(feats)[0].numpy()  # [1500, 384]
    ref = _numpy_encoder(ct2_vars, feats[0].numpy())
    err = np.abs(got - ref).max()
    assert err < 2e-3 * max(1.0, np.abs(ref).max()), err
    cos = (got * ref).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
    assert cos.min() > 0.99999


def test_encoder_shapes_and_valid_frames(encoder):
    from conftest import tone

    assert encoder.output_dim == 384 and encoder.frame_seconds == 0.02
    assert [encoder.n_valid_frames(n) for n in (1, 320, 321, 16_000, 480_000, 10**7)] == [1, 1, 2, 50, 1500, 1500]
    audio = tone(1.3)
    enc = encoder.encode(audio)
    assert enc.shape == (65, 384)  # ceil(20800 / 320)
    with torch.no_grad():
        full = encoder(encoder.features(audio))
    torch.testing.assert_close(enc, full[0, :65], rtol=0, atol=0)  # trimmed from the padded 30 s run
    with pytest.raises(AudioError, match="even M <= 3000"):
        encoder(torch.zeros(1, 80, 3002))  # longer than Whisper's 30 s window
    with pytest.raises(AudioError, match="even M"):
        encoder(torch.zeros(1, 80, 1001))  # odd: conv2 has stride 2
    assert encoder(torch.zeros(1, 80, 1000)).shape == (1, 500, 384)  # a "clip" window is valid
    with pytest.raises(AudioError, match="30 s"):
        encoder.features(np.zeros(31 * 16_000, np.float32))


def test_encoder_offline_unknown_id_and_embedded_alias(whisper_dir, monkeypatch):
    from lsl_core.model.encoder import SpeechEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="Could not load speech encoder 'no-such-org/whisper-nope' offline"):
        SpeechEncoder.from_pretrained("no-such-org/whisper-nope")
    enc = SpeechEncoder.from_pretrained("embedded:whisper-tiny.en")
    assert enc.output_dim == 384


def test_normalize_transcript():
    assert normalize_transcript(" What is the capital city of France? ") == "what is the capital city of france"
    assert normalize_transcript("Who's  there -- in 1,000 B.C.?") == "whos there in 1000 b c"
    assert normalize_transcript("It costs 3.5 dollars.") == "it costs 3.5 dollars"


# ------------------------------------------------------------------ end to end: speech -> transcript
@pytest.mark.parametrize("voice", ["en-gb", "en-gb-x-rp"])
def test_converted_model_transcribes_espeak_speech(asr, voice):
    question = "How many players are on a soccer team?"
    text = asr.transcribe(espeak(question, voice))
    assert normalize_transcript(text) == normalize_transcript(question), text
    if voice == "en-gb":
        assert asr.transcribe(espeak(question, voice)) == text  # greedy: deterministic


def test_converted_model_transcribes_shipped_sdqa_clip(asr):
    if not MINI_MANIFEST.is_file():
        pytest.skip(f"{MINI_MANIFEST.relative_to(ROOT)} is not built yet (the sd-qa-mini asset ships it)")
    from lsl_core.data.audio import load_audio_file, prepare_audio

    rows = [json.loads(line) for line in MINI_MANIFEST.read_text().splitlines() if line.strip()]
    row = next((r for r in rows if r["id"] == MINI_CLIP_ID), None)
    assert row is not None, f"clip {MINI_CLIP_ID} is missing from {MINI_MANIFEST}"
    assert row["voice"] == "en-gb"
    audio = prepare_audio(*load_audio_file(MINI_MANIFEST.parent / row["audio"]))
    assert normalize_transcript(asr.transcribe(audio)) == normalize_transcript(row["question"])


def test_clip_over_30_s_is_transcribed_window_by_window(asr):
    """40 s: a question in the first 30 s window, spoken again (slower voice) in the second; both are
    transcribed, in order (the question tiny.en transcribes word for word above)."""
    first = second = "How many players are on a soccer team?"
    clip = np.zeros(40 * 16_000, np.float32)
    a, b = espeak(first, "en-gb"), espeak(second, "en-gb-x-rp")
    clip[16_000 : 16_000 + a.size] = a
    clip[31 * 16_000 : 31 * 16_000 + b.size] = b
    text = normalize_transcript(asr.transcribe(clip))
    assert text == f"{normalize_transcript(first)} {normalize_transcript(second)}", text
