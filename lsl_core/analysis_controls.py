"""Controls with a model (issue 15): hidden states -> lsl_core.metrics.controls, cached on disk.

analyze_controls(model, samples, options) -> ControlsResult
    matched vs mismatched pairs, specific alignment with bootstrap CI and speech -> text retrieval
    over a sample set. One speech forward per sample and one text forward per distinct question
    (not per pair); blocks of at most `options.block_samples` samples are held in memory, each its
    own candidate pool and centring reference. The per-sample analyses these states give are
    stored in the AnalysisCache too, so `analyze` after it reads them instead of recomputing.
sample_controls(model, sample, pool, options) -> SampleControls
    one clip (the Explorer): its own transcript vs K other questions of the pool, plus two
    model-side controls: silence (an all-zero clip of the same length, fed to the encoder directly,
    below the upload checks that refuse silent input) and shuffled frames (the clip's adaptor
    frames in a fixed random order before the LLM: if the path's Spearman survives, it does not
    come from the order of the content).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from lsl_core.errors import LSLError, MetricInputError
from lsl_core.metrics.controls import (
    METRIC_NAMES,
    SCORERS,
    ControlOptions,
    ControlsResult,
    Reference,
    candidate_metrics,
    centre_states,
    concat_results,
    draw_others,
    own_rank_stats,
    question_pool,
    reference_means,
    set_controls,
    stable_hash,
)

CONTROLS_VERSION = 1  # bump when a control's definition changes: invalidates disk caches
Progress = Callable[[int, int, str], None]


# --------------------------------------------------------------------------- states
@torch.no_grad()
def text_states(model, question: str) -> tuple[torch.Tensor, list[str]]:
    """Typed question -> text states [L+1, Tt, d] (float32 CPU) and its tokens, as `hidden_states` builds them."""
    tx = model.embed_text(question)
    return model.forward_states(model.build_prompt(tx.embeds, tx.token_ids)), tx.tokens


@torch.no_grad()
def speech_states(model, audio: np.ndarray, sr: int):
    """Audio -> (speech states [L+1, Ts, d], SpeechEmbedding) as `hidden_states` builds them."""
    sp = model.embed_speech(audio, sr)
    return model.forward_states(model.build_prompt(sp.embeds)), sp


@torch.no_grad()
def silence_states(model, seconds: float) -> torch.Tensor:
    """An all-zero 16 kHz clip of `seconds` through encoder, adaptor and LLM -> speech states [L+1, Ts, d].

    Built here, below `prepare_audio`, because the input checks refuse silent audio.
    """
    from lsl_core.data.audio import TARGET_SR

    n = max(int(round(seconds * TARGET_SR)), TARGET_SR // 50)  # at least one 20 ms encoder frame
    sp = model.adapt(model.encode_audio(np.zeros(n, dtype=np.float32)))
    return model.forward_states(model.build_prompt(sp.embeds))


def frame_permutation(n_frames: int, seed: int, sample_key: str) -> np.ndarray:
    """A fixed random order of n frames (never the identity when n >= 2): -> int64 [n]."""
    rng = np.random.default_rng([int(seed), stable_hash(sample_key), 1])
    perm = rng.permutation(n_frames)
    if n_frames >= 2 and (perm == np.arange(n_frames)).all():
        perm = np.roll(perm, 1)
    return perm


@torch.no_grad()
def shuffled_states(model, audio: np.ndarray, sr: int, perm: np.ndarray) -> torch.Tensor:
    """The clip's adaptor frames reordered by `perm` [Ts] before the LLM -> speech states [L+1, Ts, d]."""
    sp = model.embed_speech(audio, sr)
    if len(perm) != sp.embeds.shape[0]:
        raise MetricInputError(f"The permutation has {len(perm)} entries but the clip has {sp.embeds.shape[0]} frames.")
    idx = torch.as_tensor(np.asarray(perm), dtype=torch.long, device=sp.embeds.device)
    return model.forward_states(model.build_prompt(sp.embeds[idx]))  # frames [Ts, d] reordered


