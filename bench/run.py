"""`make bench`: scaproust against pynng, pyzmq and a bare-socket ceiling, side by side.

    .venv/bin/python bench/run.py            # full, 3 interleaved rounds, under 8 minutes
    .venv/bin/python bench/run.py --quick    # 64 B round trips, 64 B and 1 MiB throughput
                                             # over TCP, 1,000 idle pipes: about a minute
    .venv/bin/python bench/run.py --threads  # the peer in a thread, not another process
    .venv/bin/python bench/run.py --only rr64_tcp,pp64_tcp --impls scaproust,bare

Contenders: scaproust with the compiled backend (and the ``transitions`` backend in the
64 B cases), pynng, pyzmq, and a bare-socket ceiling (plain Python sockets, 8-byte-size
frames, coalesced writes; see _impls.py). A contender that cannot run is a failure, never
a silent skip.

Cases: REQ/REP and PAIR round trips at 64 B over tcp, ipc and inproc; the REQ/REP round
trip with asyncio; PUSH->PULL throughput at 64 B, 1 KiB, 64 KiB and 1 MiB over tcp, ipc and
inproc; the REQ/REP round trip and PUSH->PULL at 64 B and 1 MiB over tls+tcp and ws, against
pynng only (pyzmq has neither transport: its CURVE encryption is not TLS, and its libzmq has
no WebSocket); REQ/REP with 8 contexts a side in flight, against pynng's contexts (pyzmq has
none: its equivalent is a DEALER/ROUTER pattern of its own); PUB -> 50 SUB fan-out; 10,000 idle pipes on one listener (see _workers.py
for how each is measured). Loopback only.

Method: every measurement of one contender runs in its own worker process (the scaproust
backend is chosen by SCAPROUST_FSM, read at import), whose peer runs in a child process
pinned to the other core (inproc: a thread, necessarily, the process pinned to one core
unless --spread). Rounds are interleaved: each round
runs every case once, in a rotated order, so that the noise of a shared machine falls on
all columns alike; the report gives the median over the rounds, the spread (min..max), and
the per-round ratios scaproust / peer (the two runs of one round ran minutes apart at
most). Message counts adapt after each run so that a run measures about 0.7 s; every
message is counted. Each worker is killed if it overruns; once the time budget is spent
no new worker starts (the report then says how many runs each row has).

Exit status: 1 if a case failed to run, else 0 (a missed target is information, not a
failure). Results go to bench/results/<date>.json (``-quick`` for --quick, ``-partial`` for
a run narrowed by --only or --impls, so that an A/B run never overwrites the day's full
one), and the report (bench/report.py) renders them.
"""

from __future__ import annotations

import argparse
import dataclasses
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
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import _impls  # noqa: E402  (needs the path above)
import _workers  # noqa: E402

# ---------------------------------------------------------------------------- contenders


@dataclass(frozen=True)
class Contender:
    key: str  # the name in --impls, the JSON and the report
    impl: str  # _impls.IMPLS key
    backend: str  # SCAPROUST_FSM, or ""
    label: str


SP = Contender("scaproust", "scaproust", "compiled", "scaproust")
SPT = Contender("transitions", "scaproust", "transitions", "scaproust (transitions)")
NNG = Contender("pynng", "pynng", "", "pynng")
ZMQ = Contender("pyzmq", "zmq", "", "pyzmq")
BARE = Contender("bare", "bare", "", "bare sockets")
CONTENDERS = [SP, SPT, NNG, ZMQ, BARE]
BY_KEY = {c.key: c for c in CONTENDERS}
PEERS = [SPT, NNG, ZMQ, BARE]  # what scaproust (compiled) is compared with

# Starting guesses of each contender's rate, so that the first round's counts are about
# right; later rounds scale the count by the time the previous run took.
RTT_US = {"scaproust": 150, "transitions": 250, "pynng": 150, "pyzmq": 100, "bare": 40}
MSG_RATE = {"scaproust": 300e3, "transitions": 70e3, "pynng": 25e3, "pyzmq": 1.5e6,
            "bare": 1.5e6}
