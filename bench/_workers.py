"""The measurements themselves, run in a worker process started by bench/run.py.

A worker measures one contender once and returns a dict that run.py prints as one JSON
line. Every measurement has two sides: the worker's own side, and a *peer* that runs in a
child process (the default: ``run.py --child ROLE``, pinned to another core) or in a second
thread of the worker (``--threads``, and always for inproc, which cannot cross processes).
The two talk over a small :class:`Link` (the child's stdin/stdout, or two queues): the peer
says the URL it bound, when it is ready, and its own numbers at the end.

Kinds:

- ``rtt``: REQ/REP or PAIR; the worker's REQ (PAIR) sends ``size`` bytes and waits for the
  echo, ``count`` times, each round trip timed on its own (median, p99).
- ``artt``: the same with asyncio on both sides (``await sock.asend`` / ``arecv``).
- ``thr``: PUSH->PULL; the worker pushes ``count`` messages as fast as it can, the peer
  counts every message and byte. Rate = count / (first send .. receipt of the last).
- ``ctx``: REQ/REP with ``CONTEXTS`` contexts a side; each of the worker's REQ contexts,
  in its own thread, sends ``size`` bytes and waits for the echo, ``count / CONTEXTS``
  times, while as many REP contexts, each in its own thread, echo whatever request they
  get. Rate = requests answered / elapsed (requests in flight, as a server sees them).
- ``fanout``: the worker's PUB sends ``count`` messages to ``nsubs`` SUB sockets that live
  in the peer process; the peer counts what arrives (PUB may drop when a queue is full).
- ``idle``: the worker's PULL listens; a dialer process opens ``npipes`` raw TCP
  connections and sends the 8-byte SP header on each; the worker reports the connect time,
  Python heap per pipe, full-GC pause and idle CPU.

CPU per message: process CPU time (``time.process_time()``, user + system) of both sides over the
timed part, divided by the message count. With the peer in a thread the worker's own
process time already covers both sides.

Times that cross processes are CLOCK_MONOTONIC (``time.monotonic``), which is system-wide.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import queue
import resource
import socket
import subprocess
import sys
import threading
import time
import tracemalloc

import _impls

LINK_TIMEOUT_S = _impls.TIMEOUT_S + 30.0


def _cpu() -> float:
    # Every thread of the process, in nanoseconds: os.times() counts 10 ms ticks, which
    # turned a quiet 2 s into "1.5 % CPU" (three ticks of a gc.collect() just before).
    return time.process_time()


# ---------------------------------------------------------------------------- links


class Link:
    """Tagged JSON messages between the worker and its peer, over a queue of lines."""

    def __init__(self, inbox: queue.Queue, write) -> None:
        self._inbox = inbox
        self._write = write

    def say(self, tag: str, payload=None) -> None:
        self._write(json.dumps([tag, payload]))

    def expect(self, tag: str, timeout: float = LINK_TIMEOUT_S):
        try:
            line = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"peer said nothing for {timeout:.0f} s (expected {tag!r})") from None
        if line is None:
            raise RuntimeError(f"peer ended before saying {tag!r}")
        got, payload = json.loads(line)
        if got == "error":
            raise RuntimeError(f"peer failed: {payload}")
        if got != tag:
            raise RuntimeError(f"peer said {got!r}, expected {tag!r}")
        return payload

    def poll(self) -> bool:
        """True if a message is waiting (then ``expect`` returns at once)."""
        return not self._inbox.empty()


def _pump(stream, inbox: queue.Queue) -> None:
    for line in stream:
        inbox.put(line)
    inbox.put(None)


def stdio_link() -> Link:
    """The child's end: reads the worker's messages on stdin, answers on stdout."""
    inbox: queue.Queue = queue.Queue()
    threading.Thread(target=_pump, args=(sys.stdin, inbox), daemon=True).start()

    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    return Link(inbox, write)


class Peer:
    """The other side of a measurement: a child process or a thread, and the link to it."""

    def __init__(self, p: dict, role: str, impl, script: str) -> None:
        self.proc = self.thread = None
        self.separate = separate_process(p)
        if self.separate:
            cmd = [sys.executable, script, "--child", role, "--params", json.dumps(p)]
            # Same environment (SCAPROUST_FSM included) and same process group: the
            # parent's timeout kill reaches it too.
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         text=True, bufsize=1)
            inbox: queue.Queue = queue.Queue()
            threading.Thread(target=_pump, args=(self.proc.stdout, inbox), daemon=True).start()

            def write(line: str) -> None:
                self.proc.stdin.write(line + "\n")
                self.proc.stdin.flush()

            self.link = Link(inbox, write)
        else:
            to_peer: queue.Queue = queue.Queue()
            to_worker: queue.Queue = queue.Queue()
            self.link = Link(to_worker, to_peer.put)
            peer_link = Link(to_peer, to_worker.put)

            def run() -> None:
                try:
                    PEERS[role](p, impl, peer_link)
                except BaseException as exc:  # reported to the worker, never swallowed
                    peer_link.say("error", repr(exc))

            self.thread = threading.Thread(target=run, name=f"bench-{role}", daemon=True)
            self.thread.start()

    def peer_cpu(self, result: dict) -> float:
        """The peer's CPU seconds, if it is not already in the worker's process time."""
        return result.get("cpu_s", 0.0) if self.separate else 0.0

    def close(self) -> None:
        if self.thread is not None:
            self.thread.join(5.0)
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(10.0)  # it exits on its own once done; not when we stopped early
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


CPUS_ENV = "SCAPROUST_BENCH_CPUS"  # set by run.py: the cores the run may use


def separate_process(p: dict) -> bool:
    return p["mode"] == "procs" and p["transport"] != "inproc"


def pin(p: dict, which: int) -> int | None:
    """Pin this process to the ``which``-th allowed core (0 worker, 1 peer).

    Two sides in separate processes: each on a core of its own, when there are two or
    more. Both sides in one process (inproc, ``--threads``): that process on one core, as
    each process of the other cases, unless the run was asked to ``--spread`` it. Done
    before any library starts a thread, since new threads inherit the mask.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    # The run's cores, not this process's mask: a peer child inherits the worker's mask,
    # already pinned to one core, and both sides would then share it (a same-core round
    # trip skips the cross-core wake-up: bare sockets measured 19 us instead of 54).
    listed = os.environ.get(CPUS_ENV)
    cpus = [int(c) for c in listed.split(",")] if listed else sorted(os.sched_getaffinity(0))
    if not separate_process(p):
        # One process, one core: its threads take turns there (one interpreter lock lets
        # one of them run at a time anyway) rather than waking each other across cores.
        # Two CPython threads handing a message back and forth take 13 µs a round trip on
        # one core, 41 µs on two (docs/PERFORMANCE.md, "Where the time goes").
        if p.get("spread") or which != 0 or not cpus:
            return None
        os.sched_setaffinity(0, {cpus[0]})
        return cpus[0]
    if len(cpus) < 2:
        return None
    os.sched_setaffinity(0, {cpus[which]})
    return cpus[which]


