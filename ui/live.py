"""One chooser for a per-checkpoint table that comes either from stored results (a results folder) or is
computed live, on request, over n samples of the sidebar's set that the table picks (the Checkpoints page's
alignment metrics: the first n; its controls: n spread over distinct questions).

Widget keys share a prefix: `{key}_source` (the radio), `{key}_n` (samples), `{key}_run` (the button), and the
session holds the pressed request under `{key}_request`, so a re-run of the page computes nothing new until the
button is pressed for these checkpoints and samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from ui import state

STORED, LIVE = "stored results", "compute live"


@dataclass(frozen=True)
class LiveTable:
    """What differs between the live tables: labels, sample choice and the computation."""

    key: str  # widget-key prefix
    label: str  # the radio's label, e.g. "Alignment metrics from"
    none_hint: str  # shown when neither stored results nor a sample set are there
    run_label: str  # the button's label before ": N checkpoints × M samples"
    run_help: str
    wait: str  # caption until the button is pressed
    n_label: str
    n_help: str
    n_min: int
    n_default: int
    pick: Callable[[Any, int], tuple[str, ...]]  # (sample set, n) -> sample ids
    compute: Callable[[tuple, tuple, Any], tuple[pd.DataFrame, list[str]]]  # (roots, ids, subset) -> rows, notes


def _request(key: str, roots: tuple, ids: tuple) -> None:
    st.session_state[f"{key}_request"] = {"roots": roots, "ids": ids}


def stored_or_live(spec: LiveTable, sel, manifests, stored: pd.DataFrame | None,
                   folder: str) -> tuple[pd.DataFrame | None, str]:
    """The table's rows and where they came from, or (None, "") while there is nothing to show yet."""
    sources = ([STORED] if stored is not None else []) + ([LIVE] if sel.sample_set is not None else [])
    if not sources:
        st.info(spec.none_hint)
        return None, ""
    k = spec.key
    source = st.radio(spec.label, sources, index=state.choice(f"{k}_source", sources), horizontal=True,
                      key=f"{k}_source", persist_state="session")
    if source == STORED:
        return stored, f"stored results ({folder})"
    if not len(sel.sample_set):  # the sidebar's filters match no sample (it says so there too)
        st.info(sel.set_hint or "No sample of the sidebar's set matches its filters; widen them.")
        return None, ""
    if len(sel.sample_set) < spec.n_min:
        st.info(f"{spec.run_label} needs at least {spec.n_min} samples; the sidebar's set holds "
                f"{len(sel.sample_set)}: widen its search and voice filters.")
        return None, ""
    n_max = max(spec.n_min, len(sel.sample_set))
    c1, c2 = st.columns([1, 3])
    n = c1.number_input(spec.n_label, spec.n_min, n_max,
                        value=state.integer(f"{k}_n", spec.n_min, n_max, min(spec.n_default, n_max)),
                        key=f"{k}_n", persist_state="session", help=spec.n_help)
    ids = tuple(spec.pick(sel.sample_set, int(n)))
    roots = tuple(m.root for m in manifests)
    c2.button(f"{spec.run_label}: {len(roots)} checkpoints × {len(ids)} samples", type="primary",
              on_click=_request, args=(k, roots, ids), key=f"{k}_run", help=spec.run_help)
    req = st.session_state.get(f"{k}_request")
    if not req or req["roots"] != roots or req["ids"] != ids:
        st.caption(spec.wait)
        return None, ""
    rows, notes = spec.compute(roots, ids, sel.sample_set.filter(ids=ids))
    for note in notes:
        st.warning(note)
    return (rows if len(rows) else None), f"computed live on {len(ids)} samples of {sel.set_spec}"


def live_request(key: str, source: str) -> dict | None:
    """The pressed request {'roots', 'ids'} behind rows that stored_or_live computed live (source as it returned
    it), None for stored rows: what a reader needs to compute the same rows again."""
    if source.startswith(STORED):
        return None
    return st.session_state.get(f"{key}_request")
