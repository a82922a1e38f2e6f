"""A researcher's session through the app (AppTest on the tiny world of test_app.py): bad input gets one message
and the rest of the state stays; what is shown belongs to what is selected."""

from __future__ import annotations

from test_app import (  # noqa: F401  (fixtures: world, navigation_mode)
    BENCHMARK,
    CHECKPOINTS,
    EXPLORER,
    INTERVENTIONS,
    _app,
    _run,
    _texts,
    _wav_bytes,
    _widget,
    navigation_mode,
    world,
)


def _marks(at) -> list[str]:
    return [m.value for m in at.markdown if m.value.startswith((":green[", ":red[", ":gray["))]


def test_changed_reference_answers_of_an_upload_rescore_the_answers(world):  # noqa: F811 (the world fixture)
    """The marks (✓/✗) and F1 of the side-by-side answers are scored against the reference answers typed for an
    uploaded clip; typing other references must not show the answers scored against the old ones."""
    from lsl_core.interventions import generate_side_by_side
    from ui import tables
    from ui.upload import sample_from_upload

    at = _app(INTERVENTIONS)
    _widget(at.sidebar.selectbox, "Sample set").set_value("upload")
    _run(at)
    clip = _wav_bytes(1.4, 300.0)
    at.sidebar.file_uploader[0].set_value(("mine.wav", clip, "audio/wav"))
    _widget(at.sidebar.text_input, "Question (what the clip says)").set_value("who wrote hamlet ?")
    _widget(at.sidebar.text_input, "Reference answers (optional, separated by |)").set_value("zzqx")
    _run(at)
    _widget(at.number_input, "Max new tokens").set_value(4)
    _widget(at.checkbox, "Cascade baseline (ASR → LLM)").uncheck()
    _run(at)
    _widget(at.button, "Regenerate").click()
    _run(at)
    text_answer = at.info[0].value
    assert _marks(at)[0] == tables.mark_md(0.0)  # 'zzqx' is in no answer
    _widget(at.sidebar.text_input, "Reference answers (optional, separated by |)").set_value(text_answer)
    _run(at)
    ref = generate_side_by_side(_model(world), sample_from_upload("mine.wav", clip, "who wrote hamlet ?", text_answer),
                                ["angle:bottom3"], max_new_tokens=4, cascade=False)
    assert ref.answers()[0].containment == 1.0  # the text answer contains itself
    assert _marks(at) == [tables.mark_md(a.containment) for a in ref.answers()]


def _model(world, name="tiny-step10"):  # noqa: F811
    from lsl_core.model.loading import load_checkpoint

    return load_checkpoint(world["roots"][name], device="cpu")


def test_a_filter_matching_no_sample_gives_one_message_on_the_benchmark_and_checkpoints_pages(world):  # noqa: F811
    """A sidebar search that matches nothing: the Benchmark page used to stop with Streamlit's
    'min_value 1 > max_value 0' (its sample count box), and the Checkpoints page offered to compute over 0 samples,
    then warned once per checkpoint. One hint to widen the filters; the page's other sections and the widgets stay."""
    at = _app(BENCHMARK)
    _widget(at.text_input, "Search question / answers").set_value("hamlet")  # the page's own state
    _run(at)
    _widget(at.sidebar.text_input, "Search question text").set_value("zzqx")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert "widen them" in "\n".join(i.value for i in at.info)
    assert at.get("plotly_chart")  # the stored results are still shown
    assert _widget(at.text_input, "Search question / answers").value == "hamlet"

    at.switch_page(CHECKPOINTS)
    _run(at)
    _widget(at.radio, "Alignment metrics from").set_value("compute live")
    _run(at)
    assert not [b for b in at.button if b.label.startswith("Compute alignment")]  # nothing to compute over
    assert "widen them" in "\n".join(i.value for i in at.info)
    assert not any("set is empty" in w.value for w in at.warning)
    _widget(at.sidebar.text_input, "Search question text").set_value("")  # widened: the choice is still there
    _run(at)
    assert _widget(at.radio, "Alignment metrics from").value == "compute live"
    assert [b for b in at.button if b.label.startswith("Compute alignment")]


def test_a_link_with_an_intervention_not_valid_here_says_so(world):  # noqa: F811 (the world fixture)
    """?iv= that does not parse, or edits a layer the model lacks, was dropped without a word: the reader took the
    page's unedited default for the linked view. Now one warning names the value; the page still draws."""
    for bad in ("angle:bottom3@99", "nonsense"):
        at = _app(INTERVENTIONS, {"iv": bad})
        said = [w.value for w in at.warning if "link" in w.value]
        assert len(said) == 1 and f"iv='{bad}'" in said[0], said
        assert at.get("plotly_chart") and "press **Regenerate**" in _texts(at)
    ok = _app(INTERVENTIONS, {"iv": "angle:bottom2@1"})
    assert not [w.value for w in ok.warning if "link" in w.value]


