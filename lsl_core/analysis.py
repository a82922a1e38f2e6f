"""Pipelines: hidden states -> every metric, for one sample or a streamed sample set; cached.

analyze_sample(model, sample, options) -> SampleAnalysis   (everything for all layers)
analyze_set(model, samples, options)   -> SetAnalysis      (per-sample scalars + running aggregates;
                                                             never keeps hidden states, memory stays flat)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterable, Literal

import numpy as np
import torch

from lsl_core.errors import MetricInputError
from lsl_core.metrics.cka import MinibatchCKA, cross_layer_cka, pooled_cross_layer_cka
from lsl_core.metrics.sequence import layer_average, mean_pool, sequence_cosine, sequence_distance
from lsl_core.metrics.tokenwise import TokenwiseResult, tokenwise_metrics

ANALYSIS_VERSION = 1  # bump when a metric's definition changes: invalidates disk caches


@dataclass(frozen=True)
class AnalysisOptions:
    cka: bool = True  # compute the per-sample cross-layer CKA matrix (seed 000)
    cka_path: Literal["cosine", "distance"] = "cosine"  # which alignment path pairs frames with tokens
    cka_path_layer: int = -1  # layer whose path aligns frames to tokens for CKA; -1 -> middle layer L//2

    def __post_init__(self) -> None:
        if self.cka_path not in ("cosine", "distance"):
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
        }


def metrics_from_states(hs: torch.Tensor, ht: torch.Tensor, options: AnalysisOptions = AnalysisOptions()) -> dict:
    """Every metric of DESIGN §3 from speech [L+1, Ts, d] and text [L+1, Tt, d] states (one pass each)."""
    tw: TokenwiseResult = tokenwise_metrics(hs, ht)
    L = hs.shape[0] - 1
    cka, note = None, ""
    if options.cka:
        layer = L // 2 if options.cka_path_layer == -1 else min(options.cka_path_layer, L)
        path = (tw.path_cos if options.cka_path == "cosine" else tw.path_dist)[layer]  # [Tt]
        try:
            cka = cross_layer_cka(hs, ht, path).numpy()
        except MetricInputError as exc:
            note = str(exc)
    np_ = lambda t: t.detach().cpu().numpy()  # noqa: E731
    return dict(
        seq_cos=np_(sequence_cosine(hs, ht)), seq_dist=np_(sequence_distance(hs, ht)),
        cos=np_(tw.cos), dist=np_(tw.dist), path_cos=np_(tw.path_cos), path_dist=np_(tw.path_dist),
        scores_cos=np_(tw.scores_cos), scores_dist=np_(tw.scores_dist),
        spearman_cos=np_(tw.spearman_cos), spearman_dist=np_(tw.spearman_dist), consistency=np_(tw.consistency),
        aps_cos=float(tw.aps_cos), aps_dist=float(tw.aps_dist),
        pooled_speech=np_(mean_pool(hs)), pooled_text=np_(mean_pool(ht)), cka=cka, cka_note=note,
    )


# --------------------------------------------------------------------------- caching
def sample_key(model, sample, options: AnalysisOptions) -> str:
    """Cache key: checkpoint digest (incl. device/dtype) + sample identity (audio bytes, question) + options."""
    h = hashlib.sha256()
    for part in (str(ANALYSIS_VERSION), model.digest, sample.id, sample.question, str(sample.sr), options.key()):
        h.update(part.encode())
        h.update(b"\0")
    h.update(np.ascontiguousarray(sample.audio, dtype=np.float32).tobytes())
    return h.hexdigest()[:24]


class AnalysisCache:
    """Disk cache of SampleAnalysis as .npz (arrays, no pickle) + .json (strings, scalars)."""

    def __init__(self, root: str | Path | None = None) -> None:
        from lsl_core.cache import cache_dir

        self.root = Path(root) if root else cache_dir("analysis")
        self.root.mkdir(parents=True, exist_ok=True)

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.npz", self.root / f"{key}.json"

    def has(self, key: str) -> bool:
        return all(p.is_file() for p in self._paths(key))

    def get(self, key: str) -> SampleAnalysis | None:
        npz, js = self._paths(key)
        if not (npz.is_file() and js.is_file()):
            return None
        try:
            meta = json.loads(js.read_text())
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError):
            return None  # a torn write: recompute
        arrays.setdefault("cka", None)
        return SampleAnalysis(**meta, **arrays)

    def put(self, key: str, a: SampleAnalysis) -> None:
        npz, js = self._paths(key)
        arrays = {f.name: getattr(a, f.name) for f in fields(a) if isinstance(getattr(a, f.name), np.ndarray)}
        meta = {f.name: getattr(a, f.name) for f in fields(a) if f.name not in arrays}
        meta.pop("cka", None)
        tmp = npz.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(npz)
        js.write_text(json.dumps(meta))


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
        buf_s.append(a.pooled_speech)
        buf_t.append(a.pooled_text)
        if len(buf_s) == cka_batch:
            mb.update(torch.from_numpy(np.stack(buf_s, 1)), torch.from_numpy(np.stack(buf_t, 1)))
            buf_s, buf_t = [], []
        n += 1
        if progress:
            progress(i + 1, total, s.id)
    pooled = None
    if len(buf_s) >= 4:
        mb.update(torch.from_numpy(np.stack(buf_s, 1)), torch.from_numpy(np.stack(buf_t, 1)))
    elif buf_s and mb.n_batches == 0:
        errors.append(f"pooled CKA needs at least 4 samples, got {len(buf_s)}")
    elif buf_s:
        errors.append(f"pooled CKA: the last {len(buf_s)} sample(s) form a batch under 4 and are left out of it")
    if mb.n_batches:
        pooled = mb.compute().numpy()
    if n == 0:
        raise MetricInputError("No sample could be analyzed: " + ("; ".join(errors[:3]) or "the set is empty."))
    return SetAnalysis(rows=pd.DataFrame(rows), mean_seq_cos=sum_cos / n, mean_seq_dist=sum_dist / n,
                       mean_cka=None if sum_cka is None else sum_cka / n_cka, pooled_cka=pooled, n=n, errors=errors)


__all__ = ["AnalysisOptions", "SampleAnalysis", "SetAnalysis", "analyze_sample", "analyze_set",
           "metrics_from_states", "AnalysisCache", "sample_key", "pooled_cross_layer_cka"]
