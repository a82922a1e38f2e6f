"""Controls for every alignment metric (issue 15): matched vs mismatched pairs, specific alignment,
speech -> text retrieval and centring. Pure functions over a set of samples' states.

A set holds N spoken samples i with speech states S_i [L+1, Ts_i, d] and Q distinct questions q
with text states T_q [L+1, Tt_q, d]; q(i) is the question sample i speaks. Several samples may
speak the same question (voices), so partners are *questions*, never other readings of q(i).
For a per-layer metric f (curve [L+1]; see METRICS):

    matched       m_i      = f(S_i, T_q(i))                                          [N, L+1]
    mismatched    x_{i,k}  = f(S_i, T_p(i,k)),  p(i,k) != q(i),  k = 1..K             [N, K, L+1]
    specific alignment  D  = mean_i d_i,  d_i = m_i - mean_k x_{i,k}                   [L+1]
                        95% CI: percentile bootstrap (fixed seed) resampling questions (all
                        clips of a question together; default) or single clips
    layer-averaged      the same with f replaced by its mean over layers 1..L (`layer_average`)
    retrieval     candidates C_i = {q(i)} + (Nc - 1) other questions; score s_i(c) = sequence
                  cosine or the per-layer APS term; rank r_i of q(i) (1 = best);
                  top-1 = mean_i [r_i <= 1], top-5 = mean_i [r_i <= 5], MRR = mean_i 1 / r_i
                  chance: 1/Nc, min(5, Nc)/Nc, H_Nc/Nc (H = harmonic number)
    centring      mu_l = mean over every position of a reference set's speech and text states
                  at layer l ("joint"), or one mean per modality ("modality");
                  S <- S - mu, T <- T - mu before every metric

Partners p(i, k) are drawn without replacement from the other questions by a generator seeded
with (seed, a hash of sample i's id), over the questions sorted by text: the same sample in the
same pool gets the same partners however the set is ordered or cut. The K partners are the first
K of that draw and the Nc - 1 retrieval distractors its first Nc - 1, so one pair computation
serves both. Cost: each text state is computed once per question; per sample, one token matrix
against all its candidates' tokens concatenated (columns are independent: the path of token j
depends only on column j), then split per candidate.

Metric per pair (curves [L+1], from lsl_core.metrics only):
    seq_cos, seq_dist        sequence_cosine / sequence_distance of the mean-pooled states
    aps_cos, aps_dist        per-layer APS term mean_j A_l[i*_j, j]; its layer_average is APS
    spearman_cos/_dist       path_monotonicity
    consistency              path_consistency
    cka                      diagonal of cross_layer_cka on the cosine path of layer `cka_path_layer`
                             (NaN when a question has fewer than 4 tokens: CKA is undefined there)
For distances (seq_dist, aps_dist) lower is better, so a specific alignment below 0 means the
own transcript is *closer* than others. Ties in retrieval are broken at random in expectation
(the own question's rank is uniform over its tied group), so all-tied candidates give chance.
"""

from __future__ import annotations

import hashlib
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Literal, Sequence

import numpy as np
import torch
from torch import Tensor

from lsl_core.errors import MetricInputError
from lsl_core.metrics.cka import cross_layer_cka, path_layer
from lsl_core.metrics.sequence import (_sequence_cosine, _sequence_distance, layer_average, sequence_cosine,
                                      sequence_distance, validate_states)
from lsl_core.metrics.tokenwise import (
    alignment_path,
    path_consistency,
    path_monotonicity,
    path_scores,
    token_cosine_matrix,
    token_distance_matrix,
    tokenwise_metrics,
)

# metric -> (label, higher is better)
METRICS: dict[str, tuple[str, bool]] = {
    "seq_cos": ("sequence cosine", True),
    "seq_dist": ("sequence L2 distance", False),
    "aps_cos": ("APS (cosine)", True),
    "aps_dist": ("APS (distance)", False),
    "spearman_cos": ("Spearman rho, cosine path", True),
    "spearman_dist": ("Spearman rho, distance path", True),
    "consistency": ("consistency", True),
    "cka": ("aligned CKA (diagonal)", True),
}
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)
SCORERS: tuple[str, ...] = ("seq_cos", "aps_cos")  # retrieval scores (higher = more similar)
RETRIEVAL_STATS: tuple[str, ...] = ("top1", "top5", "mrr")
Centring = Literal["none", "joint", "modality"]


