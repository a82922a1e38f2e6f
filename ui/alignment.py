"""The alignment path method as one app-wide choice: "argmax" (each token's best frame, seed 001) or
"dtw" (a monotone path, seed 000). One session key (the Sample Explorer's radio), seeded once from ?path= and
written back to the URL (absent = argmax). The Interventions page stays on the argmax path: lsl_core's
interventions pick their frames on it (interventions/plan.py)."""

from __future__ import annotations

import streamlit as st

from lsl_core.metrics.tokenwise import PATH_METHODS
from ui import links, state

KEY = "path_method"
LABEL = "Alignment path"
HELP = ("argmax: each text token takes its best frame (argmax cosine / argmin distance). "
        "dtw: dynamic time warping over 1 − cosine (or the distance) gives a monotone path through all "
        "frames; each token takes the best of the frames the path visits with it. Path scores, Spearman, "
        "APS and CKA pairs on this page follow this choice; the controls and the Interventions page use the "
        "argmax path (the interventions pick their frames on it).")


def current() -> str:
    """The chosen method before its widget is drawn (the analysis runs first): URL seed, session, else argmax."""
    links.seed(KEY, "path", str, lambda v: v in PATH_METHODS)
    value = st.session_state.get(KEY)
    return value if value in PATH_METHODS else PATH_METHODS[0]


def radio(container=st) -> str:
    """Draw the choice (horizontal radio) in `container` and put it in the link; returns the method."""
    value = container.radio(LABEL, PATH_METHODS, index=state.choice(KEY, PATH_METHODS, current()), key=KEY,
                            horizontal=True, persist_state="session", help=HELP)
    links.want(path=None if value == PATH_METHODS[0] else value)
    return value
