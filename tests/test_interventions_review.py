"""Review of the interventions (DESIGN §3): hand-computed cases that pin down conventions the main tests
left open — a frame shared by several tokens, a constant dimension in calibration, left-padded batches,
contradictory grammar words, the case report's path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tone

from lsl_core.data.samples import Sample
from lsl_core.errors import LSLError
from lsl_core.interventions import (Intervention, intervention_hooks, parse_condition, plan_intervention,
                                    plan_interventions, statistical_calibration)
from lsl_core.model.lslm import HiddenStates


def _states(speech: torch.Tensor, text: torch.Tensor, layers: int = 2) -> HiddenStates:
    """speech [Ts, d], text [Tt, d] repeated over `layers` = L+1 layers."""
    ts, tt = speech.shape[0], text.shape[0]
    return HiddenStates(speech[None].repeat(layers, 1, 1), text[None].repeat(layers, 1, 1),
                        np.arange(ts) * 0.1, 0.1, [f"w{j}" for j in range(tt)])


# ============================================================================ a frame shared by several tokens
def _shared_frame_states() -> HiddenStates:
    """Tokens 0 and 1 (orthogonal, norm 2) both pick frame 0; token 2 (norm 3) picks frame 2."""
    text = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 0, 3.0]])  # [Tt=3, d=4]
    speech = torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0.5, 1.0]])  # [Ts=3, d]
    return _states(speech, text)


def test_length_on_a_shared_frame_gives_a_text_token_norm():
    """Length normalization gives a frame the norm of its text token; a frame picked by two tokens of norm 2
    gets norm 2 (their mean norm), not the norm √2 of their mean vector, which no token has."""
    states = _shared_frame_states()
    plan = plan_intervention(Intervention("length", "all"), states, slice(1, 4), 5)
    assert plan.frames == (0, 2) and plan.frame_tokens == ((0, 1), (2,))
    h = torch.zeros(1, 5, 4)
    h[0, 1:4] = states.speech[0]
    out = plan.apply(h)
    s0, s2 = h[0, 1], h[0, 3]
    torch.testing.assert_close(out[0, 1], s0 * 2.0 / s0.norm())  # norm 2, direction of s0
    torch.testing.assert_close(out[0, 3], s2 * 3.0 / s2.norm())  # one token: its own norm
    assert torch.equal(out[0, 2], h[0, 2])  # frame 1 is no token's path frame


def test_angle_on_a_shared_frame_takes_the_direction_of_the_mean():
    """Angle projection keeps ‖s‖ and takes the direction of the mean text state of the frame's tokens."""
    states = _shared_frame_states()
    plan = plan_intervention(Intervention("angle", "all"), states, slice(1, 4), 5)
    h = torch.zeros(1, 5, 4)
    h[0, 1:4] = torch.tensor([[3.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0.5]])
    out = plan.apply(h)
    torch.testing.assert_close(out[0, 1], 3.0 * torch.tensor([1.0, 1.0, 0, 0]) / math.sqrt(2))
    torch.testing.assert_close(out[0, 3], torch.tensor([0, 0, 0, 0.5]))


def test_frame_target_by_hand():
    """t̃ of a frame's tokens: one token itself; otherwise the mean's direction with the mean norm; states that
    cancel exactly take the first nonzero token's direction; all-zero states stay 0. float32 from half."""
    from lsl_core.interventions.plan import frame_target

    torch.testing.assert_close(frame_target(torch.tensor([[3.0, 4.0]])), torch.tensor([3.0, 4.0]))
    torch.testing.assert_close(frame_target(torch.tensor([[4.0, 0.0], [0.0, 2.0]])),
                               torch.tensor([2.0, 1.0]) / math.sqrt(5.0) * 3.0)
    torch.testing.assert_close(frame_target(torch.tensor([[0.0, 0.0], [2.0, 0.0], [-2.0, 0.0]])),
                               torch.tensor([4.0 / 3.0, 0.0]))
    torch.testing.assert_close(frame_target(torch.zeros(2, 3)), torch.zeros(3))
    assert frame_target(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float16)).dtype == torch.float32


