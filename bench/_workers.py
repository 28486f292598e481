"""The measurements themselves, run in a worker process started by bench/run.py.

A worker measures one implementation (one scaproust backend) once and returns a dict that
run.py prints as one JSON line. Two kinds:

- ``push_pull``: a PUSH sends ``count`` messages of ``size`` bytes to a PULL as fast as it
  can; the PULL counts every message and every byte. Rate = count / (time from the first
  send to the receipt of the last message). Threads mode: sender in the main thread,
  receiver in a second thread of the same process. Procs mode: the receiver is a child
  process (same script, ``--child push_pull_recv``); both sides read CLOCK_MONOTONIC, which
  is system-wide.
- ``pair_rtt``: one PAIR sends a message and waits for the echo from another PAIR, ``count``
  times; each round trip is timed on its own. The echo runs in a second thread (threads
  mode) or in a child process (procs mode, ``--child pair_echo``).

Both start with a warm-up (connection established, code paths hot) that is not timed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time

import _impls

JOIN_S = _impls.TIMEOUT_S + 10.0


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


# ---------------------------------------------------------------------------- push -> pull


def push_pull(impl_name: str, transport: str, size: int, count: int, warmup: int,
              procs: bool, script: str) -> dict:
    if procs:
        return _push_pull_procs(impl_name, transport, size, count, warmup, script)
    impl = _impls.make(impl_name)
    try:
        pull, url = impl.pull(transport)
        push = impl.push(url)
        msg = b"x" * size
        for _ in range(warmup):  # one at a time: never more in flight than the pipes hold
            push.send(msg)
            got = pull.recv()
            if len(got) != size:
                raise AssertionError(f"warm-up message of {len(got)} bytes, expected {size}")

        result: dict = {}
        go = threading.Event()

        def receiver() -> None:
            try:
                recv = pull.recv
                total = 0
                go.wait()
                for _ in range(count):
                    total += len(recv())
                result["t_end"] = time.monotonic()
                result["bytes"] = total
            except BaseException as exc:  # reported, never swallowed
                result["error"] = repr(exc)

        thread = threading.Thread(target=receiver, name="bench-receiver", daemon=True)
        thread.start()
        send = push.send
        cpu0 = _cpu()
        go.set()
        t0 = time.monotonic()
        for _ in range(count):
            send(msg)
        t_sent = time.monotonic()
        thread.join(JOIN_S)
        cpu = _cpu() - cpu0
        if thread.is_alive():
            raise TimeoutError("receiver thread did not finish")
        if "error" in result:
            raise RuntimeError("receiver: " + result["error"])
        return _rate(result["t_end"] - t0, t_sent - t0, result["bytes"], size, count,
                     impl.info(), cpu_s=cpu)
    finally:
        impl.close()


def _push_pull_procs(impl_name, transport, size, count, warmup, script) -> dict:
    child = _spawn(script, "push_pull_recv", impl_name, transport, size, count, warmup)
    impl = None
    try:
        url = _expect(child, "url")
        impl = _impls.make(impl_name)
        push = impl.push(url)
        msg = b"x" * size
        for _ in range(warmup):
            push.send(msg)
        _expect(child, "ready")
        send = push.send
        t0 = time.monotonic()
        for _ in range(count):
            send(msg)
        t_sent = time.monotonic()
        result = json.loads(_expect(child, "result"))
        if "error" in result:
            raise RuntimeError("receiver process: " + result["error"])
        return _rate(result["t_end"] - t0, t_sent - t0, result["bytes"], size, count,
                     impl.info())
    finally:
        if impl is not None:
            impl.close()
        _reap(child)


def child_push_pull_recv(impl_name, transport, size, count, warmup) -> None:
    impl = _impls.make(impl_name)
    try:
        pull, url = impl.pull(transport)
        _say("url", url)
        recv = pull.recv
        for _ in range(warmup):
            recv()
        _say("ready", "")
        total = 0
        try:
            for _ in range(count):
                total += len(recv())
            _say("result", json.dumps({"t_end": time.monotonic(), "bytes": total}))
        except BaseException as exc:
            _say("result", json.dumps({"error": repr(exc)}))
    finally:
        impl.close()


def _rate(seconds, send_seconds, nbytes, size, count, info, **extra) -> dict:
    if nbytes != size * count:
        raise AssertionError(f"received {nbytes} bytes, expected {count} x {size}")
    return {
        "count": count, "size": size, "seconds": seconds, "send_seconds": send_seconds,
        "msgs_per_s": count / seconds, "mb_per_s": nbytes / seconds / 1e6,
        "impl": info, **extra,
    }


# ---------------------------------------------------------------------------- pair rtt


def pair_rtt(impl_name: str, transport: str, size: int, count: int, warmup: int,
             procs: bool, script: str) -> dict:
    child = None
    impl = _impls.make(impl_name)
    thread = None
    failure: dict = {}
    try:
        if procs:
            child = _spawn(script, "pair_echo", impl_name, transport, size, count, warmup)
            a = impl.pair_dial(_expect(child, "url"))
        else:
            a, url = impl.pair_listen(transport)
            b = impl.pair_dial(url)

            def echo() -> None:
                try:
                    bsend, brecv = b.send, b.recv
                    for _ in range(warmup + count):
                        bsend(brecv())
                except BaseException as exc:
                    failure["error"] = repr(exc)

            thread = threading.Thread(target=echo, name="bench-echo", daemon=True)
            thread.start()

        msg = b"p" * size
        send, recv = a.send, a.recv
        for _ in range(warmup):
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
        if thread is not None:
            thread.join(JOIN_S)
            if "error" in failure:
                raise RuntimeError("echo thread: " + failure["error"])
        samples.sort()
        us = 1e6
        return {
            "count": count, "size": size, "seconds": total,
            "rtt_median_us": _pct(samples, 50) * us, "rtt_p99_us": _pct(samples, 99) * us,
            "rtt_mean_us": total / count * us, "rtt_min_us": samples[0] * us,
            "rtt_max_us": samples[-1] * us, "impl": impl.info(),
            **({} if procs else {"cpu_s": cpu}),
        }
    finally:
        impl.close()
        if child is not None:
            _reap(child)


def child_pair_echo(impl_name, transport, size, count, warmup) -> None:
    impl = _impls.make(impl_name)
    try:
        sock, url = impl.pair_listen(transport)
        _say("url", url)
        send, recv = sock.send, sock.recv
        for _ in range(warmup + count):
            send(recv())
    finally:
        impl.close()


def _pct(sorted_samples, p) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_samples)))
    return sorted_samples[rank - 1]


# ---------------------------------------------------------------------------- child plumbing


def _spawn(script, role, impl_name, transport, size, count, warmup) -> subprocess.Popen:
    cmd = [sys.executable, script, "--child", role, "--impl", impl_name,
           "--transport", transport, "--size", str(size), "--count", str(count),
           "--warmup", str(warmup)]
    # Same environment (SCAPROUST_FSM included) and same process group: the parent's
    # timeout kill reaches it too.
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def _say(tag: str, text: str) -> None:
    sys.stdout.write(f"{tag} {text}\n")
    sys.stdout.flush()


def _expect(child: subprocess.Popen, tag: str) -> str:
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"child process ended (rc={child.poll()}) before saying {tag!r}")
    got, _, rest = line.rstrip("\n").partition(" ")
    if got != tag:
        raise RuntimeError(f"child said {line!r}, expected {tag!r}")
    return rest


def _reap(child: subprocess.Popen) -> None:
    try:
        child.wait(10.0)  # it exits on its own once done; not when we stopped early
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    finally:
        if child.stdout is not None:
            child.stdout.close()
