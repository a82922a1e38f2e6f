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
bug and raises. Before a command runs, `main` checks the paths it will write (OUTPUTS: not a folder where a
file goes, not a file where a folder goes, under a writable folder) and its counts (MINIMUMS), so a bad
`--out` or `--n -1` is refused at once, not after minutes of work or as a silent slice.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

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


# command -> {argparse dest: "file" | "dir"}: the paths it writes, checked by `main` before it runs
OUTPUTS = {
    "synth": {"out": "dir"},
    "analyze": {"out": "file", "markdown": "file", "merge": "file"},
    "evaluate": {"out": "dir", "markdown": "file"},
    "hearing": {"out": "file"},
    "closed-vocab": {"out": "file"},
    "self-cascade": {"out": "file"},
    "table1": {"out": "dir", "markdown": "file", "csv": "file"},
    "curriculum": {"markdown": "file", "out": "file"},
    "report": {"markdown": "file"},
    "voicebench": {"out": "dir"},
    "train": {"out": "dir"},
    "dose-test": {"out": "dir"},
    "average": {"out": "dir"},
    "report-case": {"out": "file"},
    "stability": {"out": "file"},
    "families": {"out": "dir"},
}

# command -> {argparse dest: least value}: counts and sizes, checked by `main` before it runs (a negative
# --limit or --n would otherwise slice from the end; a zero answer length fails deep inside generation)
MINIMUMS = {
    "analyze": {"limit": 0},
    "stability": {"limit": 0, "tolerance": 0},
    "hearing": {"max_new_tokens": 1, "batch_size": 1, "examples": 0},
    "closed-vocab": {"max_new_tokens": 1, "batch_size": 1, "examples": 0},
    "self-cascade": {"max_new_tokens": 1, "repeat_tokens": 1, "batch_size": 1, "examples": 0},
    "table1": {"n": 1, "max_new_tokens": 1},
    "report-case": {"tokens": 1},
    "curriculum": {"silence_clips": 0},
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_output(path: str | Path, flag: str, kind: str = "file") -> None:
    """Refuse an output path that cannot be written (LSLError naming the flag): a folder where a file goes,
    a file where a folder goes, a path under a file, or under a folder this user cannot write. Creates nothing."""
    from lsl_core.errors import LSLError

    p = Path(path).expanduser()
    if kind == "file" and p.is_dir():
        raise LSLError(f"{flag} {p} is a folder; give a file path, e.g. {p / 'out'}{Path(str(path)).suffix}.")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise LSLError(f"{flag} {p} is a file, not a folder; give a folder (created if missing) or remove the file.")
    base = p if kind == "dir" else p.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise LSLError(f"{flag} {p}: {base} is a file, so nothing can be written under it; choose a path in a folder.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise LSLError(f"{flag} {p}: the folder {base} is not writable; choose a folder you can write to.")


def check_args(args: argparse.Namespace) -> None:
    """The OUTPUTS and MINIMUMS checks of args.command (LSLError on the first problem)."""
    from lsl_core.errors import LSLError

    for dest, least in MINIMUMS.get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value is not None and value < least:
            raise LSLError(f"{_flag(dest)} must be {'0 or more' if least == 0 else f'at least {least}'}, got {value}; "
                           f"pass a value >= {least} (`python -m lsl_core {args.command} --help`).")
    for dest, kind in OUTPUTS.get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value:
            check_output(value, _flag(dest), kind)


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
        check_args(args)
        return int(args.func(args) or 0)
    except LSLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
