"""PUSH/PULL model: N pushers x M pullers over real sockets, pullers closed and replaced.

The model, as precise as PUSH allows:

- A message goes to exactly one puller, so it is received at most once, anywhere, ever;
  nothing is received that was not sent; each puller sees each pusher's messages in the
  order they were sent (one pipe is FIFO; PULL fair-queues whole pipes).
- Closing a PULL loses what its pipes and its receive queue still hold: the messages
  queued in the closed pipes are gone, PUSH does not take them back (nng and nanomsg
  behave the same). So a message may be lost only if it was sent, by a pusher linked to
  that puller, before the close and had not been received when the close began (what the
  puller's user already received counts; the test drains it first, or waits for every
  message to arrive, or closes it at once, losing its receive queue too). The test sends
  nothing while a close is in progress: it waits until every pusher linked to the puller
  has seen its pipe end, and from then on nothing is at risk.
- Everything else, every message sent while all pipes stayed up, is received exactly once.
- With no puller a PUSH refuses a send that cannot wait (``try_send`` is False); a burst
  that fills the pipes (512 messages each) is sent as credit comes back.
"""

from __future__ import annotations

import time

from hypothesis import event, given
from hypothesis import strategies as st

import scaproust as sp
from tests.models_sockets.conftest import (
    DEADLINE,
    FAST,
    Addresses,
    bind_again,
    collect,
    collect_stragglers,
    drain,
    model_settings,
    transports,
    wait_for_pipes,
    wait_until,
)


@st.composite
def topologies(draw):
    """Pushers, pullers, and the links between them: (pusher, puller) -> who binds."""
    n_push = draw(st.integers(1, 3))
    n_pull = draw(st.integers(1, 3))
    links = {}
    for i in range(n_push):
        for j in range(n_pull):
            side = draw(st.sampled_from([None, "push", "pull"]))
            if side is not None:
                links[i, j] = side
        if not any(p == i for p, _ in links):  # a pusher without a puller could never send
            links[i, draw(st.integers(0, n_pull - 1))] = draw(st.sampled_from(["push", "pull"]))
    push_transports = [draw(transports) for _ in range(n_push)]
    pull_transports = [draw(transports) for _ in range(n_pull)]
    return n_push, n_pull, links, push_transports, pull_transports


#: Messages in a burst: more than a pipe queues (512), so send credit runs out at times.
BURST = 700

#: How a puller is closed: after every message not at risk arrived ("settle"), after taking
#: what it holds now ("drain"), or at once, losing its receive queue too ("abrupt").
CLOSE_MODES = ("settle", "drain", "abrupt")

operations = st.lists(
    st.one_of(
        # a burst now and then: pipes hold queued messages when a puller closes
        st.tuples(st.just("send"), st.integers(0, 2),
                  st.integers(1, 8) | st.sampled_from([BURST])),
        st.tuples(st.just("recv"), st.integers(0, 2)),
        st.tuples(st.just("close"), st.integers(0, 2), st.sampled_from(CLOSE_MODES)),
        st.tuples(st.just("reopen"), st.integers(0, 2)),
    ),
    min_size=2,
    max_size=25,
)


def parse(body: bytes) -> tuple[int, int]:
    sender, seq = body.split(b" ")
    return int(sender), int(seq)


