"""The speech-LLM stack on tiny random models: shapes, the query span, one template for both
modalities, manifest save/reload with adaptor + LoRA, and every bad input's error."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tone
from safetensors.torch import save_file

from lsl_core.data.samples import Sample
from lsl_core.errors import AudioError, LSLError, ManifestError, ModelLoadError
from lsl_core.model.loading import (CheckpointManifest, list_zoo, load_checkpoint, read_manifest,
                                    write_manifest)

QUESTION = "what is the capital of france ?"


def _sample(seconds=1.3, q=QUESTION):
    return Sample(id="s1", audio=tone(seconds), sr=16_000, question=q)


# ----------------------------------------------------------------------------- shapes & span
def test_hidden_state_shapes_and_frame_times(tiny_model):
    hs = tiny_model.hidden_states(_sample(1.3))
    L = tiny_model.num_layers
    n_enc = math.ceil(1.3 * 16_000 / 320)  # 20 ms encoder frames covering the real audio
    Ts = math.ceil(n_enc / 5)
    Tt = len(tiny_model.tokenizer(QUESTION, add_special_tokens=False).input_ids)
    assert hs.speech.shape == (L + 1, Ts, 32)
    assert hs.text.shape == (L + 1, Tt, 32)
    assert hs.speech.dtype == torch.float32 and hs.text.dtype == torch.float32
    assert len(hs.tokens) == Tt and hs.tokens[0].strip() == "what"
    np.testing.assert_allclose(hs.frame_times, np.arange(Ts) * 0.1)
    assert hs.frame_seconds == pytest.approx(0.1)


def test_query_span_matches_tokenizer_offsets(tiny_model):
    """The text span holds exactly the tokens whose character offsets fall inside the question."""
    tok = tiny_model.tokenizer
    full = tiny_model.template.render(tok, QUESTION)
    start = full.index(QUESTION)
    enc = tok(full, add_special_tokens=False, return_offsets_mapping=True)
    inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a >= start and b <= start + len(QUESTION) and b > a]
    tx = tiny_model.embed_text(QUESTION)
    prompt = tiny_model.build_prompt(tx.embeds, tx.token_ids)
    assert prompt.prompt_ids == enc["input_ids"], "prefix+query+suffix must tokenize like the rendered prompt"
    assert list(range(prompt.span.start, prompt.span.stop)) == inside
    special = set(tok.all_special_ids)
    assert not special & set(prompt.prompt_ids[prompt.span]), "no special/template token inside the span"
    assert special & set(prompt.prompt_ids[: prompt.span.start]) and special & set(prompt.prompt_ids[prompt.span.stop:])


def test_speech_and_text_share_the_template(tiny_model):
    """Outside the query span the two prompts are the same embeddings; the span holds the query."""
    s = _sample()
    sp = tiny_model.prompt_for(audio=s.audio, sr=s.sr)
    tx = tiny_model.prompt_for(text=s.question)
    pre = sp.span.start
    assert pre == tx.span.start
    torch.testing.assert_close(sp.inputs_embeds[0, :pre], tx.inputs_embeds[0, :pre])
    n_suf = sp.inputs_embeds.shape[1] - sp.span.stop
    assert n_suf == tx.inputs_embeds.shape[1] - tx.span.stop > 0
    torch.testing.assert_close(sp.inputs_embeds[0, sp.span.stop:], tx.inputs_embeds[0, tx.span.stop:])
    emb = tiny_model.embed_speech(s.audio, s.sr).embeds
    torch.testing.assert_close(sp.inputs_embeds[0, sp.span], emb)


def test_hidden_states_equal_a_plain_forward_on_token_ids(tiny_model):
    """The text path through inputs_embeds equals the LM run on input_ids, sliced to the span."""
    tx = tiny_model.embed_text(QUESTION)
    prompt = tiny_model.build_prompt(tx.embeds, tx.token_ids)
    ref = tiny_model.llm(input_ids=torch.tensor([prompt.prompt_ids]), output_hidden_states=True)
    hs = tiny_model.hidden_states(_sample())
    want = torch.stack([h[0, prompt.span] for h in ref.hidden_states])
    torch.testing.assert_close(hs.text, want)
    # layer 0 of speech is the adaptor output itself
    torch.testing.assert_close(hs.speech[0], tiny_model.embed_speech(tone(), 16_000).embeds.float())


def test_generation_is_deterministic_and_modality_specific(vivid_model):
    s = _sample()
    a = vivid_model.generate(text=s.question, max_new_tokens=6)
    b = vivid_model.generate(text=s.question, max_new_tokens=6)
    assert a == b and isinstance(a, str)
    c = vivid_model.generate(audio=s.audio, sr=s.sr, max_new_tokens=6)
    assert c == vivid_model.generate(audio=s.audio, sr=s.sr, max_new_tokens=6)
    assert c != a  # the spoken and the typed prompt are different inputs (a model answering one token cannot say)
    with pytest.raises(TypeError):
        vivid_model.generate(audio=s.audio, sr=s.sr, text=s.question)


# ----------------------------------------------------------------------------- checkpoints
def _save_checkpoint(tiny_parts, folder, *, with_lora=True, seed=3, context=0):
    """Train-free checkpoint: random adaptor (+ `context` blocks) + random (non-zero) LoRA, saved like train.py does."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lsl_core.model.adaptor import Adaptor, AdaptorConfig

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    adaptor = Adaptor(AdaptorConfig(enc_dim=16, llm_dim=32, stack=5, context=context))
    with torch.no_grad():  # random context blocks (fresh ones start as the identity)
        for p in adaptor.context.parameters():
            p.normal_(0, 0.2)
    save_file({k: v.contiguous() for k, v in adaptor.state_dict().items()}, str(folder / "adaptor.safetensors"))
    lora = None
    if with_lora:
        llm = AutoModelForCausalLM.from_pretrained(tiny_parts["llm"])
        peft = get_peft_model(llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        peft.save_pretrained(folder / "lora", safe_serialization=True)
        lora = "lora"
    m = CheckpointManifest(name=f"tiny-{seed}", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                           family="tiny", strategy="lora" if with_lora else "frozen", step=10,
                           adaptor="adaptor.safetensors", lora=lora, downsample=5, adaptor_context=context)
    write_manifest(m, folder)
    return adaptor, folder


def test_manifest_checkpoint_roundtrip_identical_outputs(tiny_parts, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lsl_core.model.encoder import SpeechEncoder
    from lsl_core.model.lslm import LSLM

    adaptor, folder = _save_checkpoint(tiny_parts, tmp_path / "ck")
    loaded = load_checkpoint(folder, device="cpu", merge_lora=False)
    merged = load_checkpoint(folder, device="cpu")  # default: LoRA folded into the weights (faster decoding)
    # the same parts assembled by hand, in memory
    llm = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_parts["llm"]), folder / "lora").eval()
    from transformers import AutoTokenizer

    manual = LSLM(SpeechEncoder.from_pretrained(tiny_parts["encoder"], dtype=torch.float32, device="cpu"),
                  adaptor.eval(), llm, AutoTokenizer.from_pretrained(tiny_parts["llm"]))
    s = _sample()
    a, b = loaded.hidden_states(s), manual.hidden_states(s)
    torch.testing.assert_close(a.speech, b.speech, rtol=0, atol=0)
    torch.testing.assert_close(a.text, b.text, rtol=0, atol=0)
    c = merged.hidden_states(s)
    torch.testing.assert_close(c.speech, a.speech, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(c.text, a.text, rtol=1e-4, atol=1e-5)
    assert not hasattr(merged.llm, "peft_config") and merged.digest == loaded.digest + "-merged"
    assert loaded.generate(audio=s.audio, sr=s.sr, max_new_tokens=5) == manual.generate(audio=s.audio, sr=s.sr, max_new_tokens=5)
    # LoRA really changes the model (the check above is not vacuous)
    base = AutoModelForCausalLM.from_pretrained(tiny_parts["llm"]).eval()
    ids = torch.tensor([[1, 24, 52, 2]])
    assert not torch.allclose(base(ids).logits, loaded.llm(ids).logits)
    assert loaded.digest and loaded.digest.endswith("cpu-float32")
    llm_weights = next(Path(tiny_parts["llm"]).glob("*.safetensors"))  # the backbone folder rewritten in place
    before, stat = load_checkpoint(folder, device="cpu").digest, llm_weights.stat()
    assert load_checkpoint(folder, device="cpu").digest == before
    os.utime(llm_weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        assert load_checkpoint(folder, device="cpu").digest != before  # caches keyed by it do not serve stale rows
    finally:
        os.utime(llm_weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_a_context_adaptor_checkpoint_loads_by_its_manifest(tiny_parts, tmp_path):
    """adaptor_context is written to the manifest only when set; a file whose blocks disagree with it is refused."""
    adaptor, folder = _save_checkpoint(tiny_parts, tmp_path / "ctx", with_lora=False, context=2)
    assert json.loads((folder / "manifest.json").read_text())["adaptor_context"] == 2
    loaded = load_checkpoint(folder, device="cpu")
    x = torch.randn(1, 40, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.adaptor(x), adaptor.eval()(x), rtol=0, atol=0)
    _, plain = _save_checkpoint(tiny_parts, tmp_path / "plain", with_lora=False)
    assert "adaptor_context" not in json.loads((plain / "manifest.json").read_text())  # older digests unchanged
    good = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**good, "adaptor_context": 0}))
    with pytest.raises(ManifestError, match="holds 2 context block.*adaptor_context=0"):
        load_checkpoint(folder, device="cpu")
    (folder / "manifest.json").write_text(json.dumps({**good, "adaptor_hidden": 12}))
    with pytest.raises(ManifestError, match="divisible by 8 attention heads"):
        load_checkpoint(folder, device="cpu")
    (folder / "manifest.json").write_text(json.dumps({**good, "adaptor_context": -1}))
    with pytest.raises(ManifestError, match="'adaptor_context' must be an integer >= 0"):
        read_manifest(folder)