def test_a_link_with_a_sample_set_not_known_here_says_so(world):  # noqa: F811 (the world fixture)
    """?set=<unknown kind> silently opened the shipped sd-qa-mini instead of the linked set."""
    at = _app(EXPLORER, {"set": "nosuchkind:/data/x"})
    said = [w.value for w in at.sidebar.warning if "link" in w.value]
    assert len(said) == 1 and "nosuchkind:/data/x" in said[0], said
    assert at.get("plotly_chart")  # the default set's view
    ok = _app(EXPLORER, {"set": world["spec"]})
    assert not [w.value for w in ok.sidebar.warning if "link" in w.value]


def test_a_link_reopens_the_checkpoint_when_two_share_a_name(world, tmp_path):  # noqa: F811 (the world fixture)
    """Two checkpoints of one name (another run's folder added to the zoo): the link named the model only, so it
    reopened the other one of that name, its numbers shown as the linked view's. The link now says which."""
    import shutil
    from pathlib import Path
    from urllib.parse import parse_qsl, urlsplit

    copy = tmp_path / "other-run" / "step0020"
    shutil.copytree(world["roots"]["tiny-step20"], copy)
    mine = str(copy.resolve())
    for pick in (world["roots"]["tiny-step20"], mine):
        at = _app(EXPLORER)
        at.sidebar.text_input(key="sb_zoo_extra").set_value(str(tmp_path / "other-run"))
        _run(at)
        box = _widget(at.sidebar.selectbox, "Checkpoint")
        same = [o for o in box.options if o.startswith("tiny-step20 ")]
        assert len(same) == 2 and len(set(same)) == 2  # both offered, and told apart (their folders)
        box.set_value(pick)
        _run(at)
        query = dict(parse_qsl(urlsplit(at.sidebar.code[0].value).query))
        opened = _app(EXPLORER, query)
        assert _widget(opened.sidebar.selectbox, "Checkpoint").value == pick
        assert not [w.value for w in opened.sidebar.warning if "link's model" in w.value]
    assert Path(mine).is_dir()


def test_an_empty_zoo_is_explained_once_in_the_sidebar(world, tmp_path, monkeypatch):  # noqa: F811
    """No checkpoint manifests: the sidebar says so next to "Add a model folder"; every page repeated the same
    error under it. Now the page points at the sidebar (as for a refused upload), and still draws."""
    from streamlit.testing.v1 import AppTest

    from test_app import APP
    from ui.nav import PAGES

    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("LSL_ZOO", str(tmp_path / "empty"))
    at = AppTest.from_file(str(APP), default_timeout=120)
    for page in [None, *(p.path for p in PAGES)]:
        if page:
            at.switch_page(page)
        _run(at)
        said = [e.value for e in at.error if "No checkpoint manifests" in e.value]
        assert len(said) == 1, (page, said)
        assert said == [e.value for e in at.sidebar.error if "No checkpoint manifests" in e.value]
    assert "the message in the sidebar" in _texts(at) or at.get("plotly_chart")  # Benchmark: stored results drawn


def test_a_voicebench_case_of_a_set_the_sidebar_cannot_open_is_not_opened_as_another(world, tmp_path):  # noqa: F811
    """A run scored on a `manifest:<dir>` sample set (--as-subset): "Open this case in the Sample Explorer" left the
    sidebar's set as it was, so the case's id was not in it and the Explorer silently showed another sample.
    Now the button is off and says why (AppTest refuses a click on it, as a browser does)."""
    import json
    import shutil

    import pytest

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    from lsl_core.experiments.voicebench_run import RunConfig, finalize, run_answers
    from lsl_core.model.loading import read_manifest
    from voicebench_fixtures import make_replay, write_voicebench

    vb = write_voicebench(tmp_path / "vb", subsets=["sd-qa"])
    names = ["tiny-untrained", "tiny-step10"]
    cfg = RunConfig(data=str(vb), n_boot=20)
    out = tmp_path / "vbres"
    run_answers(cfg, [read_manifest(world["roots"][n]) for n in names], out, answer_fn=make_replay(names.index),
                progress=False)
    finalize(out, cfg)
    doc = json.loads((out / "results.json").read_text())  # as a run with --data manifest:<dir> --as-subset sd-qa
    doc["meta"]["data"] = f"manifest:{tmp_path / 'my-set'}"
    doc["meta"].setdefault("config", {})["as_subset"] = "sd-qa"
    (out / "results.json").write_text(json.dumps(doc))

    at = _app(BENCHMARK)
    _widget(at.sidebar.selectbox, "Sample").set_value(world["ids"][3])
    _run(at)
    at.text_input(key="bm_vb_dir").set_value(str(out))
    _run(at)
    at.selectbox(key="bm_vb_case_subset").set_value("sd-qa")
    _run(at)
    button = at.button(key="bm_vb_open")
    assert button.disabled and "manifest:" in (button.help or "")
    assert at.session_state["sb_sample"] == world["ids"][3]


