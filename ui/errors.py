"""One way to show a problem: an LSLError's message as-is (it names the fix); anything else with details."""

from __future__ import annotations

from contextlib import contextmanager

import streamlit as st

from lsl_core.errors import LSLError


def show(exc: BaseException, what: str = "") -> None:
    """st.error with the user-facing message; unexpected errors add the traceback in an expander."""
    prefix = f"{what}: " if what else ""
    if isinstance(exc, LSLError):
        st.error(prefix + str(exc), icon=":material/warning:")
        return
    st.error(f"{prefix}unexpected {type(exc).__name__}: {exc}", icon=":material/error:")
    with st.expander("Details"):
        st.exception(exc)


@contextmanager
def guard(what: str = ""):
    """`with guard("Loading results"): ...` shows the error and swallows it, so the page keeps going.

    Streamlit's own control flow (st.rerun/st.stop raise BaseException subclasses) passes through.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - shown to the user, page continues
        show(exc, what)
