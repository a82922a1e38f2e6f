"""Hearing figures: which words the speech path hears by training exposure, the closed-vocabulary ceiling."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lsl_core.viz.layout import _base_layout
from lsl_core.viz.style import PERCENT_DIGITS, VALUE_DIGITS, SeriesStyle, _cividis, categorical_colors, error_bars

WORD_GROUP_STYLES = {  # hearing's word groups: dark solid / mid hatched / light crossed (distinct in grey)
    "question": SeriesStyle(_cividis(0.0), "circle", "solid", ""),
    "other": SeriesStyle(_cividis(0.4), "square", "dash", "/"),
    "never": SeriesStyle(_cividis(0.8), "diamond", "dot", "x"),
}
WORD_GROUP_LABELS = {"question": "words of a training question", "other": "words only in other training text",
                     "never": "words never spoken in training"}


def hearing_bars(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Word recall of each checkpoint's speech path (and Whisper transcript) by word group: one panel per voice
    group (seen, unseen), grouped bars per checkpoint with 95% intervals, in percent.

    table: lsl_core.experiments.hearing.recall_tables (columns checkpoint, voices, words, spoken, questions,
    recall, lo, hi; fractions). Groups with no spoken word are left out.
    """
    for c in ("checkpoint", "voices", "words", "recall", "lo", "hi", "spoken"):
        if c not in table.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(table.columns)}")
    panels = [v for v in ("seen", "unseen") if v in set(table["voices"])]
    fig = make_subplots(rows=1, cols=max(len(panels), 1), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"{v} voice{'s' if v == 'seen' else ''}" for v in panels])
    d = PERCENT_DIGITS
    for k, vg in enumerate(panels, start=1):
        for g, st in WORD_GROUP_STYLES.items():
            r = table[(table["voices"] == vg) & (table["words"] == g) & (table["spoken"] > 0)]
            if r.empty:
                continue
            r = r.assign(recall_lo=r["lo"], recall_hi=r["hi"])
            extra = np.stack([r["spoken"].to_numpy(), r.get("questions", r["spoken"]).to_numpy(),
                              100 * r["lo"].to_numpy(), 100 * r["hi"].to_numpy()], axis=1)
            fig.add_trace(go.Bar(
                x=[str(c) for c in r["checkpoint"]], y=100 * r["recall"], name=WORD_GROUP_LABELS[g],
                legendgroup=g, showlegend=k == 1, error_y=error_bars(r, "recall", 100.0), customdata=extra,
                marker=dict(color=st.color, line=dict(color="black", width=1),
                            pattern=dict(shape=st.pattern, fgcolor="#333333") if st.pattern else None),
                hovertemplate=f"%{{x}}, {vg} voices<br>{WORD_GROUP_LABELS[g]}: recall %{{y:.{d}f}} %"
                              f"<br>95% CI [%{{customdata[2]:.{d}f}}, %{{customdata[3]:.{d}f}}]"
                              "<br>%{customdata[0]} words spoken in %{customdata[1]} questions<extra></extra>"),
                row=1, col=k)
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="checkpoint (speech path) or its Whisper transcript")
    fig.update_yaxes(title_text="word recall (%)", range=[0, 100], row=1, col=1)
    _base_layout(fig, title or "What the speech path hears: recall of the spoken question's words", height=460)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0.0),
                      margin=dict(b=150))
    return fig


_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "star", "hexagon", "triangle-down")