# ---------------------------------------------------------------------------- entry points


def run_worker(p: dict, script: str) -> dict:
    core = pin(p, 0)
    fn = {"rtt": worker_rtt, "artt": worker_artt, "thr": worker_thr, "ctx": worker_ctx,
          "fanout": worker_fanout, "idle": worker_idle}[p["kind"]]
    impl = _impls.make(p["impl"])
    try:
        result = fn(p, impl, script)
        result["impl"] = impl.info()
    finally:
        impl.close()
    result.update(kind=p["kind"], transport=p["transport"], size=p["size"], cpu=core,
                  peer="process" if separate_process(p) else "thread")
    return result


def run_child(role: str, p: dict) -> None:
    pin(p, 1)
    link = stdio_link()
    impl = None if role == "dialer" else _impls.make(p["impl"])
    try:
        PEERS[role](p, impl, link)
    except BaseException as exc:
        link.say("error", repr(exc))
        raise
    finally:
        if impl is not None:
            impl.close()


# ---------------------------------------------------------------------------- round trips

ROLES = {"reqrep": ("req", "rep"), "pair": ("pair", "pair")}


def _percentile(sorted_samples, p) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_samples)))
    return sorted_samples[rank - 1]


def _rtt_result(samples, total, count, size, cpu_s) -> dict:
    samples.sort()
    us = 1e6
    return {
        "count": count, "seconds": total,
        "rtt_median_us": _percentile(samples, 50) * us, "rtt_p99_us": _percentile(samples, 99) * us,
        "rtt_mean_us": total / count * us, "rtt_min_us": samples[0] * us,
        "rtt_max_us": samples[-1] * us, "cpu_s": cpu_s, "cpu_us_per_msg": cpu_s / count * us,
    }


