"""BUS model: random small meshes over real sockets.

Each node of a random graph (3 to 5 nodes, each edge a bind on one side and a connect on
the other, over TCP, IPC or inproc) sends numbered messages once every pipe is up. BUS
sends each message once to each direct neighbour and forwards nothing, so every node
receives exactly its neighbours' messages, once each, each neighbour's in the order sent;
nothing from a node it has no edge to, and never its own.
"""

from __future__ import annotations

from hypothesis import event, given
from hypothesis import strategies as st

import scaproust as sp
from tests.models_sockets.conftest import (
    FAST,
    Addresses,
    collect,
    collect_stragglers,
    model_settings,
    transports,
    wait_for_pipes,
    wait_until,
)


@st.composite
def meshes(draw):
    """(nodes, {(a, b): the node that binds}, transports, connect order, who sends when)."""
    n = draw(st.integers(3, 5))
    edges = {}
    for a in range(n):
        for b in range(a + 1, n):
            binder = draw(st.sampled_from([None, a, b]))  # None: no edge between a and b
            if binder is not None:
                edges[a, b] = binder
    node_transports = [draw(transports) for _ in range(n)]
    order = draw(st.permutations(sorted(edges)))
    senders = draw(st.lists(st.integers(0, n - 1), max_size=40))
    return n, edges, node_transports, order, senders


def parse(body: bytes) -> tuple[int, int]:
    sender, seq = body.split(b" ")
    return int(sender), int(seq)


@model_settings(15)
@given(mesh=meshes())
def test_a_bus_node_hears_each_neighbour_once_in_order_and_nobody_else(mesh):
    n, edges, node_transports, order, senders = mesh
    neighbours = {v: set() for v in range(n)}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    with Addresses() as addresses, sp.Session() as session:
        nodes = [session.socket(sp.Bus, **FAST) for _ in range(n)]
        urls = {}
        for v in sorted(set(edges.values())):
            urls[v] = nodes[v].bind(addresses.new(node_transports[v])).url
        for a, b in order:
            binder = edges[a, b]
            dialer = b if binder == a else a
            nodes[dialer].connect(urls[binder])
        wait_for_pipes({nodes[v]: len(neighbours[v]) for v in range(n)})

        sent = {v: [] for v in range(n)}
        for v in senders:
            seq = len(sent[v])
            nodes[v].send(b"%d %d" % (v, seq))
            sent[v].append(seq)

        expected = {v: {(u, seq) for u in neighbours[v] for seq in sent[u]} for v in range(n)}
        got = {nodes[v]: [] for v in range(n)}
        collect(got, lambda: all(len(got[nodes[v]]) >= len(expected[v]) for v in range(n)),
                what="every neighbour's messages")
        collect_stragglers(got)

        for v in range(n):
            received = [parse(body) for body in got[nodes[v]]]
            assert all(u != v for u, _ in received), f"node {v} heard itself: {received}"
            strangers = [m for m in received if m[0] not in neighbours[v]]
            assert not strangers, f"node {v} heard non-neighbours (BUS must not forward): {strangers}"
            assert len(received) == len(set(received)), f"node {v} heard duplicates: {received}"
            assert set(received) == expected[v], (
                f"node {v} missed {sorted(expected[v] - set(received))}")
            for u in neighbours[v]:
                from_u = [seq for w, seq in received if w == u]
                assert from_u == sent[u], f"node {v} heard node {u} out of order: {from_u}"
            # send() hands over to the I/O thread, which counts what it takes: wait for it.
            wait_until(lambda v=v: nodes[v].stats.get("msgs_sent", 0) == len(sent[v]),
                       what=f"node {v}'s count of messages sent")
            stats = nodes[v].stats
            assert stats.get("msgs_received", 0) == len(received)
            assert stats.get("dropped_pipe_full", 0) == 0
        event(f"edges: {len(edges)}")
