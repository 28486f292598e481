"""How a waiting thread is woken: the kernel's part of a round trip, measured apart.

    .venv/bin/python bench/probe_wake.py wait      # two processes, bare sockets
    .venv/bin/python bench/probe_wake.py handoff   # scaproust inproc, one process, one core
    .venv/bin/python bench/probe_wake.py cold      # one receive after the core slept
    .venv/bin/python bench/probe_wake.py floor     # two threads, no library, one core

``wait``: a 64-byte ping-pong between two processes pinned to two cores, no library: each
side waits for the other's frame with ``poll()`` on the stream and a wake-up socket (what
a scaproust caller does, ``core/caller_reader.py``), with an ``epoll`` instance that has
both registered once, or with a blocking ``recv()`` (which nothing could interrupt: a
close, a deadline or another pipe's message must be able to end a caller's wait). Runs of
5,000 round trips, the three ways alternated (eight rounds); the median of each run.

``handoff``: scaproust's in-process REQ/REP and PAIR round trips (two threads of one
process pinned to one core, as ``make bench`` runs them), with the context switches of
the client's thread per round trip, read from ``/proc``; then the same with both threads
in ``SCHED_BATCH``, a policy whose woken threads never preempt the running one (a library
must not change its user's scheduling policy: this is a measurement, not a setting).
Three runs of 10,000 round trips each way, medians. Last, the same round trips in one
thread, the server's receive and reply between the client's send and receive: nothing
waits, nothing is handed over, and what is left is the Python of both sides.

``floor``: the same hand-off with no library, a message (an int) passed back and forth
between two threads pinned to one core through a list under a lock: the sleeper waits on
a lock of its own that the waker releases (``threading.Condition``'s way), or on an
eventfd of its own that the waker writes once it let go of the lock (scaproust's way,
reactor/waker.py). A lock released wakes its sleeper while the waker holds the
interpreter lock: the sleeper preempts the waker only to wait for that lock. The write
lets go of the interpreter lock for its system call. Runs of 20,000 round trips, the
two ways alternated; medians, and the client's context switches per round trip.

``cold``: a PAIR ``recv()`` of a message already in the kernel (``bench/one_side.py``'s
setting: a bare peer in the same thread, one core), timed right after the previous
exchange, after the thread slept ``--idle`` µs (as it does between two messages of a round
trip), and after it spun for as long instead; a bare socket's ``recv()`` the same three
ways. What a sleep adds, and a spin does not, is what the machine loses while a core idles
(caches, on a virtual machine whatever the hypervisor does meanwhile), paid by each cache
line the receive then touches: the more code and objects on the path, the more it pays.
"""

from __future__ import annotations

import argparse
import itertools
import os
import select
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
sys.path.insert(0, HERE)  # one_side, for the cold probe

WAYS = ("poll", "epoll", "block")
#: cold: receives left untimed and unpaused first (see _received).
WARM_UP = 500


def _waiter(sock: socket.socket, way: str, keep: list):
    """A function that waits for ``sock`` to bring a chunk and returns it."""
    wake_r, wake_w = socket.socketpair()  # never written: it is only waited on
    keep += (wake_r, wake_w)  # closed by the caller, with the epoll instance
    if way == "block":
        sock.setblocking(True)
        return lambda: sock.recv(65536)
    sock.setblocking(False)
    if way == "poll":
        waiter = select.poll()
    else:
        waiter = select.epoll()
        keep.append(waiter)
    waiter.register(sock.fileno(), select.POLLIN)
    waiter.register(wake_r.fileno(), select.POLLIN)
    wait = waiter.poll

    def receive() -> bytes:
        wait()
        return sock.recv(65536)

    return receive


def _ping_pong(way: str, count: int, cores: tuple[int, int]) -> float:
    """The median round trip (µs) of ``count`` exchanges between two processes, this one
    pinned to the first of ``cores`` and the echo to the second."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    keep: list = []
    pid = os.fork()
    if pid == 0:  # the echo
        try:
            os.sched_setaffinity(0, {cores[1]})
            conn = socket.create_connection(listener.getsockname())
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            receive = _waiter(conn, way, keep)
            for _ in range(count + 500):
                conn.send(receive())
        finally:
            os._exit(0)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cores[0]})
    conn, _ = listener.accept()
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        receive = _waiter(conn, way, keep)
        frame = (64).to_bytes(8, "big") + b"p" * 64  # one SP frame's bytes (one recv each)
        samples = []
        now = time.perf_counter
        for _ in range(count + 500):
            t0 = now()
            conn.send(frame)
            receive()
            samples.append(now() - t0)
    finally:
        os.sched_setaffinity(0, affinity)  # as it was: a caller (a test) runs on
        for obj in (conn, listener, *keep):
            obj.close()
        os.waitpid(pid, 0)
    return statistics.median(samples[500:]) * 1e6


def wait(rounds: int) -> None:
    first, *_, last = sorted(os.sched_getaffinity(0))  # before this process is pinned
    runs: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(rounds):
        for way in WAYS:
            runs[way].append(_ping_pong(way, 5000, (first, last)))
    for way in WAYS:
        values = sorted(runs[way])
        print(f"{way:6} median of runs {statistics.median(values):5.1f} µs   "
              f"runs: {' '.join(f'{v:.1f}' for v in values)}")


def _switches() -> tuple[int, int]:
    """This thread's voluntary and involuntary context switches so far."""
    with open("/proc/thread-self/status") as status:
        fields = dict(line.split(":", 1) for line in status if "ctxt_switches" in line)
    return (int(fields["voluntary_ctxt_switches"]),
            int(fields["nonvoluntary_ctxt_switches"]))


