"""Where a scaproust round trip spends its time: timestamps inside both processes.

    .venv/bin/python bench/trace_rtt.py            # PAIR, 64 bytes, TCP, 3,000 round trips
    .venv/bin/python bench/trace_rtt.py --req      # REQ -> REP

A client and an echo, each in its own process pinned to its own core (as `make bench`),
record ``time.perf_counter_ns()`` (CLOCK_MONOTONIC, shared by both processes) at the points
below, by wrapping a few functions of this tree's scaproust; the medians of each step over
the round trips are printed. The wrappers cost about 0.2 µs each, so the steps add up to a
little more than an untraced round trip.

  send() called -> sendmsg starts      the caller's send path down to the kernel
  sendmsg                              the write, and the rest of the flush
  wire                                 sendmsg starts -> the peer's poll() returns
  poll returns -> recv() returns       reading, parsing, the machines, the queue
  recv() returns -> sendmsg starts     the echo's own send path
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

import scaproust as sp  # noqa: E402
from scaproust.core import caller_reader, pipe  # noqa: E402

MARKS: list[tuple[str, int]] = []
_now = time.perf_counter_ns


def _wrap(owner, name: str, before: str | None, after: str | None) -> None:
    original = getattr(owner, name)

    def traced(*args):
        if before:
            MARKS.append((before, _now()))
        result = original(*args)
        if after:
            MARKS.append((after, _now()))
        return result

    setattr(owner, name, traced)


_wrap(caller_reader._Poller, "readable", "poll_in", "poll_out")
_wrap(pipe.Pipe, "_flush", "flush_in", "flush_out")


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[core]})


def _by_round_trip(marks, first: str) -> list[dict]:
    """Split the marks into round trips (each starts at ``first``); first mark of each."""
    out, cur = [], {}
    for name, t in marks:
        if name == first and cur:
            out.append(cur)
            cur = {}
        cur.setdefault(name, t)
    out.append(cur)
    return out


def echo(args) -> None:
    _pin(1)
    with sp.Session() as session:
        sock = session.socket(sp.Rep if args.req else sp.Pair, recv_timeout=30)
        print(sock.bind("tcp://127.0.0.1:0").url, flush=True)
        for i in range(args.warmup + args.count):
            if i == args.warmup:
                MARKS.clear()
            MARKS.append(("recv_call", _now()))
            msg = sock.recv()
            MARKS.append(("recv_ret", _now()))
            sock.send(msg)
    with open(args.out, "w") as f:
        json.dump(MARKS, f)


def client(args) -> None:
    _pin(0)
    out = os.path.join(tempfile.mkdtemp(prefix="trace-rtt-"), "echo.json")
    cmd = [sys.executable, __file__, "--echo", "--out", out, "--count", str(args.count),
           "--warmup", str(args.warmup)] + (["--req"] if args.req else [])
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        with sp.Session() as session:
            sock = session.socket(sp.Req if args.req else sp.Pair, recv_timeout=30)
            sock.connect(child.stdout.readline().strip())
            msg = b"p" * 64
            for i in range(args.warmup + args.count):
                if i == args.warmup:
                    MARKS.clear()
                MARKS.append(("send_call", _now()))
                sock.send(msg)
                sock.recv()
                MARKS.append(("recv_ret", _now()))
        child.wait(30)
        with open(out) as f:
            far = json.load(f)
    finally:
        if child.poll() is None:
            child.kill()
    steps: dict[str, list[float]] = {}

    def add(name, start, end):
        steps.setdefault(name, []).append((end - start) / 1000)

    for c, e in zip(_by_round_trip(MARKS, "send_call"), _by_round_trip(far, "recv_call"),
                    strict=False):
        if len(c) < 6 or len(e) < 6:
            continue  # a side found its message without waiting: no poll() to time
        add("client: send() called -> sendmsg starts", c["send_call"], c["flush_in"])
        add("client: sendmsg (and the rest of the flush)", c["flush_in"], c["flush_out"])
        add("wire: client sendmsg starts -> echo poll() returns", c["flush_in"], e["poll_out"])
        add("echo: poll() returns -> recv() returns", e["poll_out"], e["recv_ret"])
        add("echo: recv() returns -> sendmsg starts", e["recv_ret"], e["flush_in"])
        add("echo: sendmsg (and the rest of the flush)", e["flush_in"], e["flush_out"])
        add("wire: echo sendmsg starts -> client poll() returns", e["flush_in"], c["poll_out"])
        add("client: poll() returns -> recv() returns", c["poll_out"], c["recv_ret"])
        add("round trip", c["send_call"], c["recv_ret"])
    kind = "REQ -> REP" if args.req else "PAIR"
    print(f"{kind} 64 B over TCP, {args.count} round trips, medians (µs):")
    for name, values in steps.items():
        print(f"  {statistics.median(values):7.1f}  {name}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--req", action="store_true", help="REQ -> REP instead of PAIR")
    p.add_argument("--count", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--echo", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo:
        echo(args)
    else:
        client(args)


if __name__ == "__main__":
    main()
