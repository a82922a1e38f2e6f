"""The shared sidebar (rendered by app.py on every page): model, sample set, sample picker, upload.

Widget values live in session state under the `sb_*` keys (the user's selections, nothing else);
`render()` turns them into a Selection that the page of this run reads with `current()`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from lsl_core.errors import LSLError
from ui import config, links, loaders, state, tables
from lsl_core.data.audio import MAX_SECONDS
from ui.upload import AUDIO_TYPES, sample_from_upload

SOURCES = ("sd-qa-mini", "voicebench", "folder", "upload")
SOURCE_LABELS = {
    "sd-qa-mini": "sd-qa-mini (shipped; synthetic espeak voices)",
    "voicebench": "VoiceBench folder (parquet files)",
    "folder": "Own folder (audio + questions.csv)",
    "upload": "Upload one clip",
}
_run = threading.local()


@dataclass
class Selection:
    """What the sidebar selected in this run, resolved to objects (no model loaded yet)."""

    manifests: list = field(default_factory=list)  # CheckpointManifest of the zoo
    model_root: str | None = None  # manifest folder of the selected checkpoint
    model_note: str | None = None  # why there is no model to select
    set_spec: str | None = None  # load_sample_set spec, or "upload"
    sample_set: object | None = None  # SampleSet (filtered by the sidebar's search/voice filters)
    full_set: object | None = None  # SampleSet before filtering
    set_error: BaseException | None = None  # why there is no sample (bad folder, bad upload); shown in the sidebar
    set_hint: str | None = None  # a neutral prompt (e.g. "upload a file") instead of an error
    sample_id: str | None = None
    upload: object | None = None  # the uploaded Sample, when source == "upload"
    upload_file: tuple[str, bytes] | None = None  # (file name, bytes) as uploaded, for the link box's download

    @property
    def manifest(self):
        return next((m for m in self.manifests if m.root == self.model_root), None)

    @property
    def model_name(self) -> str | None:
        m = self.manifest
        return m.name if m else None

    @property
    def ids(self) -> list[str]:
        return self.sample_set.ids() if self.sample_set is not None else []

    def sample(self):
        """The selected Sample (decodes its audio; may raise AudioError for a broken file)."""
        if self.upload is not None:
            return self.upload
        if self.sample_set is None or self.sample_id is None:
            return None
        return self.full_set[self.sample_id]


def current() -> Selection:
    """The Selection rendered by app.py in this script run."""
    sel = getattr(_run, "selection", None)
    if sel is None:
        _rerun_through_app()
    return sel


def end_run() -> None:
    """Forget this run's Selection (app.py, at the end of every run)."""
    _run.selection = None


def _rerun_through_app() -> None:
    """A page file ran without app.py. On the very first request of a fresh server Streamlit's legacy
    pages/ runner does that when the URL names a page (e.g. a shared link). Declaring the page with
    st.navigation switches that runner off (public API); the rerun then goes through app.py, with its
    sidebar and page list, on the same URL and query parameters."""
    import inspect

    pages_dir = Path(__file__).resolve().parents[1] / "pages"
    page = next((Path(f.filename) for f in inspect.stack() if Path(f.filename).resolve().parent == pages_dir), None)
    if page is None:
        raise RuntimeError("The sidebar was not rendered in this run; start the app with `streamlit run app.py`.")
    st.navigation([st.Page(f"pages/{page.name}")], position="hidden")
    st.rerun()


def select(model_root: str | None = None, sample_id: str | None = None, set_spec: str | None = None) -> None:
    """Select a model, a sample set and/or a sample from another page (call it from a widget callback,
    before the rerun).

    set_spec: "sd-qa-mini", "voicebench:<dir>" or "folder:<dir>" (other specs leave the set as it is).
    The sample is picked with the search, voice and "text right, speech wrong" filters cleared, so it
    is in the list; the sidebar's own widget keys stay private to it.
    """
    if model_root:
        st.session_state["sb_model"] = model_root
    if set_spec is not None:
        kind, _, path = set_spec.partition(":")
        if kind in ("voicebench", "folder") and path:
            st.session_state["sb_source"] = kind
            st.session_state[f"sb_path_{kind}"] = path
        elif set_spec == "sd-qa-mini":
            st.session_state["sb_source"] = "sd-qa-mini"
    if sample_id is not None:
        st.session_state["sb_search"] = ""
        st.session_state["sb_voices"] = []
        st.session_state["sb_trsw"] = False
        st.session_state["sb_sample"] = sample_id


def _model_label(m) -> str:
    return f"{m.name} · {m.strategy} · step {m.step}"


def opens(spec: str) -> bool:
    """Whether the sidebar can select the sample-set spec (sd-qa-mini, voicebench:<dir>, folder:<dir>, upload)."""
    kind, _, _ = str(spec).partition(":")
    return spec in ("sd-qa-mini", "upload") or kind in ("voicebench", "folder")