# --------------------------------------------------------------------------- caching
def controls_key(model, samples: Sequence, options: ControlOptions) -> str:
    """Cache key: version + checkpoint digest (device, dtype) + every sample's identity + the options that
    change the per-pair values (the summary's bootstrap settings are applied when reading)."""
    h = hashlib.sha256()
    for part in (str(CONTROLS_VERSION), model.digest, options.state_key()):
        h.update(part.encode())
        h.update(b"\0")
    for s in samples:
        for part in (s.id, s.question, str(s.sr)):
            h.update(part.encode())
            h.update(b"\0")
        h.update(np.ascontiguousarray(s.audio, dtype=np.float32).tobytes())
    return h.hexdigest()[:24]


class ControlsCache:
    """Disk cache of ControlsResult as .npz (arrays, no pickle) + .json (names, options, notes)."""

    def __init__(self, root: str | Path | None = None) -> None:
        from lsl_core.cache import NpzJsonStore, cache_dir

        self.root = Path(root) if root else cache_dir("controls")
        self._store = NpzJsonStore(self.root)

    def get(self, key: str) -> ControlsResult | None:
        got = self._store.read(key)
        if got is None:
            return None  # missing, or a torn write: recompute
        meta, arrays = got
        arrays.setdefault("reference", None)
        meta["metrics"], meta["scorers"] = tuple(meta["metrics"]), tuple(meta["scorers"])
        return ControlsResult(**meta, **arrays)

    def put(self, key: str, r: ControlsResult) -> None:
        self._store.write(key, r, skip=("reference",))


# --------------------------------------------------------------------------- a set
def spread_over_questions(questions: Sequence[str], n: int) -> list[int]:
    """Indices of n samples covering as many distinct questions as possible: the first reading of every
    question (in set order), then the second, ... (sd-qa-mini lists 5 voices per question in a row, so
    its first n samples would hold only n/5 questions: too few candidates for retrieval)."""
    seen: dict[str, int] = {}
    rank = []
    for q in questions:
        q = q.strip()
        rank.append(seen.get(q, 0))
        seen[q] = rank[-1] + 1
    order = sorted(range(len(questions)), key=lambda i: (rank[i], i))
    return order[: max(0, n)]


