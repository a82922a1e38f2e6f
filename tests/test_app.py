"""The Streamlit app driven by AppTest on tiny random models (fast): every page, every control changes
what is shown, links reopen a view, bad input gives a message while the rest keeps working.

The app is pointed at a temporary zoo / sample folder / results folder through the LSL_* variables
(ui/config.py); figures are read back from the Plotly JSON Streamlit sends to the browser and
compared with lsl_core computed independently on the same checkpoint.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from tiny_models import make_asr_whisper
from ui.nav import PAGES

APP = Path(__file__).resolve().parents[1] / "app.py"
EXPLORER, INTERVENTIONS, CHECKPOINTS, CKA, BENCHMARK = (p.path for p in PAGES)
QUESTIONS = ["what is the capital of france ?", "who wrote hamlet ?", "when did world war two end ?",
             "how many legs does a spider have ?"]
ACCENTS = ["usa", "gbr"]
STEPS = (10, 20, 30)


# ============================================================================ fixtures: a tiny world
def _checkpoint(folder: Path, llm: Path, enc: Path, name: str, strategy: str, step: int, seed: int) -> Path:
    from lsl_core.model.adaptor import Adaptor, AdaptorConfig
    from lsl_core.model.loading import CheckpointManifest, write_manifest

    folder.mkdir(parents=True, exist_ok=True)
    adaptor = None
    if strategy != "none":
        torch.manual_seed(seed)
        ad = Adaptor(AdaptorConfig(enc_dim=16, llm_dim=32, stack=5))
        save_file({k: v.contiguous() for k, v in ad.state_dict().items()}, str(folder / "adaptor.safetensors"))
        adaptor = "adaptor.safetensors"
    write_manifest(CheckpointManifest(name=name, llm=str(llm), encoder=str(enc), family="tiny", strategy=strategy,
                                      step=step, adaptor=adaptor, seed=seed), folder)
    return folder


def _wav(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * freq * t * (1 + t))).astype(np.float32)


def _wav_bytes(seconds: float, freq: float = 220.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _wav(seconds, freq), 16_000, format="WAV")
    return buf.getvalue()


def _sample_folder(folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rows, ids = ["file,question,answers,accent"], []
    for i, q in enumerate(QUESTIONS):
        for a, acc in enumerate(ACCENTS):
            sf.write(folder / f"q{i}_{acc}.wav", _wav(0.8 + 0.25 * i, 200 + 40 * i + 25 * a), 16_000)
            rows.append(f"q{i}_{acc}.wav,{q},paris|shakespeare,{acc}")
            ids.append(f"q{i}_{acc}")
    (folder / "questions.csv").write_text("\n".join(rows) + "\n")
    return ids


def _results(folder: Path, ids: list[str], model_dir: Path, set_spec: str) -> dict:
    """Per-sample evaluation rows (as lsl_core.experiments.evaluate writes them) -> real summarize(); + interventions."""
    from lsl_core.experiments.evaluate import summarize

    folder.mkdir(parents=True, exist_ok=True)
    right = {"tiny-untrained": 0, "tiny-step10": 2, "tiny-step20": 4, "tiny-step30": 6}  # speech-right samples
    rows = []
    for ck, n_right in right.items():
        step = 0 if ck == "tiny-untrained" else int(ck.removeprefix("tiny-step"))
        for k, sid in enumerate(ids):
            rows.append({"checkpoint": ck, "family": "tiny", "strategy": "none" if step == 0 else "frozen",
                         "step": step, "sample_id": sid, "example_id": sid.split("_")[0],
                         "voice": sid.split("_")[1], "unseen": sid.endswith("gbr"),
                         "question": QUESTIONS[k // 2], "references": "paris | shakespeare",
                         "text_answer": f"text answer {sid}", "speech_answer": f"speech answer {sid} {ck}",
                         "text_containment": 1.0, "text_f1": 0.8, "speech_containment": float(k < n_right),
                         "speech_f1": 0.8 * (k < n_right), "agreement": 0.5 + 0.05 * n_right,
                         "agreement_other_q": 0.1 + 0.02 * n_right,
                         "cascade_agreement": 0.7, "cascade_containment": 1.0, "cascade_f1": 0.8})
    samples = pd.DataFrame(rows)
    samples.to_parquet(folder / "checkpoints_samples.parquet", index=False)
    summarize(samples).to_parquet(folder / "checkpoints_summary.parquet", index=False)

    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.table1 import evaluate_interventions
    from lsl_core.model.loading import load_checkpoint

    model = load_checkpoint(model_dir, device="cpu")
    iv = evaluate_interventions(model, list(load_sample_set(set_spec))[:2],  # one question, two voices
                                ["angle:bottom3", "angle:all", "angle:random3", "angle:all:shuffled",
                                 "angle:all:other"],
                                4, donors=[QUESTIONS[1]] * 2)
    iv.insert(0, "checkpoint", model.name)
    iv.to_parquet(folder / "checkpoints_interventions.parquet", index=False)
    trsw = {ck: {sid for k, sid in enumerate(ids) if k >= n} for ck, n in right.items()}  # text right, speech wrong
    return {"trsw_step10": trsw["tiny-step10"], "trsw": trsw}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_parts):
    root = tmp_path_factory.mktemp("app")
    llm, enc = tiny_parts["llm"], make_asr_whisper(root / "whisper")
    zoo = root / "zoo"
    roots = {f"tiny-step{s}": _checkpoint(zoo / "frozen" / f"step{s:04d}", llm, enc, f"tiny-step{s}", "frozen", s, s)
             for s in STEPS}
    roots["tiny-untrained"] = _checkpoint(zoo / "untrained", llm, enc, "tiny-untrained", "none", 0, 0)
    bad = root / "badzoo" / "broken"
    _checkpoint(bad, root / "no-such-llm", enc, "broken", "none", 0, 0)
    ids = _sample_folder(root / "set")
    spec = f"folder:{root / 'set'}"
    info = _results(root / "results", ids, roots["tiny-step10"], spec)
    env = {"LSL_ZOO": str(zoo), "LSL_DEFAULT_CHECKPOINT": str(roots["tiny-step10"]), "LSL_SAMPLE_SET": spec,
           "LSL_RESULTS_DIR": str(root / "results"), "LSL_CACHE_DIR": str(root / "cache"), "LSL_DEVICE": "cpu",
           "LSL_MAX_UPLOAD_MB": "1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        yield {"root": root, "roots": {k: str(Path(v).resolve()) for k, v in roots.items()}, "ids": ids,
               "spec": spec, "bad": root / "badzoo", **info}


@pytest.fixture(autouse=True)
def navigation_mode(monkeypatch):
    """Run AppTest like a live server after its first run: st.navigation rules, pages/ is not auto-discovered.

    AppTest resets PagesManager.uses_pages_directory before every run, and a `pages/` folder next to
    app.py then selects the legacy MPA v1 runner (which executes a page file without app.py). A live
    server clears the flag for good the first time app.py calls st.navigation.
    """
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def init_v2(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_v2)


# ============================================================================ helpers
def _app(page: str | None = None, query: dict | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    if query:
        at.query_params.update(query)
    if page:  # like a browser opening /<page>?<query>
        at.switch_page(page)
    return _run(at)


def _run(at):
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _arr(v) -> np.ndarray:
    """Plotly JSON array (list or typed {'dtype', 'bdata', 'shape'}) -> numpy."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        if "shape" in v:
            a = a.reshape([int(s) for s in str(v["shape"]).split(",")])
        return a
    return np.asarray(v)


def _figs(at) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def _title(f: dict) -> str:
    """A figure's title as read: wrapped lines joined by spaces."""
    return f["layout"].get("title", {}).get("text", "").replace("<br>", " ")


def _fig(at, title: str) -> dict:
    found = [f for f in _figs(at) if title in _title(f)]
    assert found, f"no figure titled {title!r}: {[f['layout'].get('title', {}).get('text') for f in _figs(at)]}"
    return found[0]


def _heatmap(at) -> dict:
    """The frames x tokens heatmap (the figure with an alignment-path trace)."""
    found = [f for f in _figs(at) if any(t.get("name") == "alignment path i*_j" for t in f["data"])]
    assert found, "no frames x tokens heatmap on the page"
    return found[0]


