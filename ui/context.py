"""What a page needs from the sidebar's selection, each step showing a clear message when it fails.

    sel = context.selection()
    sample = context.require_sample(sel)            # None -> a message is on the page
    handle = context.require_model(sel)             # None -> a message is on the page
    a = context.analysis(handle, sel, sample)       # None -> a message is on the page
"""

from __future__ import annotations

import streamlit as st

from lsl_core.analysis import AnalysisOptions, SampleAnalysis
from lsl_core.errors import LSLError
from lsl_core.model.families import transcript_source
from ui import config, errors, loaders, sidebar
from ui.loaders import ModelHandle
from ui.sidebar import Selection


def selection() -> Selection:
    return sidebar.current()


def require_sample(sel: Selection):
    """The selected Sample, or None after showing why there is none (a bad set or upload is explained once,
    in the sidebar next to the control that fixes it; the page only points there)."""
    if sel.set_error is not None:
        what = "The uploaded clip was refused" if sel.set_spec == "upload" else "The sample set could not be read"
        st.info(f"{what}: the message in the sidebar says why and what to do.", icon=":material/arrow_back:")
        return None
    if sel.set_hint:
        st.info(sel.set_hint, icon=":material/arrow_back:")
        return None
    try:
        sample = sel.sample()
    except LSLError as exc:
        errors.show(exc, f"Sample {sel.sample_id}")
        return None
    if sample is None:
        st.info("Pick a sample in the sidebar.", icon=":material/arrow_back:")
    return sample


def require_model(sel: Selection) -> ModelHandle | None:
    """The selected model (loaded once per process), or None after showing why it failed."""
    if sel.model_root is None:
        st.info("No model to show: the message in the sidebar says why and what to do.",  # said once, there
                icon=":material/arrow_back:")
        return None
    try:
        with st.spinner(f"Loading {sel.model_name} (once per server process) …"):
            return loaders.load_model(sel.model_root, config.device())
    except Exception as exc:  # noqa: BLE001 - every load failure is shown, the sidebar keeps working
        errors.show(exc, f"Could not load the model '{sel.model_name}'")
        st.caption("Pick another checkpoint in the sidebar, or fix the manifest and reload the page.")
        return None


def sample_key(sel: Selection, sample) -> str:
    return loaders.sample_key(sel.set_spec or "", sample)


def analysis(handle: ModelHandle, sel: Selection, sample, options: AnalysisOptions = AnalysisOptions()
             ) -> SampleAnalysis | None:
    """Every metric of the sample for all layers (cached), or None after showing the error."""
    try:
        with st.spinner("Hidden states of speech and text, metrics for every layer …"):
            return loaders.sample_analysis(handle.key, sample_key(sel, sample), options.key(), handle.model,
                                           sample, options)
    except Exception as exc:  # noqa: BLE001
        errors.show(exc, "Analysis failed")
        return None


def sample_header(sample, handle: ModelHandle | None = None):
    """Audio player, question, reference answers, voice; returns a slot for the ASR transcript."""
    c1, c2 = st.columns([2, 3])
    with c1:
        st.audio(sample.audio, sample_rate=sample.sr)
        if sample.source != "upload":  # an upload's warnings are already next to the uploader
            for w in sample.meta.get("audio_warnings", []):
                st.warning(w, icon=":material/graphic_eq:")
        st.caption(f"{sample.duration:.2f} s · voice/accent: {sample.accent or '—'}"
                   + (" (synthetic speech)" if sample.accent.startswith("espeak:") else "") + f" · id `{sample.id}`")
    with c2:
        st.markdown(f"**Question (text input):** {sample.question}")
        refs = " | ".join(sample.answers) if sample.answers else "— (no reference answers)"
        st.markdown(f"**Reference answers:** {refs}")
        slot = st.empty()
    return slot


def fill_transcript(slot, handle: ModelHandle, sel: Selection, sample) -> None:
    """Fill the header's slot with the ASR transcript (called last, so figures render first)."""
    if not handle.model.has_asr:
        slot.caption("ASR transcript: this checkpoint's encoder has no ASR decoder.")
        return
    try:
        with slot.container():
            with st.spinner("ASR transcript …"):
                text = loaders.transcript(handle.key, sample_key(sel, sample), handle.model, sample)
        slot.markdown(f"**ASR transcript** ({transcript_source(handle.model)}): {text or '∅'}")
    except Exception as exc:  # noqa: BLE001
        with slot.container():
            errors.show(exc, "ASR transcript")


def sample_view(sel: Selection, options: AnalysisOptions = AnalysisOptions()):
    """The common page preamble: (sample, model handle, header slot, SampleAnalysis), or None when any
    of them is unavailable (the reason is already shown in the page). options: the analysis options
    (e.g. the alignment path method)."""
    sample = require_sample(sel)
    if sample is None:
        return None
    handle = require_model(sel)
    slot = sample_header(sample, handle)
    if handle is None:
        return None
    a = analysis(handle, sel, sample, options)
    if a is None:
        return None
    return sample, handle, slot, a
