"""Interventions (DESIGN §3) on tiny random models: the plan against a hand-computed reference, the
edited layer input against the formulas (captured by hooks before and after ours), prefill-only
editing, identity = plain generation, hook cleanup on error, LoRA, CUDA, and the Table 1 pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tone
from safetensors.torch import save_file
from torch import nn

from lsl_core.data.samples import Sample
from lsl_core.errors import LSLError
from lsl_core.experiments.table1 import TABLE1_INTERVENTIONS, evaluate_interventions, table1, table1_markdown
from lsl_core.interventions import (OPERATIONS, Intervention, Operation, angle_projection, condition_label,
                                    generate_side_by_side, intervention_hooks, length_normalization, parse_condition,
                                    plan_intervention, plan_interventions, span_statistics, statistical_calibration)
from lsl_core.model.lslm import HiddenStates

QUESTION = "what is the capital of france ?"
NEW = 4  # new tokens: 1 prefill + 3 decode steps


def _sample(seconds: float = 1.3, q: str = QUESTION, sid: str = "s1", answers=("paris",)) -> Sample:
    return Sample(id=sid, audio=tone(seconds), sr=16_000, question=q, answers=tuple(answers))


# ============================================================================ independent reference
def _reference_plan(states: HiddenStates, iv: Intervention) -> tuple[list[int], np.ndarray | None]:
    """Frames and targets t̃ [n, d] (direction of the frame's tokens' mean state, their mean norm) by explicit
    loops in float64 (bottom/all targets only)."""
    hs = states.speech[iv.layer].double().numpy()  # [Ts, d]
    ht = states.text[iv.layer].double().numpy()  # [Tt, d]
    ts, tt = hs.shape[0], ht.shape[0]
    A = np.zeros((ts, tt))
    for i in range(ts):
        for j in range(tt):
            if iv.metric == "cosine":
                A[i, j] = hs[i] @ ht[j] / (np.linalg.norm(hs[i]) * np.linalg.norm(ht[j]))
            else:
                A[i, j] = np.linalg.norm(hs[i] - ht[j])
    path = [int(np.argmax(A[:, j]) if iv.metric == "cosine" else np.argmin(A[:, j])) for j in range(tt)]
    quality = [A[path[j], j] if iv.metric == "cosine" else -A[path[j], j] for j in range(tt)]
    tokens = sorted(range(tt), key=lambda j: (quality[j], j))
    tokens = tokens[: iv.k] if iv.target == "bottom" else tokens
    frames = sorted({path[j] for j in tokens})
    targets = [_target_ref([ht[j] for j in tokens if path[j] == f]) for f in frames]
    return frames, (np.stack(targets) if frames else None)


def _target_ref(ts_f: list) -> np.ndarray:
    """A frame's target from its tokens' states (float64 [d] each): their mean's direction, their mean norm."""
    mean = np.mean(ts_f, axis=0)
    return mean / np.linalg.norm(mean) * np.mean([np.linalg.norm(t) for t in ts_f])


def _formula(op: str, s: np.ndarray, t: np.ndarray | None, stats=None) -> np.ndarray:
    """DESIGN §3 formulas in float64: s [n, d], t [n, d]."""
    if op == "angle":
        return np.linalg.norm(s, axis=1, keepdims=True) * t / np.linalg.norm(t, axis=1, keepdims=True)
    if op == "length":
        return s * np.linalg.norm(t, axis=1, keepdims=True) / np.linalg.norm(s, axis=1, keepdims=True)
    mu_s, sd_s, mu_t, sd_t = stats
    return (s - mu_s) / sd_s * sd_t + mu_t


def _calib_stats(states: HiddenStates, layer: int):
    hs, ht = states.speech[layer].double().numpy(), states.text[layer].double().numpy()
    return hs.mean(0), hs.std(0), ht.mean(0), ht.std(0)


# ============================================================================ capture hooks
def _register_capture(model, layer: int, store: list, *, prepend: bool):
    """A pre-hook that records the decoder layer's hidden_states input (before or after ours)."""

    def hook(module, args, kwargs):
        store.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    return model.decoder_layers()[layer].register_forward_pre_hook(hook, with_kwargs=True, prepend=prepend)


def _run_captured(model, prompt, plans, layer: int):
    """Generate NEW tokens with the plans; return (inputs before our hooks, inputs after) per call."""
    before, after = [], []
    with intervention_hooks(model, plans):
        handles = [_register_capture(model, layer, before, prepend=True),
                   _register_capture(model, layer, after, prepend=False)]
        try:
            model.generate_from_prompt(prompt, NEW, min_new_tokens=NEW)
        finally:
            for h in handles:
                h.remove()
    return before, after


def _check_edit(model, sample, iv: Intervention, atol: float = 1e-6):
    """The edited prefill rows equal the formula; every other position and every decode step is untouched."""
    speech_prompt, _, states = model.prompts_and_states(sample)
    embeds_before = speech_prompt.inputs_embeds.clone()
    (plan,) = plan_interventions(iv, states, speech_prompt)
    before, after = _run_captured(model, speech_prompt, [plan], iv.layer)
    T = speech_prompt.inputs_embeds.shape[1]
    assert [x.shape[1] for x in before] == [T] + [1] * (NEW - 1), "one prefill pass, then length-1 decode steps"
    if iv.layer == 0:
        torch.testing.assert_close(before[0], speech_prompt.inputs_embeds, rtol=0, atol=0)
    assert torch.equal(speech_prompt.inputs_embeds, embeds_before), "the prompt tensor itself is never modified"

    pos = plan.positions
    assert pos and all(speech_prompt.span.start <= p < speech_prompt.span.stop for p in pos)
    s = before[0][0, pos].double().numpy()  # [n, d] live unedited rows
    if iv.op == "calibrate":
        want = _formula("calibrate", s, None, _calib_stats(states, iv.layer))
    else:
        frames, targets = _reference_plan(states, iv)
        assert list(plan.frames) == frames
        want = _formula(iv.op, s, targets)
    got = after[0][0, pos].double().numpy()
    # to 1e-6, relative to the rows' scale when that is below 1 (tiny random embeddings are ~0.02)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=atol * min(1.0, float(np.abs(want).max())))
    others = [p for p in range(T) if p not in pos]
    assert torch.equal(after[0][:, others], before[0][:, others]), "positions outside the plan are untouched"
    for b, a in zip(before[1:], after[1:]):
        assert torch.equal(a, b), "decode steps are never edited"
    return plan, before, after


