"""IFEval (VoiceBench `ifeval`): does the answer follow every verifiable instruction of the prompt?

Per answer, for each instruction id of the row (`instruction_id_list`, with its `kwargs` entry):
    strict: the checker accepts the response as written (an empty response follows nothing);
    loose:  the checker accepts any of 8 variants: the response, without its first line, without
            its last line, without both, and each of those with every "*" removed.
Per subset (VoiceBench's four numbers, in %, and their mean as the headline):
    strict_prompt       share of answers that follow *all* their instructions, strictly
    strict_instruction  share of all instructions followed, strictly (pooled over answers)
    loose_prompt, loose_instruction   the same, loosely
    final = mean of the four
The checkers are in `checkers.py` (one function per instruction id); words/sentences in `text.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from lsl_core.errors import MetricInputError
from lsl_core.scoring.evaluator import ScoreItem, mean_pct
from lsl_core.scoring.ifeval.checkers import INSTRUCTIONS, check_instruction, instruction_args


def clean_response(response: str) -> str:
    """Drop turn tags some speech LLMs emit ("<1>" prefix, "<|user|>" suffix), as VoiceBench does."""
    r = str(response or "")
    if re.match(r"^<[123]>", r):
        r = r[3:].strip()
    if r.endswith("<|user|>"):
        r = r[: -len("<|user|>")].strip()
    return r


def loose_variants(response: str) -> list[str]:
    """The 8 variants the loose score accepts (response, -first line, -last line, -both; each without "*")."""
    lines = response.split("\n")
    base = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return base + [v.replace("*", "") for v in base]


def instruction_pairs(meta) -> list[tuple[str, dict]]:
    """(instruction id, checked arguments) pairs of a row (`instruction_id_list` and `kwargs`, the
    latter a list of objects or its JSON text); MetricInputError naming what is malformed."""
    ids, kwargs = meta.get("instruction_id_list"), meta.get("kwargs")
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs)
        except json.JSONDecodeError as exc:
            raise MetricInputError(f"IFEval `kwargs` is text but not JSON ({exc}).") from None
    if ids is None or kwargs is None:
        raise MetricInputError("IFEval scoring needs the row's `instruction_id_list` and `kwargs` columns.")
    for name, v in (("instruction_id_list", ids), ("kwargs", kwargs)):
        if isinstance(v, (str, bytes, Mapping)) or not hasattr(v, "__iter__"):
            raise MetricInputError(f"IFEval {name} must be a list (one entry per instruction), got {v!r}.")
    ids, kwargs = list(ids), list(kwargs)
    if len(ids) != len(kwargs):
        raise MetricInputError(f"IFEval row has {len(ids)} instruction ids but {len(kwargs)} kwargs entries; "
                               "they must pair up one to one.")
    for n, k in enumerate(kwargs, start=1):
        if k is not None and not isinstance(k, Mapping):
            raise MetricInputError(f"IFEval kwargs entry {n} is not an object (name: value), got {k!r}.")
    return [(str(i), instruction_args(str(i), dict(k or {}))) for i, k in zip(ids, kwargs)]


def follow_instructions(response: str, pairs: Sequence[tuple[str, dict]], loose: bool = False) -> list[bool]:
    """One bool per (instruction id, kwargs): followed strictly (or loosely)."""
    response = clean_response(response)
    variants = loose_variants(response) if loose else [response]
    return [any(check_instruction(i, v, k) for v in variants) for i, k in pairs]


def score_ifeval(answer: str, item: ScoreItem) -> dict:
    """One answer -> {n_instructions, strict_prompt, strict_followed, loose_prompt, loose_followed,
    strict_failed (ids not followed strictly, comma-separated)}."""
    pairs = instruction_pairs(item.meta)  # malformed rows fail here, before any response is read
    strict = follow_instructions(answer, pairs)
    loose = follow_instructions(answer, pairs, loose=True)
    return {"n_instructions": len(pairs), "strict_prompt": float(all(strict)), "strict_followed": sum(strict),
            "loose_prompt": float(all(loose)), "loose_followed": sum(loose),
            "strict_failed": ",".join(i for (i, _), ok in zip(pairs, strict) if not ok)}


def aggregate_ifeval(rows) -> dict[str, float]:
    """Per subset, in %: strict/loose x prompt/instruction and `final` (their mean, VoiceBench's score)."""
    n_instr = sum(int(r["n_instructions"]) for r in rows)
    out = {"n": float(len(rows)),
           "strict_prompt": mean_pct(rows, "strict_prompt"),
           "strict_instruction": 100.0 * sum(int(r["strict_followed"]) for r in rows) / n_instr if n_instr else float("nan"),
           "loose_prompt": mean_pct(rows, "loose_prompt"),
           "loose_instruction": 100.0 * sum(int(r["loose_followed"]) for r in rows) / n_instr if n_instr else float("nan")}
    out["final"] = sum(out[k] for k in ("strict_prompt", "strict_instruction", "loose_prompt",
                                        "loose_instruction")) / 4.0
    return out


__all__ = ["INSTRUCTIONS", "check_instruction", "follow_instructions", "instruction_pairs", "loose_variants",
           "clean_response", "score_ifeval", "aggregate_ifeval"]
