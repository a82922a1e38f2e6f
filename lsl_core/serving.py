"""A shared demo server: concurrent generation requests on one model gathered into ONE batch.

Several users of one app process (Streamlit sessions are threads) press "Regenerate" at about the same
time. One generation of the model takes most of a CPU, so serving them one after another makes the last
user wait N times as long. Here every request is submitted to the model's `GenerationServer`; its worker
thread waits BATCH_WINDOW_S after the first request for others, then prepares each request (its states,
plans and ASR transcript) and generates the answers of ALL gathered requests in one left-padded greedy
`generate` call (rows of different lengths, each with its own prefill edits). Requests that arrive while
a batch runs form the next batch. Each request holds a `Ticket`: its queue position and the running
batch's progress while it waits, and exactly its own answers when done (results are matched by position
in the batch, never by content, so sessions' answers cannot mix).

    GenerationRow        one answer to generate: a prompt [1, T, d], its prefill edits, max new tokens
    generate_rows        many rows -> one batched greedy generate -> answers (row order)
    Batcher / Ticket     a thread-safe gather-window queue around any `run_batch(payloads) -> results`
    GenerationServer     the Batcher of one model whose run_batch serves side-by-side requests
    server_for(model)    the process-wide server of a model (created on first use)

Nothing here imports streamlit; the app only submits a request and polls its ticket.
"""

from __future__ import annotations

from collections import OrderedDict
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # pragma: no cover
    from lsl_core.data.samples import Sample
    from lsl_core.interventions import SideBySide
    from lsl_core.model.lslm import LSLM, PromptInputs

BATCH_WINDOW_S = 0.3  # how long the first request of a batch waits for others (a click's spread across users)
MAX_BATCH_REQUESTS = 8  # requests per batch (each is ~4 answers: text, speech, cascade, intervention)


# =============================================================================== one batched generate
@dataclass(frozen=True, eq=False)
class GenerationRow:
    """One answer to generate greedily: prompt.inputs_embeds [1, T, d], prefill edits, its own length cap."""

    prompt: "PromptInputs"
    plans: tuple = ()  # EditPlans for this row (planned on its unpadded prompt)
    max_new_tokens: int = 40

    def __post_init__(self) -> None:
        if int(self.max_new_tokens) < 0:  # in a batch, ids[:-k] would cut the answer short silently
            from lsl_core.errors import LSLError

            raise LSLError(f"GenerationRow.max_new_tokens must be >= 0, got {self.max_new_tokens}; "
                           "ask for the answer length in new tokens.")


class _StepProgress:
    """A StoppingCriteria that never stops generation; it reports decoding steps (progress bars)."""

    def __init__(self, total: int, report: Callable[[float], None] | None) -> None:
        self.total, self.report, self.step = max(1, total), report, 0

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        self.step += 1
        if self.report is not None:
            self.report(min(1.0, self.step / self.total))
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def _generate_batch(model: "LSLM", rows: Sequence[GenerationRow],
                  progress: Callable[[float], None] | None = None) -> list[str]:
    """Greedy answers for rows of different prompts, lengths and edits in ONE batched generate call.

    (generate_rows calls it once per modality for models that switch weights per modality.)

    Prompts [1, T_b, d] are left padded to T = max T_b (padding masked, positions from the mask, as
    `model.batch.prompt_batch`); row b's plans edit only row b, at their positions shifted by its
    padding (EditPlan.apply), on the prefill pass only. Every row decodes max_b max_new_tokens steps; row b keeps its
    first max_new_tokens[b] tokens up to its first end-of-turn token (greedy: the same tokens as a
    shorter run). Answers come back in row order.
    """
    from transformers import StoppingCriteriaList

    from lsl_core.interventions import intervention_hooks

    if not rows:
        return []
    plans, plan_rows = [], []  # each plan shifts itself by its row's left padding (EditPlan.apply)
    for b, r in enumerate(rows):
        for p in r.plans:
            plans.append(p)
            plan_rows.append([b])
    steps = max(int(r.max_new_tokens) for r in rows)
    # the one generation path (LSLM.generate_ids): one batch, rows in input order (the hooks are per row)
    out = model.generate_ids([r.prompt for r in rows], steps, batch_size=len(rows), sort=False,
                             edit=intervention_hooks(model, plans, plan_rows),
                             stopping_criteria=StoppingCriteriaList([_StepProgress(steps, progress)]))
    # each row already ends at its first stop token (generate_ids); a row's first max_new_tokens[b] of them are
    # what a run of that length gives (greedy)
    return [model.decode(ids[: int(r.max_new_tokens)]) for r, ids in zip(rows, out)]


