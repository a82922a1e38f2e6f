"""`python -m lsl_core report <page>`: (re)write a results page under docs/results.

    checkpoints    re-rendered from evaluate's stored results (<results>/checkpoints_summary.*)
    interventions  re-rendered from table1's stored rows (<results>/table1_interventions.parquet + table1.json)
    alignment      re-rendered from analyze's parquet (+ its JSON meta)
    benchmarks     runs benchmarks/bench_*.py (BENCHMARKS) and writes their output

Nothing is recomputed for the first three: a page's format can change without a model run. The pages,
their paths and the commands that write them are listed in experiments.pages.PAGES.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from lsl_core.errors import LSLError
from lsl_core.experiments import analyze, evaluate, table1
from lsl_core.experiments.pages import PAGES, ROOT, page_header, provenance, write_page

# report benchmarks: each script with its arguments, in page order
BENCHMARKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("benchmarks/bench_model.py", ("--repeats", "5")),
    ("benchmarks/bench_analysis.py", ("--repeats", "5")),
    ("benchmarks/bench_interventions.py", ("--repeats", "5", "--new-tokens", "24")),
)


def benchmarks_page(runs: list[tuple[str, str]], meta: dict) -> str:
    """The benchmarks page: one section per script run (its command and its printed tables)."""
    lines = page_header(f"Benchmarks — {meta['machine']}", meta["command"], meta["code_version"])
    lines += ["Each section is the output of one run of the named script; ratios are measured side by side in "
              "that run (interleaved repeats, medians). Other jobs may share the machine, so absolute times are "
              "noisy: read the ratios.", ""]
    for cmd, out in runs:
        lines += [f"## `{cmd}`", "", out.strip(), ""]
    return "\n".join(lines)


def machine() -> str:
    """'N-core CPU' or the CUDA device name, for page titles."""
    import os

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{os.cpu_count()}-core CPU, torch {torch.__version__}"


def run_benchmarks(argv: list[str] | None, extra: dict[str, list[str]] | None = None) -> str:
    """Run every script of BENCHMARKS (arguments overridable per script) and return the page."""
    runs = []
    for script, args in BENCHMARKS:
        args = list((extra or {}).get(Path(script).stem, args))
        cmd = [sys.executable, script, *args]
        print(f"report benchmarks: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise LSLError(f"{script} failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}; "
                           "run it alone to see the whole error.")
        runs.append((shlex.join([script, *args]), proc.stdout))
    return benchmarks_page(runs, {**provenance(argv), "machine": machine()})


# =============================================================================== the command
def register(sub) -> None:
    p = sub.add_parser("report", help="(re)write a results page under docs/results",
                       description="Re-render a results page from the stored results of its command "
                                   "(checkpoints, interventions, alignment), or run the benchmarks and write "
                                   "their page. Pages: " + ", ".join(f"{p.name} ({p.path})" for p in PAGES.values()))
    p.add_argument("page", choices=list(PAGES), help="which page")
    p.add_argument("--results", type=Path, default=None,
                   help="stored results: a folder (checkpoints: assets/results; interventions: assets/results) or "
                        "the analyze parquet (alignment: assets/results/analysis.parquet)")
    p.add_argument("--name", default=None, help="file name prefix of the stored results (checkpoints / table1)")
    p.add_argument("--zoo", type=Path, default=None,
                   help="checkpoints: folder whose train_log.jsonl files give the training curves "
                        "(default: the evaluated checkpoints' folders)")
    p.add_argument("--markdown", type=Path, default=None, help="write the page here (default: its path in PAGES)")
    p.add_argument("--bench-args", action="append", default=[], metavar="SCRIPT=ARGS",
                   help="benchmarks: override one script's arguments, e.g. 'bench_model=--repeats 1 --skip-cold'")
    p.set_defaults(func=main)


# each re-rendered page's own stored results (what its shipped path holds): (--results default, --name default)
_STORED = {"checkpoints": ("assets/results", "checkpoints"), "interventions": ("assets/results", "table1"),
           "alignment": ("assets/results/analysis.parquet", None)}


def _other_results(args) -> bool:
    """Whether --results / --name point at results other than the ones the page's shipped path holds."""
    if args.page not in _STORED:
        return False
    results, name = _STORED[args.page]
    if args.results is not None and Path(args.results).expanduser().resolve() != (ROOT / results).resolve():
        return True
    return name is not None and args.name is not None and args.name != name  # (alignment has no --name)


def main(args) -> int:
    page = PAGES[args.page]
    if page.name != "benchmarks" and page.name not in _STORED:  # no stored results to re-render it from
        raise LSLError(f"The {page.name} page is not re-rendered from stored results; write it with its command: "
                       f"`{page.command}`.")
    out = args.markdown or ROOT / page.path
    argv = getattr(args, "argv", None)
    if page.name == "benchmarks":
        extra = {}
        for spec in args.bench_args:
            script, sep, rest = spec.partition("=")
            if not sep:
                raise LSLError(f"--bench-args wants SCRIPT=ARGS (e.g. bench_model=--repeats 1), got {spec!r}.")
            extra[script.strip()] = shlex.split(rest)
        text = run_benchmarks(argv, extra)
    else:
        results, name = args.results or ROOT / _STORED[page.name][0], args.name or _STORED[page.name][1]
        if page.name == "checkpoints":
            text = evaluate.render_stored(results, name, provenance(argv), args.zoo)
        elif page.name == "interventions":
            text = table1.render_stored(results, name, provenance(argv))
        else:
            text = analyze.render_stored(results, provenance(argv))
    if args.markdown is None and _other_results(args):  # (checked after rendering: missing results say so first)
        raise LSLError(f"These are not the results of the shipped page {page.path}; give --markdown PATH for the "
                       "page of these results (only the page's own stored results are written there by default).")
    write_page(out, text)
    print(f"wrote {out}", file=sys.stderr)
    return 0