# ============================================================================ config and parsing
@pytest.mark.parametrize("spec,expect", [
    ("angle:bottom3@0", Intervention("angle", "bottom", 3, layer=0)),
    ("angle:all", Intervention("angle", "all")),
    ("length:bottom5@4:distance", Intervention("length", "bottom", 5, layer=4, metric="distance")),
    ("calibrate:frames=3,1,2", Intervention("calibrate", "frames", frames=(1, 2, 3))),
    ("calibrate:span@1", Intervention("calibrate", "span", layer=1)),
    ("Angle:Bottom", Intervention("angle", "bottom", 3)),
])
def test_parse_and_label_round_trip(spec, expect):
    iv = Intervention.parse(spec)
    assert iv == expect
    assert Intervention.parse(iv.label()) == iv
    assert Intervention.parse("angle:bottom3@0").label() == "angle:bottom3"
    assert Intervention.parse("length:bottom5@4:distance").label() == "length:bottom5@4:distance"
    assert Intervention.parse("calibrate:frames=1,2,3").label() == "calibrate:frames=1,2,3"
    assert Intervention.parse("angle:bottom3").title() == "Angle·Bottom3"
    assert Intervention.parse("length:all").title() == "Length·All"


def test_conditions_compose_in_order():
    c = parse_condition("angle:bottom3+length:all@1")
    assert [iv.label() for iv in c] == ["angle:bottom3", "length:all@1"]
    assert condition_label([Intervention("calibrate", "all"), "angle:bottom2"]) == "calibrate:all+angle:bottom2"


@pytest.mark.parametrize("spec,field", [
    ("rotate:all", "op"), ("angle:top3", "target"), ("angle:all@x", "layer"), ("angle:all:manhattan", "metric"),
    ("angle:frames=a", "frame index"), ("angle", "expected"), ("calibrate:frames=", "frames"),
])
def test_parse_errors_name_the_field(spec, field):
    with pytest.raises(LSLError, match=field):
        Intervention.parse(spec)


def test_config_validation():
    with pytest.raises(LSLError, match="k"):
        Intervention(k=-1)
    with pytest.raises(LSLError, match="layer"):
        Intervention(layer=-2)
    with pytest.raises(LSLError, match="frames"):
        Intervention(target="all", frames=(1,))


# ============================================================================ the op functions
def test_angle_projection_by_hand_and_against_the_formula():
    s = torch.tensor([[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]])  # ‖s‖ = 5, 1
    t = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]])  # second target has norm 0: s is kept
    torch.testing.assert_close(angle_projection(s, t), torch.tensor([[0.0, 0.0, 5.0], [1.0, 0.0, 0.0]]))
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 16, generator=g), torch.randn(5, 16, generator=g)  # [B, n, d], [n, d]
    want = np.stack([_formula("angle", x, t.double().numpy()) for x in s.double().numpy()])
    np.testing.assert_allclose(angle_projection(s, t).double().numpy(), want, rtol=1e-5, atol=1e-6)


def test_length_normalization_by_hand_and_against_the_formula():
    s = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])  # a zero row stays zero
    t = torch.tensor([[0.0, 10.0, 0.0], [1.0, 1.0, 1.0]])
    torch.testing.assert_close(length_normalization(s, t), torch.tensor([[6.0, 8.0, 0.0], [0.0, 0.0, 0.0]]))
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(3, 4, 8, generator=g), torch.randn(4, 8, generator=g)
    want = np.stack([_formula("length", x, t.double().numpy()) for x in s.double().numpy()])
    np.testing.assert_allclose(length_normalization(s, t).double().numpy(), want, rtol=1e-5, atol=1e-6)


def test_statistical_calibration_by_hand_and_against_the_formula():
    hs = torch.tensor([[0.0, 1.0], [2.0, 1.0]])  # μ_s = (1, 1), σ_s = (1, 0): dimension 1 is constant
    ht = torch.tensor([[10.0, 5.0], [14.0, 7.0]])  # μ_t = (12, 6), σ_t = (2, 1)
    stats = span_statistics(hs, ht)
    torch.testing.assert_close(torch.stack(stats), torch.tensor([[1.0, 1.0], [1.0, 0.0], [12.0, 6.0], [2.0, 1.0]]))
    got = statistical_calibration(hs, *stats)
    # dimension 0: (s − 1)/1·2 + 12; dimension 1: s − μ_s = 0, so it maps onto μ_t = 6 (σ_s clamped, no NaN)
    torch.testing.assert_close(got, torch.tensor([[10.0, 6.0], [14.0, 6.0]]))
    g = torch.Generator().manual_seed(2)
    hs, ht, s = torch.randn(7, 8, generator=g), torch.randn(5, 8, generator=g) * 3 + 1, torch.randn(2, 3, 8, generator=g)
    ref = tuple(x.double().numpy() for x in (hs.mean(0), hs.std(0, unbiased=False), ht.mean(0),
                                             ht.std(0, unbiased=False)))
    want = np.stack([_formula("calibrate", x, None, ref) for x in s.double().numpy()])
    np.testing.assert_allclose(statistical_calibration(s, *span_statistics(hs, ht)).double().numpy(), want,
                               rtol=1e-5, atol=1e-5)


def test_registry_lists_each_op_once_with_its_function():
    assert {n: op.fn for n, op in OPERATIONS.items()} == {
        "angle": angle_projection, "length": length_normalization, "calibrate": statistical_calibration}
    assert all(op.name == n and op.formula and op.takes for n, op in OPERATIONS.items())


