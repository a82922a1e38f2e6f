"""Public speech-LLM families on tiny random checkpoints built from their real config classes (no download).

For each of Qwen2-Audio, Qwen2.5-Omni (thinker), Voxtral and Granite-speech: the speech span is exactly
the audio placeholder run of the model's own input_ids, and the prompt we build gives the same hidden
states as the model's own forward on (input_ids, audio features); the typed question sits where the
audio was; an intervention edits only speech positions, only at the chosen layer, only in prefill;
every metric, side-by-side generation and the app's Explorer and Interventions pages run on it; bad
manifests stop with one error naming the field to fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lsl_core.errors import LSLError, ManifestError

FAMILY_NAMES = ("qwen2-audio", "qwen2.5-omni", "voxtral", "granite-speech")
# what the speech prompt has around the placeholders that the text prompt has not (hub templates)
AUDIO_MARKERS = {"qwen2-audio": ("Audio 1: <|audio_bos|>", "<|audio_eos|>\n"),
                 "qwen2.5-omni": ("<|audio_bos|>", "<|audio_eos|>"), "voxtral": ("[BEGIN_AUDIO]", ""),
                 "granite-speech": ("", "")}


# ============================================================================ fixtures
@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    from lsl_core.model.families.tiny import make_all

    root = tmp_path_factory.mktemp("families")
    make_all(root)
    return root


@pytest.fixture(scope="module")
def models(tiny_root) -> dict:
    from lsl_core.model.loading import load_checkpoint

    out = {name: load_checkpoint(tiny_root / name, device="cpu") for name in FAMILY_NAMES}
    for m in out.values():
        m.asr_token_limit = 4  # random weights never stop on their own: keep transcripts short
    return out


@pytest.fixture(scope="module")
def sample():
    from lsl_core.data.sets import load_sample_set

    return load_sample_set("sd-qa-mini")[1]


def _wav(sample) -> np.ndarray:
    from lsl_core.data.audio import prepare_audio

    return prepare_audio(sample.audio, sample.sr)


def _native_inputs(model, wav: np.ndarray) -> dict:
    """The audio inputs each model's own forward takes (as its processor makes them)."""
    name = model.family.name
    if name in ("qwen2-audio", "qwen2.5-omni"):
        from lsl_core.model.families.qwen2_audio import whisper_features

        f, fm = whisper_features(model.feature_extractor, wav)
        return {"input_features": f, "feature_attention_mask": fm}
    if name == "voxtral":
        from lsl_core.model.families.voxtral import HOP, chunk_samples

        size = chunk_samples(model.llm)
        padded = np.zeros(size * int(np.ceil(len(wav) / size)), np.float32)
        padded[: len(wav)] = wav
        f = model.feature_extractor(padded, sampling_rate=16_000, return_tensors="pt")["input_features"]
        return {"input_features": f.reshape(f.shape[1], -1, size // HOP).transpose(0, 1)}
    from lsl_core.model.families.granite_speech import granite_log_mel

    return {"input_features": granite_log_mel(wav)}


# ============================================================================ the speech span
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_speech_span_is_the_audio_placeholder_run(models, sample, name):
    model = models[name]
    wav = _wav(sample)
    sp = model.embed_speech(sample.audio, sample.sr)
    prompt = model.build_prompt(sp.embeds)
    ts = model.family.num_audio_tokens(model.llm, len(wav))
    assert sp.embeds.shape == (ts, model.llm.get_input_embeddings().weight.shape[1])
    ids = torch.tensor([model.speech_prompt_token_ids(ts)])  # what the processor feeds the model
    audio_id = model.tokenizer.convert_tokens_to_ids(model.family.audio_token)
    placeholders = (ids[0] == audio_id).nonzero().flatten().tolist()
    assert placeholders == list(range(prompt.span.start, prompt.span.stop))
    assert prompt.inputs_embeds.shape[1] == ids.shape[1]
    np.testing.assert_allclose(sp.frame_times, np.arange(ts) * model.family.frame_seconds_for(model.llm))

    # the model's own merge of (input_ids, audio features) gives the same states at every position and layer
    with torch.no_grad():
        own = model.llm(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True,
                        use_cache=False, **_native_inputs(model, wav)).hidden_states
        ours = model.llm(inputs_embeds=prompt.inputs_embeds, output_hidden_states=True, use_cache=False).hidden_states
    assert len(own) == len(ours) == model.num_layers + 1
    for a, b in zip(own, ours):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    hs = model.hidden_states(sample)
    assert hs.speech.shape[:2] == (model.num_layers + 1, ts) and hs.speech.dtype == torch.float32
    torch.testing.assert_close(hs.speech, torch.stack([h[0, prompt.span] for h in ours]).float())


def test_qwen2_audio_span_matches_its_processor(models, sample):
    """Qwen2AudioProcessor (feature extractor + tokenizer + chat template) expands <|AUDIO|> to our Ts."""
    from transformers import Qwen2AudioProcessor

    model = models["qwen2-audio"]
    proc = Qwen2AudioProcessor(feature_extractor=model.feature_extractor, tokenizer=model.tokenizer,
                               chat_template=model.family.CHAT_TEMPLATE)
    messages = [{"role": "system", "content": model.system}, {"role": "user", "content": [{"type": "audio"}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    out = proc(text=text, audio=_wav(sample), return_tensors="pt")
    ts = model.embed_speech(sample.audio, sample.sr).embeds.shape[0]
    assert out["input_ids"][0].tolist() == model.speech_prompt_token_ids(ts)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_text_prompt_puts_the_question_where_the_audio_was(models, sample, name):
    model = models[name]
    tok = model.tokenizer
    tx = model.embed_text(sample.question)
    prompt = model.build_prompt(tx.embeds, tx.token_ids)
    assert prompt.prompt_ids[prompt.span] == tx.token_ids
    # same template around both queries; only the audio markers (bos/eos around the placeholders) differ
    pre_t, suf_t, pre_s, suf_s = model.prefix_ids, model.suffix_ids, model.speech_prefix_ids, model.speech_suffix_ids
    assert pre_s[: len(pre_t)] == pre_t and suf_s[len(suf_s) - len(suf_t):] == suf_t
    markers = (tok.decode(pre_s[len(pre_t):]), tok.decode(suf_s[: len(suf_s) - len(suf_t)]))
    assert markers == AUDIO_MARKERS[name]
    if model.family.name != "voxtral":  # the chat template with the question as the user's text, tokenized whole
        text = model.family.render(tok, model.system, sample.question.strip())
        assert tok(text, add_special_tokens=False).input_ids == prompt.prompt_ids
    else:
        special = tok.convert_tokens_to_ids
        assert prompt.prompt_ids == [special("<s>"), special("[INST]"), *tx.token_ids, special("[/INST]")]


def test_voxtral_prompt_layout_and_transcription_mode(models):
    model = models["voxtral"]
    tok = model.tokenizer
    name = lambda ids: tok.convert_ids_to_tokens(ids)  # noqa: E731
    assert name(model.speech_prefix_ids) == ["<s>", "[INST]", "[BEGIN_AUDIO]"]
    assert name(model.speech_suffix_ids) == ["[/INST]"]
    assert name(model.asr_suffix_ids)[0] == "[/INST]" and name(model.asr_suffix_ids)[-1] == "[TRANSCRIBE]"
    assert tok.decode(model.asr_suffix_ids[1:-1]) == "lang:en"
    assert tok.convert_tokens_to_ids("[AUDIO]") == model.llm.config.audio_token_id == 24
    pre, suf = model.family.text_prompt_ids(tok, "Be brief.")  # a manifest system prompt: V7 system block
    assert name(pre)[:2] == ["<s>", "[SYSTEM_PROMPT]"] and name(pre)[-2:] == ["[/SYSTEM_PROMPT]", "[INST]"]
    assert tok.decode(pre[2:-2]) == "Be brief." and name(suf) == ["[/INST]"]


# ============================================================================ interventions
def _layer_inputs(model, layer: int, prompt, edit=None) -> torch.Tensor:
    """What decoder layer ℓ receives in one forward of the prompt (after any edit hooks)."""
    seen = []

    def rec(module, args, kwargs):
        seen.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    with torch.no_grad(), (edit if edit is not None else torch.no_grad()):
        h = model.decoder_layers()[layer].register_forward_pre_hook(rec, with_kwargs=True)
        try:
            model.llm(inputs_embeds=prompt.inputs_embeds, use_cache=False)
        finally:
            h.remove()
    return seen[0][0]  # [T, d]


@pytest.mark.parametrize("name", FAMILY_NAMES)
@pytest.mark.parametrize("where", ["first", "middle"])
def test_intervention_changes_only_speech_positions_at_the_chosen_layer(models, sample, name, where):
    from lsl_core.interventions import Intervention, intervention_hooks, plan_intervention, sample_states

    model = models[name]
    layer = 0 if where == "first" else model.num_layers // 2
    prompt, _, states = sample_states(model, sample)
    plan = plan_intervention(Intervention(op="calibrate", target="span", layer=layer), states, prompt.span,
                             prompt.inputs_embeds.shape[1])
    assert plan.positions == list(range(prompt.span.start, prompt.span.stop))
    before = _layer_inputs(model, layer, prompt)
    after = _layer_inputs(model, layer, prompt, intervention_hooks(model, [plan]))
    changed = (after != before).any(-1).nonzero().flatten().tolist()
    assert changed and set(changed) <= set(plan.positions)  # speech span only
    outside = [i for i in range(before.shape[0]) if i not in plan.positions]
    torch.testing.assert_close(after[outside], before[outside], rtol=0, atol=0)
    for earlier in range(layer):  # the layers before ℓ read unedited states
        torch.testing.assert_close(_layer_inputs(model, earlier, prompt, intervention_hooks(model, [plan])),
                                   _layer_inputs(model, earlier, prompt), rtol=0, atol=0)
    # prefill only: during generation layer ℓ sees one full-length pass (edited) then 1-token steps (not edited)
    lengths, edited = [], []

    def rec(module, args, kwargs):
        h = args[0] if args else kwargs["hidden_states"]
        lengths.append(h.shape[1])
        edited.append(bool(h.shape[1] == before.shape[0] and torch.equal(h[0].detach(), after)))

    with intervention_hooks(model, [plan]):
        handle = model.decoder_layers()[layer].register_forward_pre_hook(rec, with_kwargs=True)
        try:
            model.generate_from_prompt(prompt, max_new_tokens=3, min_new_tokens=3)
        finally:
            handle.remove()
    assert lengths[0] == before.shape[0] and edited[0] and set(lengths[1:]) == {1}
    assert not model.decoder_layers()[layer]._forward_pre_hooks  # hooks removed


# ============================================================================ metrics, generation, ASR
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_every_metric_and_side_by_side_answers(models, sample, name):
    from lsl_core.analysis import analyze_sample
    from lsl_core.interventions import generate_side_by_side

    model = models[name]
    a = analyze_sample(model, sample, cache=False)
    L = model.num_layers
    ts = model.family.num_audio_tokens(model.llm, len(_wav(sample)))
    tt = len(model.embed_text(sample.question).token_ids)
    assert a.cos.shape == a.dist.shape == (L + 1, ts, tt)
    assert a.path_cos.shape == (L + 1, tt) and (a.path_cos < ts).all()
    assert np.isfinite([a.aps_cos, a.aps_dist]).all() and np.isfinite(a.seq_cos).all()
    assert a.cka is not None and a.cka.shape == (L + 1, L + 1)
    assert a.frame_seconds == pytest.approx(model.family.frame_seconds_for(model.llm))

    sbs = generate_side_by_side(model, sample, ["angle:bottom3", f"calibrate:span@{L // 2}"], max_new_tokens=4)
    titles = [x.title for x in sbs.answers()]
    assert titles[:3] == ["Text", "Speech", "Cascade (ASR → LLM)"] and len(titles) == 5
    assert isinstance(sbs.transcript, str) and sbs.cascade is not None
    assert set(sbs.interventions[1].frames) == set(range(ts))
    assert all(isinstance(x.answer, str) for x in sbs.answers())


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_input_states_are_the_first_hidden_states_of_a_forward(models, sample, name):
    """The forward-free states of ℓ = 0 plans (the app's live regeneration, the donor of pairing "other") are
    hidden_states[0], the input of decoder layer 0: for Granite that is inputs_embeds x embedding_multiplier
    (2.0 in the tiny model), so length and calibration targets planned on them must carry that scale."""
    from lsl_core.interventions import Intervention, plan_intervention, sample_states
    from lsl_core.model.lslm import HiddenStates

    model = models[name]
    speech_prompt, text_prompt, states = sample_states(model, sample)
    L = model.num_layers
    for prompt, full in ((speech_prompt, states.speech), (text_prompt, states.text)):
        light = model.input_states(prompt)
        assert light.shape == full.shape
        torch.testing.assert_close(light[0], full[0], rtol=0, atol=0)
        torch.testing.assert_close(light[L], full[0], rtol=0, atol=0)  # broadcast over the layer axis
    light_states = HiddenStates(model.input_states(speech_prompt), model.input_states(text_prompt),
                                states.frame_times, states.frame_seconds, states.tokens)
    T = speech_prompt.inputs_embeds.shape[1]
    for spec in ("length:all", "calibrate:span"):
        iv = Intervention.parse(spec)
        a = plan_intervention(iv, light_states, speech_prompt.span, T)
        b = plan_intervention(iv, states, speech_prompt.span, T)
        for x, y in zip((a.targets, *(a.stats or ())), (b.targets, *(b.stats or ()))):
            if x is not None:
                torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_transcript_is_the_model_itself_asked_to_transcribe(models, sample, name):
    model = models[name]
    sp = model.embed_speech(sample.audio, sample.sr)
    asr = model.build_prompt(sp.embeds, asr=True)
    plain = model.build_prompt(sp.embeds)
    assert asr.span.stop - asr.span.start == plain.span.stop - plain.span.start  # the same speech span
    assert (model.asr_prefix_ids, model.asr_suffix_ids) != (model.speech_prefix_ids, model.speech_suffix_ids)
    instruction = model.family.transcribe_instruction or "lang:en"
    assert instruction in model.tokenizer.decode(model.asr_suffix_ids)
    assert model.transcribe(sample.audio, sample.sr) == model.generate_from_prompt(asr, max_new_tokens=4)
    model.asr_token_limit = None
    assert model.asr_max_new_tokens(len(sp.frame_times)) == int(16 + 6 * len(sp.frame_times) * sp.frame_seconds)
    model.asr_token_limit = 4


def test_bf16_weights_give_float32_states(tiny_root, sample):
    from lsl_core.model.loading import load_checkpoint

    model = load_checkpoint(tiny_root / "qwen2-audio", device="cpu", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and "bfloat16" in model.digest
    hs = model.hidden_states(sample)
    assert hs.speech.dtype == hs.text.dtype == torch.float32 and torch.isfinite(hs.speech).all()


def test_long_clip_is_refused_with_the_window(models):
    from lsl_core.errors import AudioError

    model = models["qwen2-audio"]
    window = model.family.max_seconds_for(model.llm, model.feature_extractor)
    with pytest.raises(AudioError):
        model.embed_speech(np.zeros(int(16_000 * (window + 1)), np.float32) + 0.01, 16_000)


# ============================================================================ family-specific parts
def test_granite_log_mel_matches_transformers_reference():
    """Our torch log-mel (torchaudio MelSpectrogram defaults) vs transformers' numpy spectrogram."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    from lsl_core.model.families.granite_speech import granite_log_mel

    rng = np.random.default_rng(0)
    t = np.arange(16_000 * 1.37) / 16_000
    wav = (0.3 * np.sin(2 * np.pi * 300 * t * (1 + t)) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    fb = mel_filter_bank(num_frequency_bins=257, num_mel_filters=80, min_frequency=0.0, max_frequency=8000.0,
                         sampling_rate=16_000, norm=None, mel_scale="htk")
    mel = spectrogram(wav.astype(np.float64), window_function(400, "hann", periodic=True), frame_length=400,
                      hop_length=160, fft_length=512, power=2.0, center=True, pad_mode="reflect",
                      mel_filters=fb).T  # [F, 80]
    logmel = np.log10(np.clip(mel, 1e-10, None))
    logmel = np.maximum(logmel, logmel.max() - 8.0) / 4 + 1
    logmel = logmel[: logmel.shape[0] // 2 * 2].reshape(1, -1, 160)
    ours = granite_log_mel(wav).numpy()
    assert ours.shape == logmel.shape == (1, (len(wav) // 160 + 1) // 2, 160)
    np.testing.assert_allclose(ours, logmel, atol=2e-4)


def test_omni_full_checkpoint_loads_only_the_thinker_weights(models, tiny_root):
    import re

    from safetensors.torch import load_file

    from lsl_core.model.families.qwen2_5_omni import THINKER_KEYS

    saved = load_file(str(tiny_root / "qwen2.5-omni" / "model.safetensors"))
    assert json.loads((tiny_root / "qwen2.5-omni" / "config.json").read_text())["model_type"] == "qwen2_5_omni"

    def mapped(k):
        for pat, rep in THINKER_KEYS.items():
            if re.match(pat, k):
                return re.sub(pat, rep, k)
        return None

    want = {mapped(k): v for k, v in saved.items() if mapped(k)}
    got = models["qwen2.5-omni"].llm.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in got)


def test_granite_audio_lora_is_on_for_speech_and_off_for_text(tiny_root, sample):
    from peft import LoraConfig

    from lsl_core.model.loading import load_checkpoint

    model = load_checkpoint(tiny_root / "granite-speech", device="cpu")
    torch.manual_seed(0)
    model.llm.add_adapter(LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.llm.enable_adapters()
    sp_prompt = model.prompt_for(audio=sample.audio, sr=sample.sr)
    tx_prompt = model.prompt_for(text=sample.question)
    speech, text = model.forward_states(sp_prompt), model.forward_states(tx_prompt)
    with torch.no_grad():
        model.llm.disable_adapters()
        base_s = model.llm(inputs_embeds=sp_prompt.inputs_embeds, output_hidden_states=True).hidden_states
        base_t = model.llm(inputs_embeds=tx_prompt.inputs_embeds, output_hidden_states=True).hidden_states
        model.llm.enable_adapters()
    base_t = torch.stack([h[0, tx_prompt.span] for h in base_t])
    base_s = torch.stack([h[0, sp_prompt.span] for h in base_s])
    torch.testing.assert_close(text, base_t)  # text: adapter off
    assert not torch.allclose(speech[-1], base_s[-1])  # speech: adapter on
    assert model.llm._hf_peft_config_loaded  # and left on (the speech default)


# ============================================================================ capabilities
def test_capability_table_every_family_answers_every_capability(models, tiny_model):
    from lsl_core.model.families import CAPABILITY_NAMES, capabilities

    for model in models.values():
        caps = capabilities(model)
        assert set(caps) == set(CAPABILITY_NAMES)
        assert caps["analysis"] and caps["interventions"] and caps["calibration_layer0"] and caps["cascade"]
        assert not caps["lora"] and not caps["training"] and not caps["batch_evaluate"]
        assert all(c.reason for c in caps.values() if not c)
        with pytest.raises(LSLError, match="no separate speech encoder"):
            model.encoder  # noqa: B018 - evaluate/train ask for it: a clear error, not an AttributeError
    builtin = capabilities(tiny_model)
    assert set(builtin) == set(CAPABILITY_NAMES) and builtin["lora"] and builtin["training"]


# ============================================================================ manifest errors
def _manifest(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"name": "m", "strategy": "pretrained", **fields}))
    return folder


@pytest.mark.parametrize("fields, field_name", [
    ({"family": "qwen3-audio"}, "'family'"),
    ({"family": "voxtral"}, "'family'"),  # a qwen2-audio folder opened as voxtral: class and config disagree
    ({"hf_class": "VoxtralForConditionalGeneration"}, "'hf_class'"),
    ({"family": "qwen2-audio", "hf_class": "VoxtralForConditionalGeneration"}, "'family' or 'hf_class'"),
    ({"hf_class": "MiniCPMO"}, "\"trust_remote_code\": true"),
    ({"hf_class": "MiniCPMO", "trust_remote_code": True}, "register_family"),
    ({"family": "qwen2-audio", "lora": "lora"}, "'lora'"),
    ({"family": "qwen2-audio", "prompt": {"kind": "plain"}}, "'prompt'"),  # the family's own chat format only
    ({"family": "qwen2-audio", "prompt": {"plain_format": "Q: {query}\nA:"}}, "'plain_format'"),
    ({"family": "qwen2-audio", "prompt": {"sytem": "Be brief."}}, "'sytem'"),
    ({"family": "qwen2-audio", "prompt": "Be brief."}, "'prompt'"),
    ({"family": "qwen2-audio", "prompt": {"system": 3}}, "'system'"),
])
def test_bad_family_manifest_names_the_field(tiny_root, tmp_path, fields, field_name):
    from lsl_core.model.loading import load_checkpoint

    folder = _manifest(tmp_path / "bad", model=str(tiny_root / "qwen2-audio"), **fields)
    with pytest.raises(ManifestError) as err:
        load_checkpoint(folder, device="cpu")
    assert field_name in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_missing_model_folder_and_cli_error(tmp_path, capsys):
    from lsl_core.cli import main

    folder = _manifest(tmp_path / "gone", family="qwen2-audio", model="./no-such-folder")
    assert main(["analyze", "--checkpoint", str(folder), "--limit", "1", "--out", str(tmp_path / "a.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'./no-such-folder' does not exist" in err


def test_remote_code_family_needs_the_manifests_consent(tiny_root, tmp_path, sample):
    from lsl_core.model.families import FAMILIES, register_family
    from lsl_core.model.families.qwen2_audio import Qwen2Audio
    from lsl_core.model.loading import load_checkpoint

    class Custom(Qwen2Audio):  # stands for a remote-code class (MiniCPM-o, LLaMA-Omni) a user registers
        name = "custom-audio"
        trust_remote_code = True

    register_family(Custom())
    try:
        refused = _manifest(tmp_path / "no", family="custom-audio", model=str(tiny_root / "qwen2-audio"))
        with pytest.raises(ManifestError, match="\"trust_remote_code\": true"):
            load_checkpoint(refused, device="cpu")
        allowed = _manifest(tmp_path / "yes", family="custom-audio", model=str(tiny_root / "qwen2-audio"),
                            trust_remote_code=True)
        model = load_checkpoint(allowed, device="cpu")
        assert model.family.name == "custom-audio" and model.hidden_states(sample).speech.shape[1] > 0
        with pytest.raises(ValueError, match="built-in"):
            register_family(Qwen2Audio())
    finally:
        FAMILIES.pop("custom-audio", None)


# ============================================================================ CLI
def test_cli_make_tiny_then_analyze_prints_metrics(tmp_path, capsys):
    import pandas as pd

    from lsl_core.cli import main

    assert main(["families", "make-tiny", "--out", str(tmp_path / "t"), "--family", "granite-speech"]) == 0
    out = tmp_path / "r.parquet"
    assert main(["analyze", "--checkpoint", str(tmp_path / "t" / "granite-speech"), "--samples", "sd-qa-mini",
                 "--limit", "2", "--no-cka", "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 2 and (df["strategy"] == "pretrained").all() and (df["family"] == "granite-speech").all()
    assert np.isfinite(df["aps_cos"]).all() and "wrote 2 rows" in capsys.readouterr().out
    assert main(["families", "list"]) == 0
    assert "GraniteSpeechForConditionalGeneration" in capsys.readouterr().out


# ============================================================================ the app
@pytest.fixture()
def navigation_mode(monkeypatch):
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def init_v2(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_v2)


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_app_explorer_and_interventions_open_each_family(tiny_root, models, name, monkeypatch, tmp_path,
                                                         navigation_mode):
    from streamlit.testing.v1 import AppTest

    from lsl_core.analysis import analyze_sample
    from lsl_core.data.sets import load_sample_set
    from lsl_core.interventions import generate_side_by_side

    app = str(Path(__file__).resolve().parents[1] / "app.py")
    for k, v in {"LSL_ZOO": str(tiny_root), "LSL_DEFAULT_CHECKPOINT": str(tiny_root / name),
                 "LSL_SAMPLE_SET": "sd-qa-mini", "LSL_DEVICE": "cpu", "LSL_CACHE_DIR": str(tmp_path / "cache"),
                 "LSL_RESULTS_DIR": str(tmp_path / "results")}.items():
        monkeypatch.setenv(k, v)
    at = AppTest.from_file(app, default_timeout=120)
    at.switch_page("pages/1_Sample_Explorer.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.session_state["sb_model"] == str((tiny_root / name).resolve())
    sample = load_sample_set("sd-qa-mini")[at.session_state["sb_sample"]]
    model = models[name]
    ref = analyze_sample(model, sample, cache=False)
    figs = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    heat = [f for f in figs if any(t.get("name") == "alignment path i*_j" for t in f["data"])][0]
    z = heat["data"][0]["z"]
    if isinstance(z, dict):
        import base64

        z = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"])).reshape(ref.cos.shape[1:])
    np.testing.assert_allclose(np.asarray(z), ref.cos[model.num_layers // 2], atol=1e-5)
    texts = "\n".join(str(m.value) for m in at.markdown)
    assert "asked to transcribe" in texts  # the transcript's source is named

    at.switch_page("pages/2_Interventions.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    [w for w in at.number_input if w.label == "Max new tokens"][0].set_value(4)
    at.run()
    [b for b in at.button if b.label == "Regenerate"][0].click()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    model.asr_token_limit = None  # as loaded by the app
    try:
        ref_sbs = generate_side_by_side(model, sample, ["angle:bottom3"], max_new_tokens=4)
    finally:
        model.asr_token_limit = 4
    titles = [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]
    assert titles, ([e.value for e in at.error], [w.value for w in at.warning])
    assert titles[:4] == ["**Text**", "**Speech**", "**Cascade (ASR → LLM)**", "**Angle·Bottom3**"]
    assert [i.value for i in at.info][:4] == [a.answer or "∅ (empty answer)" for a in ref_sbs.answers()]


def test_serving_batches_a_family_per_modality(models, sample):
    """Speech and text rows mixed in one request: the batcher splits them by modality for a family (its
    weights differ per modality) and each answer equals the one generated alone."""
    from lsl_core.serving import GenerationRow, generate_rows

    model = models[FAMILY_NAMES[0]]
    assert model.weights_per_modality
    sp = model.build_prompt(model.embed_speech(sample.audio, sample.sr).embeds)
    tx_emb = model.embed_text(sample.question)
    tx = model.build_prompt(tx_emb.embeds, tx_emb.token_ids)
    rows = [GenerationRow(tx, (), 4), GenerationRow(sp, (), 3), GenerationRow(tx, (), 2)]
    want = [model.generate_from_prompt(r.prompt, r.max_new_tokens) for r in rows]
    assert generate_rows(model, rows) == want