BYTE_RATE = {"scaproust": 2e9, "transitions": 2e9, "pynng": 1.5e9, "pyzmq": 3e9, "bare": 3e9}
CTX_RATE = {"scaproust": 15e3, "transitions": 8e3, "pynng": 15e3}
FANOUT_RATE = {"scaproust": 5e3, "transitions": 2e3, "pynng": 2e3, "pyzmq": 50e3,
               "bare": 50e3}

# ---------------------------------------------------------------------------- measures

KiB, MiB = 1 << 10, 1 << 20


@dataclass
class Measure:
    id: str
    title: str
    kind: str  # rtt | artt | thr | ctx | fanout | idle
    transport: str
    size: int = 64
    protocol: str = ""  # reqrep | pair (round trips)
    contenders: tuple = (SP, NNG, ZMQ, BARE)
    max_runs: int = 0  # 0: one per round
    extra: dict = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return {"rtt": "rtt_median_us", "artt": "rtt_median_us",
                "fanout": "delivered_per_s", "idle": "per_pipe_bytes"}.get(
            self.kind, "msgs_per_s" if self.size < 64 * KiB else "mb_per_s")

    @property
    def unit(self) -> str:
        return {"rtt_median_us": "µs", "msgs_per_s": "msg/s", "mb_per_s": "MB/s",
                "delivered_per_s": "msg/s", "per_pipe_bytes": "B/pipe"}[self.metric]

    @property
    def higher_is_better(self) -> bool:
        return self.kind in ("thr", "ctx", "fanout")

    @property
    def same_process(self) -> bool:
        return self.transport == "inproc"


def size_name(size: int) -> str:
    return f"{size // MiB} MiB" if size >= MiB else f"{size // KiB} KiB" if size >= KiB \
        else f"{size} B"


def build_measures() -> list[Measure]:
    all5 = (SP, SPT, NNG, ZMQ, BARE)
    out = []
    for transport in ("tcp", "ipc", "inproc"):
        for proto, name in (("reqrep", "REQ/REP"), ("pair", "PAIR")):
            pid = "rr" if proto == "reqrep" else "pair"
            out.append(Measure(f"{pid}64_{transport}", f"{name} round trip 64 B, {transport}",
                               "rtt", transport, protocol=proto, contenders=all5))
    out.append(Measure("arr64_tcp", "REQ/REP round trip 64 B, asyncio, tcp", "artt", "tcp",
                       protocol="reqrep", contenders=all5))
    for transport in ("tcp", "ipc", "inproc"):
        for size in (64, KiB, 64 * KiB, MiB):
            tag = {64: "64", KiB: "1k", 64 * KiB: "64k", MiB: "1m"}[size]
            out.append(Measure(f"pp{tag}_{transport}",
                               f"PUSH->PULL {size_name(size)}, {transport}", "thr", transport,
                               size=size, contenders=all5 if size == 64 else (SP, NNG, ZMQ, BARE)))
    # tls+tcp and ws against pynng only: pyzmq has neither (its CURVE encryption is not
    # TLS, and ZeroMQ has no WebSocket transport in pyzmq's libzmq builds).
    for transport, name in (("tls", "tls+tcp"), ("ws", "ws")):
        out.append(Measure(f"rr64_{transport}", f"REQ/REP round trip 64 B, {name}", "rtt",
                           transport, protocol="reqrep", contenders=(SP, NNG)))
        for size, tag in ((64, "64"), (MiB, "1m")):
            out.append(Measure(f"pp{tag}_{transport}", f"PUSH->PULL {size_name(size)}, {name}",
                               "thr", transport, size=size, contenders=(SP, NNG)))
    out.append(Measure("ctx8_tcp", "REQ/REP 64 B, 8 contexts a side in flight, tcp", "ctx", "tcp",
                       protocol="reqrep", contenders=(SP, NNG)))
    out.append(Measure("fan64_tcp", "PUB -> 50 SUB 64 B, tcp", "fanout", "tcp",
                       contenders=all5, extra={"nsubs": 50}))
    out.append(Measure("idle_tcp", "10,000 idle pipes, tcp", "idle", "tcp",
                       contenders=(SP, NNG), max_runs=1, extra={"npipes": 10_000}))
    return out