def test_a_new_op_is_one_function_and_one_registry_line(tiny_model, monkeypatch):
    """Registering an op makes it parse, plan, title and edit through the hooks, with nothing else changed."""
    monkeypatch.setitem(OPERATIONS, "double", Operation("double", lambda s, t: 2 * s, "targets", "s′ = 2s", "none"))
    iv = Intervention.parse("double:all")
    assert iv.title() == "Double·All" and iv.label() == "double:all"
    speech_prompt, _, states = tiny_model.prompts_and_states(_sample())
    (plan,) = plan_interventions(iv, states, speech_prompt)
    before, after = _run_captured(tiny_model, speech_prompt, [plan], 0)
    torch.testing.assert_close(after[0][0, plan.positions], 2 * before[0][0, plan.positions])
    with pytest.raises(LSLError, match="op must be one of"):
        Intervention.parse("triple:all")


# ============================================================================ plans
@pytest.mark.parametrize("metric", ["cosine", "distance"])
@pytest.mark.parametrize("target", ["bottom", "all"])
def test_plan_matches_the_hand_reference(tiny_model, metric, target):
    speech_prompt, _, states = tiny_model.prompts_and_states(_sample())
    for layer in (0, 1):
        iv = Intervention("angle", target, 3, layer=layer, metric=metric)
        plan = plan_intervention(iv, states, speech_prompt.span, speech_prompt.inputs_embeds.shape[1])
        frames, targets = _reference_plan(states, iv)
        assert list(plan.frames) == frames
        np.testing.assert_allclose(plan.targets.double().numpy(), targets, rtol=1e-5, atol=1e-6)
        assert plan.positions == [speech_prompt.span.start + f for f in frames]
        np.testing.assert_allclose(plan.frame_times, states.frame_times[frames])
        assert plan.token_strings == tuple(states.tokens[j] for j in plan.tokens)
        if target == "bottom":
            assert len(plan.tokens) == 3 and len(plan.frames) <= 3


def test_frame_shared_by_tokens_moves_towards_their_mean():
    """Two tokens on one frame: the frame is edited once, towards the direction of the mean of the two text
    states with their mean norm (1 here)."""
    d = 4
    text = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])[None]  # [1, Tt=3, d]
    speech = torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 0, 2.0]])[None]  # frame 0 best for tokens 0,1; frame 1 for 2
    states = HiddenStates(torch.cat([speech, speech]), torch.cat([text, text]), np.array([0.0, 0.1]), 0.1,
                          ["a", "b", "c"])
    plan = plan_intervention(Intervention("angle", "all"), states, slice(5, 7), 10)
    assert plan.frames == (0, 1) and plan.frame_tokens == ((0, 1), (2,))
    torch.testing.assert_close(plan.targets, torch.tensor([[0.5 ** 0.5, 0.5 ** 0.5, 0, 0], [0, 0, 0, 1.0]]))
    h = torch.arange(10 * d, dtype=torch.float32).reshape(1, 10, d)
    out = plan.apply(h)
    s0 = h[0, 5]
    torch.testing.assert_close(out[0, 5], s0.norm() * torch.tensor([1.0, 1.0, 0, 0]) / math.sqrt(2))
    step = h[:, :1]
    assert plan.apply(step) is step, "a pass shorter than the prompt (a decode step) is returned as is"


def test_explicit_frames_and_span_targets(tiny_model):
    speech_prompt, _, states = tiny_model.prompts_and_states(_sample())
    ts = states.speech.shape[1]
    plans = plan_interventions("angle:frames=0,2+calibrate:span", states, speech_prompt)
    assert plans[0].frames == (0, 2) and all(len(js) >= 1 for js in plans[0].frame_tokens)
    assert plans[1].frames == tuple(range(ts)) and plans[1].tokens == ()
    with pytest.raises(LSLError, match="outside the speech span"):
        plan_interventions(f"angle:frames={ts}", states, speech_prompt)
    with pytest.raises(LSLError, match="out of range"):
        plan_interventions(f"angle:all@{tiny_model.num_layers}", states, speech_prompt)


# ============================================================================ the edit itself
@pytest.mark.parametrize("op", ["angle", "length", "calibrate"])
@pytest.mark.parametrize("layer", [0, 1])
def test_edited_layer_input_equals_the_formula(tiny_model, op, layer):
    _check_edit(tiny_model, _sample(), Intervention(op, "bottom", 3, layer=layer))


@pytest.mark.parametrize("spec", ["angle:all:distance", "length:all@1", "calibrate:all"])
def test_all_targets_equal_the_formula(tiny_model, spec):
    _check_edit(tiny_model, _sample(), Intervention.parse(spec))


def test_composition_applies_in_order(tiny_model):
    """calibrate then angle on the same frames = the two formulas chained on the live state."""
    speech_prompt, _, states = tiny_model.prompts_and_states(_sample())
    plans = plan_interventions("calibrate:all+angle:all", states, speech_prompt)
    before, after = _run_captured(tiny_model, speech_prompt, plans, 0)
    pos = plans[1].positions
    s = before[0][0, pos].double().numpy()
    idx = [plans[0].frames.index(f) for f in plans[1].frames]
    mid = _formula("calibrate", s, None, _calib_stats(states, 0))
    _, targets = _reference_plan(states, Intervention("angle", "all"))
    np.testing.assert_allclose(after[0][0, pos].double().numpy(), _formula("angle", mid, targets), rtol=1e-5, atol=1e-6)
    assert idx  # both plans touch the same path frames


