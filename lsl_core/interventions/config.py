"""What an intervention is (data only) and its text grammar: `Intervention.parse("angle:bottom3@0")`.

    op:target[@layer][:metric][:pairing]   e.g. angle:bottom3@0, angle:all, length:bottom5@4:distance,
                                           calibrate:frames=1,2,3, calibrate:span@1, angle:random3,
                                           angle:all:shuffled, angle:bottom3:other
    a+b                                    a condition: several interventions composed in order

op is a name registered in `interventions.ops.OPERATIONS`; target picks the speech frames:
  "bottom" = the path frames i*_j of the k text tokens with the lowest path score at layer ℓ
  (highest distance for the distance metric), "all" = the path frames of every text token,
  "random" = the path frames of k text tokens drawn at random (the null of "bottom": does choosing
  the least-aligned tokens matter?), "frames" = explicit query-frame indices, "span" = every speech
  frame of the query.
pairing says which text states the edit writes (the nulls of the path's pairing, docs/controls.md):
  "path" = frame i*_j takes its own token t_j (the paper's interventions), "shuffled" = it takes the
  state of another token of the same transcript (the tokens re-paired at random, never to themselves:
  the same frames and the same text states, the alignment broken), "other" = the path, the tokens and
  the states come from ANOTHER question's transcript (the same kind of edit without this question's
  content; the caller supplies that question, `generate_side_by_side(donor_question=...)`).
The random draws are fixed per sample (seeded by its transcript tokens, Ts and ℓ).
`label()` is the canonical text (parse(label()) == self), `title()` the Table 1 display name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal, Sequence, Union

from lsl_core.errors import LSLError
from lsl_core.interventions.ops import OPERATIONS
from lsl_core.metrics.tokenwise import METRICS

Op = str  # a name in ops.OPERATIONS ('angle', 'length', 'calibrate', ...)
Target = Literal["bottom", "all", "random", "frames", "span"]
PathMetric = Literal["cosine", "distance"]
Pairing = Literal["path", "shuffled", "other"]
TARGETS: tuple[str, ...] = ("bottom", "all", "random", "frames", "span")
K_TARGETS: tuple[str, ...] = ("bottom", "random")  # the targets that read k
PATH_METRICS: tuple[str, ...] = METRICS  # the alignment path metrics of metrics.tokenwise
PAIRINGS: tuple[str, ...] = ("path", "shuffled", "other")
PAIRING_TITLES = {"shuffled": "shuffled pairing", "other": "other question"}  # title suffixes of the nulls
GRAMMAR = ("op:target[@layer][:metric][:pairing], e.g. angle:bottom3@0, angle:all, length:bottom5@4:distance, "
           "calibrate:frames=1,2,3, angle:random3, angle:all:shuffled, angle:bottom3:other")


# =============================================================================== the config
@dataclass(frozen=True)
class Intervention:
    """One edit of speech positions at layer ℓ during prefill (data only; see module docstring)."""

    op: Op = "angle"  # a name in ops.OPERATIONS: angle takes t's direction, length t's norm, calibrate span mean/std
    target: Target = "bottom"  # which frames: bottom-k / all / k random path frames, explicit frames, whole span
    k: int = 3  # number of text tokens for targets "bottom" (least aligned) and "random" (k = 0 edits nothing);
    # other targets do not read k, and it is set to 3 there so that parse(label()) == self
    frames: tuple[int, ...] = ()  # query-frame indices (0-based, inside the speech span) for target "frames"
    layer: int = 0  # ℓ: edit the input of decoder layer ℓ = hidden_states[ℓ]; 0 = the LLM input embeddings
    metric: PathMetric = "cosine"  # path metric choosing i*_j and the bottom-k scores
    pairing: Pairing = "path"  # which text states are written: the path's own, re-paired at random, another question's

    def __post_init__(self) -> None:
        if self.op not in OPERATIONS:
            raise LSLError(f"Intervention.op must be one of {tuple(OPERATIONS)} (interventions.ops.OPERATIONS), "
                           f"got {self.op!r}.")
        if self.target not in TARGETS:
            raise LSLError(f"Intervention.target must be one of {TARGETS}, got {self.target!r}.")
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 0:
            raise LSLError(f"Intervention.k must be a non-negative integer (3 for Bottom3), got {self.k!r}.")
        if isinstance(self.layer, bool) or not isinstance(self.layer, int) or self.layer < 0:
            raise LSLError(f"Intervention.layer must be a non-negative integer (0 = LLM input), got {self.layer!r}.")
        if self.metric not in PATH_METRICS:
            raise LSLError(f"Intervention.metric must be one of {PATH_METRICS}, got {self.metric!r}.")
        if self.pairing not in PAIRINGS:
            raise LSLError(f"Intervention.pairing must be one of {PAIRINGS}, got {self.pairing!r}.")
        if self.pairing == "shuffled" and OPERATIONS[self.op].inputs != "targets":
            raise LSLError(f"Intervention {self.op!r} uses span statistics, not one text state per frame, so the "
                           "'shuffled' pairing would change nothing; use pairing 'other' (another question's "
                           "statistics) as its null.")
        frames = tuple(self.frames)
        if any(isinstance(f, bool) or not isinstance(f, int) or f < 0 for f in frames):
            raise LSLError(f"Intervention.frames must be non-negative integer frame indices, got {self.frames!r}.")
        if self.target == "frames" and not frames:
            raise LSLError("Intervention.frames is empty; target 'frames' needs at least one frame index.")
        if self.target != "frames" and frames:
            raise LSLError(f"Intervention.frames is only used with target 'frames' (target is {self.target!r}).")
        object.__setattr__(self, "frames", tuple(sorted(set(frames))))
        if self.target not in K_TARGETS:  # k means nothing here: one value, so equal edits compare equal
            object.__setattr__(self, "k", 3)

    # ------------------------------------------------------------------ text round-trip
    @classmethod
    def parse(cls, spec: str) -> "Intervention":
        """'angle:bottom3@0' | 'angle:all' | 'length:bottom5@4:distance' | 'calibrate:frames=1,2,3' |
        'angle:random3' | 'angle:all:shuffled' | 'angle:bottom3:other' -> Intervention."""
        if isinstance(spec, Intervention):
            return spec
        text = str(spec).strip().lower().replace(" ", "")
        parts = text.split(":")
        if len(parts) < 2 or len(parts) > 4 or not parts[1]:
            raise LSLError(f"Cannot parse intervention {spec!r}; expected {GRAMMAR}.")
        op, target_part = parts[0], parts[1]
        given: dict[str, str] = {}  # field -> its text, each at most once

        def once(field: str, value: str) -> str:
            if field in given:
                raise LSLError(f"Intervention {spec!r}: the {field} is given twice ({given[field]!r} and {value!r}); "
                               f"give each once: {GRAMMAR}.")
            given[field] = value
            return value

        if "@" in target_part:
            target_part, layer_s = target_part.split("@", 1)
            once("layer", layer_s)
        for word in parts[2:]:  # each a path metric or a pairing, in any order
            if "@" in word:  # tolerate 'angle:all:distance@4'
                word, layer_s = word.split("@", 1)
                once("layer", layer_s)
            if word in PATH_METRICS:
                once("metric", word)
            elif word in PAIRINGS:
                once("pairing", word)
            else:
                raise LSLError(f"Intervention {spec!r}: {word!r} is neither a path metric {PATH_METRICS} nor a "
                               f"pairing {PAIRINGS}; expected {GRAMMAR}.")
        metric, pairing = given.get("metric", "cosine"), given.get("pairing", "path")
        layer = _parse_int(given["layer"], "layer", spec) if "layer" in given else 0
        if op not in OPERATIONS:
            raise LSLError(f"Intervention {spec!r}: op must be one of {tuple(OPERATIONS)}, got {op!r}; "
                           f"expected {GRAMMAR}.")
        k, frames = 3, ()
        m = re.fullmatch(r"(bottom|random)(\d*)", target_part)
        if m:
            target = m.group(1)
            k = int(m.group(2)) if m.group(2) else 3
        elif target_part in ("all", "span"):
            target = target_part
        elif target_part.startswith("frames="):
            target = "frames"
            items = [x for x in target_part[len("frames="):].split(",") if x]
            frames = tuple(_parse_int(x, "frame index", spec) for x in items)
        else:
            raise LSLError(
                f"Intervention {spec!r}: target must be bottomK, randomK, all, span or frames=i,j,..., "
                f"got {target_part!r}."
            )
        return cls(op=op, target=target, k=k, frames=frames, layer=layer, metric=metric, pairing=pairing)

    def label(self) -> str:
        """Canonical text form, parse(label()) == self: 'angle:bottom3', 'length:all@4:distance:shuffled'."""
        if self.target in ("bottom", "random"):
            tgt = f"{self.target}{self.k}"
        elif self.target == "frames":
            tgt = "frames=" + ",".join(str(f) for f in self.frames)
        else:
            tgt = self.target
        out = f"{self.op}:{tgt}"
        if self.layer:
            out += f"@{self.layer}"
        if self.metric != "cosine":
            out += f":{self.metric}"
        if self.pairing != "path":
            out += f":{self.pairing}"
        return out

    def title(self) -> str:
        """Display name in the seed paper's Table 1 style: 'Angle·Bottom3', 'Length·All @ℓ4 (distance)',
        'Angle·All (shuffled pairing)', 'Angle·Random3'."""
        if self.target in ("bottom", "random"):
            tgt = f"{self.target.capitalize()}{self.k}"
        elif self.target == "frames":
            tgt = "Frames[" + ",".join(str(f) for f in self.frames) + "]"
        else:
            tgt = self.target.capitalize()
        out = f"{OPERATIONS[self.op].title}·{tgt}"
        if self.layer:
            out += f" @ℓ{self.layer}"
        notes = [self.metric] if self.metric != "cosine" else []
        notes += [PAIRING_TITLES[self.pairing]] if self.pairing != "path" else []
        return out + (f" ({', '.join(notes)})" if notes else "")


def _parse_int(s: str, what: str, spec: str) -> int:
    if not re.fullmatch(r"\d+", s or ""):
        raise LSLError(f"Intervention {spec!r}: {what} must be a non-negative integer, got {s!r}; expected {GRAMMAR}.")
    return int(s)


# A condition is one intervention or several composed in order (label 'a+b').
Condition = Union[Intervention, str, Sequence[Union[Intervention, str]]]


def parse_condition(cond: Condition) -> tuple[Intervention, ...]:
    """'angle:bottom3+length:all' / Intervention / [Intervention | str, ...] -> interventions in order."""
    if isinstance(cond, Intervention):
        return (cond,)
    if isinstance(cond, str):
        parts = [p for p in cond.split("+") if p.strip()]
        if not parts:
            raise LSLError(f"Empty intervention condition {cond!r}; expected {GRAMMAR} (join several with '+').")
        return tuple(Intervention.parse(p) for p in parts)
    out = tuple(iv for c in cond for iv in parse_condition(c))
    if not out:
        raise LSLError("An intervention condition holds no intervention.")
    return out


def condition_label(cond: Condition) -> str:
    """Canonical text of a condition: labels joined by '+'."""
    return "+".join(iv.label() for iv in parse_condition(cond))


def condition_title(cond: Condition) -> str:
    """Display name of a condition: titles joined by ' + '."""
    return " + ".join(iv.title() for iv in parse_condition(cond))


# =============================================================================== the nulls
ORIGINAL = "original"  # the condition label of the unedited speech answer (reserved; no intervention)
# What each of a condition's nulls holds fixed and breaks (docs/controls.md).
NULL_TESTS = {
    "random": "least-aligned tokens vs random ones",
    "shuffled": "each frame's own token vs another token of the question",
    "other": "this question's transcript vs another question's",
}


def intervention_nulls(condition: Condition) -> list[tuple[str, str]]:
    """The null conditions of one intervention on the path pairing: [(null label, what it tests)].

    X:bottomK -> X:randomK (which tokens); X:all / X:bottomK with a per-frame op -> X:…:shuffled (which
    token each frame takes); every target -> X:…:other (whose content). Composed conditions and the nulls
    themselves have none.
    """
    ivs = parse_condition(condition)
    if len(ivs) != 1 or ivs[0].pairing != "path" or ivs[0].target == "random":
        return []
    iv = ivs[0]
    out = []
    if iv.target == "bottom":
        out.append((replace(iv, target="random").label(), NULL_TESTS["random"]))
    if OPERATIONS[iv.op].inputs == "targets":
        out.append((replace(iv, pairing="shuffled").label(), NULL_TESTS["shuffled"]))
    out.append((replace(iv, pairing="other").label(), NULL_TESTS["other"]))
    return out


def null_kind(condition: Condition) -> str | None:
    """Which null a condition is (a key of NULL_TESTS: "random" tokens, "shuffled" or "other" pairing), None for
    the original, an intervention on the path pairing and composed conditions."""
    if condition == ORIGINAL:
        return None
    ivs = parse_condition(condition)
    if len(ivs) != 1:
        return None
    return "random" if ivs[0].target == "random" else (ivs[0].pairing if ivs[0].pairing != "path" else None)


def is_null(condition: Condition) -> bool:
    """Whether a condition is a null intervention (random tokens or a pairing other than the path's); the
    original and composed conditions are not."""
    return null_kind(condition) is not None
