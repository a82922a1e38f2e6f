"""Tiny random checkpoints of every native family, built from the real config classes (no download).

Each folder holds what the hub repository holds, shrunk: config.json of the real class with 3 decoder
layers and widths of 16-32, random weights as *.safetensors, a small byte-level BPE tokenizer that
carries the family's real special tokens (<|AUDIO|>, [BEGIN_AUDIO], <|audio|>, ...) and chat
template, the feature extractor config, and a manifest.json that opens it as a family checkpoint:

    python -m lsl_core families make-tiny --out /tmp/tiny-families
    python -m lsl_core analyze --checkpoint /tmp/tiny-families/qwen2-audio --samples sd-qa-mini --limit 3

The models are random: their answers and metrics mean nothing; they exercise the loading, prompt,
span, hook and app paths of each real class in seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            max_position_embeddings=4096)
CORPUS = (
    "what is the capital of france who wrote hamlet when did world war two end how many legs does a spider have "
    "where is mount everest which planet is largest the answer is paris shakespeare 1945 eight nepal jupiter "
    "You are a helpful assistant. Answer the question briefly, in one short sentence. Transcribe the speech in "
    "English. system user assistant Audio 1: lang:en can you transcribe the speech into a written format?"
)


# =============================================================================== tokenizers
def make_bpe_tokenizer(specials: list[str], *, bos: str | None, eos: str, pad: str, unk: str | None = None,
                       chat_template: str | None = None, vocab_size: int = 420):
    """A byte-level BPE tokenizer trained on a few sentences (any text encodes) with `specials` first:
    special token i gets id i, so a list can put tokens at their real ids (Voxtral's [AUDIO] = 24)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator([CORPUS] * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=pad, unk_token=unk,
                                   additional_special_tokens=[s for s in specials if s not in (bos, eos, pad, unk)])
    if chat_template:
        fast.chat_template = chat_template
    return fast


TINY_WINDOW_S = 6  # audio window of the tiny encoders (30 s on the hub models): sd-qa-mini clips are < 4.3 s


def _whisper_fe(n_mels: int = 128):
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(feature_size=n_mels, chunk_length=TINY_WINDOW_S)


def _finish(model, tok, folder: Path, family: str, fe=None, extra_files: dict | None = None) -> Path:
    """Save weights (safetensors), tokenizer, feature extractor and a family manifest into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    if fe is not None:
        fe.save_pretrained(folder)
    for name, content in (extra_files or {}).items():
        (folder / name).write_text(json.dumps(content, indent=1))
    manifest = {"name": f"tiny-{family}", "family": family, "model": ".", "strategy": "pretrained",
                "extra": {"note": "tiny random weights built by lsl_core.model.families.tiny (meaningless answers)"}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


# =============================================================================== one builder per family
def make_tiny_qwen2_audio(folder: Path, seed: int = 0) -> Path:
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    from lsl_core.model.families.qwen2_audio import QWEN2_AUDIO_TEMPLATE

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]
    tok = make_bpe_tokenizer(specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                             chat_template=QWEN2_AUDIO_TEMPLATE)
    torch.manual_seed(seed)
    cfg = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", d_model=16, encoder_layers=1, encoder_attention_heads=2,
                          encoder_ffn_dim=32, num_mel_bins=128, max_source_positions=50 * TINY_WINDOW_S),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), **TEXT, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    return _finish(Qwen2AudioForConditionalGeneration(cfg).eval(), tok, folder, "qwen2-audio", _whisper_fe())


def make_tiny_qwen2_5_omni(folder: Path, seed: int = 0) -> Path:
    """A full `qwen2_5_omni` checkpoint like the hub's (thinker only: enable_audio_output=False)."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    from lsl_core.model.families.qwen2_5_omni import QWEN2_5_OMNI_TEMPLATE

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>"]
    tok = make_bpe_tokenizer(specials, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                             chat_template=QWEN2_5_OMNI_TEMPLATE)
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    torch.manual_seed(seed)
    thinker = dict(
        audio_config=dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, num_mel_bins=128,
                          output_dim=TEXT["hidden_size"], n_window=50),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2,
                           out_hidden_size=TEXT["hidden_size"], fullatt_block_indexes=[0]),
        text_config=dict(vocab_size=len(tok), **TEXT, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}),
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"], video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"], audio_end_token_id=ids["<|audio_eos|>"],
        vision_start_token_id=ids["<|vision_bos|>"], vision_end_token_id=ids["<|vision_eos|>"])
    cfg = Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    model = Qwen2_5OmniForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    return _finish(model, tok, folder, "qwen2.5-omni", _whisper_fe())


