"""`python -m scaproust demo`: PAIR and PUSH/PULL peers in separate processes, over TCP
and IPC, printing what flows.

The parent binds; each child is a fresh Python process that connects, so every message
really crosses a process boundary on the wire.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import scaproust as sp

JOBS = 5
PINGS = 3


def _child(role: str, url: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-m", "scaproust", "demo-peer", role, url], env=env)


def _wait(proc: subprocess.Popen[bytes]) -> None:
    try:
        if proc.wait(timeout=20) != 0:
            raise SystemExit(f"demo peer exited with status {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()


def peer(role: str, url: str) -> None:
    """The child side: a PUSH that sends jobs, or a PAIR that answers pings."""
    with sp.Session() as session:
        if role == "push":
            push = session.socket(sp.Push, send_timeout=10.0)
            push.connect(url)
            for i in range(JOBS):
                push.send(f"job {i} from pid {os.getpid()}".encode())
            print(f"  [push pid {os.getpid()}] sent {JOBS} jobs to {url}", flush=True)
        elif role == "pair":
            pair = session.socket(sp.Pair, send_timeout=10.0, recv_timeout=10.0)
            pair.connect(url)
            for _ in range(PINGS):
                ping = pair.recv()
                print(f"  [pair pid {os.getpid()}] got {ping!r}, answering", flush=True)
                pair.send(ping.replace(b"ping", b"pong"))
        else:
            raise SystemExit(f"unknown demo role {role!r}")


def demo() -> None:
    """The parent side: bind, start a child per pattern and transport, print the traffic."""
    tmp = tempfile.mkdtemp(prefix="scaproust-demo-")
    urls = {"tcp": "tcp://127.0.0.1:0", "ipc": f"ipc://{tmp}/demo.ipc"}
    started = time.perf_counter()
    with sp.Session() as session:
        for name, url in urls.items():
            print(f"PUSH -> PULL over {name}")
            pull = session.socket(sp.Pull, recv_timeout=10.0)
            ep = pull.bind(url)
            child = _child("push", ep.url)
            for _ in range(JOBS):
                print(f"  [pull pid {os.getpid()}] received {pull.recv()!r} on {ep.url}", flush=True)
            _wait(child)
            pull.close()

            print(f"PAIR <-> PAIR over {name}")
            pair = session.socket(sp.Pair, send_timeout=10.0, recv_timeout=10.0)
            ep = pair.bind(url)
            child = _child("pair", ep.url)
            for i in range(PINGS):
                pair.send(f"ping {i}".encode())
                print(f"  [pair pid {os.getpid()}] sent ping {i}, got back {pair.recv()!r}", flush=True)
            _wait(child)
            pair.close()
    print(f"demo done in {time.perf_counter() - started:.2f} s: every message accounted for")
    try:
        os.rmdir(tmp)
    except OSError:
        pass