class PushPullModel:
    """The sockets of one example and what the model expects of them."""

    def __init__(self, session, addresses, topology):
        self.session = session
        self.n_push, self.n_pull, self.links, push_tr, pull_tr = topology
        self.pushes = [session.socket(sp.Push, send_timeout=DEADLINE, **FAST)
                       for _ in range(self.n_push)]
        self.push_urls = {}
        for i, push in enumerate(self.pushes):
            if any(p == i and side == "push" for (p, _), side in self.links.items()):
                self.push_urls[i] = push.bind(addresses.new(push_tr[i])).url
        self.pull_urls = {}
        self.pulls: list = [None] * self.n_pull       # the live puller of each slot, or None
        self.instances: list = []                     # every puller ever: (socket, received)
        self.sent: list[tuple[int, int]] = []
        self.next_seq = [0] * self.n_push
        self.at_risk: set[tuple[int, int]] = set()
        self.credit_ran_out = 0
        for j in range(self.n_pull):
            self.open_pull(j, first_url=addresses.new(pull_tr[j]))
        self.settle_pipes()

    # ---------------------------------------------------------------- topology

    def linked_pullers(self, i: int) -> list[int]:
        return [j for (p, j) in self.links if p == i]

    def linked_pushers(self, j: int) -> list[int]:
        return [i for (i, q) in self.links if q == j]

    def open_pull(self, j: int, first_url: str | None = None) -> None:
        pull = self.session.socket(sp.Pull, recv_timeout=DEADLINE, **FAST)
        if any(q == j and side == "pull" for (_, q), side in self.links.items()):
            if j in self.pull_urls:  # a new puller on the same address
                bind_again(pull, self.pull_urls[j])
            else:
                self.pull_urls[j] = pull.bind(first_url).url
                for i in self.linked_pushers(j):  # their dialers redial a new puller too
                    if self.links[i, j] == "pull":
                        self.pushes[i].connect(self.pull_urls[j])
        for i in self.linked_pushers(j):
            if self.links[i, j] == "push":
                pull.connect(self.push_urls[i])
        self.pulls[j] = pull
        self.instances.append((pull, []))

    def settle_pipes(self) -> None:
        expected = {}
        for i, push in enumerate(self.pushes):
            expected[push] = sum(1 for j in self.linked_pullers(i) if self.pulls[j] is not None)
        for j, pull in enumerate(self.pulls):
            if pull is not None:
                expected[pull] = len(self.linked_pushers(j))
        wait_for_pipes(expected, what="the pipes of the model")

    # ---------------------------------------------------------------- receiving

    def received_lists(self) -> dict:
        return {sock: got for sock, got in self.instances if not sock.closed}

    def received(self) -> set[tuple[int, int]]:
        return {parse(body) for _, got in self.instances for body in got}

    def safe(self) -> set[tuple[int, int]]:
        return set(self.sent) - self.at_risk

    def receive_all_safe(self) -> None:
        lists = self.received_lists()
        collect(lists, lambda: self.safe() <= self.received(),
                what="every message sent while all pipes stayed up")

    # ---------------------------------------------------------------- operations

    def send(self, i: int, count: int) -> None:
        push = self.pushes[i]
        if not any(self.pulls[j] is not None for j in self.linked_pullers(i)):
            # No puller: send() blocks (README), so a send that cannot wait is refused.
            assert push.try_send(b"nobody to take it") is False
            return
        for _ in range(count):
            seq = self.next_seq[i]
            self.next_seq[i] += 1
            body = b"%d %d" % (i, seq)
            deadline = time.monotonic() + DEADLINE
            while not push.try_send(body):  # a burst filled the pipes: receive some
                self.credit_ran_out += 1
                assert time.monotonic() < deadline, f"pusher {i} blocked for {DEADLINE}s"
                for pull, got in self.received_lists().items():
                    drain(pull, got)
                sp.poll({push: sp.POLLOUT}, timeout=0.01)
            self.sent.append((i, seq))

    def recv(self, j: int) -> None:
        pull = self.pulls[j]
        if pull is not None:
            drain(pull, self.received_lists()[pull])

    def close(self, j: int, mode: str) -> None:
        pull = self.pulls[j]
        if pull is None:
            return
        if mode == "settle":
            self.receive_all_safe()
        if mode != "abrupt":
            drain(pull, self.received_lists()[pull])  # what it got is counted
        # Whatever a linked pusher sent that nobody has received yet may sit in the pipes
        # being closed or in this puller's receive queue: it may be lost, never duplicated.
        linked = set(self.linked_pushers(j))
        received = self.received()
        self.at_risk |= {m for m in self.sent if m[0] in linked and m not in received}
        pull.close()
        self.pulls[j] = None
        self.settle_pipes()  # every pusher has seen its pipe end: nothing more at risk

    def reopen(self, j: int) -> None:
        if self.pulls[j] is None:
            self.open_pull(j)
            self.settle_pipes()

    # ---------------------------------------------------------------- the verdict

    def check(self) -> set[tuple[int, int]]:
        """Receive the rest and judge; returns the messages lost (all of them at risk)."""
        self.receive_all_safe()
        collect_stragglers(self.received_lists())
        sent = set(self.sent)
        seen: dict[tuple[int, int], int] = {}
        for n, (_, got) in enumerate(self.instances):
            last: dict[int, int] = {}
            for body in got:
                msg = parse(body)
                assert msg in sent, f"puller #{n} received {body!r}, which nobody sent"
                assert msg not in seen, (
                    f"{body!r} received twice: by puller #{seen[msg]} and puller #{n}")
                seen[msg] = n
                sender, seq = msg
                assert seq > last.get(sender, -1), (
                    f"puller #{n} got pusher {sender}'s {seq} after {last[sender]}: {got}")
                last[sender] = seq
        lost = sent - set(seen)
        assert lost <= self.at_risk, (
            f"lost messages sent while all pipes stayed up: {sorted(lost - self.at_risk)}")
        # The counters agree: every send() counted once, every receive at most once.
        wait_until(lambda: sum(p.stats.get("msgs_sent", 0) for p in self.pushes) == len(self.sent),
                   what="the pushers' count of messages sent")
        counted = 0
        for sock, got in self.instances:
            n = sock.stats.get("msgs_received", 0)
            counted += n
            if sock.closed:
                assert n >= len(got)
            else:
                assert n == len(got), (sock, n, len(got))
        assert counted <= len(self.sent), (counted, len(self.sent))
        return lost