def _connected(session, kind: str, url: str) -> tuple:
    """A server socket bound on ``url`` and a client connected to it: REP and REQ for
    "reqrep", two PAIRs for "pair"."""
    import scaproust as sp

    server_kind, client_kind = (sp.Rep, sp.Req) if kind == "reqrep" else (sp.Pair, sp.Pair)
    server = session.socket(server_kind, recv_timeout=5)
    server.bind(url)
    client = session.socket(client_kind, recv_timeout=5)
    client.connect(url)
    return server, client


def _round_trips(kind: str, batch: bool, count: int) -> tuple[float, float, float]:
    """Median round trip (µs), voluntary and involuntary switches of the client's thread
    per round trip, for scaproust's in-process ``kind`` ("reqrep" or "pair")."""
    import scaproust as sp

    before = os.sched_getscheduler(0), os.sched_getparam(0)

    def policy(which: int, param: os.sched_param | None = None) -> None:
        if batch:
            os.sched_setscheduler(0, which, param or os.sched_param(0))  # this thread only

    with sp.Session() as session:
        server, client = _connected(session, kind, "inproc://probe-wake")

        def echo() -> None:
            policy(os.SCHED_BATCH)
            for _ in range(count + 500):
                server.send(server.recv())

        thread = threading.Thread(target=echo, daemon=True)
        thread.start()
        policy(os.SCHED_BATCH)
        try:
            body = b"p" * 64
            samples = []
            now = time.perf_counter
            for _ in range(500):
                client.send(body)
                client.recv()
            vol0, invol0 = _switches()
            for _ in range(count):
                t0 = now()
                client.send(body)
                client.recv()
                samples.append(now() - t0)
            vol1, invol1 = _switches()
        finally:
            policy(*before)  # as it was: a caller (a test) runs on
        thread.join(5)
    return (statistics.median(samples) * 1e6, (vol1 - vol0) / count,
            (invol1 - invol0) / count)


def _one_thread(kind: str, count: int) -> float:
    """Median in-process round trip (µs) of ``kind`` run in this one thread: the client's
    send, the server's receive and reply, the client's receive, with nothing to wait for."""
    import scaproust as sp

    with sp.Session() as session:
        server, client = _connected(session, kind, "inproc://probe-one-thread")
        # A send here follows no wait, so Channel.put would take it for one of a burst and
        # leave it to the I/O thread (DIRECT_SPACING): each is marked as following a quiet
        # spell, and goes at once in this thread, as a send between two threads does.
        quiet = float("-inf")
        body = b"p" * 64
        samples = []
        now = time.perf_counter
        for i in range(500 + count):
            t0 = now()
            client._channel.last_put = quiet
            client.send(body)
            reply = server.recv()
            server._channel.last_put = quiet
            server.send(reply)
            client.recv()
            if i >= 500:
                samples.append(now() - t0)
    return statistics.median(samples) * 1e6


def handoff(rounds: int) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # threads inherit it
    for kind in ("reqrep", "pair"):
        for batch in (False, True):
            results = [_round_trips(kind, batch, 10_000) for _ in range(rounds)]
            rtt = statistics.median(r[0] for r in results)
            vol = statistics.median(r[1] for r in results)
            invol = statistics.median(r[2] for r in results)
            print(f"{kind:6} {'SCHED_BATCH' if batch else 'default    '} {rtt:5.1f} µs "
                  f"a round trip; client thread: {vol:.2f} voluntary, {invol:.2f} "
                  f"involuntary switches a round trip")
        rtt = statistics.median(_one_thread(kind, 10_000) for _ in range(rounds))
        print(f"{kind:6} one thread  {rtt:5.1f} µs a round trip, nothing handed over")


def _received(kind: str, idle_us: float, count: int) -> tuple[float, float, float]:
    """Median ``recv()`` (µs) of scaproust's PAIR, its ``send()`` of the message right
    after (an echo's), and a bare socket's ``recv()``, each receive preceded by nothing
    ("warm"), a sleep ("sleep") or a spin ("spin") of ``idle_us``."""
    import one_side  # noqa: PLC0415  (bench/ is not a package: on the path below)

    now = time.perf_counter_ns

    def pause() -> None:
        if kind == "sleep":
            time.sleep(idle_us / 1e6)
        elif kind == "spin":
            end = now() + idle_us * 1000
            while now() < end:
                pass

    # The first receives lend the pipe to this thread, which keeps it from then on
    # (core/caller_reader.py): a pause before that would let the I/O thread read each
    # message first, and recv() would find it queued.
    calls = itertools.count()

    def after_warm_up() -> None:
        if next(calls) >= WARM_UP:
            pause()

    sends, recvs = one_side.run("pair", WARM_UP + count, after_warm_up)
    bare = []
    near, far = socket.socketpair()
    far.setblocking(False)
    frame = (64).to_bytes(8, "big") + b"p" * 64
    try:
        for _ in range(count):
            near.send(frame)
            pause()
            t0 = now()
            far.recv(65536)
            bare.append((now() - t0) / 1000)
    finally:
        near.close()
        far.close()
    return (statistics.median(recvs[WARM_UP:]), statistics.median(sends[WARM_UP:]),
            statistics.median(bare))


