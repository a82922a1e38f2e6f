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
file goes, not a file where a folder goes, under a writable folder), its counts (MINIMUMS, and --threads), its
--device (one this machine has), its results file-name prefixes (NAMES: no folder in them) and the kind of
the files it reads only at the end (INPUTS), so a bad `--out`, `--n -1`, `--device gpu`, `--name a/b` or
`--alignment a.json` is refused at once, not after minutes of work, as a silent slice, as a traceback or as
a file written outside --out. Ctrl-C prints one line and exits 130; a closed pipe (`info | head`) exits 1
quietly.
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


# command -> {argparse dest: "file" | "dir" | "parquet" | "state"}: the paths it writes, checked by `main` before it
# runs ("parquet": a file with its JSON beside it, <out>.json, so not itself a .json; "state": a folder the command
# replaces as a whole, train's resume state, so new, empty or a resume state already: its state.json inside)
OUTPUTS = {
    "synth": {"out": "dir"},
    "analyze": {"out": "parquet", "markdown": "file", "merge": "parquet"},
    "evaluate": {"out": "dir", "markdown": "file"},
    "hearing": {"out": "file"},
    "closed-vocab": {"out": "file"},
    "self-cascade": {"out": "file"},
    "table1": {"out": "dir", "markdown": "file", "csv": "file"},
    "curriculum": {"markdown": "file", "out": "file"},
    "report": {"markdown": "file"},
    "voicebench": {"out": "dir"},
    "train": {"out": "dir", "resume_dir": "state"},
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
    "dose-test": {"n_sentences": 1},
    "voicebench": {"seed": 0},  # numpy's bootstrap generator takes no negative seed (after every answer is made)
}

# command -> argparse dests that are a file-name prefix inside its --out (<out>/<name>_samples.parquet): checked by
# `main` (a folder in it, `a/b`, failed with a traceback after the whole run; '' and '..' name hidden or outside files)
NAMES = {
    "evaluate": ("name",),
    "table1": ("name",),
}


# command -> output dests where an empty value is the flag given without one (`analyze --merge`: the --out shards);
# anywhere else an empty path (an unset shell variable) is refused, not written as the current folder
EMPTY_MEANS_DEFAULT = {"analyze": {"merge"}}

# command -> {argparse dest: "parquet"}: files it reads only after its work (so a wrong kind was a traceback at the
# end), checked by `main` before it runs when they exist (a missing one is the command's own message)
INPUTS = {
    "voicebench": {"alignment": "parquet"},
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_output(path: str | Path, flag: str, kind: str = "file") -> None:
    """Refuse an output path that cannot be written (LSLError naming the flag): a folder where a file goes,
    a file where a folder goes, a path under a file, or under a folder this user cannot write, a "parquet"
    path ending in .json (its JSON beside it would overwrite it) and a "state" folder holding other files (it
    would be replaced). Creates nothing."""
    from lsl_core.errors import LSLError

    p = Path(path).expanduser()
    if kind == "parquet" and p.suffix.lower() == ".json":
        raise LSLError(f"{flag} {p} ends in .json, the name of the aggregates written beside the rows, which would "
                       f"replace them; give a Parquet path, e.g. {p.with_suffix('.parquet')}.")
    if kind in ("file", "parquet") and p.is_dir():
        raise LSLError(f"{flag} {p} is a folder; give a file path, e.g. {p / 'out'}{Path(str(path)).suffix}.")
    if kind in ("dir", "state") and p.exists() and not p.is_dir():
        raise LSLError(f"{flag} {p} is a file, not a folder; give a folder (created if missing) or remove the file.")
    if kind == "state" and p.is_dir() and any(p.iterdir()) and not (p / "state.json").is_file():
        raise LSLError(f"{flag} {p} holds files that are not a resume state, and the state replaces the whole folder; "
                       "give a new or empty folder, or one `train` saved its state in.")
    base = p if kind in ("dir", "state") else p.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise LSLError(f"{flag} {p}: {base} is a file, so nothing can be written under it; choose a path in a folder.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise LSLError(f"{flag} {p}: the folder {base} is not writable; choose a folder you can write to.")


def check_input(path: str | Path, flag: str, kind: str = "parquet") -> None:
    """Refuse an existing input file that is not of its kind (LSLError naming the flag): a "parquet" file starts
    and ends with the Parquet magic bytes PAR1. Reads 8 bytes."""
    from lsl_core.errors import LSLError

    p = Path(path).expanduser()
    if kind != "parquet" or not p.is_file():
        return
    with open(p, "rb") as fh:
        head = fh.read(4)
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 4))
        tail = fh.read(4)
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise LSLError(f"{flag} {p} is not a Parquet file; give the .parquet that `python -m lsl_core analyze --out "
                       "FILE` wrote (not the .json beside it).")


