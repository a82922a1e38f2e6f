"""Hooks (DESIGN §3): apply EditPlans during the prefill pass of generation, and nothing else.

intervention_hooks registers one forward pre-hook per plan on decoder_layers()[ℓ] (which receives
hidden_states[ℓ]); each hook edits only the prefill pass (sequence length >= prompt length; in a
left-padded batch of longer prompts its positions move right by the padding; decode steps have
length 1), so the KV cache carries the edit into decoding and decoding itself is never edited. It
removes exactly its own handles in `finally`, also on error. Generation goes through LSLM.generate_ids,
the one generation path.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Sequence

from lsl_core.errors import LSLError
from lsl_core.interventions.plan import EditPlan

if TYPE_CHECKING:  # pragma: no cover
    from lsl_core.model.lslm import LSLM, PromptInputs


def _prefill_hook(plan: EditPlan, rows: Sequence[int] | None = None):
    """A forward pre-hook (with_kwargs=True) editing hidden_states, positional or keyword."""

    def hook(module, args, kwargs):
        if args:
            h = args[0]
            new = plan.apply(h, rows)
            return None if new is h else ((new, *args[1:]), kwargs)
        if "hidden_states" in kwargs:
            h = kwargs["hidden_states"]
            new = plan.apply(h, rows)
            return None if new is h else (args, {**kwargs, "hidden_states": new})
        raise LSLError(
            f"Decoder layer {type(module).__name__} was called without hidden_states (positional or keyword); "
            "this backbone's layer signature is not supported by interventions."
        )

    return hook


@contextmanager
def intervention_hooks(model: "LSLM", plans: Sequence[EditPlan],
                       rows: Sequence[Sequence[int] | None] | None = None) -> Iterator[list[EditPlan]]:
    """Register one prefill pre-hook per plan (in order) on decoder_layers()[ℓ]; remove them on exit.

    Use as `model.generate_from_prompt(prompt, edit=intervention_hooks(model, plans))`. Only the
    handles registered here are removed, always (also when generation raises). rows[i] restricts
    plan i to those batch rows (None: every row).
    """
    layers = model.decoder_layers()
    rows = list(rows) if rows is not None else [None] * len(plans)
    if len(rows) != len(plans):
        raise LSLError(f"intervention_hooks got {len(plans)} plans but {len(rows)} row selections; pass one per plan.")
    for p in plans:
        if not 0 <= p.layer < len(layers):
            raise LSLError(f"Intervention layer {p.layer} is out of range 0..{len(layers) - 1} for this model.")
    handles = []
    try:
        for p, r in zip(plans, rows):
            handles.append(layers[p.layer].register_forward_pre_hook(_prefill_hook(p, r), with_kwargs=True))
        yield list(plans)
    finally:
        for h in handles:
            h.remove()


def generate_with_interventions(model: "LSLM", prompt: "PromptInputs", plans: Sequence[EditPlan],
                                max_new_tokens: int = 40, **gen_kwargs) -> str:
    """Greedy answer for the speech prompt with the plans applied during prefill."""
    return model.generate_from_prompt(prompt, max_new_tokens, edit=intervention_hooks(model, plans), **gen_kwargs)


def generate_conditions(model: "LSLM", prompt: "PromptInputs", conditions: Sequence[Sequence[EditPlan]],
                        max_new_tokens: int = 40, **gen_kwargs) -> list[str]:
    """One greedy answer per condition, all conditions in ONE batch (row b edited by conditions[b]).

    The prompt [1, T, d] is repeated B times (same length, so no padding) and generated through
    LSLM.generate_ids with the rows kept in order; an empty condition is the unedited prompt.
    Rows of one batch are computed alike, but batched kernels can round differently from a batch
    of 1, so in rare near-ties an answer may differ from generate_with_interventions (used by the
    app's side-by-side view, which is exact).
    """
    B = len(conditions)
    if B == 0:
        return []
    plans = [p for c in conditions for p in c]
    rows = [[b] for b, c in enumerate(conditions) for _ in c]
    return model.generate_answers([prompt] * B, max_new_tokens, batch_size=B, sort=False,
                                  edit=intervention_hooks(model, plans, rows), **gen_kwargs)
