"""The user's selections survive what a researcher does between them (AppTest on the tiny world of
test_app.py): switching pages, switching the sample set to an upload (that fails) and back, and a
wrong path in "Add a model folder" says what is wrong with it."""

from __future__ import annotations

from test_app import (  # noqa: F401  (fixtures: world, navigation_mode)
    BENCHMARK,
    CHECKPOINTS,
    CKA,
    EXPLORER,
    _app,
    _run,
    _widget,
    navigation_mode,
    world,
)


def _visit(at, page: str, back: str):
    at.switch_page(page)
    _run(at)
    at.switch_page(back)
    return _run(at)


def test_page_controls_survive_a_page_switch(world):  # noqa: F811 (the world fixture)
    at = _app(EXPLORER)
    for page, widget, value in [
            (EXPLORER, lambda: at.number_input(key="ex_partners"), 3),
            (CHECKPOINTS, lambda: _widget(at.radio, "Score"), "containment"),
            (CKA, lambda: at.number_input(key="cka_n"), 3),
            (BENCHMARK, lambda: _widget(at.text_input, "Search question / answers"), "hamlet")]:
        at.switch_page(page)
        _run(at)
        widget().set_value(value)
        _run(at)
        _visit(at, CKA if page == EXPLORER else EXPLORER, page)
        assert widget().value == value, page


def test_sidebar_selection_survives_a_failed_upload_and_other_sets(world):  # noqa: F811 (the world fixture)
    at = _app(EXPLORER)

    def side(kind: str, label: str):  # the sidebar widget as the latest run drew it
        return _widget(getattr(at.sidebar, kind), label)

    def pick(kind: str, label: str, value) -> None:
        side(kind, label).set_value(value)
        _run(at)

    pick("text_input", "Search question text", "hamlet")
    pick("selectbox", "Sample", "q1_gbr")
    pick("selectbox", "Sample set", "upload")
    at.sidebar.file_uploader[0].set_value(("bad.wav", b"not audio", "audio/wav"))
    pick("text_input", "Question (what the clip says)", "who wrote hamlet ?")
    assert "Could not decode audio" in "\n".join(e.value for e in at.sidebar.error)
    pick("selectbox", "Sample set", "voicebench")
    pick("text_input", "Folder", "/data/my-voicebench")
    pick("selectbox", "Sample set", "folder")
    assert side("text_input", "Search question text").value == "hamlet"
    assert side("selectbox", "Sample").value == "q1_gbr"
    pick("selectbox", "Sample set", "voicebench")
    assert side("text_input", "Folder").value == "/data/my-voicebench"
    pick("selectbox", "Sample set", "upload")
    assert side("text_input", "Question (what the clip says)").value == "who wrote hamlet ?"


def test_a_file_in_add_a_model_folder_is_not_called_missing(world, tmp_path):  # noqa: F811 (the world fixture)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a checkpoint")
    at = _app(EXPLORER)
    at.sidebar.text_input(key="sb_zoo_extra").set_value(str(notes))
    _run(at)
    said = "\n".join(w.value for w in at.sidebar.warning)
    assert str(notes) in said and "does not exist" not in said
    assert "not a folder" in said and "manifest.json" in said
    assert at.get("plotly_chart")  # the shipped zoo's model still works


def test_a_link_to_a_model_or_sample_not_here_says_so(world):  # noqa: F811 (the world fixture)
    at = _app(EXPLORER, {"model": "someone-elses-model", "sample": "no-such-clip", "layer": "1"})
    said = "\n".join(w.value for w in at.sidebar.warning)
    assert "someone-elses-model" in said and "Add a model folder" in said
    assert "no-such-clip" in said and "not in this sample set" in said
    assert _widget(at.sidebar.selectbox, "Checkpoint").value == world["roots"]["tiny-step10"]  # the default instead
    assert at.get("plotly_chart")  # the page still shows the default's view
    ok = _app(EXPLORER, {"model": "tiny-step20", "sample": world["ids"][2]})  # a valid link: no such warning
    assert not any("link's" in w.value for w in ok.sidebar.warning)


def test_a_link_value_not_valid_here_says_so_and_the_page_still_draws(world):  # noqa: F811 (the world fixture)
    at = _app(EXPLORER, {"layer": "999", "metric": "nope", "path": "dtw"})
    said = "\n".join(w.value for w in at.warning)
    assert "layer='999'" in said and "metric='nope'" in said and "path=" not in said  # dtw is a valid path
    assert at.get("plotly_chart")  # the defaults' view
    ok = _app(EXPLORER, {"layer": "1", "metric": "distance"})
    assert not any("This link's" in w.value for w in ok.warning)


def test_every_keyed_input_widget_keeps_its_value_for_the_session():
    """ui/state.py's rule, over the source: a keyed input widget without persist_state="session" loses the
    user's value whenever a run does not draw it (another page, the upload box, an error above it)."""
    import ast
    from pathlib import Path

    widgets = {"selectbox", "radio", "multiselect", "number_input", "text_input", "text_area", "checkbox", "slider",
               "select_slider", "toggle", "segmented_control", "pills", "date_input", "color_picker"}
    root = Path(__file__).resolve().parents[1]
    missing = []
    for path in [root / "app.py", *sorted((root / "pages").glob("*.py")), *sorted((root / "ui").glob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in widgets:
                kw = {k.arg: k.value for k in node.keywords}
                value = kw.get("persist_state")  # "session", or a name bound to it (pages/2: keep = "session")
                if "key" in kw and not (isinstance(value, ast.Constant) and value.value == "session"
                                        or isinstance(value, ast.Name)):
                    missing.append(f"{path.relative_to(root)}:{node.lineno} {node.func.attr}")
    assert not missing, missing
