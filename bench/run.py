"""`make bench`: scaproust against its peers, side by side, in one run.

    .venv/bin/python bench/run.py            # full: 5 interleaved repetitions, < 3 minutes
    .venv/bin/python bench/run.py --quick    # 3 repetitions, smaller counts, < 30 s
    .venv/bin/python bench/run.py --procs    # receiver / echo in another process
    .venv/bin/python bench/run.py --json bench/results/latest.json

Measures (TCP and IPC on loopback only; see ARCHITECTURE.md section 6):
  1. PUSH->PULL throughput, 64-byte messages (msg/s);
  2. PUSH->PULL throughput, 1 MiB messages (MB/s, 1 MB = 10^6 bytes);
  3. PAIR round-trip latency, 64 bytes (median and p99, µs);
  4. IPC variants of 1 and 3;
for scaproust with the compiled backend, scaproust with the `transitions` backend, pynng,
and pyzmq when it is importable (the bench never installs it).

Every measurement of one implementation runs in its own worker process (the scaproust
backend is chosen by SCAPROUST_FSM, read at import), started as

    python bench/run.py --worker push_pull --impl scaproust --backend transitions ...

which prints one JSON line. Repetitions are interleaved (each round runs every case once,
in a rotated order) so that the noise of a shared 2-core machine falls on all columns alike;
the table shows the median over the rounds and the spread (min..max). Message counts are
fixed per implementation (smaller for slower ones) and every message is counted; rates are
per second. Each worker is killed if it overruns, and the whole run stops starting new
workers once its time budget is spent (the table then says how many runs each row has).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SRC = os.path.join(REPO, "src")
if SRC not in sys.path:  # measure this tree's scaproust, whatever is installed
    sys.path.insert(0, SRC)

import _impls  # noqa: E402  (needs the path above)
import _workers  # noqa: E402

SP_C = ("scaproust", "compiled")
SP_T = ("scaproust", "transitions")
NNG = ("pynng", "")
ZMQ = ("zmq", "")
IMPL_ORDER = [SP_C, SP_T, NNG, ZMQ]
LABELS = {SP_C: "scaproust compiled", SP_T: "scaproust transitions", NNG: "pynng",
          ZMQ: "pyzmq"}


@dataclass
class Measure:
    id: str
    title: str
    kind: str  # push_pull | pair_rtt
    size: int
    transport: str
    counts: dict  # (impl, backend) -> messages (full run)
    warmup: int

    @property
    def metric(self) -> str:
        if self.kind == "pair_rtt":
            return "rtt_median_us"
        return "msgs_per_s" if self.size < 65536 else "mb_per_s"

    @property
    def unit(self) -> str:
        return {"rtt_median_us": "µs", "msgs_per_s": "msg/s", "mb_per_s": "MB/s"}[self.metric]

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "pair_rtt"


MiB = 1 << 20
MEASURES = [
    Measure("pp64_tcp", "PUSH->PULL 64 B, TCP", "push_pull", 64, "tcp",
            {SP_C: 200_000, SP_T: 60_000, NNG: 25_000, ZMQ: 1_000_000}, warmup=1000),
    Measure("pp1m_tcp", "PUSH->PULL 1 MiB, TCP", "push_pull", MiB, "tcp",
            {SP_C: 1000, SP_T: 1000, NNG: 1000, ZMQ: 2000}, warmup=10),
    Measure("rtt64_tcp", "PAIR round trip 64 B, TCP", "pair_rtt", 64, "tcp",
            {SP_C: 5000, SP_T: 5000, NNG: 5000, ZMQ: 5000}, warmup=200),
    Measure("pp64_ipc", "PUSH->PULL 64 B, IPC", "push_pull", 64, "ipc",
            {SP_C: 200_000, NNG: 25_000, ZMQ: 1_000_000}, warmup=1000),
    Measure("rtt64_ipc", "PAIR round trip 64 B, IPC", "pair_rtt", 64, "ipc",
            {SP_C: 5000, NNG: 5000, ZMQ: 5000}, warmup=200),
]


@dataclass
class Case:
    measure: Measure
    impl: tuple
    count: int
    warmup: int
    runs: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.impl]


# ---------------------------------------------------------------------------- parent


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    if args.worker:
        return worker_main(args)
    return parent_main(args)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="3 rounds, counts x 0.15, budget 28 s")
    p.add_argument("--procs", action="store_true",
                   help="receiver (PUSH->PULL) and echo (PAIR) in another process, "
                        "instead of another thread of the same process")
    p.add_argument("--reps", type=int, help="interleaved rounds (default 5, quick 3)")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every message count")
    p.add_argument("--budget", type=float,
                   help="seconds after which no new worker starts (default 170, quick 28)")
    p.add_argument("--only", help="comma-separated measure ids: "
                   + ", ".join(m.id for m in MEASURES))
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    # worker / child (internal, but usable by hand)
    p.add_argument("--worker", choices=["push_pull", "pair_rtt"], help=argparse.SUPPRESS)
    p.add_argument("--child", choices=["push_pull_recv", "pair_echo"], help=argparse.SUPPRESS)
    p.add_argument("--impl", default="scaproust", help=argparse.SUPPRESS)
    p.add_argument("--backend", default="compiled", help=argparse.SUPPRESS)
    p.add_argument("--transport", default="tcp", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=10_000, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=100, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def zmq_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("zmq") is not None


def build_cases(args, notes) -> list[Case]:
    only = set(args.only.split(",")) if args.only else None
    if only and not only <= {m.id for m in MEASURES}:
        sys.exit(f"--only: unknown id(s) {sorted(only - {m.id for m in MEASURES})}")
    have_zmq = zmq_available()
    if not have_zmq:
        notes.append("pyzmq is not importable here: its column is skipped "
                     "(the bench does not install it)")
    scale = args.scale * (0.15 if args.quick else 1.0)
    cases = []
    for m in MEASURES:
        if only and m.id not in only:
            continue
        for impl in IMPL_ORDER:
            if impl not in m.counts or (impl == ZMQ and not have_zmq):
                continue
            count = max(10, int(m.counts[impl] * scale))
            warmup = max(5, int(m.warmup * (0.2 if args.quick else 1.0)))
            cases.append(Case(m, impl, count, warmup))
    return cases


def worker_cmd(case: Case, procs: bool) -> list[str]:
    m = case.measure
    impl, backend = case.impl
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", m.kind, "--impl", impl,
           "--transport", m.transport, "--size", str(m.size), "--count", str(case.count),
           "--warmup", str(case.warmup)]
    if backend:
        cmd += ["--backend", backend]
    if procs:
        cmd.append("--procs")
    return cmd


def run_worker(case: Case, procs: bool, timeout: float) -> dict:
    env = dict(os.environ)
    env.pop("SCAPROUST_FSM", None)
    if case.impl[1]:
        env["SCAPROUST_FSM"] = case.impl[1]
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = worker_cmd(case, procs)
    # Own process group, so that a timeout stops the worker and any child it started.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"killed after {timeout:.0f} s"}
    finally:
        try:  # a child left behind by a failed worker
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(err.strip().splitlines()[-3:])
        return {"error": f"rc={proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def machine_info() -> dict:
    info = {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": None,
        "loadavg_start": list(os.getloadavg()),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=5).stdout.strip()
        info["git"] = rev or None
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    return info


def summarise(case: Case) -> dict:
    m = case.measure
    vals = [r[m.metric] for r in case.runs]
    out = {"runs": len(vals)}
    if not vals:
        return out
    out.update(median=statistics.median(vals), min=min(vals), max=max(vals))
    if m.kind == "pair_rtt":
        out["p99_us"] = statistics.median(r["rtt_p99_us"] for r in case.runs)
    else:
        out["msgs_per_s"] = statistics.median(r["msgs_per_s"] for r in case.runs)
        out["mb_per_s"] = statistics.median(r["mb_per_s"] for r in case.runs)
    return out


def speedup(m: Measure, ours: float | None, ref: float | None) -> float | None:
    """> 1 means `ours` is better than `ref` (faster, or lower latency)."""
    if not ours or not ref:
        return None
    return ours / ref if m.higher_is_better else ref / ours


def fmt_num(x: float | None, unit: str) -> str:
    if x is None:
        return "-"
    if unit == "msg/s":
        return f"{x / 1000:,.1f} k"
    if unit == "MB/s":
        return f"{x:,.0f}"
    return f"{x:,.1f}"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def parent_main(args) -> int:
    t_start = time.monotonic()
    reps = args.reps or (3 if args.quick else 5)
    budget = args.budget or (28.0 if args.quick else 170.0)
    notes: list[str] = []
    cases = build_cases(args, notes)
    machine = machine_info()
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    mode = "procs" if args.procs else "threads"
    print(f"command: {command}   (cwd {os.getcwd()})")
    print(f"machine: nproc={machine['nproc']} (affinity {machine['affinity']}), "
          f"{machine['cpu']}, {machine['implementation']} {machine['python']}, "
          f"{machine['platform']}, git {machine['git']}, "
          f"load {' '.join(f'{x:.2f}' for x in machine['loadavg_start'])}")
    print(f"mode: {mode} ({'receiver / echo in another process' if args.procs else 'sender and receiver / echo in two threads of one process'}), "
          f"{reps} interleaved rounds, budget {budget:.0f} s, {len(cases)} cases")
    sys.stdout.flush()

    deadline = t_start + budget
    # IPC paths of every worker go under one directory, removed even if a worker was killed.
    tmp = tempfile.mkdtemp(prefix="scaproust-bench-")
    os.environ[_impls.TMP_ENV] = tmp
    try:
        stopped_early = run_rounds(cases, reps, deadline, args.procs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if stopped_early:
        notes.append(f"time budget of {budget:.0f} s spent: stopped before all {reps} rounds "
                     "(see the runs column)")
    elapsed = time.monotonic() - t_start
    machine["loadavg_end"] = list(os.getloadavg())

    report = render(cases, args, reps, notes, elapsed, machine)
    print(report)

    if args.json:
        doc = {
            "command": command, "cwd": os.getcwd(), "mode": mode, "reps": reps,
            "quick": args.quick, "budget_s": budget, "elapsed_s": elapsed,
            "machine": machine, "notes": notes,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "results": [
                {"measure": c.measure.id, "title": c.measure.title, "kind": c.measure.kind,
                 "transport": c.measure.transport, "size": c.measure.size,
                 "impl": c.impl[0], "backend": c.impl[1] or None, "count": c.count,
                 "metric": c.measure.metric, "unit": c.measure.unit,
                 "summary": summarise(c), "runs": c.runs, "errors": c.errors,
                 "worker_cmd": shlex.join(worker_cmd(c, args.procs))}
                for c in cases
            ],
            "ratios": ratios(cases),
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"JSON written to {args.json}")
    failed = any(c.errors for c in cases)
    return 1 if failed else 0


def run_rounds(cases: list[Case], reps: int, deadline: float, procs: bool) -> bool:
    """Run every case once per round, rotating the order; False if all rounds ran."""
    for rep in range(reps):
        shift = rep % len(cases) if cases else 0
        for case in cases[shift:] + cases[:shift]:
            now = time.monotonic()
            if now >= deadline:
                return True
            timeout = max(5.0, min(90.0, deadline + 10.0 - now))
            t0 = time.monotonic()
            result = run_worker(case, procs, timeout)
            took = time.monotonic() - t0
            m = case.measure
            if "error" in result:
                case.errors.append(result["error"])
                shown = "FAILED " + result["error"]
            else:
                backend = result.get("impl", {}).get("backend")
                if case.impl[1] and backend != case.impl[1]:
                    case.errors.append(f"asked backend {case.impl[1]}, got {backend}")
                    shown = "FAILED wrong backend"
                else:
                    case.runs.append(result)
                    shown = f"{fmt_num(result[m.metric], m.unit)} {m.unit}"
            print(f"  [{rep + 1}/{reps}] {m.id:<10} {case.label:<22} {shown}  ({took:.1f} s)",
                  file=sys.stderr, flush=True)
    return False


def ratios(cases: list[Case]) -> dict:
    by = {(c.measure.id, c.impl): summarise(c).get("median") for c in cases}
    out = {}
    for m in MEASURES:
        row = {}
        for name, a, b in (("compiled_vs_pynng", SP_C, NNG), ("transitions_vs_pynng", SP_T, NNG),
                           ("compiled_vs_transitions", SP_C, SP_T), ("pyzmq_vs_pynng", ZMQ, NNG),
                           ("compiled_vs_pyzmq", SP_C, ZMQ)):
            r = speedup(m, by.get((m.id, a)), by.get((m.id, b)))
            if r is not None:
                row[name] = r
        if row:
            out[m.id] = row
    return out


def render(cases, args, reps, notes, elapsed, machine) -> str:
    lines = [""]
    mode = "receiver/echo in another process" if args.procs else "receiver/echo in another thread"
    header = (f"{'':2}{'implementation':<22} {'median':>11} {'min':>11} {'max':>11} "
              f"{'p99':>9} {'runs':>4} {'count':>9}  {'vs pynng':>8}")
    for m in MEASURES:
        rows = [c for c in cases if c.measure is m]
        if not rows:
            continue
        better = "higher" if m.higher_is_better else "lower"
        what = "median of the runs' medians; p99 = median of the runs' p99" \
            if m.kind == "pair_rtt" else "median of the runs"
        lines.append(f"{m.title} loopback, {mode}: {m.unit}, {better} is better ({what})")
        lines.append(header)
        ref = next((summarise(c).get("median") for c in rows if c.impl == NNG), None)
        for c in rows:
            s = summarise(c)
            if not s["runs"]:
                lines.append(f"  {c.label:<22} FAILED: {c.errors[-1] if c.errors else '?'}")
                continue
            p99 = fmt_num(s["p99_us"], m.unit) if "p99_us" in s else ""
            lines.append(
                f"  {c.label:<22} {fmt_num(s['median'], m.unit):>11} "
                f"{fmt_num(s['min'], m.unit):>11} {fmt_num(s['max'], m.unit):>11} "
                f"{p99:>9} {s['runs']:>4} {c.count:>9,}  {fmt_ratio(speedup(m, s['median'], ref)):>8}"
                + (f"  ({len(c.errors)} failed)" if c.errors else ""))
        lines.append("")
    table = ratios(cases)
    if table:
        lines.append("Ratios of medians (> 1 = the first is better: more msg/s or MB/s, "
                     "or a shorter round trip)")
        cols = [("compiled_vs_pynng", "compiled/pynng"),
                ("transitions_vs_pynng", "transitions/pynng"),
                ("compiled_vs_transitions", "compiled/transitions")]
        if any("pyzmq_vs_pynng" in r for r in table.values()):
            cols += [("pyzmq_vs_pynng", "pyzmq/pynng"), ("compiled_vs_pyzmq", "compiled/pyzmq")]
        lines.append(f"  {'measure':<28}" + "".join(f"{h:>22}" for _, h in cols))
        for m in MEASURES:
            if m.id in table:
                lines.append(f"  {m.title:<28}" + "".join(
                    f"{fmt_ratio(table[m.id].get(k)):>22}" for k, _ in cols))
        lines.append("")
    for n in notes:
        lines.append(f"note: {n}")
    lines.append(f"done in {elapsed:.0f} s; load average at the end "
                 + " ".join(f"{x:.2f}" for x in machine["loadavg_end"]))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- worker / child


def _select_backend(args) -> None:
    if args.impl == "scaproust":
        # Read by scaproust at import; the worker has not imported it yet.
        os.environ["SCAPROUST_FSM"] = args.backend


def worker_main(args) -> int:
    _select_backend(args)
    fn = {"push_pull": _workers.push_pull, "pair_rtt": _workers.pair_rtt}[args.worker]
    result = fn(args.impl, args.transport, args.size, args.count, args.warmup, args.procs,
                os.path.abspath(__file__))
    result.update(kind=args.worker, transport=args.transport, procs=args.procs)
    print(json.dumps(result), flush=True)
    return 0


def child_main(args) -> int:
    _select_backend(args)
    fn = {"push_pull_recv": _workers.child_push_pull_recv,
          "pair_echo": _workers.child_pair_echo}[args.child]
    fn(args.impl, args.transport, args.size, args.count, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