# ============================================================================ calibration, σ_s = 0
def test_calibration_maps_a_constant_dimension_onto_the_text_mean():
    """σ_s = 0 in a dimension: that dimension maps onto μ_t whatever the live value (e.g. after an earlier edit
    of a composed condition); never (s − μ_s)/1e-6."""
    s = torch.tensor([[5.0, 1.0]])  # [n=1, d=2]
    out = statistical_calibration(s, torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0]),
                                  torch.tensor([7.0, 0.0]), torch.tensor([3.0, 2.0]))
    torch.testing.assert_close(out, torch.tensor([[7.0, 2.0]]))


def test_composed_calibration_after_angle_stays_finite():
    """angle:all+calibrate:all where the unedited speech span is constant in dimension 0: the calibrated
    frames take μ_t there (no 1e6 blow-up of the angle edit)."""
    speech = torch.tensor([[1.0, 0.2, 0.1], [1.0, -0.3, 0.4], [1.0, 0.5, -0.2]])  # dim 0 constant
    text = torch.tensor([[0.1, 1.0, 0.0], [0.2, 0.0, 1.0]])
    states = _states(speech, text)
    plans = [plan_intervention(iv, states, slice(1, 4), 5) for iv in parse_condition("angle:all+calibrate:all")]
    h = torch.zeros(1, 5, 3)
    h[0, 1:4] = speech
    out = plans[1].apply(plans[0].apply(h))
    mu_t = text.mean(0)
    for f in plans[1].frames:
        assert abs(float(out[0, 1 + f, 0]) - float(mu_t[0])) < 1e-6


# ============================================================================ left-padded batches
def _capture(model, layer: int, store: list, prepend: bool):
    def hook(module, args, kwargs):
        store.append((args[0] if args else kwargs["hidden_states"]).detach().clone())

    return model.decoder_layers()[layer].register_forward_pre_hook(hook, with_kwargs=True, prepend=prepend)


@pytest.mark.parametrize("layer", [0, 1])
def test_a_left_padded_batch_edits_each_row_at_its_own_positions(tiny_model, layer):
    """Prompts of different lengths in one left-padded generate_ids batch: each row's plan edits its own frames,
    shifted by that row's padding, exactly as the plan edits the unpadded prompt (no row silently unedited)."""
    q = "what is the capital of france ?"
    short, long_ = (Sample(id=f"s{i}", audio=tone(sec), sr=16_000, question=q, answers=("paris",))
                    for i, sec in enumerate((1.0, 1.6)))
    prompts, plans = [], []
    for s in (short, long_):
        sp, _, st = tiny_model.prompts_and_states(s)
        prompts.append(sp)
        plans += plan_interventions(f"angle:all@{layer}", st, sp)
    lens = [p.inputs_embeds.shape[1] for p in prompts]
    assert lens[0] < lens[1]
    T = max(lens)
    before, after = [], []
    with intervention_hooks(tiny_model, plans, rows=[[0], [1]]):
        handles = [_capture(tiny_model, layer, before, True), _capture(tiny_model, layer, after, False)]
        try:
            tiny_model.generate_ids(prompts, 2, batch_size=2, sort=False)
        finally:
            for hd in handles:
                hd.remove()
    assert before[0].shape[1] == T
    for b, (p, n) in enumerate(zip(plans, lens)):
        pad = T - n
        live = before[0][b:b + 1, pad:]  # [1, n, d] the row's real positions
        want = p.apply(live)  # the plan on the unpadded row
        assert not torch.equal(want, live)
        torch.testing.assert_close(after[0][b:b + 1, pad:], want, rtol=0, atol=0)
        assert torch.equal(after[0][b, :pad], before[0][b, :pad]), "padding positions are untouched"
    for bf, af in zip(before[1:], after[1:]):
        assert torch.equal(af, bf), "decode steps are never edited"


def test_edits_without_the_kv_cache_are_refused(tiny_model):
    """A longer pass is read as a left-padded prefill; without the cache every step re-runs prompt + answer (longer
    on the right), which the plan would edit at shifted positions: refused with one message."""
    sp, _, st = tiny_model.prompts_and_states(Sample(id="s", audio=tone(1.0), sr=16_000, question="who is it ?"))
    plans = plan_interventions("angle:all", st, sp)
    with pytest.raises(LSLError, match="use_cache"):
        tiny_model.generate_ids([sp], 2, edit=intervention_hooks(tiny_model, plans), use_cache=False)
    assert tiny_model.generate_ids([sp], 2, use_cache=False)  # no edit: allowed