def _blocks(n: int, size: int) -> list[range]:
    """Consecutive blocks of at most `size` of n items, as even as possible."""
    k = max(1, -(-n // size))
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [range(int(edges[b]), int(edges[b + 1])) for b in range(k)]


def analyze_controls(model, samples: Sequence, options: ControlOptions = ControlOptions(), *,
                     progress: Progress | None = None, cache: ControlsCache | None | Literal[False] = None,
                     analysis_options=None, lock=None) -> ControlsResult:
    """Controls of every metric over `samples` (a sequence of Sample) for one model (cached on disk).

    progress(done, total, label) is called after each forward (total = samples + distinct questions).
    analysis_options: when given, each sample's SampleAnalysis under those options is stored from
    the same states (the `analyze` pass then reads it instead of running the model again).
    Samples whose audio is refused are left out and named in `notes`. lock: a context manager held
    around each forward only (e.g. the model's RLock in a server), so other users interleave.
    """
    from contextlib import nullcontext

    from lsl_core.analysis import analyze_sample
    from lsl_core.model.lslm import HiddenStates

    samples = list(samples)
    key = controls_key(model, samples, options)
    disk = None if cache is False else (cache or ControlsCache())
    hit = disk.get(key) if disk else None
    if hit is not None:
        hit.options = asdict(options)  # the requested summary settings (n_boot, ci, bootstrap unit)
        return hit
    blocks = _blocks(len(samples), options.block_samples)
    total = len(samples) + sum(len({samples[i].question.strip() for i in b}) for b in blocks)
    done, parts, notes = 0, [], []
    for block in blocks:
        items = [samples[i] for i in block]
        pool, _ = question_pool([s.question for s in items])
        texts, tokens = {}, {}
        for q in pool:
            with lock or nullcontext():
                texts[q], tokens[q] = text_states(model, q)
            done += 1
            if progress:
                progress(done, total, f"text: {q[:40]}")
        speech, kept = [], []
        for s in items:
            try:
                with lock or nullcontext():
                    hs, sp = speech_states(model, s.audio, s.sr)
            except LSLError as exc:
                notes.append(f"{s.id}: {exc}")
                done += 1
                continue
            speech.append(hs)
            kept.append(s)
            if analysis_options is not None:
                q = s.question.strip()
                states = HiddenStates(hs, texts[q], sp.frame_times, sp.frame_seconds, tokens[q],
                                      meta={"model": model.name, "digest": model.digest})
                analyze_sample(model, s, analysis_options, states=states)
            done += 1
            if progress:
                progress(done, total, s.id)
        if not kept:
            continue
        pool_k, qof = question_pool([s.question for s in kept])
        if len(pool_k) < 2:
            notes.append(f"block of {len(kept)} samples has a single question; left out (no mismatched pairs)")
            continue
        parts.append(set_controls(speech, [texts[q] for q in pool_k], qof, [s.id for s in kept], pool_k, options))
        del speech
    if not parts:
        raise MetricInputError("No controls could be computed: " + ("; ".join(notes[:3]) or "the set is empty."))
    result = concat_results(parts)
    result.notes = notes + result.notes
    if disk:
        disk.put(key, result)
    return result


# --------------------------------------------------------------------------- one clip
@dataclass(eq=False)
class SampleControls:
    """Controls of one clip against its own transcript (metrics M = METRIC_NAMES, layers 0..L)."""

    sample_id: str
    metrics: tuple[str, ...]  # [M]
    partner_questions: list[str]  # [K] other questions of the pool, drawn with the seed
    matched: np.ndarray  # [M, L+1] clip vs own transcript
    mismatched: np.ndarray  # [K, M, L+1] clip vs each partner question
    silence: np.ndarray  # [M, L+1] all-zero clip of the same length vs own transcript
    shuffled: np.ndarray  # [M, L+1] the clip's frames permuted vs own transcript
    permutation: np.ndarray  # [Ts] frame order fed to the LLM for `shuffled`
    silence_seconds: float
    retrieval: np.ndarray  # [S, 3, L+1] own transcript among itself + K partners (top1, top5, 1/rank)
    scorers: tuple[str, ...] = SCORERS
    centring: str = "none"
    options: dict = field(default_factory=dict)

    def curve(self, metric: str, which: str = "matched") -> np.ndarray:
        """[L+1] curve of one metric: which = matched | mismatched (mean over partners) | specific |
        silence | shuffled."""
        m = self.metrics.index(metric)
        if which == "matched":
            return self.matched[m]
        if which == "mismatched":
            return np.nanmean(self.mismatched[:, m], axis=0) if np.isfinite(self.mismatched[:, m]).any() \
                else np.full(self.matched.shape[-1], np.nan)
        if which == "specific":
            return self.matched[m] - self.curve(metric, "mismatched")
        if which in ("silence", "shuffled"):
            return getattr(self, which)[m]
        raise ValueError(f"which must be matched, mismatched, specific, silence or shuffled, got {which!r}")

    def layer_mean(self, metric: str, which: str = "matched") -> float:
        """The layer-averaged value (layers 1..L, as APS and f̄); NaN when undefined."""
        c = self.curve(metric, which)
        return float(np.mean(c[1:])) if c.shape[0] > 1 else float(c[0])


def sample_controls(model, sample, pool: Sequence[str], options: ControlOptions = ControlOptions(), *,
                    reference: Reference | None = None) -> SampleControls:
    """Controls of one clip. pool: the questions of the current sample set (duplicates and the clip's own
    question are fine); K = options.partners other questions are drawn with options.seed and the
    sample id, as `analyze_controls` draws them for the same pool.

    Centring (options.centring != "none") subtracts `reference` when given, else the means of the
    states computed here (this clip, its transcript and the partners') - a small reference set.
    """
    own = sample.question.strip()
    questions, _ = question_pool([*pool, own])
    own_idx = questions.index(own)
    if len(questions) < 2:
        raise MetricInputError("Mismatched pairs need at least one other question in the sample set.")
    partner_idx = draw_others(own_idx, len(questions), options.partners, options.seed, sample.id)
    partners = [questions[k] for k in partner_idx]
    hs, sp = speech_states(model, sample.audio, sample.sr)
    texts = [text_states(model, q)[0] for q in [own, *partners]]
    seconds = float(len(sample.audio)) / float(sample.sr)
    silent = silence_states(model, seconds)
    perm = frame_permutation(int(sp.embeds.shape[0]), options.seed, sample.id)
    shuffled = shuffled_states(model, sample.audio, sample.sr, perm)
    if reference is None and options.centring != "none":
        reference = reference_means([hs], texts, options.centring)
    mu_s = None if reference is None else reference.speech_mean
    mu_t = None if reference is None else reference.text_mean
    texts = [centre_states(t, mu_t) for t in texts]
    cube = lambda res: torch.stack([res[k] for k in METRIC_NAMES], dim=-2).numpy()  # noqa: E731  [C, M, L+1]
    res = candidate_metrics(centre_states(hs, mu_s), texts, options.cka_path_layer)
    all_ = cube(res)
    retrieval = np.stack([own_rank_stats(res[s].numpy()) for s in SCORERS])  # [S, 3, L+1]
    return SampleControls(
        sample_id=sample.id, metrics=METRIC_NAMES, partner_questions=partners, matched=all_[0], mismatched=all_[1:],
        silence=cube(candidate_metrics(centre_states(silent, mu_s), texts[:1], options.cka_path_layer))[0],
        shuffled=cube(candidate_metrics(centre_states(shuffled, mu_s), texts[:1], options.cka_path_layer))[0],
        permutation=perm, silence_seconds=seconds, retrieval=retrieval, centring=options.centring,
        options=asdict(options),
    )




# --------------------------------------------------------------------------- reports
MIN_QUESTIONS_FOR_CI = 10  # below this, a bootstrap over questions has few distinct resamples: say so
REPORT_METRICS = ("seq_cos", "aps_cos", "spearman_cos", "cka")  # per-layer columns of the printed table


def controls_table(result: ControlsResult, **labels) -> "object":
    """One long table (pandas) of a result: rows `table` = "specific" (metric x layer) and "retrieval"
    (scorer x layer); layer -1 = layer-averaged; `labels` (checkpoint, step, ...) become columns."""
    import pandas as pd

    opt = result.options
    spec = result.specific().assign(table="specific")
    retr = result.retrieval_table().assign(table="retrieval")
    df = pd.concat([spec, retr], ignore_index=True)
    extra = dict(centring=result.centring, partners=int(result.partners.shape[1]),
                 candidates=int(np.median(result.n_candidates)), seed=opt.get("seed", 0),
                 n_questions=len(result.questions), **labels)
    return df.assign(**extra)


def _ci(lo: float, hi: float) -> str:
    return "      n/a      " if not np.isfinite([lo, hi]).all() else f"[{lo:+.3f},{hi:+.3f}]"


def controls_report(result: ControlsResult, name: str = "") -> str:
    """The per-layer retrieval and specific-alignment tables as text (what `analyze --controls` prints)."""
    spec, retr = result.specific(), result.retrieval_table()
    L = result.num_layers
    nc = int(np.median(result.n_candidates))
    ch = retr.iloc[0]
    opt = result.options
    lines = [
        f"Controls{' — ' + name if name else ''}: {result.n} samples, {len(result.questions)} distinct questions, "
        f"K={result.partners.shape[1]} mismatched partners per sample, Nc={nc} retrieval candidates, "
        f"centring={result.centring}, seed={opt.get('seed', 0)}, {round(opt.get('ci', 0.95) * 100)}% bootstrap CI "
        f"resampling {'questions' if opt.get('bootstrap', 'question') == 'question' else 'clips'} "
        f"({opt.get('n_boot')} resamples)",
        "",
        f"Speech -> text retrieval of the own transcript among Nc candidates (chance: top-1 {ch.chance_top1:.3f}, "
        f"top-5 {ch.chance_top5:.3f}, MRR {ch.chance_mrr:.3f})",
        f"{'layer':>5} | {'seq_cos top1':>12} {'top5':>6} {'MRR':>6} | {'APS_cos top1':>12} {'top5':>6} {'MRR':>6}",
    ]
    for layer in [*range(L + 1), -1]:
        a = retr[(retr.scorer == "seq_cos") & (retr.layer == layer)].iloc[0]
        b = retr[(retr.scorer == "aps_cos") & (retr.layer == layer)].iloc[0]
        tag = "mean" if layer == -1 else str(layer)
        lines.append(f"{tag:>5} | {a.top1:>12.3f} {a.top5:>6.3f} {a.mrr:>6.3f} | {b.top1:>12.3f} {b.top5:>6.3f} "
                     f"{b.mrr:>6.3f}")
    lines += ["(mean: candidates scored by the layer-averaged value over layers 1..L: f̄_cos and APS)", "",
              "Specific alignment D = matched - mean mismatched per layer [95% CI]"]
    present = [m for m in REPORT_METRICS if (spec.metric == m).any()]
    lines.append(f"{'layer':>5} | " + " | ".join(f"{m:>12} D {'CI':^15}" for m in present))
    for layer in [*range(L + 1), -1]:
        cells = []
        for m in present:
            r = spec[(spec.metric == m) & (spec.layer == layer)].iloc[0]
            cells.append(f"{r.specific:>+14.4f} {_ci(r.ci_low, r.ci_high)}")
        lines.append(f"{'mean' if layer == -1 else layer:>5} | " + " | ".join(cells))
    lines += ["", "Layer-averaged (1..L), every metric", f"{'metric':>14} {'better':>6} {'matched':>10} "
              f"{'mismatched':>10} {'specific D':>11} {'95% CI':^17} {'n':>4} {'q':>4}"]
    for _, r in spec[spec.layer == -1].iterrows():
        flag = "" if not np.isfinite([r.ci_low, r.ci_high]).all() else (
            " *" if (r.ci_low > 0 or r.ci_high < 0) else "")
        lines.append(f"{r.metric:>14} {'higher' if r.higher_is_better else 'lower':>6} {r.matched:>10.4f} "
                     f"{r.mismatched:>10.4f} {r.specific:>+11.4f} {_ci(r.ci_low, r.ci_high):^17} {r.n:>4} "
                     f"{r.n_questions:>4}{flag}")
    lines.append("(n clips, q distinct questions; * the CI excludes 0; for distances a negative D means the own "
                 "transcript is closer)")
    q = len(result.questions)
    if opt.get("bootstrap", "question") == "question" and q < MIN_QUESTIONS_FOR_CI:
        lines.append(f"note: the CI resamples {q} questions; with fewer than {MIN_QUESTIONS_FOR_CI} it is rough "
                     "(few distinct resamples): add questions rather than voices")
    for note in result.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)


__all__ = ["CONTROLS_VERSION", "ControlsCache", "SampleControls", "analyze_controls", "controls_key", "controls_report",
           "controls_table", "frame_permutation", "sample_controls", "shuffled_states", "silence_states",
           "speech_states", "spread_over_questions", "text_states"]
