"""What an in-process PUSH->PULL could move on one core: the library against three floors.

    .venv/bin/python bench/probe_inproc.py [--rounds 3] [--count 300000]

``make bench`` runs its inproc cases as two threads of one process pinned to one core: one
interpreter lock, so the rate is the inverse of the CPU that both sides and the I/O thread
spend on a message together. Four ways of moving ``--count`` 64-byte messages from one
thread to the other, alternated round by round (medians):

- ``library``: a scaproust PUSH and PULL over ``inproc://``, ``send()`` and ``recv()`` as
  the bench calls them, with the CPU of the sending thread, the receiving thread and the
  rest (the session's I/O thread) per message, read from each thread's clock;
- ``locked``: a queue with credit in Python and a lock section a step: a ``put`` (wait
  for credit, take it, append, wake a sleeping receiver) and a ``get`` (wait for a
  message, pop it, give the credit back, wake a sleeping sender), a
  ``threading.Condition`` each way, each sleeper woken once. No facade, no protocol, no
  pipe;
- ``lockless``: the same queue whose steps take no lock unless a side must sleep or wake
  the other (the interpreter lock keeps a deque's append and popleft whole, and each
  counter has one writer);
- ``simplequeue``: ``queue.SimpleQueue``, whose put and get are C, with no credit at all
  (nothing stops a sender that outruns its receiver).

The ``locked`` and ``lockless`` rates bound what a design with a Python step a side and
credit can reach here, with and without a lock section a step, whatever else it leaves out
(the bench's inproc target asks 1.5x the TCP rate). Both wake a sleeper once: a queue that
notifies at every step until its sleeper runs (the woken thread needs the interpreter lock,
and may wait for it through a whole window of messages) spends a ``Condition.notify`` a
message on it, and moved 0.65-0.93 M messages a second here instead of about 1.5 M.
"""

from __future__ import annotations

import argparse
import os
import queue
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))

import scaproust as sp  # noqa: E402

MSG = b"x" * 64
WAYS = ("library", "locked", "lockless", "simplequeue")
#: Messages a ``locked`` sender may have queued before it waits (the library's
#: ``send_buffer`` default is of the same order).
CREDIT = 1024


class LockedQueue:
    """A FIFO with credit, one lock section per put and per get (see the docstring), for
    one sending thread and one receiving thread. A side that must wait says so before it
    sleeps (``_putter_sleeps``, ``_getter_sleeps``, under the lock); the other side wakes it
    once, clearing the flag as it does: the sleeper may not run for a while (the woken
    thread needs the interpreter lock), and a notify at every step until it does would
    cost the other side a ``Condition.notify`` a message (0.5-1 µs)."""

    def __init__(self, credit: int) -> None:
        self._lock = threading.Lock()
        self._can_get = threading.Condition(self._lock)
        self._can_put = threading.Condition(self._lock)
        self._items: deque[bytes] = deque()
        self._credit = credit
        self._getter_sleeps = self._putter_sleeps = False

    def put(self, item: bytes) -> None:
        with self._lock:
            while not self._credit:
                self._putter_sleeps = True
                self._can_put.wait()
            self._credit -= 1
            self._items.append(item)
            if self._getter_sleeps:
                self._getter_sleeps = False
                self._can_get.notify()

    def get(self) -> bytes:
        with self._lock:
            while not self._items:
                self._getter_sleeps = True
                self._can_get.wait()
            self._credit += 1
            if self._putter_sleeps:
                self._putter_sleeps = False
                self._can_put.notify()
            return self._items.popleft()


class LocklessQueue(LockedQueue):
    """The same FIFO with credit, whose put and get take no lock while neither side must
    wait: the interpreter lock makes a deque's append and popleft atomic, and each counter
    has one writer (``_put`` the sending thread, ``_got`` the receiving one; ``_credit``
    is never written). A side that must wait takes the lock to sleep; the other side takes
    it only to wake a sleeper, once, as ``LockedQueue`` does. The flag is set under the
    lock before the sleeper looks again: a step of the other side in between either came
    before that look (which then sees it) or sees the flag after it (and wakes the
    sleeper)."""

    def __init__(self, credit: int) -> None:
        super().__init__(credit)
        self._put = self._got = 0

    def put(self, item: bytes) -> None:
        if self._put - self._got >= self._credit:
            with self._lock:
                while self._put - self._got >= self._credit:
                    self._putter_sleeps = True
                    self._can_put.wait()
        self._items.append(item)
        self._put += 1
        if self._getter_sleeps:
            with self._lock:
                self._getter_sleeps = False
                self._can_get.notify()

    def get(self) -> bytes:
        try:
            item = self._items.popleft()
        except IndexError:
            with self._lock:
                while not self._items:
                    self._getter_sleeps = True
                    self._can_get.wait()
            item = self._items.popleft()
        self._got += 1
        if self._putter_sleeps:
            with self._lock:
                self._putter_sleeps = False
                self._can_put.notify()
        return item


def _run(send: Callable[[bytes], object], recv: Callable[[], bytes], count: int) -> dict:
    """``count`` messages from this thread to another; rate and CPU per message."""
    cpu: dict[str, float] = {}

    def receive() -> None:
        t0 = time.thread_time()
        got = 0
        for _ in range(count):
            got += len(recv())
        cpu["recv"] = time.thread_time() - t0
        if got != count * len(MSG):
            raise AssertionError(f"received {got} bytes, expected {count} x {len(MSG)}")

    receiver = threading.Thread(target=receive)
    process0, wall0 = time.process_time(), time.monotonic()
    receiver.start()
    t0 = time.thread_time()
    for _ in range(count):
        send(MSG)
    cpu["send"] = time.thread_time() - t0
    receiver.join()
    wall, process = time.monotonic() - wall0, time.process_time() - process0
    us = 1e6 / count
    return {"rate": count / wall, "cpu": process * us, "send": cpu["send"] * us,
            "recv": cpu["recv"] * us, "rest": (process - cpu["send"] - cpu["recv"]) * us}


def run_library(count: int) -> dict:
    with sp.Session() as session:
        push = session.socket(sp.Push, recv_max_size=0)
        pull = session.socket(sp.Pull, recv_max_size=0)
        pull.bind("inproc://probe-inproc")
        push.connect("inproc://probe-inproc")
        for _ in range(2000):  # connected, warm
            push.send(MSG)
            pull.recv()
        return _run(push.send, pull.recv, count)


def run_locked(count: int) -> dict:
    q = LockedQueue(CREDIT)
    return _run(q.put, q.get, count)


def run_lockless(count: int) -> dict:
    q = LocklessQueue(CREDIT)
    return _run(q.put, q.get, count)


def run_simplequeue(count: int) -> dict:
    q: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    return _run(q.put, q.get, count)


RUNS = {"library": run_library, "locked": run_locked, "lockless": run_lockless,
        "simplequeue": run_simplequeue}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--count", type=int, default=300_000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # as make bench's inproc
    results: dict[str, list[dict]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
            results[way].append(RUNS[way](args.count))
    print(f"{args.count} messages of {len(MSG)} B, one core, medians of {args.rounds} rounds")
    for way in WAYS:
        runs = results[way]

        def med(key: str, runs: list[dict] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        print(f"{way:12} {med('rate') / 1e3:7.0f} k msg/s  CPU {med('cpu'):.2f} µs a message"
              f" (sending thread {med('send'):.2f}, receiving {med('recv'):.2f},"
              f" rest {med('rest'):.2f})")


if __name__ == "__main__":
    main()
