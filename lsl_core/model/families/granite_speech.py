"""Granite-speech (ibm-granite/granite-speech-3.3-2b, -8b): conformer CTC encoder -> windowed Q-Former
projector -> Granite LLM, with an audio-only LoRA on the LLM.

Chat template: the checkpoint's Granite template; the audio placeholder `<|audio|>` is written into
the user message text (`"<|audio|>" + instruction`), as on the model card. The built-in fallback below
is the Granite 3 role format used when a folder carries no template.

Speech span: <|audio|> repeated once per projector output, filled by `masked_scatter`. Frame rate:
log-mel hop 10 ms, two frames stacked (20 ms per encoder frame); the Q-Former reads windows of
`window_size` = 15 encoder frames (300 ms) and emits window_size / downsample_rate = 3 queries each,
so **one position per downsample_rate x 20 ms = 100 ms (10 Hz)**; Ts = ceil(T_enc / 15) * 3 with
T_enc = (n // 160 + 1) // 2 - the last window is padded, so Ts rounds up to 300 ms.

Features: GraniteSpeechFeatureExtractor needs torchaudio, which has no build for this torch; the same
log-mel (torchaudio.transforms.MelSpectrogram defaults: periodic Hann window, power 2, center with
reflect padding, HTK mel scale, no filter norm) is computed here with torch.stft and transformers'
mel_filter_bank (tests/test_families.py checks it against transformers' numpy spectrogram).

Audio LoRA: the hub checkpoints carry a peft adapter the model enables only when audio is present
(GraniteSpeechForConditionalGeneration.generate toggles it on `input_features`). Prompts here are
inputs_embeds, so this family enables the adapter for speech prompts and disables it for text prompts
itself (FamilyLSLM wraps forward and generate in `modality`), and `generate` is the plain
GenerationMixin one so it does not switch the adapter off for an inputs_embeds speech prompt.
"""

from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import numpy as np
import torch

from lsl_core.model.families.base import ChatTemplateFamily

GRANITE_TEMPLATE = (
    "{% for message in messages %}"
    "<|start_of_role|>{{ message['role'] }}<|end_of_role|>{{ message['content'] }}<|end_of_text|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}"
)
N_FFT, WIN, HOP = 512, 400, 160


def granite_log_mel(wav16k: np.ndarray, n_mels: int = 80) -> torch.Tensor:
    """The Granite-speech encoder input: [1, T_enc, 2 n_mels] (two 10 ms log-mel frames stacked)."""
    from transformers.audio_utils import mel_filter_bank

    x = torch.from_numpy(np.ascontiguousarray(wav16k, dtype=np.float32))
    spec = torch.stft(x, N_FFT, hop_length=HOP, win_length=WIN, window=torch.hann_window(WIN), center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True).abs() ** 2  # [257, F]
    fb = torch.from_numpy(mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                                          max_frequency=8000.0, sampling_rate=16_000, norm=None,
                                          mel_scale="htk")).float()  # [257, n_mels]
    logmel = (spec.T @ fb).clamp_min(1e-10).log10()  # [F, n_mels]
    logmel = torch.maximum(logmel, logmel.max() - 8.0) / 4 + 1
    if logmel.shape[0] % 2 == 1:
        logmel = logmel[:-1]
    return logmel.reshape(1, -1, 2 * n_mels)  # [1, F/2, 2 n_mels]


class GraniteSpeech(ChatTemplateFamily):
    name = "granite-speech"
    hf_class = "GraniteSpeechForConditionalGeneration"
    model_types = ("granite_speech",)
    hub_ids = ("ibm-granite/granite-speech-3.3-2b", "ibm-granite/granite-speech-3.3-8b")
    frame_seconds = 0.1
    max_seconds = 600.0
    audio_token = "<|audio|>"
    transcribe_instruction = "can you transcribe the speech into a written format?"
    CHAT_TEMPLATE = GRANITE_TEMPLATE

    def load_processor(self, ref, *, local_only):
        """The tokenizer; the features are computed here (no torchaudio needed), n_mels from the config."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(ref, local_files_only=local_only), None

    def load_model(self, ref, config, dtype, device, *, local_only, device_map):
        model = super().load_model(ref, config, dtype, device, local_only=local_only, device_map=device_map)
        from transformers import GenerationMixin

        model.generate = functools.partial(GenerationMixin.generate, model)  # no adapter toggling on input_features
        if getattr(model, "_hf_peft_config_loaded", False):
            model.enable_adapters()  # default state: speech (interventions generate speech prompts only)
        return model

    def speech_content(self, instruction: str):
        return self.audio_token + instruction

    def num_audio_tokens(self, model, n_samples: int) -> int:
        window, down = model.config.window_size, model.config.downsample_rate
        t_enc = (n_samples // HOP + 1) // 2
        return math.ceil(t_enc / window) * (window // down)

    def frame_seconds_for(self, model) -> float:
        return 0.02 * model.config.downsample_rate

    def language_model(self, model):
        return model.model.language_model

    def audio_embeddings(self, model, feature_extractor, wav16k):
        n_mels = model.config.encoder_config.input_dim // 2
        feats = granite_log_mel(wav16k, n_mels)
        enc = model.model.encoder
        out = model.get_audio_features(feats.to(enc.input_linear.weight.device, model.dtype), return_dict=True)
        return out.pooler_output[0]  # [Ts, d]

    @contextmanager
    def modality(self, model, speech: bool):
        """Audio LoRA on for speech prompts, off for text prompts (no-op without an adapter)."""
        if not getattr(model, "_hf_peft_config_loaded", False):
            yield
            return
        (model.enable_adapters if speech else model.disable_adapters)()
        try:
            yield
        finally:
            model.enable_adapters()  # back to the speech default