def _split_spec(spec: str) -> tuple[str, str]:
    kind, _, arg = spec.partition(":")
    if spec == "upload":
        return "upload", ""
    if spec == "sd-qa-mini" or kind not in ("voicebench", "folder"):
        return "sd-qa-mini", ""
    return kind, arg


def render() -> Selection:
    """Draw the sidebar and return the Selection (also kept for `current()` in this run)."""
    sel = Selection()
    _run.selection = sel  # this run's; app.py calls end_run() when the run ends
    sb = st.sidebar
    _model_section(sb, sel)
    _samples_section(sb, sel)
    links.want(model=_link_model(sel), set=sel.set_spec,  # "upload": the link reopens the upload box, not a sample
               sample=sel.sample_id if sel.upload is None else None)
    return sel


def _link_model(sel: Selection) -> str | None:
    """The selected checkpoint as the link names it: its name, or its folder when another checkpoint here has the
    same name (the link's `model` takes either)."""
    m = sel.manifest
    if m is None:
        return None
    return m.name if sum(x.name == m.name for x in sel.manifests) == 1 else m.root


# ----------------------------------------------------------------------------- model
def _model_section(sb, sel: Selection) -> None:
    sb.subheader("Model")
    pick = sb.container()
    links.seed("sb_zoo_extra", "zoo")
    with sb.expander("Add a model folder"):
        extra = st.text_input("Folder of checkpoints (manifest.json files) or one manifest", key="sb_zoo_extra",
                              persist_state="session",
                              value=state.value("sb_zoo_extra", ""),
                              placeholder="/data/checkpoints",
                              help="Searched recursively for manifest.json and added to the shipped zoo.")
    extra = (extra or "").strip()
    links.want(zoo=extra or None)
    folders = [str(p) for p in config.zoo_folders()] + ([extra] if extra else [])
    manifests, notes = loaders.zoo(tuple(folders))
    for n in notes:
        pick.warning(n)
    sel.manifests = manifests
    roots = [m.root for m in manifests]
    if not roots:
        sel.model_note = (f"No checkpoint manifests found in {', '.join(folders)}. Add a folder of checkpoints in "
                          "the sidebar or set LSL_ZOO.")
        pick.error(sel.model_note)
        return
    by_name = {m.name: m.root for m in manifests}
    refused = links.seed("sb_model", "model",
                         convert=lambda v: by_name.get(v) or str(Path(v).expanduser().resolve()),
                         valid=lambda r: r in roots, say=False)
    shared = {m.name for m in manifests if sum(x.name == m.name for x in manifests) > 1}
    labels = {m.root: _model_label(m) + (f" · {m.root}" if m.name in shared else "") for m in manifests}
    index = state.choice("sb_model", roots, config.default_checkpoint_root(roots))
    if refused:
        pick.warning(f"The link's model '{refused}' is not among the checkpoints here, so "
                     f"{_model_label(manifests[index])} is shown instead. Add the folder that holds it under "
                     "“Add a model folder”, or pick a checkpoint below.", icon=":material/link_off:")
    sel.model_root = pick.selectbox("Checkpoint", roots, index=index, key="sb_model",
                                    persist_state="session", format_func=labels.get,
                                    help="The speech LLM (speech encoder → adaptor → LLM) every page uses. "
                                         "Loaded once per server process.")


# ----------------------------------------------------------------------------- samples
def _samples_section(sb, sel: Selection) -> None:
    sb.subheader("Samples")
    default_kind, default_path = _split_spec(config.default_set_spec())
    if links.seed_once("sb_set", "set"):
        raw = st.query_params.get("set")
        if raw and not opens(raw):
            sb.warning(f"The link's sample set '{raw}' is not one this sidebar opens (sd-qa-mini, "
                       "voicebench:<folder>, folder:<folder> or upload), so the default set is shown instead. Fix "
                       "'set' in the link, or choose the set below.",
                       icon=":material/link_off:")
        elif raw:
            kind, path = _split_spec(raw)
            st.session_state["sb_source"] = kind
            if path:
                st.session_state[f"sb_path_{kind}"] = path
    source = sb.selectbox("Sample set", SOURCES, index=state.choice("sb_source", SOURCES, default_kind),
                          key="sb_source", persist_state="session", format_func=SOURCE_LABELS.get)
    if source == "upload":
        _upload_section(sb, sel)
        return
    if source == "sd-qa-mini":
        spec = "sd-qa-mini"
    else:
        path = sb.text_input("Folder", key=f"sb_path_{source}", persist_state="session",
                             value=state.value(f"sb_path_{source}", default_path if source == default_kind else ""),
                             placeholder="/data/voicebench/sd-qa" if source == "voicebench" else "/data/my-clips",
                             help="VoiceBench: a folder of parquet files (audio, prompt, reference)."
                             if source == "voicebench" else
                             "A folder with audio files and questions.csv (file, question[, answers, accent]).")
        if not path.strip():
            sel.set_hint = "Type the folder of the sample set in the sidebar."
            return
        spec = f"{source}:{path.strip()}"
    sel.set_spec = spec
    try:
        full = loaders.sample_set(spec)
    except LSLError as exc:
        sel.set_error = exc
        sb.error(str(exc))
        return
    sel.full_set = full
    _picker(sb, sel, full)


