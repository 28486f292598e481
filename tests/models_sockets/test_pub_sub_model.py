"""PUB/SUB model: subscribers join, change topics and leave, with random topics.

A subscriber receives only messages that match its topics (a topic matches a body it is a
prefix of), in the order published, never twice. PUB does not wait for anyone: a message
published before a subscriber's pipe is up is not for it. So the model starts each
subscriber at its first message (the warm-up: the test publishes a matching message until
one arrives); from then on, until it leaves, it receives every message that matches its
topics, as long as it is not slow (the volumes are small, and the test checks that the
publisher dropped nothing for a slow subscriber).

Topics change while messages flow (subscribe() the new ones, then unsubscribe() the old
ones, one call at a time). Each call makes a new *version* of the topic set; the model
knows the version in force when each message was published and when it was received:

- a message received matched some version between the two (the SUB filters when the
  message arrives, with the topics of that moment);
- once any unsubscribe() has returned, a message received matches the topics of the
  moment it is received (unsubscribing purges the receive queue, docs of protocols/sub.py);
- a message published after the warm-up that matches every version from its publication
  to the end must be received.

The publisher binds one address, or connects to a subscriber that binds; either side can
be TCP, IPC or inproc.
"""

from __future__ import annotations

from hypothesis import event, given
from hypothesis import strategies as st

import scaproust as sp
from tests.models_sockets.conftest import (
    DEADLINE,
    FAST,
    Addresses,
    collect,
    collect_stragglers,
    drain,
    model_settings,
    transports,
    wait_for_pipes,
    wait_until,
)

#: Topics a subscriber may hold (overlapping prefixes on purpose; b"" matches everything).
SUB_TOPICS = (b"", b"a", b"ab", b"b", b"c")
#: Topics messages are published on; b"d" matches only the empty topic.
MSG_TOPICS = (b"a", b"ab", b"abc", b"b", b"ba", b"c", b"d")

topic_sets = st.frozensets(st.sampled_from(SUB_TOPICS), min_size=1, max_size=3)
joins = st.tuples(st.just("join"), topic_sets, st.booleans(), transports)

operations = st.lists(
    st.one_of(
        joins,
        st.tuples(st.just("leave"), st.integers(0, 3)),
        st.tuples(st.just("publish"), st.sampled_from(MSG_TOPICS), st.integers(1, 6)),
        st.tuples(st.just("recv"), st.integers(0, 3)),
        st.tuples(st.just("topics"), st.integers(0, 3), topic_sets),
    ),
    max_size=20,
)


def matches(topics, topic: bytes) -> bool:
    return any(topic.startswith(t) for t in topics)


def parse(body: bytes) -> tuple[bytes, int]:
    topic, seq = body.split(b"|")
    return topic, int(seq)


class Subscriber:
    """One SUB and its history: topic versions, and what it received under which."""

    def __init__(self, sock, topics, endpoint, published: list[bytes]):
        self.sock = sock
        self.pub_endpoint = endpoint  # the PUB's connect() to this subscriber, if it binds
        self.published = published    # the model's list: seq -> topic
        # versions[v] = (first seq published under it, topics, an unsubscribe made it)
        self.versions: list[tuple[int, frozenset, bool]] = [(0, frozenset(topics), False)]
        self.got: list[bytes] = []
        self.got_under: list[int] = []  # the version in force when each was received
        self.joined_at = len(published)
        self.warm_up = 0              # the first message published for it once connected
        self.left_at: int | None = None

    @property
    def topics(self) -> frozenset:
        return self.versions[-1][1]

    def take(self, receive) -> None:
        """Run ``receive(list)`` and note the current version for what it appended."""
        before = len(self.got)
        receive(self.got)
        self.got_under += [len(self.versions) - 1] * (len(self.got) - before)

    def change_topics(self, new: frozenset) -> None:
        old = self.topics
        for topic in sorted(new - old):
            self.sock.subscribe(topic)
            self.versions.append((len(self.published), self.topics | {topic}, False))
        for topic in sorted(old - new):
            self.sock.unsubscribe(topic)
            self.versions.append((len(self.published), self.topics - {topic}, True))

    def version_of(self, seq: int) -> int:
        """The version in force when message ``seq`` was published."""
        return max(v for v, (first, _, _) in enumerate(self.versions) if first <= seq)

    def start(self) -> int:
        return parse(self.got[0])[1]

    def expected(self, end: int) -> list[int]:
        """Every message it must have once it has its first one, up to ``end``."""
        if not self.got:
            return []
        return [seq for seq in range(self.start(), end)
                if all(matches(topics, self.published[seq])
                       for _, topics, _ in self.versions[self.version_of(seq):])]

    def received(self) -> list[int]:
        return [parse(body)[1] for body in self.got]


