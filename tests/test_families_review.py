"""Review of the model families (lsl_core/model/families): defects found against the transformers classes,
each pinned by a test on tiny random checkpoints built from the real config classes (no download)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lsl_core.errors import AudioError, ModelLoadError


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """Tiny checkpoints of the two Qwen families (the ones the defects below need)."""
    from lsl_core.model.families.tiny import make_tiny

    root = tmp_path_factory.mktemp("families_review")
    for name in ("qwen2-audio", "qwen2.5-omni"):
        make_tiny(name, root / name)
    return root


@pytest.fixture(scope="module")
def omni(tiny_root):
    from lsl_core.model.loading import load_checkpoint

    return load_checkpoint(tiny_root / "qwen2.5-omni", device="cpu")


@pytest.fixture(scope="module")
def samples():
    from lsl_core.data.sets import load_sample_set

    return load_sample_set("sd-qa-mini")


def _copy_without(src: Path, dst: Path, *names: str) -> Path:
    """A copy of a checkpoint folder without the named files; the manifest's `model` points at the copy."""
    shutil.copytree(src, dst)
    for n in names:
        (dst / n).unlink()
    manifest = json.loads((dst / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps({**manifest, "model": "."}))
    return dst


# ============================================================================ Qwen2.5-Omni: stale rope deltas
def test_omni_states_after_a_batched_generation_equal_fresh_states(omni, samples):
    """Thinker.generate leaves `rope_deltas` of shape [B, 1] on the model; a later inputs_embeds forward (no
    input_ids) reused them: with B > 1 every following hidden-state forward of one prompt crashed."""
    s = samples[1]
    speech_prompt, text_prompt, before = omni.prompts_and_states(s)
    prompts = [omni.prompt_for(text=samples[i].question) for i in range(3)]
    omni.generate_ids(prompts, max_new_tokens=2)  # a batch of 3 (the app's side-by-side, serving, evaluate)
    _, _, after = omni.prompts_and_states(s)
    torch.testing.assert_close(after.speech, before.speech, rtol=0, atol=0)
    torch.testing.assert_close(after.text, before.text, rtol=0, atol=0)
    torch.testing.assert_close(omni.input_states(speech_prompt)[0], before.speech[0], rtol=0, atol=0)


# ============================================================================ missing tokenizer files
def test_folder_without_tokenizer_files_names_the_tokenizer(tiny_root, tmp_path):
    """transformers builds an empty Qwen2 tokenizer for a folder without tokenizer files; loading went on and
    crashed later with an IndexError. It must stop at load with one ModelLoadError naming the tokenizer files."""
    from lsl_core.model.loading import load_checkpoint

    folder = _copy_without(tiny_root / "qwen2-audio", tmp_path / "q", "tokenizer.json", "tokenizer_config.json")
    with pytest.raises(ModelLoadError) as err:
        load_checkpoint(folder, device="cpu")
    msg = str(err.value)
    assert "tokenizer" in msg and "<|AUDIO|>" in msg and len(msg.splitlines()) == 1


# ============================================================================ clips too short for one position
@pytest.mark.parametrize("name", ["qwen2-audio", "qwen2.5-omni"])
def test_clip_too_short_for_one_speech_position_is_refused(tiny_root, name):
    """A 20 ms clip passes prepare_audio (one Whisper frame) but the Qwen towers make 0 positions from it
    (Ts = ((2 - 1) // 2 + 1 - 2) // 2 + 1 = 0): an empty speech span went silently into the metrics."""
    from lsl_core.model.loading import load_checkpoint

    model = load_checkpoint(tiny_root / name, device="cpu")
    wav = (0.1 * np.sin(np.arange(320) / 5)).astype(np.float32)  # 20 ms at 16 kHz
    assert model.family.num_audio_tokens(model.llm, wav.size) == 0
    with pytest.raises(AudioError, match="ms"):
        model.embed_speech(wav, 16_000)
    longer = np.concatenate([wav, wav[:1]])  # one sample more: one position
    assert model.embed_speech(longer, 16_000).embeds.shape[0] == 1


# ============================================================================ family resolution
def test_registered_family_sharing_a_native_class_resolves_by_its_name():
    """A user family on a native class (e.g. a Qwen2-Audio variant with another prompt) named by both 'family'
    and its 'hf_class' was refused with "'family' opens <the same class>, but 'hf_class' is <that class>"."""
    from lsl_core.model.families import FAMILIES, register_family, resolve_family
    from lsl_core.model.families.qwen2_audio import Qwen2Audio
    from lsl_core.model.loading import CheckpointManifest

    class Variant(Qwen2Audio):
        name = "qwen2-audio-variant"
        transcribe_instruction = "Write down what is said."

    register_family(Variant())
    try:
        both = CheckpointManifest(name="v", model="x", family="qwen2-audio-variant", hf_class=Variant.hf_class)
        assert resolve_family(both).name == "qwen2-audio-variant"
        by_class = CheckpointManifest(name="c", model="x", hf_class=Variant.hf_class)
        assert resolve_family(by_class).name == "qwen2-audio"  # the class alone still opens the native family
    finally:
        FAMILIES.pop("qwen2-audio-variant", None)


# ============================================================================ older Qwen2-Audio template
# transformers' earlier Qwen2AudioProcessor default (as saved with checkpoints of that time): an audio item is
# recognised by an 'audio' or 'audio_url' key only, not by "type": "audio"
OLDER_QWEN2_AUDIO_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_qwen2_audio_template_that_keys_audio_by_name_renders_the_placeholder(tiny_root, tmp_path):
    """With a checkpoint template that tests `'audio' in content`, the audio item {"type": "audio"} rendered
    nothing: loading stopped with "rendered 0 '<|AUDIO|>' placeholders". Both templates give the same prompts."""
    from lsl_core.model.loading import load_checkpoint

    folder = _copy_without(tiny_root / "qwen2-audio", tmp_path / "older")
    (folder / "chat_template.jinja").write_text(OLDER_QWEN2_AUDIO_TEMPLATE)
    older = load_checkpoint(folder, device="cpu")
    assert older.tokenizer.chat_template == OLDER_QWEN2_AUDIO_TEMPLATE
    current = load_checkpoint(tiny_root / "qwen2-audio", device="cpu")
    for attr in ("speech_prefix_ids", "speech_suffix_ids", "asr_prefix_ids", "asr_suffix_ids", "prefix_ids",
                 "suffix_ids"):
        assert getattr(older, attr) == getattr(current, attr), attr


TEXT_ONLY_CHATML = (  # a text LLM's template (Qwen2-7B-Instruct style): content is concatenated as a string
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize("template", [TEXT_ONLY_CHATML, TEXT_ONLY_CHATML.replace(" + message['content'] + ", "}}"
                                                                                  "{{ message['content'] }}{{")])
def test_text_only_chat_template_stops_with_one_error_naming_the_template(tiny_root, tmp_path, template):
    """A checkpoint carrying a text LLM's template (no audio item): a raw jinja TypeError (str + list) or
    "rendered 0 placeholders" without a fix; now one ModelLoadError naming the template file and the fix."""
    from lsl_core.model.loading import load_checkpoint

    folder = _copy_without(tiny_root / "qwen2-audio", tmp_path / "textonly")
    (folder / "chat_template.jinja").write_text(template)
    with pytest.raises(ModelLoadError) as err:
        load_checkpoint(folder, device="cpu")
    msg = str(err.value)
    assert "chat_template.jinja" in msg and "<|AUDIO|>" in msg and len(msg.splitlines()) == 1


def test_folder_digest_follows_the_files_that_shape_prompts(tmp_path):
    """Cached states are keyed by folder_digest: editing the chat template, the tokenizer or the generation
    settings of a checkpoint folder changes them, so it must change the digest (only config.json and the
    weight files counted); an unrelated file does not."""
    from lsl_core.model.families.base import folder_digest

    (tmp_path / "config.json").write_text('{"model_type": "qwen2_audio"}')
    (tmp_path / "model.safetensors").write_bytes(b"w")
    seen = {folder_digest(tmp_path)}
    for name, text in (("chat_template.jinja", "{{ messages }}"), ("tokenizer_config.json", "{}"),
                       ("generation_config.json", '{"repetition_penalty": 1.05}'),
                       ("chat_template.jinja", "{{ messages }}!")):
        (tmp_path / name).write_text(text)
        seen.add(folder_digest(tmp_path))
    assert len(seen) == 5
    (tmp_path / "README.md").write_text("notes")
    assert folder_digest(tmp_path) in seen