def _picker(sb, sel: Selection, full) -> None:
    search = sb.text_input("Search question text", key="sb_search",
                           persist_state="session", value=state.value("sb_search", ""),
                           placeholder="e.g. capital")
    voices = full.voices()
    chosen = sb.multiselect("Voice / accent", voices, default=state.subset("sb_voices", voices), key="sb_voices",
                            persist_state="session",
                            placeholder="all voices")
    sub = full.filter(voice=chosen or None, text=search.strip() or None)
    trsw = tables.text_right_speech_wrong(loaders.results().samples, sel.model_name or "")
    only = sb.checkbox("Only “text right, speech wrong”", key="sb_trsw", value=bool(state.value("sb_trsw", False)),
                       persist_state="session",
                       disabled=trsw is None,
                       help="Samples this checkpoint answered correctly when typed and wrongly when spoken "
                            "(from the evaluation results)." if trsw is not None else
                            "Needs evaluation results for this checkpoint: run `python -m lsl_core evaluate`.")
    if only and trsw is not None:
        sub = sub.filter(ids=trsw)
    sel.sample_set = sub
    ids = sub.ids()
    sb.caption(f"{len(ids)} of {len(full)} samples match")
    if not ids:
        sel.set_hint = "No sample matches the search and filters in the sidebar; widen them."
        sb.warning(sel.set_hint)
        return
    refused = links.seed("sb_sample", "sample", valid=lambda v: v in ids, say=False)
    if refused:
        sb.warning(f"The link's sample '{refused}' is not in this sample set, so another sample is shown. Pick one "
                   "below, or choose the sample set the link was made with.", icon=":material/link_off:")

    def label(sid: str) -> str:  # the voice first: a narrow sidebar cuts the end of a long label
        r = full.record(sid)
        q = r.question if len(r.question) <= 70 else r.question[:67] + "…"
        return f"[{_voice(r.accent)}] {q}"

    sel.sample_id = sb.selectbox("Sample", ids, index=state.choice("sb_sample", ids), key="sb_sample",
                                 persist_state="session",
                                 format_func=label)
    r = full.record(sel.sample_id)
    sb.caption(f"Voice / accent: **{r.accent or 'no accent label'}**"
               + (" (synthetic speech)" if r.accent.startswith("espeak:") else "") + f" · id `{sel.sample_id}`")


def _voice(accent: str) -> str:
    return (accent.split(":", 1)[1] if accent.startswith("espeak:") else accent) or "no voice label"


def _upload_section(sb, sel: Selection) -> None:
    sel.set_spec = "upload"
    max_mb = config.max_upload_mb()
    up = sb.file_uploader(f"Audio file ({', '.join(t.upper() for t in AUDIO_TYPES)}; ≤ {MAX_SECONDS:.0f} s)",
                          type=list(AUDIO_TYPES),
                          key="sb_upload", max_upload_size=max(1, int(max_mb)))
    message = sb.container()  # the upload's one message sits right under the uploader
    question = sb.text_input("Question (what the clip says)", key="sb_up_question", persist_state="session",
                             value=state.value("sb_up_question", ""))
    answers = sb.text_input("Reference answers (optional, separated by |)", key="sb_up_answers",
                            persist_state="session",
                            value=state.value("sb_up_answers", ""))
    if up is None:
        if st.query_params.get("set") == "upload" and not st.session_state.get("_upload_seen"):
            sel.set_hint = ("This link was made from an uploaded clip, and a clip cannot travel in a link: upload the "
                            "clip (the person who shared the link can download it with its question from their "
                            "sidebar's “Link to this view”) and type its question in the sidebar.")
        else:
            sel.set_hint = "Upload an audio file of a spoken question in the sidebar and type its transcript."
        return
    st.session_state["_upload_seen"] = True
    try:
        sample = sample_from_upload(up.name, up.getvalue(), question, answers, max_mb=max_mb)
    except LSLError as exc:
        sel.set_error = exc  # shown here, once; the page points at the sidebar (context.require_sample)
        message.error(str(exc), icon=":material/warning:")
        return
    sel.upload = sample
    sel.upload_file = (up.name, up.getvalue())
    sel.sample_id = sample.id
    message.caption(f"{up.name}: {sample.duration:.1f} s")
    for w in sample.meta.get("audio_warnings", []):
        message.warning(w, icon=":material/graphic_eq:")