VOXTRAL_SPECIALS = (["<unk>", "<s>", "</s>", "[INST]", "[/INST]"] + [f"<SPECIAL_{i}>" for i in range(5, 17)]
                    + ["[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"] + [f"<SPECIAL_{i}>" for i in range(19, 24)]
                    + ["[AUDIO]", "[BEGIN_AUDIO]"] + [f"<SPECIAL_{i}>" for i in range(26, 34)] + ["[TRANSCRIBE]"])


def make_tiny_voxtral(folder: Path, seed: int = 0) -> Path:
    """Voxtral with the Tekken special tokens at their real ids ([AUDIO] = 24, [BEGIN_AUDIO] = 25, ...)."""
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration

    tok = make_bpe_tokenizer(VOXTRAL_SPECIALS, bos="<s>", eos="</s>", pad="<unk>", unk="<unk>")
    assert tok.convert_tokens_to_ids("[AUDIO]") == 24 and tok.convert_tokens_to_ids("[TRANSCRIBE]") == 34
    torch.manual_seed(seed)
    cfg = VoxtralConfig(
        audio_config=dict(hidden_size=16, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                          num_mel_bins=128, max_source_positions=50 * TINY_WINDOW_S),
        text_config=dict(vocab_size=len(tok), **TEXT, head_dim=8, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id),
        audio_token_id=24)
    return _finish(VoxtralForConditionalGeneration(cfg).eval(), tok, folder, "voxtral", _whisper_fe())


def make_tiny_granite_speech(folder: Path, seed: int = 0) -> Path:
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration

    from lsl_core.model.families.granite_speech import GRANITE_TEMPLATE

    specials = ["<|end_of_text|>", "<|start_of_role|>", "<|end_of_role|>", "<|audio|>"]
    tok = make_bpe_tokenizer(specials, bos=None, eos="<|end_of_text|>", pad="<|end_of_text|>",
                             chat_template=GRANITE_TEMPLATE)
    torch.manual_seed(seed)
    cfg = GraniteSpeechConfig(
        text_config=dict(model_type="granite", vocab_size=len(tok), **TEXT, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id, embedding_multiplier=2.0),
        encoder_config=dict(input_dim=160, num_layers=2, hidden_dim=16, num_heads=2, output_dim=8, context_size=20,
                            max_pos_emb=32, conv_kernel_size=3),
        projector_config=dict(model_type="blip_2_qformer", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=32, encoder_hidden_size=16, cross_attention_frequency=1),
        audio_token_index=tok.convert_tokens_to_ids("<|audio|>"), has_lora_adapter=False)
    fe_config = {"feature_extractor_type": "GraniteSpeechFeatureExtractor", "sampling_rate": 16000, "n_fft": 512,
                 "win_length": 400, "hop_length": 160, "n_mels": 80, "projector_window_size": 15,
                 "projector_downsample_rate": 5}
    return _finish(GraniteSpeechForConditionalGeneration(cfg).eval(), tok, folder, "granite-speech",
                   extra_files={"preprocessor_config.json": fe_config})


BUILDERS: dict[str, Callable[[Path, int], Path]] = {
    "qwen2-audio": make_tiny_qwen2_audio,
    "qwen2.5-omni": make_tiny_qwen2_5_omni,
    "voxtral": make_tiny_voxtral,
    "granite-speech": make_tiny_granite_speech,
}


def make_tiny(family: str, folder: str | Path, seed: int = 0) -> Path:
    """Build one tiny family checkpoint (+ manifest.json) in folder."""
    if family not in BUILDERS:
        from lsl_core.errors import LSLError

        raise LSLError(f"No tiny builder for family {family!r}; choose from {sorted(BUILDERS)}.")
    return BUILDERS[family](Path(folder), seed)


def make_all(out: str | Path, seed: int = 0) -> dict[str, Path]:
    """Every family's tiny checkpoint in out/<family>/."""
    return {name: make_tiny(name, Path(out) / name, seed) for name in BUILDERS}
