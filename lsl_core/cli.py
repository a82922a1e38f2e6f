"""`python -m lsl_core <command>`: one entry point, one subcommand per module, one error path.

    synth     espeak-ng sample sets (lsl_core.data.synth)
    analyze   alignment metrics of checkpoint(s) over a sample set; shards + --merge (experiments.analyze)
    evaluate  text vs speech scores, GAP and agreement per voice (experiments.evaluate)
    hearing   word recall of the speech path: words heard in training vs never heard (experiments.hearing)
    closed-vocab  the closed-vocabulary ceiling: answers when unknown words are removed (experiments.closed_vocab)
    self-cascade  the speech path's own transcript read by the text path (experiments.self_cascade)
    compare   two evaluated checkpoints on the same clips: paired differences (experiments.compare)
    table1    Table 1: speech answers under each intervention (experiments.table1)
    curriculum  agreement, cascade, alignment and GAP per shipped checkpoint, R² (experiments.curriculum)
    report    (re)write a results page under docs/results (experiments.report)
    voicebench  speech vs text scores on VoiceBench subsets (experiments.voicebench_run)
    train     adaptor (+ LoRA / full) training curriculum (experiments.train)
    average   weight average of checkpoints: SWA along a trajectory, soups (experiments.train.average)
    report-case  one clip's self-contained HTML case report (lsl_core.case_report)
    stability CKA stability across configurations (experiments.stability)
    info      device, cache, shipped checkpoints and sample sets (lsl_core.cli_info)
    families  the public model families and their capabilities (model.families.cli)

Each command module exposes `register(subparsers)` adding its parser with `set_defaults(func=...)`;
`func(args)` gets `args.argv` (the command line, for results headers). A command that runs a model takes
`--device` and `--threads` from `add_device_args`; `main` applies `--threads` before the command runs.
A user error (LSLError) prints one line `error: ...` and exits 2, without a traceback; anything else is a
bug and raises.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> module that registers it (the one list of commands)
COMMANDS = {
    "synth": "lsl_core.data.synth",
    "analyze": "lsl_core.experiments.analyze",
    "evaluate": "lsl_core.experiments.evaluate",
    "hearing": "lsl_core.experiments.hearing",
    "closed-vocab": "lsl_core.experiments.closed_vocab",
    "self-cascade": "lsl_core.experiments.self_cascade",
    "compare": "lsl_core.experiments.compare",
    "table1": "lsl_core.experiments.table1",
    "curriculum": "lsl_core.experiments.curriculum",
    "report": "lsl_core.experiments.report",
    "voicebench": "lsl_core.experiments.voicebench_run",
    "train": "lsl_core.experiments.train",
    "dose-test": "lsl_core.experiments.train.dose",
    "average": "lsl_core.experiments.train.average",
    "report-case": "lsl_core.case_report",
    "stability": "lsl_core.experiments.stability",
    "info": "lsl_core.cli_info",
    "families": "lsl_core.model.families.cli",
}


def add_device_args(p: argparse.ArgumentParser, *, device: str | None = None, threads: int = 0,
                    device_help: str = "cpu | cuda | cuda:1 (default: CUDA if available)") -> None:
    """Add `--device` and `--threads` (torch CPU threads, applied by `main`) to a command's parser."""
    p.add_argument("--device", default=device, help=device_help)
    p.add_argument("--threads", type=int, default=threads,
                   help=f"torch CPU threads (0 = torch default; default {threads})")


def apply_threads(args: argparse.Namespace) -> None:
    """torch.set_num_threads(args.threads) when a command has --threads and it is not 0; negative is a user error."""
    n = getattr(args, "threads", 0) or 0
    if n < 0:
        from lsl_core.errors import LSLError

        raise LSLError(f"--threads must be 0 (torch's default) or a positive count of CPU threads, got {n}.")
    if n:
        import torch

        torch.set_num_threads(n)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lsl_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for module in COMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from lsl_core.errors import LSLError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        apply_threads(args)
        return int(args.func(args) or 0)
    except LSLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