def _widget(items, label: str):
    hit = [w for w in items if w.label == label]
    assert hit, f"no widget {label!r}: {[w.label for w in items]}"
    return hit[0]


def _texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [s.value for s in at.success]
    return "\n".join(str(p) for p in parts)


def _live_alignment(at, n: int):
    """On the Checkpoints page: compute the alignment live over the first n samples (press the button)."""
    _widget(at.radio, "Alignment metrics from").set_value("compute live")
    _widget(at.number_input, "Samples per checkpoint").set_value(n)
    _run(at)
    [btn] = [b for b in at.button if b.label.startswith("Compute alignment")]
    btn.click()
    return _run(at)


def _live_interventions(at):
    """On the Benchmark page: run angle:bottom3 live on 1 sample with 4 new tokens (press the button)."""
    _widget(at.number_input, "Samples").set_value(1)
    _widget(at.multiselect, "Conditions").set_value(["angle:bottom3"])
    _widget(at.number_input, "Max new tokens").set_value(4)
    _run(at)
    [btn] = [b for b in at.button if b.label.startswith("Run 1 interventions")]
    btn.click()
    return _run(at)


def _model(world, name="tiny-step10"):
    from lsl_core.model.loading import load_checkpoint

    return load_checkpoint(world["roots"][name], device="cpu")


def _sample(world, sid):
    from lsl_core.data.sets import load_sample_set

    return load_sample_set(world["spec"])[sid]


# ============================================================================ home + sidebar
def test_home_loads_default_model_and_links_every_page(world):
    at = _app()
    assert "tiny-step10" in _texts(at) and "Model ready" in _texts(at)
    assert len(at.get("page_link")) >= 6
    link = at.sidebar.code[0].value
    q = dict(parse_qsl(urlsplit(link).query))
    assert q["model"] == "tiny-step10" and q["sample"] == world["ids"][0] and q["set"] == world["spec"]


def test_sidebar_search_voice_and_text_right_speech_wrong_filters(world):
    at = _app(EXPLORER)
    sample = _widget(at.sidebar.selectbox, "Sample")
    assert list(sample.options) and len(sample.options) == len(world["ids"])
    _widget(at.sidebar.text_input, "Search question text").set_value("hamlet")
    _run(at)
    opts = _widget(at.sidebar.selectbox, "Sample").options
    assert len(opts) == 2 and all("hamlet" in o for o in opts)
    assert "who wrote hamlet" in _texts(at)  # the page follows the picked sample
    _widget(at.sidebar.text_input, "Search question text").set_value("")
    _widget(at.sidebar.multiselect, "Voice / accent").set_value(["gbr"])
    _run(at)
    assert [o.startswith("[gbr]") for o in _widget(at.sidebar.selectbox, "Sample").options] == [True] * 4
    _widget(at.sidebar.multiselect, "Voice / accent").set_value([])
    box = _widget(at.sidebar.checkbox, "Only “text right, speech wrong”")
    assert not box.disabled
    box.check()
    _run(at)
    assert at.session_state["sb_sample"] in world["trsw_step10"]
    assert len(_widget(at.sidebar.selectbox, "Sample").options) == len(world["trsw_step10"])
    # a checkpoint without per-sample results: the filter says why it is off
    # the filter follows the checkpoint: each one's own "text right, speech wrong" samples
    for ck in ("tiny-step20", "tiny-untrained"):
        _widget(at.sidebar.selectbox, "Checkpoint").set_value(world["roots"][ck])
        _run(at)
        assert not _widget(at.sidebar.checkbox, "Only “text right, speech wrong”").disabled
        labels = {f"[{sid.split('_')[1]}] {QUESTIONS[int(sid[1])]}" for sid in world["trsw"][ck]}  # q{i}_{accent}
        assert set(_widget(at.sidebar.selectbox, "Sample").options) == labels, ck