@torch.no_grad()
def generate_rows(model: "LSLM", rows: Sequence[GenerationRow],
                  progress: Callable[[float], None] | None = None) -> list[str]:
    """Greedy answers for rows of different prompts, lengths and edits, batched (see _generate_batch).

    One generate call for the built-in stack; a model family that switches weights between speech
    and text prompts (FamilyLSLM: a LoRA on for speech only) gets one call per modality.
    """
    if not rows:
        return []
    if not model.weights_per_modality:  # the built-in stack: every row in one batch
        return _generate_batch(model, rows, progress)
    answers: list[str] = [""] * len(rows)
    groups: dict[bool, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.prompt.prompt_ids is None, []).append(i)
    for idx in groups.values():
        for i, a in zip(idx, _generate_batch(model, [rows[i] for i in idx], progress)):
            answers[i] = a
    return answers


# =============================================================================== a side-by-side request
@dataclass(frozen=True)
class SideBySideRequest:
    """What one user asked for: text / speech / cascade / intervened answers of one sample."""

    sample: "Sample"
    conditions: tuple  # intervention conditions (labels like 'angle:bottom3@0' or Intervention tuples)
    max_new_tokens: int = 40
    cascade: bool = True
    transcript: str | None = None  # the clip's ASR transcript when the caller has it (the app caches it)
    donor_question: str | None = None  # another question, for conditions with pairing "other"


@dataclass
class _Prepared:
    """A request resolved on the model: its rows to generate and what `finish` needs to score them."""

    request: SideBySideRequest
    rows: list[GenerationRow]
    conds: list
    plans: list  # [n_conditions] tuples of EditPlans
    transcript: str | None
    states: Any  # HiddenStates (frame times, tokens)


def planning_states(model: "LSLM", sample: "Sample", conds: Sequence) -> tuple:
    """(speech prompt, text prompt, HiddenStates) for planning `conds` on one sample.

    One encoder pass; the full forwards (one per modality) run only when some intervention sits at a layer
    ℓ > 0. At ℓ = 0 a plan reads only hidden_states[0], the input of decoder layer 0 (the adaptor output /
    token embeddings, times the backbone's embedding scale if it has one): LSLM.input_states runs each
    prompt only up to that input and broadcasts it over the L+1 layer axis without a copy (exactly what a
    forward returns at index 0).
    """
    from lsl_core.interventions import sample_states
    from lsl_core.model.lslm import HiddenStates

    if any(iv.layer > 0 for ivs in conds for iv in ivs):
        return sample_states(model, sample)
    sp = model.embed_speech(sample.audio, sample.sr)
    tx = model.embed_text(sample.question)
    speech_prompt, text_prompt = model.build_prompt(sp.embeds), model.build_prompt(tx.embeds, tx.token_ids)
    states = HiddenStates(model.input_states(speech_prompt), model.input_states(text_prompt), sp.frame_times,
                          sp.frame_seconds, tx.tokens, meta={"model": model.name, "digest": model.digest,
                                                             "layers": "input only (layer 0)"})
    return speech_prompt, text_prompt, states


def _prepare(model: "LSLM", req: SideBySideRequest) -> _Prepared:
    """States for planning, plans, ASR transcript (unless given); the rows to generate."""
    from lsl_core.interventions import parse_condition, plan_interventions
    from lsl_core.interventions.plan import needs_donor
    from lsl_core.interventions.side_by_side import donor_text

    s = req.sample
    conds = [parse_condition(c) for c in req.conditions]
    donor = donor_text(model, req.donor_question, conds, s.question) if needs_donor(conds) else None
    speech_prompt, text_prompt, states = planning_states(model, s, conds)
    plans = [tuple(plan_interventions(ivs, states, speech_prompt, donor)) for ivs in conds]
    n = int(req.max_new_tokens)
    rows = [GenerationRow(text_prompt, (), n), GenerationRow(speech_prompt, (), n)]
    transcript = None
    if req.cascade and model.has_asr:
        transcript = req.transcript if req.transcript is not None else _transcribe(model, s)
        if transcript.strip():
            rows.append(GenerationRow(model.prompt_for(text=transcript), (), n))
    rows += [GenerationRow(speech_prompt, p, n) for p in plans]
    return _Prepared(req, rows, conds, plans, transcript, states)


