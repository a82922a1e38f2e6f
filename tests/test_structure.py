"""The codebase's shape, checked statically: no import cycles in lsl_core, lsl_core never imports streamlit,
generation has one path (only LSLM calls the backbone's generate), every `python -m lsl_core ...`
command the README and docs/ show parses with today's CLI, and the commands share --device / --threads."""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from pathlib import Path

import pytest

from lsl_core.cli import COMMANDS, apply_threads, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "lsl_core"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """lsl_core modules imported anywhere in a file (module level or inside functions), except under
    `if TYPE_CHECKING:` (annotations only, never executed)."""
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                   and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
                   for stmt in block.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lsl_core"):
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules}
            if node.module in modules:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
    return found


def test_lsl_core_has_no_import_cycles():
    """Lazy imports count too: a cycle hidden inside a function is still two modules that need each other.
    A package's __init__ re-exporting its own submodules is not a cycle."""
    modules = _modules()
    graph = {m: {t for t in _imports(p, modules) if not (p.name == "__init__.py" and t.startswith(m + "."))}
             for m, p in modules.items()}
    cycles = []
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_lsl_core_never_imports_streamlit():
    offenders = [str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")
                 if re.search(r"^\s*(import streamlit|from streamlit)", p.read_text(), re.M)]
    assert not offenders


def test_generation_has_one_path():
    """Only LSLM.generate_ids calls the backbone's generate(); everything else goes through it."""
    callers = [str(p.relative_to(ROOT)) for p in [*PKG.rglob("*.py"), *(ROOT / "ui").glob("*.py"),
                                                  *(ROOT / "pages").glob("*.py")]
               if ".llm.generate(" in p.read_text()]
    assert callers == ["lsl_core/model/lslm.py"]


