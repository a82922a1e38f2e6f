"""Qwen2.5-Omni thinker (Qwen/Qwen2.5-Omni-7B, -3B): Whisper-style audio encoder (windowed) -> Qwen2.5 LLM.

Only the thinker (text output) is loaded: from a full `qwen2_5_omni` checkpoint (its `thinker.*`
weights; talker, token2wav and spk_dict.pt are never read), or from a `qwen2_5_omni_thinker` folder.

Chat template (the hub's audio part, copied below): ChatML; an audio content item renders as
`<|audio_bos|><|AUDIO|><|audio_eos|>`. Default system prompt of the hub model card ("You are Qwen, a
virtual human ...") is only required for speech *output*; the manifest's system prompt is used here.

Speech span: <|AUDIO|> repeated once per audio-tower output frame, filled by `masked_scatter`. Frame
rate after the projector (the tower's avg-pool + proj): mel hop 10 ms -> conv stride 2 -> avg-pool 2
-> **40 ms per position (25 Hz)**, Ts = (((n_mel - 1) // 2 + 1) - 2) // 2 + 1. Audio-only prompts use
plain sequential rope positions in all three M-RoPE sections (get_rope_index only builds 3-D
positions when an image or video is present), so a prompt given as inputs_embeds gets the same
positions as the processor's input_ids. Clips over 30 s are refused (the feature extractor cuts them).

Stale rope deltas: the thinker keeps `rope_deltas` [B, 1] from its last generate and adds them to the positions
of any later forward given without input_ids; after a batch of B > 1 a one-prompt forward crashed. A pre-hook on
the thinker model (`forget_rope_deltas`) drops them before every fresh (no-cache) forward without input_ids,
where the audio-only positions are plain 0..T-1 anyway.
"""

from __future__ import annotations

from torch import nn

from lsl_core.model.families.base import ChatTemplateFamily
from lsl_core.model.families.qwen2_audio import AUDIO_ITEM, whisper_features, whisper_style_tokens

QWEN2_5_OMNI_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# full-checkpoint keys (hub layout) -> Qwen2_5OmniThinkerForConditionalGeneration keys; other keys are not read
THINKER_KEYS = {r"^thinker\.model\.": "model.language_model.", r"^thinker\.audio_tower\.": "model.audio_tower.",
                r"^thinker\.visual\.": "model.visual.", r"^thinker\.lm_head\.": "lm_head."}


def _drop_stale_rope_deltas(module: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook of Qwen2_5OmniThinkerModel: a fresh forward (empty cache) without input_ids or
    position_ids gets sequential positions, not the rope deltas [B, 1] a previous generate left behind."""
    if args or kwargs.get("input_ids") is not None or kwargs.get("position_ids") is not None:
        return
    cache = kwargs.get("past_key_values")
    if cache is None or cache.get_seq_length() == 0:
        module.rope_deltas = None


def forget_rope_deltas(thinker: nn.Module) -> nn.Module:
    """The thinker with `_drop_stale_rope_deltas` on its inner model (once); returns it."""
    inner = thinker.model
    if not getattr(inner, "_lsl_drops_rope_deltas", False):
        inner.register_forward_pre_hook(_drop_stale_rope_deltas, with_kwargs=True)
        inner._lsl_drops_rope_deltas = True
    return thinker


class Qwen25OmniThinker(ChatTemplateFamily):
    name = "qwen2.5-omni"
    hf_class = "Qwen2_5OmniThinkerForConditionalGeneration"
    model_types = ("qwen2_5_omni", "qwen2_5_omni_thinker")
    hub_ids = ("Qwen/Qwen2.5-Omni-7B", "Qwen/Qwen2.5-Omni-3B")
    frame_seconds = 0.04
    max_seconds = 30.0
    audio_token = "<|AUDIO|>"
    transcribe_instruction = "Transcribe the English audio into text."
    CHAT_TEMPLATE = QWEN2_5_OMNI_TEMPLATE

    def load_model(self, ref, config, dtype, device, *, local_only, device_map):
        """A thinker folder as is; a full Omni checkpoint -> only its thinker's weights (the `thinker.` keys),
        so the talker, token2wav and the speaker file (spk_dict.pt) are never read."""
        if config.model_type == "qwen2_5_omni_thinker":
            return forget_rope_deltas(super().load_model(ref, config, dtype, device, local_only=local_only,
                                                         device_map=device_map))
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration as Thinker

        kwargs = dict(config=config.thinker_config, dtype=dtype, local_files_only=local_only, use_safetensors=True,
                      key_mapping=THINKER_KEYS)
        if device_map:
            return forget_rope_deltas(Thinker.from_pretrained(ref, device_map=device_map, **kwargs).eval())
        return forget_rope_deltas(Thinker.from_pretrained(ref, **kwargs).to(device).eval())

    def speech_content(self, instruction: str):
        return [dict(AUDIO_ITEM)] + ([{"type": "text", "text": instruction}] if instruction else [])

    def num_audio_tokens(self, model, n_samples: int) -> int:
        return whisper_style_tokens(-(-n_samples // 160))

    def max_seconds_for(self, model, feature_extractor) -> float:
        return feature_extractor.n_samples / 16_000

    def language_model(self, model):
        return model.model.language_model

    def audio_embeddings(self, model, feature_extractor, wav16k):
        """Qwen2_5OmniThinkerModel.get_audio_features on the unpadded mel frames -> [Ts, d]."""
        tower = model.model.audio_tower
        feats, fmask = whisper_features(feature_extractor, wav16k)
        out = model.get_audio_features(feats.to(tower.device, tower.dtype), fmask.to(tower.device), return_dict=True)
        return out.last_hidden_state  # [Ts, d]