_TRANSCRIPTS: "OrderedDict[tuple, str]" = OrderedDict()  # (model digest, audio sha1, sr) -> transcript
_TRANSCRIPTS_MAX = 256


def _transcribe(model: "LSLM", sample: "Sample") -> str:
    """The clip's ASR transcript, remembered per model and audio (deterministic greedy decoding)."""
    import hashlib

    import numpy as np

    key = (model.digest, hashlib.sha1(np.ascontiguousarray(sample.audio).tobytes()).hexdigest(), int(sample.sr))
    if key in _TRANSCRIPTS:
        _TRANSCRIPTS.move_to_end(key)
        return _TRANSCRIPTS[key]
    text = model.transcribe(sample.audio, sample.sr)
    _TRANSCRIPTS[key] = text
    while len(_TRANSCRIPTS) > _TRANSCRIPTS_MAX:
        _TRANSCRIPTS.popitem(last=False)
    return text


def _finish(p: _Prepared, answers: list[str]) -> "SideBySide":
    """The generated answers of one request (its rows, in order) -> a scored SideBySide."""
    from lsl_core.interventions import ConditionAnswer, SideBySide, condition_label, condition_title
    from lsl_core.interventions.side_by_side import score_answer

    s = p.request.sample
    refs = tuple(s.answers)
    it = iter(answers)
    text_answer = next(it)
    text = ConditionAnswer("text", "Text", text_answer, **score_answer(text_answer, refs, None))
    speech_answer = next(it)
    speech = ConditionAnswer("speech", "Speech", speech_answer, **score_answer(speech_answer, refs, text_answer))
    casc = None
    if p.transcript is not None:
        ans = next(it) if p.transcript.strip() else ""
        casc = ConditionAnswer("cascade", "Cascade (ASR → LLM)", ans, **score_answer(ans, refs, text_answer))
    outs = []
    for ivs, plans in zip(p.conds, p.plans):
        ans = next(it)
        outs.append(ConditionAnswer(condition_label(ivs), condition_title(ivs), ans,
                                    **score_answer(ans, refs, text_answer), plans=plans))
    return SideBySide(s.id, s.question, refs, text, speech, casc, p.transcript, tuple(outs),
                      tuple(float(t) for t in p.states.frame_times), tuple(p.states.tokens))


def _answers_per_request(model: "LSLM", good: Sequence[_Prepared],
                         report: Callable[[float], None] | None) -> list:
    """Each prepared request's answers (its rows, in order) from ONE generate call -> list[str] per request.

    When that call raises and several requests share it (a batch too big for the device, one request's prompt
    the model cannot run), each request is generated again alone: it gets its answers or its own exception.
    """
    rows = [r for p in good for r in p.rows]
    try:
        answers = generate_rows(model, rows, report)
    except Exception as exc:  # noqa: BLE001 - isolated below
        if len(good) == 1:
            return [exc]
        return [_answers_alone(model, p, report) for p in good]
    out, at = [], 0
    for p in good:
        out.append(answers[at: at + len(p.rows)])  # this request's rows, in its own order
        at += len(p.rows)
    return out


def _answers_alone(model: "LSLM", p: _Prepared, report: Callable[[float], None] | None) -> list | Exception:
    """One request's answers from its own generate call, or the exception it raised."""
    try:
        return generate_rows(model, p.rows, report)
    except Exception as exc:  # noqa: BLE001 - reported to that request's user only
        return exc


