"""`python -m lsl_core {synth,analyze,evaluate,voicebench,train,bench,info,families}`: one entry point, one subcommand per module.

Each subcommand module exposes `register(subparsers)` adding its parser with `set_defaults(func=...)`.
User errors (LSLError) print one line and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module that registers it
_COMMANDS = {
    "synth": "lsl_core.data.synth",
    "analyze": "lsl_core.analysis_cli",
    "evaluate": "lsl_core.evaluate",
    "voicebench": "lsl_core.experiments.voicebench_run",
    "train": "lsl_core.experiments.train",
    "info": "lsl_core.cli_info",
    "families": "lsl_core.model.families.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lsl_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in _COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue  # not built yet in this checkout
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from lsl_core.errors import LSLError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LSLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
