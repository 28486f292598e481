"""What the layers around the machines cost a round trip: a PAIR with them fused away.

    .venv/bin/python bench/probe_layers.py              # round trips between two processes
    .venv/bin/python bench/probe_layers.py --one-side   # one side against a bare peer

An experiment, not a fast path. ``Fused`` receives and sends on a PAIR whose pipe a
previous ``recv()`` has kept lent (core/caller_reader.py), with everything of
scaproust's path that is not the work itself taken out: the facade's checks, the
channel's waits and credit waits, the caller reader's bookkeeping, the guards against
interrupts, timeouts and closes. What is left is the session lock taken twice for a
receive and once for a send, the channel's lock once each, ``poll()``, the system calls,
and (``machines``) the pipe's read and the protocol and pipe machines as the library
runs them, or (``bare``) a read and a write of the stream with only the machines' states
looked at. It is correct only where it runs here (one pipe, its loan kept, nothing else
happening): the difference between it and the library's own path is what those layers
cost, the most that flattening them could give.

Modes, alternated round by round (medians of ``--count`` round trips each): ``api`` (the
library as users call it), ``recv`` and ``send`` (only that side of both processes
fused, the machines kept), ``machines`` (both, the machines kept), ``bare`` (both, no
machines). With ``--one-side``, one side against a bare peer in the same thread (as
``bench/one_side.py``), ``api``, ``machines`` and ``bare``.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "src"))
sys.path.insert(0, HERE)  # one_side, for its bare peer

import scaproust as sp  # noqa: E402
from scaproust.core.stats import BYTES_RECEIVED, MSGS_RECEIVED  # noqa: E402

_PREFIX = struct.Struct(">Q")
BODY = b"p" * 64
MODES = ("api", "recv", "send", "machines", "bare")
#: Round trips made through the library first, so that the pipe's loan is kept.
WARM_UP = 600


class Fused:
    """``recv()`` and ``send()`` of one PAIR socket with the layers around the machines
    taken out (see the module's docstring); ``machines``: keep the pipe and protocol
    machines, else read and write the stream directly."""

    def __init__(self, sock: sp.Socket, machines: bool) -> None:
        core = sock._core
        self.core, self.channel, self.machines = core, sock._channel, machines
        self.reader, self.loop = core.reader, core.loop
        self.poll: select.poll | None = None

    def recv(self) -> bytes:
        loop, lock, reader, channel = self.loop, self.loop.lock, self.reader, self.channel
        me = threading.get_ident()
        lock.acquire()
        loop._owner = me
        lent = reader.kept  # a recv() of the library's kept it: one pipe, lent
        assert lent is not None and len(lent) == 1
        pipe = lent[0]._pipe
        reader.kept, reader.busy, reader.waited = None, True, True
        wakeup = reader.wakeup
        if self.poll is None:
            self.poll = select.poll()
            self.poll.register(pipe.stream.fileno(), select.POLLIN)
            self.poll.register(wakeup.fileno(), select.POLLIN)
        with channel._lock:
            channel.reader_wakeup, channel.reader_waiting = wakeup, True
        loop._owner = None
        lock.release()
        self.poll.poll(5000)
        channel.reader_waiting = False
        lock.acquire()
        loop._owner = me
        if self.machines:
            channel.catching = True
            lent[0].read()
            channel.catching = False
            body, channel.caught = channel.caught, None
        else:
            data = pipe.stream.recv(65536)
            assert _PREFIX.unpack_from(data)[0] == len(data) - 8  # one whole frame
            body = data[8:]
            proto = self.core.proto
            if pipe.state == "active" and proto.state == "paired" and proto.peer is pipe:
                counts = self.core.stats.counts
                counts[MSGS_RECEIVED] += 1
                counts[BYTES_RECEIVED] += len(body)
        reader.kept, reader.busy = lent, False
        loop._owner = None
        lock.release()
        return body

    def send(self, body: bytes) -> None:
        channel = self.channel
        with channel._lock:
            assert channel.credit > 0 and not channel.closed
            channel.credit -= 1
            channel.credit_bytes -= len(body)
        loop, lock, core = self.loop, self.loop.lock, self.core
        lock.acquire()
        loop._owner = threading.get_ident()
        ctx, proto = core.ctx, core.proto
        ctx.outstanding -= 1
        ctx.outstanding_bytes -= len(body)
        if self.machines:
            proto.cmd_send(body)
            loop.run_end_of_batch()  # the flush: the frame to the kernel
        else:
            pipe = proto.peer
            assert proto.state == "paired" and not pipe._out
            pipe.stream.send(_PREFIX.pack(len(body)) + body)
            proto.grant_capacity()
        loop._owner = None
        lock.release()


def _exchange(sock: sp.Socket, mode: str, echo: bool):
    """A function making one exchange of ``sock`` in ``mode``: the echo receives and sends
    back, the client sends and receives."""
    fused = Fused(sock, machines=mode != "bare")
    recv = fused.recv if mode in ("recv", "machines", "bare") else sock.recv
    send = fused.send if mode in ("send", "machines", "bare") else sock.send
    if echo:
        return lambda: send(recv())
    return lambda: (send(BODY), recv())[1]


def round_trips(mode: str, count: int, cores: tuple[int, int]) -> float:
    """Median round trip (µs) between two processes pinned to ``cores``, both in ``mode``
    once the loan is kept."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the echo
        try:
            os.close(r)
            os.sched_setaffinity(0, {cores[1]})
            with sp.Session() as session:
                echo = session.socket(sp.Pair, recv_timeout=5)
                os.write(w, echo.bind("tcp://127.0.0.1:0").url.encode())
                os.close(w)
                for _ in range(WARM_UP):
                    echo.send(echo.recv())
                exchange = _exchange(echo, mode, echo=True)
                for _ in range(count):
                    exchange()
        finally:
            os._exit(0)
    os.close(w)
    url = os.read(r, 200).decode()
    os.close(r)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cores[0]})
    try:
        with sp.Session() as session:
            client = session.socket(sp.Pair, recv_timeout=5)
            client.connect(url)
            for _ in range(WARM_UP):
                client.send(BODY)
                assert client.recv() == BODY
            exchange = _exchange(client, mode, echo=False)
            now = time.perf_counter
            samples = []
            for _ in range(count):
                t0 = now()
                reply = exchange()
                samples.append(now() - t0)
                assert reply == BODY
    finally:
        os.sched_setaffinity(0, affinity)
        os.waitpid(pid, 0)
    return statistics.median(samples) * 1e6