@model_settings(15)
@given(topology=topologies(), ops=operations)
def test_push_pull_deliver_once_in_order_and_lose_only_what_a_closed_puller_held(topology, ops):
    with Addresses() as addresses, sp.Session() as session:
        model = PushPullModel(session, addresses, topology)
        for op in ops:
            kind, index = op[0], op[1]
            if kind == "send":
                model.send(index % model.n_push, op[2])
            elif kind == "recv":
                model.recv(index % model.n_pull)
            elif kind == "close":
                model.close(index % model.n_pull, op[2])
            else:
                model.reopen(index % model.n_pull)
        # a last round with every puller back, so something is always checked after closes
        for j in range(model.n_pull):
            model.reopen(j)
        for i in range(model.n_push):
            model.send(i, 3)
        lost = model.check()
        closes = sum(op[0] == "close" for op in ops)
        event(f"close operations: {closes if closes < 3 else '3 or more'}")
        event(f"messages at risk: {'some' if model.at_risk else 'none'}")
        event(f"messages lost: {'some' if lost else 'none'}")
        event(f"bursts: {'some' if any(op[0] == 'send' and op[2] == BURST for op in ops) else 'none'}")
        event(f"send credit ran out: {'yes' if model.credit_ran_out else 'no'}")


def test_messages_sent_after_every_pusher_saw_a_puller_close_all_arrive():
    """A fixed example of the model: close one of two pullers while messages are in
    flight, then send more: the later ones all arrive, at the other puller."""
    with Addresses() as addresses, sp.Session() as session:
        topology = (1, 2, {(0, 0): "pull", (0, 1): "push"}, ["tcp"], ["ipc", "inproc"])
        model = PushPullModel(session, addresses, topology)
        model.send(0, 20)
        model.close(0, "abrupt")
        model.send(0, 20)
        model.reopen(0)
        model.send(0, 20)
        model.check()
        assert model.safe() >= {(0, seq) for seq in range(20, 60)}
