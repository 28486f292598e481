"""Where an in-process round trip's time goes, step by step.

    .venv/bin/python bench/probe_steps.py [--rounds 3] [--count 10000]

``make bench`` runs its in-process round trips as two threads of one process pinned to one
core. This probe times each step of scaproust's 64-byte PAIR and REQ/REP round trips over
``inproc://`` (medians of ``--count`` round trips, then the median of ``--rounds`` runs):

- ``one thread``: the client's send, the server's receive and reply, the client's receive,
  all in this thread, nothing to wait for. An in-process send delivers in the sender's
  thread (core/memory_pipe.py): its time includes the receiving socket's work up to the
  message in its queue, shown apart as ``delivery`` (``Loop.run_end_of_batch`` inside the
  send, timed through a wrapper that adds its own call);
- ``two threads``: the server echoes in a thread of its own, as in the bench. From the
  client's send to the server's receive returning (``to server``: the send and its
  delivery, the wake-up of the sleeping server, the switch, the end of its receive); the
  server's reply (``server send``); from there to the client's receive returning (``to
  client``: the server's next receive up to its sleep, the switch back, and the rest of the
  client's send and its receive). ``slept %``: the share of client receives that waited,
  their reply not there yet when the send returned: the server ran only once the client
  slept, a wake-up the other way. The steps are measured between the same events either
  way, so their medians add up to about the round trip's.

The difference between the two ways is what handing the message to another thread costs:
two hand-offs a round trip, each a wake-up, a switch and the sleep and wake machinery of
the channel (core/channel.py, core/condition.py), against the 2 µs a hand-off of two
threads that do nothing else (``bench/probe_wake.py floor``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
sys.path.insert(0, HERE)  # probe_wake, for its sockets

from probe_wake import _connected  # noqa: E402

import scaproust as sp  # noqa: E402
from scaproust.reactor.loop import Loop  # noqa: E402

KINDS = ("pair", "reqrep")
WARM_UP = 500
BODY = b"p" * 64
#: A client receive longer than this (µs) waited for its reply.
SLEPT_US = 5.0

ONE_THREAD = ("client send", "delivery", "server recv", "server send", "client recv", "round trip")
TWO_THREADS = ("to server", "server send", "to client", "round trip", "slept %")


def _median_us(values: list[float]) -> float:
    return statistics.median(values) * 1e6


def one_thread(kind: str, count: int) -> dict[str, float]:
    """Median µs of each step (``ONE_THREAD``) of ``count`` round trips in this thread."""
    deliveries: list[float] = []
    original = Loop.run_end_of_batch
    now = time.perf_counter

    def timed(loop: Loop) -> None:
        t0 = now()
        original(loop)
        deliveries.append(now() - t0)

    steps: list[list[float]] = [[] for _ in range(4)]
    marks: list[int] = []
    with sp.Session() as session:
        server, client = _connected(session, kind, "inproc://probe-steps-one")
        # A send that follows no wait is taken for one of a burst and left to the I/O
        # thread (Channel.put, DIRECT_SPACING): each is marked as after a quiet spell, so
        # that it goes at once in this thread, as a send between two threads does.
        quiet = float("-inf")
        Loop.run_end_of_batch = timed  # type: ignore[method-assign,assignment]
        try:
            for i in range(WARM_UP + count):
                t0 = now()
                client._channel.last_put = quiet
                marks.append(len(deliveries))
                client.send(BODY)
                t1 = now()
                request = server.recv()
                t2 = now()
                server._channel.last_put = quiet
                server.send(request)
                t3 = now()
                reply = client.recv()
                t4 = now()
                assert request == reply == BODY, (request, reply)
                if i >= WARM_UP:
                    for step, (a, b) in zip(steps, ((t0, t1), (t1, t2), (t2, t3), (t3, t4)), strict=True):
                        step.append(b - a)
        finally:
            Loop.run_end_of_batch = original  # type: ignore[method-assign,assignment]
    # The client send's own delivery: the first run_end_of_batch after its mark (release()
    # may run another one, with nothing left to do, within the same send).
    delivery = [deliveries[mark] for mark in marks[WARM_UP:]]
    send, recv, reply, answer = steps
    trips = [sum(parts) for parts in zip(*steps, strict=True)]
    return {"client send": _median_us(send), "delivery": _median_us(delivery),
            "server recv": _median_us(recv), "server send": _median_us(reply),
            "client recv": _median_us(answer), "round trip": _median_us(trips)}


def two_threads(kind: str, count: int) -> dict[str, float]:
    """Median µs of each step (``TWO_THREADS``) of ``count`` round trips, the server in a
    thread of its own; this process pinned to one core, as the bench pins it."""
    total = WARM_UP + count
    got = [0.0] * total  # when the server's receive returned
    replied = [0.0] * total  # when its send returned
    now = time.perf_counter
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})  # the echo's thread inherits it
    try:
        with sp.Session() as session:
            server, client = _connected(session, kind, "inproc://probe-steps-two")

            def echo() -> None:
                for i in range(total):
                    message = server.recv()
                    got[i] = now()
                    server.send(message)
                    replied[i] = now()

            thread = threading.Thread(target=echo, daemon=True)
            thread.start()
            marks = []
            for _ in range(total):
                t0 = now()
                client.send(BODY)
                t1 = now()
                reply = client.recv()
                marks.append((t0, t1, now()))
                assert reply == BODY, reply
            thread.join(5)
    finally:
        os.sched_setaffinity(0, affinity)  # as it was: a caller (a test) runs on
    steps = [(got[i] - t0, replied[i] - got[i], t2 - replied[i], t2 - t0)
             for i, (t0, _, t2) in enumerate(marks) if i >= WARM_UP]
    result = {name: _median_us([step[k] for step in steps])
              for k, name in enumerate(TWO_THREADS[:-1])}
    slept = sum(1 for _, t1, t2 in marks[WARM_UP:] if (t2 - t1) * 1e6 > SLEPT_US)
    result["slept %"] = 100.0 * slept / count
    return result


def _print(kind: str, way: str, names: tuple[str, ...], runs: list[dict[str, float]]) -> None:
    cells = "  ".join(f"{name} {statistics.median(r[name] for r in runs):5.1f}"
                      for name in names)
    print(f"{kind:6} {way:11} {cells}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count", type=int, default=10_000)
    args = p.parse_args()
    if not hasattr(os, "sched_setaffinity"):
        sys.exit("this probe needs Linux (sched_setaffinity)")
    print(f"µs, medians of {args.rounds} runs of {args.count} round trips, 64 B, inproc")
    for kind in KINDS:
        alone: list[dict[str, float]] = []
        apart: list[dict[str, float]] = []
        for _ in range(args.rounds):
            alone.append(one_thread(kind, args.count))
            apart.append(two_threads(kind, args.count))
        _print(kind, "one thread", ONE_THREAD, alone)
        _print(kind, "two threads", TWO_THREADS, apart)


if __name__ == "__main__":
    main()
