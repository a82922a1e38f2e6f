"""The speech encoder: a transformers WhisperEncoder plus its log-mel feature extractor.

Two window conventions (a checkpoint names its own in the manifest's `encoder_window`; training,
analysis and generation of that checkpoint all use it):

- "padded" (Whisper's own): every clip becomes the standard padded 30 s log-mel input
  [1, n_mels, 3000]; the encoder returns 1500 frames of 20 ms and we keep the frames covering
  real audio, Te = min(ceil(num_samples / 320), 1500).
- "clip": the same log-mel features cut to the real audio + CLIP_PAD_S of the padding
  [1, n_mels, 2*(Te + 50)], run through the same layers with the positional embeddings of those
  positions only; the first Te frames are kept. 8-16x faster on short questions; its states differ
  from the padded run (frame cosine ~0.98, see docs/EMBEDDED_NOTES.md), so it is a convention of
  its own, never mixed with "padded" for one checkpoint.

Log-mel features are always computed on the padded 30 s window, so both conventions see
identical features on the real-audio part.

Clips longer than one window (30 s) are cut into consecutive 30 s windows, each encoded on its own
under the checkpoint's convention, and the real-audio frames of the windows are concatenated (as
Voxtral's encoder does): frame i still starts at i x 20 ms, but frames at a window edge see no
context across it. Whisper itself never sees more than 30 s at once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lsl_core.errors import AudioError, ModelLoadError
from lsl_core.model.hub import allow_download, serialized_load

_ENCODER_PREFIXES = ("model.encoder.", "encoder.", "")  # WhisperForConditionalGeneration, WhisperModel, bare
WINDOWS = ("padded", "clip")  # encoder window conventions (module docstring)
CLIP_PAD_S = 1.0  # "clip" window: seconds of the padding kept after the real audio


def _as_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, str):
        dt = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(dt, torch.dtype):
            raise ModelLoadError(f"Unknown dtype '{dtype}'. Use float32, bfloat16 or float16.")
        return dt
    return dtype


def resolve_whisper_folder(path_or_id: str | Path, local_files_only: bool | None = None,
                           what: str = "speech encoder") -> Path:
    """'embedded:whisper-tiny.en' | local folder | hub id (HF cache) -> local folder with config.json.

    local_files_only=None follows the project's rule: offline unless LSL_ALLOW_DOWNLOAD=1.
    """
    ref = str(path_or_id)
    if ref.startswith("embedded:"):
        from lsl_core.model.embedded import resolve_embedded

        return resolve_embedded(ref)
    p = Path(ref).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelLoadError(f"The {what} folder {p} has no config.json. Point at a transformers Whisper folder.")
        return p
    offline = (not allow_download()) if local_files_only is None else local_files_only
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(ref, local_files_only=offline,
                                        allow_patterns=["*.json", "*.safetensors", "*.txt", "*.tiktoken"]))
    except Exception as exc:  # HFValidationError, LocalEntryNotFoundError, network errors...
        if offline:
            raise ModelLoadError(
                f"Could not load {what} '{ref}' offline: not a local folder and not in the HF cache. "
                "Pass a local path or download it first (HF_HUB_OFFLINE is on)."
            ) from None
        raise ModelLoadError(f"Could not download {what} '{ref}': {str(exc).splitlines()[0]}") from None
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"The {what} '{ref}' in the HF cache has no config.json; download it completely.")
    return folder


def _safetensors_files(folder: Path, what: str) -> list[Path]:
    """model.safetensors, or the shards named by model.safetensors.index.json. Never pickles."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / s for s in shards]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise ModelLoadError(
        f"The {what} folder {folder} has no model.safetensors; pickled weights (*.bin) are not loaded. "
        "Re-save the model with save_pretrained(safe_serialization=True)."
    )


