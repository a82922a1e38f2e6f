"""`python -m lsl_core families {list,make-tiny}`: the family table, and tiny random checkpoints to try it on.

    python -m lsl_core families list
    python -m lsl_core families make-tiny --out /tmp/tiny-families          # all four, one folder each
    python -m lsl_core analyze --checkpoint /tmp/tiny-families/voxtral --samples sd-qa-mini --limit 3
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("families", help="public speech-LLM families: list them, build tiny test checkpoints",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fs = p.add_subparsers(dest="families_command", required=True)
    fs.add_parser("list", help="the family table: class, hub ids, frame rate, capabilities").set_defaults(func=run_list)
    mk = fs.add_parser("make-tiny", help="tiny random checkpoints (+ manifest.json) of every native family")
    mk.add_argument("--out", required=True, help="folder; each family goes to <out>/<family>/")
    mk.add_argument("--family", action="append", default=[], help="only this family (repeatable)")
    mk.add_argument("--seed", type=int, default=0, help="weight init seed")
    mk.set_defaults(func=run_make_tiny)


def run_list(args) -> int:
    from lsl_core.model.families import family_table

    for f in family_table():
        off = [f"{k} ({c.reason})" for k, c in f.capabilities.items() if not c]
        print(f"{f.name:15s} {f.hf_class}  model_type {'/'.join(f.model_types)}  {1000 * f.frame_seconds:.0f} ms/frame"
              f"  placeholder {f.audio_token}" + ("  [remote code]" if f.remote_code else ""))
        print(f"{'':15s} hub: {', '.join(f.hub_ids) or '-'}")
        if off:
            print(f"{'':15s} not supported: " + "; ".join(off))
    return 0


def run_make_tiny(args) -> int:
    from pathlib import Path

    from lsl_core.model.families.tiny import BUILDERS, make_tiny

    names = args.family or list(BUILDERS)
    for name in names:
        folder = make_tiny(name, Path(args.out) / name, args.seed)
        print(f"{name:15s} -> {folder}/manifest.json")
    return 0