def serve_side_by_side(model: "LSLM", requests: Sequence[SideBySideRequest],
                       progress: Callable[[float, str], None] | None = None) -> list:
    """Serve several requests with ONE generate call: -> per request a SideBySide, or the exception it raised.

    Preparation (states, plans, transcript) runs request by request; a request that fails there (bad
    layer, bad audio) or in generation (see _answers_per_request) gets its own exception and does not stop
    the others.
    """
    prepared: list[_Prepared | BaseException] = []
    for k, req in enumerate(requests):
        if progress:
            progress(0.0, f"preparing request {k + 1}/{len(requests)} (states, plans, ASR)")
        try:
            prepared.append(_prepare(model, req))
        except Exception as exc:  # noqa: BLE001 - reported to that request's user only
            prepared.append(exc)
    good = [p for p in prepared if isinstance(p, _Prepared)]
    n_rows = sum(len(p.rows) for p in good)
    report = (lambda f: progress(f, f"generating {n_rows} answers for {len(good)} request(s)")) if progress else None
    answers = iter(_answers_per_request(model, good, report) if good else [])
    out = []
    for p in prepared:
        mine = p if isinstance(p, BaseException) else next(answers)
        out.append(mine if isinstance(mine, BaseException) else _finish(p, mine))
    return out


