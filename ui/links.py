"""Query parameters: the URL always holds the current view, so it is the link that reopens it.

    ?model=<checkpoint name>&set=<sample set spec>&sample=<sample id>&layer=12&metric=cosine&iv=angle:bottom3

A fresh session (someone opening a link) seeds the widgets from the URL once (`seed`); after that
the widgets rule and every run writes them back (`want` during the run, `flush` at its end, from
app.py). Invalid values are ignored: the widget keeps its default.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import streamlit as st

_SEEDED = "_url_seeded"  # session_state: widget keys already seeded from the URL in this session
_run = threading.local()  # parameters wanted by the current script run (one thread per run)


def seed(key: str, param: str, convert: Callable[[str], Any] = str,
         valid: Callable[[Any], bool] = lambda v: True) -> None:
    """Before creating widget `key`: on its first run in this session, take its value from ?param=."""
    seeded = st.session_state.setdefault(_SEEDED, set())
    if key in seeded:
        return
    seeded.add(key)
    raw = st.query_params.get(param)
    if raw is None or raw == "":
        return
    try:
        value = convert(raw)
    except (TypeError, ValueError):
        return
    if valid(value):
        st.session_state[key] = value


def seed_once(name: str) -> bool:
    """True the first time `name` is asked in this session (for seeding something that is not a widget)."""
    seeded = st.session_state.setdefault(_SEEDED, set())
    if name in seeded:
        return False
    seeded.add(name)
    return True


def begin() -> None:
    """Start collecting this run's parameters (app.py, before the sidebar)."""
    _run.params = {}


def want(**params: Any) -> None:
    """Parameters this run shows (None drops one)."""
    store = getattr(_run, "params", None)
    if store is None:
        store = _run.params = {}
    for k, v in params.items():
        if v is None:
            store.pop(k, None)
        else:
            store[k] = str(v)


def current() -> dict[str, str]:
    return dict(getattr(_run, "params", {}) or {})


def flush() -> None:
    """Write this run's parameters into the URL (only when they changed)."""
    params = current()
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def share_url() -> str:
    """The absolute link to the current view (relative '?…' when the browser URL is unknown)."""
    base = st.context.url or ""
    query = urlencode(current())
    return f"{base}?{query}" if query else (base or "?")
