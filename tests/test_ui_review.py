"""Review of what the app hands the user: exact data exports with flagged percent columns and OS-safe file
names (ui/export.py), the interventions snippet with its nulls (ui/reproduce.py), the upload bundle's name
(ui/links.py)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd


def _table() -> pd.DataFrame:
    return pd.DataFrame({"condition": ["Original", "Angle·All"],
                         "aps_cos": [1 / 3, np.pi * 1e-12],  # a tiny value must not become 0
                         "Δ agreement": [0.1234567890123456789, -2 / 7],  # already in percent
                         "Δ agreement_lo": [-1 / 9, -5 / 7],
                         "tokens": [[0.12345678901234567, 1], [2]]})


def test_json_download_keeps_every_float_exactly():
    from ui.export import json_bytes

    df = _table()
    back = json.loads(json_bytes(df, percents=("Δ agreement",)).decode("utf-8"))
    assert [r["aps_cos"] for r in back] == list(df["aps_cos"])  # bit-exact round trip, no 10-digit rounding
    assert [r["Δ agreement (%)"] for r in back] == list(df["Δ agreement"])
    assert back[0]["tokens"] == df["tokens"][0]  # list cells stay lists, exact


def test_json_download_writes_missing_values_as_null():
    from ui.export import json_bytes

    text = json_bytes(pd.DataFrame({"r2": [np.nan, 0.5], "n": [np.int64(3), np.int64(4)]})).decode("utf-8")
    back = json.loads(text)  # valid JSON (no bare NaN)
    assert back == [{"r2": None, "n": 3}, {"r2": 0.5, "n": 4}]


def test_csv_download_is_exact_and_flags_percent_columns():
    from ui.export import csv_bytes

    df = _table()
    back = pd.read_csv(io.BytesIO(csv_bytes(df, percents=("Δ agreement",))))
    assert list(back.columns) == ["condition", "aps_cos", "Δ agreement (%)", "Δ agreement_lo (%)", "tokens"]
    assert list(back["aps_cos"]) == list(df["aps_cos"]) and list(back["Δ agreement (%)"]) == list(df["Δ agreement"])


def test_download_names_are_safe_on_every_os():
    from ui.export import file_name

    windows_reserved = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                        *(f"lpt{i}" for i in range(1, 10))}
    for raw in ("con", "NUL", "aux.txt", "a:b/c\\d?*<>|\"", ".hidden", "..", "x" * 400, "answers_q1_angle:bottom3",
                "cases_   ", "Δ agreement · ℓ 2", "lpt1"):
        name = file_name(raw, "csv")
        stem = name[: -len(".csv")]
        assert name.endswith(".csv") and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem), name
        assert stem.split(".")[0].lower() not in windows_reserved, name
        assert len(name) <= 120 and not stem.endswith(".")


def _side_by_side_call(code: str):
    import ast

    [call] = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Call)
              and getattr(n.func, "id", None) == "generate_side_by_side"]
    return ast.literal_eval(call.args[2]), {k.arg for k in call.keywords}


def test_interventions_snippet_generates_the_nulls_the_page_shows():
    """With 'Also its nulls' the page generates the intervention and its nulls (one of them with the set's next
    question): the snippet generates the same conditions, with the donor the :other null needs."""
    from ui.reproduce import interventions_code

    nulls = ("angle:random3", "angle:bottom3:shuffled", "angle:bottom3:other")
    code = interventions_code("ckpt", "sd-qa-mini", "q1", condition="angle:bottom3", max_new=4, cascade=False,
                              nulls=nulls)
    conds, kwargs = _side_by_side_call(code)
    assert conds == ["angle:bottom3", *nulls]
    assert "donor_question" in kwargs and "donor = donors_for(samples, [sample.id])[0]" in code
    plain = interventions_code("ckpt", "sd-qa-mini", "q1", condition="angle:bottom3", max_new=4, cascade=False)
    assert _side_by_side_call(plain) == (["angle:bottom3"], {"max_new_tokens", "cascade"})


def test_upload_bundle_names_are_safe():
    """An uploaded file's name ('my clip: take 2?.wav', or a path a client sent) becomes a safe download name, and
    the zip holds the clip under its base name (no folders, no '..')."""
    import zipfile

    from ui.links import bundle_file_name, upload_bundle

    name = bundle_file_name("my clip: take 2?.wav")
    assert name.endswith("_with_question.zip") and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), name
    with zipfile.ZipFile(io.BytesIO(upload_bundle("../../etc/x.wav", b"RIFF", "who?"))) as z:
        assert sorted(z.namelist()) == ["question.txt", "x.wav"]