# =============================================================================== the batcher
@dataclass(eq=False)  # identity: two requests with equal payloads are still two tickets
class Ticket:
    """One submitted request: poll `status()` while waiting, `result()` for its own answer."""

    payload: Any
    submitted: float = field(default_factory=time.monotonic)
    _done: threading.Event = field(default_factory=threading.Event, repr=False)
    _result: Any = None
    _error: BaseException | None = None
    _batcher: "Batcher | None" = field(default=None, repr=False)
    batch_id: int | None = None  # the batch that served it (same id = generated together)
    batch_size: int = 0

    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def result(self, timeout: float | None = None):
        """This request's result (raises its exception); blocks until done or `timeout` (TimeoutError)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"The request was not served within {timeout} s.")
        if self._error is not None:
            raise self._error
        return self._result

    def status(self) -> dict:
        """{'state': 'queued' | 'running' | 'done', 'position': 1-based place among waiting requests (0 when
        running/done), 'ahead': requests generating before it, 'batch': requests in its batch,
        'progress': 0..1 of the running batch, 'text': a sentence for the user}."""
        if self.done():
            return {"state": "done", "position": 0, "ahead": 0, "batch": self.batch_size, "progress": 1.0,
                    "text": "Done."}
        return self._batcher._status(self) if self._batcher else {"state": "queued", "position": 1, "ahead": 0,
                                                                    "batch": 0, "progress": 0.0, "text": "Queued."}


class Batcher:
    """Gather requests for `window_s` after the first one, run them as one batch; repeat. Thread-safe.

    run_batch(payloads) -> one result per payload (an exception instance as a result fails only that
    ticket); run_batch may call `progress(fraction, text)` (passed as keyword `progress`) to report.
    One worker thread (daemon, started on first submit) runs batches one after another, so the model
    is never used by two batches at once; requests arriving meanwhile wait for the next batch.
    """

    def __init__(self, run_batch: Callable[..., list], window_s: float = BATCH_WINDOW_S,
                 max_batch: int = MAX_BATCH_REQUESTS, name: str = "batcher") -> None:
        if window_s < 0 or max_batch < 1:
            raise ValueError(f"Batcher needs window_s >= 0 and max_batch >= 1, got {window_s}, {max_batch}")
        self.run_batch, self.window_s, self.max_batch, self.name = run_batch, window_s, max_batch, name
        self._cv = threading.Condition()
        self._queue: list[Ticket] = []
        self._running: list[Ticket] = []
        self._progress = (0.0, "")
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # batches run so far
        self.sizes: list[int] = []  # requests per batch, in order (for tests and benchmarks)

    # ------------------------------------------------------------------ client side
    def submit(self, payload: Any) -> Ticket:
        t = Ticket(payload, _batcher=self)
        with self._cv:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            self._queue.append(t)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            self._cv.notify_all()
        return t

    def __call__(self, payload: Any, timeout: float | None = None):
        """Submit and wait: the result of this payload."""
        return self.submit(payload).result(timeout)

    def close(self) -> None:
        """Stop the worker after the current batch; queued requests fail with RuntimeError."""
        with self._cv:
            self._closed = True
            for t in self._queue:
                t._error = RuntimeError(f"{self.name} closed before serving the request")
                t._done.set()
            self._queue.clear()
            self._cv.notify_all()

    def _status(self, t: Ticket) -> dict:
        with self._cv:
            frac, what = self._progress
            if t in self._running:
                return {"state": "running", "position": 0, "ahead": 0, "batch": len(self._running),
                        "progress": frac,
                        "text": f"Generating in one batch with {len(self._running) - 1} other request(s): {what} "
                                f"({frac:.0%})." if len(self._running) > 1 else f"Generating: {what} ({frac:.0%})."}
            pos = self._queue.index(t) + 1 if t in self._queue else 1
            ahead = len(self._running)
            if ahead:
                text = (f"Queued: position {pos}; a batch of {ahead} request(s) is generating ({frac:.0%}); "
                        "this request joins the next batch.")
            else:
                text = f"Queued: position {pos}; gathering requests for one batch (window {self.window_s:.1f} s)."
            return {"state": "queued", "position": pos, "ahead": ahead, "batch": 0, "progress": 0.0, "text": text}

    # ------------------------------------------------------------------ worker side
    def _take(self) -> list[Ticket]:
        """Block until a batch is ready: the first request's window has passed or the batch is full."""
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if self._closed:
                return []
            deadline = self._queue[0].submitted + self.window_s
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            self._running = batch
            self._progress = (0.0, "starting")
            return batch

    def _report(self, fraction: float, text: str = "") -> None:
        with self._cv:
            self._progress = (float(fraction), text)

    def _work(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            self._serve(batch)
            del batch  # nothing of a served batch stays referenced while waiting for the next (its model included)

    def _serve(self, batch: list[Ticket]) -> None:
        """Run one batch and hand each ticket its result or error (locals end here: an error's traceback holds
        the batch's model, which must not outlive the tickets)."""
        self.batches += 1
        self.sizes.append(len(batch))
        try:
            results = self.run_batch([t.payload for t in batch], progress=self._report)
            if len(results) != len(batch):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
        except BaseException as exc:  # noqa: BLE001 - every waiting user gets the error, the worker lives on
            results = [exc] * len(batch)
        with self._cv:
            for t, r in zip(batch, results):
                t.batch_id, t.batch_size = self.batches, len(batch)
                if isinstance(r, BaseException):
                    t._error = r
                else:
                    t._result = r
                t._done.set()
            self._running = []
            self._progress = (0.0, "")
            self._cv.notify_all()


class GenerationServer(Batcher):
    """The batcher of one model: payloads are SideBySideRequests, results SideBySides (serve_side_by_side)."""

    def __init__(self, model: "LSLM", window_s: float = BATCH_WINDOW_S, max_batch: int = MAX_BATCH_REQUESTS) -> None:
        ref = weakref.ref(model)

        def run(requests, progress=None):
            m = ref()
            if m is None:
                raise RuntimeError("The model of this generation server was released.")
            return serve_side_by_side(m, requests, progress)

        super().__init__(run, window_s, max_batch, name=f"generation-server:{getattr(model, 'name', 'model')}")


_SERVERS: "weakref.WeakKeyDictionary[Any, GenerationServer]" = weakref.WeakKeyDictionary()
_SERVERS_LOCK = threading.Lock()


def server_for(model: "LSLM", window_s: float = BATCH_WINDOW_S) -> GenerationServer:
    """The process-wide GenerationServer of `model` (one per model object; created on first use)."""
    with _SERVERS_LOCK:
        srv = _SERVERS.get(model)
        if srv is None or srv._closed:
            srv = _SERVERS[model] = GenerationServer(model, window_s)
            weakref.finalize(model, srv.close)  # a released model (the app's cache dropped it) ends its worker
        return srv


__all__ = ["BATCH_WINDOW_S", "MAX_BATCH_REQUESTS", "GenerationRow", "generate_rows", "SideBySideRequest",
           "planning_states",
           "serve_side_by_side", "Ticket", "Batcher", "GenerationServer", "server_for"]
