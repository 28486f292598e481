"""Where a scaproust round trip spends its time: timestamps inside both processes.

    .venv/bin/python bench/trace_rtt.py            # PAIR, 64 bytes, TCP, 3,000 round trips
    .venv/bin/python bench/trace_rtt.py --req      # REQ -> REP

A client and an echo, each in its own process pinned to its own core (as `make bench`),
record ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, shared by both processes) around their
``send()`` and ``recv()`` calls, at the write that hands a frame to the kernel and at the
return of the ``poll()`` a waiting receive sleeps in (the marks of ``bench/one_side.py
--critical``: the pipe's stream and the reader's poller have their classes swapped). The
medians of each step over the round trips are printed:

  client: send() called -> write         the caller's send path down to the kernel
  wire: client write -> echo poll returns the kernel: loopback delivery and the wake-up
  echo: poll returns -> recv() returns    reading, parsing, the machines, the queue
  echo: recv() returns -> write           the echo's own send path
  wire: echo write -> client poll returns
  client: poll returns -> recv() returns
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

from one_side import _Marks  # noqa: E402  (this directory is the script's: on sys.path)

import scaproust as sp  # noqa: E402

_now = time.perf_counter


def _cores() -> list[int]:
    """The two cores to pin the client and the echo to (one, if that is all there is)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return cores[:2]


def _pin(core: int | None) -> None:
    if core is not None:
        os.sched_setaffinity(0, {core})


def echo(args) -> None:
    _pin(args.core)
    marks = []
    with sp.Session() as session:
        sock = session.socket(sp.Rep if args.req else sp.Pair, recv_timeout=30)
        print(sock.bind("tcp://127.0.0.1:0").url, flush=True)
        _Marks.install(sock)
        for i in range(args.warmup + args.count):
            called = _now()
            msg = sock.recv()
            returned = _now()
            sock.send(msg)
            wrote, polled = _Marks.take()
            if i >= args.warmup:
                marks.append((called, polled, returned, wrote))
    with open(args.out, "w") as f:
        json.dump(marks, f)


def client(args) -> None:
    cores = _cores()
    _pin(cores[0] if cores else None)
    out = os.path.join(tempfile.mkdtemp(prefix="trace-rtt-"), "echo.json")
    cmd = [sys.executable, __file__, "--echo", "--out", out, "--count", str(args.count),
           "--warmup", str(args.warmup)] + (["--req"] if args.req else [])
    if cores:
        # The child must be told its core: it inherits this process's mask, one core.
        cmd += ["--core", str(cores[-1])]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    marks = []
    try:
        with sp.Session() as session:
            sock = session.socket(sp.Req if args.req else sp.Pair, recv_timeout=30)
            sock.connect(child.stdout.readline().strip())
            _Marks.install(sock)
            msg = b"p" * 64
            for i in range(args.warmup + args.count):
                called = _now()
                sock.send(msg)
                sock.recv()
                returned = _now()
                wrote, polled = _Marks.take()
                if i >= args.warmup:
                    marks.append((called, wrote, polled, returned))
        child.wait(30)
        with open(out) as f:
            far = json.load(f)
    finally:
        if child.poll() is None:
            child.kill()
    steps: dict[str, list[float]] = {}
    for c, e in zip(marks, far, strict=True):
        if not (all(c) and all(e)):
            continue  # a side found its message without waiting: no poll() to time
        c_called, c_wrote, c_polled, c_returned = c
        _, e_polled, e_returned, e_wrote = e
        for name, start, end in (
                ("client: send() called -> write", c_called, c_wrote),
                ("wire: client write -> echo poll returns", c_wrote, e_polled),
                ("echo: poll returns -> recv() returns", e_polled, e_returned),
                ("echo: recv() returns -> write", e_returned, e_wrote),
                ("wire: echo write -> client poll returns", e_wrote, c_polled),
                ("client: poll returns -> recv() returns", c_polled, c_returned),
                ("round trip", c_called, c_returned)):
            steps.setdefault(name, []).append((end - start) * 1e6)
    kind = "REQ -> REP" if args.req else "PAIR"
    where = f"cores {cores[0]} and {cores[-1]}" if len(cores) > 1 else "one core"
    print(f"{kind} 64 B over TCP, {where}, {len(steps.get('round trip', []))} of "
          f"{args.count} round trips traced, medians (µs):")
    for name, values in steps.items():
        print(f"  {statistics.median(values):7.1f}  {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--req", action="store_true", help="REQ -> REP instead of PAIR")
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--core", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo:
        echo(args)
    else:
        client(args)


if __name__ == "__main__":
    main()