def test_live_controls_over_fewer_samples_than_they_need_say_so_once(world):  # noqa: F811 (the world fixture)
    """The controls need at least 2 clips; with the sidebar filtered to 1 the page offered "4 checkpoints × 1
    samples", loaded every checkpoint and then warned once per checkpoint that nothing could be computed."""
    at = _app(CHECKPOINTS)
    _widget(at.sidebar.text_input, "Search question text").set_value("hamlet")
    _run(at)
    _widget(at.sidebar.multiselect, "Voice / accent").set_value(["usa"])
    _run(at)
    _widget(at.radio, "Controls from").set_value("compute live")
    _run(at)
    assert not [b for b in at.button if b.label.startswith("Compute controls")]
    said = [i.value for i in at.info if "at least 2" in i.value]
    assert len(said) == 1 and "widen" in said[0], [i.value for i in at.info]
    _widget(at.sidebar.multiselect, "Voice / accent").set_value([])  # widened: the button is back
    _run(at)
    assert [b for b in at.button if b.label.startswith("Compute controls")]
    assert _widget(at.radio, "Controls from").value == "compute live"


def test_an_edited_questions_csv_is_read_again(world, tmp_path):  # noqa: F811 (the world fixture)
    """A researcher fixes a question (or its reference answers) in their folder's questions.csv while the app runs:
    the sample set was cached for the life of the server, so the page kept the old question, its analysis and the
    old references. The set is read again when questions.csv changes; the selected sample stays selected."""
    import os
    import shutil

    folder = tmp_path / "mine"
    shutil.copytree(world["root"] / "set", folder)
    at = _app(EXPLORER)
    _widget(at.sidebar.text_input, "Folder").set_value(str(folder))
    _run(at)
    _widget(at.sidebar.selectbox, "Sample").set_value("q1_gbr")
    _run(at)
    assert "**Question (text input):** who wrote hamlet ?" in _texts(at)
    csv = folder / "questions.csv"
    before = csv.stat().st_mtime_ns
    csv.write_text(csv.read_text().replace("who wrote hamlet ?", "who wrote macbeth ?"))
    os.utime(csv, ns=(before + 2_000_000_000, before + 2_000_000_000))  # a later save, whatever the clock's grain
    _run(at)
    assert _widget(at.sidebar.selectbox, "Sample").value == "q1_gbr"
    assert "**Question (text input):** who wrote macbeth ?" in _texts(at)


def test_explorer_does_not_put_argmax_controls_under_dtw_values(world):  # noqa: F811 (the world fixture)
    """The controls (other questions, silence, shuffled frames) are computed on the argmax path (lsl_core's
    candidate_metrics splits per-token paths per question; a DTW path does not split). With the DTW path chosen, the
    metric cards showed the DTW path's APS / Spearman with the argmax path's "specific (other questions: …)" under
    them: two paths' numbers read as one comparison. Now the cards carry the deltas only for the argmax path, and the
    controls section says which path its numbers are on."""
    at = _app(EXPLORER)
    assert all(m.delta for m in at.metric if m.label.startswith(("APS", "Spearman", "Consistency")))
    _widget(at.radio, "Alignment path").set_value("dtw")
    _run(at)
    cards = [m for m in at.metric if m.label.startswith(("APS", "Spearman"))]
    assert cards and not any(m.delta for m in cards), [(m.label, m.delta) for m in cards]
    assert "computed on the argmax path" in _texts(at)
    assert at.get("plotly_chart") and _widget(at.radio, "Alignment path").value == "dtw"


