"""Pipelines: hidden states -> every metric, for one sample or a streamed sample set; cached.

analyze_sample(model, sample, options) -> SampleAnalysis   (everything for all layers)
analyze_set(model, samples, options)   -> SetAnalysis      (per-sample scalars + running aggregates;
                                                             never keeps hidden states, memory stays flat)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np
import torch

from lsl_core.data.audio import audio_digest
from lsl_core.errors import MetricInputError
from lsl_core.metrics.cka import (MIN_PAIRS, MinibatchCKA, above_null, cka_pairing_null, cross_layer_cka, path_layer,
                                 pooled_cross_layer_cka)
from lsl_core.metrics.norms import standardized_distance, token_norms
from lsl_core.metrics.sequence import layer_average, mean_pool, sequence_cosine, sequence_distance
from lsl_core.metrics.tokenwise import METRICS, PATH_METHODS, TokenwiseResult, tokenwise_metrics

ANALYSIS_VERSION = 2  # bump when a metric's definition changes: invalidates disk caches (2: the CKA null)


@dataclass(frozen=True)
class AnalysisOptions:
    cka: bool = True  # compute the per-sample cross-layer CKA matrix (seed 000)
    cka_path: Literal["cosine", "distance"] = "cosine"  # which alignment path pairs frames with tokens
    cka_path_layer: int = -1  # layer whose path aligns frames to tokens for CKA; -1 -> middle layer L//2
    # how frames are paired with tokens everywhere (path scores, Spearman, consistency, APS, CKA):
    # "argmax" = best frame per token (seed 001), "dtw" = monotone DTW path (seed 000)
    path: Literal["argmax", "dtw"] = "argmax"

    def __post_init__(self) -> None:
        if self.path not in PATH_METHODS:
            raise ValueError(f"AnalysisOptions.path must be 'argmax' or 'dtw', got {self.path!r}")
        if self.cka_path not in METRICS:
            raise ValueError(f"AnalysisOptions.cka_path must be 'cosine' or 'distance', got {self.cka_path!r}")
        if self.cka_path_layer < -1:
            raise ValueError(f"AnalysisOptions.cka_path_layer must be >= -1, got {self.cka_path_layer}")

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class SampleAnalysis:
    """All metrics of one sample, for every layer l = 0..L (index L is after the final norm)."""

    sample_id: str
    model: str
    digest: str
    tokens: list[str]  # [Tt]
    frame_times: np.ndarray  # [Ts] seconds (frame start)
    frame_seconds: float
    seq_cos: np.ndarray  # [L+1] cosine of mean-pooled states
    seq_dist: np.ndarray  # [L+1] Euclidean distance of mean-pooled states
    cos: np.ndarray  # [L+1, Ts, Tt]
    dist: np.ndarray  # [L+1, Ts, Tt]
    path_cos: np.ndarray  # [L+1, Tt] argmax frame per token
    path_dist: np.ndarray  # [L+1, Tt] argmin frame per token
    scores_cos: np.ndarray  # [L+1, Tt] path values
    scores_dist: np.ndarray  # [L+1, Tt]
    spearman_cos: np.ndarray  # [L+1]
    spearman_dist: np.ndarray  # [L+1]
    consistency: np.ndarray  # [L+1]
    aps_cos: float
    aps_dist: float
    pooled_speech: np.ndarray  # [L+1, d] mean-pooled speech states (for cross-sample CKA)
    pooled_text: np.ndarray  # [L+1, d]
    cka: np.ndarray | None  # [L+1, L+1] speech layer x text layer, or None if too few pairs
    cka_note: str = ""  # why cka is None
    options: dict = field(default_factory=dict)
    norm_speech: np.ndarray | None = None  # [L+1] mean L2 norm of the speech frames per layer
    norm_text: np.ndarray | None = None  # [L+1] mean L2 norm of the text tokens per layer
    std_dist: np.ndarray | None = None  # [L+1] standardized distance of the mean-pooled spans (metrics.norms)
    # the aligned CKA's shuffled-pairing null (metrics.cka.cka_pairing_null), each [L+1, L+1]; None without cka
    cka_null_mean: np.ndarray | None = None  # mean CKA with the frame-token pairs shuffled
    cka_null_low: np.ndarray | None = None  # 2.5th percentile of the shuffled pairings' CKA
    cka_null_high: np.ndarray | None = None  # 97.5th percentile
    cka_null_p: np.ndarray | None = None  # permutation p of the observed CKA

    @property
    def path_method(self) -> str:
        """'argmax' or 'dtw': how path_cos / path_dist pair frames with tokens."""
        return str(self.options.get("path", "argmax"))
    # diagnostics (lsl_core.metrics.diagnostics; computed from the paths when not given, e.g. an older cache)
    path_top_share_cos: np.ndarray | None = None  # [L+1] share of tokens on the 2 most-used path frames
    path_top_share_dist: np.ndarray | None = None  # [L+1]
    collapsed_cos: np.ndarray | None = None  # [L+1] bool: collapsed cosine path (share >= COLLAPSE_SHARE)
    collapsed_dist: np.ndarray | None = None  # [L+1] bool
    spearman_undefined_cos: np.ndarray | None = None  # [L+1] bool: constant path or Tt < 2 (ρ shown as 0)
    spearman_undefined_dist: np.ndarray | None = None  # [L+1] bool

    def __post_init__(self) -> None:
        from lsl_core.metrics.diagnostics import path_diagnostics

        names = ("path_top_share_cos", "path_top_share_dist", "collapsed_cos", "collapsed_dist",
                 "spearman_undefined_cos", "spearman_undefined_dist")
        if any(getattr(self, n) is None for n in names):
            for n, v in path_diagnostics(self.path_cos, self.path_dist).items():
                if getattr(self, n) is None:
                    setattr(self, n, v)

    @property
    def num_layers(self) -> int:
        return self.seq_cos.shape[0] - 1

    @property
    def seq_cos_mean(self) -> float:
        return layer_average(torch.from_numpy(self.seq_cos))

    @property
    def seq_dist_mean(self) -> float:
        return layer_average(torch.from_numpy(self.seq_dist))

    def scalars(self) -> dict:
        """Per-sample scalars and per-layer curves (lists) for a results table."""
        mean = lambda a: float(np.mean(a[1:])) if a.shape[0] > 1 else float(a[0])  # noqa: E731  layers 1..L
        return {
            "sample_id": self.sample_id, "model": self.model, "digest": self.digest,
            "Ts": int(self.cos.shape[1]), "Tt": int(self.cos.shape[2]),
            "seq_cos_mean": self.seq_cos_mean, "seq_dist_mean": self.seq_dist_mean,
            "aps_cos": self.aps_cos, "aps_dist": self.aps_dist,
            "spearman_cos_mean": mean(self.spearman_cos), "spearman_dist_mean": mean(self.spearman_dist),
            "consistency_mean": mean(self.consistency),
            "seq_cos": self.seq_cos.tolist(), "seq_dist": self.seq_dist.tolist(),
            "spearman_cos": self.spearman_cos.tolist(), "spearman_dist": self.spearman_dist.tolist(),
            "consistency": self.consistency.tolist(),
            "path": self.path_method,
            **({} if self.std_dist is None else {
                "std_dist_mean": mean(self.std_dist), "std_dist": self.std_dist.tolist(),
                "norm_speech": self.norm_speech.tolist(), "norm_text": self.norm_text.tolist()}),
            # the aligned CKA's diagonal (speech layer a vs text layer a) against its shuffled-pairing null
            **({} if self.cka is None or self.cka_null_high is None else {
                "cka_diag_mean": mean(np.diagonal(self.cka)),
                "cka_null_diag_mean": mean(np.diagonal(self.cka_null_mean)),
                "cka_above_null_frac": mean(above_null(self.cka, self.cka_null_high).astype(float))}),
            # diagnostics: share of layers 1..L whose path is collapsed / whose Spearman is undefined
            "collapsed_cos_frac": mean(np.asarray(self.collapsed_cos, dtype=np.float64)),
            "collapsed_dist_frac": mean(np.asarray(self.collapsed_dist, dtype=np.float64)),
            "spearman_undefined_cos_frac": mean(np.asarray(self.spearman_undefined_cos, dtype=np.float64)),
            "spearman_undefined_dist_frac": mean(np.asarray(self.spearman_undefined_dist, dtype=np.float64)),
        }


def metrics_from_states(hs: torch.Tensor, ht: torch.Tensor, options: AnalysisOptions = AnalysisOptions()) -> dict:
    """Every metric of DESIGN §3 from speech [L+1, Ts, d] and text [L+1, Tt, d] states (one pass each)."""
    tw: TokenwiseResult = tokenwise_metrics(hs, ht, path=options.path)
    cka, note, null = None, "", {}
    if options.cka:
        layer = path_layer(hs.shape[0], options.cka_path_layer)
        path = (tw.path_cos if options.cka_path == "cosine" else tw.path_dist)[layer]  # [Tt]
        try:
            cka = cross_layer_cka(hs, ht, path).numpy()
            nl = cka_pairing_null(hs, ht, path)
            null = dict(cka_null_mean=nl.mean, cka_null_low=nl.low, cka_null_high=nl.high, cka_null_p=nl.p)
        except MetricInputError as exc:
            note = str(exc)
    np_ = lambda t: t.detach().cpu().numpy()  # noqa: E731
    norm_s, norm_t = token_norms(hs, ht)  # [L+1] each
    return dict(
        norm_speech=np_(norm_s), norm_text=np_(norm_t), std_dist=np_(standardized_distance(hs, ht)),
        seq_cos=np_(sequence_cosine(hs, ht)), seq_dist=np_(sequence_distance(hs, ht)),
        cos=np_(tw.cos), dist=np_(tw.dist), path_cos=np_(tw.path_cos), path_dist=np_(tw.path_dist),
        scores_cos=np_(tw.scores_cos), scores_dist=np_(tw.scores_dist),
        spearman_cos=np_(tw.spearman_cos), spearman_dist=np_(tw.spearman_dist), consistency=np_(tw.consistency),
        aps_cos=float(tw.aps_cos), aps_dist=float(tw.aps_dist),
        pooled_speech=np_(mean_pool(hs)), pooled_text=np_(mean_pool(ht)), cka=cka, cka_note=note, **null,
    )


# --------------------------------------------------------------------------- caching
# what a model's prompts put around the query (LSLM.use_template; families' speech prompt): part of the cache key
PROMPT_IDENTITY = ("prefix_ids", "suffix_ids", "query_lead", "speech_prefix_ids", "speech_suffix_ids")


def sample_key(model, sample, options: AnalysisOptions) -> str:
    """Cache key: checkpoint digest (incl. device/dtype) + the prompt's tokens around the query + sample identity
    (audio bytes, question) + options."""
    h = hashlib.sha256()
    prompt = json.dumps([getattr(model, a, None) for a in PROMPT_IDENTITY])
    for part in (str(ANALYSIS_VERSION), model.digest, prompt, sample.id, sample.question, str(sample.sr),
                 options.key()):
        h.update(part.encode())
        h.update(b"\0")
    h.update(audio_digest(sample.audio).encode())
    return h.hexdigest()[:24]


class AnalysisCache:
    """Disk cache of SampleAnalysis as .npz (arrays, no pickle) + .json (strings, scalars)."""

    def __init__(self, root: str | Path | None = None) -> None:
        from lsl_core.cache import NpzJsonStore, cache_dir

        self.root = Path(root) if root else cache_dir("analysis")
        self._store = NpzJsonStore(self.root)

    def has(self, key: str) -> bool:
        return self._store.has(key)

    def get(self, key: str) -> SampleAnalysis | None:
        got = self._store.read(key)
        if got is None:
            return None  # missing, or a torn write: recompute
        meta, arrays = got
        arrays.setdefault("cka", None)
        return SampleAnalysis(**meta, **arrays)

    def put(self, key: str, a: SampleAnalysis) -> None:
        self._store.write(key, a, skip=("cka",))


_MEMORY: dict[str, SampleAnalysis] = {}
_MEMORY_MAX = 64


def analyze_sample(model, sample, options: AnalysisOptions = AnalysisOptions(), *,
                   cache: AnalysisCache | None | Literal[False] = None, states=None) -> SampleAnalysis:
    """Hidden states of one sample -> SampleAnalysis (memory + disk cached; cache=False disables).

    states: this model's `hidden_states(sample)` when the caller already has them (the controls
    pass computes them anyway); used only on a cache miss.
    """
    key = sample_key(model, sample, options)
    disk = None if cache is False else (cache or AnalysisCache())
    if key in _MEMORY and disk is not None:
        if not disk.has(key):
            disk.put(key, _MEMORY[key])
        return _MEMORY[key]
    hit = disk.get(key) if disk else None
    if hit is not None:
        _remember(key, hit)
        return hit
    states = states if states is not None else model.hidden_states(sample)
    m = metrics_from_states(states.speech, states.text, options)
    result = SampleAnalysis(sample_id=sample.id, model=model.name, digest=model.digest, tokens=states.tokens,
                            frame_times=np.asarray(states.frame_times), frame_seconds=float(states.frame_seconds),
                            options=asdict(options), **m)
    if disk:
        disk.put(key, result)
    if cache is not False:
        _remember(key, result)
    return result


def _remember(key: str, a: SampleAnalysis) -> None:
    if len(_MEMORY) >= _MEMORY_MAX:
        _MEMORY.pop(next(iter(_MEMORY)))
    _MEMORY[key] = a


# --------------------------------------------------------------------------- sets
@dataclass
class SetAnalysis:
    """Streamed results over a sample set."""

    rows: "object"  # pandas.DataFrame, one row per sample (scalars + per-layer curves as lists)
    mean_seq_cos: np.ndarray  # [L+1] mean over samples
    mean_seq_dist: np.ndarray  # [L+1]
    mean_cka: np.ndarray | None  # [L+1, L+1] mean of per-sample aligned CKA matrices
    pooled_cka: np.ndarray | None  # [L+1, L+1] unaligned mean-pooled CKA across samples (minibatch HSIC)
    n: int
    errors: list[str] = field(default_factory=list)
    # spread over questions (lsl_core.metrics.stats, 95% intervals; the clips of one question, its voices, are
    # resampled or left out together), None when not computable (fewer than 2 questions)
    mean_cka_low: np.ndarray | None = None  # [L+1, L+1] interval of mean_cka over the samples with a CKA
    mean_cka_high: np.ndarray | None = None
    mean_cka_n: int = 0  # samples with an aligned CKA matrix
    mean_cka_null: np.ndarray | None = None  # [L+1, L+1] mean of the per-sample shuffled-pairing null means
    mean_cka_null_low: np.ndarray | None = None  # its 95% bootstrap interval over the same samples
    mean_cka_null_high: np.ndarray | None = None
    pooled_cka_low: np.ndarray | None = None  # [L+1, L+1] pooled_cka ± 1.96 jackknife SE over the first
    pooled_cka_high: np.ndarray | None = None  #   pooled_cka_spread_n samples
    pooled_cka_spread_n: int = 0
    notes: list = field(default_factory=list)  # diagnostics.Note for the set (collapsed paths, small n)


def analyze_set(model, samples: Iterable, options: AnalysisOptions = AnalysisOptions(), *,
                progress: Callable[[int, int | None, str], None] | None = None, cache=None,
                cka_batch: int = 32, total: int | None = None) -> SetAnalysis:
    """Analyze samples one at a time, keeping only scalars and running sums (flat memory).

    progress(i, total, sample_id) is called after each sample. Samples that fail with a user
    error (bad audio) are recorded in `errors` and skipped, so one bad file does not stop a sweep.
    """
    import pandas as pd

    from lsl_core.errors import LSLError

    total = total if total is not None else (len(samples) if hasattr(samples, "__len__") else None)
    rows, errors = [], []
    cka_mats, null_mats, keep_s, keep_t = [], [], [], []  # per-sample CKA and null-mean matrices, pooled states
    #                                                       of the first SPREAD_MAX_SAMPLES
    cka_q, keep_q = [], []  # the question of each, for the spread over questions
    sum_cos = sum_dist = sum_cka = None
    n_cka = 0
    mb = MinibatchCKA()
    buf_s, buf_t = [], []
    n = 0
    for i, s in enumerate(samples):
        try:
            a = analyze_sample(model, s, options, cache=cache)
        except LSLError as exc:
            errors.append(f"{s.id}: {exc}")
            continue
        row = a.scalars()
        row.update(voice=getattr(s, "accent", ""), question=s.question)
        rows.append(row)
        sum_cos = a.seq_cos.astype(np.float64) if sum_cos is None else sum_cos + a.seq_cos
        sum_dist = a.seq_dist.astype(np.float64) if sum_dist is None else sum_dist + a.seq_dist
        if a.cka is not None:
            sum_cka = a.cka.copy() if sum_cka is None else sum_cka + a.cka
            n_cka += 1
            cka_mats.append(np.asarray(a.cka, dtype=np.float32))
            cka_q.append(s.question)
            if a.cka_null_mean is not None:
                null_mats.append(np.asarray(a.cka_null_mean, dtype=np.float32))
        if len(keep_s) < SPREAD_MAX_SAMPLES:
            keep_s.append(a.pooled_speech)
            keep_t.append(a.pooled_text)
            keep_q.append(s.question)
        buf_s.append(a.pooled_speech)
        buf_t.append(a.pooled_text)
        if len(buf_s) == cka_batch:
            mb.update(torch.from_numpy(np.stack(buf_s, 1)), torch.from_numpy(np.stack(buf_t, 1)))
            buf_s, buf_t = [], []
        n += 1
        if progress:
            progress(i + 1, total, s.id)
    pooled = None
    if len(buf_s) >= MIN_PAIRS:
        mb.update(torch.from_numpy(np.stack(buf_s, 1)), torch.from_numpy(np.stack(buf_t, 1)))
    elif buf_s and mb.n_batches == 0:
        errors.append(f"pooled CKA needs at least {MIN_PAIRS} samples, got {len(buf_s)}")
    elif buf_s:
        errors.append(f"pooled CKA: the last {len(buf_s)} sample(s) form a batch under {MIN_PAIRS} and are left out "
                      "of it")
    if mb.n_batches:
        pooled = mb.compute().numpy()
    if n == 0:
        raise MetricInputError("No sample could be analyzed: " + ("; ".join(errors[:3]) or "the set is empty."))
    spread = _set_spread(cka_mats, keep_s, keep_t, pooled, null_mats, cka_q, keep_q)
    from lsl_core.metrics.diagnostics import set_notes, small_n_note

    notes = set_notes(rows)
    small = small_n_note(n, "this average over samples")
    notes += [small] if small else []
    return SetAnalysis(rows=pd.DataFrame(rows), mean_seq_cos=sum_cos / n, mean_seq_dist=sum_dist / n,
                       mean_cka=None if sum_cka is None else sum_cka / n_cka, pooled_cka=pooled, n=n, errors=errors,
                       notes=notes, **spread)


SPREAD_MAX_SAMPLES = 128  # pooled states kept for the pooled-CKA interval ([L+1, d] x 2 per sample)


def _set_spread(cka_mats: list, keep_s: list, keep_t: list, pooled: np.ndarray | None,
                null_mats: list | None = None, cka_q: list | None = None, keep_q: list | None = None) -> dict:
    """Spread over questions (SetAnalysis fields): 95% cluster-bootstrap interval (the clips of one question drawn
    together; cka_q: the question of each CKA sample, default all distinct) of the mean aligned CKA and of the mean
    of its per-sample shuffled-pairing nulls (when every CKA sample has one); for the pooled CKA the delete-a-
    question jackknife interval (stats.pooled_cka_interval; keep_q) of the first SPREAD_MAX_SAMPLES samples around
    it. No interval from fewer than 2 questions: the clips of one question say nothing of other questions."""
    from lsl_core.errors import MetricInputError
    from lsl_core.metrics.cka import MIN_PAIRS
    from lsl_core.metrics.stats import bootstrap_ci, pooled_cka_interval

    cka_q = list(range(len(cka_mats))) if cka_q is None else cka_q
    keep_q = list(range(len(keep_s))) if keep_q is None else keep_q
    out: dict = {"mean_cka_n": len(cka_mats)}
    if len(set(cka_q)) >= 2:
        ci = bootstrap_ci(np.stack(cka_mats).astype(np.float64), groups=cka_q)  # [n, L+1, L+1]
        out.update(mean_cka_low=ci.low, mean_cka_high=ci.high)
        if null_mats and len(null_mats) == len(cka_mats):
            stacked = np.stack(null_mats).astype(np.float64)
            ci = bootstrap_ci(stacked, groups=cka_q)
            out.update(mean_cka_null=stacked.mean(0), mean_cka_null_low=ci.low, mean_cka_null_high=ci.high)
    elif null_mats and len(null_mats) == len(cka_mats):
        out.update(mean_cka_null=np.stack(null_mats).astype(np.float64).mean(0))
    if pooled is not None and len(keep_s) > MIN_PAIRS:
        try:
            ci = pooled_cka_interval(np.stack(keep_s, 1), np.stack(keep_t, 1), pooled, groups=keep_q)  # [L+1, N, d]
        except MetricInputError:  # too few questions to leave one out
            return out
        out.update(pooled_cka_low=ci.low, pooled_cka_high=ci.high, pooled_cka_spread_n=len(keep_s))
    return out


# --------------------------------------------------------------------------- CKA stability
@dataclass
class StabilityResult:
    """Cross-layer CKA of a sample set under several configurations and how alike the matrices are."""

    configs: list  # [C] lsl_core.metrics.stability.CKAConfig, in the order given
    matrices: dict[str, np.ndarray | None]  # label -> [L+1, L+1] (None: undefined for this set)
    summary: "object"  # lsl_core.metrics.stability.StabilitySummary (None if no matrix at all)
    n: int  # samples analyzed
    errors: list[str] = field(default_factory=list)


def analyze_stability(model, samples: Iterable, configs=None, *, reference: str | None = None, tolerance: int = 1,
                      progress: Callable[[int, int | None, str], None] | None = None,
                      total: int | None = None) -> StabilityResult:
    """Recompute the cross-layer CKA of `samples` under each configuration (default:
    metrics.stability.default_configs) from one speech + one text forward per sample, streaming
    (flat memory), and summarize how stable the matrices and their band locations are.

    progress(i, total, sample_id) after each sample; samples with a user error (bad audio) are
    listed in `errors` and skipped.
    """
    from lsl_core.errors import LSLError
    from lsl_core.metrics.stability import StabilityAccumulator, default_configs, stability_summary

    total = total if total is not None else (len(samples) if hasattr(samples, "__len__") else None)
    configs = list(configs) if configs is not None else list(default_configs(model.num_layers))
    acc = StabilityAccumulator(configs)
    errors: list[str] = []
    for i, s in enumerate(samples):
        try:
            states = model.hidden_states(s)
        except LSLError as exc:
            errors.append(f"{s.id}: {exc}")
            continue
        acc.update(states.speech, states.text, s.id)
        if progress:
            progress(i + 1, total, s.id)
    if acc.n_samples == 0:
        raise MetricInputError("No sample could be analyzed: " + ("; ".join(errors[:3]) or "the set is empty."))
    matrices = acc.matrices()
    errors += acc.notes
    summary = None
    if any(m is not None for m in matrices.values()):
        summary = stability_summary(matrices, reference=reference, tolerance=tolerance)
    return StabilityResult(configs=configs, matrices=matrices, summary=summary, n=acc.n_samples, errors=errors)


# --------------------------------------------------------------------------- logit lens
@dataclass
class LensAnalysis:
    """Logit lens of one sample (metrics.lens) with decoded strings, ready for a figure or a table.

    n = number of layers read; k = top-k per position. Ranks: 1 = the aligned token is the top token.
    """

    sample_id: str
    layers: np.ndarray  # [n] layers read (ascending; L = after the final norm)
    num_layers: int  # L
    tokens: list[str]  # [Tt] question tokens
    token_ids: list[int]  # [Tt] their vocabulary ids
    frame_times: np.ndarray  # [Ts] seconds
    frame_seconds: float
    frame_token: np.ndarray  # [n, Ts] index j of the text token aligned to each frame
    speech_top: np.ndarray  # [n, Ts, k] decoded top-k strings (most probable first)
    speech_top_probs: np.ndarray  # [n, Ts, k]
    speech_rank: np.ndarray  # [n, Ts] rank of the aligned text token in the frame's distribution
    speech_prob: np.ndarray  # [n, Ts] its probability
    text_top: np.ndarray  # [n, Tt, k]
    text_top_probs: np.ndarray  # [n, Tt, k]
    text_rank: np.ndarray  # [n, Tt] rank of each token's own id at its position
    vocab_size: int
    alignment: str  # e.g. "dtw cosine path, each layer's own" / "argmax distance path of layer 15"

    def table(self):
        """Long-form rows (one per layer x frame) with the exact values, for export."""
        import pandas as pd

        rows = []
        for r, layer in enumerate(self.layers):
            for i in range(self.speech_rank.shape[1]):
                j = int(self.frame_token[r, i])
                rows.append({"layer": int(layer), "frame": i, "time_s": float(self.frame_times[i]),
                             "aligned_token": self.tokens[j], "aligned_token_index": j,
                             "rank_of_aligned_token": int(self.speech_rank[r, i]),
                             "prob_of_aligned_token": float(self.speech_prob[r, i]),
                             "top_tokens": list(self.speech_top[r, i]),
                             "top_probs": [float(p) for p in self.speech_top_probs[r, i]]})
        return pd.DataFrame(rows)


def lens_sample(model, sample, *, k: int = 5, layers=None, path: str = "dtw", metric: str = "cosine",
                alignment_layer: int | None = None) -> LensAnalysis:
    """Logit lens over the speech frames and the text tokens of one sample (one forward per modality).

    Each frame's aligned text token comes from `tokenwise.frame_alignment` on the `metric` token
    matrix with the `path` method, at every layer read (alignment_layer None) or at one fixed layer.
    layers: the layers to read (default all 0..L; each costs a [T, d] x [d, V] matmul).
    """
    from lsl_core.metrics.lens import speech_logit_lens
    from lsl_core.metrics.tokenwise import frame_alignment, token_cosine_matrix, token_distance_matrix

    states = model.hidden_states(sample)
    ids = model.embed_text(sample.question).token_ids
    L = states.num_layers
    if alignment_layer is not None and not 0 <= alignment_layer <= L:
        raise MetricInputError(f"alignment_layer must be in 0..{L}, got {alignment_layer}.")
    A = (token_cosine_matrix if metric == "cosine" else token_distance_matrix)(states.speech, states.text)
    ft = frame_alignment(A, metric, path)  # [L+1, Ts]
    if alignment_layer is not None:
        ft = ft[alignment_layer].expand_as(ft)
    with model.lock:
        lens = speech_logit_lens(states.speech, states.text, ids, model.lens_head(), ft, k=k, layers=layers)
    decode = _decoder(model.tokenizer)
    where = "each layer's own" if alignment_layer is None else f"of layer {alignment_layer}"
    return LensAnalysis(
        sample_id=sample.id, layers=lens.speech.layers.numpy(), num_layers=L, tokens=list(states.tokens),
        token_ids=list(ids), frame_times=np.asarray(states.frame_times), frame_seconds=float(states.frame_seconds),
        frame_token=lens.frame_token.numpy(), speech_top=decode(lens.speech.top_ids),
        speech_top_probs=lens.speech.top_probs.numpy(), speech_rank=lens.speech.target_rank.numpy(),
        speech_prob=lens.speech.target_prob.numpy(), text_top=decode(lens.text.top_ids),
        text_top_probs=lens.text.top_probs.numpy(), text_rank=lens.text.target_rank.numpy(),
        vocab_size=model.lens_head().vocab_size, alignment=f"{path} {metric} path, {where}")


def _decoder(tokenizer) -> Callable[[torch.Tensor], np.ndarray]:
    """ids [...] -> decoded strings [...] (object array), each distinct id decoded once."""

    def decode(ids: torch.Tensor) -> np.ndarray:
        flat = ids.reshape(-1).tolist()
        table = {i: tokenizer.decode([i]) for i in set(flat)}
        return np.array([table[i] for i in flat], dtype=object).reshape(tuple(ids.shape))

    return decode


__all__ = ["AnalysisOptions", "StabilityResult", "analyze_stability", "LensAnalysis", "lens_sample", "SampleAnalysis", "SetAnalysis", "analyze_sample", "analyze_set",
           "metrics_from_states", "AnalysisCache", "sample_key", "pooled_cross_layer_cka"]
