"""REQ/REP model: clients and servers through a device, answered out of order.

    clients (REQ) -> [raw REP | sp.device | raw REQ] -> servers (raw REP)

Each client sends numbered requests, one outstanding at a time (a new one abandons the
last); the servers are raw, so they can hold several requests and answer them in any
order, each reply naming its server. The model: every request reaches exactly one server
exactly once; a client's recv() returns exactly the reply to its current request, from
the server that held it, never another client's reply nor the reply to a request it
abandoned; replies to abandoned requests still reach their client and are dropped there,
so each client accounts for every reply sent to it: ``msgs_received + dropped_stale``.
recv() with no request outstanding is ``sp.BadState``.

Either side of the device binds (or each client / server binds and the device connects),
over TCP, IPC or inproc.
"""

from __future__ import annotations

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import scaproust as sp
from tests.models_sockets.conftest import (
    DEADLINE,
    FAST,
    Addresses,
    model_settings,
    transports,
    wait_for_pipes,
    wait_until,
)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.integers(0, 3)),
        st.tuples(st.just("answer"), st.integers(0, 7)),  # which held request: any order
        st.tuples(st.just("collect"), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=30,
)


@st.composite
def setups(draw):
    return (
        draw(st.integers(1, 4)),   # clients
        draw(st.integers(1, 3)),   # servers
        draw(st.booleans()),       # the device's front binds (else each client binds)
        draw(st.booleans()),       # the device's back binds (else each server binds)
        draw(transports),          # front transport
        draw(transports),          # back transport
    )


def try_recv_msg(sock) -> sp.Message | None:
    try:
        return sock.recv_msg(block=False)
    except sp.WouldBlock:
        return None


class ReqRepModel:
    def __init__(self, session, addresses, setup):
        n_clients, n_servers, front_binds, back_binds, front_tr, back_tr = setup
        self.front = session.socket(sp.Rep, raw=True, **FAST)
        self.back = session.socket(sp.Req, raw=True, **FAST)
        # resend_interval: no resend during an example, so each request travels once
        self.clients = [session.socket(sp.Req, recv_timeout=DEADLINE, send_timeout=DEADLINE,
                                       resend_interval=60.0, **FAST) for _ in range(n_clients)]
        self.servers = [session.socket(sp.Rep, raw=True, send_timeout=DEADLINE, **FAST)
                        for _ in range(n_servers)]
        self._join(self.front, self.clients, front_binds, addresses, front_tr)
        self._join(self.back, self.servers, back_binds, addresses, back_tr)
        self.device = sp.device(self.front, self.back, background=True)
        wait_for_pipes({self.front: n_clients, self.back: n_servers,
                        **{c: 1 for c in self.clients}, **{s: 1 for s in self.servers}})
        self.next_seq = [0] * n_clients
        self.current: list[int | None] = [None] * n_clients  # outstanding request per client
        self.requests = 0                          # requests sent, by every client
        self.seen: dict[bytes, int] = {}           # request body -> the server that got it
        self.held: list[tuple[int, sp.Message]] = []  # (server, request) not answered yet
        self.answered: dict[bytes, int] = {}       # request body -> the server that answered
        self.replies_to = [0] * n_clients          # replies sent to each client
        self.collected = 0

    @staticmethod
    def _join(device_side, peers, device_binds, addresses, transport):
        if device_binds:
            url = device_side.bind(addresses.new(transport)).url
            for peer in peers:
                peer.connect(url)
        else:
            for peer in peers:
                device_side.connect(peer.bind(addresses.new(transport)).url)

    @staticmethod
    def body(client: int, seq: int) -> bytes:
        return b"c%d r%d" % (client, seq)

    def request(self, c: int) -> None:
        seq = self.next_seq[c]
        self.next_seq[c] += 1
        self.clients[c].send(self.body(c, seq))  # abandons the outstanding one, if any
        self.current[c] = seq
        self.requests += 1
        self._take_requests()

    def _take_requests(self) -> None:
        """Wait until the servers hold every request sent (each exactly once)."""

        def all_held() -> bool:
            ready = sp.poll({s: sp.POLLIN for s in self.servers}, timeout=0.01)
            for server in ready:
                n = self.servers.index(server)
                while (msg := try_recv_msg(server)) is not None:
                    assert msg.body not in self.seen, (
                        f"request {msg.body!r} reached server {n} after server "
                        f"{self.seen[msg.body]}")
                    self.seen[msg.body] = n
                    self.held.append((n, msg))
            return len(self.seen) >= self.requests

        wait_until(all_held, what="the request to reach a server")
        assert len(self.seen) == self.requests

    def answer(self, index: int) -> None:
        if not self.held:
            return
        n, msg = self.held.pop(index % len(self.held))
        self.servers[n].send_msg(sp.Message(msg.body + b" by s%d" % n, msg.header))
        self.answered[msg.body] = n
        client = int(msg.body.split(b" ")[0][1:])
        self.replies_to[client] += 1

    def collect(self, c: int) -> None:
        client = self.clients[c]
        seq = self.current[c]
        if seq is None:
            with pytest.raises(sp.BadState):
                client.recv(block=False)
            return
        body = self.body(c, seq)
        if body not in self.answered:
            return  # not answered yet: recv() would wait
        reply = client.recv()
        assert reply == body + b" by s%d" % self.answered[body], (
            f"client {c} waiting for the reply to {body!r} got {reply!r}")
        self.current[c] = None
        self.collected += 1

    def finish(self) -> None:
        while self.held:  # answer the rest, last first
            self.answer(-1)
        for c in range(len(self.clients)):
            self.collect(c)
            assert self.current[c] is None
        # Every reply reached its client: handed over, or dropped there as stale.
        for c, client in enumerate(self.clients):
            def accounted(client=client, c=c) -> bool:
                stats = client.stats
                return (stats.get("msgs_received", 0) + stats.get("dropped_stale", 0)
                        == self.replies_to[c])

            wait_until(accounted, what=f"client {c} to account for every reply sent to it")
        assert sorted(self.answered) == sorted(self.seen)
        self.device.stop()
        assert self.device.join(DEADLINE)


@model_settings(20)
@given(setup=setups(), ops=operations)
def test_every_client_gets_exactly_the_reply_to_its_current_request(setup, ops):
    with Addresses() as addresses, sp.Session() as session:
        model = ReqRepModel(session, addresses, setup)
        for kind, index in ops:
            if kind == "request":
                model.request(index % len(model.clients))
            elif kind == "answer":
                model.answer(index)
            else:
                model.collect(index % len(model.clients))
        model.finish()
        abandoned = model.requests - model.collected
        event(f"abandoned requests: {'some' if abandoned else 'none'}")
