"""Widget values kept in session state (the user's selections) and handed back as each widget's default.

Every keyed widget is drawn with `index=`/`value=` equal to what the session holds (or the default
when it holds nothing valid). A widget the browser draws afresh (e.g. after a run was interrupted by
a click) then shows the session's value instead of its first option, so browser and server never
disagree about the selection.

Every keyed input widget also passes `persist_state="session"`: without it Streamlit drops the
value when the widget is not drawn in a run (another page, the sidebar showing the upload box, an
error above it), and the user's choice is lost (tests/test_app_state.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st


def choice(key: str, options: Sequence, default: Any = None) -> int:
    """Index for a selectbox/radio: the session's value if it is an option, else default (else the first)."""
    options = list(options)
    if not options:
        return 0
    v = st.session_state.get(key)
    if v not in options:
        st.session_state.pop(key, None)
        v = default if default in options else options[0]
    return options.index(v)


def value(key: str, default: Any) -> Any:
    """Value for a text input / checkbox: the session's value, else default."""
    v = st.session_state.get(key, default)
    return default if v is None else v


def subset(key: str, options: Sequence, default: Sequence = ()) -> list:
    """Default for a multiselect: the session's values that are still options."""
    v = st.session_state.get(key, list(default))
    keep = [x for x in (v or []) if x in options]
    if key in st.session_state and keep != v:
        st.session_state[key] = keep
    return keep


def integer(key: str, lo: int, hi: int, default: int) -> int:
    """Value for an integer slider / number input, clamped to [lo, hi] (the model may have changed)."""
    v = st.session_state.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        v = min(max(default, lo), hi)
        st.session_state.pop(key, None)
    elif not lo <= v <= hi:  # e.g. k beyond a shorter question's tokens: its nearest valid value, not the default
        v = min(max(v, lo), hi)
        st.session_state[key] = int(v)
    return int(v)