def test_hidden_states_keyword_and_positional_calls():
    """The hook edits hidden_states whether the layer receives it positionally or as a keyword."""

    class KwLayer(nn.Module):
        def forward(self, *, hidden_states: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return hidden_states * scale

    class PosLayer(nn.Module):
        def forward(self, hidden_states: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
            return hidden_states * scale

    class Fake:
        def __init__(self):
            self.layers = nn.ModuleList([KwLayer(), PosLayer()])

        def decoder_layers(self):
            return self.layers

    g = torch.Generator().manual_seed(0)
    states = HiddenStates(torch.randn(3, 4, 8, generator=g), torch.randn(3, 3, 8, generator=g),
                          np.arange(4) * 0.1, 0.1, ["x", "y", "z"])
    fake = Fake()
    h = torch.randn(1, 9, 8, generator=g)
    for layer, call in ((0, lambda m, x: m(hidden_states=x, scale=2.0)), (1, lambda m, x: m(x, scale=2.0))):
        plan = plan_intervention(Intervention("length", "all", layer=layer), states, slice(2, 6), 9)
        with intervention_hooks(fake, [plan]):
            out = call(fake.layers[layer], h)
            step = call(fake.layers[layer], h[:, :1])
        torch.testing.assert_close(out, 2.0 * plan.apply(h))
        assert not torch.equal(out, 2.0 * h)
        torch.testing.assert_close(step, 2.0 * h[:, :1])
        assert len(fake.layers[layer]._forward_pre_hooks) == 0


def test_batched_conditions_edit_only_their_row(tiny_model):
    """generate_conditions: row b gets exactly condition b's edit; answers equal one-by-one generation."""
    from lsl_core.interventions import generate_conditions, generate_with_interventions

    speech_prompt, _, states = tiny_model.prompts_and_states(_sample())
    conds = [(), tuple(plan_interventions("angle:all", states, speech_prompt)),
             tuple(plan_interventions("calibrate:bottom3+length:all@1", states, speech_prompt))]
    answers = generate_conditions(tiny_model, speech_prompt, conds, 5, min_new_tokens=5)
    single = [generate_with_interventions(tiny_model, speech_prompt, list(c), 5, min_new_tokens=5) for c in conds]
    assert answers == single
    # the edit itself, row by row: capture after our hooks at layer 0
    got = []
    with intervention_hooks(tiny_model, [conds[1][0]], rows=[[1]]):
        h = _register_capture(tiny_model, 0, got, prepend=False)
        try:
            tiny_model.llm(inputs_embeds=speech_prompt.inputs_embeds.expand(3, -1, -1), use_cache=False)
        finally:
            h.remove()
    x = speech_prompt.inputs_embeds[0]
    assert torch.equal(got[0][0], x) and torch.equal(got[0][2], x)
    torch.testing.assert_close(got[0][1], conds[1][0].apply(speech_prompt.inputs_embeds)[0], rtol=0, atol=0)
    sbs = generate_side_by_side(tiny_model, _sample(), ["angle:all", "angle:bottom0"], 5, cascade=False, batched=True)
    assert sbs.interventions[1].answer == sbs.speech.answer


# ============================================================================ identity and cleanup
def _ids(model, prompt, plans=None, **kw):
    mask = torch.ones(prompt.inputs_embeds.shape[:2], dtype=torch.long)
    kwargs = dict(inputs_embeds=prompt.inputs_embeds, attention_mask=mask, do_sample=False, max_new_tokens=8,
                  min_new_tokens=8, pad_token_id=model.tokenizer.eos_token_id, output_scores=True,
                  return_dict_in_generate=True, **kw)
    if plans is None:
        return model.llm.generate(**kwargs)
    with intervention_hooks(model, plans):
        return model.llm.generate(**kwargs)


def test_identity_intervention_reproduces_plain_generation(tiny_model):
    s = _sample()
    speech_prompt, _, states = tiny_model.prompts_and_states(s)
    plain = _ids(tiny_model, speech_prompt)
    for spec in ("angle:bottom0", "length:bottom0@1", "calibrate:bottom0"):
        plans = plan_interventions(spec, states, speech_prompt)
        assert plans[0].frames == ()
        same = _ids(tiny_model, speech_prompt, plans)
        assert torch.equal(same.sequences, plain.sequences), "token for token"
        assert all(torch.equal(a, b) for a, b in zip(same.scores, plain.scores))
    sbs = generate_side_by_side(tiny_model, s, ["angle:bottom0"], max_new_tokens=6, cascade=False)
    assert sbs.interventions[0].answer == sbs.speech.answer == tiny_model.generate(audio=s.audio, sr=s.sr,
                                                                                   max_new_tokens=6)
    # a real edit does change the model's output distribution (so the identity check is not vacuous)
    edited = _ids(tiny_model, speech_prompt, plan_interventions("angle:all", states, speech_prompt))
    assert not torch.allclose(edited.scores[0], plain.scores[0])


def test_hooks_are_removed_after_an_exception(tiny_model):
    speech_prompt, _, states = tiny_model.prompts_and_states(_sample())
    plans = plan_interventions("angle:bottom3+length:all@1", states, speech_prompt)
    layers = tiny_model.decoder_layers()
    foreign = layers[0].register_forward_pre_hook(lambda m, a: None)  # someone else's hook stays
    counts = [len(layer._forward_pre_hooks) for layer in layers]

    def boom(module, args, kwargs):
        raise RuntimeError("boom inside the forward")

    try:
        with pytest.raises(RuntimeError, match="boom"):
            with intervention_hooks(tiny_model, plans):
                assert [len(layer._forward_pre_hooks) for layer in layers] == [c + 1 for c in counts]
                h = layers[1].register_forward_pre_hook(boom, with_kwargs=True)
                try:
                    tiny_model.generate_from_prompt(speech_prompt, 3)
                finally:
                    h.remove()
        assert [len(layer._forward_pre_hooks) for layer in layers] == counts
        assert foreign.id in layers[0]._forward_pre_hooks
        with pytest.raises(ValueError, match="plain error"):
            with intervention_hooks(tiny_model, plans):
                raise ValueError("plain error")
        assert [len(layer._forward_pre_hooks) for layer in layers] == counts
    finally:
        foreign.remove()
    assert tiny_model.lock.acquire(blocking=False)  # the model lock was released too
    tiny_model.lock.release()


# ============================================================================ LoRA and CUDA
def _tiny_checkpoint(tiny_parts, folder, with_lora: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lsl_core.model.adaptor import Adaptor, AdaptorConfig
    from lsl_core.model.loading import CheckpointManifest, write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    adaptor = Adaptor(AdaptorConfig(enc_dim=16, llm_dim=32, stack=5))
    save_file({k: v.contiguous() for k, v in adaptor.state_dict().items()}, str(folder / "adaptor.safetensors"))
    lora = None
    if with_lora:
        llm = AutoModelForCausalLM.from_pretrained(tiny_parts["llm"])
        peft = get_peft_model(llm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              init_lora_weights=False))
        peft.save_pretrained(folder / "lora", safe_serialization=True)
        lora = "lora"
    write_manifest(CheckpointManifest(name="tiny-iv", llm=str(tiny_parts["llm"]), encoder=str(tiny_parts["encoder"]),
                                      family="tiny", strategy="lora" if with_lora else "frozen", step=1,
                                      adaptor="adaptor.safetensors", lora=lora, downsample=5), folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lora_model(tiny_parts, tmp_path_factory):
    from lsl_core.model.loading import load_checkpoint

    return load_checkpoint(_tiny_checkpoint(tiny_parts, tmp_path_factory.mktemp("ivlora"), True), device="cpu", merge_lora=False)


def test_works_with_lora(tiny_lora_model):
    assert hasattr(tiny_lora_model.llm, "get_base_model"), "the LLM is a peft wrapper"
    for spec in ("angle:bottom3", "length:all@1", "calibrate:bottom3@1"):
        _check_edit(tiny_lora_model, _sample(), Intervention.parse(spec))
    s = _sample()
    speech_prompt, _, states = tiny_lora_model.prompts_and_states(s)
    plain = _ids(tiny_lora_model, speech_prompt)
    same = _ids(tiny_lora_model, speech_prompt, plan_interventions("angle:bottom0", states, speech_prompt))
    assert torch.equal(same.sequences, plain.sequences)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_works_on_cuda_bf16(tiny_parts, tmp_path):
    from lsl_core.model.loading import load_checkpoint

    model = load_checkpoint(_tiny_checkpoint(tiny_parts, tmp_path / "ck", True), device="cuda")
    assert model.dtype == torch.bfloat16
    for spec in ("angle:bottom3", "length:all@1", "calibrate:all"):
        iv = Intervention.parse(spec)
        speech_prompt, _, states = model.prompts_and_states(_sample())
        (plan,) = plan_interventions(iv, states, speech_prompt)
        before, after = _run_captured(model, speech_prompt, [plan], iv.layer)
        pos = plan.positions
        # float32 math, one cast back to bf16: identical to the plan's own float32 formula
        want = plan.edit_rows(before[0][:, pos].float()).to(torch.bfloat16)
        assert after[0].dtype == torch.bfloat16
        torch.testing.assert_close(after[0][:, pos], want, rtol=0, atol=0)
        others = [p for p in range(before[0].shape[1]) if p not in pos]
        assert torch.equal(after[0][:, others], before[0][:, others])
        assert all(torch.equal(a, b) for a, b in zip(before[1:], after[1:]))


# ============================================================================ side by side and Table 1
def test_side_by_side_scores_and_reuses_states(tiny_model):
    s = _sample()
    conds = ["angle:bottom3", "length:all@1:distance", "angle:bottom2+calibrate:bottom2"]
    sbs = generate_side_by_side(tiny_model, s, conds, max_new_tokens=5, cascade=False)
    assert sbs.cascade is None and sbs.transcript is None
    assert [a.condition for a in sbs.interventions] == [condition_label(c) for c in conds]
    assert sbs.text.agreement == 1.0 and sbs.references == ("paris",)
    for a in sbs.answers():
        assert 0.0 <= a.containment <= 1.0 and 0.0 <= a.f1 <= 1.0 and 0.0 <= a.agreement <= 1.0
    a0 = sbs.interventions[0]
    assert 1 <= len(a0.frames) <= 3 and len(a0.tokens) == 3
    row = sbs.rows()[2]
    assert row["frames"] == a0.frames and row["tokens"] == [sbs.tokens[j] for j in a0.tokens]
    assert row["frame_times"] == pytest.approx([sbs.frame_times[f] for f in a0.frames])
    states = tiny_model.hidden_states(s)
    again = generate_side_by_side(tiny_model, s, conds, max_new_tokens=5, states=states, cascade=False)
    assert [a.answer for a in again.answers()] == [a.answer for a in sbs.answers()]
    assert [a.frames for a in again.interventions] == [a.frames for a in sbs.interventions]
    no_refs = generate_side_by_side(tiny_model, _sample(answers=()), ["angle:all"], max_new_tokens=3, cascade=False)
    assert math.isnan(no_refs.speech.f1) and not math.isnan(no_refs.speech.agreement)


def test_evaluate_interventions_and_table1(tiny_model):
    samples = [_sample(1.3, sid="a"), _sample(1.0, "who wrote hamlet ?", "b", ("shakespeare",))]
    seen = []
    df = evaluate_interventions(tiny_model, samples, list(TABLE1_INTERVENTIONS), max_new_tokens=3,
                                progress=lambda d, n: seen.append((d, n)))
    assert seen == [(1, 2), (2, 2)]
    assert len(df) == 2 * (1 + len(TABLE1_INTERVENTIONS))
    assert list(df["condition"][:7]) == ["original", *TABLE1_INTERVENTIONS]
    t = table1(df)
    assert list(t.index) == ["Original", "Angle·Bottom3", "Angle·All", "Length·Bottom3", "Length·All",
                             "Calibrate·Bottom3", "Calibrate·All"]
    assert list(t.columns[:6]) == ["containment", "F1", "agreement", "Δ containment", "Δ F1", "Δ agreement"]
    assert (t.loc["Original", ["Δ containment", "Δ F1", "Δ agreement"]] == 0).all()
    want_f1 = df[df.condition == "length:all"]["f1"].mean() * 100
    want_orig = df[df.condition == "original"]["f1"].mean() * 100
    assert t.loc["Length·All", "F1"] == pytest.approx(want_f1)
    assert t.loc["Length·All", "Δ F1"] == pytest.approx(want_f1 - want_orig)
    assert (t["n"] == 2).all() and t.loc["Original", "frames"] == 0
    md = table1_markdown(t)
    assert md.count("\n") == len(t) + 1 and "Angle·Bottom3" in md
    with pytest.raises(LSLError, match="original"):
        evaluate_interventions(tiny_model, samples, ["original"], max_new_tokens=2)


# ============================================================================ the embedded default
@pytest.mark.slow
def test_embedded_default_edit_identity_and_cascade(embedded_model):
    """The real model: the layer-0 edit matches the formula, k=0 equals plain speech, cascade is present."""
    m = embedded_model
    s = _sample(1.5, "What is the capital of France?", answers=("Paris",))
    _check_edit(m, s, Intervention.parse("angle:bottom3"), atol=1e-6)
    sbs = generate_side_by_side(m, s, ["angle:bottom0", "length:bottom3"], max_new_tokens=6)
    assert sbs.interventions[0].answer == sbs.speech.answer
    assert m.has_asr and sbs.cascade is not None and isinstance(sbs.transcript, str)


# ============================================================================ the nulls (random, shuffled, other)
def _loop_path(hs: np.ndarray, ht: np.ndarray) -> list[int]:
    """Cosine path by explicit loops: for each text token j the frame with the highest cosine."""
    return [int(np.argmax([hs[i] @ ht[j] / (np.linalg.norm(hs[i]) * np.linalg.norm(ht[j]))
                           for i in range(hs.shape[0])])) for j in range(ht.shape[0])]


@pytest.mark.parametrize("spec,expect,title", [
    ("angle:random3", Intervention("angle", "random", 3), "Angle·Random3"),
    ("angle:all:shuffled", Intervention("angle", "all", pairing="shuffled"), "Angle·All (shuffled pairing)"),
    ("length:bottom2@1:other", Intervention("length", "bottom", 2, layer=1, pairing="other"),
     "Length·Bottom2 @ℓ1 (other question)"),
    ("angle:all:shuffled:distance", Intervention("angle", "all", metric="distance", pairing="shuffled"),
     "Angle·All (distance, shuffled pairing)"),
    ("calibrate:random4:other", Intervention("calibrate", "random", 4, pairing="other"),
     "Calibrate·Random4 (other question)"),
])
def test_null_grammar_round_trips(spec, expect, title):
    iv = Intervention.parse(spec)
    assert iv == expect and Intervention.parse(iv.label()) == iv and iv.title() == title


def test_null_grammar_errors():
    with pytest.raises(LSLError, match="span statistics"):
        Intervention.parse("calibrate:all:shuffled")  # nothing per frame to re-pair
    with pytest.raises(LSLError, match="neither a path metric"):
        Intervention.parse("angle:all:swapped")
    with pytest.raises(LSLError, match="pairing"):
        Intervention(pairing="random")


def test_derangement_moves_every_index():
    from lsl_core.interventions.plan import derangement

    rng = np.random.default_rng(0)
    assert derangement(1, rng).tolist() == [0] and derangement(0, rng).tolist() == []
    for n in range(2, 9):
        for _ in range(20):
            p = derangement(n, rng)
            assert sorted(p.tolist()) == list(range(n)) and (p != np.arange(n)).all()


def test_random_target_edits_the_path_frames_of_k_distinct_tokens(tiny_model):
    speech_prompt, _, states = tiny_model.prompts_and_states(_sample())
    tt = states.text.shape[1]
    iv = Intervention("angle", "random", 3, layer=1)
    plan = plan_intervention(iv, states, speech_prompt.span, speech_prompt.inputs_embeds.shape[1])
    assert len(set(plan.tokens)) == 3 and all(0 <= j < tt for j in plan.tokens)
    hs, ht = states.speech[1].double().numpy(), states.text[1].double().numpy()
    path = _loop_path(hs, ht)
    assert list(plan.frames) == sorted({path[j] for j in plan.tokens})
    want = [_target_ref([ht[j] for j in plan.tokens if path[j] == f]) for f in plan.frames]
    np.testing.assert_allclose(plan.targets.double().numpy(), np.stack(want), rtol=1e-5, atol=1e-6)
    again = plan_intervention(iv, states, speech_prompt.span, speech_prompt.inputs_embeds.shape[1])
    assert again.tokens == plan.tokens, "the draw is fixed per sample"
    draws = {plan_intervention(Intervention("angle", "random", 3, layer=ell), states, speech_prompt.span,
                               speech_prompt.inputs_embeds.shape[1]).tokens for ell in range(tiny_model.num_layers)}
    assert len(draws) > 1, "different layers draw different tokens"
    everything = plan_intervention(Intervention("angle", "random", tt + 5), states, speech_prompt.span,
                                   speech_prompt.inputs_embeds.shape[1])
    assert sorted(everything.tokens) == list(range(tt)), "k >= Tt takes every token"


def test_shuffled_pairing_keeps_the_frames_and_writes_other_tokens():
    """Hand-built states: the path puts token j on frame j; shuffled writes t_π(j) there, π a derangement."""
    d, n = 6, 5
    text = torch.eye(d)[:n] * torch.arange(1.0, n + 1)[:, None]  # token j along axis j, norm j+1
    speech = torch.eye(d)[:n] * 3.0 + 0.1  # frame i closest to token i
    st = HiddenStates(speech[None].expand(2, -1, -1), text[None].expand(2, -1, -1), np.arange(n) * 0.1, 0.1,
                      list("abcde"))
    path_plan = plan_intervention(Intervention("angle", "all"), st, slice(2, 2 + n), n + 4)
    plan = plan_intervention(Intervention("angle", "all", pairing="shuffled"), st, slice(2, 2 + n), n + 4)
    assert path_plan.frames == plan.frames == tuple(range(n))
    assert path_plan.frame_tokens == tuple((j,) for j in range(n))
    written = [js[0] for js in plan.frame_tokens]
    assert sorted(written) == list(range(n)) and all(written[f] != f for f in range(n))
    torch.testing.assert_close(plan.targets, text[written])
    assert plan.tokens == path_plan.tokens and plan.token_strings == path_plan.token_strings
    h = torch.randn(1, n + 4, d)
    out = plan.apply(h)
    torch.testing.assert_close(out[0, 2:2 + n], angle_projection(h[0, 2:2 + n], text[written]))
    one = HiddenStates(speech[None, :, :].expand(2, -1, -1), text[None, :1].expand(2, -1, -1), np.arange(n) * 0.1,
                       0.1, ["a"])
    lone = plan_intervention(Intervention("angle", "all", pairing="shuffled"), one, slice(2, 2 + n), n + 4)
    assert lone.frame_tokens == ((0,),), "one token has nothing to re-pair with"


def test_other_pairing_plans_against_the_donor_states(tiny_model):
    from dataclasses import replace

    from lsl_core.interventions import DonorText, donor_text

    s = _sample()
    speech_prompt, _, states = tiny_model.prompts_and_states(s)
    donor = donor_text(tiny_model, "who wrote hamlet and when ?", ["angle:all@1"], s.question)
    torch.testing.assert_close(donor.text, tiny_model.hidden_states(_sample(q=donor.question)).text)
    swapped = replace(states, text=donor.text, tokens=list(donor.tokens))
    T = speech_prompt.inputs_embeds.shape[1]
    for spec in ("angle:all@1", "length:bottom2", "calibrate:all@1"):
        iv = Intervention.parse(spec)
        got = plan_intervention(replace(iv, pairing="other"), states, speech_prompt.span, T, donor)
        want = plan_intervention(iv, swapped, speech_prompt.span, T)
        assert got.frames == want.frames and got.tokens == want.tokens and got.token_strings == want.token_strings
        for a, b in ((got.targets, want.targets), *zip(got.stats or (), want.stats or ())):
            if a is not None:
                torch.testing.assert_close(a, b)
    layer0 = donor_text(tiny_model, donor.question, ["angle:all"], s.question)
    torch.testing.assert_close(layer0.text[0], donor.text[0])  # the embeddings, without a forward
    with pytest.raises(LSLError, match="another question"):
        plan_intervention(Intervention("angle", "all", pairing="other"), states, speech_prompt.span, T)
    with pytest.raises(LSLError, match="DIFFERENT"):
        donor_text(tiny_model, s.question, ["angle:all:other"], s.question)
    assert isinstance(donor, DonorText)


def test_side_by_side_with_a_donor(tiny_model):
    s = _sample()
    with pytest.raises(LSLError, match="donor_question"):
        generate_side_by_side(tiny_model, s, ["angle:all:other"], 3, cascade=False)
    sbs = generate_side_by_side(tiny_model, s, ["angle:bottom2:other", "angle:bottom2"], 3, cascade=False,
                                donor_question="who wrote hamlet ?")
    other, own = sbs.interventions
    assert other.tokens == [] and len(other.token_text) == 2 and all(t.startswith("other: ") for t in other.token_text)
    assert own.token_text == [sbs.tokens[j] for j in own.tokens] and len(own.tokens) == 2
    assert other.frames and all(0 <= f < len(sbs.frame_times) for f in other.frames)


def test_table1_nulls_pair_each_condition_with_its_nulls(tiny_model):
    from lsl_core.experiments.table1 import TABLE1_NULLS, donor_questions, table1_nulls
    from lsl_core.interventions import intervention_nulls

    assert intervention_nulls("angle:bottom3") == [("angle:random3", "least-aligned tokens vs random ones"),
                                                   ("angle:bottom3:shuffled",
                                                    "each frame's own token vs another token of the question"),
                                                   ("angle:bottom3:other",
                                                    "this question's transcript vs another question's")]
    assert [n for n, _ in intervention_nulls("calibrate:all@2")] == ["calibrate:all@2:other"]
    assert intervention_nulls("angle:random3") == [] and intervention_nulls("angle:all+length:all") == []
    assert not set(TABLE1_NULLS) & set(TABLE1_INTERVENTIONS)
    assert donor_questions(["a", "a", "b", "c"]) == ["b", "b", "c", "a"]
    assert donor_questions(["a", "a "]) == [None, None] and donor_questions(["a", "b", "a"], at=[2]) == ["b"]

    samples = [_sample(1.3, sid="a"), _sample(1.0, "who wrote hamlet ?", "b", ("shakespeare",)),
               _sample(1.1, "how tall is everest ?", "c", ("8848",))]
    conds = ["angle:bottom3", "angle:random3", "angle:bottom3:other", "calibrate:all", "calibrate:all:other"]
    df = evaluate_interventions(tiny_model, samples, conds, max_new_tokens=3)
    assert list(df.drop_duplicates("sample_id")["donor_question"]) == [samples[1].question, samples[2].question,
                                                                      samples[0].question]
    t = table1_nulls(df)
    assert [(r.condition, r.null) for r in t.itertuples()] == [
        ("Angle·Bottom3", "Angle·Random3"), ("Angle·Bottom3", "Angle·Bottom3 (other question)"),
        ("Calibrate·All", "Calibrate·All (other question)")]
    for i, r in t.iterrows():
        for col, name in (("agreement", "agreement"), ("f1", "F1")):
            a = df[df.title == r["condition"]].set_index("sample_id")[col]
            b = df[df.title == r["null"]].set_index("sample_id")[col]
            diffs = 100 * (a - b.reindex(a.index))
            assert r[f"Δ {name}"] == pytest.approx(diffs.mean())
            assert diffs.min() - 1e-9 <= r[f"Δ {name}_lo"] <= r[f"Δ {name}"] <= r[f"Δ {name}_hi"] <= diffs.max() + 1e-9
    assert (t["n"] == 3).all()
    assert table1_nulls(df[~df.condition.str.contains("random|other")]).empty
    with pytest.raises(LSLError, match="donor"):
        evaluate_interventions(tiny_model, iter(samples), ["angle:all:other"], max_new_tokens=2)
    with pytest.raises(LSLError, match="no other question"):
        evaluate_interventions(tiny_model, samples[:1], ["angle:all:other"], max_new_tokens=2)


def test_table1_nulls_by_hand():
    """Four samples with chosen scores: Δ = mean of the paired differences, its interval inside their range."""
    import pandas as pd

    from lsl_core.experiments.table1 import nulls_markdown, table1_nulls

    cond = {"original": [0.1, 0.1, 0.1, 0.1], "angle:all": [0.5, 0.2, 0.9, 0.4],
            "angle:all:shuffled": [0.1, 0.2, 0.3, 0.4], "angle:all:other": [0.5, 0.2, 0.9, 0.4]}
    rows = [{"sample_id": f"s{i}", "condition": c, "title": Intervention.parse(c).title() if c != "original"
             else "Original", "containment": 0.0, "f1": v[i] / 2, "agreement": v[i], "n_frames": 3}
            for c, v in cond.items() for i in range(4)]
    df = pd.DataFrame(rows[:-1])  # the 'other' null lacks sample s3: compared on the three samples both have
    t = table1_nulls(df).set_index("null")
    sh, ot = t.loc["Angle·All (shuffled pairing)"], t.loc["Angle·All (other question)"]
    assert sh["Δ agreement"] == pytest.approx(25.0) and sh["Δ F1"] == pytest.approx(12.5) and sh["n"] == 4
    assert 0.0 <= sh["Δ agreement_lo"] < 25.0 < sh["Δ agreement_hi"] <= 60.0
    assert ot["Δ agreement"] == pytest.approx(0.0) and ot["Δ agreement_lo"] == ot["Δ agreement_hi"] == 0.0
    assert ot["n"] == 3 and sh["Δ containment"] == 0.0 and list(t["layer"]) == [0, 0]
    md = nulls_markdown(table1_nulls(df))
    assert "+25.0 [" in md and md.count("\n") == 3


def test_is_null_and_the_bar_table_without_nulls():
    import pandas as pd

    from lsl_core.experiments.table1 import table1, without_nulls
    from lsl_core.interventions import is_null

    assert [is_null(c) for c in ("original", "angle:bottom3", "length:all@2", "angle:all+length:all")] == [False] * 4
    assert [is_null(c) for c in ("angle:random3", "angle:bottom3:shuffled", "calibrate:all:other",
                                 "length:random2@3")] == [True] * 4
    conds = ["original", "angle:bottom3", "angle:random3", "angle:bottom3:other", "length:all"]
    rows = pd.DataFrame([{"sample_id": f"s{i}", "condition": c, "title": "Original" if c == "original" else
                          Intervention.parse(c).title(), "containment": 0.0, "f1": 0.1 * k, "agreement": 0.1 * k,
                          "n_frames": 3} for k, c in enumerate(conds) for i in range(2)])
    t = table1(rows)
    kept = without_nulls(t, rows)
    assert list(kept.index) == ["Original", "Angle·Bottom3", "Length·All"]
    pd.testing.assert_frame_equal(kept, t.loc[["Original", "Angle·Bottom3", "Length·All"]])  # rows untouched


def test_nulls_across_orders_checkpoints_by_step():
    """Two stored runs (the later checkpoint listed first): one table1_nulls per run, in step order; pairs held by
    one checkpoint only drop out with min_checkpoints=2; unknown steps go last."""
    import pandas as pd

    from lsl_core.experiments.table1 import nulls_across, table1_nulls

    def run(ck: str, res: str, conds: dict) -> list[dict]:
        return [{"checkpoint": ck, "results": res, "sample_id": f"s{i}", "condition": c,
                 "title": "Original" if c == "original" else Intervention.parse(c).title(), "containment": 0.0,
                 "f1": 0.0, "agreement": v[i], "n_frames": 3} for c, v in conds.items() for i in range(3)]

    late = run("ck-late", "table1", {"original": [0.1] * 3, "angle:bottom3": [0.5, 0.6, 0.7],
                                      "angle:random3": [0.1, 0.2, 0.3], "angle:all": [0.4] * 3,
                                      "angle:all:shuffled": [0.2] * 3})
    early = run("ck-early", "table1-early", {"original": [0.1] * 3, "angle:all": [0.3] * 3,
                                              "angle:all:shuffled": [0.3, 0.2, 0.4]})
    rows = pd.DataFrame(late + early)
    t = nulls_across(rows, {"ck-late": 2900, "ck-early": 100})
    assert list(dict.fromkeys(t["checkpoint"])) == ["ck-early", "ck-late"] and list(t["step"]) == [100, 2900, 2900]
    pd.testing.assert_frame_equal(t[t.checkpoint == "ck-late"].drop(columns=["checkpoint", "results", "step"])
                                  .reset_index(drop=True), table1_nulls(pd.DataFrame(late)))
    two = nulls_across(rows, {"ck-late": 2900, "ck-early": 100}, min_checkpoints=2)
    assert set(zip(two.condition, two.null)) == {("Angle·All", "Angle·All (shuffled pairing)")}
    assert two["Δ agreement"].tolist() == pytest.approx([0.0, 20.0])
    unknown = nulls_across(rows, {"ck-late": 2900})
    assert list(dict.fromkeys(unknown["checkpoint"])) == ["ck-late", "ck-early"]
    # a second run of ck-late holding the same pair (e.g. a layer sweep, at ℓ 0 too) on fewer samples: one point
    sweep = run("ck-late", "table1-layers", {"original": [0.1] * 3, "angle:all": [0.9] * 3,
                                             "angle:all:shuffled": [0.2] * 3, "angle:all@4": [0.4] * 3,
                                             "angle:all@4:shuffled": [0.1] * 3})
    sweep = [r for r in sweep if r["sample_id"] != "s2"]
    both = nulls_across(pd.DataFrame(late + sweep + early), {"ck-late": 2900, "ck-early": 100})
    held = both[both.null == "Angle·All (shuffled pairing)"]
    assert list(held.checkpoint) == ["ck-early", "ck-late"] and list(held.results) == ["table1-early", "table1"]
    assert held["Δ agreement"].tolist() == pytest.approx([0.0, 20.0])  # the 3-sample run, not the 2-sample one
    assert "Angle·All @ℓ4 (shuffled pairing)" in set(both.null)  # pairs only the sweep holds stay
    assert set(both.layer) == {0, 4} and set(nulls_across(pd.DataFrame(late + sweep), layer=4).null) == {
        "Angle·All @ℓ4 (shuffled pairing)"}
    assert set(nulls_across(pd.DataFrame(late + sweep), layer=0).layer) == {0}