def test_zoo_lists_manifests_sorted(tiny_parts, tmp_path):
    _save_checkpoint(tiny_parts, tmp_path / "zoo" / "b", with_lora=False, seed=4)
    _save_checkpoint(tiny_parts, tmp_path / "zoo" / "a", with_lora=False, seed=5)
    (tmp_path / "zoo" / "broken").mkdir()
    (tmp_path / "zoo" / "broken" / "manifest.json").write_text("{not json")
    names = [m.name for m in list_zoo(tmp_path / "zoo")]
    assert sorted(names) == ["tiny-4", "tiny-5"]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("audio,sr,msg", [
    (np.zeros(0, np.float32), 16_000, "empty"),
    (np.full(16_000, np.nan, np.float32), 16_000, "NaN"),
    (np.zeros(121 * 16_000, np.float32), 16_000, "at most 120 s"),
    (np.zeros(100, np.float32), 16_000, "20 ms"),
    (np.zeros(16_000, np.float32), 0, "Sample rate"),
    (np.array(["a", "b"]), 16_000, "numeric"),
])
def test_bad_audio_raises_audio_error(tiny_model, audio, sr, msg):
    with pytest.raises(AudioError, match=msg):
        tiny_model.embed_speech(audio, sr)


def test_clips_over_30_s_are_encoded_window_by_window(tiny_model):
    """45 s: a full 30 s window (1500 frames) then a 15 s window (750 frames), each encoded on its own
    padded window, concatenated in time order; the adaptor then stacks 5 frames per LLM position."""
    audio = tone(45.0)
    enc = tiny_model.encoder
    got = enc.encode(audio)
    first, rest = enc.encode(audio[:480_000]), enc.encode(audio[480_000:])
    assert got.shape[0] == 2250 and first.shape[0] == 1500 and rest.shape[0] == 750
    torch.testing.assert_close(got, torch.cat([first, rest]), rtol=0, atol=0)
    sp = tiny_model.embed_speech(audio, 16_000)
    assert sp.embeds.shape[0] == 450 and sp.frame_times[-1] == pytest.approx(449 * 0.1)
    assert [len(w) for w in enc.windows(audio)] == [480_000, 240_000]


