"""TrainConfig: one training stage of the curriculum, as data (peft habit: every field has a help
comment, choices are Literal, validation names the bad field).

The curriculum (configs/train/*.json, run in order) is a list of stages, each continuing from the
previous stage's final checkpoint (`init`):

    ctc      alignment, stage 1a: adaptor only, no LLM pass. The adaptor output of each speech frame is
             scored against the LLM's own (frozen) input-embedding table; CTC over the question's tokens.
    repeat   alignment, stage 1b: LLM frozen; from speech the LLM reproduces the spoken question
             (response = transcript tokens) under a "repeat" system prompt.
    qa       stage 2, QA self-distillation: the response is the backbone's own greedy answer to the typed
             question, so a perfectly aligned model answers speech exactly as it answers text. With
             distill_weight > 0 the loss adds the KL from the backbone's next-token distributions on the
             typed question (the teacher: the LLM before this stage) to those on speech; with
             align_weight > 0 it adds the paper's sequence-level alignment as a loss, 1 − the sequence cosine
             of speech vs the teacher reading the typed question, averaged over layers 1..L, or (align_loss
             "contrastive") only its question-specific part, speech -> text retrieval in the batch (objectives.py).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
import types
import typing
from pathlib import Path
from typing import Literal

from lsl_core.data.synth import TRAIN_VOICE_FAMILY, UNSEEN_VOICE
from lsl_core.errors import LSLError
from lsl_core.model.embedded import EMBEDDED_ENCODER, EMBEDDED_LLM
from lsl_core.model.lora_scope import LORA_SCOPES


def _has_type(value, hint) -> bool:
    """Whether a JSON value (lists already tuples) fits a field's annotation: int (not bool), float (int too),
    bool, str, dict, tuple[X, ...], X | None, Literal (its checks stay in __post_init__)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, tuple) and all(_has_type(x, args[0]) for x in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, dict):
        return isinstance(value, hint)
    return True


@functools.lru_cache(maxsize=1)
def _float_fields() -> tuple[str, ...]:
    """TrainConfig's fields annotated float (or float | None)."""
    hints = typing.get_type_hints(TrainConfig)
    return tuple(k for k, h in hints.items() if h is float or float in typing.get_args(h))


