"""Voxtral (mistralai/Voxtral-Mini-3B-2507, Voxtral-Small-24B-2507): Whisper-large-v3 encoder -> 4-frame
stacking MLP projector -> Ministral/Mistral LLM.

Prompt (mistral_common's instruct format; Voxtral ships no Jinja template and its tokenizer is
mistral_common's Tekken, so the token ids are assembled here from the special tokens by name):

    speech  <s> [SYSTEM_PROMPT] system [/SYSTEM_PROMPT] [INST] [BEGIN_AUDIO] [AUDIO]*Ts instruction [/INST]
    text    <s> [SYSTEM_PROMPT] system [/SYSTEM_PROMPT] [INST] question [/INST]
    ASR     <s> [INST] [BEGIN_AUDIO] [AUDIO]*Ts [/INST] lang:en [TRANSCRIBE]     (transcription mode)

(the system block only when the manifest gives a system prompt; Voxtral's card uses none, so the
default here is none). Speech span: the [AUDIO] run; [BEGIN_AUDIO] is template.

Frame rate after the projector: mel hop 10 ms -> conv stride 2 (20 ms) -> 4 frames stacked by the
projector -> **80 ms per position (12.5 Hz)**. The audio is padded with silence to a multiple of
30 s (480 000 samples) before the encoder, so Ts = 375 per started 30 s chunk: a 3 s question has 375
positions, of which the last ~340 encode padding. They are part of what the model reads, so they
stay in the span (the frame times mark where the clip ends: frame_times[i] > clip length).
"""

from __future__ import annotations

import math

import numpy as np

from lsl_core.model.families.base import Family

HOP = 160  # mel hop (10 ms)


def chunk_samples(model) -> int:
    """Samples per encoder window: 2 x max_source_positions mel frames (3000 frames = 30 s on the hub model)."""
    return 2 * model.config.audio_config.max_source_positions * HOP


def tokens_per_chunk(model) -> int:
    """Projector outputs per window: max_source_positions / frames stacked (1500 / 4 = 375 on the hub model)."""
    a = model.config.audio_config
    return a.max_source_positions // (a.intermediate_size // a.hidden_size)


class Voxtral(Family):
    name = "voxtral"
    hf_class = "VoxtralForConditionalGeneration"
    model_types = ("voxtral",)
    hub_ids = ("mistralai/Voxtral-Mini-3B-2507", "mistralai/Voxtral-Small-24B-2507")
    frame_seconds = 0.08
    max_seconds = 30.0 * 40  # the processor chunks long audio; 20 min keeps Ts manageable
    audio_token = "[AUDIO]"
    transcribe_instruction = ""
    default_system = ""  # Voxtral's model card uses no system prompt
    language = "en"

    def _special(self, tok, name: str) -> int:
        from lsl_core.errors import ModelLoadError

        i = tok.convert_tokens_to_ids(name)
        if i is None or i == getattr(tok, "unk_token_id", None):
            raise ModelLoadError(f"The Voxtral tokenizer has no special token {name}; load the checkpoint's own "
                                 "tokenizer (tekken.json needs `pip install mistral-common`).")
        return int(i)

    def _enc(self, tok, text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False).input_ids) if text else []

    def _head(self, tok, system: str | None) -> list[int]:
        ids = [self._special(tok, "<s>")]
        if system:
            ids += [self._special(tok, "[SYSTEM_PROMPT]"), *self._enc(tok, system),
                    self._special(tok, "[/SYSTEM_PROMPT]")]
        return ids + [self._special(tok, "[INST]")]

    def speech_prompt_ids(self, tok, system, instruction=""):
        prefix = [*self._head(tok, system), self._special(tok, "[BEGIN_AUDIO]")]
        return prefix, [*self._enc(tok, instruction), self._special(tok, "[/INST]")]

    def text_prompt_ids(self, tok, system):
        return self._head(tok, system), [self._special(tok, "[/INST]")]

    def transcription_prompt_ids(self, tok, system):
        prefix = [self._special(tok, "<s>"), self._special(tok, "[INST]"), self._special(tok, "[BEGIN_AUDIO]")]
        return prefix, [self._special(tok, "[/INST]"), *self._enc(tok, f"lang:{self.language}"),
                        self._special(tok, "[TRANSCRIBE]")]

    def num_audio_tokens(self, model, n_samples: int) -> int:
        return math.ceil(n_samples / chunk_samples(model)) * tokens_per_chunk(model)

    def language_model(self, model):
        return model.model.language_model

    def audio_embeddings(self, model, feature_extractor, wav16k):
        """Pad to 30 s chunks, log-mel per chunk [n, 128, 3000], VoxtralModel.get_audio_features -> [375 n, d]."""
        size = chunk_samples(model)
        n = math.ceil(wav16k.shape[0] / size)
        padded = np.zeros(n * size, dtype=np.float32)
        padded[: wav16k.shape[0]] = wav16k
        feats = feature_extractor(padded, sampling_rate=16_000, padding=True, truncation=False, return_tensors="pt",
                                  pad_to_multiple_of=size)["input_features"]  # [1, 128, 3000 n]
        feats = feats.reshape(feature_extractor.feature_size, -1, size // HOP).transpose(0, 1)  # [n, 128, 3000]
        tower = model.model.audio_tower
        out = model.get_audio_features(feats.to(tower.device, tower.dtype), return_dict=True)
        return out.pooler_output  # [375 n, d]