def test_stereo_and_any_rate_are_accepted(tiny_model):
    mono = tone(1.0, sr=44_100)
    stereo = np.stack([mono, mono], axis=1)  # [n, 2] as soundfile returns it
    a = tiny_model.embed_speech(stereo, 44_100).embeds
    b = tiny_model.embed_speech(mono, 44_100).embeds
    torch.testing.assert_close(a, b)
    assert a.shape[0] == math.ceil(math.ceil(16_000 / 320) / 5)
    pcm16 = (mono * 32767).astype(np.int16)
    assert tiny_model.embed_speech(pcm16, 44_100).embeds.shape == a.shape


def test_unreadable_audio_file(tmp_path):
    from lsl_core.data.audio import load_audio_file

    bad = tmp_path / "x.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="decode"):
        load_audio_file(bad)
    with pytest.raises(AudioError, match="not found"):
        load_audio_file(tmp_path / "missing.wav")


def test_manifest_errors(tiny_parts, tmp_path):
    _, folder = _save_checkpoint(tiny_parts, tmp_path / "ck", with_lora=False)
    good = json.loads((folder / "manifest.json").read_text())

    def write(**changes):
        d = {**good, **changes}
        (folder / "manifest.json").write_text(json.dumps(d))
        return folder

    with pytest.raises(ManifestError, match="adaptor weights not found"):
        load_checkpoint(write(adaptor="nope.safetensors"), device="cpu")
    with pytest.raises(ManifestError, match="strategy"):
        read_manifest(write(adaptor="adaptor.safetensors", strategy="bogus"))
    with pytest.raises(ManifestError, match="unknown field"):
        read_manifest(write(strategy="frozen", colour="red"))
    (folder / "manifest.json").write_text(json.dumps(good))
    # mismatched widths: an adaptor trained for a 48-wide LLM
    from lsl_core.model.adaptor import Adaptor, AdaptorConfig

    wide = Adaptor(AdaptorConfig(enc_dim=16, llm_dim=48, stack=5))
    save_file({k: v.contiguous() for k, v in wide.state_dict().items()}, str(folder / "adaptor.safetensors"))
    with pytest.raises(ManifestError, match="LLM width 32"):
        load_checkpoint(folder, device="cpu")
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nowhere")
    with pytest.raises(ManifestError, match="does not exist"):
        load_checkpoint(CheckpointManifest(name="x", llm="./missing-llm", encoder=str(tiny_parts["encoder"]),
                                           strategy="none"), device="cpu")


