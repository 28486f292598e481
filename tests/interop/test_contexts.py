"""Contexts against pynng's (nng 1.11): 100 concurrent requests from 10 pynng REQ contexts
served by a scaproust REP with 8 threads, each with its own context, and the reverse (10
scaproust REQ contexts against a pynng REP served by 8 threads with 8 pynng contexts).
Every request is answered exactly once, with its own reply, over TCP and IPC.
"""

from __future__ import annotations

import threading

import pytest

import scaproust as sp

CLIENTS, PER_CLIENT, SERVERS = 10, 10, 8
DEADLINE = 10.0  # seconds: a bound for a hang, never waited for when all goes well


@pytest.fixture(params=["tcp", "ipc"])
def address(request, tmp_path):
    return "tcp://127.0.0.1:0" if request.param == "tcp" else f"ipc://{tmp_path}/ctx.ipc"


def run_threads(targets) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE * 3)
    assert not any(t.is_alive() for t in threads), "a thread hung"


def test_pynng_req_contexts_against_a_scaproust_rep_served_by_8_contexts(pynng, session,
                                                                          address):
    rep = session.socket(sp.Rep)
    url = rep.bind(address).url
    served: list[bytes] = []
    served_lock = threading.Lock()

    def server() -> None:
        with rep.context() as ctx:
            ctx.recv_timeout = DEADLINE
            while True:
                try:
                    body = ctx.recv()
                except (sp.Closed, sp.Timeout):
                    return
                with served_lock:
                    served.append(body)
                ctx.send(b"re:" + body)

    servers = [threading.Thread(target=server, daemon=True) for _ in range(SERVERS)]
    for thread in servers:
        thread.start()

    answers: dict[bytes, list[bytes]] = {}
    with pynng.Req0(dial=url, recv_timeout=round(DEADLINE * 1000),
                    send_timeout=round(DEADLINE * 1000)) as req:

        def client(k: int) -> None:
            ctx = req.new_context()
            try:
                for i in range(PER_CLIENT):
                    body = b"c%d-%d" % (k, i)
                    ctx.send(body)
                    answers.setdefault(body, []).append(ctx.recv())
            finally:
                ctx.close()

        run_threads([lambda k=k: client(k) for k in range(CLIENTS)])
    rep.close()
    for thread in servers:
        thread.join(DEADLINE)

    expected = {b"c%d-%d" % (k, i) for k in range(CLIENTS) for i in range(PER_CLIENT)}
    assert set(answers) == expected
    assert all(got == [b"re:" + body] for body, got in answers.items())
    assert sorted(served) == sorted(expected)  # each answered once: no resend was needed


def test_scaproust_req_contexts_against_a_pynng_rep_served_by_8_contexts(pynng, session,
                                                                          address):
    # pynng contexts take the socket's receive timeout when made: a short one lets each
    # server thread see ``stop`` and close its own context before the socket closes.
    rep = pynng.Rep0(listen=address, recv_timeout=50)
    served: list[bytes] = []
    served_lock = threading.Lock()
    stop = threading.Event()

    def server() -> None:
        ctx = rep.new_context()
        try:
            while not stop.is_set():
                try:
                    body = ctx.recv()
                except pynng.Timeout:
                    continue
                with served_lock:
                    served.append(body)
                ctx.send(b"re:" + body)
        finally:
            ctx.close()

    servers = [threading.Thread(target=server, daemon=True) for _ in range(SERVERS)]
    try:
        for thread in servers:
            thread.start()
        # str() of the listener's address: its .port is in network byte order (pynng 0.9).
        url = address if address.startswith("ipc") else \
            f"tcp://{rep.listeners[0].local_address}"
        req = session.socket(sp.Req, recv_timeout=DEADLINE)
        req.connect(url)
        answers: dict[bytes, list[bytes]] = {}

        def client(k: int) -> None:
            with req.context() as ctx:
                for i in range(PER_CLIENT):
                    body = b"c%d-%d" % (k, i)
                    ctx.send(body)
                    answers.setdefault(body, []).append(ctx.recv())

        run_threads([lambda k=k: client(k) for k in range(CLIENTS)])
    finally:
        stop.set()
        for thread in servers:
            thread.join(DEADLINE)
        rep.close()

    expected = {b"c%d-%d" % (k, i) for k in range(CLIENTS) for i in range(PER_CLIENT)}
    assert set(answers) == expected
    assert all(got == [b"re:" + body] for body, got in answers.items())
    assert sorted(served) == sorted(expected)
    assert req.stats.get("dropped_stale", 0) == 0