def check_args(args: argparse.Namespace) -> None:
    """The MINIMUMS, NAMES, OUTPUTS and INPUTS checks of args.command (LSLError on the first problem)."""
    from lsl_core.errors import LSLError

    for dest, least in MINIMUMS.get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value is not None and value < least:
            raise LSLError(f"{_flag(dest)} must be {'0 or more' if least == 0 else f'at least {least}'}, got {value}; "
                           f"pass a value >= {least} (`python -m lsl_core {args.command} --help`).")
    for dest in NAMES.get(args.command, ()):
        value = getattr(args, dest, None)
        if value is not None and (value.strip() in ("", ".", "..") or any(c in value for c in "/\\")):
            raise LSLError(f"{_flag(dest)} {value!r} is not a file-name prefix: give a plain name without a folder "
                           f"(e.g. {_flag(dest)} run1); the files go into --out.")
    for dest, kind in OUTPUTS.get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value is not None and not str(value).strip() and dest not in EMPTY_MEANS_DEFAULT.get(args.command, ()):
            raise LSLError(f"{_flag(dest)} is empty; give a {'folder' if kind == 'dir' else 'file'} path "
                           f"(`python -m lsl_core {args.command} --help`).")
        if value:
            check_output(value, _flag(dest), kind)
    for dest, kind in INPUTS.get(args.command, {}).items():
        value = getattr(args, dest, None)
        if value:
            check_input(value, _flag(dest), kind)


def add_device_args(p: argparse.ArgumentParser, *, device: str | None = None, threads: int = 0,
                    device_help: str = "cpu | cuda | cuda:1 (default: CUDA if available)") -> None:
    """Add `--device` and `--threads` (torch CPU threads, applied by `main`) to a command's parser."""
    p.add_argument("--device", default=device, help=device_help)
    p.add_argument("--threads", type=int, default=threads,
                   help=f"torch CPU threads (0 = torch default; default {threads})")


# --threads above this many per CPU core is refused: torch takes any count, and then libgomp aborts the process at the
# first parallel op ("Thread creation failed") or set_num_threads overflows (a typo like 100000 for 10)
MAX_THREADS_PER_CORE = 4


def apply_threads(args: argparse.Namespace) -> None:
    """torch.set_num_threads(args.threads) when a command has --threads and it is not 0; negative is a user error,
    and so is more than MAX_THREADS_PER_CORE per CPU core."""
    from lsl_core.errors import LSLError

    n = getattr(args, "threads", 0) or 0
    if n < 0:
        raise LSLError(f"--threads must be 0 (torch's default) or a positive count of CPU threads, got {n}.")
    cores = os.cpu_count() or 1
    if n > MAX_THREADS_PER_CORE * cores:
        raise LSLError(f"--threads {n} is more than {MAX_THREADS_PER_CORE} per CPU core ({cores} CPU cores here): pass "
                       f"at most {MAX_THREADS_PER_CORE * cores}, e.g. --threads {cores} (0 = torch's default).")
    if n:
        import torch

        torch.set_num_threads(n)


# commands that check --device themselves (train: its config's device, "auto" included)
OWN_DEVICE_CHECK = {"train"}


def check_device(args: argparse.Namespace) -> None:
    """Refuse a --device this torch or machine lacks (usable_device); torch itself fails with a traceback, after
    the command has read its data."""
    dev = getattr(args, "device", None)
    if dev is None or args.command in OWN_DEVICE_CHECK:
        return
    usable_device(dev, "--device")


def usable_device(spec: str, what: str):
    """spec -> torch.device, or an LSLError naming `what` (a flag or a config field): not a device name ('gpu'),
    CUDA without a usable GPU, cuda:N past the last GPU, mps where it is not available."""
    import torch

    from lsl_core.errors import LSLError

    try:
        d = torch.device(str(spec).strip())
    except (RuntimeError, TypeError, ValueError):
        raise LSLError(f"{what} {spec!r} is not a device; give cpu, cuda or cuda:N (e.g. cpu).") from None
    if d.type == "cpu":
        return d
    if d.type == "cuda":
        if not torch.cuda.is_available():
            why = "" if torch.version.cuda else f", torch {torch.__version__} is built without CUDA"
            raise LSLError(f"{what} {spec}: no CUDA GPU is usable here{why}; use cpu.")
        n = torch.cuda.device_count()
        if d.index is not None and d.index >= n:
            raise LSLError(f"{what} {spec}: this machine has {n} CUDA device(s), cuda:0 .. cuda:{n - 1}.")
        return d
    if d.type == "mps" and torch.backends.mps.is_available():
        return d
    raise LSLError(f"{what} {spec}: not usable here; give cpu, cuda or cuda:N (e.g. cpu).")


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
        check_device(args)
        check_args(args)
        return int(args.func(args) or 0)
    except LSLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (what was written before it stays written)
        print(f"\nerror: interrupted (Ctrl-C); `python -m lsl_core {args.command}` stopped before it finished.",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # `python -m lsl_core info | head`: the reader left; no traceback, nothing more to print
        if not _stdout_closed():
            raise  # another pipe or socket of the command's own that broke is a bug to see
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (the exit's flush would fail again)
        except (AttributeError, OSError, ValueError):  # a stdout without a file descriptor
            pass
        return 1


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone: its pipe polls POLLERR (a stdout without a descriptor: its flush fails)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            return True
        return False
    import select

    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(ev & select.POLLERR for _, ev in poller.poll(0))