def one_side(mode: str, count: int) -> tuple[float, float]:
    """Median ``recv()`` and ``send()`` (µs) of one PAIR against a bare peer of the same
    thread, the peer's message already in the kernel (``bench/one_side.py``'s setting)."""
    import one_side as bare

    recvs, sends = [], []
    now = time.perf_counter
    with sp.Session() as session:
        sock = session.socket(sp.Pair, recv_timeout=5)
        peer = bare._peer(sock, 0x10)
        frame = bare._frame(BODY)
        for _ in range(WARM_UP):
            peer.send(frame)
            sock.send(sock.recv())
            peer.recv(65536)
        fused = Fused(sock, machines=mode == "machines")
        recv, send = (sock.recv, sock.send) if mode == "api" else (fused.recv, fused.send)
        for _ in range(count):
            peer.send(frame)
            t0 = now()
            msg = recv()
            t1 = now()
            send(msg)
            t2 = now()
            assert peer.recv(65536) == frame
            recvs.append(t1 - t0)
            sends.append(t2 - t1)
        peer.close()
    return statistics.median(recvs) * 1e6, statistics.median(sends) * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--one-side", action="store_true")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--count", type=int, default=5000)
    args = p.parse_args()
    if args.one_side:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        results: dict[str, list] = {}
        for _ in range(args.rounds):
            for mode in ("api", "machines", "bare"):
                results.setdefault(mode, []).append(one_side(mode, args.count))
        for mode, runs in results.items():
            recv = statistics.median(r for r, _ in runs)
            send = statistics.median(s for _, s in runs)
            print(f"{mode:9} recv() {recv:5.2f} µs, send() {send:5.2f}, both {recv + send:5.2f}")
        return
    first, *_, last = sorted(os.sched_getaffinity(0))
    runs: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            runs[mode].append(round_trips(mode, args.count, (first, last)))
    for mode in MODES:
        values = sorted(runs[mode])
        print(f"{mode:9} median of runs {statistics.median(values):5.1f} µs   "
              f"runs: {' '.join(f'{v:.1f}' for v in values)}")


if __name__ == "__main__":
    main()
