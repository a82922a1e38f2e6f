"""Interventions across layers: at which depth of the LLM an edit moves the speech answers.

The seed paper edits the speech frames at the LLM input (ℓ = 0). The same edit can be made at the input of
any decoder layer ℓ (prefill only; the KV cache carries it into decoding). `table1 --layers 0 4 8 …` runs
each given condition at every listed layer (at_layers), and layer_profile(rows) reads the rows back: per
intervention and layer, its Δ against the unedited speech answer and against each of its nulls run at the
same layer (random tokens, shuffled pairing, another question), each with its 95% bootstrap interval paired
on samples. viz.intervention_layers draws it; the Benchmark page shows it for stored and live runs.

    python -m lsl_core table1 --n 60 --interventions angle:all angle:all:shuffled angle:all:other \\
        --layers 0 4 8 12 16 20 24 28 --out assets/results --name table1-layers
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import pandas as pd

from lsl_core.errors import LSLError
from lsl_core.interventions import ORIGINAL, Intervention, intervention_nulls, null_kind, parse_condition
from lsl_core.metrics.stats import PAIRED_DELTA_COLUMNS, paired_delta

# what each row of a profile is compared with: the unedited speech answer, or one null kind (NULL_TESTS' keys)
VERSUS = {"original": "unedited speech", "random": "random tokens", "shuffled": "shuffled pairing",
          "other": "other question"}
COLUMNS = ("intervention", "family", "layer", "versus", "tests", *PAIRED_DELTA_COLUMNS)


def at_layers(conditions: Sequence[str], layers: Sequence[int]) -> list[str]:
    """Each condition at every layer of `layers` (its own @ℓ replaced), condition-major, as labels:
    ['angle:all', 'angle:all:shuffled'] × [0, 4] -> ['angle:all', 'angle:all@4', 'angle:all:shuffled',
    'angle:all@4:shuffled']. Composed conditions ('a+b') are refused: which of their parts would move?"""
    if not layers:
        raise LSLError("at_layers needs at least one layer (e.g. --layers 0 4 8).")
    bad = [ell for ell in layers if int(ell) < 0]
    if bad:
        raise LSLError(f"Layers must be >= 0 (0 = the LLM input); got {bad}.")
    out: list[str] = []
    for cond in conditions:
        ivs = parse_condition(cond)
        if len(ivs) != 1:
            raise LSLError(f"--layers moves one intervention at a time; {cond!r} is composed of {len(ivs)}. "
                           "Give its parts separately, or run it without --layers.")
        out += [replace(ivs[0], layer=int(ell)).label() for ell in dict.fromkeys(layers)]
    return out


def _families(conditions: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    """Interventions (not nulls, not composed) by family (label at ℓ 0) -> [(layer, condition)] in order."""
    families: dict[str, list[tuple[int, str]]] = {}
    for cond in dict.fromkeys(conditions):
        if cond == ORIGINAL or null_kind(cond) is not None:
            continue
        ivs = parse_condition(cond)
        if len(ivs) == 1:
            families.setdefault(replace(ivs[0], layer=0).label(), []).append((ivs[0].layer, cond))
    return families


def has_profile(conditions: Sequence[str], min_layers: int = 2) -> bool:
    """Whether layer_profile of rows with these conditions is not empty (no scores needed): some intervention
    ran at min_layers layers."""
    return any(len({ell for ell, _ in runs}) >= min_layers for runs in _families(conditions).values())


def layer_profile(rows: pd.DataFrame, min_layers: int = 2) -> pd.DataFrame:
    """Per intervention (not a null) run at >= min_layers layers: one row per layer and comparison.

    rows: evaluate_interventions' rows of one run (sample_id, condition, title, containment, f1, agreement;
    'original' included; one row per sample and condition, else LSLError). Columns: intervention (its title
    at ℓ 0, e.g. 'Angle·All'), family (its label at ℓ 0), layer, versus (VERSUS: 'unedited speech' or the
    null's kind), tests (what that null breaks; '' for the unedited answer), then paired_delta's Δ <metric>
    (percentage points), its 95% interval and n.
    Ordered by intervention (first appearance), versus (VERSUS' order), layer. Empty when no intervention
    ran at min_layers layers.
    """
    missing = [c for c in ("sample_id", "condition", "title") if c not in rows.columns]
    if missing:
        raise LSLError(f"layer_profile needs evaluate_interventions' rows; missing columns {missing}.")
    if rows.duplicated(["condition", "sample_id"]).any():  # paired_delta pairs one row per sample
        runs = f" of {rows['checkpoint'].nunique()} checkpoints" if "checkpoint" in rows.columns else ""
        raise LSLError(f"layer_profile: a sample appears twice under one condition: these are the rows of several "
                       f"runs{runs}. Pass one run's rows (e.g. rows[rows['checkpoint'] == name]).")
    by_cond = {c: rows[rows["condition"] == c].set_index("sample_id") for c in dict.fromkeys(rows["condition"])}
    families = _families(list(by_cond))
    out = []
    for family, runs in families.items():
        if len({ell for ell, _ in runs}) < min_layers:
            continue
        title = Intervention.parse(family).title()
        for ell, cond in runs:
            if ORIGINAL in by_cond:
                out.append({"intervention": title, "family": family, "layer": ell, "versus": VERSUS["original"],
                            "tests": "", **paired_delta(by_cond[cond], by_cond[ORIGINAL])})
            for null, tests in intervention_nulls(cond):
                if null in by_cond:
                    out.append({"intervention": title, "family": family, "layer": ell,
                                "versus": VERSUS[null_kind(null)], "tests": tests,
                                **paired_delta(by_cond[cond], by_cond[null])})
    t = pd.DataFrame(out, columns=list(COLUMNS))
    if t.empty:
        return t
    order = {v: k for k, v in enumerate(VERSUS.values())}
    first = {f: k for k, f in enumerate(families)}
    key = t["family"].map(first) * 100 + t["versus"].map(order)
    return t.assign(_k=key).sort_values(["_k", "layer"], kind="stable").drop(columns="_k").reset_index(drop=True)


def profile_markdown(t: pd.DataFrame, metric: str = "agreement", digits: int = 1) -> str:
    """A GitHub-markdown table of layer_profile: one line per intervention and comparison, one column per
    layer, each cell Δ <metric> [95% CI]."""
    col = f"Δ {metric}"
    layers = sorted(set(t["layer"]))
    lines = ["| intervention | Δ against | " + " | ".join(f"ℓ {ell}" for ell in layers) + " |",
             "|---|---|" + "---:|" * len(layers)]
    for (title, versus), g in t.groupby(["intervention", "versus"], sort=False):
        cells = []
        for ell in layers:
            r = g[g["layer"] == ell]
            cells.append("–" if r.empty else f"{r[col].iloc[0]:+.{digits}f} [{r[f'{col}_lo'].iloc[0]:+.{digits}f}, "
                                             f"{r[f'{col}_hi'].iloc[0]:+.{digits}f}]")
        lines.append(f"| {title} | {versus} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