@dataclass(frozen=True)
class ControlOptions:
    """How the controls are drawn and summarized (every field enters the cache key)."""

    partners: int = 5  # K mismatched questions per sample (capped at Q - 1 of the set)
    candidates: int = 20  # Nc retrieval candidates per sample incl. its own question (capped at Q)
    seed: int = 0  # partner draw and bootstrap; results are a deterministic function of it
    centring: Centring = "none"  # subtract a per-layer reference mean: none | joint | modality
    n_boot: int = 2000  # bootstrap resamples for the CI of the specific alignment
    ci: float = 0.95  # confidence level of the percentile bootstrap interval
    cka_path_layer: int = -1  # layer whose cosine path pairs frames with tokens for CKA; -1 -> L//2
    block_samples: int = 256  # at most this many samples share one candidate pool / centring reference
    bootstrap: Literal["question", "sample"] = "question"  # CI resampling unit: questions (the voices of one
    #   question share its transcript and partners, so they move together) or single clips

    def __post_init__(self) -> None:
        for name, low in (("partners", 1), ("candidates", 2), ("n_boot", 1), ("block_samples", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"ControlOptions.{name} must be an integer >= {low}, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"ControlOptions.seed must be a non-negative integer, got {self.seed!r}")
        if self.centring not in ("none", "joint", "modality"):
            raise ValueError(f"ControlOptions.centring must be 'none', 'joint' or 'modality', got {self.centring!r}")
        if not 0.0 < float(self.ci) < 1.0:
            raise ValueError(f"ControlOptions.ci must lie strictly between 0 and 1, got {self.ci!r}")
        if isinstance(self.cka_path_layer, bool) or not isinstance(self.cka_path_layer, int) or self.cka_path_layer < -1:
            raise ValueError(f"ControlOptions.cka_path_layer must be an integer >= -1, got {self.cka_path_layer!r}")
        if self.bootstrap not in ("question", "sample"):
            raise ValueError(f"ControlOptions.bootstrap must be 'question' or 'sample', got {self.bootstrap!r}")

    def key(self) -> str:
        import json

        return json.dumps(asdict(self), sort_keys=True)

    def state_key(self) -> str:
        """The fields that change the per-pair values (not the summary's bootstrap): a disk-cache key part."""
        import json

        return json.dumps({k: getattr(self, k) for k in STATE_FIELDS}, sort_keys=True)


STATE_FIELDS = ("partners", "candidates", "seed", "centring", "cka_path_layer", "block_samples")


# ---- partners --------------------------------------------------------------------------------

def stable_hash(text: str) -> int:
    """A 63-bit integer from a string, the same in every process (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def draw_others(own: int, n_questions: int, count: int, seed: int, sample_key: str) -> np.ndarray:
    """`count` question indices != own, drawn without replacement: -> int64 [min(count, Q - 1)].

    Deterministic in (seed, sample_key, own, Q); indices refer to the pool sorted by question text.
    """
    if not 0 <= own < n_questions:
        raise MetricInputError(f"own question index {own} outside the pool of {n_questions} questions.")
    others = np.array([q for q in range(n_questions) if q != own], dtype=np.int64)
    rng = np.random.default_rng([int(seed), stable_hash(sample_key)])
    return rng.permutation(others)[: min(count, others.size)]


def question_pool(questions: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct questions sorted by text and each sample's index into them: [N] str -> ([Q], int64 [N])."""
    norm = [q.strip() for q in questions]  # as LSLM.embed_text reads a question
    pool = sorted(set(norm))
    index = {q: k for k, q in enumerate(pool)}
    return pool, np.array([index[q] for q in norm], dtype=np.int64)


# ---- centring ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Reference:
    """Per-layer means subtracted before every metric (stored with the results)."""

    mode: Centring
    speech_mean: Tensor  # [L+1, d] float64 subtracted from speech states
    text_mean: Tensor  # [L+1, d] float64 subtracted from text states (== speech_mean for "joint")
    n_speech: int  # speech positions (frames) averaged
    n_text: int  # text positions (tokens) averaged


def reference_means(speech: Sequence[Tensor], text: Sequence[Tensor], mode: Centring) -> Reference | None:
    """Reference means over every position of the given states: speech [L+1,Ts_i,d]..., text [L+1,Tt_q,d]...

    "joint": one mean over all speech frames and text tokens together (frames usually outnumber
    tokens, so it leans towards speech); "modality": the speech mean and the text mean separately
    (removes the generic speech-vs-text offset too); "none": None.
    """
    if mode == "none":
        return None
    if mode not in ("joint", "modality"):
        raise MetricInputError(f"centring must be 'none', 'joint' or 'modality', got {mode!r}.")
    if not speech or not text:
        raise MetricInputError("Centring needs at least one speech and one text state in the reference set.")
    sum_s = sum(torch.as_tensor(h).to(torch.float64).sum(dim=1) for h in speech)  # [L+1, d]
    sum_t = sum(torch.as_tensor(h).to(torch.float64).sum(dim=1) for h in text)  # [L+1, d]
    n_s, n_t = sum(int(h.shape[1]) for h in speech), sum(int(h.shape[1]) for h in text)
    if mode == "joint":
        mu = (sum_s + sum_t) / (n_s + n_t)
        return Reference(mode, mu, mu, n_s, n_t)
    return Reference(mode, sum_s / n_s, sum_t / n_t, n_s, n_t)


def centre_states(h: Tensor, mean: Tensor | None) -> Tensor:
    """h [L+1, T, d] minus a per-layer mean [L+1, d] (float64 subtraction, float32 out); None -> h."""
    h = torch.as_tensor(h).detach()
    if mean is None:
        return h
    if mean.shape != (h.shape[0], h.shape[2]):
        raise MetricInputError(
            f"The centring mean has shape {tuple(mean.shape)} but the states need [L+1, d] = "
            f"{[h.shape[0], h.shape[2]]}; compute the reference with the same model."
        )
    return (h.to(torch.float64) - mean.to(torch.float64)[:, None, :]).to(torch.float32)  # [L+1, T, d]


# ---- metrics of one speech sample against several texts --------------------------------------

def pair_metrics(hs: Tensor, ht: Tensor, cka_path_layer: int = -1) -> dict[str, Tensor]:
    """Every control metric of one (speech, text) pair: hs [L+1,Ts,d], ht [L+1,Tt,d] -> {name: [L+1] float64}.

    The plain per-pair definition through `tokenwise_metrics` (the reference `candidate_metrics`
    is tested against).
    """
    tw = tokenwise_metrics(hs, ht)
    layer = path_layer(tw.path_cos.shape[0], cka_path_layer)
    try:
        cka = torch.diagonal(cross_layer_cka(hs, ht, tw.path_cos[layer]))  # [L+1]
    except MetricInputError:  # fewer than 4 tokens
        cka = torch.full((tw.path_cos.shape[0],), float("nan"), dtype=torch.float64)
    f64 = lambda t: t.to(torch.float64)  # noqa: E731
    return {
        "seq_cos": f64(sequence_cosine(hs, ht)), "seq_dist": f64(sequence_distance(hs, ht)),
        "aps_cos": f64(tw.scores_cos).mean(dim=-1), "aps_dist": f64(tw.scores_dist).mean(dim=-1),
        "spearman_cos": tw.spearman_cos, "spearman_dist": tw.spearman_dist, "consistency": tw.consistency,
        "cka": cka,
    }


def candidate_metrics(hs: Tensor, texts: Sequence[Tensor], cka_path_layer: int = -1) -> dict[str, Tensor]:
    """One speech sample against C texts: hs [L+1,Ts,d], texts C x [L+1,Tt_c,d] -> {name: [C, L+1] float64}.

    The token matrices are built once over all candidates' tokens concatenated ([L+1, Ts, sum Tt_c]);
    the path of token j depends only on column j, so splitting the columns per candidate gives
    exactly the per-pair paths, scores, Spearman and consistency.
    """
    if len(texts) == 0:
        raise MetricInputError("candidate_metrics needs at least one text state.")
    hs, _ = validate_states(hs, texts[0])  # [L+1, Ts, d] float32, checked once
    # [L+1, 1, d] float64, summed in float64 as sequence_cosine / sequence_distance do (a float32 mean of
    # large states loses digits), so the sequence metrics equal the per-pair ones exactly
    pooled = hs.to(torch.float64).mean(dim=1, keepdim=True)
    texts = [validate_states(hs[:, :1], ht)[1] for ht in texts]  # each [L+1, Tt_c, d] float32, checked cheaply
    ht_all = torch.cat(texts, dim=1)  # [L+1, sum Tt, d]
    cos, dist = token_cosine_matrix(hs, ht_all), token_distance_matrix(hs, ht_all)  # [L+1, Ts, sum Tt]
    path_cos, path_dist = alignment_path(cos, "cosine"), alignment_path(dist, "distance")  # [L+1, sum Tt]
    scores_cos, scores_dist = path_scores(cos, path_cos), path_scores(dist, path_dist)  # [L+1, sum Tt]
    layer = path_layer(hs.shape[0], cka_path_layer)
    out: dict[str, list[Tensor]] = {k: [] for k in METRIC_NAMES}
    start = 0
    for ht in texts:
        sl = slice(start, start + ht.shape[1])
        start = sl.stop
        out["seq_cos"].append(_sequence_cosine(pooled, ht).to(torch.float64))  # mean of one row = the row
        out["seq_dist"].append(_sequence_distance(pooled, ht).to(torch.float64))
        out["aps_cos"].append(scores_cos[:, sl].to(torch.float64).mean(dim=-1))  # [L+1], APS term per layer
        out["aps_dist"].append(scores_dist[:, sl].to(torch.float64).mean(dim=-1))
        out["spearman_cos"].append(path_monotonicity(path_cos[:, sl]))
        out["spearman_dist"].append(path_monotonicity(path_dist[:, sl]))
        out["consistency"].append(path_consistency(path_cos[:, sl], path_dist[:, sl]))
        try:
            frames, local = torch.unique(path_cos[layer, sl], return_inverse=True)  # CKA reads only path frames
            out["cka"].append(torch.diagonal(cross_layer_cka(hs[:, frames], ht, local)))
        except MetricInputError:  # fewer than 4 tokens: CKA says nothing about this pair
            out["cka"].append(torch.full((hs.shape[0],), float("nan"), dtype=torch.float64))
    return {k: torch.stack(v) for k, v in out.items()}  # [C, L+1] each


# ---- retrieval ---------------------------------------------------------------------------------

def own_rank_stats(scores: np.ndarray) -> np.ndarray:
    """Retrieval of candidate 0 by score (higher = better): scores [C, ...] -> [3, ...] (top1, top5, 1/rank).

    Each statistic is its expectation with ties broken at random: with g others strictly above
    and e others equal, the own rank is uniform over g+1 .. g+e+1.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[0] < 1:
        raise MetricInputError("Retrieval needs at least the own candidate.")
    own, others = s[0], s[1:]
    g = (others > own).sum(axis=0)  # [...]
    e = (others == own).sum(axis=0)
    n = s.shape[0]
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])  # H_0 .. H_n
    top = lambda k: np.clip((k - g) / (e + 1.0), 0.0, 1.0)  # noqa: E731  P(rank <= k)
    rr = (harmonic[g + e + 1] - harmonic[g]) / (e + 1.0)  # E[1 / rank]
    return np.stack([top(1), top(5), rr])


def best_layer_chance(n_clips: int, n_candidates: int, n_layers: int) -> tuple[float, float]:
    """Chance of "top-1 at the best layer": the mean and 95th percentile of max over n_layers of a top-1 rate
    (Binomial(n_clips, 1/n_candidates) / n_clips), for independent layers. The best of many layers beats
    1/n_candidates by chance alone; correlated layers (real ones) give less, so this bounds the null from above."""
    from scipy.stats import binom

    if min(n_clips, n_candidates, n_layers) < 1:
        raise ValueError(f"best_layer_chance needs positive counts, got {n_clips}, {n_candidates}, {n_layers}")
    k = np.arange(n_clips + 1)
    cdf_max = binom.cdf(k, n_clips, 1.0 / n_candidates) ** n_layers  # P(max <= k) [n_clips + 1]
    pmf = np.diff(np.concatenate([[0.0], cdf_max]))
    q95 = k[min(int(np.searchsorted(cdf_max, 0.95 - 1e-12)), n_clips)]
    return float((k * pmf).sum() / n_clips), float(q95 / n_clips)


def chance_levels(n_candidates: np.ndarray | int) -> np.ndarray:
    """Chance top-1, top-5, MRR among Nc candidates: -> [3, ...] = (1/Nc, min(5,Nc)/Nc, H_Nc/Nc)."""
    n = np.asarray(n_candidates, dtype=np.int64)
    harmonic = np.array([np.sum(1.0 / np.arange(1, k + 1)) for k in n.ravel()]).reshape(n.shape)
    return np.stack([1.0 / n, np.minimum(5, n) / n, harmonic / n])


# ---- bootstrap ---------------------------------------------------------------------------------

def bootstrap_ci(values: np.ndarray, n_boot: int, level: float, seed: int,
                 groups: np.ndarray | None = None) -> np.ndarray:
    """Percentile bootstrap CI of the mean over rows: values [n, p] -> [p, 2] (low, high).

    groups [n] (optional): resample whole groups (a cluster bootstrap: rows of one group, e.g. the
    voices of one question, are not independent); the mean of a resample is then sum of the drawn
    groups' row sums / their row count. Draws are multinomial counts (memory [n_boot, G], not
    [n_boot, n, p]). With one row per group this is the ordinary bootstrap, draw for draw. A single
    group (or row) gives the point itself; no rows give NaN.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise MetricInputError(f"bootstrap_ci needs values of shape [n, p], got {v.shape}.")
    n, p = v.shape
    if n == 0:
        return np.full((p, 2), np.nan)
    if groups is None:
        sums, sizes = v, np.ones(n)  # [G = n, p], [G]
    else:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise MetricInputError(f"groups must have one label per row ({n}), got shape {g.shape}.")
        _, inv = np.unique(g, return_inverse=True)
        sums = np.zeros((inv.max() + 1, p))
        np.add.at(sums, inv, v)  # [G, p] row sums per group
        sizes = np.bincount(inv).astype(np.float64)  # [G]
    G = sums.shape[0]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(G, np.full(G, 1.0 / G), size=n_boot).astype(np.float64)  # [B, G]
    means = (counts @ sums) / (counts @ sizes)[:, None]  # [B, p]
    alpha = (1.0 - level) / 2.0
    return np.quantile(means, [alpha, 1.0 - alpha], axis=0).T  # [p, 2]


# ---- a set -------------------------------------------------------------------------------------

@dataclass(eq=False)
class ControlsResult:
    """Controls of one sample set (one checkpoint). Arrays are numpy; M = len(metrics), S = len(scorers).

    Layer index runs 0..L in every [.., L+1] axis; "mean" summaries average layers 1..L.
    """

    metrics: tuple[str, ...]  # [M]
    scorers: tuple[str, ...]  # [S]
    sample_ids: list[str]  # [N]
    questions: list[str]  # [Q] pool, sorted by text
    question_of: np.ndarray  # [N] int64 index into questions
    block_of: np.ndarray  # [N] int64 block (own candidate pool and centring reference)
    partners: np.ndarray  # [N, K] int64 question indices (-1: fewer questions than K + 1)
    n_candidates: np.ndarray  # [N] int64 Nc per sample (own question included)
    matched: np.ndarray  # [N, M, L+1]
    mismatched: np.ndarray  # [N, K, M, L+1] (NaN where partner -1 or metric undefined)
    retrieval: np.ndarray  # [N, S, 3, L+1] top1, top5, 1/rank per layer (expectations under ties)
    retrieval_mean: np.ndarray  # [N, S, 3] the same scoring by the layer-averaged score
    centring: str  # none | joint | modality
    reference: np.ndarray | None  # [blocks, 2, L+1, d] speech-side and text-side means subtracted
    options: dict = field(default_factory=dict)  # ControlOptions as a dict
    notes: list[str] = field(default_factory=list)  # samples left out (bad audio) and similar

    @property
    def n(self) -> int:
        return len(self.sample_ids)

    @property
    def num_layers(self) -> int:
        return self.matched.shape[-1] - 1

    def _opt(self) -> ControlOptions:
        return ControlOptions(**{k: v for k, v in self.options.items() if k in ControlOptions.__dataclass_fields__})

    def differences(self, metric: str) -> np.ndarray:
        """d_i = matched - mean over partners, per layer: -> [N, L+1] (NaN rows where undefined)."""
        m = self.metrics.index(metric)
        with _quiet():
            return self.matched[:, m] - np.nanmean(self.mismatched[:, :, m], axis=1)

    def specific(self) -> "object":
        """Per metric and layer (plus layer-mean rows with layer = -1): matched, mismatched and specific
        alignment means with the bootstrap CI and the number of samples it rests on (pandas DataFrame)."""
        import pandas as pd

        opt = self._opt()
        rows = []
        L = self.num_layers
        for m, name in enumerate(self.metrics):
            d = self.differences(name)  # [N, L+1]
            ok = np.isfinite(d).all(axis=1)
            if not ok.any():
                continue
            mm = self.mismatched[ok, :, m]  # [n, K, L+1]
            with _quiet():
                mis = np.nanmean(mm, axis=1)  # [n, L+1]
            mat = self.matched[ok, m]  # [n, L+1]
            lay = lambda a: a[:, 1:].mean(axis=1, keepdims=True) if L > 0 else a  # noqa: E731  [n, 1]
            both = np.concatenate([d[ok], lay(d[ok])], axis=1)  # [n, L+2]
            groups = self.question_of[ok] if opt.bootstrap == "question" else None
            ci = bootstrap_ci(both, opt.n_boot, opt.ci, opt.seed, groups)  # [L+2, 2]
            mat_all = np.concatenate([mat, lay(mat)], axis=1).mean(axis=0)
            mis_all = np.concatenate([mis, lay(mis)], axis=1).mean(axis=0)
            spec = both.mean(axis=0)
            for j, layer in enumerate([*range(L + 1), -1]):
                rows.append(dict(metric=name, layer=layer, matched=mat_all[j], mismatched=mis_all[j],
                                 specific=spec[j], ci_low=ci[j, 0], ci_high=ci[j, 1], n=int(ok.sum()),
                                 n_questions=int(np.unique(self.question_of[ok]).size),
                                 higher_is_better=METRICS[name][1]))
        return pd.DataFrame(rows)

    def retrieval_table(self) -> "object":
        """Per scorer and layer (layer = -1: scored by the layer-averaged score): top1, top5, MRR and
        the chance levels for these candidate counts (pandas DataFrame)."""
        import pandas as pd

        chance = chance_levels(self.n_candidates).mean(axis=1)  # [3]
        rows = []
        for s, name in enumerate(self.scorers):
            per_layer = self.retrieval[:, s].mean(axis=0)  # [3, L+1]
            overall = self.retrieval_mean[:, s].mean(axis=0)  # [3]
            for layer in [*range(self.num_layers + 1), -1]:
                v = overall if layer == -1 else per_layer[:, layer]
                rows.append(dict(scorer=name, layer=layer, top1=v[0], top5=v[1], mrr=v[2],
                                 chance_top1=chance[0], chance_top5=chance[1], chance_mrr=chance[2], n=self.n))
        return pd.DataFrame(rows)


@contextmanager
def _quiet():
    """Silence numpy's 'mean of empty slice' warnings (NaN is the intended result there)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        yield


def set_controls(speech: Sequence[Tensor], text: Sequence[Tensor], question_of: Sequence[int],
                 sample_ids: Sequence[str], questions: Sequence[str] | None = None,
                 options: ControlOptions = ControlOptions(), reference: Reference | None = None) -> ControlsResult:
    """Controls of one block of samples held in memory.

    speech: N x [L+1, Ts_i, d]; text: Q x [L+1, Tt_q, d] (one per distinct question); question_of [N]:
    index of each sample's question in `text` (and `questions`, the question strings, optional).
    sample_ids [N] seed the partner draw. reference: precomputed centring means; when None and
    options.centring != "none", the means of exactly these speech and text states are used.
    """
    n, q = len(speech), len(text)
    qof = np.asarray(question_of, dtype=np.int64)
    if n == 0:
        raise MetricInputError("The control set is empty; give at least two samples of different questions.")
    if qof.shape != (n,) or len(sample_ids) != n:
        raise MetricInputError(f"question_of and sample_ids must have one entry per sample ({n}).")
    if qof.min() < 0 or qof.max() >= q:
        raise MetricInputError(f"question_of holds indices outside the {q} text states.")
    if q < 2:
        raise MetricInputError(
            "Mismatched pairs need at least 2 different questions in the set; this one has "
            f"{q}. Use a larger sample set (or fewer voice filters)."
        )
    if reference is None and options.centring != "none":
        reference = reference_means(speech, text, options.centring)
    mu_s = None if reference is None else reference.speech_mean
    mu_t = None if reference is None else reference.text_mean
    texts = [centre_states(t, mu_t) for t in text]  # each question once
    K = min(options.partners, q - 1)
    nc = min(options.candidates, q)
    n_draw = max(K, nc - 1)
    partners = np.full((n, K), -1, dtype=np.int64)
    M, S = len(METRIC_NAMES), len(SCORERS)
    L1 = texts[0].shape[0]
    matched = np.zeros((n, M, L1))
    mismatched = np.full((n, K, M, L1), np.nan)
    retrieval = np.zeros((n, S, 3, L1))
    retrieval_mean = np.zeros((n, S, 3))
    for i in range(n):
        others = draw_others(int(qof[i]), q, n_draw, options.seed, str(sample_ids[i]))  # [n_draw]
        cands = [int(qof[i]), *others.tolist()]
        hs = centre_states(speech[i], mu_s)  # [L+1, Ts, d]
        res = candidate_metrics(hs, [texts[c] for c in cands], options.cka_path_layer)  # {name: [C, L+1]}
        cube = torch.stack([res[k] for k in METRIC_NAMES], dim=1).numpy()  # [C, M, L+1]
        matched[i] = cube[0]
        partners[i, : K] = others[:K]
        mismatched[i, : K] = cube[1: 1 + K]
        for s, scorer in enumerate(SCORERS):
            sc = res[scorer][:nc].numpy()  # [Nc, L+1]
            retrieval[i, s] = own_rank_stats(sc)
            lay = np.array([layer_average(torch.from_numpy(row)) for row in sc])  # [Nc]
            retrieval_mean[i, s] = own_rank_stats(lay)
    ref = None
    if reference is not None:
        ref = torch.stack([reference.speech_mean, reference.text_mean]).numpy()[None]  # [1, 2, L+1, d]
    return ControlsResult(
        metrics=METRIC_NAMES, scorers=SCORERS, sample_ids=[str(s) for s in sample_ids],
        questions=list(questions) if questions is not None else [f"q{k}" for k in range(q)],
        question_of=qof, block_of=np.zeros(n, dtype=np.int64), partners=partners,
        n_candidates=np.full(n, nc, dtype=np.int64), matched=matched, mismatched=mismatched,
        retrieval=retrieval, retrieval_mean=retrieval_mean, centring=options.centring, reference=ref,
        options=asdict(options),
    )


def concat_results(parts: Sequence[ControlsResult]) -> ControlsResult:
    """Join the results of several blocks (same model, same options) into one set result."""
    if not parts:
        raise MetricInputError("No control blocks to join.")
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    pool = sorted({q for p in parts for q in p.questions})
    index = {q: k for k, q in enumerate(pool)}
    remap = lambda p, a: np.where(a >= 0, np.array([index[q] for q in p.questions])[np.maximum(a, 0)], -1)  # noqa: E731
    K = max(p.partners.shape[1] for p in parts)

    def pad_k(a: np.ndarray, fill) -> np.ndarray:
        if a.shape[1] == K:
            return a
        extra = np.full((a.shape[0], K - a.shape[1], *a.shape[2:]), fill, dtype=a.dtype)
        return np.concatenate([a, extra], axis=1)

    refs = [p.reference for p in parts]
    return ControlsResult(
        metrics=first.metrics, scorers=first.scorers, sample_ids=[s for p in parts for s in p.sample_ids],
        questions=pool, question_of=np.concatenate([remap(p, p.question_of) for p in parts]),
        block_of=np.concatenate([np.full(p.n, b, dtype=np.int64) for b, p in enumerate(parts)]),
        partners=np.concatenate([pad_k(remap(p, p.partners), -1) for p in parts]),
        n_candidates=np.concatenate([p.n_candidates for p in parts]),
        matched=np.concatenate([p.matched for p in parts]),
        mismatched=np.concatenate([pad_k(p.mismatched, np.nan) for p in parts]),
        retrieval=np.concatenate([p.retrieval for p in parts]),
        retrieval_mean=np.concatenate([p.retrieval_mean for p in parts]),
        centring=first.centring, reference=None if refs[0] is None else np.concatenate(refs),
        options=first.options, notes=[x for p in parts for x in p.notes],
    )


__all__ = ["METRICS", "METRIC_NAMES", "SCORERS", "RETRIEVAL_STATS", "ControlOptions", "ControlsResult", "Reference",
           "best_layer_chance", "bootstrap_ci", "candidate_metrics", "centre_states", "chance_levels", "concat_results",
           "draw_others", "own_rank_stats", "pair_metrics", "question_pool", "reference_means", "set_controls",
           "stable_hash"]