def peer_echo(p: dict, impl, link: Link) -> None:
    sock, url = impl.listen(ROLES[p["protocol"]][1], p["transport"])
    link.say("url", url)
    sock = impl.ready(sock)
    send, recv = sock.send, sock.recv
    for _ in range(p["warmup"]):
        send(recv())
    cpu0 = _cpu()
    for _ in range(p["count"]):
        send(recv())
    link.say("result", {"cpu_s": _cpu() - cpu0})


def worker_rtt(p: dict, impl, script: str) -> dict:
    peer = Peer(p, "echo", impl, script)
    try:
        sock = impl.dial(ROLES[p["protocol"]][0], peer.link.expect("url"))
        size, count = p["size"], p["count"]
        msg = b"p" * size
        send, recv = sock.send, sock.recv
        for _ in range(p["warmup"]):
            send(msg)
            recv()
        clock = time.perf_counter
        samples = [0.0] * count
        cpu0 = _cpu()
        t0 = clock()
        for i in range(count):
            t = clock()
            send(msg)
            reply = recv()
            samples[i] = clock() - t
            if len(reply) != size:
                raise AssertionError(f"echo of {len(reply)} bytes, expected {size}")
        total = clock() - t0
        cpu = _cpu() - cpu0
        res = peer.link.expect("result")
        return _rtt_result(samples, total, count, size, cpu + peer.peer_cpu(res))
    finally:
        peer.close()


#: Contexts a side in the ``ctx`` case (issue 12: 8 requests in flight).
CONTEXTS = 8


def _in_threads(fn, args_list) -> None:
    """Run ``fn(*args)`` for each args in threads; re-raise the first failure."""
    errors: list[BaseException] = []

    def run(*args) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # reported below, in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=args) for args in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def peer_ctxecho(p: dict, impl, link: Link) -> None:
    sock, url = impl.listen("rep", p["transport"])
    link.say("url", url)
    sock = impl.ready(sock)

    def serve(ctx) -> None:
        try:
            while True:
                ctx.send(ctx.recv())
        except Exception:  # the socket closed under it: the run is over
            pass

    servers = [threading.Thread(target=serve, args=(impl.context(sock),), daemon=True)
               for _ in range(CONTEXTS)]
    for t in servers:
        t.start()
    link.expect("timing")
    cpu0 = _cpu()
    link.expect("done")
    cpu_s = _cpu() - cpu0
    sock.close()  # wakes every serving context
    for t in servers:
        t.join(timeout=5)
    link.say("result", {"cpu_s": cpu_s})


