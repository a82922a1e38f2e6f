"""Interventions across layers (lsl_core.experiments.layer_profile): the conditions, the paired Δ by hand and
against table1, the figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lsl_core.errors import LSLError
from lsl_core.experiments.layer_profile import VERSUS, at_layers, has_profile, layer_profile, profile_markdown
from lsl_core.interventions import NULL_TESTS, Intervention


def test_at_layers_places_each_condition_at_each_layer():
    assert at_layers(["angle:all", "angle:all:shuffled"], [0, 4]) == [
        "angle:all", "angle:all@4", "angle:all:shuffled", "angle:all@4:shuffled"]
    assert at_layers(["length:bottom3@7"], [2, 2, 5]) == ["length:bottom3@2", "length:bottom3@5"]  # own @ℓ replaced
    for layers in ([], [-1]):
        with pytest.raises(LSLError, match="(?i)layer"):
            at_layers(["angle:all"], layers)
    with pytest.raises(LSLError, match="composed"):
        at_layers(["angle:all+length:all"], [0, 1])


def _rows(scores: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"sample_id": f"s{i}", "condition": c,
                          "title": "Original" if c == "original" else Intervention.parse(c).title(),
                          "containment": 0.0, "f1": v / 2, "agreement": v, "n_frames": 3}
                         for c, vals in scores.items() for i, v in enumerate(vals)])


def test_layer_profile_by_hand():
    rows = _rows({
        "original": [0.1, 0.2, 0.3],
        "angle:all": [0.5, 0.2, 0.6], "angle:all@4": [0.1, 0.2, 0.3],
        "angle:all:shuffled": [0.1, 0.2, 0.3], "angle:all@4:shuffled": [0.4, 0.5, 0.6],
        "angle:all@4:other": [0.1, 0.2, 0.3],  # its ℓ 0 twin was not run: only at ℓ 4
        "angle:bottom3": [0.9, 0.9, 0.9],  # one layer only: no profile
        "angle:random3@4": [0.0, 0.0, 0.0],  # a null whose intervention was not run at ℓ 4
    })
    t = layer_profile(rows)
    assert set(t["intervention"]) == {"Angle·All"} and set(t["family"]) == {"angle:all"}
    got = {(r.versus, r.layer): (r["Δ agreement"], r["Δ F1"], r.n) for _, r in t.iterrows()}
    assert got.keys() == {("unedited speech", 0), ("unedited speech", 4), ("shuffled pairing", 0),
                          ("shuffled pairing", 4), ("other question", 4)}
    # Δ = mean of the per-sample differences, in points; F1 is half the agreement here
    assert got[("unedited speech", 0)][0] == pytest.approx(100 * np.mean([0.4, 0.0, 0.3]))
    assert got[("unedited speech", 4)][0] == pytest.approx(0.0)
    assert got[("shuffled pairing", 4)][0] == pytest.approx(-30.0) and got[("shuffled pairing", 4)][1] == \
        pytest.approx(-15.0)
    assert all(n == 3 for *_, n in got.values())
    # ordered: comparisons in VERSUS' order, layers ascending within each
    assert list(zip(t["versus"], t["layer"])) == [("unedited speech", 0), ("unedited speech", 4),
                                                  ("shuffled pairing", 0), ("shuffled pairing", 4),
                                                  ("other question", 4)]
    assert (t["Δ agreement_lo"] <= t["Δ agreement"]).all() and (t["Δ agreement"] <= t["Δ agreement_hi"]).all()
    assert t.loc[t["versus"] == "unedited speech", "tests"].eq("").all()
    assert t.loc[t["versus"] == "shuffled pairing", "tests"].str.contains("another token").all()
    md = profile_markdown(t)
    assert md.splitlines()[0] == "| intervention | Δ against | ℓ 0 | ℓ 4 |"
    assert "| Angle·All | other question | – | +0.0 [+0.0, +0.0] |" in md
    assert layer_profile(rows, min_layers=3).empty and layer_profile(rows[rows.condition != "angle:all@4"]).empty
    assert has_profile(rows["condition"]) and not has_profile(rows["condition"], min_layers=3)
    assert not has_profile(["original", "angle:all@15", "length:all+calibrate:all@15", "angle:all@4:shuffled"])


def test_layer_profile_on_a_model_agrees_with_table1(tiny_model):
    """The real stack at two layers (conditions, titles, samples): each Δ against the unedited answer is table1's Δ
    of that condition."""
    from conftest import tone

    from lsl_core.data.samples import Sample
    from lsl_core.experiments.table1 import evaluate_interventions, table1

    samples = [Sample(id=f"s{i}", audio=tone(1.0 + 0.2 * i, freq=200.0 + 50 * i), sr=16_000, question=q,
                      answers=("paris",)) for i, q in enumerate(["what is the capital of france ?",
                                                                 "who wrote hamlet ?", "how tall is everest ?"])]
    conds = at_layers(["angle:all", "angle:all:shuffled"], [0, 1])
    rows = evaluate_interventions(tiny_model, samples, conds, max_new_tokens=3)
    assert list(dict.fromkeys(rows["condition"])) == ["original", *conds]
    # the tiny model's answers hardly move; scores drawn at random make each Δ distinct, so a wrong layer, sign or
    # pairing shows
    rows["agreement"] = np.random.default_rng(0).uniform(size=len(rows))
    t, ref = layer_profile(rows), table1(rows)
    assert sorted(set(t["layer"])) == [0, 1] and set(t["versus"]) == {"unedited speech", "shuffled pairing"}
    for _, r in t[t["versus"] == "unedited speech"].iterrows():
        title = Intervention.parse(r["family"]).title() + ("" if r["layer"] == 0 else f" @ℓ{r['layer']}")
        assert r["Δ agreement"] == pytest.approx(ref.loc[title, "Δ agreement"], abs=1e-9)
        assert r["n"] == 3


def test_intervention_layers_figure():
    from lsl_core import viz

    rows = _rows({"original": [0.1, 0.2, 0.3], "angle:all": [0.5, 0.2, 0.6], "angle:all@4": [0.1, 0.2, 0.3],
                  "angle:all:other": [0.1, 0.1, 0.1], "angle:all@4:other": [0.2, 0.2, 0.2],
                  "length:all": [0.0] * 3, "length:all@2": [0.1] * 3})
    t = layer_profile(rows)
    fig = viz.intervention_layers(t, "agreement")  # trace arrays stay numpy on the figure object
    assert [tr.name for tr in fig.data] == ["Angle·All − unedited speech", "Angle·All − other question"]
    for tr in fig.data:
        want = t[(t["intervention"] == "Angle·All") & (t["versus"] == tr.name.split(" − ")[1])]
        np.testing.assert_allclose(np.asarray(tr.customdata[:, 4], dtype=float), want["layer"].to_numpy(dtype=float))
        assert np.abs(np.asarray(tr.x, dtype=float) - want["layer"].to_numpy()).max() <= 0.25 * 4  # dodged, near ℓ
        assert "@ℓ%{customdata[4]}" in tr.hovertemplate
        np.testing.assert_allclose(np.asarray(tr.y, dtype=float), want["Δ agreement"].to_numpy())
        np.testing.assert_allclose(np.asarray(tr.error_y.array, dtype=float),
                                   (want["Δ agreement_hi"] - want["Δ agreement"]).to_numpy())
        assert "Δ agreement = %{y:+.1f} points" in tr.hovertemplate and "n = %{customdata[3]}" in tr.hovertemplate
    assert fig.layout.xaxis.title.text.startswith("edit layer ℓ") and "points" in fig.layout.yaxis.title.text
    xs = [np.asarray(tr.x, dtype=float) for tr in fig.data]
    assert not np.allclose(xs[0], xs[1])  # side by side at each layer
    # the markers and dashes tell the comparisons apart without colour
    assert len({(tr.marker.symbol, tr.line.dash) for tr in fig.data}) == len(fig.data)
    other = viz.intervention_layers(t, intervention="Length·All")
    assert [tr.name for tr in other.data] == ["Length·All − unedited speech"]
    with pytest.raises(ValueError, match="not in the profile"):
        viz.intervention_layers(t, intervention="Angle·Bottom3")
    assert set(VERSUS) == {"original", *NULL_TESTS}  # every null kind has its name in the profile ...
    assert set(viz.VERSUS_MARKS) == set(VERSUS.values())  # ... and its marker and dash in the figure
    assert "breaks:" not in fig.data[0].hovertemplate and "breaks:" in fig.data[1].hovertemplate
