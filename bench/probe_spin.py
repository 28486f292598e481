"""What a receive's spin (the ``recv_spin`` option) gives and costs, at equal rates.

    .venv/bin/python bench/probe_spin.py              # two processes on two cores
    .venv/bin/python bench/probe_spin.py --threads    # both sides in one process

64-byte REQ/REP round trips, the client pacing them at each of ``--rates`` round trips a
second (0: as fast as they go), with ``recv_spin`` at its default and at 0 (sleep at
once), alternated round by round. For each: the median round trip, the rate reached and
the CPU of both sides per round trip (``getrusage``: every thread of both processes, the
I/O threads included). A spin that pays replaces a sleep and its wake-up with a few polls;
one that would not pays for itself once in many waits at most (core/caller_reader.py,
``_Poller._spin``): at equal rates, the CPU per round trip must not rise.

By default the client and the echo are two processes pinned to two cores, as ``make
bench`` places them. ``--threads``: both in one process, pinned to one core (``--spread``:
left unpinned), where the echo needs the interpreter lock the spinning client keeps taking.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

import scaproust as sp  # noqa: E402
from scaproust.core.options import SPECS  # noqa: E402

BODY = b"p" * 64
WARM_UP = 300
DEFAULT_SPIN = float(SPECS["recv_spin"].default)  # type: ignore[arg-type]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _echo(rep: sp.Socket, count: int) -> None:
    for _ in range(WARM_UP + count):
        rep.send(rep.recv())


def _client(req: sp.Socket, rate: float, count: int) -> tuple[float, float, list[float]]:
    """(seconds taken, CPU seconds of this process, round trips) of ``count`` paced ones."""
    for _ in range(WARM_UP):
        req.send(BODY)
        req.recv()
    period = 1 / rate if rate else 0.0
    now, samples = time.perf_counter, []
    cpu0, start = _cpu(), now()
    due = start
    for _ in range(count):
        if period:
            due += period
            left = due - now()
            if left > 0:
                time.sleep(left)
        t0 = now()
        req.send(BODY)
        assert req.recv() == BODY
        samples.append(now() - t0)
    return now() - start, _cpu() - cpu0, samples


def between_processes(spin: float, rate: float, count: int,
                      cores: tuple[int, int]) -> tuple[float, float, float]:
    """(median round trip µs, round trips a second, CPU µs of both processes a round
    trip) with the echo in a child process; each pinned to one of ``cores``."""
    url_r, url_w = os.pipe()
    cpu_r, cpu_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echo
        try:
            os.sched_setaffinity(0, {cores[1]})
            with sp.Session() as session:
                rep = session.socket(sp.Rep, recv_timeout=10, recv_spin=spin)
                os.write(url_w, rep.bind("tcp://127.0.0.1:0").url.encode())
                for _ in range(WARM_UP):
                    rep.send(rep.recv())
                cpu0 = _cpu()
                for _ in range(count):
                    rep.send(rep.recv())
                os.write(cpu_w, repr(_cpu() - cpu0).encode())
        finally:
            os._exit(0)
    affinity = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cores[0]})
        url = os.read(url_r, 200).decode()
        with sp.Session() as session:
            req = session.socket(sp.Req, recv_timeout=10, recv_spin=spin)
            req.connect(url)
            seconds, cpu, samples = _client(req, rate, count)
        echo_cpu = float(os.read(cpu_r, 100))
    finally:
        os.sched_setaffinity(0, affinity)
        os.waitpid(pid, 0)
        for fd in (url_r, url_w, cpu_r, cpu_w):
            os.close(fd)
    return statistics.median(samples) * 1e6, count / seconds, (cpu + echo_cpu) / count * 1e6


def in_threads(spin: float, rate: float, count: int,
               core: int | None) -> tuple[float, float, float]:
    """The same with the echo in a thread of this process, pinned to ``core`` (None: left
    where it is)."""
    affinity = os.sched_getaffinity(0)
    try:
        if core is not None:
            os.sched_setaffinity(0, {core})
        with sp.Session() as session:
            rep = session.socket(sp.Rep, recv_timeout=10, recv_spin=spin)
            req = session.socket(sp.Req, recv_timeout=10, recv_spin=spin)
            req.connect(rep.bind("tcp://127.0.0.1:0").url)
            echo = threading.Thread(target=_echo, args=(rep, count))
            echo.start()
            cpu0 = _cpu()
            seconds, _, samples = _client(req, rate, count)
            cpu = _cpu() - cpu0  # the whole process: both sides, warm-up excluded
            echo.join(10)
    finally:
        os.sched_setaffinity(0, affinity)
    return statistics.median(samples) * 1e6, count / seconds, cpu / count * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", action="store_true", help="both sides in one process")
    p.add_argument("--spread", action="store_true",
                   help="--threads: leave the process unpinned (default: one core)")
    p.add_argument("--rates", default="1000,5000,0",
                   help="round trips a second, comma-separated; 0 = as fast as they go")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count", type=int, default=3000)
    args = p.parse_args()
    if not hasattr(os, "sched_setaffinity"):
        sys.exit("this probe needs Linux (sched_setaffinity)")
    first, *_, last = sorted(os.sched_getaffinity(0))
    if not args.threads and first == last:
        sys.exit("two processes on two cores need two cores (or use --threads)")
    rates = [float(rate) for rate in args.rates.split(",")]
    results: dict[tuple[float, float], list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        for rate in rates:
            for spin in (DEFAULT_SPIN, 0.0):
                if args.threads:
                    run = in_threads(spin, rate, args.count, None if args.spread else first)
                else:
                    run = between_processes(spin, rate, args.count, (first, last))
                results.setdefault((rate, spin), []).append(run)
    print("rate asked   recv_spin   round trip (median)   rate reached   CPU a round trip")
    for (rate, spin), runs in results.items():
        rtt = statistics.median(r for r, _, _ in runs)
        reached = statistics.median(r for _, r, _ in runs)
        cpu = statistics.median(c for _, _, c in runs)
        asked = f"{rate:8.0f}/s" if rate else "  flat out"
        print(f"{asked}   {spin * 1e6:6.0f} µs   {rtt:13.1f} µs   {reached:9.0f}/s   "
              f"{cpu:10.1f} µs   (runs: {' '.join(f'{c:.0f}' for _, _, c in runs)})")


if __name__ == "__main__":
    main()