def worker_ctx(p: dict, impl, script: str) -> dict:
    peer = Peer(p, "ctxecho", impl, script)
    try:
        sock = impl.dial("req", peer.link.expect("url"))
        size = p["size"]
        per = max(1, p["count"] // CONTEXTS)
        msg = b"c" * size
        contexts = [impl.context(sock) for _ in range(CONTEXTS)]

        def ask(ctx, n: int) -> None:
            send, recv = ctx.send, ctx.recv
            for _ in range(n):
                send(msg)
                reply = recv()
                if len(reply) != size:
                    raise AssertionError(f"echo of {len(reply)} bytes, expected {size}")

        _in_threads(ask, [(ctx, max(1, p["warmup"] // CONTEXTS)) for ctx in contexts])
        peer.link.say("timing")
        cpu0 = _cpu()
        t0 = time.monotonic()
        _in_threads(ask, [(ctx, per) for ctx in contexts])
        seconds = time.monotonic() - t0
        cpu = _cpu() - cpu0
        peer.link.say("done")
        res = peer.link.expect("result")
        count = per * CONTEXTS
        cpu_s = cpu + peer.peer_cpu(res)
        return {"count": count, "contexts": CONTEXTS, "seconds": seconds,
                "msgs_per_s": count / seconds, "cpu_s": cpu_s,
                "cpu_us_per_msg": cpu_s / count * 1e6}
    finally:
        peer.close()


async def _maybe(x):
    return await x if asyncio.iscoroutine(x) else x


def peer_aecho(p: dict, impl, link: Link) -> None:
    async def main() -> float:
        lsock, url = impl.alisten(ROLES[p["protocol"]][1], p["transport"])
        link.say("url", url)
        sock = await impl.aready(lsock)
        asend, arecv = sock.asend, sock.arecv
        for _ in range(p["warmup"]):
            await asend(await arecv())
        cpu0 = _cpu()
        for _ in range(p["count"]):
            await asend(await arecv())
        return _cpu() - cpu0

    link.say("result", {"cpu_s": asyncio.run(main())})


def worker_artt(p: dict, impl, script: str) -> dict:
    peer = Peer(p, "aecho", impl, script)
    try:
        url = peer.link.expect("url")
        size, count = p["size"], p["count"]

        async def main():
            sock = await _maybe(impl.adial(ROLES[p["protocol"]][0], url))
            msg = b"p" * size
            asend, arecv = sock.asend, sock.arecv
            for _ in range(p["warmup"]):
                await asend(msg)
                await arecv()
            clock = time.perf_counter
            samples = [0.0] * count
            cpu0 = _cpu()
            t0 = clock()
            for i in range(count):
                t = clock()
                await asend(msg)
                reply = await arecv()
                samples[i] = clock() - t
                if len(reply) != size:
                    raise AssertionError(f"echo of {len(reply)} bytes, expected {size}")
            return samples, clock() - t0, _cpu() - cpu0

        samples, total, cpu = asyncio.run(main())
        res = peer.link.expect("result")
        return _rtt_result(samples, total, count, size, cpu + peer.peer_cpu(res))
    finally:
        peer.close()


# ---------------------------------------------------------------------------- push -> pull


def peer_pull(p: dict, impl, link: Link) -> None:
    sock, url = impl.listen("pull", p["transport"])
    link.say("url", url)
    recv = impl.ready(sock).recv
    for _ in range(p["warmup"]):
        recv()
    link.say("ready")
    cpu0 = _cpu()
    total = 0
    for _ in range(p["count"]):
        total += len(recv())
    t_end = time.monotonic()
    link.say("result", {"t_end": t_end, "bytes": total, "cpu_s": _cpu() - cpu0})


def _timed_sends(send, flush, msg: bytes, count: int, peer) -> tuple:
    """Send ``count`` messages as fast as possible, then wait for the peer's result:
    (start, end of sending, the peer's result, CPU seconds of both sides)."""
    cpu0 = _cpu()
    t0 = time.monotonic()
    for _ in range(count):
        send(msg)
    flush()
    t_sent = time.monotonic()
    res = peer.link.expect("result")
    return t0, t_sent, res, _cpu() - cpu0 + peer.peer_cpu(res)


def worker_thr(p: dict, impl, script: str) -> dict:
    peer = Peer(p, "pull", impl, script)
    try:
        push = impl.dial("push", peer.link.expect("url"))
        size, count = p["size"], p["count"]
        msg = b"x" * size
        send = push.send
        flush = getattr(push, "flush", lambda: None)  # the bare ceiling coalesces
        for _ in range(p["warmup"]):
            send(msg)
        flush()
        peer.link.expect("ready")
        t0, t_sent, res, cpu = _timed_sends(send, flush, msg, count, peer)
        if res["bytes"] != size * count:
            raise AssertionError(f"received {res['bytes']} bytes, expected {count} x {size}")
        seconds = res["t_end"] - t0
        return {"count": count, "seconds": seconds, "send_seconds": t_sent - t0,
                "msgs_per_s": count / seconds, "mb_per_s": size * count / seconds / 1e6,
                "cpu_s": cpu, "cpu_us_per_msg": cpu / count * 1e6}
    finally:
        peer.close()


# ---------------------------------------------------------------------------- pub -> subs

REAL, WARM = ord("m"), ord("w")  # first byte of a counted message / of a warm-up message
QUIET_S = 0.5  # the window ends this long after the last counted message
WINDOW_S = 20.0  # ... or this long after the warm-up, whatever arrived


def peer_subs(p: dict, impl, link: Link) -> None:
    url = link.expect("url")
    n = p["nsubs"]
    subs = [impl.dial("sub", url) for _ in range(n)]
    link.say("connected")
    subs = [impl.ready(s) for s in subs]
    drain = impl.subs_drain(subs)
    warm = set()
    while len(warm) < n:  # every SUB has received a warm-up message: all are subscribed
        for i, msgs in drain(0.05):
            if msgs:
                warm.add(i)
    link.say("ready")
    expected = p["count"] * n
    delivered, t_first, t_last = 0, None, None
    cpu0 = _cpu()
    t_window = time.monotonic() + WINDOW_S
    while delivered < expected:
        now = time.monotonic()
        if now > t_window or (t_last is not None and now - t_last > QUIET_S):
            break
        for _, msgs in drain(0.05):
            got = 0
            for m in msgs:
                if m[0] == REAL:
                    got += 1
            if got:
                delivered += got
                t_last = time.monotonic()
                if t_first is None:
                    t_first = t_last
    link.say("result", {"delivered": delivered, "t_first": t_first, "t_last": t_last,
                        "cpu_s": _cpu() - cpu0})


def worker_fanout(p: dict, impl, script: str) -> dict:
    pub, url = impl.listen("pub", p["transport"])
    peer = Peer(p, "subs", impl, script)
    try:
        peer.link.say("url", url)
        peer.link.expect("connected")
        pub = impl.ready(pub, p["nsubs"])
        size, count, n = p["size"], p["count"], p["nsubs"]
        send = pub.send
        flush = getattr(pub, "flush", lambda: None)
        warm = b"w" * size
        while not peer.link.poll():  # publish until every SUB has had one
            send(warm)
            flush()
            time.sleep(0.005)
        peer.link.expect("ready")
        time.sleep(0.2)  # the warm-up messages still in flight land before the count
        t0, t_sent, res, cpu = _timed_sends(send, flush, b"m" * size, count, peer)
        delivered = res["delivered"]
        if not delivered:
            raise AssertionError("no message reached any subscriber")
        seconds = res["t_last"] - t0
        return {"count": count, "nsubs": n, "seconds": seconds, "send_seconds": t_sent - t0,
                "delivered": delivered, "delivery_fraction": delivered / (count * n),
                "delivered_per_s": delivered / seconds, "sent_per_s": count / (t_sent - t0),
                "cpu_s": cpu, "cpu_us_per_msg": cpu / delivered * 1e6}
    finally:
        peer.close()


# ---------------------------------------------------------------------------- idle pipes

PROTO_PUSH = 0x50  # the dialer's protocol id, peer of our PULL listener (SP v0)
FD_MARGIN = 64  # descriptors kept for the process itself (pipes, the listener, ...)
IDLE_S = 2.0
IDLE_SETTLE_S = 1.0


def raise_nofile() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peer_dialer(p: dict, impl, link: Link) -> None:
    """Open ``n`` raw TCP connections and send the SP header of a PUSH on each; no library."""
    soft, _ = raise_nofile()
    url, n = link.expect("url")
    host, port = url[len("tcp://"):].rsplit(":", 1)
    header = bytes([0, 0x53, 0x50, 0, 0, PROTO_PUSH, 0, 0])
    conns, error = [], None
    t0 = time.monotonic()
    for _ in range(n):
        try:
            s = socket.create_connection((host, int(port)), timeout=_impls.TIMEOUT_S)
            s.sendall(header)
        except OSError as exc:
            error = f"dialer: {len(conns)} connections, then {exc!r} (RLIMIT_NOFILE {soft})"
            break
        conns.append(s)
    link.say("dialed", {"n": len(conns), "error": error, "seconds": time.monotonic() - t0})
    link.expect("close", timeout=300.0)
    for s in conns:
        s.close()
    link.say("result", {})


def worker_idle(p: dict, impl, script: str) -> dict:
    soft, hard = raise_nofile()
    n = p["npipes"]
    notes = []
    if soft - FD_MARGIN < n:
        notes.append(f"RLIMIT_NOFILE hard limit {hard} allows {soft - FD_MARGIN} pipes, "
                     f"not {n}")
        n = soft - FD_MARGIN
    traced = impl.name == "scaproust"  # pynng's pipes live in C: RSS instead
    if traced:
        tracemalloc.start()
    sock, url = impl.listen("pull", p["transport"])
    time.sleep(0.1)
    gc.collect()
    heap0 = tracemalloc.get_traced_memory()[0] if traced else _rss_bytes()
    peer = Peer(p, "dialer", impl, script)
    try:
        t0 = time.monotonic()
        peer.link.say("url", [url, n])
        dialed = peer.link.expect("dialed", timeout=120.0)
        if dialed["error"]:
            notes.append(dialed["error"])
        want = dialed["n"]
        deadline = time.monotonic() + 60.0
        pipes = impl.pipes(sock)
        while pipes < want and time.monotonic() < deadline:
            time.sleep(0.02)
            pipes = impl.pipes(sock)
        connect_s = time.monotonic() - t0
        if pipes < want:
            notes.append(f"only {pipes} of {want} pipes opened within 60 s")
        if not pipes:
            raise AssertionError("no pipe opened")
        gc.collect()
        heap1 = tracemalloc.get_traced_memory()[0] if traced else _rss_bytes()
        if traced:
            tracemalloc.stop()  # it slows every allocation; not during the pauses below
        pauses = []
        for _ in range(3):
            t = time.perf_counter()
            gc.collect()
            pauses.append(time.perf_counter() - t)
        time.sleep(IDLE_SETTLE_S)  # let the aftermath of the collections above pass
        cpu0, w0 = _cpu(), time.monotonic()
        time.sleep(IDLE_S)
        idle_pct = (_cpu() - cpu0) / (time.monotonic() - w0) * 100
        pipes_after = impl.pipes(sock)
        peer.link.say("close")
        peer.link.expect("result", timeout=120.0)
        return {"npipes_asked": p["npipes"], "npipes": pipes, "pipes_after_idle": pipes_after,
                "connect_s": connect_s, "dial_s": dialed["seconds"],
                "per_pipe_bytes": (heap1 - heap0) / pipes,
                "per_pipe_measure": "tracemalloc heap" if traced else "RSS",
                "gc_pause_ms": max(pauses) * 1e3, "gc_pauses_ms": [x * 1e3 for x in pauses],
                "idle_cpu_pct": idle_pct, "rlimit_nofile": [soft, hard], "notes": notes,
                "seconds": connect_s}
    finally:
        peer.close()


PEERS = {"echo": peer_echo, "aecho": peer_aecho, "ctxecho": peer_ctxecho, "pull": peer_pull,
         "subs": peer_subs, "dialer": peer_dialer}

