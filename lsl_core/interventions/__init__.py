"""Interventions (DESIGN §3): edit speech positions at layer ℓ during prefill, then generate.

For a speech frame s (a row of the speech query span at layer ℓ) and its aligned text token t:

    angle      s' = ‖s‖ · t/‖t‖                  direction of t, norm of s       ops.angle_projection
    length     s' = s · ‖t‖/‖s‖                  norm of t, direction of s       ops.length_normalization
    calibrate  s' = (s − μ_s)/σ_s · σ_t + μ_t    per dimension over the spans    ops.statistical_calibration

The modules, read top-down (pyvene habit: an intervention is data, resolved through one hook site):
  config        Intervention (op, target, k, frames, layer ℓ, path metric, pairing) and its text grammar
                `Intervention.parse("angle:bottom3@0")` / `.label()`; conditions 'a+b' compose in order;
                the nulls: target random (k random tokens), pairing shuffled / other (config docstring);
                intervention_nulls(condition) names an intervention's nulls, null_kind / is_null read them.
  ops           the formulas as pure tensor functions and OPERATIONS, the one registry of ops that the
                planner, the hooks, the CLI and the Interventions page read. A new op = one function
                + one registry line.
  plan          plan_intervention: an Intervention on one sample's UNEDITED states -> EditPlan (prompt
                positions + the op's inputs); EditPlan.apply edits a live [B, T, d] tensor on prefill.
  hooks         intervention_hooks (forward pre-hooks on decoder_layers()[ℓ], removed in `finally`),
                generate_with_interventions, generate_conditions (all through LSLM.generate_ids).
  side_by_side  generate_side_by_side: text / speech / cascade / one answer per condition, scored.
"""

from lsl_core.interventions.config import (GRAMMAR, NULL_TESTS, ORIGINAL, PAIRINGS, PATH_METRICS, TARGETS, Condition,
                                           Intervention, Op, Pairing, PathMetric, Target, condition_label,
                                           condition_title, intervention_nulls, is_null, null_kind, parse_condition)
from lsl_core.interventions.hooks import generate_conditions, generate_with_interventions, intervention_hooks
from lsl_core.interventions.ops import (OPERATIONS, OPS, SIGMA_EPS, Operation, angle_projection, length_normalization,
                                        operation, ops_help, span_statistics, statistical_calibration)
from lsl_core.interventions.plan import DonorText, EditPlan, needs_donor, plan_intervention, plan_interventions
from lsl_core.interventions.side_by_side import (ConditionAnswer, SideBySide, donor_text, generate_side_by_side,
                                                 sample_states)

__all__ = [
    "GRAMMAR", "PATH_METRICS", "TARGETS", "PAIRINGS", "OPS", "OPERATIONS", "SIGMA_EPS", "Op", "Target", "PathMetric",
    "Pairing",
    "Intervention", "Condition", "parse_condition", "condition_label", "condition_title",
    "ORIGINAL", "NULL_TESTS", "intervention_nulls", "null_kind", "is_null",
    "Operation", "operation", "ops_help", "angle_projection", "length_normalization", "statistical_calibration", "span_statistics",
    "EditPlan", "DonorText", "plan_intervention", "plan_interventions", "needs_donor",
    "intervention_hooks", "generate_with_interventions", "generate_conditions",
    "ConditionAnswer", "SideBySide", "generate_side_by_side", "donor_text", "sample_states",
]
