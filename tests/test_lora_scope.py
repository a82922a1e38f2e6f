"""A LoRA confined to the speech positions (manifest / train config field `lora_scope: "speech"`).

Checked on tiny random models against a hand-written reference that adds B·A·x only at the known query
span; the text path must be the base LLM bit for bit, in hidden states and in (batched) generation.
"""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import torch
from conftest import tone
from safetensors.torch import load_file, save_file

from lsl_core.data.samples import Sample
from lsl_core.errors import ManifestError
from lsl_core.model.loading import (CheckpointManifest, list_zoo, load_checkpoint, manifest_digest, read_manifest,
                                    write_manifest)
from lsl_core.model.lora_scope import SpeechScope, apply_lora_scope, row_hashes

QUESTION = "what is the capital of france ?"


def _sample(seconds=1.3):
    return Sample(id="s1", audio=tone(seconds), sr=16_000, question=QUESTION)


def _checkpoint(tiny_parts, folder, *, scope="speech", with_lora=True, seed=3) -> CheckpointManifest:
    """Random adaptor (+ random non-zero LoRA r=4 on q/v), saved like training does."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lsl_core.model.adaptor import Adaptor, AdaptorConfig

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    adaptor = Adaptor(AdaptorConfig(enc_dim=16, llm_dim=32, stack=5))
    save_file({k: v.contiguous() for k, v in adaptor.state_dict().items()}, str(folder / "adaptor.safetensors"))
    if with_lora:
        llm = AutoModelForCausalLM.from_pretrained(tiny_parts["llm"])
        peft = get_peft_model(llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))
        peft.save_pretrained(folder / "lora", safe_serialization=True)
    m = CheckpointManifest(name=f"tiny-{scope}-{seed}", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                           family="tiny", strategy="lora" if with_lora else "frozen", step=10,
                           adaptor="adaptor.safetensors", lora="lora" if with_lora else None,
                           lora_scope=scope if with_lora else "all", downsample=5)
    write_manifest(m, folder)
    return read_manifest(folder)


def _reference_states(tiny_parts, lora_folder, inputs_embeds: torch.Tensor, speech: torch.Tensor) -> tuple:
    """Independent reference: the plain base LLM with W x + s·B A x added by hand where `speech` [B, T] is True."""
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_pretrained(tiny_parts["llm"]).eval()
    cfg = json.loads((lora_folder / "adapter_config.json").read_text())
    scaling = cfg["lora_alpha"] / cfg["r"]
    w = load_file(str(lora_folder / "adapter_model.safetensors"))
    mods = dict(llm.named_modules())
    hooks = []
    for key, a in w.items():
        if ".lora_A." not in key:
            continue
        path = key.removeprefix("base_model.model.").split(".lora_A.")[0]
        b = w[key.replace(".lora_A.", ".lora_B.")]

        def add(mod, inp, out, a=a, b=b):
            return out + (inp[0] @ a.T @ b.T) * scaling * speech[..., None].to(out.dtype)

        hooks.append(mods[path].register_forward_hook(add))
    assert len(hooks) == 4  # q and v of the 2 tiny layers
    with torch.no_grad():
        out = llm(inputs_embeds=inputs_embeds, output_hidden_states=True)
    return out.hidden_states


def test_the_speech_mask_is_the_query_span_of_a_speech_prompt_and_nothing_of_a_text_prompt(tiny_parts, tmp_path):
    model = load_checkpoint(_checkpoint(tiny_parts, tmp_path / "ck"), device="cpu")
    scope = model.llm.lsl_lora_scope
    sp, tp, _ = model.prompts_and_states(_sample())
    T = sp.inputs_embeds.shape[1]
    assert scope.speech_mask(sp.inputs_embeds)[0].tolist() == [sp.span.start <= t < sp.span.stop for t in range(T)]
    assert not scope.speech_mask(tp.inputs_embeds).any()
    # a left-padded batch of both: pad rows are token embeddings (text), the speech row keeps its span
    batch = model.padded_prompts([sp, tp])
    mask = scope.speech_mask(batch.inputs_embeds)
    assert mask[0].sum() == sp.span.stop - sp.span.start and not mask[1].any()
    # any dtype the table is stored in: equal rows hash equal, a perturbed row does not
    table = model.llm.get_input_embeddings().weight.detach()
    w = scope._weights
    assert torch.equal(row_hashes(table[:5].half(), w), row_hashes(table[:5].half().float(), w))
    bumped = table[3].clone()
    bumped[7] = torch.nextafter(bumped[7], torch.tensor(1e9))
    assert not torch.isin(row_hashes(bumped, w), scope._table)


def test_a_scaled_input_embedding_is_text_too():
    """Gemma 3's input embedding returns weight x sqrt(d), rows that are not in its weight table: those rows are
    what a text position holds (LSLM.token_embeddings), so the scope must read them as text, not speech."""
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                           sliding_window=16)
    llm = Gemma3ForCausalLM(cfg).eval()
    emb = llm.get_input_embeddings()
    ids = torch.tensor([3, 5, 7, 11])
    text = emb(ids)[None].detach()  # [1, 4, d]
    assert not torch.equal(text[0], emb.weight[ids])  # scaled: not the table's rows
    peft = get_peft_model(llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                          init_lora_weights=False)).eval()
    scope = apply_lora_scope(peft, "speech")
    speech = torch.randn(1, 2, 32)
    x = torch.cat([text[:, :2], speech, text[:, 2:]], dim=1)  # [text, text, speech, speech, text, text]
    assert scope.speech_mask(x)[0].tolist() == [False, False, True, True, False, False]
    with torch.no_grad():
        scoped = peft(inputs_embeds=text).logits
        with peft.disable_adapter():
            plain = peft(inputs_embeds=text).logits
    torch.testing.assert_close(scoped, plain, rtol=0, atol=0)  # a text prompt runs the base LLM


def test_speech_scoped_lora_equals_a_hand_masked_reference_and_leaves_text_to_the_base(tiny_parts, tmp_path):
    m = _checkpoint(tiny_parts, tmp_path / "ck")
    scoped = load_checkpoint(m, device="cpu")
    everywhere = load_checkpoint(dataclasses.replace(m, lora_scope="all"), device="cpu", merge_lora=False)
    base = load_checkpoint(dataclasses.replace(m, strategy="frozen", lora=None, lora_scope="all"), device="cpu")
    sp, tp, states = scoped.prompts_and_states(_sample())
    # speech: the reference that knows the span, layer by layer
    speech = torch.zeros(1, sp.inputs_embeds.shape[1], dtype=torch.bool)
    speech[0, sp.span] = True
    ref = _reference_states(tiny_parts, m.path(m.lora), sp.inputs_embeds, speech)
    torch.testing.assert_close(states.speech, torch.stack([h[0, sp.span] for h in ref]), rtol=1e-5, atol=1e-6)
    # the scope matters: a LoRA everywhere and no LoRA give other speech states
    assert not torch.allclose(everywhere.hidden_states(_sample()).speech, states.speech, atol=1e-4)
    assert not torch.allclose(base.hidden_states(_sample()).speech, states.speech, atol=1e-4)
    # text: exactly the base LLM (states and answers), although the LoRA everywhere changes it
    b = base.hidden_states(_sample())
    torch.testing.assert_close(states.text, b.text, rtol=0, atol=0)
    assert not torch.allclose(everywhere.hidden_states(_sample()).text, b.text, atol=1e-4)
    assert scoped.generate(text=QUESTION, max_new_tokens=6) == base.generate(text=QUESTION, max_new_tokens=6)
    # batched generation of both modalities at once equals one prompt at a time (the mask is per row)
    together = scoped.generate_ids([sp, tp], 6, batch_size=2)
    assert together == [scoped.generate_ids([sp], 6)[0], scoped.generate_ids([tp], 6)[0]]


def test_manifest_field_round_trip_defaults_and_errors(tiny_parts, tmp_path):
    m = _checkpoint(tiny_parts, tmp_path / "ck")
    assert m.lora_scope == "speech" and json.loads((tmp_path / "ck" / "manifest.json").read_text())["lora_scope"] == "speech"
    plain = _checkpoint(tiny_parts, tmp_path / "plain", scope="all")
    assert "lora_scope" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())  # older manifests
    assert manifest_digest(dataclasses.replace(plain, lora_scope="speech")) != manifest_digest(plain)
    model = load_checkpoint(m, device="cpu")  # merge_lora=True by default, but a scoped LoRA cannot be merged
    assert hasattr(model.llm, "peft_config") and not model.digest.endswith("-merged")
    assert load_checkpoint(plain, device="cpu").digest.endswith("-merged")
    with pytest.raises(ManifestError, match="'lora_scope' must be one of"):
        dataclasses.replace(m, lora_scope="text")
    with pytest.raises(ManifestError, match="needs a 'lora' adapter"):
        dataclasses.replace(m, strategy="frozen", lora=None)
    with pytest.raises(ValueError, match="no lora_B layers"):
        apply_lora_scope(load_checkpoint(dataclasses.replace(plain, strategy="frozen", lora=None), device="cpu").llm,
                         "speech")


def test_scope_hooks_come_off(tiny_parts, tmp_path):
    m = _checkpoint(tiny_parts, tmp_path / "ck")
    model = load_checkpoint(m, device="cpu")
    scoped = model.hidden_states(_sample())
    scope: SpeechScope = model.llm.lsl_lora_scope
    scope.remove()
    everywhere = load_checkpoint(dataclasses.replace(m, lora_scope="all"), device="cpu", merge_lora=False)
    torch.testing.assert_close(model.hidden_states(_sample()).text, everywhere.hidden_states(_sample()).text,
                               rtol=0, atol=0)
    assert not torch.allclose(scoped.text, everywhere.hidden_states(_sample()).text, atol=1e-4)


def test_shipped_results_were_computed_on_the_shipped_checkpoints():
    """Every analysis row names a shipped checkpoint and carries its cache key (manifest + weight bytes), so a
    manifest field added at its default, or a re-trained checkpoint, cannot leave the shipped results stale."""
    from lsl_core.data.paths import assets_dir

    zoo = {m.name: m for m in list_zoo(assets_dir() / "checkpoints")}
    df = pd.read_parquet(assets_dir() / "results" / "analysis.parquet", columns=["checkpoint", "digest"])
    pairs = set(zip(df.checkpoint, df.digest))
    assert {name for name, _ in pairs} == set(zoo) and len(pairs) == len(zoo)
    for name, digest in pairs:
        m = zoo[name]
        merged = "-merged" if (m.lora and m.lora_scope == "all") else ""
        assert digest == f"{manifest_digest(m)}-cpu-float32{merged}", name


def test_forwards_without_speech_skip_the_lora_branch_in_eval_only(tiny_parts, tmp_path):
    """Decode steps and text prompts call the base layers directly (what makes a scoped LoRA decode as fast as
    the plain backbone); the answers are those of the masked branch, and training always runs the branch."""
    model = load_checkpoint(_checkpoint(tiny_parts, tmp_path / "ck"), device="cpu")
    scope: SpeechScope = model.llm.lsl_lora_scope
    sp, tp, _ = model.prompts_and_states(_sample())
    lora_a = next(m for n, m in model.llm.named_modules() if n.endswith("q_proj.lora_A.default"))
    calls = []
    lora_a.register_forward_hook(lambda *a: calls.append(1))
    fast = model.generate_ids([sp, tp], 6, batch_size=1)
    assert len(calls) == 1  # the speech prompt's prefill only: 6 decode steps x 2 and the text prefill skip it
    for layer in scope._wrapped:  # the masked branch everywhere: the same answers
        layer.__dict__.pop("forward")
    assert model.generate_ids([sp, tp], 6, batch_size=1) == fast and len(calls) > 1 + 6
    calls.clear()
    for layer in scope._wrapped:  # wrapped again, as loading does
        layer.forward = scope._skip_without_speech(layer, layer.forward)
    model.llm(inputs_embeds=tp.inputs_embeds)
    assert not calls
    model.llm.train()
    model.llm(inputs_embeds=tp.inputs_embeds)  # training: the branch runs (its dropout draws), masked to zero
    assert len(calls) == 1
