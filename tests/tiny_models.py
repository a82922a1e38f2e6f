"""Tiny random-weight models built from configs (no download): a Llama LM with a word-level
ChatML tokenizer, and a Whisper model. They exercise the real loading path (local folders,
safetensors, peft) in milliseconds."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = (
    "what is the capital of france who wrote hamlet when did world war two end how many legs does a "
    "spider have where is mount everest which planet is largest paris shakespeare 1945 eight nepal "
    "jupiter answer question yes no i do not know it was in city country year people"
).split()
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_tokenizer(folder: Path):
    """Word-level fast tokenizer with ChatML specials; saved to folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<|im_start|>", "<|im_end|>"]
    punct = list("?.,!:'\n")
    vocab = {t: i for i, t in enumerate(specials + punct + ["system", "user", "assistant", "you", "are", "a",
                                                             "helpful", "briefly", "in", "one", "short",
                                                             "sentence", "Question", "Answer"] + WORDS)}
    # a repeated word keeps its last position, which leaves holes below len(vocab) and pushes the last words past
    # the LLM's table (vocab_size = len(vocab)); they take the holes, every other id stays as it always was
    holes = sorted(set(range(len(vocab))) - set(vocab.values()))
    past = sorted((i, t) for t, i in vocab.items() if i >= len(vocab))
    vocab.update({t: hole for hole, (_, t) in zip(holes, past)})
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<|im_start|>",
                                   eos_token="<|im_end|>", pad_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    return fast


def make_tiny_llm(folder: Path, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """A random LlamaForCausalLM (+ tokenizer) saved as safetensors in folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.pad_token_id = 2
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def make_vivid_llm(folder: Path) -> Path:
    """A tiny random Llama whose weights are large enough (init 0.5) that greedy answers differ per prompt and per
    step: make_tiny_llm's answer every prompt with one repeated token, so a batched-equals-alone check on it
    cannot fail."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, bos_token_id=1,
                      eos_token_id=2, pad_token_id=2, tie_word_embeddings=False, initializer_range=0.5)
    LlamaForCausalLM(cfg).eval().save_pretrained(folder, safe_serialization=True)
    return folder


def make_tiny_whisper(folder: Path, d_model: int = 16, seed: int = 0) -> Path:
    """A random WhisperForConditionalGeneration + feature extractor saved in folder."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = WhisperConfig(vocab_size=64, d_model=d_model, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500,
                        max_target_positions=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=1)
    WhisperForConditionalGeneration(cfg).eval().save_pretrained(folder, safe_serialization=True)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def make_asr_whisper(folder: Path) -> Path:
    """A tiny random Whisper with the tiny LLM's word-level tokenizer and room for 128 new tokens, so its
    ASR decodes (random words) and the cascade modality runs (make_tiny_whisper's has no tokenizer)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    folder.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(folder)
    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=256, pad_token_id=2, bos_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1)
    WhisperForConditionalGeneration(cfg).eval().save_pretrained(folder, safe_serialization=True)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder
