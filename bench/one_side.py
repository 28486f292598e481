"""One scaproust side of a 64-byte round trip, against a bare peer in the same process.

    .venv/bin/python bench/one_side.py pair      # PAIR: recv() the peer's message, send() it back
    .venv/bin/python bench/one_side.py req       # REQ: send() a request, recv() the reply
    .venv/bin/python bench/one_side.py rep       # REP: recv() a request, send() the reply

The peer is a plain TCP socket of the same thread speaking SP bytes by hand, and the process
is pinned to one core: no cross-core wake-up, no second interpreter, only scaproust's own
path (Python and its syscalls) between the peer's bytes and the reply. So the medians move
by a few tenths of a µs from run to run where a two-process round trip moves by several:
the measure to tell an old tree from a new one (run both, alternated, with
``PYTHONPATH=<tree>/src``). ``send`` times the ``send()`` call (down to the kernel, and the
flush's aftermath), ``recv`` the ``recv()`` call with the peer's bytes already in the kernel.

With ``--critical``, only what lies on a round trip's critical path is timed: a ``recv()``
from its ``poll()``'s return (the message's arrival) to its return, and a ``send()`` from
its call to the write that hands the frame to the kernel. What comes before the poll and
after the write overlaps the peer's work in a round trip between two processes. The
marks come from a socket subclass swapped in under the pipe and a wrapper around the
caller reader's poll, the same in both trees of an A/B run.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if not os.environ.get("PYTHONPATH"):  # else the tree it names (an A/B run)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "src"))

import scaproust as sp  # noqa: E402
from scaproust.core.caller_reader import _Poller  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Buffer

#: Ours, and the protocol number the bare peer announces in its SP header (WIRE.md).
ROLES = {"pair": (sp.Pair, 0x10), "req": (sp.Req, 0x31), "rep": (sp.Rep, 0x30)}
BODY = b"p" * 64
_now = time.perf_counter


def _peer(sock: sp.Socket, protocol: int) -> socket.socket:
    """Accept ``sock``'s connection on a bare listener and exchange SP headers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    sock.connect(f"tcp://127.0.0.1:{listener.getsockname()[1]}")
    conn, _ = listener.accept()
    listener.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.settimeout(5)  # a reply that never comes fails the run instead of hanging it
    conn.sendall(b"\0SP\0" + struct.pack(">H", protocol) + b"\0\0")
    header = b""
    while len(header) < 8:
        header += conn.recv(8 - len(header))
    return conn


def _frame(payload: bytes) -> bytes:
    return struct.pack(">Q", len(payload)) + payload


class _Marks:
    """``--critical``'s marks: when the pipe's stream was last written (``wrote``) and when
    the caller reader's ``poll()`` last returned (``polled``)."""

    wrote = polled = 0.0

    @classmethod
    def install(cls, sock: sp.Socket) -> None:
        """Mark the writes of ``sock``'s one pipe and the returns of its reader's polls."""
        deadline = _now() + 5
        while not sock._core.pipes:  # the pipe joins the socket in the I/O thread
            if _now() > deadline:
                raise TimeoutError("the pipe never joined the socket")
            time.sleep(0.001)
        stream = next(iter(sock._core.pipes)).stream
        assert type(stream) is socket.socket, "--critical needs a plain TCP stream"
        stream.__class__ = _MarkedSocket
        sock._core.reader._poller.__class__ = _MarkedPoller

    @classmethod
    def take(cls) -> tuple[float, float]:
        """The marks set since the last call (0.0 for one that was not), cleared for the
        next: a receive that did not poll (the I/O thread had read its message: a REP's
        first few, before its loan is kept) is not timed from a stale mark."""
        marks = cls.wrote, cls.polled
        cls.wrote = cls.polled = 0.0
        return marks


class _MarkedSocket(socket.socket):
    """The pipe's stream, its class swapped: its writes are marked."""

    __slots__ = ()

    def send(self, data: Buffer, flags: int = 0) -> int:  # type: ignore[override]
        _Marks.wrote = _now()
        return super().send(data, flags)

    def sendmsg(self, buffers: Iterable[Buffer], *args: Any) -> int:  # type: ignore[override]
        _Marks.wrote = _now()
        return super().sendmsg(buffers, *args)


class _MarkedPoller(_Poller):
    """The caller reader's poller, its class swapped: its returns are marked."""

    __slots__ = ()

    def readable(self, *args: Any) -> Any:  # type: ignore[override]
        ready = super().readable(*args)
        _Marks.polled = _now()
        return ready


def run(role: str, count: int, pause: Callable[[], object] | None = None,
        critical: bool = False) -> tuple[list[float], list[float]]:
    """``count`` round trips; the ``send()`` and ``recv()`` times in µs. ``pause``, if
    given, is called just before each timed ``recv()``, the peer's bytes already sent
    (``bench/probe_wake.py cold`` sleeps there). ``critical``: only the parts on a round
    trip's critical path (see the module's docstring), of the round trips that took it."""
    kind, protocol = ROLES[role]
    sends: list[float] = []
    recvs: list[float] = []
    with sp.Session() as session:
        sock = session.socket(kind, recv_timeout=5)
        peer = _peer(sock, protocol)
        if critical:
            _Marks.install(sock)
        for i in range(count):
            # Each call as [start, end]; --critical moves the send's end to its write and
            # the receive's start to its poll's return.
            if role == "req":
                send = [_now()]
                sock.send(BODY)
                send.append(_now())
                request = peer.recv(65536)  # one frame: 8-byte length, id word, body
                peer.send(_frame(request[8:]))  # the reply carries the request's id word
                if pause is not None:
                    pause()
                recv = [_now()]
                sock.recv()
                recv.append(_now())
            else:
                # PAIR and REP: the peer's message waits in the kernel, ours answers it.
                payload = struct.pack(">I", 0x80000000 | i) + BODY if role == "rep" else BODY
                peer.send(_frame(payload))
                if pause is not None:
                    pause()
                recv = [_now()]
                msg = sock.recv()
                recv.append(_now())
                send = [recv[1]]
                sock.send(msg)
                send.append(_now())
                peer.recv(65536)
            if critical:
                wrote, polled = _Marks.take()
                if not (wrote and polled):
                    continue  # not the path timed (see _Marks.take)
                send[1], recv[0] = wrote, polled
            sends.append(send[1] - send[0])
            recvs.append(recv[1] - recv[0])
        peer.close()
    return [t * 1e6 for t in sends], [t * 1e6 for t in recvs]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("role", choices=sorted(ROLES))
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--critical", action="store_true",
                   help="time only a round trip's critical path: recv() from its poll's "
                        "return, send() to its write")
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    run(args.role, args.warmup, critical=args.critical)
    sends, recvs = run(args.role, args.count, critical=args.critical)
    send, recv = statistics.median(sends), statistics.median(recvs)
    if args.critical:
        print(f"{args.role}: send() to the write {send:.2f} µs, recv() from the poll "
              f"{recv:.2f} µs, both {send + recv:.2f} (medians of {len(sends)})")
        return
    print(f"{args.role}: send() {send:.2f} µs, recv() {recv:.2f} µs, "
          f"both {send + recv:.2f} (medians of {args.count})")


if __name__ == "__main__":
    main()
