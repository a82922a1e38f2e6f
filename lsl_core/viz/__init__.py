"""Plotly figure builders for the app and notebooks (DESIGN §1: results -> figures -> pages).

Every function takes already computed results (a SampleAnalysis, a CKA matrix, DataFrames) and
returns a `plotly.graph_objects.Figure`; none computes a metric and none imports streamlit.

Conventions shared by every figure:
  - axes carry labels with units ("frame time (s)", "layer ℓ");
  - colour scales have monotone luminance (Viridis / Cividis), so a figure printed in grey still
    reads; categorical series also differ by marker symbol and dash style, not by hue alone;
  - hover shows the exact value, the frame time in seconds and the token text;
  - layer L (hidden_states[L], after the backbone's final norm) is marked in every layer plot;
  - alignment-path cells are diamonds; edited frames / tokens of an intervention are boxed;
  - ONE style (`viz.style`): a colour + marker + dash + bar pattern per training
    strategy and per condition (text, speech, cascade, each intervention), used by every chart; scores
    in percent everywhere (PERCENT_DIGITS decimals), other values VALUE_DIGITS; titles sit below the
    Plotly toolbar's row (TITLE_TOP_PX) and wrap, so the toolbar never covers them; sample figures
    name model, sample and layer in their title (it is the exported PNG's title too).

Shapes use the fixed letters L (layers; arrays hold L+1 entries), Ts (speech frames), Tt (text tokens).

Modules: `style` (the one figure style, formats, titles), `layout` (shared scaffolding), and one module per
page's figures: `sample`, `checkpoints`, `cka`, `benchmark`, `controls`, `hearing`. Everything public is
re-exported here, so `from lsl_core import viz; viz.token_heatmap(...)` is the way to call them.
"""

from __future__ import annotations

from lsl_core.viz.style import (
    Metric, TEMPLATE, SEQUENTIAL, CATEGORICAL_SCALE, SYMBOLS, DASHES, FINAL_NORM_NOTE, LAYER_METRICS,
    SCALAR_LABELS, METRIC_UNITS, SeriesStyle, STRATEGY_STYLES, CONDITION_STYLES, PERCENT_DIGITS,
    VALUE_DIGITS, DISTANCE_DIGITS, TITLE_TOP_PX, TITLE_FONT_PX, TITLE_LINE_PX, TITLE_MAX_CHARS, strategy_style,
    condition_style, metric_axis_title, is_score_column, percent, display_table, wrap_title, fit_title,
    place_title, sample_title, error_bars, categorical_colors, token_label,
)
from lsl_core.viz.layout import (
    MAX_HEATMAP_ROWS, frame_bins,
)
from lsl_core.viz.sample import (
    token_heatmap, layer_curves, tokenwise_curves, norm_curves, lens_grid,
)
from lsl_core.viz.checkpoints import (
    agreement_title, checkpoint_curves, trend_curves, gap_scatter,
)
from lsl_core.viz.cka import (
    cka_heatmap, cka_stability, cka_spread,
)
from lsl_core.viz.benchmark import (
    VERSUS_MARKS, scores_by_voice, intervention_bars, intervention_layers, intervention_nulls,
    intervention_nulls_across, subset_scores,
)
from lsl_core.viz.controls import (
    CONTROL_AXES, RETRIEVAL_LABELS, control_curves, retrieval_curves, specific_curves,
)
from lsl_core.viz.hearing import (
    WORD_GROUP_STYLES, WORD_GROUP_LABELS, hearing_bars, hearing_exposure, VOICE_GROUP_STYLES, closed_vocab_bars,
)

__all__ = [
    "Metric", "TEMPLATE", "SEQUENTIAL", "CATEGORICAL_SCALE", "SYMBOLS", "DASHES", "FINAL_NORM_NOTE",
    "LAYER_METRICS", "SCALAR_LABELS", "METRIC_UNITS", "SeriesStyle", "STRATEGY_STYLES", "CONDITION_STYLES",
    "PERCENT_DIGITS", "VALUE_DIGITS", "DISTANCE_DIGITS", "TITLE_TOP_PX", "TITLE_FONT_PX", "TITLE_LINE_PX",
    "TITLE_MAX_CHARS", "strategy_style", "condition_style", "metric_axis_title", "is_score_column", "percent",
    "display_table", "wrap_title", "fit_title", "place_title", "sample_title", "error_bars", "categorical_colors",
    "token_label",
    "MAX_HEATMAP_ROWS", "frame_bins", "token_heatmap", "layer_curves", "tokenwise_curves", "norm_curves",
    "lens_grid", "checkpoint_curves", "agreement_title", "trend_curves", "gap_scatter", "cka_heatmap", "cka_stability",
    "cka_spread", "scores_by_voice", "intervention_bars", "intervention_nulls", "intervention_nulls_across",
    "intervention_layers", "VERSUS_MARKS",
    "subset_scores", "CONTROL_AXES",
    "RETRIEVAL_LABELS",
    "control_curves", "retrieval_curves", "specific_curves", "WORD_GROUP_STYLES", "WORD_GROUP_LABELS",
    "hearing_bars", "hearing_exposure", "VOICE_GROUP_STYLES", "closed_vocab_bars",
]