# ============================================================================ Sample Explorer
def test_explorer_layer_metric_and_sample_change_the_heatmap(world):
    from lsl_core.analysis import analyze_sample

    at = _app(EXPLORER)
    model = _model(world)
    L = model.num_layers
    first = world["ids"][0]
    ref = analyze_sample(model, _sample(world, first), cache=False)
    fig = _heatmap(at)
    assert f"layer ℓ = {L // 2} of {L}" in fig["layout"]["title"]["text"]
    np.testing.assert_allclose(_arr(fig["data"][0]["z"]), ref.cos[L // 2], atol=1e-5)
    path = fig["data"][1]
    assert path["marker"]["symbol"] == "diamond"
    centres = np.asarray(ref.frame_times) + ref.frame_seconds / 2
    np.testing.assert_allclose(_arr(path["y"]), centres[ref.path_cos[L // 2]], atol=1e-6)
    hover = np.asarray(fig["data"][0]["text"])
    assert "token" in hover[0][0] and " s" in hover[0][0]
    assert "frame time (s)" in fig["layout"]["yaxis"]["title"]["text"]
    assert [t.strip("*<b>/") for t in fig["layout"]["xaxis"]["ticktext"]] == [t.strip() or "␣" for t in ref.tokens]
    spearman_label = lambda a: [m for m in a.metric if m.label.startswith("Spearman")][0]  # noqa: E731
    if ref.spearman_undefined_cos[L // 2]:
        assert spearman_label(at).value == "undefined"
    else:
        assert float(spearman_label(at).value) == pytest.approx(ref.spearman_cos[L // 2], abs=1e-3)

    # layer slider: a different matrix, the final-norm layer is labelled, the URL follows
    _widget(at.slider, "Layer ℓ").set_value(0)
    _run(at)
    fig0 = _heatmap(at)
    assert "layer ℓ = 0" in fig0["layout"]["title"]["text"] and "LLM input" in fig0["layout"]["title"]["text"]
    np.testing.assert_allclose(_arr(fig0["data"][0]["z"]), ref.cos[0], atol=1e-5)
    assert not np.allclose(_arr(fig0["data"][0]["z"]), _arr(fig["data"][0]["z"]))
    assert at.query_params["layer"] == "0"
    assert spearman_label(at).label == "Spearman ρ, layer 0"
    _widget(at.slider, "Layer ℓ").set_value(L)
    _run(at)
    assert "after final norm" in _heatmap(at)["layout"]["title"]["text"]

    # metric: distance matrix, reversed scale (bright = close), distance path
    _widget(at.radio, "Metric").set_value("distance")
    _run(at)
    figd = _heatmap(at)
    np.testing.assert_allclose(_arr(figd["data"][0]["z"]), ref.dist[L], atol=1e-4)
    assert figd["data"][0]["reversescale"] is True
    np.testing.assert_allclose(_arr(figd["data"][1]["y"]), centres[ref.path_dist[L]], atol=1e-6)
    assert at.query_params["metric"] == "distance"

    # sample: another question -> other tokens, other matrix, the same layer and metric
    other = world["ids"][3]
    _widget(at.sidebar.selectbox, "Sample").set_value(other)
    _run(at)
    ref2 = analyze_sample(model, _sample(world, other), cache=False)
    figs = _heatmap(at)
    np.testing.assert_allclose(_arr(figs["data"][0]["z"]), ref2.dist[L], atol=1e-4)
    assert len(figs["layout"]["xaxis"]["ticktext"]) == len(ref2.tokens) != len(ref.tokens)
    assert QUESTIONS[1] in _texts(at) and at.query_params["sample"] == other
    # sequence-level curves and the marked final layer
    curves = _fig(at, "Sequence level")
    np.testing.assert_allclose(_arr(curves["data"][0]["y"]), ref2.seq_cos, atol=1e-5)
    assert any("after final norm" in (a.get("text") or "") for a in curves["layout"]["annotations"])
    assert "ASR transcript" in _texts(at)
    assert len(at.get("audio")) == 1
    assert len(at.get("download_button")) >= 4  # per-layer and path tables, CSV + JSON
    for el in at.get("plotly_chart"):  # every figure: the toolbar's camera saves a named PNG
        assert json.loads(el.proto.config)["toImageButtonOptions"]["format"] == "png"


def test_explorer_notes_follow_the_diagnostics_of_each_layer(world):
    """The collapsed-path / undefined-Spearman notes appear exactly at the layers lsl_core flags."""
    from lsl_core.analysis import analyze_sample

    model = _model(world)
    sid = world["ids"][2]
    ref = analyze_sample(model, _sample(world, sid), cache=False)
    at = _app(EXPLORER, {"sample": sid})
    for layer in range(model.num_layers + 1):
        _widget(at.slider, "Layer ℓ").set_value(layer)
        _run(at)
        warnings = "\n".join(w.value for w in at.warning)
        assert (f"Collapsed path at layer {layer}" in warnings) == bool(ref.collapsed_cos[layer]), layer
        assert (f"Spearman ρ is undefined at layer {layer}" in warnings) == bool(ref.spearman_undefined_cos[layer])
    tok = [f for f in _figs(at) if "path monotonicity" in json.dumps(f["layout"].get("annotations", []))][0]
    marked = [t for t in tok["data"] if t.get("name") == "cosine path: collapsed path"]
    flagged = np.nonzero(ref.collapsed_cos)[0].tolist()
    assert (marked[0]["x"] if marked else []) == flagged or _arr(marked[0]["x"]).tolist() == flagged


def test_link_reopens_the_same_view(world):
    at = _app(EXPLORER)
    _widget(at.sidebar.selectbox, "Checkpoint").set_value(world["roots"]["tiny-step20"])
    _widget(at.sidebar.selectbox, "Sample").set_value(world["ids"][5])
    _run(at)
    _widget(at.slider, "Layer ℓ").set_value(0)
    _widget(at.radio, "Metric").set_value("distance")
    _run(at)
    z = _arr(_heatmap(at)["data"][0]["z"])
    query = dict(parse_qsl(urlsplit(at.sidebar.code[0].value).query))
    assert query == {"model": "tiny-step20", "set": world["spec"], "sample": world["ids"][5], "layer": "0",
                     "metric": "distance"}
    again = _app(EXPLORER, query)  # a new session opened from the link
    assert again.session_state["sb_model"] == world["roots"]["tiny-step20"]
    assert _widget(again.slider, "Layer ℓ").value == 0 and _widget(again.radio, "Metric").value == "distance"
    np.testing.assert_array_equal(_arr(_heatmap(again)["data"][0]["z"]), z)
    # invalid values are ignored, not fatal
    bad = _app(EXPLORER, {"model": "nope", "sample": "nope", "layer": "99", "metric": "x"})
    assert bad.session_state["sb_model"] == world["roots"]["tiny-step10"]
    assert "layer ℓ = 1" in _heatmap(bad)["layout"]["title"]["text"]


# ============================================================================ Interventions
def test_interventions_regenerate_side_by_side_and_highlight(world):
    from lsl_core.interventions import generate_side_by_side

    at = _app(INTERVENTIONS)
    assert "press **Regenerate**" in _texts(at)
    fig = _heatmap(at)
    assert not fig["layout"].get("shapes")  # nothing edited yet
    assert _widget(at.radio, "Operation").value == "angle" and _widget(at.radio, "Frames").value == "Bottom-k"
    assert _widget(at.number_input, "k").value == 3
    _widget(at.number_input, "Max new tokens").set_value(6)
    _run(at)
    _widget(at.button, "Regenerate").click()
    _run(at)
    assert at.query_params["iv"] == "angle:bottom3" and at.query_params["tokens"] == "6"
    titles = [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]
    assert titles[:4] == ["**Text**", "**Speech**", "**Cascade (ASR → LLM)**", "**Angle·Bottom3**"]
    sample = _sample(world, world["ids"][0])
    ref = generate_side_by_side(_model(world), sample, ["angle:bottom3"], max_new_tokens=6)
    answers = [i.value for i in at.info][:4]
    assert answers == [a.answer or "∅ (empty answer)" for a in ref.answers()]
    marks = [m.value for m in at.markdown if m.value.startswith((":green[", ":red[", ":gray["))]
    assert len(marks) == 4
    fig = _heatmap(at)
    edited = ref.interventions[0]
    assert len(fig["layout"]["shapes"]) == 2 * len(edited.frames)  # boxed frame bands
    boxes = [t for t in fig["data"] if t.get("name") == "edited frame/token"]
    assert list(_arr(boxes[-1]["x"])) == edited.tokens
    ticks = fig["layout"]["xaxis"]["ticktext"]
    assert [j for j, t in enumerate(ticks) if t.endswith("*</b>")] == edited.tokens
    assert "edited tokens" in _texts(at)

    # answers belong to one sample: another sample waits for Regenerate, the first one comes back from the cache
    _widget(at.sidebar.selectbox, "Sample").set_value(world["ids"][1])
    _run(at)
    assert "for this sample" in _texts(at) and "**Angle·Bottom3**" not in [m.value for m in at.markdown]
    assert "iv" not in at.query_params
    _widget(at.sidebar.selectbox, "Sample").set_value(world["ids"][0])
    _run(at)
    assert [i.value for i in at.info][:4] == answers

    # another operation and target: a new label, every token edited
    _widget(at.radio, "Operation").set_value("length")
    _widget(at.radio, "Frames").set_value("All")
    _run(at)
    assert "press Regenerate" in _texts(at)  # settings differ from what is shown
    _widget(at.button, "Regenerate").click()
    _run(at)
    assert at.query_params["iv"] == "length:all"
    assert "**Length·All**" in [m.value for m in at.markdown]
    ticks = _heatmap(at)["layout"]["xaxis"]["ticktext"]
    assert all(t.endswith("*</b>") for t in ticks)


def test_interventions_with_their_nulls_on_one_sample(world):
    """'Also its nulls': the intervention's three nulls generated with it; the cards stay text / speech /
    intervened, a table gives each null's answer and the intervention's agreement minus the null's."""
    from lsl_core.experiments.table1 import donors_for
    from lsl_core.interventions import generate_side_by_side

    at = _app(INTERVENTIONS)
    _widget(at.number_input, "Max new tokens").set_value(5)
    _widget(at.checkbox, "Cascade baseline (ASR → LLM)").uncheck()
    _widget(at.checkbox, "Also its nulls").check()
    _run(at)
    _widget(at.button, "Regenerate").click()
    _run(at)
    titles = [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]
    assert titles[:3] == ["**Text**", "**Speech**", "**Angle·Bottom3**"] and "**Angle·Random3**" not in titles
    [table] = [d.value for d in at.dataframe if "what it breaks" in d.value.columns]
    assert list(table["null"]) == ["Angle·Random3", "Angle·Bottom3 (shuffled pairing)",
                                   "Angle·Bottom3 (other question)"]
    sample = _sample(world, world["ids"][0])
    from lsl_core.data.sets import load_sample_set

    donor = donors_for(load_sample_set(world["spec"]), [sample.id])[0]
    assert donor == QUESTIONS[1]  # the set's next different question
    ref = generate_side_by_side(_model(world), sample, ["angle:bottom3", "angle:random3", "angle:bottom3:shuffled",
                                                        "angle:bottom3:other"], max_new_tokens=5, cascade=False,
                                donor_question=donor)
    own, *nulls = ref.interventions
    assert list(table["answer"]) == [a.answer for a in nulls]
    np.testing.assert_allclose(table["Δ agreement, intervention − null (%)"],
                               [100 * (own.agreement - a.agreement) for a in nulls], atol=0.05)  # shown rounded
    # a null itself has no nulls: the checkbox is off-limits
    _widget(at.radio, "Frames").set_value("Random-k")
    _run(at)
    assert _widget(at.checkbox, "Also its nulls").disabled


def test_interventions_other_question_null_for_an_uploaded_clip(world):
    """An uploaded clip has no set to borrow another question from: the user types one, and the other-question
    pairing runs with it (the library's answer for that donor); the clip's own question is refused with one
    message, and the upload and the controls stay."""
    from lsl_core.interventions import generate_side_by_side
    from ui.upload import sample_from_upload

    at = _app(INTERVENTIONS)
    _widget(at.sidebar.selectbox, "Sample set").set_value("upload")
    _run(at)
    clip = _wav_bytes(1.4, 300.0)
    at.sidebar.file_uploader[0].set_value(("mine.wav", clip, "audio/wav"))
    _widget(at.sidebar.text_input, "Question (what the clip says)").set_value("who wrote hamlet ?")
    _run(at)
    assert "other question (null)" not in _widget(at.radio, "Pairing").options  # no donor yet
    _widget(at.number_input, "Max new tokens").set_value(5)
    _widget(at.checkbox, "Cascade baseline (ASR → LLM)").uncheck()
    _widget(at.text_input, "Another question (for the other-question null)").set_value("what is the capital of peru ?")
    _run(at)
    pairing = _widget(at.radio, "Pairing")
    assert "other question (null)" in pairing.options and "'what is the capital of peru ?'" in pairing.help
    pairing.set_value("other")
    _run(at)
    _widget(at.button, "Regenerate").click()
    _run(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    ref = generate_side_by_side(_model(world), sample_from_upload("mine.wav", clip, "who wrote hamlet ?"),
                                ["angle:bottom3:other"], max_new_tokens=5, cascade=False,
                                donor_question="what is the capital of peru ?")
    [edited] = ref.interventions
    assert edited.answer in [i.value for i in at.info]
    shown = [c.value for c in at.caption if c.value.startswith("edited tokens:")]
    assert shown and all("other: " in t for t in edited.token_text) and repr(edited.token_text[0]) in shown[0]
    # a changed donor is not run until Regenerate; the page says which one is shown
    _widget(at.text_input, "Another question (for the other-question null)").set_value("who wrote hamlet ?")
    _run(at)
    assert "with the other question 'what is the capital of peru ?'; it changed to 'who wrote hamlet ?'" in _texts(at)
    _widget(at.button, "Regenerate").click()
    _run(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "DIFFERENT question" in errors[0], errors
    assert not at.exception and _widget(at.sidebar.text_input, "Question (what the clip says)").value == \
        "who wrote hamlet ?" and _widget(at.radio, "Pairing").value == "other"


def test_intervention_link_reopens_and_runs(world):
    at = _app(INTERVENTIONS, {"iv": "calibrate:bottom2@1:distance", "sample": world["ids"][2], "tokens": "5",
                              "cascade": "0"})
    assert _widget(at.number_input, "Max new tokens").value == 5
    assert not _widget(at.checkbox, "Cascade baseline (ASR → LLM)").value
    assert _widget(at.radio, "Operation").value == "calibrate"
    assert _widget(at.number_input, "k").value == 2 and _widget(at.slider, "Edit layer ℓ").value == 1
    assert _widget(at.radio, "Path metric").value == "distance"
    titles = [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]
    assert titles[:3] == ["**Text**", "**Speech**", "**Calibrate·Bottom2 @ℓ1 (distance)**"]  # no cascade
    assert "layer ℓ = 1" in _heatmap(at)["layout"]["title"]["text"]


def test_intervention_link_with_k_beyond_the_question_runs_what_the_controls_show(world):
    """bottom99 on a question of fewer tokens: k is the token count, in the k box and in the run alike (the box
    used to fall back to 3 while the run was bottom99, and the page said the settings had changed)."""
    at = _app(INTERVENTIONS, {"iv": "angle:bottom99@0", "sample": world["ids"][2], "cascade": "0"})
    k = _widget(at.number_input, "k")
    assert 1 < k.value < 99 and k.value == int(k.proto.max)  # the question's token count
    titles = [m.value for m in at.markdown if m.value.startswith("**") and m.value.endswith("**")]
    assert titles[2] == f"**Angle·Bottom{k.value}**", titles


# ============================================================================ Checkpoints
def test_checkpoints_live_alignment_curves_trends_and_gap_fit(world):
    from lsl_core.analysis import analyze_sample
    from lsl_core.metrics.gap import fit_gap

    at = _app(CHECKPOINTS)
    gap = _fig(at, "GAP (f1, text − speech) across training")
    for trace in gap["data"]:  # 95% bootstrap intervals over each checkpoint's samples, in points
        assert trace["error_y"]["type"] == "data" and len(_arr(trace["error_y"]["array"])) == len(_arr(trace["y"]))
    assert {t["line"]["color"] for t in gap["data"]} == {t["line"]["color"] for t in
                                                         _fig(at, "speech-input f1 across training")["data"]}
    # end-to-end agreement across training (the cascade's mean in the title) and the answerable GAP
    summary = pd.read_parquet(world["root"] / "results" / "checkpoints_summary.parquet")
    allv = summary[summary["voice"] == "all"].set_index("checkpoint")
    agree = _fig(at, "speech vs text answer agreement, voice 'all'")
    assert "(cascade: 70.0 %)" in agree["layout"]["title"]["text"]  # every checkpoint's cascade agrees 70 %
    style = [t for t in agree["data"] if t["name"].endswith("· answer style (other questions)")]
    assert style and len(style) == len(agree["data"]) / 2  # one dotted null baseline per trajectory
    for trace in agree["data"]:
        ys = _arr(trace["y"])
        col = "agreement_other_q" if trace in style else "agreement"
        assert len(ys) and set(np.round(ys, 6)) <= set(np.round(100 * allv[col].to_numpy(), 6))
    ans = _fig(at, "answerable GAP (questions whose text answer is right)")
    want = sorted(np.round(100 * allv["gap_answerable"].to_numpy(), 6))
    assert sorted(np.round(np.concatenate([_arr(t["y"]) for t in ans["data"]]), 6)) == want
    # two checkpoints paired on the same clips: the library's table; a checkpoint against itself differs by 0
    from lsl_core.experiments.compare import format_table, paired_difference

    samples = pd.read_parquet(world["root"] / "results" / "checkpoints_samples.parquet")
    base, other = _widget(at.selectbox, "Base checkpoint").value, _widget(at.selectbox, "Other checkpoint").value
    assert base != other
    table = format_table(paired_difference(samples, base, other), base, other)
    assert table in [m.value for m in at.markdown]
    _widget(at.selectbox, "Other checkpoint").set_value(base)
    _run(at)
    [table] = [m.value for m in at.markdown if m.value.startswith("| voice | questions |")]
    assert "| +0.0 [+0.0, +0.0] |" in table and "+0.00 [+0.00, +0.00]" in table
    _widget(at.selectbox, "Other checkpoint").set_value(other)
    _run(at)
    _live_alignment(at, 2)
    assert not [w for w in at.warning if not w.value.startswith("Small n")], [w.value for w in at.warning]
    assert "Small n (2 samples, under 10) for a checkpoint's alignment mean" in _texts(at)
    curves = _fig(at, "per layer — tiny · frozen")
    assert len(curves["data"]) == 3  # one curve per checkpoint of the trajectory
    # the curve of step 10 = mean over the 2 samples of the sequence cosine, computed independently
    m10 = _model(world, "tiny-step10")
    ref = np.mean([analyze_sample(m10, _sample(world, s), cache=False).seq_cos for s in world["ids"][:2]], axis=0)
    np.testing.assert_allclose(_arr(curves["data"][0]["y"]), ref, atol=1e-5)
    _widget(at.selectbox, "Per-layer metric").set_value("consistency")
    _run(at)
    assert not np.allclose(_arr(_fig(at, "per layer — tiny · frozen")["data"][0]["y"]), ref)
    assert _fig(at, "mean Spearman ρ (cosine path) across training") and _fig(at, "mean consistency across training")
    # the aligned CKA across training, live too: step 10's point = the mean over the 2 samples of each sample's CKA
    # diagonal (speech layer a vs text layer a, layers 1..L), beside its shuffled-pairing null
    cka = {t["name"]: t for t in _fig(at, "aligned CKA (speech layer a vs text layer a) across training")["data"]}
    assert set(cka) == {"tiny · frozen", "tiny · frozen · shuffled-pairing null", "tiny · none",
                        "tiny · none · shuffled-pairing null"}, set(cka)
    line = cka["tiny · frozen"]
    ref_cka = np.mean([np.diagonal(analyze_sample(m10, _sample(world, s), cache=False).cka)[1:].mean()
                       for s in world["ids"][:2]])
    np.testing.assert_allclose(_arr(line["y"])[list(_arr(line["x"])).index(10)], ref_cka, atol=1e-6)
    scatter = _fig(at, "GAP vs layer-averaged cosine")
    legend = [t["name"] for t in scatter["data"]]
    assert any(n.startswith("frozen: R² =") for n in legend)  # family is constant: the legend names the strategy
    # the R² shown = an independent OLS on the plotted points
    pts = [t for t in scatter["data"] if "R² =" in t["name"]][0]
    fit = fit_gap(_arr(pts["x"]), _arr(pts["y"]))
    assert f"R² = {fit.r2:.3f}" in pts["name"]
    # grouping by family also fits the untrained checkpoint into the line
    _widget(at.radio, "Fit one line per").set_value("family")
    _run(at)
    legend = [t["name"] for t in _fig(at, "GAP vs layer-averaged cosine")["data"]]
    assert any(n.startswith("tiny: R²") and "(n = 4)" in n for n in legend)


# ============================================================================ CKA
def test_cka_sample_heatmap_follows_path_options_and_set_average(world):
    from lsl_core.analysis import AnalysisOptions, analyze_sample

    at = _app(CKA)
    model = _model(world)
    s = _sample(world, world["ids"][0])
    ref = analyze_sample(model, s, AnalysisOptions(cka_path="cosine", cka_path_layer=1), cache=False)
    z = _arr(_fig(at, "Aligned cross-layer CKA")["data"][0]["z"])
    np.testing.assert_allclose(z, ref.cka, atol=1e-6)
    _widget(at.slider, "Path taken at layer").set_value(0)
    _widget(at.radio, "Alignment path").set_value("distance")
    _run(at)
    ref0 = analyze_sample(model, s, AnalysisOptions(cka_path="distance", cka_path_layer=0), cache=False)
    np.testing.assert_allclose(_arr(_fig(at, "Aligned cross-layer CKA")["data"][0]["z"]), ref0.cka, atol=1e-6)
    # each cell's shuffled-pairing null in the hover, and the diagonal against the null's band
    custom = _arr(_fig(at, "Aligned cross-layer CKA")["data"][0]["customdata"])
    np.testing.assert_allclose(custom[..., 0], ref0.cka_null_mean, atol=1e-6)
    np.testing.assert_allclose(custom[..., 2], ref0.cka_null_p, atol=1e-6)
    diag = {t["name"]: t for t in _fig(at, "with the frame-token pairs shuffled")["data"]}
    np.testing.assert_allclose(_arr(diag["argmax path: aligned CKA"]["y"]), np.diagonal(ref0.cka), atol=1e-6)
    np.testing.assert_allclose(_arr(diag["argmax path: shuffled pairing (null)"]["y"]),
                               np.diagonal(ref0.cka_null_mean), atol=1e-6)
    assert diag["argmax path: shuffled pairing (null): 95% interval"]["fill"] == "toself"
    _widget(at.number_input, "Samples").set_value(4)
    _run(at)
    [btn] = [b for b in at.button if b.label.startswith("Compute over")]
    btn.click()
    _run(at)
    mean = _arr(_fig(at, "Aligned CKA, mean over 4 samples")["data"][0]["z"])
    refs = [analyze_sample(model, _sample(world, i), AnalysisOptions(cka_path="distance", cka_path_layer=0),
                           cache=False).cka for i in world["ids"][:4]]
    np.testing.assert_allclose(mean, np.mean(refs, axis=0), atol=1e-6)
    assert _fig(at, "Mean-pooled CKA across 4 samples")
    low = _arr(_fig(at, "Aligned CKA, mean over 4 samples")["data"][0]["customdata"])[..., 0]
    assert (low <= mean + 1e-9).all()  # each cell's 95% interval over samples is in the hover
    band = _fig(at, "spread over the 4 samples")["data"]
    assert band[0]["fill"] == "toself" and len(_arr(band[1]["y"])) == model.num_layers + 1
    nulls = [analyze_sample(model, _sample(world, i), AnalysisOptions(cka_path="distance", cka_path_layer=0),
                            cache=False).cka_null_mean for i in world["ids"][:4]]
    [null] = [t for t in band if t["name"] == "shuffled pairing (null), mean over 4"]
    np.testing.assert_allclose(_arr(null["y"]), np.diagonal(np.mean(nulls, axis=0)), atol=1e-6)


# ============================================================================ Benchmark
def test_benchmark_scores_cases_and_interventions(world):
    at = _app(BENCHMARK)
    fig = _fig(at, "text vs speech f1 per voice")
    bars = {t["name"]: _arr(t["y"]) for t in fig["data"]}
    summary = pd.read_parquet(world["root"] / "results" / "checkpoints_summary.parquet")
    rows = summary[summary["checkpoint"] == "tiny-step10"]
    np.testing.assert_allclose(bars["speech input"], 100 * rows["speech_f1"].to_numpy())
    np.testing.assert_allclose(bars["GAP"], 100 * rows["gap_f1"].to_numpy())
    _widget(at.radio, "Score").set_value("containment")
    _run(at)
    bars = {t["name"]: _arr(t["y"]) for t in _fig(at, "text vs speech containment per voice")["data"]}
    np.testing.assert_allclose(bars["speech input"], 100 * rows["speech_containment"].to_numpy())
    _widget(at.selectbox, "Checkpoint").set_value("tiny-step30")
    _run(at)
    assert _fig(at, "tiny-step30: text vs speech")
    # case browser: outcome filter, then open a case in the explorer
    _widget(at.selectbox, "Checkpoint").set_value("tiny-step10")
    _widget(at.selectbox, "Outcome").set_value("text right · speech wrong")
    _run(at)
    assert f"{len(world['trsw_step10'])} cases" in _texts(at)
    case = _widget(at.selectbox, "Case")
    assert len(case.options) == len(world["trsw_step10"]) and all("· " in o for o in case.options)
    case.set_value(sorted(world["trsw_step10"])[0])
    _run(at)
    _widget(at.button, "Open this case in the Sample Explorer").click()
    _run(at)
    assert _heatmap(at) and at.session_state["sb_sample"] == sorted(world["trsw_step10"])[0]
    # stored intervention table and a live run
    at = _app(BENCHMARK)
    assert _fig(at, "Speech-input F1 under each intervention")
    _live_interventions(at)
    live = _fig(at, "speech-input F1 per condition (1 sample, 95% CI)")
    assert [str(x) for x in live["data"][0]["x"]] == ["Original", "Angle·Bottom3"]
    assert live["data"][0]["error_y"]["type"] == "data"  # 95% bootstrap interval drawn (zero width for n = 1)
    assert "Small n (1 sample, under 10) for the differences between conditions" in _texts(at)
    stored = _fig(at, "Speech-input F1 under each intervention")
    assert len(_arr(stored["data"][0]["error_y"]["array"])) == len(stored["data"][0]["x"])


def test_benchmark_voicebench_subsets_cis_failures_cases_and_explorer_link(world, tmp_path):
    """A VoiceBench run over fixture parquet files (known answers replayed through the run's store):
    the page shows its stored scores, CIs and GAP per subset, failure shares and the cases, and a
    case opens in the Sample Explorer with the run's sample set."""
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    from lsl_core.experiments.voicebench_run import RunConfig, finalize, run_answers
    from lsl_core.model.loading import read_manifest
    from voicebench_fixtures import make_replay, write_voicebench

    at = _app(BENCHMARK)
    assert "No VoiceBench results here" in _texts(at) and "python -m lsl_core voicebench" in _texts(at)
    vb = write_voicebench(tmp_path / "vb")
    names = ["tiny-untrained", "tiny-step10", "tiny-step20"]  # sd-qa speech right on 0, 1, 2 of 3 rows
    cfg = RunConfig(data=str(vb), n_boot=100)
    out = tmp_path / "vbres"
    run_answers(cfg, [read_manifest(world["roots"][n]) for n in names], out, answer_fn=make_replay(names.index),
                progress=False)
    res = finalize(out, cfg)
    at.text_input(key="bm_vb_dir").set_value(str(out))
    _run(at)
    fig = _fig(at, "tiny-step10: text vs speech per VoiceBench subset")  # the sidebar's model is preselected
    summ = res["tables"].summary
    summ = summ[summ["checkpoint"] == "tiny-step10"]
    for trace in fig["data"][:2]:
        rows = summ[summ["modality"] == trace["name"].split()[0]]
        assert list(trace["x"]) == list(rows["subset"])
        np.testing.assert_allclose(_arr(trace["y"]), rows["score"].to_numpy())
        np.testing.assert_allclose(_arr(trace["error_y"]["array"]), (rows["ci_high"] - rows["score"]).to_numpy())
    gap = res["tables"].gap.set_index(["checkpoint", "subset"]).loc["tiny-step10"]
    gtrace = fig["data"][2]
    assert gtrace["name"] == "GAP" and list(gtrace["x"])[-1] == "overall" and "alpacaeval" not in gtrace["x"]
    np.testing.assert_allclose(_arr(gtrace["y"]), gap.loc[list(gtrace["x"]), "gap"].to_numpy())
    assert gap.loc["sd-qa", "gap"] == pytest.approx(200 / 3)  # text 3 of 3, speech 1 of 3
    # subsets picked: the figure follows; failure shares are in the summary table
    at.multiselect(key="bm_vb_subsets").set_value(["mmsu", "sd-qa"])
    _run(at)
    fig = _fig(at, "tiny-step10: text vs speech per VoiceBench subset")
    assert list(fig["data"][0]["x"]) == ["mmsu", "sd-qa"] and list(fig["data"][2]["x"]) == ["mmsu", "sd-qa", "overall"]
    table = next(d.value for d in at.dataframe if "no_letter (% of answers)" in d.value.columns)
    mm = table[(table["subset"] == "mmsu") & (table["modality"] == "speech")].iloc[0]
    # tables show 3 decimals (viz.display_table)
    assert mm["no_letter (% of answers)"] == pytest.approx(100 / 3, abs=1e-3) and mm["score"] == pytest.approx(100 / 3, abs=1e-3)
    # "text right, speech wrong" cases of sd-qa, each with a link to the Explorer
    at.selectbox(key="bm_vb_case_subset").set_value("sd-qa")
    _run(at)
    assert "2 samples of sd-qa answered right from text and wrong from speech by tiny-step10." in _texts(at)
    cases = next(d.value for d in at.dataframe if "explorer" in d.value.columns)
    assert sorted(cases["sample_id"]) == ["sd-qa/usa-0", "sd-qa/usa-1"]
    link = cases.set_index("sample_id").loc["sd-qa/usa-1", "explorer"]
    assert link.startswith("Sample_Explorer?") and dict(parse_qsl(urlsplit(link).query)) == {
        "model": "tiny-step10", "set": f"voicebench:{vb}", "sample": "sd-qa/usa-1"}
    at.selectbox(key="bm_vb_case").set_value("sd-qa/usa-1")
    _run(at)
    at.button(key="bm_vb_open").click()
    _run(at)
    assert at.session_state["sb_source"] == "voicebench" and at.session_state["sb_path_voicebench"] == str(vb)
    assert at.session_state["sb_sample"] == "sd-qa/usa-1" and _heatmap(at)


# ============================================================================ bad input
def test_missing_results_give_messages_and_the_rest_works(world, tmp_path, monkeypatch):
    monkeypatch.setenv("LSL_RESULTS_DIR", str(tmp_path / "nothing"))
    at = _app(BENCHMARK)
    assert "No evaluation results" in _texts(at) and "python -m lsl_core evaluate" in _texts(at)
    at.switch_page(CHECKPOINTS)
    _run(at)
    assert "No evaluation results yet" in _texts(at)
    assert _widget(at.sidebar.checkbox, "Only “text right, speech wrong”").disabled
    at.switch_page(EXPLORER)
    _run(at)
    assert _heatmap(at)


def test_failing_model_load_shows_error_and_other_widgets_keep_working(world):
    at = _app(EXPLORER)
    at.sidebar.text_input(key="sb_zoo_extra").set_value(str(world["bad"]))
    _run(at)
    broken = str((world["bad"] / "broken").resolve())
    _widget(at.sidebar.selectbox, "Checkpoint").set_value(broken)
    _run(at)
    assert "Could not load the model 'broken'" in _texts(at) and "does not exist" in _texts(at)
    assert not at.get("plotly_chart")
    query = dict(parse_qsl(urlsplit(at.sidebar.code[0].value).query))
    assert query["zoo"] == str(world["bad"]) and query["model"] == "broken"  # the link carries the extra folder
    assert "Could not load the model 'broken'" in _texts(_app(EXPLORER, query))
    _widget(at.sidebar.text_input, "Search question text").set_value("hamlet")  # the sidebar still works
    _run(at)
    assert len(_widget(at.sidebar.selectbox, "Sample").options) == 2
    _widget(at.sidebar.selectbox, "Checkpoint").set_value(world["roots"]["tiny-step10"])
    _run(at)
    assert _heatmap(at) and not at.error


@pytest.mark.parametrize("name,data,question,message", [
    ("notes.wav", b"this is not audio at all", "who wrote hamlet ?", "Could not decode audio"),
    ("empty.wav", b"", "who wrote hamlet ?", "empty (0 bytes)"),
    ("long.wav", None, "who wrote hamlet ?", "at most 120 s"),
    ("huge.wav", b"\0" * (1_200_000), "who wrote hamlet ?", "limited to 1 MB"),
    ("ok.wav", _wav_bytes(1.0), "  ", "Type the question"),
    ("silence.wav", "silence", "who wrote hamlet ?", "no speech energy"),
])
def test_bad_uploads_say_what_is_wrong(world, name, data, question, message):
    from ui.upload import sample_from_upload

    if data is None:  # 121 s at 2 kHz, 16-bit: under the size limit, over the longest clip the app reads
        buf = io.BytesIO()
        sf.write(buf, np.zeros(121 * 2000, np.float32), 2000, format="WAV", subtype="PCM_16")
        data = buf.getvalue()
    if data == "silence":  # 0.1 s of digital silence: analysed as speech before the speech-energy check
        buf = io.BytesIO()
        sf.write(buf, np.zeros(1600, np.float32), 16_000, format="WAV", subtype="PCM_16")
        data = buf.getvalue()
    with pytest.raises(Exception, match=re.escape(message)):
        sample_from_upload(name, data, question, max_mb=1)
    at = _app(EXPLORER)
    _widget(at.sidebar.selectbox, "Sample set").set_value("upload")
    _run(at)
    assert "Upload an audio file" in _texts(at)
    at.sidebar.file_uploader[0].set_value((name, data, "audio/wav"))
    _widget(at.sidebar.text_input, "Question (what the clip says)").set_value(question)
    _run(at)
    assert message in "\n".join(e.value for e in at.error)
    assert sum(message in e.value for e in at.error) == 1  # one message, next to the uploader
    assert sum(message in t for t in _texts(at).split("\n")) == 1
    assert "the message in the sidebar" in _texts(at)  # the page points there instead of repeating it
    assert "object at 0x" not in _texts(at)
    assert not at.get("plotly_chart")
    assert _widget(at.sidebar.selectbox, "Sample set").value == "upload"  # widgets still there


def test_good_upload_is_analyzed(world):
    at = _app(EXPLORER)
    _widget(at.sidebar.selectbox, "Sample set").set_value("upload")
    _run(at)
    at.sidebar.file_uploader[0].set_value(("mine.wav", _wav_bytes(1.4, 300.0), "audio/wav"))
    _widget(at.sidebar.text_input, "Question (what the clip says)").set_value("who wrote hamlet ?")
    _widget(at.sidebar.text_input, "Reference answers (optional, separated by |)").set_value("shakespeare")
    _run(at)
    fig = _heatmap(at)
    assert _arr(fig["data"][0]["z"]).shape[1] == len(fig["layout"]["xaxis"]["ticktext"])
    assert "shakespeare" in _texts(at)
    assert "sample" not in at.query_params  # an upload cannot be linked ...
    box = "\n".join(w.value for w in at.sidebar.warning)
    assert "cannot travel in a link" in box  # ... and the link box says so, with the clip + question to send along
    bundle = [e for e in at.get("download_button") if "Clip + question" in e.proto.label]
    assert bundle and bundle[0].proto.url
    query = dict(parse_qsl(urlsplit(at.sidebar.code[0].value).query))
    assert query["set"] == "upload"
    opened = _app(EXPLORER, query)  # the receiver: the upload box and why, not a silently different sample
    assert "This link was made from an uploaded clip" in _texts(opened) and not opened.get("plotly_chart")
    assert _widget(opened.sidebar.selectbox, "Sample set").value == "upload"


def test_upload_bundle_holds_clip_and_question():
    import zipfile

    from ui.links import upload_bundle

    z = zipfile.ZipFile(io.BytesIO(upload_bundle("mine.wav", b"RIFFdata", "who wrote hamlet ?", ("shakespeare",))))
    assert z.read("mine.wav") == b"RIFFdata"
    text = z.read("question.txt").decode()
    assert "question: who wrote hamlet ?" in text and "shakespeare" in text


# ============================================================================ device access
def test_locked_iteration_releases_between_items_and_on_close():
    from lsl_core.model.lslm import locked_items

    lock = threading.RLock()
    seen = []

    def other_thread_can_lock() -> bool:
        out = []
        t = threading.Thread(target=lambda: out.append(lock.acquire(timeout=0.05) and (lock.release() or True)))
        t.start()
        t.join()
        return out[0]

    gen = locked_items(range(3), lock)
    for item in gen:
        seen.append((item, other_thread_can_lock()))  # held while the item is processed
        if item == 1:
            break
    assert seen == [(0, False), (1, False)]
    gen.close()
    assert other_thread_can_lock()  # released by close() after an early exit


# ============================================================================ controls (issue 15)
def test_explorer_shows_controls_next_to_every_metric(world):
    from lsl_core.analysis_controls import sample_controls
    from lsl_core.data.sets import load_sample_set
    from lsl_core.metrics.controls import ControlOptions

    at = _app(EXPLORER)
    first = world["ids"][0]
    L = _model(world).num_layers
    ref = sample_controls(_model(world), _sample(world, first), load_sample_set(world["spec"]).questions(),
                          ControlOptions(partners=5))
    assert len(ref.partner_questions) == 3  # 4 questions in the set: K is capped at the 3 others
    cards = {m.label: m for m in at.metric}
    aps = cards["APS (cosine)"]
    assert aps.delta.startswith(f"{ref.layer_mean('aps_cos', 'specific'):+.4f} specific")
    assert f"other questions: {ref.layer_mean('aps_cos', 'mismatched'):.4f}" in aps.delta
    sp = cards[f"Spearman ρ, layer {L // 2}"]
    assert sp.delta.startswith(f"{ref.curve('spearman_cos', 'specific')[L // 2]:+.4f}")
    assert cards[f"Consistency, layer {L // 2}"].delta and cards["APS (distance)"].delta
    fig = _fig(at, "Controls: sequence cosine per layer")
    named = {t["name"]: t for t in fig["data"]}
    np.testing.assert_allclose(_arr(named["this clip, own transcript"]["y"]), ref.curve("seq_cos"), atol=1e-5)
    np.testing.assert_allclose(_arr(named["shuffled frames (same clip)"]["y"]), ref.curve("seq_cos", "shuffled"),
                               atol=1e-5)
    assert any(n.startswith("silence (") for n in named) and any(n.startswith("mismatched: mean of 3") for n in named)
    partners = [t for t in fig["data"] if t.get("legendgroup") == "partners"]
    assert len(partners) == 3 and all("other question:" in t["hovertemplate"] for t in partners)
    assert any("is the alignment specific" in h.value for h in at.subheader) and "**Shuffled frames**" in _texts(at)
    [table] = [d.value for d in at.dataframe if "specific, layers 1..L" in d.value.columns]
    row = table[table["metric"] == "APS (cosine)"].iloc[0]
    # tables show 3 decimals (viz.display_table)
    assert row["specific, layers 1..L"] == pytest.approx(ref.layer_mean("aps_cos", "specific"), abs=1e-3)
    assert row[f"silence, layer {L // 2}"] == pytest.approx(ref.curve("aps_cos", "silence")[L // 2], abs=1e-3)
    # fewer partners -> fewer lines and a new draw; another metric -> another figure
    _widget(at.number_input, "Other questions (controls)").set_value(1)
    _run(at)
    assert len([t for t in _fig(at, "Controls:")["data"] if t.get("legendgroup") == "partners"]) == 1
    _widget(at.selectbox, "Control metric").set_value("spearman_cos")
    _run(at)
    assert _fig(at, "Controls: Spearman rho, cosine path per layer")


def test_checkpoints_cka_across_training_against_its_null_from_stored_rows(world, tmp_path, monkeypatch):
    import shutil

    from lsl_core.analysis import AnalysisOptions
    from lsl_core.data.sets import load_sample_set
    from lsl_core.experiments.analyze import analyze_checkpoints
    from lsl_core.model.loading import read_manifest
    from lsl_core.results import checkpoint_means

    stored = tmp_path / "results"
    shutil.copytree(world["root"] / "results", stored)
    samples = load_sample_set(world["spec"]).filter(ids=world["ids"][:2])
    manifests = [read_manifest(r) for r in world["roots"].values()]
    rows = analyze_checkpoints(manifests, samples, AnalysisOptions(cka=True)).rows  # as `analyze` stores them
    rows.to_parquet(stored / "analysis.parquet", index=False)
    monkeypatch.setenv("LSL_RESULTS_DIR", str(stored))
    at = _app(CHECKPOINTS)
    fig = _fig(at, "aligned CKA (speech layer a vs text layer a) across training")
    means = checkpoint_means(rows).set_index("checkpoint")
    lines = {t["name"]: t for t in fig["data"]}
    nulls = [t for name, t in lines.items() if name.endswith("· shuffled-pairing null")]
    assert nulls and len(nulls) == len(fig["data"]) / 2  # one dotted null per trajectory
    for t in fig["data"]:
        col = "cka_null_diag_mean" if t in nulls else "cka_diag_mean"
        assert set(np.round(_arr(t["y"]), 6)) <= set(np.round(means[col].to_numpy(), 6))
    assert (means["cka_diag_mean"] > 0).all() and means["cka_above_null_frac"].between(0, 1).all()


def test_checkpoints_retrieval_curve_live_and_from_stored_results(world, tmp_path, monkeypatch):
    import shutil

    from lsl_core.analysis_controls import analyze_controls, controls_table
    from lsl_core.metrics.controls import ControlOptions

    at = _app(CHECKPOINTS)
    _widget(at.radio, "Controls from").set_value("compute live")
    _widget(at.number_input, "Samples for the controls").set_value(4)
    _run(at)
    [btn] = [b for b in at.button if b.label.startswith("Compute controls")]
    assert "× 4 samples" in btn.label
    btn.click()
    _run(at)
    problems = [w.value for w in at.warning if not w.value.startswith("Small n")]  # the tiny world has few samples
    assert not problems, problems
    fig = _fig(at, "Speech → text retrieval per layer: top-1 accuracy by sequence cosine")
    assert len(fig["data"]) == 4  # every checkpoint of both trajectories
    # the 4 samples cover the 4 distinct questions (one voice each); retrieval among 4 candidates
    ids = [world["ids"][k] for k in (0, 2, 4, 6)]
    ref = analyze_controls(_model(world), [_sample(world, s) for s in ids], ControlOptions(), cache=False)
    table = ref.retrieval_table()
    want = table[(table.scorer == "seq_cos") & (table.layer >= 0)].top1.to_numpy()
    step10 = [t for t in fig["data"] if t["name"].startswith("tiny-step10")][0]
    np.testing.assert_allclose(_arr(step10["y"]), want, atol=1e-9)
    assert any("chance 0.250" in (a.get("text") or "") for a in fig["layout"]["annotations"])
    assert _fig(at, "Specific alignment per layer: sequence cosine")
    # GAP on raw vs specific alignment: one fit over the 3 frozen checkpoints that have evaluation results
    [fits] = [d.value for d in at.dataframe if {"metric", "r2"} <= set(d.value.columns)
              and (d.value["metric"] == "specific_seq_cos").any()]
    assert set(fits["metric"]) >= {"matched_seq_cos", "specific_seq_cos", "top1_seq_cos"}
    assert (fits["n"] == 3).all() and fits["r2"].between(0, 1).all()
    _widget(at.radio, "Statistic").set_value("mrr")
    _run(at)
    assert _fig(at, "mean reciprocal rank by sequence cosine")

    # stored results (what `analyze --controls` writes) are read without computing
    stored = tmp_path / "results"
    shutil.copytree(world["root"] / "results", stored)
    frame = controls_table(ref, checkpoint="tiny-step10", family="tiny", strategy="frozen", step=10)
    frame.assign(centring="none").to_parquet(stored / "analysis_controls.parquet", index=False)
    monkeypatch.setenv("LSL_RESULTS_DIR", str(stored))
    at = _app(CHECKPOINTS)
    assert _widget(at.radio, "Controls from").value == "stored results"
    fig = _fig(at, "Speech → text retrieval per layer")
    assert len(fig["data"]) == 1
    np.testing.assert_allclose(_arr(fig["data"][0]["y"]), want, atol=1e-9)


def test_checkpoints_closed_vocabulary_ceiling_from_stored_rows(world, tmp_path, monkeypatch):
    """The ceiling section reads `closed-vocab --out` rows from the results folder: the library's table and
    figure, a note when there are none or they are another checkpoint's, one error for a broken file while the
    rest of the page stays."""
    import shutil

    from lsl_core.experiments.closed_vocab import (SPEECH_ROW, ceiling_table, coverage_label, coverage_table,
                                                   format_table)

    stored = tmp_path / "results"
    shutil.copytree(world["root"] / "results", stored)
    monkeypatch.setenv("LSL_RESULTS_DIR", str(stored))
    at = _app(CHECKPOINTS)
    assert "No stored closed-vocabulary results. Write them with `python -m lsl_core closed-vocab" in _texts(at)

    base = pd.DataFrame({"checkpoint": "tiny-step10", "question": ["q1", "q1", "q2", "q2"],
                         "voice": ["en-gb", "en-gb-scotland"] * 2, "cascade_agreement": [0.5, 0.25, 1.0, 0.5],
                         "speech_agreement": [0.25, 0.0, 0.5, 0.25], "chunks": [4, 4, 3, 3]})
    rows = pd.concat([base.assign(condition="typed question, never-spoken words dropped",
                                  agreement=[0.75, 0.75, 1.0, 1.0], chunks_closed=[1, 1, 0, 0]),
                      base.assign(condition="Whisper transcript, never-spoken words dropped",
                                  agreement=[0.5, 0.0, 0.75, 0.5], chunks_closed=[1, 2, 0, 1])], ignore_index=True)
    rows.to_parquet(stored / "closed_vocab.parquet")
    at = _app(CHECKPOINTS)
    fig = _fig(at, "The closed-vocabulary ceiling")
    want = ceiling_table(rows, "en-gb-scotland")
    assert format_table(want) in [m.value for m in at.markdown]
    seen = [tr for tr in fig["data"] if tr["name"] == "seen voices"][0]
    assert list(seen["y"])[-1] == SPEECH_ROW  # on top
    w = want[want["voice"] == "seen"].set_index("condition")["ratio"]
    np.testing.assert_allclose(_arr(seen["x"]), w.reindex(list(seen["y"])).to_numpy())
    assert "predate the split by never-spoken words" in _texts(at)  # rows without never_spoken
    rows.assign(never_spoken=[1, 1, 0, 0] * 2).to_parquet(stored / "closed_vocab.parquet")
    at = _app(CHECKPOINTS)
    fig = _fig(at, "Measured: the speech answers by how many words of the question training never spoke")
    cov = coverage_table(rows.assign(never_spoken=[1, 1, 0, 0] * 2), "en-gb-scotland")
    assert format_table(cov, share="words never spoken") in [m.value for m in at.markdown]
    seen = [tr for tr in fig["data"] if tr["name"] == "seen voices"][0]
    assert list(seen["y"]) == [coverage_label(1), coverage_label(0), SPEECH_ROW]  # first on top
    np.testing.assert_allclose(_arr(seen["x"]), [0.25 / 0.5, 0.5 / 1.0, 0.75 / 1.5])  # the stored speech answers
    assert "words never spoken" in seen["hovertemplate"]
    rows.assign(checkpoint="not-in-this-zoo").to_parquet(stored / "closed_vocab.parquet")
    at = _app(CHECKPOINTS)
    assert "are for not-in-this-zoo, not one of these checkpoints" in _texts(at)

    (stored / "closed_vocab.parquet").write_bytes(b"not a parquet file")
    at = _app(CHECKPOINTS)
    errs = [e.value for e in at.error if "closed_vocab.parquet" in e.value]
    assert len(errs) == 1 and "re-run `python -m lsl_core closed-vocab" in errs[0], _texts(at)
    assert _fig(at, "GAP (f1, text − speech) across training")  # the rest of the page is still there


def test_checkpoints_word_recall_from_stored_rows(world, tmp_path, monkeypatch):
    """The word-recall section reads `hearing --out` rows from the results folder: the library's table and
    figure for the zoo's checkpoints (and their Whisper rows), a note when there are none, one error for a
    broken file while the rest of the page stays."""
    import shutil

    from lsl_core.experiments.hearing import (Lineage, exposure_tables, format_exposure, format_table, recall_rows,
                                             recall_tables)

    stored = tmp_path / "results"
    shutil.copytree(world["root"] / "results", stored)
    monkeypatch.setenv("LSL_RESULTS_DIR", str(stored))
    at = _app(CHECKPOINTS)
    assert "No stored word-recall results. Write them with `python -m lsl_core hearing" in _texts(at)

    lin = Lineage(frozenset({"who", "wrote", "is"}), frozenset({"nepal"}), ("t",),
                  clips={"who": 14, "wrote": 7, "is": 40, "nepal": 1})
    qs = ["Who wrote Hamlet?", "Where is Nepal?", "Who is Zog?"] * 2
    voices = ["en-gb"] * 3 + ["en-gb-scotland"] * 3
    parts = []
    for name, outs in (("tiny-step10", ["who wrote", "is nepal", "who"] * 2),
                       ("tiny-step10: Whisper ASR", ["who wrote hamlet", "where is nepal", "who is zog"] * 2),
                       ("not-in-this-zoo", [""] * 6)):
        parts.append(recall_rows(outs, qs, voices, lin).assign(checkpoint=name))
    rows = pd.concat(parts, ignore_index=True)
    rows.to_parquet(stored / "hearing.parquet")
    at = _app(CHECKPOINTS)
    fig = _fig(at, "What the speech path hears")
    xs = {x for t in fig["data"] for x in t["x"]}
    assert xs == {"tiny-step10", "tiny-step10: Whisper ASR"}  # checkpoints outside the zoo are left out
    want = recall_tables(rows[rows["checkpoint"] != "not-in-this-zoo"], "en-gb-scotland")
    assert format_table(want) in [m.value for m in at.markdown]
    never = [t for t in fig["data"] if t["name"] == "words never spoken in training"]
    assert len(never) == 2  # one per voice panel
    seen = want[(want["voices"] == "seen") & (want["words"] == "never")]
    np.testing.assert_allclose(sorted(_arr(never[0]["y"])), sorted(100 * seen["recall"].to_numpy()))
    assert all(t["error_y"]["type"] == "data" for t in fig["data"])
    # recall by exposure: a line per checkpoint and voice panel over the exposure bins, the library's table
    fig = _fig(at, "Recall by exposure")
    lines = [t for t in fig["data"] if t["mode"] == "lines+markers"]
    assert sorted(t["name"] for t in lines) == ["tiny-step10", "tiny-step10", "tiny-step10: Whisper ASR",
                                                "tiny-step10: Whisper ASR"]
    want_e = exposure_tables(rows[rows["checkpoint"] != "not-in-this-zoo"], "en-gb-scotland")
    assert format_exposure(want_e) in [m.value for m in at.markdown]
    assert list(lines[0]["x"]) == ["0", "1–9", "10–29", "30–99"]  # never, nepal, wrote/who, is
    # rows of the older schema (per clip and word group, no exposure): the recall section, a note for the rest
    old = rows.groupby(["checkpoint", "question", "voice", "group", "output"], as_index=False)[
        ["recalled", "spoken"]].sum()
    old.to_parquet(stored / "hearing.parquet")
    at = _app(CHECKPOINTS)
    assert _fig(at, "What the speech path hears") and "predate exposure counts" in _texts(at)

    (stored / "hearing.parquet").write_bytes(b"not a parquet file")
    at = _app(CHECKPOINTS)
    errs = [e.value for e in at.error if "hearing.parquet" in e.value]
    assert len(errs) == 1 and "re-run `python -m lsl_core hearing" in errs[0], _texts(at)
    assert _fig(at, "GAP (f1, text − speech) across training")  # the rest of the page is still there