def _type_name(hint) -> str:
    """'an integer', 'a list of strings', ... for the message of a wrongly typed field ('' = not checked)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return ""
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(n for n in names if n) + (" or null" if type(None) in args else "")
    if origin is tuple:
        inner = {int: "integers", float: "numbers", str: "strings"}.get(args[0], "values")
        return f"a list of {inner}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            dict: "an object"}.get(hint, "")


TrainStrategy = Literal["frozen", "lora", "full"]
TRAIN_STRATEGIES = ("frozen", "lora", "full")
Objective = Literal["ctc", "repeat", "qa"]
OBJECTIVES = ("ctc", "repeat", "qa")
REPEAT_SYSTEM = "Repeat the user's message exactly, word for word."
# fields added after checkpoints were shipped, with their defaults (left out of the digest at these values)
LATER_FIELDS = {"lora_scope": "all", "adaptor_context": 0, "vocab_cased": False, "time_masks": 0,
                "time_mask_frames": 10, "channel_masks": 0, "channel_mask_width": 27, "vocab_doses": [],
                "vocab_dose_words": 100, "vocab_control_words": None, "vocab_dictionary": False, "align_weight": 0.0,
                "align_loss": "cosine", "align_temperature": 0.1}


@dataclass(frozen=True)
class TrainConfig:
    name: str = "lora"  # run name: checkpoints are "<name>-step<NNNN>" (unique within a zoo)
    objective: Objective = "qa"  # ctc | repeat | qa (module docstring)
    strategy: TrainStrategy = "lora"  # what of the LLM trains: frozen (nothing), lora (LoRA matrices), full
    train_adaptor: bool = True  # False: the adaptor stays as `init` left it (its checkpoints point to init's file)
    init: str | None = None  # manifest (or its folder) to continue from: its adaptor, and its step as offset
    out: str = "assets/checkpoints/lora"  # trajectory folder (relative to the cwd)
    llm: str = EMBEDDED_LLM  # backbone: "embedded:...", local folder or hub id (as in a manifest)
    encoder: str = EMBEDDED_ENCODER  # speech encoder (Whisper), always frozen
    encoder_window: Literal["padded", "clip"] = "clip"  # Whisper window convention, written to every manifest
    family: str = "smollm2-135m+whisper-tiny.en"  # manifest family (groups checkpoints for R² fits)
    prompt: dict = field(default_factory=dict)  # PromptTemplate of the checkpoints ({} = default chat template)
    repeat_system: str = REPEAT_SYSTEM  # system prompt of the `repeat` objective (training only)
    downsample: int = 5  # encoder frames stacked by the adaptor (5 x 20 ms = 100 ms)
    adaptor_hidden: int | None = None  # hidden width of the adaptor's two-layer MLP; None -> the LLM width
    adaptor_context: int = 0  # local self-attention blocks between the adaptor's linear layers (0 = plain MLP)
    adaptor_seed: int = 0  # adaptor init seed when there is no `init` (seed 0 = embedded-untrained)
    # -- data: SD-QA English *test* questions (never dev) x espeak-ng voice renditions
    n_questions: int = 0  # training questions (a seeded sample of the test questions; 0 = all not monitored)
    n_val_questions: int = 16  # test questions kept out of training, used only to monitor progress
    vocab_sentences: int = 0  # ctc/repeat: extra seeded word sequences drawn from the LLM's word tokens
    vocab_words: int = 12000  # ... from its first (most frequent, by BPE merge order) this many word tokens
    vocab_cased: bool = False  # ... counting capitalised word tokens too (names: "Iran", "Bruce"), kept as written
    vocab_doses: tuple[int, ...] = ()  # ctc/repeat: new words spoken in exactly this many clips per group (dose.py)
    vocab_dose_words: int = 100  # ... words per dose group (0 = every new word left after the control, split evenly)
    vocab_control_words: int | None = None  # ... words of the control group training never speaks (None = as per group)
    vocab_dictionary: bool = False  # ... new words only if an English dictionary lists them (no "comp", "diff")
    written_questions: int = 0  # extra questions the backbone writes from few-shot lists of training ones (written.py)
    voices: tuple[str, ...] = TRAIN_VOICE_FAMILY  # espeak-ng training voices (one rendition of each question each)
    heldout_voice: str = UNSEEN_VOICE  # never trained on; monitored as the "unseen accent"
    speed_range: tuple[int, ...] = (145, 205)  # words/min drawn per rendition (uniform, seeded); () = default 175
    pitch_range: tuple[int, ...] = (30, 70)  # espeak-ng pitch drawn per rendition; () = default 50
    variants: tuple[str, ...] = ()  # espeak-ng voice variants drawn per rendition ("m3", "f2", "klatt"; "" = none)
    target_max_new_tokens: int = 32  # length cap of the backbone's greedy answers (qa targets)
    distill_weight: float = 0.0  # qa: + this x KL(backbone on the typed question || on speech) per response token
    align_weight: float = 0.0  # qa: + this x (1 - sequence cosine) of speech vs typed question, layers 1..L
    align_loss: Literal["cosine", "contrastive"] = "cosine"  # ... 1 - cosine, or InfoNCE over the batch's questions
    align_temperature: float = 0.1  # ... temperature of the contrastive alignment loss
    gen_batch_size: int = 16  # batch size of batched greedy generation (targets, monitoring)
    # -- SpecAugment-style masking of the cached encoder states of training clips (augment.py; 0 = off)
    time_masks: int = 0  # spans per clip replaced by the clip's mean frame
    time_mask_frames: int = 10  # max span width in encoder frames (20 ms each; capped at a fifth of the clip)
    channel_masks: int = 0  # channel bands per clip set to 0
    channel_mask_width: int = 27  # max band width in channels
    # -- optimisation
    steps: int = 400  # optimizer steps of this stage
    batch_size: int = 8  # clips per step
    lr: float = 1e-3  # peak learning rate of the adaptor (and of LoRA)
    llm_lr: float | None = None  # peak learning rate of the LLM weights (LoRA/full); None -> lr
    warmup_steps: int = 20  # linear warmup, then cosine decay to min_lr_ratio * peak
    min_lr_ratio: float = 0.1  # final lr as a fraction of the peak
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # max global gradient norm (0 = no clipping)
    lora_r: int = 8  # LoRA rank (seed paper: 8)
    lora_alpha: int = 4  # LoRA alpha (seed paper: 4, i.e. scaling 0.5)
    lora_dropout: float = 0.1  # LoRA dropout (seed paper: 0.1)
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")  # attention projections
    lora_scope: Literal["all", "speech"] = "all"  # where the LoRA acts: every position, or the speech positions
    #                                               only (text path = the frozen backbone; lsl_core.model.lora_scope)
    ctc_temperature: float = 20.0  # ctc: logits = temperature x cosine(frame, token embedding)
    ctc_norm_weight: float = 0.1  # ctc: weight of ((|frame| / mean |token embedding|) - 1)^2
    seed: int = 0  # question sample, renditions, data order, LoRA init and dropout
    # -- checkpoints / monitoring
    save_every: int = 100  # checkpoint every K steps (0 = only save_steps and the last step)
    save_steps: tuple[int, ...] = ()  # extra checkpoint steps (early ones, for the trajectory)
    eval_every: int = 0  # monitor every K steps (0 = at checkpoints only); also at step 0
    eval_max_new_tokens: int = 24  # answer length when monitoring agreement
    monitor_train_clips: int = 0  # also monitor this many seeded training clips as trained on (log rows *_train):
    #                               their gap to the held-out rows is what the stage memorised
    save_dtype: Literal["float16", "float32", "bfloat16"] = "float16"  # dtype of shipped weights
    autocast: Literal["auto", "bf16", "none"] = "auto"  # auto: bf16 only where the device computes bf16 natively
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> LSLError:
            return LSLError(f"train config field '{name}' {why} (got {getattr(self, name)!r}).")

        if not self.name or any(c in self.name for c in "/\\ "):
            raise bad("name", "must be a non-empty name without slashes or spaces")
        if self.objective not in OBJECTIVES:
            raise bad("objective", f"must be one of {OBJECTIVES}")
        if self.strategy not in TRAIN_STRATEGIES:
            raise bad("strategy", f"must be one of {TRAIN_STRATEGIES}")
        if self.objective == "ctc" and (self.strategy != "frozen" or not self.train_adaptor):
            raise bad("strategy", "must be 'frozen' with train_adaptor true for objective 'ctc' (no LLM pass)")
        if self.strategy == "frozen" and not self.train_adaptor:
            raise bad("train_adaptor", "must be true for strategy 'frozen' (nothing else would train)")
        if not self.train_adaptor and not self.init:
            raise bad("init", "is needed when train_adaptor is false (the adaptor to keep)")
        if self.encoder_window not in ("padded", "clip"):
            raise bad("encoder_window", "must be 'padded' or 'clip'")
        for k in ("steps", "batch_size", "target_max_new_tokens", "gen_batch_size", "downsample",
                  "lora_r", "eval_max_new_tokens"):
            if int(getattr(self, k)) <= 0:
                raise bad(k, "must be a positive integer")
        if self.adaptor_hidden is not None and int(self.adaptor_hidden) <= 0:
            raise bad("adaptor_hidden", "must be a positive integer or null")
        if self.vocab_sentences and self.objective == "qa":
            raise bad("vocab_sentences", "must be 0 for objective 'qa' (word sequences have no answer to distil)")
        if self.vocab_doses and self.objective == "qa":
            raise bad("vocab_doses", "must be empty for objective 'qa' (word sequences have no answer to distil)")
        if self.vocab_doses and (len(set(self.vocab_doses)) != len(self.vocab_doses)
                                 or min(int(d) for d in self.vocab_doses) <= 0):
            raise bad("vocab_doses", "must list distinct positive clip counts, e.g. [3, 10, 30]")
        for k in ("vocab_sentences", "written_questions"):
            if self.vocab_doses and getattr(self, k):
                raise bad(k, "must be 0 with vocab_doses (its text would speak the control words, which training never "
                          "speaks, and the dose words more often than their dose)")
        if int(self.vocab_dose_words) < 0:
            raise bad("vocab_dose_words", "must be a positive integer, or 0 for every new word")
        if self.vocab_control_words is not None and int(self.vocab_control_words) <= 0:
            raise bad("vocab_control_words", "must be a positive integer or null (as many as a dose group)")
        if int(self.vocab_dose_words) == 0 and self.vocab_doses and self.vocab_control_words is None:
            raise bad("vocab_dose_words", "can be 0 (every new word) only with vocab_control_words set")
        if self.align_loss not in ("cosine", "contrastive"):
            raise bad("align_loss", "must be cosine or contrastive")
        if not self.align_temperature > 0:
            raise bad("align_temperature", "must be a positive number")
        for k in ("distill_weight", "align_weight"):
            if not getattr(self, k) >= 0 or (getattr(self, k) and self.objective != "qa"):
                raise bad(k, "must be >= 0, and 0 unless the objective is 'qa' (the teacher reads the typed "
                          "question)")
        for k in ("adaptor_context", "n_questions", "n_val_questions", "vocab_sentences", "vocab_words",
                  "written_questions", "time_masks", "time_mask_frames", "channel_masks", "channel_mask_width",
                  "warmup_steps", "save_every", "eval_every", "monitor_train_clips", "seed"):
            if int(getattr(self, k)) < 0:
                raise bad(k, "must be >= 0")
        for k in _float_fields():  # NaN passes every `< 0` check and inf most `> 0` ones: both train garbage
            v = getattr(self, k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
                raise bad(k, "must be a finite number")
        if int(self.lora_alpha) <= 0:
            raise bad("lora_alpha", "must be a positive integer (LoRA scaling lora_alpha / lora_r; 0 trains nothing)")
        if not self.lr > 0 or (self.llm_lr is not None and not self.llm_lr > 0):
            raise bad("lr" if not self.lr > 0 else "llm_lr", "must be a positive number")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad("min_lr_ratio", "must be in [0, 1]")
        if not 0 <= self.lora_dropout < 1:
            raise bad("lora_dropout", "must be in [0, 1)")
        if self.lora_scope not in LORA_SCOPES:
            raise bad("lora_scope", f"must be one of {LORA_SCOPES}")
        if self.lora_scope != "all" and self.strategy != "lora":
            raise bad("lora_scope", "must be 'all' unless the strategy is 'lora' (it says where the LoRA acts)")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise bad("weight_decay" if self.weight_decay < 0 else "grad_clip", "must be >= 0")
        if not self.ctc_temperature > 0 or self.ctc_norm_weight < 0:
            raise bad("ctc_temperature" if not self.ctc_temperature > 0 else "ctc_norm_weight",
                      "must be positive (temperature) / non-negative (norm weight)")
        if not self.voices or len(set(self.voices)) != len(self.voices):
            raise bad("voices", "must list at least one voice, each once")
        base = lambda v: str(v).split("+")[0].strip().lower()  # noqa: E731 (espeak-ng ignores the case of a name)
        if self.heldout_voice and base(self.heldout_voice) in {base(v) for v in self.voices}:
            raise bad("heldout_voice", "must not be a training voice: it is the unseen accent")
        if base(UNSEEN_VOICE) in {base(v) for v in self.voices}:  # whatever voice is monitored as the held-out one
            raise bad("voices", f"must not hold {UNSEEN_VOICE} (in any spelling or with a variant): it is the "
                      "evaluation's unseen voice, never trained on")
        for k, lo, hi in (("speed_range", 80, 450), ("pitch_range", 0, 99)):
            r = getattr(self, k)
            if r and (len(r) != 2 or not lo <= r[0] <= r[1] <= hi):
                raise bad(k, f"must be () or [low, high] with {lo} <= low <= high <= {hi}")
        if any(not isinstance(v, str) or (v and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_\-]*", v))
               for v in self.variants):
            raise bad("variants", "must list espeak-ng variant names such as m3, f2 or klatt (or \"\" for none); "
                      "`espeak-ng --voices=variant` lists them")
        if any(int(s) <= 0 for s in self.save_steps):
            raise bad("save_steps", "must hold positive step numbers")
        if self.save_dtype not in ("float16", "float32", "bfloat16"):
            raise bad("save_dtype", "must be float16, float32 or bfloat16")
        if self.autocast not in ("auto", "bf16", "none"):
            raise bad("autocast", "must be auto, bf16 or none")

    # -- (de)serialisation
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LSLError(f"{source}: unknown train config field(s) {unknown}; known: {sorted(known)}.")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        hints = typing.get_type_hints(cls)
        for k, v in kw.items():
            want = _type_name(hints[k])
            if want and not _has_type(v, hints[k]):
                raise LSLError(f"{source}: train config field {k!r} must be {want}, got {v!r} "
                               f"({type(v).__name__}); write {want} there.")
        try:
            return cls(**kw)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, LSLError):
                raise
            raise LSLError(f"{source}: bad train config ({exc}).") from None

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        p = Path(path)
        if not p.is_file():
            raise LSLError(f"Train config {p} not found. Pass a JSON file such as configs/train/3_qa_lora.json.")
        try:
            data = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise LSLError(f"Train config {p} is not valid JSON ({exc}).") from None
        return cls.from_dict(data, str(p))

    def digest(self, ignore: tuple[str, ...] = ("device", "out")) -> str:
        """Identity of everything that changes the trained weights (resume refuses a different one)."""
        d = {k: v for k, v in self.to_dict().items() if k not in ignore}
        for k, default in LATER_FIELDS.items():  # added later: at their defaults they leave older digests as they were
            if d.get(k) == default:
                d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def checkpoint_steps(self) -> list[int]:
        """Steps (of this stage) that get a checkpoint: multiples of save_every, save_steps, the last step."""
        s = {int(x) for x in self.save_steps if int(x) <= self.steps} | {self.steps}
        if self.save_every:
            s |= set(range(self.save_every, self.steps + 1, self.save_every))
        return sorted(s)

    def eval_steps(self) -> list[int]:
        """Steps that log the monitor: 0, every checkpoint, and multiples of eval_every."""
        s = {0, *self.checkpoint_steps()}
        if self.eval_every:
            s |= set(range(self.eval_every, self.steps + 1, self.eval_every))
        return sorted(s)
