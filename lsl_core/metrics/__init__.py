"""Alignment metrics between speech and text hidden states (DESIGN §3), all pure functions.

Inputs: one sample's query-span states, speech hs [L+1, Ts, d] and text ht [L+1, Tt, d].
  sequence  — mean-pooled cosine/distance curves per layer and their layer average
  tokenwise — token matrices, alignment path (argmax or monotone DTW), Spearman, consistency, APS, bottom-k
  cka       — cross-layer linear CKA (aligned per sample; pooled/minibatch across samples)
  stability — the CKA under several configurations and how alike the matrices / bands are
  norms     — per-layer mean token norms and the standardized distance of the two spans
  lens      — logit lens: top-k vocabulary tokens read from every layer, rank of the aligned token
  gap       — GAP = text score - speech score and its OLS fit (R²) on a metric

Note: the re-exported *function* `gap` shadows the submodule attribute, so
`import lsl_core.metrics.gap as m` yields the function; use `from lsl_core.metrics.gap import ...`.
"""

from lsl_core.metrics.cka import (
    MinibatchCKA,
    cross_layer_cka,
    linear_cka,
    linear_cka_gram,
    pooled_cross_layer_cka,
    unbiased_hsic,
)
from lsl_core.metrics.gap import (LinearFit, fit_gap, gap, gap_fits, gap_r2_table, r2_added, r2_added_interval,
                                  r2_interval, r2_null)
from lsl_core.metrics.norms import mean_token_norm, norm_ratio, standardized_distance, token_norms
from lsl_core.metrics.stability import CKAConfig, StabilitySummary, default_configs, stability_summary
from lsl_core.metrics.sequence import (
    layer_average,
    mean_pool,
    sequence_cosine,
    sequence_distance,
    validate_states,
)
from lsl_core.metrics.tokenwise import (
    PATH_METHODS,
    DTWAlignment,
    TokenwiseResult,
    alignment_path,
    alignment_path_score,
    bottom_k_tokens,
    dtw_alignment,
    dtw_path,
    path_consistency,
    path_monotonicity,
    path_scores,
    token_cosine_matrix,
    token_distance_matrix,
    tokenwise_metrics,
)

__all__ = [
    "CKAConfig",
    "StabilitySummary",
    "default_configs",
    "mean_token_norm",
    "stability_summary",
    "standardized_distance",
    "token_norms",
    "norm_ratio",
    "PATH_METHODS",
    "DTWAlignment",
    "LinearFit",
    "MinibatchCKA",
    "TokenwiseResult",
    "alignment_path",
    "alignment_path_score",
    "bottom_k_tokens",
    "cross_layer_cka",
    "dtw_alignment",
    "dtw_path",
    "fit_gap",
    "gap",
    "gap_r2_table",
    "gap_fits",
    "r2_interval",
    "r2_null",
    "r2_added",
    "r2_added_interval",
    "layer_average",
    "linear_cka",
    "linear_cka_gram",
    "mean_pool",
    "path_consistency",
    "path_monotonicity",
    "path_scores",
    "pooled_cross_layer_cka",
    "sequence_cosine",
    "sequence_distance",
    "token_cosine_matrix",
    "token_distance_matrix",
    "tokenwise_metrics",
    "unbiased_hsic",
    "validate_states",
]