MEASURES = build_measures()
QUICK_IDS = ["rr64_tcp", "pair64_tcp", "arr64_tcp", "pp64_tcp", "pp1m_tcp", "idle_tcp"]
QUICK_PIPES = 1000


@dataclass
class Case:
    measure: Measure
    contender: Contender
    count: int
    warmup: int
    runs: list = field(default_factory=list)
    errors: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.contender.label


def first_count(m: Measure, key: str, target_s: float) -> int:
    """The first round's message count for a run of about ``target_s`` seconds."""
    if m.kind in ("rtt", "artt"):
        return int(target_s * 1e6 / RTT_US[key])
    if m.kind == "thr":
        return int(target_s * min(MSG_RATE[key], BYTE_RATE[key] / m.size))
    if m.kind == "ctx":
        return int(target_s * CTX_RATE[key])
    if m.kind == "fanout":
        return int(target_s * FANOUT_RATE[key])
    return 1


# ---------------------------------------------------------------------------- parent


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        _workers.run_child(args.child, json.loads(args.params))
        return 0
    if args.worker:
        return worker_main(json.loads(args.params))
    return parent_main(args)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="the 64 B TCP round trips, 64 B and 1 MiB TCP throughput and 1,000 "
                        "idle pipes; 3 rounds of 0.25 s runs (about a minute)")
    p.add_argument("--smoke", action="store_true",
                   help="one round of tiny counts: checks that every path runs (tests)")
    p.add_argument("--threads", action="store_true",
                   help="the peer (receiver, echo, subscribers) in another thread of the "
                        "worker process instead of a pinned child process")
    p.add_argument("--spread", action="store_true",
                   help="leave a worker that runs both sides (inproc, --threads) unpinned, "
                        "its threads wherever the scheduler puts them; by default it is "
                        "pinned to one core, as each process of the other cases")
    p.add_argument("--reps", type=int, help="interleaved rounds (default 3)")
    p.add_argument("--target", type=float,
                   help="seconds one run should measure (default 0.7, quick 0.25)")
    p.add_argument("--budget", type=float,
                   help="seconds after which no new worker starts (default 430, quick 70)")
    p.add_argument("--only", help="comma-separated measure ids: "
                   + ", ".join(m.id for m in MEASURES))
    p.add_argument("--impls", help="comma-separated contenders: "
                   + ", ".join(c.key for c in CONTENDERS))
    p.add_argument("--pipes", type=int, help="idle pipes (default 10,000, quick 1,000)")
    p.add_argument("--json", metavar="PATH",
                   help="where to write the results (default bench/results/<date>.json,"
                        " <date>-quick.json for --quick, <date>-partial.json with --only or"
                        " --impls; --smoke writes only with --json)")
    # worker / child (internal, but usable by hand: see worker_cmd in the JSON)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--params", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def default_results_path(args) -> str:
    """bench/results/<date>.json for a full run. A quick or narrowed run gets a suffix of
    its own: report.py renders the newest full run, and a partial A/B run once overwrote
    the day's full results (2026-12-06)."""
    suffix = "-quick" if args.quick else "-partial" if args.only or args.impls else ""
    return os.path.join(HERE, "results", time.strftime("%Y-%m-%d") + suffix + ".json")


