"""The Python blocks of README.md and docs/*.md run as written, on the shipped default model, and give what
their comments say (shapes, one result per clip). A renamed function or argument breaks them here, not in a
reader's notebook. Figure.show is a no-op; every other line runs unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, str]]:
    """(file, code) of every ```python block in README.md and docs/*.md (not docs/results: generated)."""
    out = []
    for f in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        out += [(f.relative_to(ROOT).as_posix(), m.group(1)) for m in _BLOCK.finditer(f.read_text(encoding="utf-8"))]
    return out


BLOCKS = _blocks()


def _run(code: str, name: str, monkeypatch) -> dict:
    import plotly.graph_objects as go

    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: None)
    monkeypatch.chdir(ROOT)
    ns: dict = {"__name__": "__docs__"}
    exec(compile(code, name, "exec"), ns)  # noqa: S102 - the documented code, under test
    return ns


def test_the_documented_blocks_are_the_ones_checked_below():
    assert [f for f, _ in BLOCKS] == ["README.md", "docs/controls.md", "docs/controls.md", "docs/controls.md"]


def test_readme_notebook_block(monkeypatch):
    file, code = BLOCKS[0]
    ns = _run(code, file, monkeypatch)
    a, L = ns["a"], ns["model"].num_layers
    Ts, Tt = a.cos.shape[1], a.cos.shape[2]
    assert a.cos.shape == (L + 1, Ts, Tt) and a.path_cos.shape == (L + 1, Tt)  # the comment's shapes
    assert Tt == len(a.tokens) and -1.0 <= a.aps_cos <= 1.0


def test_controls_notebook_block(monkeypatch, capsys):
    file, code = BLOCKS[1]
    ns = _run(code, file, monkeypatch)
    samples, res = ns["samples"], ns["res"]
    assert len({s.question for s in samples}) == len(samples) == 20  # as its comment says
    assert "retrieval" in capsys.readouterr().out.lower()  # the printed report
    L = ns["model"].num_layers
    table = res.retrieval_table()
    assert set(table["layer"]) == {*range(L + 1), -1} and (table["n"] == 20).all()
    # 20 candidates: the clip's own question and 19 others
    assert table["chance_top1"].tolist() == pytest.approx([1 / 20] * len(table))
    assert ns["sc"].curve("aps_cos", "specific").shape == (L + 1,)


def test_gap_fits_block(monkeypatch):
    """The controls page's GAP-fits block: the shipped checkpoints' fits, the step row last, each row's R² the
    OLS of the GAP on that column, the null columns filled."""
    from lsl_core.metrics.gap import fit_gap

    file, code = BLOCKS[2]
    ns = _run(code, file, monkeypatch)
    table = ns["table"]
    fits = ns["gap_fits"](table, ["seq_cos_mean", "aps_cos"], by=())
    assert fits["metric"].tolist() == ["seq_cos_mean", "aps_cos", "step"]
    assert (fits["n"] == len(table)).all() and len(table) >= 16  # every shipped checkpoint
    for _, r in fits.iterrows():
        assert r["r2"] == pytest.approx(fit_gap(table[r["metric"]], table["gap"]).r2)
        assert r["r2_lo"] <= r["r2"] <= r["r2_hi"] and 0.0 <= r["p_perm"] <= 1.0
    assert fits["r2_added"].iloc[:2].notna().all() and pd.isna(fits["r2_added"].iloc[2])


def test_intervention_nulls_block(monkeypatch):
    """The controls page's interventions block: every shipped Table 1 row with its nulls, Δ the paired mean."""
    file, code = BLOCKS[3]
    ns = _run(code, file, monkeypatch)
    rows, nulls = ns["rows"], ns["nulls"]
    assert len(nulls) == 13 and (nulls["n"] == rows["sample_id"].nunique()).all()  # the paper's rows' 13 nulls
    r = nulls.iloc[0]
    a = rows[rows.title == r["condition"]].set_index("sample_id")["agreement"]
    b = rows[rows.title == r["null"]].set_index("sample_id")["agreement"]
    assert r["Δ agreement"] == pytest.approx(100 * (a - b.reindex(a.index)).mean())
    assert (nulls["Δ agreement_lo"] <= nulls["Δ agreement"]).all()
    assert (nulls["Δ agreement"] <= nulls["Δ agreement_hi"]).all()