def _load_encoder_state(folder: Path, expected: dict[str, torch.Size], what: str) -> dict[str, torch.Tensor]:
    """Read only the encoder's tensors from the folder's safetensors (the decoder stays on disk)."""
    from safetensors import safe_open

    files = _safetensors_files(folder, what)
    keys_by_file = {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            keys_by_file[f] = list(h.keys())
    all_keys = {k for ks in keys_by_file.values() for k in ks}
    prefix = next((p for p in _ENCODER_PREFIXES if f"{p}conv1.weight" in all_keys), None)
    if prefix is None:
        raise ModelLoadError(f"The {what} at {folder} has no Whisper encoder weights (no '*conv1.weight').")
    state: dict[str, torch.Tensor] = {}
    for f, keys in keys_by_file.items():
        wanted = [k for k in keys if k.startswith(prefix) and k[len(prefix):] in expected]
        if wanted:
            with safe_open(str(f), framework="pt") as h:
                for k in wanted:
                    state[k[len(prefix):]] = h.get_tensor(k)
    missing = sorted(set(expected) - set(state) - {"embed_positions.weight"})
    if missing:
        raise ModelLoadError(f"The {what} at {folder} lacks encoder weights {missing[:5]}; the checkpoint is incomplete.")
    bad = [k for k, v in state.items() if v.shape != expected[k]]
    if bad:
        raise ModelLoadError(f"The {what} at {folder}: weights {bad[:3]} do not match its config.json shapes.")
    return state


class SpeechEncoder(nn.Module):
    """Whisper encoder: 16 kHz audio -> padded 30 s log-mel [1, n_mels, 3000] -> states [1, 1500, d_enc].

    Frames are 20 ms (hop 160 samples x conv stride 2 = 320 samples); `encode` trims the padded
    output to the frames covering real audio.
    """

    frame_seconds: float = 0.02

    def __init__(self, encoder: nn.Module, feature_extractor, name: str = "", window: str = "padded") -> None:
        super().__init__()
        if window not in WINDOWS:
            raise ModelLoadError(f"Unknown encoder window {window!r}; use one of {WINDOWS} (manifest field 'encoder_window').")
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        self.name = name
        self.window = window
        fe = feature_extractor
        self.samples_per_frame = int(fe.hop_length) * 2  # conv2 has stride 2
        self.max_frames = int(encoder.config.max_source_positions)
        self.n_input_frames = int(fe.nb_max_frames)  # 3000 for a 30 s window
        assert self.n_input_frames == 2 * self.max_frames, "feature window and encoder positions disagree"
        self.frame_seconds = self.samples_per_frame / float(fe.sampling_rate)

    # ------------------------------------------------------------------ loading
    @classmethod
    @serialized_load
    def from_pretrained(cls, path_or_id: str | Path, dtype: torch.dtype | str | None = torch.float32,
                        device: str | torch.device = "cpu", local_files_only: bool | None = None,
                        window: str = "padded") -> "SpeechEncoder":
        """Load the encoder half of a Whisper checkpoint (safetensors only).

        path_or_id: local folder, hub id already in the HF cache, or "embedded:whisper-tiny.en".
        local_files_only: None = offline unless LSL_ALLOW_DOWNLOAD=1 (the project default).
        window: "padded" (30 s, Whisper's own) or "clip" (real length + CLIP_PAD_S); see the module docstring.
        """
        from transformers import WhisperConfig, WhisperFeatureExtractor
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        what = "speech encoder"
        folder = resolve_whisper_folder(path_or_id, local_files_only, what)
        try:
            config = WhisperConfig.from_pretrained(folder)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"The {what} at {folder} has an unusable config.json ({exc}).") from None
        if config.model_type != "whisper":
            raise ModelLoadError(f"The {what} at {folder} is a '{config.model_type}' model, not Whisper.")
        if (folder / "preprocessor_config.json").is_file():
            fe = WhisperFeatureExtractor.from_pretrained(folder)
        else:  # e.g. a bare WhisperModel save: standard Whisper front end with the config's mel bins
            fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        if fe.feature_size != config.num_mel_bins:
            raise ModelLoadError(
                f"The {what} at {folder}: feature extractor has {fe.feature_size} mel bins but the model "
                f"expects {config.num_mel_bins}. Fix preprocessor_config.json."
            )
        with torch.device("meta"):
            enc = WhisperEncoder(config)
        expected = {k: v.shape for k, v in enc.state_dict().items()}
        state = _load_encoder_state(folder, expected, what)
        if "embed_positions.weight" not in state:  # some saves drop the fixed sinusoids
            from transformers.models.whisper.modeling_whisper import sinusoids

            state["embed_positions.weight"] = sinusoids(*expected["embed_positions.weight"])
        enc.load_state_dict(state, strict=True, assign=True)
        enc = enc.to(device=torch.device(device), dtype=_as_dtype(dtype)).eval()
        return cls(enc, fe, name=str(path_or_id), window=window)

    # ------------------------------------------------------------------ shapes
    @property
    def output_dim(self) -> int:
        """d_enc: width of the encoder states (384 for Whisper tiny)."""
        return int(self.encoder.config.d_model)

    @property
    def device(self) -> torch.device:
        return self.encoder.conv1.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.encoder.conv1.weight.dtype

    def n_valid_frames(self, num_samples: int) -> int:
        """Encoder frames (20 ms) that cover real audio: ceil(num_samples / 320), at most 1500."""
        return min(math.ceil(int(num_samples) / self.samples_per_frame), self.max_frames)

    # ------------------------------------------------------------------ compute
    def features(self, audio_16k: np.ndarray, frames: int | None = None) -> torch.Tensor:
        """16 kHz mono audio [n] -> padded 30 s log-mel [1, n_mels, 3000] on the encoder's device/dtype.

        frames: only the first `frames` log-mel frames [1, n_mels, frames], computed from the audio zero-padded
        to frames x hop samples instead of 30 s. They equal the 30 s features' first frames whenever those
        frames end in the padding (input_frames keeps >= 1 s of it): the frames past them hold zeros, which the
        STFT's reflection at the cut reproduces, and zeros (log-mel -10) never raise the window maximum that the
        log-mel is clipped against (8 below it), real audio or an all-zero clip alike. ~8x less STFT for a 3 s
        clip under the "clip" window.
        """
        a = np.asarray(audio_16k, dtype=np.float32)
        if a.ndim != 1 or a.size == 0:
            raise AudioError(f"The speech encoder needs 1-D 16 kHz audio, got shape {a.shape}. Use prepare_audio().")
        if a.size > self.feature_extractor.n_samples:
            raise AudioError(
                f"Audio is {a.size / self.feature_extractor.sampling_rate:.1f} s; the encoder sees at most "
                f"{self.feature_extractor.chunk_length} s. Trim the clip."
            )
        fe = self.feature_extractor
        cut = frames is not None and frames < self.n_input_frames and frames * fe.hop_length >= a.size
        feats = fe(a, sampling_rate=fe.sampling_rate, padding="max_length", return_tensors="pt",
                   max_length=frames * fe.hop_length if cut else None).input_features  # [1, n_mels, frames or 3000]
        return feats.to(device=self.device, dtype=self.dtype)

    def input_frames(self, num_samples: int) -> int:
        """Log-mel frames the encoder reads for a clip: 3000 ("padded"), or 2 x (Te + CLIP_PAD_S/20 ms)."""
        if self.window == "padded":
            return self.n_input_frames
        pad = round(CLIP_PAD_S / self.frame_seconds)  # encoder frames of padding kept
        return min(2 * (self.n_valid_frames(num_samples) + pad), self.n_input_frames)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Log-mel features [B, n_mels, M] (M even, <= 3000) -> encoder states [B, M/2, d_enc].

        The WhisperEncoder layers run by hand so that M < 3000 (the "clip" window) uses the positional
        embeddings of its own positions; for M = 3000 this is exactly WhisperEncoder.forward.
        """
        M = features.shape[-1] if features.ndim == 3 else -1
        if features.ndim != 3 or M % 2 or not 0 < M <= self.n_input_frames:
            raise AudioError(
                f"Encoder input must be [B, n_mels, M] with even M <= {self.n_input_frames}, got {tuple(features.shape)}. "
                "Build it with SpeechEncoder.features()."
            )
        enc = self.encoder
        x = features.to(device=self.device, dtype=self.dtype)  # [B, n_mels, M]
        x = nn.functional.gelu(enc.conv1(x))  # [B, d_enc, M]
        x = nn.functional.gelu(enc.conv2(x))  # [B, d_enc, M/2]
        x = x.permute(0, 2, 1)  # [B, M/2, d_enc]
        x = x + enc.embed_positions.weight[: x.shape[1]]  # [B, M/2, d_enc]
        x = nn.functional.dropout(x, p=enc.dropout, training=enc.training)
        for layer in enc.layers:
            x = layer(x, None)
        return enc.layer_norm(x)  # [B, M/2, d_enc]

    def windows(self, audio_16k: np.ndarray) -> list[np.ndarray]:
        """Consecutive 30 s windows of a clip (one for a clip of at most 30 s; the last may be shorter)."""
        a = np.asarray(audio_16k, dtype=np.float32)
        n = int(self.feature_extractor.n_samples)  # samples per window (480 000)
        return [a[s : s + n] for s in range(0, max(1, a.size), n)]

    def inputs(self, audio_16k: np.ndarray) -> list[tuple[torch.Tensor, int]]:
        """The encoder's inputs of a clip, per 30 s window: (log-mel [1, n_mels, M], valid frames).

        The CPU half of `encode` (no weights touched): training runs it on worker threads ahead of the
        encoder (experiments/train/corpus.py), so that the STFT overlaps the forward passes.
        """
        out = []
        for part in self.windows(audio_16k):
            m = self.input_frames(len(part))  # [1, n_mels, M]: 3000, or the clip's frames + the pad
            out.append((self.features(part, m)[..., :m], self.n_valid_frames(len(part))))
        return out

    def cpu_half(self) -> "EncoderInputs":
        """This encoder's `inputs` without its weights, on the CPU in float32: picklable, for worker processes."""
        return EncoderInputs(self)

    @torch.no_grad()
    def encode_inputs(self, inputs: list[tuple[torch.Tensor, int]]) -> torch.Tensor:
        """`inputs(audio)` -> states of the real-audio frames [Te, d_enc], windows concatenated in time order."""
        return torch.cat([self.forward(feats)[0, :n] for feats, n in inputs])  # [Te, d_enc]

    @torch.no_grad()
    def encode_inputs_batch(self, inputs: list[list[tuple[torch.Tensor, int]]], batch: int) -> list[torch.Tensor]:
        """encode_inputs of many clips, [Te_i, d_enc] each, in order: clips of one window and the same input length M
        go through the encoder together, up to `batch` at a time (the forward of a clip reads no other clip: equal
        to one by one up to float rounding, as a batch of rows may take other matmul kernels); longer clips one by
        one. What it saves is the forward's fixed cost (Python and kernel launches: ~7 ms of a forward on a 2-core
        CPU even for a near-empty input), expected to be most of a short clip's on a GPU; on a CPU the compute
        dominates."""
        out: list[torch.Tensor | None] = [None] * len(inputs)
        groups: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            if len(x) == 1:
                groups.setdefault(x[0][0].shape[-1], []).append(i)
            else:
                out[i] = self.encode_inputs(x)
        for members in groups.values():
            for k in range(0, len(members), batch):
                part = members[k:k + batch]
                states = self.forward(torch.cat([inputs[i][0][0] for i in part]))  # [b, M/2, d_enc]
                for row, i in enumerate(part):
                    out[i] = states[row, : inputs[i][0][1]]  # [Te_i, d_enc]
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def encode(self, audio_16k: np.ndarray) -> torch.Tensor:
        """16 kHz audio [n] -> states of the real-audio frames [Te, d_enc], Te = ceil(n / 320).

        Up to 30 s: one window, Te = n_valid_frames(n). Longer: window by window (module docstring),
        each under this encoder's window convention; frames concatenated in time order.
        """
        return self.encode_inputs(self.inputs(audio_16k))