def test_the_path_choice_does_not_claim_to_move_the_interventions(world):  # noqa: F811 (the world fixture)
    """The Explorer's "Alignment path" help said the intervention's target frames follow the choice; lsl_core's
    interventions pick their frames on the argmax path (interventions/plan.py), and the Interventions page draws
    that path whatever the Explorer holds. A researcher who chose DTW read DTW frames into argmax edits."""
    at = _app(EXPLORER)
    _widget(at.radio, "Alignment path").set_value("dtw")
    _run(at)
    help_text = _widget(at.radio, "Alignment path").help
    assert "intervention's target frames all follow" not in help_text
    assert "Interventions page" in help_text and "argmax" in help_text
    at.switch_page(INTERVENTIONS)
    _run(at)
    from test_app import _heatmap

    assert any(t.get("name") == "alignment path i*_j" for t in _heatmap(at)["data"])  # argmax, as the edits


def test_a_case_of_a_checkpoint_not_here_says_which_model_the_explorer_shows(world, tmp_path, monkeypatch):  # noqa: F811
    """The case browser's checkpoint is not in the zoo: "Open this case" selects the sample and keeps the sidebar's
    model, and the Explorer then showed that model's states beside a case read as the other checkpoint's, unsaid."""
    import pandas as pd

    res = tmp_path / "results"
    res.mkdir()
    for name in ("checkpoints_samples.parquet", "checkpoints_summary.parquet"):
        df = pd.read_parquet(world["root"] / "results" / name)
        df["checkpoint"] = df["checkpoint"].replace("tiny-step30", "gone-model")
        df.to_parquet(res / name, index=False)
    monkeypatch.setenv("LSL_RESULTS_DIR", str(res))
    at = _app(BENCHMARK)
    _widget(at.selectbox, "Checkpoint").set_value("gone-model")
    _run(at)
    note = [c.value for c in at.caption if "gone-model" in c.value and "tiny-step10" in c.value]
    assert len(note) == 1 and "not among the checkpoints" in note[0], [c.value for c in at.caption]
    _widget(at.selectbox, "Checkpoint").set_value("tiny-step20")  # one that is here: no such note
    _run(at)
    assert not [c.value for c in at.caption if "not among the checkpoints" in c.value]


def test_a_link_made_from_an_upload_keeps_its_settings_until_the_clip_is_uploaded(world):  # noqa: F811
    """The link box promises that a link made from an uploaded clip "reopens the model, page and settings with an
    empty upload box". The page drew nothing before the upload, so its settings (the intervention, the answer
    length, the cascade; the Explorer's layer and metric) were never read from the link, and the first run wrote
    the URL without them: after the upload the receiver saw the defaults, unsaid."""
    clip = _wav_bytes(1.4, 300.0)

    def upload(at):
        at.sidebar.file_uploader[0].set_value(("mine.wav", clip, "audio/wav"))
        _widget(at.sidebar.text_input, "Question (what the clip says)").set_value("who wrote hamlet ?")
        return _run(at)

    at = _app(INTERVENTIONS, {"set": "upload", "iv": "length:all", "tokens": "5", "cascade": "0"})
    assert "This link was made from an uploaded clip" in _texts(at)
    assert at.query_params["iv"] == "length:all"  # still in the link while the upload box waits
    upload(at)
    assert _widget(at.radio, "Operation").value == "length" and _widget(at.radio, "Frames").value == "All"
    assert _widget(at.number_input, "Max new tokens").value == 5
    assert not _widget(at.checkbox, "Cascade baseline (ASR → LLM)").value
    titles = [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]
    assert "**Length·All**" in titles  # the linked intervention ran on the uploaded clip

    at = _app(EXPLORER, {"set": "upload", "layer": "1", "metric": "distance"})
    upload(at)
    assert _widget(at.slider, "Layer ℓ").value == 1 and _widget(at.radio, "Metric").value == "distance"


def test_a_pressed_set_average_is_not_rerun_for_another_checkpoint_unasked(world):  # noqa: F811 (the world fixture)
    """The CKA page's set average runs when pressed; switching the checkpoint afterwards must wait for a new press
    (the request did not name the model, so a heavy run over the set started for the new model unasked)."""
    from test_app import CKA

    def waiting(at) -> bool:
        return "Press the button to average over the set" in _texts(at)

    at = _app(CKA)
    _widget(at.number_input, "Samples").set_value(2)
    _run(at)
    assert waiting(at)
    at.button(key="cka_run").click()
    _run(at)
    assert not waiting(at)  # computed for the pressed checkpoint
    _widget(at.sidebar.selectbox, "Checkpoint").set_value(world["roots"]["tiny-step20"])
    _run(at)
    assert waiting(at)  # another checkpoint: a new press