# ---------------------------------------------------------------------------- documented commands
def _documented_commands() -> list[tuple[str, str]]:
    """(file, command) for every `python -m lsl_core...` command in README.md and docs/ (not docs/results:
    its headers are checked against PAGES in test_experiments)."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    out = []
    for f in files:
        text = f.read_text().replace("\\\n", " ")  # shell line continuations
        for m in re.finditer(r"-m\s+(lsl_core[\w.]*)((?:[ \t]+[^\s`|]+)*)", text):  # python -m / torchrun -m
            out.append((f.name, f"python -m {m.group(1)}{m.group(2)}".strip().rstrip(",.;:)")))
    return list(dict.fromkeys(out))


# README lines the lead has to change (reported): they name entry points that moved.
STALE_README: set[str] = set()  # README commands waiting for an update (none)


@pytest.mark.parametrize("where,command", [
    pytest.param(f, c, marks=pytest.mark.xfail(strict=True, reason="README line to update (moved entry point)"))
    if c in STALE_README else (f, c) for f, c in _documented_commands()])
def test_documented_command_parses(where, command):
    args = shlex.split(command.replace("…", "x").replace("...", "x"))
    assert args[:3] == ["python", "-m", "lsl_core"], f"{where}: `{command}` is not a `python -m lsl_core` command"
    rest = args[3:]
    if rest and rest[0].startswith("{"):  # a listing of commands: python -m lsl_core {a,b,...}
        assert set(rest[0].strip("{}").split(",")) <= set(COMMANDS), f"{where}: `{command}` names unknown commands"
        return
    if len(rest) == 1 and not rest[0].startswith("-"):  # prose naming a command: `python -m lsl_core train`
        assert rest[0] in COMMANDS, f"{where}: `{command}` names an unknown command"
        return
    try:
        build_parser().parse_args(rest)
    except SystemExit as exc:
        pytest.fail(f"{where}: `{command}` does not parse (exit {exc.code})")


# ---------------------------------------------------------------------------- shared command options
def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_that_takes_a_device_takes_threads_too():
    """--device and --threads come together from cli.add_device_args, so every model command has both."""
    options = {name: {o for a in p._actions for o in a.option_strings} for name, p in _subparsers().items()}
    with_device = sorted(n for n, opts in options.items() if "--device" in opts)
    assert {"evaluate", "analyze", "train", "table1", "voicebench"} <= set(with_device)
    assert [n for n in with_device if "--threads" not in options[n]] == []


def test_main_applies_threads_before_the_command_and_refuses_negative_ones(capsys):
    import torch

    before = torch.get_num_threads()
    try:
        apply_threads(argparse.Namespace(threads=1))
        assert torch.get_num_threads() == 1
        torch.set_num_threads(before)
        apply_threads(argparse.Namespace(threads=0))  # 0 = torch's default: untouched
        apply_threads(argparse.Namespace())  # a command without --threads: untouched
        assert torch.get_num_threads() == before
        # a negative count is one line on stderr and exit 2, before the command loads anything
        assert main(["table1", "--threads", "-2", "--checkpoint", "/nonexistent/manifest.json"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --threads must be 0") and "-2" in err[0]
    finally:
        torch.set_num_threads(before)


def test_output_and_count_checks_name_real_options():
    """cli.OUTPUTS / cli.MINIMUMS name argparse dests of their commands (a renamed flag would drop its check)."""
    from lsl_core.cli import MINIMUMS, OUTPUTS

    parsers = _subparsers()
    for table in (OUTPUTS, MINIMUMS):
        for command, dests in table.items():
            p = parsers[command]
            found = {a.dest for a in p._actions}
            found |= {a.dest for sp in p._actions if isinstance(sp, argparse._SubParsersAction)
                      for sub in sp.choices.values() for a in sub._actions}
            assert set(dests) <= found, (command, set(dests) - found)


CK = str(ROOT / "assets" / "checkpoints" / "qa-lora" / "lora-step2900")


@pytest.mark.parametrize("argv, message", [
    # an output that cannot be written: refused before the command runs, not after minutes of work
    (["analyze", "--checkpoint", CK, "--out", "{dir}"], "--out {dir} is a folder"),
    (["stability", "--checkpoint", CK, "--out", "{dir}"], "--out {dir} is a folder"),
    (["evaluate", "--checkpoint", CK, "--out", "{file}"], "--out {file} is a file, not a folder"),
    (["table1", "--checkpoint", CK, "--csv", "{file}/rows.csv"], "{file} is a file, so nothing can be written"),
    (["report", "checkpoints", "--markdown", "{dir}"], "--markdown {dir} is a folder"),
    (["report-case", "--checkpoint", CK, "--out", "{dir}"], "--out {dir} is a folder"),
    (["voicebench", "--data", "sd-qa-mini", "--as-subset", "sd-qa", "--out", "{file}"], "--out {file} is a file"),
    (["families", "make-tiny", "--out", "{file}"], "--out {file} is a file"),
    # a count below its least value: refused, not a slice from the end or a transformers traceback
    (["analyze", "--checkpoint", CK, "--limit", "-1", "--out", "{dir}/a.parquet"], "--limit must be 0 or more, got -1"),
    (["table1", "--checkpoint", CK, "--n", "-1"], "--n must be at least 1, got -1"),
    (["table1", "--checkpoint", CK, "--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    (["hearing", "--checkpoint", CK, "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["self-cascade", "--checkpoint", CK, "--results", "{dir}", "--samples", "sd-qa-mini", "--repeat-tokens", "0"],
     "--repeat-tokens must be at least 1, got 0"),
    (["report-case", "--checkpoint", CK, "--tokens", "0"], "--tokens must be at least 1, got 0"),
    # a typed held-out voice the samples lack would silently count as seen; a missing zoo is not an empty one
    (["evaluate", "--checkpoint", CK, "--samples", "sd-qa-mini", "--unseen-voice", "scotland", "--out", "{dir}/e"],
     "--unseen-voice 'scotland' is not a voice of these samples"),
    (["evaluate", "--zoo", "{dir}/nowhere", "--out", "{dir}/e"], "{dir}/nowhere does not exist"),
    (["analyze", "--zoo", "{file}", "--out", "{dir}/a.parquet"], "{file} is a file, not a folder"),
])
def test_bad_outputs_and_counts_are_one_error_before_the_command_runs(tmp_path, monkeypatch, capsys, argv, message):
    import lsl_core.model.loading as loading

    def no_load(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(loading, "load_checkpoint", no_load)
    (tmp_path / "f.txt").write_text("x")
    fill = {"dir": str(tmp_path), "file": str(tmp_path / "f.txt")}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(**fill) in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # nothing written
