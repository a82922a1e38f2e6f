"""Null-baseline figures: matched vs control curves, retrieval among clips, the question-specific part."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from lsl_core.viz.layout import _base_layout, _layer_trace, _mark_current_layer, _mark_final_layer
from lsl_core.viz.style import DASHES, SYMBOLS, _rgba, categorical_colors

# control metric -> (axis label with units); see lsl_core.metrics.controls.METRICS
CONTROL_AXES: dict[str, str] = {
    "seq_cos": "sequence cosine (−1 … 1)",
    "seq_dist": "sequence L2 distance (model units)",
    "aps_cos": "path cosine, mean over tokens (−1 … 1)",
    "aps_dist": "path L2 distance, mean over tokens (model units)",
    "spearman_cos": "Spearman ρ of the cosine path (−1 … 1)",
    "spearman_dist": "Spearman ρ of the distance path (−1 … 1)",
    "consistency": "consistency (share of tokens, 0 … 1)",
    "cka": "aligned CKA, speech layer = text layer (0 … 1)",
}
RETRIEVAL_LABELS = {"top1": "top-1 accuracy", "top5": "top-5 accuracy", "mrr": "mean reciprocal rank"}


def control_curves(controls, metric: str, current_layer: int | None = None, title: str | None = None) -> go.Figure:
    """One clip's metric per layer against its controls (lsl_core.analysis_controls.SampleControls).

    Lines: the clip with its own transcript (matched), with each of the K other questions (thin,
    hover names the question), their mean (mismatched), an all-zero clip of the same length
    (silence) and the clip with its frames in a shuffled order (shuffled frames).
    """
    from lsl_core.metrics.controls import METRICS

    L = controls.matched.shape[-1] - 1
    m = controls.metrics.index(metric)
    label = METRICS[metric][0]
    fig = go.Figure()
    x = np.arange(L + 1)
    for k, q in enumerate(controls.partner_questions):
        fig.add_trace(go.Scatter(
            x=x, y=controls.mismatched[k, m], mode="lines", name="each other question", legendgroup="partners",
            showlegend=k == 0, line=dict(color="#b0b0b0", width=1),
            hovertemplate=f"other question: {html.escape(q, quote=False)}<br>layer %{{x}}<br>{label} = "
                          "%{y:.6f}<extra></extra>"))
    colors = categorical_colors(4)
    fig.add_trace(_layer_trace(controls.curve(metric, "mismatched"), f"mismatched: mean of {len(controls.partner_questions)} "
                               "other questions", colors[1], "square", "dash", hover_label=label))
    fig.add_trace(_layer_trace(controls.curve(metric, "silence"), f"silence ({controls.silence_seconds:.2f} s of zeros)",
                               colors[2], "triangle-up", "dot", hover_label=label))
    fig.add_trace(_layer_trace(controls.curve(metric, "shuffled"), "shuffled frames (same clip)", colors[3], "x",
                               "dashdot", hover_label=label))
    fig.add_trace(_layer_trace(controls.curve(metric, "matched"), "this clip, own transcript", colors[0], "circle",
                               "solid", hover_label=label))
    _mark_final_layer(fig, L)
    _mark_current_layer(fig, current_layer)
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text=CONTROL_AXES.get(metric, metric))
    _base_layout(fig, title or f"Controls: {label} per layer, own transcript vs other questions, silence, "
                               "shuffled frames", height=420)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, xanchor="left", x=0.0), margin=dict(b=110))
    return fig


def _controls_curves(df: pd.DataFrame, column: str, value: str, table: str, label: str,
                     order: str) -> tuple[pd.DataFrame, list]:
    """The rows of one `analyze --controls` table for df[column] == value at layers >= 0, and one curve key
    (df[label]) per checkpoint in `order` (the step), first appearance kept."""
    rows = df[(df[column] == value) & (df["layer"] >= 0)]
    if "table" in rows.columns:
        rows = rows[rows["table"] == table]
    keys = list(dict.fromkeys(rows.sort_values(order, kind="stable")[label] if order in rows.columns else rows[label]))
    return rows, keys


def retrieval_curves(df: pd.DataFrame, scorer: str = "seq_cos", stat: str = "top1", *, label: str = "checkpoint",
                     order: str = "step", title: str | None = None) -> go.Figure:
    """Speech -> text retrieval per layer, one curve per checkpoint, with the chance level.

    df: rows of `analyze --controls` (lsl_core.analysis_controls.controls_table) with table ==
    "retrieval": columns scorer, layer (>= 0 drawn; -1 = layer-averaged, skipped), `stat`,
    chance_<stat>, `label`, `order`.
    """
    need = {"scorer", "layer", stat, f"chance_{stat}", label}
    if not need <= set(df.columns):
        raise ValueError(f"retrieval table lacks {sorted(need - set(df.columns))}; write it with analyze --controls")
    rows, keys = _controls_curves(df, "scorer", scorer, "retrieval", label, order)
    colors = categorical_colors(len(keys))
    fig = go.Figure()
    L = 0
    scorer_name = {"seq_cos": "sequence cosine", "aps_cos": "APS (cosine path)"}.get(scorer, scorer)
    for k, name in enumerate(keys):
        sub = rows[rows[label] == name].sort_values("layer")
        y = np.full(int(sub["layer"].max()) + 1, np.nan)
        y[sub["layer"].to_numpy(dtype=int)] = sub[stat].to_numpy(dtype=np.float64)
        L = max(L, y.shape[0] - 1)
        step = f" (step {sub[order].iloc[0]})" if order in sub.columns and order != label else ""
        fig.add_trace(_layer_trace(y, f"{name}{step}", colors[k], SYMBOLS[k % len(SYMBOLS)], DASHES[k % len(DASHES)],
                                   hover_label=RETRIEVAL_LABELS.get(stat, stat)))
    if len(rows):
        chance = float(rows[f"chance_{stat}"].mean())
        nc = f" (Nc = {int(rows['candidates'].iloc[0])})" if "candidates" in rows.columns else ""
        fig.add_hline(y=chance, line=dict(color="#000000", dash="dot", width=1.5),
                      annotation_text=f"chance {chance:.3f}{nc}", annotation_position="top right")
    _mark_final_layer(fig, L)
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text=f"{RETRIEVAL_LABELS.get(stat, stat)} of the own transcript (0 … 1)",
                     range=[-0.02, 1.02])
    return _base_layout(fig, title or f"Speech → text retrieval per layer: {RETRIEVAL_LABELS.get(stat, stat)} by "
                                      f"{scorer_name}", height=440)


def specific_curves(df: pd.DataFrame, metric: str = "seq_cos", *, label: str = "checkpoint", order: str = "step",
                    title: str | None = None) -> go.Figure:
    """Specific alignment (matched − mean mismatched) per layer with its 95% CI band, one curve per checkpoint.

    df: `analyze --controls` rows with table == "specific": columns metric, layer, specific, ci_low,
    ci_high, `label`, `order` (layer -1, the layer average, is skipped).
    """
    need = {"metric", "layer", "specific", "ci_low", "ci_high", label}
    if not need <= set(df.columns):
        raise ValueError(f"specific-alignment table lacks {sorted(need - set(df.columns))}; write it with analyze "
                         "--controls")
    from lsl_core.metrics.controls import METRICS

    rows, keys = _controls_curves(df, "metric", metric, "specific", label, order)
    colors = categorical_colors(len(keys))
    fig = go.Figure()
    L = 0
    for k, name in enumerate(keys):
        sub = rows[rows[label] == name].sort_values("layer")
        x = sub["layer"].to_numpy(dtype=int)
        L = max(L, int(x.max()))
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]),
                                 y=np.concatenate([sub["ci_high"].to_numpy(), sub["ci_low"].to_numpy()[::-1]]),
                                 fill="toself", fillcolor=_rgba(colors[k], 0.18), line=dict(width=0),
                                 hoverinfo="skip", showlegend=False, legendgroup=str(name)))
        step = f" (step {sub[order].iloc[0]})" if order in sub.columns and order != label else ""
        fig.add_trace(go.Scatter(
            x=x, y=sub["specific"], mode="lines+markers", name=f"{name}{step}", legendgroup=str(name),
            line=dict(color=colors[k], dash=DASHES[k % len(DASHES)], width=2),
            marker=dict(symbol=SYMBOLS[k % len(SYMBOLS)], size=6, color=colors[k]),
            customdata=np.stack([sub["ci_low"], sub["ci_high"], sub.get("matched", sub["specific"]),
                                 sub.get("mismatched", sub["specific"])], axis=-1),
            hovertemplate=f"{html.escape(str(name), quote=False)}<br>layer %{{x}}<br>specific = %{{y:+.6f}}"
                          "<br>95% CI [%{customdata[0]:+.6f}, %{customdata[1]:+.6f}]<br>matched %{customdata[2]:.6f}"
                          " · mismatched %{customdata[3]:.6f}<extra></extra>"))
    fig.add_hline(y=0.0, line=dict(color="#000000", width=1))
    _mark_final_layer(fig, L)
    better = "higher" if METRICS.get(metric, ("", True))[1] else "lower (below 0 = own transcript closer)"
    fig.update_xaxes(title_text="layer ℓ (0 = LLM input)", dtick=max(1, L // 10))
    fig.update_yaxes(title_text=f"specific alignment: matched − mismatched ({CONTROL_AXES.get(metric, metric)})")
    return _base_layout(fig, title or f"Specific alignment per layer: {METRICS.get(metric, (metric,))[0]} "
                                      f"(95% CI band; better: {better})", height=440)