# ============================================================================ the grammar
@pytest.mark.parametrize("spec,word", [
    ("angle:all:cosine:distance", "metric"),
    ("angle:all:shuffled:other", "pairing"),
    ("angle:all@1:distance@2", "layer"),
    ("angle:all:distance:distance", "metric"),
])
def test_a_word_given_twice_is_refused(spec, word):
    """Contradictory (or repeated) words are one clear error, not the last one silently winning."""
    with pytest.raises(LSLError, match=word) as e:
        parse_condition(spec)
    assert "twice" in str(e.value) and spec in str(e.value)


# ============================================================================ the case report's heatmap
def _boxed_cells(fig) -> list[tuple[int, float]]:
    """(token j, y) of the 'edited frame/token' square markers of viz.token_heatmap."""
    out = []
    for tr in fig.data:
        if getattr(tr, "name", None) == "edited frame/token" and tr.showlegend:
            out += [(int(x), float(y)) for x, y in zip(tr.x, tr.y)]
    return out


def test_case_report_boxes_only_cells_the_intervention_edited_with_a_dtw_analysis(tiny_model, monkeypatch):
    """The interventions target the argmax path (DESIGN §3); with a DTW analysis the report's heatmap must not box
    the DTW path cell of an edited token as edited when that cell's frame was not edited, and must say so."""
    from lsl_core import case_report, viz
    from lsl_core.analysis import AnalysisOptions, analyze_sample
    from lsl_core.interventions import generate_side_by_side

    s = Sample(id="dtw", audio=tone(1.6), sr=16_000, question="who wrote hamlet in one short sentence ?",
               answers=("shakespeare",))
    a = analyze_sample(tiny_model, s, AnalysisOptions(path="dtw"), cache=False)
    sbs = generate_side_by_side(tiny_model, s, ["angle:all"], max_new_tokens=2, cascade=False)
    rows = case_report.rows_from_side_by_side(sbs)
    edited = sbs.interventions[0]
    dtw = np.asarray(a.path_cos[0])
    assert any(int(dtw[j]) not in edited.frames for j in edited.tokens), "the case needs a DTW cell off the edit"
    figs = []
    real = viz.token_heatmap
    monkeypatch.setattr(viz, "token_heatmap", lambda *args, **kw: figs.append(real(*args, **kw)) or figs[-1])
    page = case_report.case_report_html(s, a, rows, condition="angle:all", layer=0)
    starts = np.asarray(a.frame_times)
    for j, y in _boxed_cells(figs[0]):
        frame = int(np.argmin(np.abs(starts + a.frame_seconds / 2 - y)))
        assert frame in edited.frames, f"token {j}: boxed cell at frame {frame}, which the intervention did not edit"
    assert "argmax path" in page


@pytest.mark.parametrize("rows", [[2], [-1]])
def test_rows_outside_the_batch_are_refused(rows):
    """A row selection outside the batch is one clear error (a negative row silently edited the last row)."""
    plan = plan_intervention(Intervention("length", "all"), _shared_frame_states(), slice(1, 4), 5)
    h = torch.randn(2, 5, 4)
    with pytest.raises(LSLError, match="batch rows"):
        plan.apply(h, rows)
    out = plan.apply(h, [1])  # a row inside the batch: only that row is edited
    assert torch.equal(out[0], h[0]) and not torch.equal(out[1], h[1])


@pytest.mark.parametrize("target, extra", [("all", {}), ("span", {}), ("frames", {"frames": (1, 2)})])
def test_k_of_a_target_that_does_not_read_it_does_not_split_equal_edits(target, extra):
    """Intervention('angle', 'all', k=5) edits what 'angle:all' edits; it now compares (and hashes) equal and
    round-trips through its label (it kept k=5, so parse(label()) != self)."""
    iv = Intervention("angle", target, k=5, **extra)
    assert Intervention.parse(iv.label()) == iv == Intervention("angle", target, **extra)
    assert hash(iv) == hash(Intervention.parse(iv.label()))
    assert Intervention("angle", "bottom", k=5) != Intervention("angle", "bottom")  # k still counts where read