def cold(rounds: int, idle_us: float) -> None:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    results: dict[str, list[tuple[float, float, float]]] = {
        "warm": [], "sleep": [], "spin": []}
    for _ in range(rounds):
        for kind, runs in results.items():
            runs.append(_received(kind, idle_us, 5000))
    for kind, runs in results.items():
        ours, send, bare = (statistics.median(r[i] for r in runs) for i in range(3))
        print(f"{kind:5} (idle {idle_us:.0f} µs): scaproust PAIR recv() {ours:5.2f} µs, "
              f"its send() after {send:5.2f}; bare socket recv() {bare:5.2f} µs")


class _LockBox:
    """A one-way mailbox whose sleeper waits on a lock of its own, released by the
    putter under the box's lock (``threading.Condition``'s hand-off)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[int] = []
        self.sleeper: threading.Lock | None = None

    def put(self, item: int) -> None:
        with self.lock:
            self.items.append(item)
            sleeper, self.sleeper = self.sleeper, None
            if sleeper is not None:
                sleeper.release()

    def get(self) -> int:
        with self.lock:
            if self.items:
                return self.items.pop()
            self.sleeper = sleeper = threading.Lock()
            sleeper.acquire()
        sleeper.acquire()
        with self.lock:
            return self.items.pop()


class _FdBox(_LockBox):
    """The same, the sleeper waiting on an eventfd the putter writes after the lock."""

    def __init__(self) -> None:
        super().__init__()
        self.fd = os.eventfd(0)
        self.sleeping = False

    def put(self, item: int) -> None:
        with self.lock:
            self.items.append(item)
            wake, self.sleeping = self.sleeping, False
        if wake:
            os.eventfd_write(self.fd, 1)

    def get(self) -> int:
        with self.lock:
            if self.items:
                return self.items.pop()
            self.sleeping = True
        os.eventfd_read(self.fd)
        with self.lock:
            return self.items.pop()


def _bounce(box_kind: type[_LockBox], count: int) -> tuple[float, float]:
    """Median round trip (µs) through two ``box_kind`` boxes between two threads, and the
    client's context switches per round trip."""
    there, back = box_kind(), box_kind()

    def echo() -> None:
        for _ in range(count + 501):
            back.put(there.get())

    thread = threading.Thread(target=echo, daemon=True)
    thread.start()
    for _ in range(500):
        there.put(1)
        back.get()
    samples = []
    now = time.perf_counter
    vol0, invol0 = _switches()
    for _ in range(count):
        t0 = now()
        there.put(1)
        back.get()
        samples.append(now() - t0)
    vol1, invol1 = _switches()
    there.put(1)
    back.get()
    thread.join(5)
    return statistics.median(samples) * 1e6, (vol1 + invol1 - vol0 - invol0) / count


def floor(rounds: int) -> None:
    if not hasattr(os, "eventfd"):
        sys.exit("the floor probe needs Linux's eventfd")
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # threads inherit it
    runs: dict[str, list[tuple[float, float]]] = {"lock": [], "eventfd": []}
    for _ in range(rounds):
        runs["lock"].append(_bounce(_LockBox, 20_000))
        runs["eventfd"].append(_bounce(_FdBox, 20_000))
    for way, results in runs.items():
        rtt = statistics.median(r[0] for r in results)
        switches = statistics.median(r[1] for r in results)
        print(f"{way:8} {rtt:5.1f} µs a round trip; client thread: {switches:.2f} context "
              f"switches a round trip")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("wait", "handoff", "cold", "floor"))
    p.add_argument("--rounds", type=int, default=None,
                   help="runs of each way (wait: default 8) or of each case (handoff, "
                        "cold, floor: 3)")
    p.add_argument("--idle", type=float, default=50.0,
                   help="cold: µs slept (or spun) before each receive (default 50)")
    args = p.parse_args()
    if not hasattr(os, "sched_setaffinity") or not hasattr(select, "epoll"):
        sys.exit("this probe needs Linux (sched_setaffinity, epoll, /proc)")
    if args.what == "wait":
        if len(os.sched_getaffinity(0)) < 2:
            sys.exit("the wait probe needs two cores")
        wait(args.rounds or 8)
    elif args.what == "handoff":
        handoff(args.rounds or 3)
    elif args.what == "floor":
        floor(args.rounds or 3)
    else:
        cold(args.rounds or 3, args.idle)


if __name__ == "__main__":
    main()