def build_cases(args) -> list[Case]:
    ids = args.only.split(",") if args.only else (QUICK_IDS if args.quick else None)
    known = {m.id for m in MEASURES}
    if ids and not set(ids) <= known:
        sys.exit(f"--only: unknown id(s) {sorted(set(ids) - known)}")
    keys = args.impls.split(",") if args.impls else None
    if keys and not set(keys) <= set(BY_KEY):
        sys.exit(f"--impls: unknown contender(s) {sorted(set(keys) - set(BY_KEY))}")
    cases = []
    for m in MEASURES:
        if ids and m.id not in ids:
            continue
        if m.kind == "idle":
            m.extra["npipes"] = args.pipes or (QUICK_PIPES if args.quick or args.smoke
                                               else 10_000)
            m.title = f"{m.extra['npipes']:,} idle pipes, tcp"
        for c in m.contenders:
            if keys and c.key not in keys:
                continue
            if args.smoke:
                count = 200 if m.kind in ("rtt", "artt", "thr", "ctx") else 50
                warmup = 5
            else:
                count = max(20, first_count(m, c.key, args.target))
                warmup = {"rtt": 200, "artt": 200, "ctx": 400,
                          "thr": 1000 if m.size <= KiB else 20,
                          "fanout": 0, "idle": 0}[m.kind]
            cases.append(Case(m, c, count, warmup))
    return cases


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the two sides of a case run: ``threads``, the peer in a thread of the worker
    (else a process of its own, pinned to the other core); ``spread``, a worker that runs
    both sides (inproc, or ``threads``) left unpinned, its threads wherever the scheduler
    puts them (else pinned to one core, as each process of a two-process case)."""

    threads: bool = False
    spread: bool = False


def worker_params(case: Case, placement: Placement) -> dict:
    m = case.measure
    return {"kind": m.kind, "impl": case.contender.impl, "transport": m.transport,
            "size": m.size, "protocol": m.protocol, "count": case.count,
            "warmup": case.warmup,
            # the idle dialer is a process of its own whatever the mode (its descriptors)
            "mode": "threads" if placement.threads and m.kind != "idle" else "procs",
            "spread": placement.spread, **m.extra}


def worker_env(case: Case) -> dict:
    env = dict(os.environ)
    env.pop("SCAPROUST_FSM", None)
    if case.contender.backend:
        env["SCAPROUST_FSM"] = case.contender.backend
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def repo_relative(text: str) -> str:
    """Paths in ``text`` relative to the repository (results are committed: they must not
    name this machine's directories)."""
    return text.replace(REPO + os.sep, "").replace(REPO, ".")


def worker_cmd(case: Case, placement: Placement) -> list[str]:
    return [sys.executable, os.path.abspath(__file__), "--worker", "--params",
            json.dumps(worker_params(case, placement))]


def shell_cmd(case: Case, placement: Placement) -> str:
    """The command that reruns this one worker by hand (from the repository root)."""
    env = f"SCAPROUST_FSM={case.contender.backend} " if case.contender.backend else ""
    return f"{env}PYTHONPATH=src " + shlex.join(worker_cmd(case, placement))


def run_worker(case: Case, placement: Placement, timeout: float) -> dict:
    # Own process group, so that a timeout stops the worker and the peer it started.
    proc = subprocess.Popen(worker_cmd(case, placement), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=worker_env(case), text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"killed after {timeout:.0f} s"}
    finally:
        try:  # a peer left behind by a failed worker
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
        "versions": {},
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
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "src"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        info["git"] = (rev + ("+dirty src" if dirty else "")) if rev else None
    except (OSError, subprocess.SubprocessError):
        info["git"] = None
    from importlib import metadata

    for dist in ("pynng", "pyzmq", "transitions"):
        try:
            info["versions"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info["versions"][dist] = None
    return info


def check_contenders(cases: list[Case]) -> list[str]:
    """A missing peer library is a failure, said before the run starts."""
    import importlib.util

    missing = []
    for mod, dist in (("pynng", "pynng"), ("zmq", "pyzmq")):
        if importlib.util.find_spec(mod) is None and any(c.contender.impl == mod for c in cases):
            missing.append(f"{dist} is not importable: pip install -e '.[dev]'")
    return missing


def parent_main(args) -> int:
    t_start = time.monotonic()
    reps = args.reps or (1 if args.smoke else 3)
    args.target = args.target or (0.25 if args.quick else 0.7)
    budget = args.budget or (60.0 if args.smoke else 70.0 if args.quick else 430.0)
    cases = build_cases(args)
    missing = check_contenders(cases)
    if missing:
        for line in missing:
            print("error: " + line, file=sys.stderr)
        return 1
    machine = machine_info()
    command = shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    placement = Placement(args.threads, args.spread)
    mode = ("threads" if args.threads else "procs") + (", spread" if args.spread else "")
    print(f"command: {command}   (cwd {os.getcwd()})")
    print(f"machine: nproc={machine['nproc']} (affinity {machine['affinity']}), "
          f"{machine['cpu']}, {machine['implementation']} {machine['python']}, "
          f"{machine['platform']}, git {machine['git']}, "
          f"load {' '.join(f'{x:.2f}' for x in machine['loadavg_start'])}")
    print(f"mode: {mode} ("
          + ("peer in another thread of the worker process" if args.threads else
             "peer in another process, each pinned to its own core")
          + "; inproc cases: both sides in one process, two threads"
          + (", unpinned" if args.spread else ", pinned to one core") + "), "
          f"{reps} interleaved rounds, runs of ~{args.target} s, budget {budget:.0f} s, "
          f"{len(cases)} cases", flush=True)

    notes: list[str] = []
    deadline = t_start + budget
    # IPC paths of every worker go under one directory, removed even if a worker was killed.
    tmp = tempfile.mkdtemp(prefix="scaproust-bench-")
    os.environ[_impls.TMP_ENV] = tmp
    # The cores the whole run may use, for each side to pin itself to one (_workers.pin):
    # a child inherits its worker's mask, already narrowed to one core.
    if hasattr(os, "sched_getaffinity"):
        os.environ[_workers.CPUS_ENV] = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    try:
        stopped_early = run_rounds(cases, reps, deadline, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if stopped_early:
        notes.append(f"time budget of {budget:.0f} s spent: stopped before all {reps} rounds "
                     "(see the runs column)")
    for c in cases:
        for r in c.runs:
            notes += [f"{c.measure.id} {c.label}: {n}" for n in r.get("notes", [])]
    notes = list(dict.fromkeys(notes))
    machine["loadavg_end"] = list(os.getloadavg())
    doc = build_doc(cases, args, reps, budget, notes, time.monotonic() - t_start, machine,
                    command, mode)

    import report

    print()
    print(report.render_text(doc))
    path = args.json or (None if args.smoke else default_results_path(args))
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            f.write(repo_relative(json.dumps(doc, indent=1, ensure_ascii=False)) + "\n")
        print(f"JSON written to {os.path.relpath(path)}")
    failed = [c for c in cases if c.errors or not c.runs]
    for c in failed:
        print(f"FAILED: {c.measure.id} {c.label}: {c.errors[-1] if c.errors else 'no run'}\n"
              f"  rerun: {shell_cmd(c, placement)}", file=sys.stderr)
    return 1 if failed else 0


def run_rounds(cases: list[Case], reps: int, deadline: float, args) -> bool:
    """Run every case once per round, rotating the order; True if the budget cut it short."""
    placement = Placement(args.threads, args.spread)
    for rep in range(reps):
        shift = rep % len(cases) if cases else 0
        for case in cases[shift:] + cases[:shift]:
            if case.measure.max_runs and rep >= case.measure.max_runs:
                continue
            now = time.monotonic()
            if now >= deadline:
                return True
            timeout = max(30.0, min(120.0, deadline + 30.0 - now))
            t0 = time.monotonic()
            result = run_worker(case, placement, timeout)
            took = time.monotonic() - t0
            shown = record(case, result, rep, args)
            print(f"  [{rep + 1}/{reps}] {case.measure.id:<12} {case.label:<24} {shown}  "
                  f"({took:.1f} s)", file=sys.stderr, flush=True)
    return False


def record(case: Case, result: dict, rep: int, args) -> str:
    """Keep one run's result (or its error), adapt the next count; the line to print."""
    m = case.measure
    if "error" in result:
        case.errors.append(result["error"])
        return "FAILED " + result["error"]
    backend = result.get("impl", {}).get("backend")
    if case.contender.backend and backend != case.contender.backend:
        case.errors.append(f"asked backend {case.contender.backend}, got {backend}")
        return "FAILED wrong backend"
    result["round"] = rep
    case.runs.append(result)
    if not args.smoke and m.kind in ("rtt", "artt", "thr", "ctx", "fanout") and result["seconds"] > 0:
        scale = min(4.0, max(0.25, args.target / result["seconds"]))
        case.count = max(20, int(case.count * scale))
    import report

    return f"{report.fmt(result[m.metric], m.unit)} {m.unit}"


# ---------------------------------------------------------------------------- summaries


def summarise(case: Case) -> dict:
    m = case.measure
    vals = [r[m.metric] for r in case.runs]
    out: dict = {"runs": len(vals), "failed": len(case.errors)}
    if not vals:
        return out
    out.update(median=statistics.median(vals), min=min(vals), max=max(vals))

    def med(key):
        xs = [r[key] for r in case.runs if r.get(key) is not None]
        return statistics.median(xs) if xs else None

    keys = {"rtt": ["rtt_p99_us", "cpu_us_per_msg"], "artt": ["rtt_p99_us", "cpu_us_per_msg"],
            "thr": ["msgs_per_s", "mb_per_s", "cpu_us_per_msg"],
            "ctx": ["msgs_per_s", "cpu_us_per_msg"],
            "fanout": ["delivery_fraction", "sent_per_s", "cpu_us_per_msg"],
            "idle": ["npipes", "connect_s", "gc_pause_ms", "idle_cpu_pct"]}[m.kind]
    for key in keys:
        out[key] = med(key)
    if m.kind == "idle":
        out["per_pipe_measure"] = case.runs[-1]["per_pipe_measure"]
    return out


def per_round(a: Case | None, b: Case | None) -> list:
    """metric(a) / metric(b) for every round in which both ran."""
    if a is None or b is None:
        return []
    m = a.measure
    bm = b.measure
    theirs = {r["round"]: r[bm.metric] for r in b.runs}
    return [r[m.metric] / theirs[r["round"]] for r in a.runs
            if theirs.get(r["round"])]


def ratio_summary(values: list) -> dict | None:
    if not values:
        return None
    return {"per_round": values, "median": statistics.median(values), "min": min(values),
            "max": max(values)}


def compute_ratios(cases: list[Case]) -> dict:
    """Per measure: scaproust (compiled) / each peer, round by round (metric over metric)."""
    by = {(c.measure.id, c.contender.key): c for c in cases}
    out = {}
    for m in MEASURES:
        ours = by.get((m.id, SP.key))
        row = {}
        for peer in PEERS:
            r = ratio_summary(per_round(ours, by.get((m.id, peer.key))))
            if r:
                row[peer.key] = r
        if row:
            out[m.id] = row
    # inproc against tcp, scaproust only: same contender, two measures, same round
    for a, b in (("pp64_inproc", "pp64_tcp"), ("rr64_inproc", "rr64_tcp"),
                 ("pair64_inproc", "pair64_tcp")):
        r = ratio_summary(per_round(by.get((a, SP.key)), by.get((b, SP.key))))
        if r:
            out[f"{a}/{b}"] = {"scaproust": r}
    return out


TARGETS = [
    # (measure or ratio key, peer, comparison, bound, what)
    ("rr64_tcp", "pynng", "<=", 0.7, "REQ/REP 64 B round trip, median"),
    ("rr64_tcp", "pyzmq", "<=", 1.0, "REQ/REP 64 B round trip, median"),
    ("pair64_tcp", "pynng", "<=", 0.7, "PAIR 64 B round trip, median"),
    ("pair64_tcp", "pyzmq", "<=", 1.0, "PAIR 64 B round trip, median"),
    ("arr64_tcp", "pyzmq", "<=", 1.0, "REQ/REP 64 B round trip, asyncio, median"),
    ("pp64_tcp", "pyzmq", ">=", 0.5, "PUSH->PULL 64 B"),
    ("pp64_tcp", "pynng", ">=", 15.0, "PUSH->PULL 64 B"),
    ("pp1k_tcp", "pyzmq", ">=", 0.6, "PUSH->PULL 1 KiB"),
    ("pp1m_tcp", "bare", ">=min", 0.8, "PUSH->PULL 1 MiB, every round"),
    ("fan64_tcp", "pynng", ">=", 10.0, "PUB -> 50 SUB 64 B, delivered msg/s"),
    ("pp64_inproc/pp64_tcp", "scaproust", ">=", 1.5, "PUSH->PULL 64 B, inproc / tcp"),
    ("rr64_inproc/rr64_tcp", "scaproust", "<=", 0.5, "REQ/REP round trip, inproc / tcp"),
    ("pair64_inproc/pair64_tcp", "scaproust", "<=", 0.5, "PAIR round trip, inproc / tcp"),
]
IDLE_TARGETS = [  # (summary key, bound, what, unit)
    ("per_pipe_bytes", 10_000, "Python heap per idle pipe", "B"),
    ("gc_pause_ms", 100.0, "full-GC pause with the pipes alive", "ms"),
    ("idle_cpu_pct", 1.0, "idle CPU (~0: under 1% of a core)", "%"),
]


def compute_targets(cases: list[Case], ratios: dict) -> list[dict]:
    out = []
    for key, peer, op, bound, what in TARGETS:
        r = ratios.get(key, {}).get(peer)
        value = None if r is None else (r["min"] if op == ">=min" else r["median"])
        holds = None if value is None else (value <= bound if op == "<=" else value >= bound)
        vs = "scaproust" if peer != "scaproust" else "scaproust inproc"
        against = BY_KEY[peer].label if peer != "scaproust" else "tcp"
        out.append({"target": what, "ratio": f"{vs} / {against}",
                    "requirement": f"{op.replace('min', '')} {bound:g}x"
                                   + (" (every round)" if op == ">=min" else ""),
                    "value": value, "per_round": r["per_round"] if r else [],
                    "holds": holds, "key": key, "peer": peer})
    idle = next((c for c in cases if c.measure.kind == "idle" and c.contender is SP), None)
    s = summarise(idle) if idle else {}
    for key, bound, what, unit in IDLE_TARGETS:
        value = s.get("median") if key == "per_pipe_bytes" else s.get(key)
        out.append({"target": f"{s.get('npipes') or 'n'} idle pipes: {what}",
                    "ratio": "scaproust", "requirement": f"<= {bound:g} {unit}",
                    "value": value, "per_round": [], "unit": unit,
                    "holds": None if value is None else value <= bound,
                    "key": "idle_tcp", "peer": key})
    return out


def build_doc(cases, args, reps, budget, notes, elapsed, machine, command, mode) -> dict:
    ratios = compute_ratios(cases)
    measures = []
    for m in MEASURES:
        if any(c.measure is m for c in cases):
            measures.append({"id": m.id, "title": m.title, "kind": m.kind,
                             "transport": m.transport, "size": m.size,
                             "protocol": m.protocol or None, "metric": m.metric, "unit": m.unit,
                             "higher_is_better": m.higher_is_better,
                             "same_process": m.same_process, **m.extra})
    return {
        "schema": 2, "date": time.strftime("%Y-%m-%d"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": command,
        "cwd": os.getcwd(), "mode": mode, "reps": reps, "quick": args.quick,
        "smoke": args.smoke, "target_s": args.target, "budget_s": budget,
        "elapsed_s": elapsed, "machine": machine, "notes": notes,
        "contenders": [{"key": c.key, "label": c.label, "impl": c.impl,
                        "backend": c.backend or None} for c in CONTENDERS],
        "measures": measures,
        "cases": [
            {"measure": c.measure.id, "contender": c.contender.key, "label": c.label,
             "impl": c.contender.impl, "backend": c.contender.backend or None,
             "summary": summarise(c), "runs": c.runs, "errors": c.errors,
             "worker_cmd": shell_cmd(c, Placement(args.threads, args.spread))}
            for c in cases
        ],
        "ratios": ratios,
        "targets": compute_targets(cases, ratios),
    }


# ---------------------------------------------------------------------------- worker


def worker_main(p: dict) -> int:
    result = _workers.run_worker(p, os.path.abspath(__file__))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