def hearing_exposure(table: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Word recall by exposure (the dose-response of hearing): one panel per voice group (seen, unseen); x = bins
    of training clips that spoke the word (0 = never), y = recall in %, one line per checkpoint with its 95%
    intervals (Whisper transcripts dashed), each bin's chance (the word in other questions' outputs) as a
    horizontal tick in the series' colour.

    table: lsl_core.experiments.hearing.exposure_tables (columns checkpoint, voices, bin, exposure, distinct,
    spoken, questions, recall, lo, hi, chance; fractions).
    """
    from lsl_core.experiments.hearing import ASR_SUFFIX

    for c in ("checkpoint", "voices", "bin", "exposure", "recall", "lo", "hi", "spoken"):
        if c not in table.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(table.columns)}")
    panels = [v for v in ("seen", "unseen") if v in set(table["voices"])]
    fig = make_subplots(rows=1, cols=max(len(panels), 1), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[f"{v} voice{'s' if v == 'seen' else ''}" for v in panels])
    order = table.drop_duplicates("bin").sort_values("bin")["exposure"].tolist()
    names = list(dict.fromkeys(table["checkpoint"]))
    colors = categorical_colors(len(names))
    d = PERCENT_DIGITS
    for k, vg in enumerate(panels, start=1):
        for i, name in enumerate(names):
            r = table[(table["checkpoint"] == name) & (table["voices"] == vg) & (table["spoken"] > 0)].sort_values("bin")
            if r.empty:
                continue
            asr = str(name).endswith(ASR_SUFFIX)
            ch = r["chance"].to_numpy(dtype=float) if "chance" in r.columns else np.full(len(r), np.nan)
            extra = np.stack([r["spoken"].to_numpy(), r.get("distinct", r["spoken"]).to_numpy(),
                              r.get("questions", r["spoken"]).to_numpy(), 100 * r["lo"].to_numpy(),
                              100 * r["hi"].to_numpy(), 100 * ch], axis=1)
            fig.add_trace(go.Scatter(
                x=r["exposure"], y=100 * r["recall"], name=str(name), legendgroup=str(name), showlegend=k == 1,
                mode="lines+markers", customdata=extra,
                line=dict(color=colors[i], dash="dash" if asr else "solid", width=2),
                marker=dict(symbol=_SYMBOLS[i % len(_SYMBOLS)], size=8, color=colors[i],
                            line=dict(color="black", width=1)),
                error_y=error_bars(r.assign(recall_lo=r["lo"], recall_hi=r["hi"]), "recall", 100.0),
                hovertemplate=f"{html.escape(str(name))}, {vg} voices<br>words spoken in %{{x}} training clips: "
                              f"recall %{{y:.{d}f}} %<br>95% CI [%{{customdata[3]:.{d}f}}, %{{customdata[4]:.{d}f}}]"
                              f"<br>chance (other questions' outputs) %{{customdata[5]:.{d}f}} %"
                              "<br>%{customdata[0]} words spoken (%{customdata[1]} distinct) in %{customdata[2]} "
                              "questions<extra></extra>"), row=1, col=k)
            if np.isfinite(ch).any():
                fig.add_trace(go.Scatter(
                    x=r["exposure"], y=100 * ch, name="chance", legendgroup=str(name), showlegend=False,
                    mode="markers", marker=dict(symbol="line-ew-open", size=16, color=colors[i], line=dict(width=2)),
                    hovertemplate=f"{html.escape(str(name))}, {vg} voices<br>%{{x}} training clips: chance "
                                  f"%{{y:.{d}f}} % (the word in other questions' outputs)<extra></extra>"),
                    row=1, col=k)
    fig.update_xaxes(title_text="training clips that spoke the word", type="category", categoryorder="array",
                     categoryarray=order)
    fig.update_yaxes(title_text="word recall (%)", range=[0, 100], row=1, col=1)
    _base_layout(fig, title or "Recall by exposure: how often training spoke a word vs how often it is heard "
                               "(ticks: chance)", height=460)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0.0),
                      margin=dict(b=150))
    return fig


VOICE_GROUP_STYLES = {  # seen / unseen voices as bars: dark solid / light hatched (distinct in grey)
    "seen": SeriesStyle(_cividis(0.1), "circle", "solid", ""),
    "unseen": SeriesStyle(_cividis(0.75), "diamond", "dash", "/"),
}


def closed_vocab_bars(table: pd.DataFrame, unseen_voice: str, title: str | None = None,
                      share: str = "words closed") -> go.Figure:
    """The closed-vocabulary ceiling: one horizontal bar per condition and voice group, x = agreement with the
    text answers as a multiple of the cascade's on the same clips (95% intervals), the cascade at 1.

    table: lsl_core.experiments.closed_vocab.ceiling_table (columns condition, voice, closed_share, agreement,
    cascade_agreement, ratio, ratio_lo, ratio_hi; fractions; voice "seen" or the unseen voice's name), or
    closed_vocab.coverage_table (share = "words never spoken": what closed_share counts there, in the hover).
    """
    for c in ("condition", "voice", "closed_share", "agreement", "cascade_agreement", "ratio"):
        if c not in table.columns:
            raise ValueError(f"column {c!r} not in the table; available: {list(table.columns)}")
    order = list(dict.fromkeys(table["condition"]))[::-1]  # first condition on top
    fig = go.Figure()
    d, v = PERCENT_DIGITS, VALUE_DIGITS
    for group, voice in (("seen", "seen"), ("unseen", unseen_voice)):
        r = table[table["voice"] == voice].set_index("condition").reindex(order).dropna(subset=["ratio"])
        if r.empty:
            continue
        r = r.reset_index()
        st = VOICE_GROUP_STYLES[group]
        extra = np.stack([100 * r["agreement"], 100 * r["cascade_agreement"], 100 * r["closed_share"],
                          r.get("ratio_lo", r["ratio"]), r.get("ratio_hi", r["ratio"])], axis=1)
        err = error_bars(r, "ratio")
        fig.add_trace(go.Bar(
            y=r["condition"], x=r["ratio"], orientation="h", name=f"{group} voice{'s' if group == 'seen' else ''}"
            + (f" ({voice})" if group == "unseen" else ""), customdata=extra,
            error_x=err, marker=dict(color=st.color, line=dict(color="black", width=1),
                                     pattern=dict(shape=st.pattern, fgcolor="#333333") if st.pattern else None),
            hovertemplate=f"%{{y}}, {group} voices<br>%{{x:.{v}f}}× the cascade, 95% CI [%{{customdata[3]:.{v}f}}, "
                          f"%{{customdata[4]:.{v}f}}]<br>agreement %{{customdata[0]:.{d}f}} % (cascade "
                          f"%{{customdata[1]:.{d}f}} %)<br>{share} %{{customdata[2]:.{d}f}} %<extra></extra>"))
    fig.add_vline(x=1.0, line=dict(color="#222222", dash="dash", width=1.5), annotation_text="the cascade",
                  annotation_position="top")
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="agreement with the text answers, × the cascade's on the same clips",
                     rangemode="tozero")
    fig.update_yaxes(title_text="what answers", categoryorder="array", categoryarray=order)
    _base_layout(fig, title or "The closed-vocabulary ceiling: questions with the unknown words dropped or "
                               "replaced, answered by the same LLM", height=160 + 48 * len(order))
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.25, xanchor="left", x=0.0),
                      margin=dict(l=330, b=140))
    return fig
