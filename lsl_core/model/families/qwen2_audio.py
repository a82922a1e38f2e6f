"""Qwen2-Audio (Qwen/Qwen2-Audio-7B-Instruct): Whisper-large-v3-style encoder -> avg-pool -> linear -> Qwen2-7B.

Chat template (the hub's, copied below): ChatML; an audio content item renders as
`Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\\n` inside the user turn.

Speech span: the processor repeats <|AUDIO|> once per encoder output frame and the model
`masked_scatter`s the projector output into exactly those positions. Frame rate after the projector:
mel hop 10 ms -> conv stride 2 (20 ms) -> avg-pool 2 -> **40 ms per position (25 Hz)**;
Ts = (((n_mel - 1) // 2 + 1) - 2) // 2 + 1 with n_mel = the feature extractor's unpadded frames.
Clips longer than the feature extractor's window (30 s) would be cut, so they are refused (AudioError).

Text prompt: the same ChatML turn with the typed question in place of the `Audio 1: ...\\n` line.
"""

from __future__ import annotations

import numpy as np
import torch

from lsl_core.model.families.base import ChatTemplateFamily

QWEN2_AUDIO_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content or content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# the audio content item: templates test "type" == "audio" (the current processor default) or, like transformers'
# earlier Qwen2AudioProcessor default (which checkpoints saved then may carry), only an 'audio' / 'audio_url' key;
# the value is never read (the clip enters as embeddings)
AUDIO_ITEM = {"type": "audio", "audio": "question.wav"}


def whisper_style_tokens(n_mel: int) -> int:
    """Positions after conv stride 2 and avg-pool 2 for n_mel feature frames."""
    return (((n_mel - 1) // 2 + 1) - 2) // 2 + 1


def whisper_features(feature_extractor, wav16k: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel padded to the extractor's window (30 s), as the Qwen processors call it -> (features
    [1, n_mels, 3000], feature_attention_mask [1, 3000])."""
    out = feature_extractor(wav16k, sampling_rate=16_000, return_attention_mask=True, padding="max_length",
                            return_tensors="pt")
    return out["input_features"], out["attention_mask"]


class Qwen2Audio(ChatTemplateFamily):
    name = "qwen2-audio"
    hf_class = "Qwen2AudioForConditionalGeneration"
    model_types = ("qwen2_audio",)
    hub_ids = ("Qwen/Qwen2-Audio-7B-Instruct",)
    frame_seconds = 0.04
    max_seconds = 30.0
    audio_token = "<|AUDIO|>"
    transcribe_instruction = "Transcribe the speech in English."
    CHAT_TEMPLATE = QWEN2_AUDIO_TEMPLATE

    def speech_content(self, instruction: str):
        return [dict(AUDIO_ITEM)] + ([{"type": "text", "text": instruction}] if instruction else [])

    def num_audio_tokens(self, model, n_samples: int) -> int:
        return whisper_style_tokens(-(-n_samples // 160))  # n_mel = ones in the feature mask (every 160th sample)

    def max_seconds_for(self, model, feature_extractor) -> float:
        return feature_extractor.n_samples / 16_000  # the padded window (30 s on the hub model)

    def language_model(self, model):
        return model.model.language_model

    def audio_embeddings(self, model, feature_extractor, wav16k):
        """The audio branch of Qwen2AudioModel.forward (masked encoder + projector), real frames only."""
        from transformers.masking_utils import create_bidirectional_mask

        inner = model.model
        tower = inner.audio_tower
        feats, fmask = whisper_features(feature_extractor, wav16k)
        feats = feats.to(tower.device, tower.dtype)
        fmask = fmask.to(tower.device)
        feat_lens, out_lens = tower._get_feat_extract_output_lengths(fmask.sum(-1))
        max_len = (feats.shape[-1] - 2) // 2 + 1
        keep = (torch.arange(max_len, device=feats.device)[None] < feat_lens[:, None]).long()  # [1, Te]
        dummy = torch.zeros(1, max_len, 1, dtype=feats.dtype, device=feats.device)  # only its shape/dtype are read
        mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=keep)
        states = tower(feats, attention_mask=mask).last_hidden_state  # [1, Te/2, d_audio]
        emb = inner.multi_modal_projector(states)  # [1, 750, d]
        return emb[0, : int(out_lens[0])]  # [Ts, d]
