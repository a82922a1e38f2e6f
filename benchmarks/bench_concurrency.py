"""Shared demo server: N users pressing Regenerate at once on the real Streamlit app (embedded default, CPU).

Starts `streamlit run app.py` on 127.0.0.1 (a free port), then drives N sessions over Streamlit's own
websocket protocol (what a browser tab sends: one `rerun_script` with the page and the link's query
string). Each session opens a link to the Interventions page for its own sample with `iv=` set, so the
page regenerates (text, speech, cascade and the intervened answer) on load. Measured per round:

    concurrent   N sessions start together; time until the LAST session receives its answers
    serial       the same N kinds of request, one session after the other (what one-at-a-time serving
                 gives the last user); total time

Every round uses a condition of its own (angle:bottom1, angle:bottom2, ...; the same cost), so no answer
comes from a cache; the analyses (and the ASR transcripts the pages show) are warmed first, one session per
sample, so the rounds time regeneration, not analysis.
Each session checks that the answers it received are for its own sample's question. Prints one table:
time-to-last-answer for N = 1, 2, 4 concurrent and serial, the CPU seconds the server process used in each
round (less sensitive than wall time to other jobs on a shared machine), and the concurrency ratio
concurrent(N) / concurrent(1). Target: concurrent(4) <= 2 x concurrent(1). With --repeats R the concurrent
rounds run R times, interleaved over N (1, 2, 4, 1, 2, 4, ...), and the table shows medians.

    .venv/bin/python benchmarks/bench_concurrency.py [--sessions 1 2 4] [--new-tokens 24] [--repeats 1]

Bounded: at most 8 sessions, each waits at most --timeout seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MAX_SESSIONS = 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    log = open(log_path, "w")
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"streamlit did not start; see {log_path}")


class Session:
    """One browser tab, as Streamlit's websocket protocol sees it: open the page of a link, collect texts."""

    def __init__(self, port: int, query: dict, page: str = "Interventions") -> None:
        self.url = f"ws://127.0.0.1:{port}/_stcore/stream"
        self.query = urllib.parse.urlencode(query)
        self.page = page
        self.texts: list[str] = []
        self.done_at: float | None = None
        self.error: str | None = None

    def run(self, until: re.Pattern, timeout: float) -> None:
        """Send one rerun_script and read messages until a text matching `until` arrives (records the time)."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        from websockets.sync.client import connect

        try:
            with connect(self.url, subprotocols=["streamlit"], open_timeout=60, max_size=None) as ws:
                msg = BackMsg()
                msg.rerun_script.query_string = self.query
                msg.rerun_script.page_name = self.page
                ws.send(msg.SerializeToString())
                deadline = time.perf_counter() + timeout
                while time.perf_counter() < deadline:
                    raw = ws.recv(timeout=max(0.1, deadline - time.perf_counter()))
                    fm = ForwardMsg.FromString(raw)
                    kind = fm.WhichOneof("type")
                    if kind == "script_finished" and self.done_at is not None:
                        return  # the rest of the page (batch caption) has arrived
                    if kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                        el = fm.delta.new_element
                        ek = el.WhichOneof("type")
                        text = getattr(getattr(el, ek), "body", "") if ek in ("markdown", "alert") else ""
                        if text:
                            self.texts.append(text)
                            if self.done_at is None and until.search(text):
                                self.done_at = time.perf_counter()  # this session's answers are on its page
                if self.done_at is None:
                    self.error = f"no answer within {timeout:.0f} s"
        except Exception as exc:  # noqa: BLE001 - reported in the table
            self.error = f"{type(exc).__name__}: {exc}"

    def question(self) -> str | None:
        for t in self.texts:
            if t.startswith("**Question (text input):**"):
                return t.split("**", 2)[2].strip()
        return None

    def batch_size(self) -> int:
        for t in self.texts:
            m = re.search(r"one batch with (\d+) other", t)
            if m:
                return int(m.group(1)) + 1
        return 1


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_round(port: int, ids: list[str], questions: dict, k: int, tokens: int, concurrent: bool,
              timeout: float, pid: int) -> dict:
    """N sessions (one per sample id) regenerating angle:bottom{k}; concurrent or one after another."""
    until = re.compile(rf"^\*\*Angle·Bottom{k}\*\*$")  # the intervened answer's column title
    sessions = [Session(port, {"sample": sid, "iv": f"angle:bottom{k}", "tokens": tokens}) for sid in ids]
    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    if concurrent:
        threads = [threading.Thread(target=s.run, args=(until, timeout)) for s in sessions]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    else:
        for s in sessions:
            s.run(until, timeout)
    errors = [s.error for s in sessions if s.error]
    own = all(s.question() == questions[sid] for s, sid in zip(sessions, ids))
    last = max((s.done_at or float("nan")) for s in sessions) - t0
    return {"seconds": last, "cpu": cpu_seconds(pid) - cpu0, "errors": errors, "own_answers": own,
            "batch": max(s.batch_size() for s in sessions)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds one session may wait for its answers")
    ap.add_argument("--repeats", type=int, default=1, help="concurrent rounds per N (interleaved; medians)")
    args = ap.parse_args()
    if max(args.sessions) > MAX_SESSIONS or min(args.sessions) < 1:
        raise SystemExit(f"--sessions must be in 1..{MAX_SESSIONS}")

    from lsl_core.data.sets import load_sample_set

    mini = load_sample_set("sd-qa-mini")
    questions: dict[str, str] = {}
    for sid in mini.ids():  # one sample per question: every session's page must show its own question
        if mini.record(sid).question not in questions.values():
            questions[sid] = mini.record(sid).question
        if len(questions) == max(args.sessions):
            break
    ids = list(questions)
    port = _free_port()
    log = ROOT / ".pytest_cache" / "bench_concurrency.log"
    log.parent.mkdir(exist_ok=True)
    proc = start_server(port, log)
    try:
        t = time.perf_counter()
        for sid in ids:  # warm: model load, analysis of every sample (explorer page), one generation
            Session(port, {"sample": sid}, "Sample_Explorer").run(re.compile(r"^\*\*Per layer\*\*$"), args.timeout)
        Session(port, {"sample": ids[0], "iv": "angle:all", "tokens": args.new_tokens}).run(
            re.compile(r"^\*\*Angle·All\*\*$"), args.timeout)
        print(f"warm-up (model load, {len(ids)} analyses, 1 regeneration): {time.perf_counter() - t:.1f} s", flush=True)
        import statistics

        k, conc_runs, serial = 1, {n: [] for n in args.sessions}, {}
        for rep in range(max(1, args.repeats)):
            for n in args.sessions:
                r = run_round(port, ids[:n], questions, k, args.new_tokens, True, args.timeout, proc.pid)
                k += 1
                conc_runs[n].append(r)
                print(f"  N={n} concurrent (repeat {rep + 1}): {r['seconds']:.1f} s, server CPU {r['cpu']:.1f} s, "
                      f"largest batch {r['batch']}", flush=True)
        for n in args.sessions:
            serial[n] = run_round(port, ids[:n], questions, k, args.new_tokens, False, args.timeout, proc.pid)
            k += 1
            print(f"  N={n} serial: {serial[n]['seconds']:.1f} s, server CPU {serial[n]['cpu']:.1f} s", flush=True)
        rows = []
        for n in args.sessions:
            runs = conc_runs[n]
            med = {key: statistics.median(r[key] for r in runs) for key in ("seconds", "cpu")}
            rows.append((n, {**med, "batch": max(r["batch"] for r in runs),
                             "own_answers": all(r["own_answers"] for r in runs),
                             "errors": [e for r in runs for e in r["errors"]]}, serial[n]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    base = rows[0][1] if rows and rows[0][0] == 1 else {"seconds": float("nan"), "cpu": float("nan")}
    reps = f"median of {args.repeats} interleaved concurrent rounds; " if args.repeats > 1 else ""
    print(f"\n{reps}{args.new_tokens} new tokens per answer; each request = text, speech, cascade and "
          "angle:bottomK answers\n")
    print("| sessions N | concurrent: time to last answer | server CPU | largest batch | serial: time to last answer "
          "| serial server CPU | concurrent(N) / concurrent(1): wall, CPU | serial / concurrent | own answers |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, conc, ser in rows:
        ok = "yes" if conc["own_answers"] and ser["own_answers"] and not conc["errors"] and not ser["errors"] else \
            f"NO {conc['errors'] + ser['errors']}"
        print(f"| {n} | {conc['seconds']:.1f} s | {conc['cpu']:.1f} s | {conc['batch']} | {ser['seconds']:.1f} s | "
              f"{ser['cpu']:.1f} s | {conc['seconds'] / base['seconds']:.2f}x, {conc['cpu'] / base['cpu']:.2f}x | "
              f"{ser['seconds'] / conc['seconds']:.2f}x | {ok} |")
    four = [c for n, c, _ in rows if n == 4]
    if four:
        ratio, cpu_ratio = four[0]["seconds"] / base["seconds"], four[0]["cpu"] / base["cpu"]
        print(f"\nconcurrency ratio concurrent(4) / concurrent(1) = {ratio:.2f}x wall, {cpu_ratio:.2f}x server CPU "
              f"(target <= 2.00x): {'met' if ratio <= 2.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
