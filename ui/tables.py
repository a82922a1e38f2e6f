"""Display tables from results already computed (rearranging and labelling only; no metric here)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

OUTCOMES = ("all", "text right · speech wrong", "both right", "both wrong", "speech right · text wrong")


def layer_table(a) -> pd.DataFrame:
    """One row per layer of a SampleAnalysis: sequence cosine/distance, Spearman, consistency."""
    L = a.num_layers
    note = ["LLM input"] + [""] * (L - 1) + ["after final norm"]
    return pd.DataFrame({
        "layer": np.arange(L + 1), "seq_cos": a.seq_cos, "seq_dist": a.seq_dist,
        "spearman_cos": a.spearman_cos, "spearman_dist": a.spearman_dist, "consistency": a.consistency,
        "note": note[: L + 1],
    })


def path_table(a, layer: int, metric: str) -> pd.DataFrame:
    """The alignment path of one layer: token j -> frame i*_j, its time and its value."""
    path = (a.path_cos if metric == "cosine" else a.path_dist)[layer]
    scores = (a.scores_cos if metric == "cosine" else a.scores_dist)[layer]
    times = np.asarray(a.frame_times)
    return pd.DataFrame({
        "token_index": np.arange(len(a.tokens)), "token": list(a.tokens), "frame": path,
        "frame_start_s": times[path], "frame_end_s": times[path] + a.frame_seconds, metric: scores,
    })


def layer_matrix_table(a, layer: int, metric: str) -> pd.DataFrame:
    """The frames x tokens matrix of one layer, long form with exact values (frame, time, token, value)."""
    A = np.asarray((a.cos if metric == "cosine" else a.dist)[layer])  # [Ts, Tt]
    Ts, Tt = A.shape
    i, j = np.meshgrid(np.arange(Ts), np.arange(Tt), indexing="ij")
    times = np.asarray(a.frame_times)
    return pd.DataFrame({"frame": i.ravel(), "frame_start_s": times[i.ravel()], "token_index": j.ravel(),
                         "token": np.asarray(list(a.tokens), dtype=object)[j.ravel()], metric: A.ravel()})


def matrix_table(M: np.ndarray, row: str = "speech_layer", col: str = "text_layer") -> pd.DataFrame:
    """A square matrix as a long table (row, col, value) for CSV/JSON export."""
    M = np.asarray(M)
    r, c = np.meshgrid(np.arange(M.shape[0]), np.arange(M.shape[1]), indexing="ij")
    return pd.DataFrame({row: r.ravel(), col: c.ravel(), "value": M.ravel()})


def mark(score: float) -> str:
    """'✓ correct' / '✗ wrong' for a 0/1 containment score, '– (no reference)' without references."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return "– (no reference)"
    return "✓ correct" if score >= 1 else "✗ wrong"


def mark_md(score: float) -> str:
    """The same mark as Streamlit markdown, with an icon and colour (green/red)."""
    text = mark(score)
    if text.startswith("✓"):
        return ":green[:material/check_circle: correct]"
    if text.startswith("✗"):
        return ":red[:material/cancel: wrong]"
    return ":gray[– no reference answer]"


def answers_table(result: dict) -> pd.DataFrame:
    """The side-by-side rows as a table (marks, agreement in percent, edited tokens/times)."""
    rows = []
    for r in result["rows"]:
        rows.append({
            "condition": r["title"], "answer": r["answer"], "correct": mark(r["containment"]),
            "F1 vs references (%)": 100 * r["f1"], "agreement with text answer (%)": 100 * r["agreement"],
            "edited tokens": " ".join(repr(t) for t in r["token_text"]),
            "edited frames (s)": ", ".join(f"{t:.2f}" for t in r["frame_times"]),
        })
    return pd.DataFrame(rows)


def nulls_table(result: dict, label: str) -> pd.DataFrame:
    """The side-by-side rows of `label`'s nulls (interventions.intervention_nulls) on one sample: each null's
    answer and agreement, and how much more the intervention agrees with the text answer (points)."""
    from lsl_core.interventions import intervention_nulls

    by_cond = {r["condition"]: r for r in result["rows"]}
    own = by_cond[label]
    rows = []
    for null, tests in intervention_nulls(label):
        r = by_cond.get(null)
        if r is None:
            continue
        rows.append({"null": r["title"], "what it breaks": tests, "answer": r["answer"],
                     "agreement with text answer (%)": 100 * r["agreement"],
                     "Δ agreement, intervention − null (%)": 100 * (own["agreement"] - r["agreement"]),
                     "edited tokens": " ".join(repr(t) for t in r["token_text"])})
    return pd.DataFrame(rows)


def outcome(df: pd.DataFrame, score: str = "containment") -> pd.Series:
    """Per evaluated sample: which of text / speech input was right (score >= 1 = right)."""
    t = df[f"text_{score}"] >= 1
    s = df[f"speech_{score}"] >= 1
    out = np.select([t & ~s, t & s, ~t & ~s, ~t & s], list(OUTCOMES[1:]), default="")
    return pd.Series(out, index=df.index, name="outcome")


def text_right_speech_wrong(samples: pd.DataFrame | None, checkpoint: str) -> set[str] | None:
    """Sample ids where `checkpoint` answered the typed question right and the spoken one wrong (None: no results)."""
    if samples is None or "checkpoint" not in samples.columns:
        return None
    sub = samples[samples["checkpoint"] == checkpoint]
    if sub.empty or not {"text_containment", "speech_containment"} <= set(sub.columns):
        return None
    return set(sub.loc[outcome(sub) == OUTCOMES[1], "sample_id"].astype(str))


def controls_table(sc, layer: int) -> pd.DataFrame:
    """One clip's controls (SampleControls) per metric: at layer ℓ and averaged over layers 1..L."""
    from lsl_core.metrics.controls import METRICS

    rows = []
    for m in sc.metrics:
        label, higher = METRICS[m]
        row = {"metric": label, "better": "higher" if higher else "lower"}
        for which, name in (("matched", "this clip"), ("mismatched", "other questions (mean)"),
                            ("specific", "specific"), ("silence", "silence"), ("shuffled", "shuffled frames")):
            row[f"{name}, layer {layer}"] = float(sc.curve(m, which)[layer])
        for which, name in (("matched", "this clip"), ("mismatched", "other questions (mean)"),
                            ("specific", "specific"), ("silence", "silence"), ("shuffled", "shuffled frames")):
            row[f"{name}, layers 1..L"] = sc.layer_mean(m, which)
        rows.append(row)
    return pd.DataFrame(rows)


def controls_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """`analyze --controls` rows -> one row per checkpoint: layer-averaged retrieval and specific alignment."""
    keys = [c for c in ("checkpoint", "family", "strategy", "step", "centring") if c in rows.columns]
    mean = rows[rows["layer"] == -1]
    out = []
    for key, g in mean.groupby(keys, sort=False, dropna=False):
        rec = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for _, r in g[g["table"] == "retrieval"].iterrows():
            rec[f"top-1 by {r['scorer']}"] = r["top1"]
            rec[f"MRR by {r['scorer']}"] = r["mrr"]
            rec["chance top-1"] = r["chance_top1"]
        for _, r in g[g["table"] == "specific"].iterrows():
            rec[f"specific {r['metric']}"] = r["specific"]
            rec[f"specific {r['metric']} 95% CI"] = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]"
        out.append(rec)
    df = pd.DataFrame(out)
    return df.sort_values([c for c in ("family", "strategy", "step") if c in df.columns], kind="stable",
                          ignore_index=True) if len(df) else df
