"""Diagnostics: what a number cannot say, as data that every view reads and shows beside the number.

Each diagnostic is a pure function of an analysis result (or of a sample count) with its threshold in
one named constant below; `docs/diagnostics.md` lists them for readers.

    collapsed path      share_l = (tokens on the COLLAPSE_TOP_FRAMES most-used path frames) / Tt   [L+1]
                        collapsed_l = share_l >= COLLAPSE_SHARE  and  Tt >= MIN_TOKENS_COLLAPSE
                        (with fewer tokens two frames hold most of them by construction: not judged)
                        A collapsed path makes Spearman, consistency, APS and path-aligned CKA describe
                        one or two frames, not an alignment.
    undefined Spearman  Tt < 2, or a constant path (every token on one frame) at layer l: ρ has no
                        value; `tokenwise.path_monotonicity` reports 0.0 there by convention.   [L+1]
    CKA pairs           aligned CKA pairs Tt text tokens with their path frames:
                        Tt < cka.MIN_PAIRS          -> undefined (no matrix),
                        Tt < CKA_FEW_PAIRS          -> shown, but biased upwards (linear CKA of few
                                                       items in many dimensions is large even for
                                                       unrelated representations).
    small n             a comparison (two bars, a GAP, a Δ vs Original, a fit) over fewer than
                        SMALL_N samples per group: read its 95% interval, not its point value.
    CKA at its null     an aligned CKA diagonal cell (speech layer a, text layer a) at or below the 97.5th
                        percentile of its shuffled-pairing null (metrics.cka.cka_pairing_null).
    R² at its null      a GAP-vs-alignment fit whose permutation p >= R2_ALPHA (a randomly re-paired
                        metric fits as well), or that adds under R2_ADDED_MIN to the training step's
                        own fit (the metric tracks training progress, not the GAP beyond it).
    intervention at its null   an intervention whose Δ against one of its nulls (random tokens, shuffled
                        pairing, another question; experiments.table1.table1_nulls) has a 95% interval
                        that holds 0 (on the Benchmark page's metric, agreement by default): the
                        ingredient that null breaks is not shown to matter.

Shapes: L+1 layers, Tt text tokens. Paths are integer frame indices [L+1, Tt] (argmax or DTW).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from lsl_core.metrics.cka import MIN_PAIRS as CKA_MIN_PAIRS
from lsl_core.metrics.cka import above_null

COLLAPSE_TOP_FRAMES = 2  # "the most-used 1-2 frames": the top-2 count covers a single dominant frame too
COLLAPSE_SHARE = 0.75  # >= 3/4 of the tokens on those frames = collapsed (a spread path of Tt tokens over
#   Ts frames puts about 2/Tt there; the shipped checkpoints' middle layers reach 0.8-1.0)
MIN_TOKENS_COLLAPSE = 4  # below this, 2 frames hold >= half the tokens by construction: no judgement
CKA_FEW_PAIRS = 10  # aligned CKA over fewer token pairs is shown with a small-n caution
SMALL_N = 10  # samples per group below which a comparison is flagged "small n"
R2_ALPHA = 0.05  # a GAP fit with permutation p at or above this is within its null
R2_ADDED_MIN = 0.05  # a GAP fit that adds less R² than this to the training step's fit says nothing beyond it

Severity = Literal["warning", "info"]


# =============================================================================== per-layer flags
def _as_path(path) -> np.ndarray:
    p = np.asarray(path)
    if p.ndim != 2:
        raise ValueError(f"a path must have shape [L+1, Tt], got {p.shape}")
    return p.astype(np.int64, copy=False)


def top_frames_share(path, k: int = COLLAPSE_TOP_FRAMES) -> np.ndarray:
    """Share of tokens whose path frame is one of the k most-used frames, per layer: [L+1, Tt] -> [L+1] float64.

    An empty path (Tt = 0) gives 0.0.
    """
    p = _as_path(path)
    n_layers, tt = p.shape
    out = np.zeros(n_layers, dtype=np.float64)
    if tt == 0:
        return out
    for ell in range(n_layers):
        counts = np.sort(np.unique(p[ell], return_counts=True)[1])[::-1]  # frame use counts, descending
        out[ell] = counts[:k].sum() / tt
    return out


def collapsed_path(path, share: float = COLLAPSE_SHARE, min_tokens: int = MIN_TOKENS_COLLAPSE) -> np.ndarray:
    """Per layer: does the path put >= `share` of its tokens on its COLLAPSE_TOP_FRAMES most-used frames?

    [L+1, Tt] -> bool [L+1]; all False when Tt < min_tokens (not judged).
    """
    p = _as_path(path)
    if p.shape[1] < min_tokens:
        return np.zeros(p.shape[0], dtype=bool)
    return top_frames_share(p) >= share


def spearman_undefined(path) -> np.ndarray:
    """Per layer: is Spearman ρ(j, i*_j) undefined (Tt < 2, or every token on one frame)? [L+1, Tt] -> bool [L+1]."""
    p = _as_path(path)
    if p.shape[1] < 2:
        return np.ones(p.shape[0], dtype=bool)
    return (p == p[:, :1]).all(axis=1)


def cka_pairs_status(n_pairs: int) -> Literal["undefined", "few", "ok"]:
    """Aligned CKA over n token pairs: 'undefined' (< cka.MIN_PAIRS), 'few' (< CKA_FEW_PAIRS) or 'ok'."""
    if n_pairs < CKA_MIN_PAIRS:
        return "undefined"
    return "few" if n_pairs < CKA_FEW_PAIRS else "ok"


def small_n(n: int, minimum: int = SMALL_N) -> bool:
    """Is a comparison over n samples per group too small to read its point value?"""
    return int(n) < minimum


# =============================================================================== notes (what views show)
@dataclass(frozen=True)
class Note:
    """One diagnostic to show beside a number: a stable code (tests, filters) and a sentence for readers."""

    code: str  # collapsed_path | spearman_undefined | cka_undefined | cka_few_pairs | small_n | short_speech |
    #            r2_null | cka_null
    message: str
    severity: Severity = "warning"


def _path_of(a, metric: str) -> np.ndarray:
    return np.asarray(a.path_cos if metric == "cosine" else a.path_dist)


def layer_notes(a, layer: int, metric: str = "cosine") -> list[Note]:
    """Notes for the per-layer numbers of one sample (heatmap, path, Spearman, consistency at `layer`).

    a: a SampleAnalysis (uses its diagnostic fields, computed from its paths).
    """
    sfx = "cos" if metric == "cosine" else "dist"
    share = float(getattr(a, f"path_top_share_{sfx}")[layer])
    tt = len(a.tokens)
    notes = []
    if bool(getattr(a, f"collapsed_{sfx}")[layer]):
        notes.append(Note("collapsed_path",
                          f"Collapsed path at layer {layer}: {share:.0%} of the {tt} tokens sit on the "
                          f"{COLLAPSE_TOP_FRAMES} most-used frames (threshold {COLLAPSE_SHARE:.0%}). Spearman, "
                          "consistency and the path score describe those frames, not an alignment."))
    if bool(getattr(a, f"spearman_undefined_{sfx}")[layer]):
        why = "fewer than 2 tokens" if tt < 2 else "every token sits on one frame (a constant path)"
        notes.append(Note("spearman_undefined",
                          f"Spearman ρ is undefined at layer {layer}: {why}; it is shown as 0 by convention."))
    return notes


def sample_notes(a) -> list[Note]:
    """Notes for the layer-averaged numbers of one sample (APS, mean Spearman, consistency)."""
    notes = []
    L = a.num_layers
    for sfx, name in (("cos", "cosine"), ("dist", "distance")):
        flags = np.asarray(getattr(a, f"collapsed_{sfx}"))[1:]
        if flags.size and flags.any():
            notes.append(Note("collapsed_path",
                              f"The {name} path is collapsed at {int(flags.sum())} of {L} layers (≥ "
                              f"{COLLAPSE_SHARE:.0%} of tokens on {COLLAPSE_TOP_FRAMES} frames): its layer "
                              "averages mix alignments with collapsed paths.", "info"))
    und = np.asarray(a.spearman_undefined_cos)[1:]
    if und.size and und.any():
        notes.append(Note("spearman_undefined",
                          f"Spearman ρ (cosine path) is undefined at {int(und.sum())} of {L} layers (constant path "
                          "or < 2 tokens); those layers count as 0 in its mean.", "info"))
    return notes


def cka_note(n_pairs: int) -> Note | None:
    """The note for an aligned CKA matrix over n_pairs token pairs (None when n is large enough)."""
    status = cka_pairs_status(n_pairs)
    if status == "undefined":
        return Note("cka_undefined", f"Aligned CKA is undefined: {n_pairs} token pairs, it needs at least "
                                     f"{CKA_MIN_PAIRS}. Use a longer question or the pooled variant over a set.")
    if status == "few":
        return Note("cka_few_pairs", f"Only {n_pairs} token pairs (under {CKA_FEW_PAIRS}): linear CKA of so few "
                                     "items in many dimensions is biased upwards, even for unrelated states.")
    return None


def small_n_note(n: int, what: str = "this comparison") -> Note | None:
    """'Small n (2 samples, under 10) for {what}: ...' (None when n >= SMALL_N)."""
    if not small_n(n):
        return None
    return Note("small_n", f"Small n ({int(n)} sample{'s' if int(n) != 1 else ''}, under {SMALL_N}) for {what}: "
                           "read the 95% intervals, not the point values.")


def set_notes(rows) -> list[Note]:
    """Notes for aggregates over analysis rows (one per sample, `SampleAnalysis.scalars()` columns)."""
    import pandas as pd

    df = pd.DataFrame(rows)
    notes = []
    if "collapsed_cos_frac" in df.columns and len(df):
        frac = float(df["collapsed_cos_frac"].mean())
        if frac > 0:
            notes.append(Note("collapsed_path",
                              f"The cosine path is collapsed in {frac:.0%} of sample × layer cells (≥ "
                              f"{COLLAPSE_SHARE:.0%} of tokens on {COLLAPSE_TOP_FRAMES} frames): Spearman, "
                              "consistency and APS there describe one or two frames.", "info"))
    if "spearman_undefined_cos_frac" in df.columns and len(df):
        frac = float(df["spearman_undefined_cos_frac"].mean())
        if frac > 0:
            notes.append(Note("spearman_undefined",
                              f"Spearman ρ (cosine path) is undefined (constant path) in {frac:.0%} of sample × "
                              "layer cells; they count as 0 in its means.", "info"))
    return notes


# =============================================================================== what an analysis carries
def cka_null_note(cka, null_high, what: str = "this sample") -> Note | None:
    """The diagonal layers a (speech layer a vs text layer a) where the aligned CKA [L+1, L+1] is not above its
    shuffled-pairing null's 97.5th percentile null_high [L+1, L+1] (metrics.cka.cka_pairing_null); None when
    it is above at every layer. There, random frame-token pairs of the same states are as similar."""
    if cka is None or null_high is None:
        return None
    above = above_null(cka, null_high)
    within = np.nonzero(~above)[0]
    if not within.size:
        return None
    shown = ", ".join(str(int(a)) for a in within[:12]) + (" …" if within.size > 12 else "")
    return Note("cka_null", f"For {what} the aligned CKA of speech layer a with text layer a is within its "
                            "shuffled-pairing null (≤ its 97.5th percentile) at "
                            f"{within.size} of {above.size} layers "
                            f"({shown}): there, random frame-token pairs of the same states are as similar, so "
                            "the number says nothing about the alignment.", "info")


def r2_null_note(fits, control: str = "step") -> Note | None:
    """One note over a gap_r2_table / gap_fits table (columns metric, r2, p_perm, r2_added; groups in any
    other columns): the fits within their permutation null, and those that add under R2_ADDED_MIN to the
    control's own fit. None when every fit clears both (or the table has no null columns)."""
    if fits is None or not len(fits) or "p_perm" not in fits.columns:
        return None
    groups = [c for c in fits.columns if c in ("family", "strategy")]

    def name(r) -> str:
        return f"{r['metric']}" + (f" ({' · '.join(str(r[c]) for c in groups)})" if groups else "")

    metrics = fits[fits["metric"] != control]
    at_null = [name(r) for _, r in metrics.iterrows() if r["p_perm"] >= R2_ALPHA]
    flat = ([name(r) for _, r in metrics.iterrows() if r["r2_added"] < R2_ADDED_MIN]
            if "r2_added" in metrics.columns else [])
    parts = []
    if at_null:
        parts.append(f"{len(at_null)} of {len(metrics)} fits are within their permutation null (p ≥ {R2_ALPHA}: a "
                     f"randomly re-paired metric fits as well): {', '.join(at_null)}")
    if flat:
        parts.append(f"{len(flat)} of {len(metrics)} add under {R2_ADDED_MIN} R² to the {control}'s own fit (they "
                     f"track training progress, not the GAP beyond it): {', '.join(flat)}")
    if not parts:
        return None
    return Note("r2_null", "; ".join(parts) + ".", "info")