def test_pickled_lora_is_refused(tiny_parts, tmp_path):
    _, folder = _save_checkpoint(tiny_parts, tmp_path / "ck")
    st = folder / "lora" / "adapter_model.safetensors"
    shutil.move(st, folder / "lora" / "adapter_model.bin")
    with pytest.raises(ManifestError, match="pickled adapters are not loaded"):
        load_checkpoint(folder, device="cpu")


def test_loading_a_lora_checkpoint_is_quiet_and_leaves_the_warning_filters_alone(tiny_parts, tmp_path):
    """peft reads transformers' deprecated is_gradient_checkpointing on every wrap; that FutureWarning is
    silenced where lsl_core wraps (quiet_peft_wrap), and only there."""
    import warnings

    _, folder = _save_checkpoint(tiny_parts, tmp_path / "ck")
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_checkpoint(folder, device="cpu")
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    assert warnings.filters == before


def test_unknown_hub_id_offline(tiny_parts):
    m = CheckpointManifest(name="x", llm="no-such-org/no-such-model-xyz", encoder=str(tiny_parts["encoder"]),
                           strategy="none")
    with pytest.raises(ModelLoadError, match="Could not load LLM 'no-such-org/no-such-model-xyz' offline"):
        load_checkpoint(m, device="cpu")
    m2 = CheckpointManifest(name="x", llm=str(tiny_parts["llm"]), encoder="no-such-org/whisper-nope", strategy="none")
    with pytest.raises(ModelLoadError, match="speech encoder"):
        load_checkpoint(m2, device="cpu")


def test_empty_question(tiny_model):
    with pytest.raises(LSLError, match="question text is empty"):
        tiny_model.embed_text("   ")


def test_checkpoints_loaded_in_parallel_threads_equal_serial_loads():
    """Two app sessions opening different checkpoints at once load them in parallel threads. transformers
    builds models on the meta device; unserialized, such loads broke each other here ("Cannot copy out of meta
    tensor", an LM head left newly initialised). Every load takes hub.LOAD_LOCK, so each equals a serial load."""
    import threading

    from lsl_core.model.batch import module_digest
    from lsl_core.model.loading import default_checkpoint, load_checkpoint

    paths = [default_checkpoint().parent.parent / "embedded-untrained", default_checkpoint()]
    serial = [module_digest(load_checkpoint(p, device="cpu").llm) for p in paths]
    for _ in range(2):
        got, errors = {}, []

        def load(k):
            try:
                got[k] = module_digest(load_checkpoint(paths[k], device="cpu").llm)
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(f"{paths[k].name}: {type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=load, args=(k,)) for k in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert not errors, errors
        assert [got[0], got[1]] == serial
