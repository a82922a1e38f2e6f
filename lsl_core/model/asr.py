"""Whisper ASR: the encoder's own decoder transcribes a clip (cascade baseline, conversion check).

Greedy, English, no timestamps, at most 128 new tokens: deterministic for a given clip. Timestamp
tokens (ids above <|notimestamps|>) are always suppressed: the embedded tokenizer cannot decode
them, and a transcript never needs them.
"""

from __future__ import annotations

import copy
import logging
import re
import unicodedata
from pathlib import Path

import numpy as np
import torch

from lsl_core.errors import ModelLoadError
from lsl_core.model.hub import serialized_load
from lsl_core.model.encoder import SpeechEncoder, _as_dtype, _safetensors_files, resolve_whisper_folder

MAX_NEW_TOKENS = 128


def normalize_transcript(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace; digits stay digits ("1,000" -> "1000", "3.5" kept).

    >>> normalize_transcript(" What is the capital city of France? ")
    'what is the capital city of france'
    """
    t = unicodedata.normalize("NFKC", text).lower()
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # thousands separators
    t = re.sub(r"['\u2019`]", "", t)  # don't -> dont
    t = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", t)  # periods, except the decimal point in 3.5
    t = re.sub(r"[^\w.\s]|_", " ", t)
    return " ".join(t.split())


class WhisperASR:
    """WhisperForConditionalGeneration + feature extractor + tokenizer, for greedy transcription."""

    def __init__(self, model, encoder_front: SpeechEncoder, tokenizer, name: str = "") -> None:
        self.model = model.eval()
        self.front = encoder_front  # used only for its feature extractor (same padded 30 s features)
        self.tokenizer = tokenizer
        self.name = name
        gen = copy.deepcopy(model.generation_config)
        vocab = int(model.config.vocab_size)
        no_ts = getattr(gen, "no_timestamps_token_id", None)
        first_timestamp = no_ts + 1 if no_ts is not None else len(tokenizer)
        suppress = set(gen.suppress_tokens or []) | set(range(min(first_timestamp, len(tokenizer)), vocab))
        gen.suppress_tokens = sorted(suppress)
        gen.return_timestamps = False
        gen.do_sample, gen.num_beams = False, 1
        gen.max_new_tokens = MAX_NEW_TOKENS
        gen.max_length = None  # max_new_tokens rules; avoids the "both set" warning
        self.generation_config = gen

    @classmethod
    @serialized_load
    def from_pretrained(cls, path_or_id: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype | str | None = torch.float32,
                        local_files_only: bool | None = None) -> "WhisperASR":
        """Full Whisper model from a local folder, a cached hub id, or "embedded:whisper-tiny.en"."""
        from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

        what = "Whisper ASR model"
        folder = resolve_whisper_folder(path_or_id, local_files_only, what)
        _safetensors_files(folder, what)  # refuse pickled-only folders with a clear message
        try:
            model = WhisperForConditionalGeneration.from_pretrained(folder, dtype=_as_dtype(dtype),
                                                                    use_safetensors=True, local_files_only=True)
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            fe = WhisperFeatureExtractor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelLoadError(
                f"Could not load {what} from {folder}: {str(exc).splitlines()[0]} "
                "The folder needs config.json, model.safetensors, a tokenizer and preprocessor_config.json."
            ) from None
        model = model.to(torch.device(device)).eval()
        front = SpeechEncoder(model.get_encoder(), fe, name=str(path_or_id))
        return cls(model, front, tok, name=str(path_or_id))

    @torch.no_grad()
    def transcribe(self, audio_16k: np.ndarray, language: str = "en") -> str:
        """16 kHz mono audio [n] -> transcript (greedy, no timestamps, <= 128 tokens per 30 s window).

        A clip longer than 30 s is transcribed window by window (SpeechEncoder.windows) and the texts joined.
        """
        parts = self.front.windows(audio_16k)
        if len(parts) > 1:
            return " ".join(t for t in (self.transcribe(p, language) for p in parts) if t)
        feats = self.front.features(audio_16k)  # [1, n_mels, 3000]
        kwargs = {}
        if getattr(self.generation_config, "is_multilingual", False):
            kwargs = {"language": language, "task": "transcribe"}
        quiet = logging.getLogger("transformers")  # generate() warns about its own internal kwargs on every call
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            gen = copy.deepcopy(self.generation_config)
            # never ask for more tokens than the decoder has positions (small/tiny Whisper configs)
            room = int(self.model.config.max_target_positions) - 4  # start/lang/task/notimestamps prompt
            gen.max_new_tokens = max(1, min(int(gen.max_new_tokens), room))
            try:
                ids = self.model.generate(feats, generation_config=gen, **kwargs)
            except IndexError:  # transformers' Whisper generate indexes the last token of an empty output
                return ""  # (a decoder whose first token is end-of-text: nothing was heard)
        finally:
            quiet.setLevel(level)
        return self.tokenizer.decode(ids[0], skip_special_tokens=True).strip()