def intervention_null_note(nulls, metric: str = "agreement") -> Note | None:
    """One note over a table1_nulls table (columns condition, null, Δ <metric>, Δ <metric>_lo / _hi): the
    interventions that a null matches (the Δ's 95% interval holds 0). None when every Δ clears 0."""
    col = f"Δ {metric}"
    if nulls is None or not len(nulls) or f"{col}_lo" not in nulls.columns:
        return None
    within = [f"{r['condition']} vs {r['null']}" for _, r in nulls.iterrows()
              if r[f"{col}_lo"] <= 0.0 <= r[f"{col}_hi"]]
    if not within:
        return None
    return Note("intervention_null", f"{len(within)} of {len(nulls)} interventions do no better on {metric} than "
                f"their null (the Δ's 95% interval holds 0: what that null breaks is not shown to matter): "
                f"{', '.join(within)}.", "info")


def path_diagnostics(path_cos, path_dist) -> dict[str, np.ndarray]:
    """The per-layer diagnostic arrays a SampleAnalysis carries (field name -> [L+1] array)."""
    return {
        "path_top_share_cos": top_frames_share(path_cos), "path_top_share_dist": top_frames_share(path_dist),
        "collapsed_cos": collapsed_path(path_cos), "collapsed_dist": collapsed_path(path_dist),
        "spearman_undefined_cos": spearman_undefined(path_cos),
        "spearman_undefined_dist": spearman_undefined(path_dist),
    }


__all__ = ["COLLAPSE_TOP_FRAMES", "COLLAPSE_SHARE", "MIN_TOKENS_COLLAPSE", "CKA_FEW_PAIRS", "CKA_MIN_PAIRS", "SMALL_N",
           "Note", "top_frames_share", "collapsed_path", "spearman_undefined", "cka_pairs_status", "small_n",
           "layer_notes", "sample_notes", "cka_note", "small_n_note", "set_notes", "path_diagnostics",
           "R2_ALPHA", "R2_ADDED_MIN", "r2_null_note", "cka_null_note"]
