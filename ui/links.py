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
_READ = "_url_read"  # session_state: URL parameters a seed has read (the rest wait in the URL for their page)
_run = threading.local()  # parameters wanted by the current script run (one thread per run)


def seed(key: str, param: str, convert: Callable[[str], Any] = str,
         valid: Callable[[Any], bool] = lambda v: True, *, say: bool = True) -> str | None:
    """Before creating widget `key`: on its first run in this session, take its value from ?param=.

    Returns the link's raw value when it was refused, else None; a refused value is said in a warning (the
    widget keeps its default) unless say=False (the caller says it in its own words).
    """
    seeded = st.session_state.setdefault(_SEEDED, set())
    if key in seeded:
        return None
    seeded.add(key)
    st.session_state.setdefault(_READ, set()).add(param)
    raw = st.query_params.get(param)
    if raw is None or raw == "":
        return None
    try:
        value = convert(raw)
        ok = valid(value)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        if say:
            st.warning(f"This link's {param}={raw!r} is not valid here, so the default is shown instead; fix or "
                       f"remove '{param}' in the link, or pick a value below.", icon=":material/link_off:")
        return raw
    st.session_state[key] = value
    return None


def seed_once(name: str, param: str | None = None) -> bool:
    """True the first time `name` is asked in this session (for seeding something that is not a widget from the
    URL parameter `param`, default: name)."""
    seeded = st.session_state.setdefault(_SEEDED, set())
    if name in seeded:
        return False
    seeded.add(name)
    st.session_state.setdefault(_READ, set()).add(param or name)
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
    """Write this run's parameters into the URL (only when they changed). A parameter of the opened link that no
    seed has read yet stays: its page has not drawn its widgets (e.g. it waits for an upload, a model that loads,
    a sample set), and the link's settings are applied when it does."""
    params = current()
    read = st.session_state.get(_READ, set())
    for k, v in st.query_params.to_dict().items():
        if k not in params and k not in read:
            params[k] = v
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def _base_name(file_name: str | None) -> str:
    """The last part of a client-sent file name (either slash), without leading dots."""
    return str(file_name or "").replace("\\", "/").rsplit("/", 1)[-1].lstrip(".")


def bundle_file_name(file_name: str | None) -> str:
    """The bundle's download name, safe on every OS ('my clip?.wav' -> 'my_clip_with_question.zip')."""
    from ui.export import file_name as safe_name

    stem = _base_name(file_name).rsplit(".", 1)[0] or "clip"
    return safe_name(f"{stem}_with_question", "zip")


def upload_bundle(file_name: str, data: bytes, question: str, answers: tuple[str, ...] = ()) -> bytes:
    """A zip with the uploaded clip as it was uploaded and a text file with its question (and answers)."""
    import io
    import zipfile

    base = _base_name(file_name) or "clip.wav"  # no folders or '..' inside the zip
    if base == "question.txt":
        base = "clip_question.txt"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(base, data)
        z.writestr("question.txt", "question: " + question + "\n"
                   + (f"reference answers: {' | '.join(answers)}\n" if answers else "")
                   + "Re-upload: choose 'Upload one clip' in the sidebar, upload the audio file and paste the question.\n")
    return buf.getvalue()


def render_box(box, sel) -> None:
    """The sidebar's 'Link to this view': the URL, and for an uploaded clip why it cannot travel in the link
    plus the clip and its question as a download to re-upload (app.py, at the end of every run)."""
    box.code(share_url(), language=None, wrap_lines=True)
    upload = getattr(sel, "upload", None)
    if upload is None:
        box.caption("Reopens this page with the same model, sample, layer and intervention.")
        return
    box.warning("This view uses an uploaded clip, and a clip cannot travel in a link: the link reopens the model, "
                "page and settings with an empty upload box. Send the clip and its question along (download below); "
                "the receiver uploads them in the sidebar.", icon=":material/link_off:")
    name, data = getattr(sel, "upload_file", None) or (f"{upload.id}.wav", b"")
    box.download_button("Clip + question (.zip)", upload_bundle(name, data, upload.question, upload.answers),
                        file_name=bundle_file_name(name), mime="application/zip", key="dl_upload_bundle",
                        on_click="ignore", icon=":material/download:")


def share_url() -> str:
    """The absolute link to the current view (relative '?…' when the browser URL is unknown)."""
    base = st.context.url or ""
    query = urlencode(current())
    return f"{base}?{query}" if query else (base or "?")