class EncoderInputs:
    """The CPU half of a SpeechEncoder: `inputs(audio)` by the very same methods, log-mel [1, n_mels, M] in float32
    on the CPU, with no weights (small and picklable: training's worker processes hold one each). Moved to the
    encoder's device and dtype they equal its own `inputs` (`features` ends in that same move)."""

    windows = SpeechEncoder.windows
    input_frames = SpeechEncoder.input_frames
    n_valid_frames = SpeechEncoder.n_valid_frames
    features = SpeechEncoder.features
    inputs = SpeechEncoder.inputs
    device = torch.device("cpu")
    dtype = torch.float32

    def __init__(self, enc: SpeechEncoder) -> None:
        self.feature_extractor = enc.feature_extractor
        self.window = enc.window
        self.samples_per_frame = enc.samples_per_frame
        self.max_frames = enc.max_frames
        self.n_input_frames = enc.n_input_frames
        self.frame_seconds = enc.frame_seconds

    def __getstate__(self) -> dict:
        """Pickled small (~1 KB): the feature extractor as its config, its mel filters rebuilt from it on load. A
        spawned worker reads its start-up pickle only as it imports the classes named in it; a pickle over a pipe's
        64 KB (the filters alone are 128 KB) holds the parent until then, which made the workers start one by one."""
        fe = self.feature_extractor
        return {**self.__dict__, "feature_extractor": (type(fe), fe.to_dict())}

    def __setstate__(self, state: dict) -> None:
        cls, config = state["feature_extractor"]
        self.__dict__.update({**state, "feature_extractor": cls.from_dict(config)})