class PubSubModel:
    def __init__(self, session, addresses, pub_transport):
        self.session = session
        self.addresses = addresses
        self.pub = session.socket(sp.Pub, **FAST)
        self.pub_url = self.pub.bind(addresses.new(pub_transport)).url
        self.published: list[bytes] = []  # seq -> topic
        self.subs: list[Subscriber] = []

    def live(self) -> list[Subscriber]:
        return [s for s in self.subs if s.left_at is None]

    def pick(self, index: int) -> Subscriber | None:
        live = self.live()
        return live[index % len(live)] if live else None

    def publish(self, topic: bytes, count: int = 1) -> None:
        for _ in range(count):
            self.pub.send(topic + b"|%d" % len(self.published))
            self.published.append(topic)

    def join(self, topics, sub_binds: bool, transport: str) -> None:
        sock = self.session.socket(sp.Sub, recv_timeout=DEADLINE, **FAST)
        for topic in sorted(topics):
            sock.subscribe(topic)
        endpoint = None
        if sub_binds:
            endpoint = self.pub.connect(sock.bind(self.addresses.new(transport)).url)
        else:
            sock.connect(self.pub_url)
        sub = Subscriber(sock, topics, endpoint, self.published)
        self.subs.append(sub)
        wait_for_pipes({self.pub: len(self.live()), sock: 1}, what="the new subscriber's pipe")
        # Warm-up: publish a message it wants until one arrives.
        topic = next(t for t in MSG_TOPICS if matches(topics, t))
        sub.warm_up = len(self.published)

        def arrived() -> bool:
            if sp.poll({sock: sp.POLLIN}, timeout=0):
                return True
            self.publish(topic)
            return bool(sp.poll({sock: sp.POLLIN}, timeout=0.01))

        wait_until(arrived, what="a warm-up message")
        sub.take(lambda into: drain(sock, into))

    def catch_up(self, sub: Subscriber) -> None:
        """Receive everything ``sub`` must have by now (it is live: nothing may be lost)."""
        end = len(self.published)
        sub.take(lambda into: collect(
            {sub.sock: into}, lambda: set(sub.expected(end)) <= set(sub.received()),
            what="every matching message published since the warm-up"))

    def leave(self, index: int) -> None:
        sub = self.pick(index)
        if sub is None:
            return
        self.catch_up(sub)
        sub.left_at = len(self.published)
        sub.sock.close()
        if sub.pub_endpoint is not None:
            sub.pub_endpoint.close()  # or the PUB would redial the closed subscriber forever
        wait_for_pipes({self.pub: len(self.live())}, what="the PUB to see the subscriber leave")

    def recv(self, index: int) -> None:
        sub = self.pick(index)
        if sub is not None:
            sub.take(lambda into: drain(sub.sock, into))

    def change_topics(self, index: int, topics: frozenset) -> None:
        sub = self.pick(index)
        if sub is not None:
            sub.change_topics(topics)

    def check(self) -> None:
        for sub in self.live():
            self.catch_up(sub)
        live = self.live()
        stragglers = {sub.sock: [] for sub in live}
        collect_stragglers(stragglers)
        for sub in live:
            sub.take(lambda into, sub=sub: into.extend(stragglers[sub.sock]))
        end = len(self.published)
        for n, sub in enumerate(self.subs):
            assert sub.got, f"subscriber {n} never received its warm-up"
            seqs = sub.received()
            for body, under in zip(sub.got, sub.got_under, strict=True):
                topic, seq = parse(body)
                assert seq < end and self.published[seq] == topic, f"{body!r} was never published"
                since = sub.version_of(seq)
                assert since <= under
                history = sub.versions[since:under + 1]
                assert any(matches(topics, topic) for _, topics, _ in history), (
                    f"subscriber {n} received {body!r}, which matched none of its topics "
                    f"from its publication to its reception: {[sorted(t) for _, t, _ in history]}")
                purging = any(unsub for _, _, unsub in sub.versions[:under + 1])
                assert not purging or matches(sub.versions[under][1], topic), (
                    f"subscriber {n} received {body!r} after unsubscribing, with topics "
                    f"{sorted(sub.versions[under][1])}")
            assert seqs == sorted(set(seqs)), f"subscriber {n}: out of order or twice: {seqs}"
            assert sub.start() >= sub.joined_at
            # The PUB counted the pipe before the warm-up began: the first warm-up message
            # already reached the subscriber.
            assert sub.start() == sub.warm_up, (
                f"subscriber {n} missed warm-up messages {sub.warm_up}..{sub.start() - 1}")
            stop = end if sub.left_at is None else sub.left_at
            expected = sub.expected(stop)
            missed = sorted(set(expected) - set(seqs))
            assert not missed, (
                f"subscriber {n} (topics {[sorted(t) for _, t, _ in sub.versions]}) missed {missed}")
            if sub.left_at is None and len(sub.versions) == 1:
                assert sub.sock.stats.get("msgs_received", 0) == len(seqs)
        # send() hands over to the I/O thread, which counts what it takes: wait for it.
        wait_until(lambda: self.pub.stats.get("msgs_sent", 0) == end, what="the PUB's count")
        assert self.pub.stats.get("dropped_slow_subscriber", 0) == 0, "the premise: nobody is slow"


@model_settings(15)
@given(pub_transport=transports, first=joins, ops=operations)
def test_a_subscriber_gets_every_matching_message_after_its_warm_up_in_order_once(
        pub_transport, first, ops):
    with Addresses() as addresses, sp.Session() as session:
        model = PubSubModel(session, addresses, pub_transport)
        for op in [first, *ops]:
            if op[0] == "join":
                model.join(*op[1:])
            elif op[0] == "leave":
                model.leave(op[1])
            elif op[0] == "publish":
                model.publish(op[1], op[2])
            elif op[0] == "topics":
                model.change_topics(op[1], op[2])
            else:
                model.recv(op[1])
        for topic in MSG_TOPICS:  # something for everyone still there to check
            model.publish(topic)
        model.check()
        event(f"subscribers: {len(model.subs)}, left: {len(model.subs) - len(model.live())}")
        changes = sum(len(sub.versions) - 1 for sub in model.subs)
        event(f"topic changes: {'some' if changes else 'none'}")
