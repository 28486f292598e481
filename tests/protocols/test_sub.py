"""SUB protocol machines (protocols.yaml, machines ``sub`` and ``sub_raw``) and the cooked
SUB's facade policy, driven with events and a recording context.

What SUB must do (WIRE.md, "SUB" [seen]): byte-prefix match on the body; the empty topic
matches everything; with no subscription nothing is received; topics are bytes (str is
encoded as UTF-8). Filtering happens in the I/O thread, before delivery. A SUB never
writes a byte to its peers. Raw SUB (nng's raw sub0) delivers everything, unfiltered.

Test list:
- no subscription: nothing delivered, counted
- prefix match, several topics, the empty topic, a topic longer than the body
- subscribe twice / unsubscribe once; unsubscribe the last topic; unknown topic raises
  ValueError naming it, in either state, and changes nothing
- priorities; pipe events change nothing; nothing is ever sent
- raw SUB: everything, unfiltered; no subscription events
- close, and events after close
- policy: topics as bytes; the purge after an unsubscribe; the order of the two copies
- property: what is delivered is exactly what matches the topics of the moment
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaproust.core.channel import Channel
from scaproust.core.options import Options
from scaproust.fsm.errors import MachineError
from scaproust.protocols.sub import Sub, SubPolicy, SubRaw, topic_bytes

from .fakes import FakePipe, RecordingContext


@pytest.fixture
def ctx() -> RecordingContext:
    return RecordingContext()


@pytest.fixture
def sub(ctx) -> Sub:
    return Sub(ctx)


@pytest.fixture
def pipe(sub) -> FakePipe:
    pipe = FakePipe(free=100)
    sub.evt_pipe_added(pipe)
    return pipe


# ---------------------------------------------------------------- filtering


def test_sub_with_no_subscription_delivers_nothing_and_counts_it(sub, ctx, pipe):
    sub.evt_pipe_recv(pipe, [b"a", b"", b"anything"])

    assert sub.state == "unsubscribed"
    assert ctx.delivered == []
    assert ctx.stats["dropped_unmatched"] == 3


def test_sub_delivers_only_messages_whose_body_starts_with_the_topic(sub, ctx, pipe):
    sub.cmd_subscribe(b"weather")

    sub.evt_pipe_recv(pipe, [b"weather: sunny", b"sports: 2-1", b"weather", b"weathe", b"xweather"])

    assert sub.state == "subscribed"
    assert ctx.delivered == [b"weather: sunny", b"weather"]
    assert ctx.stats["dropped_unmatched"] == 3


def test_sub_matches_bytes_not_characters(sub, ctx, pipe):
    sub.cmd_subscribe("é".encode())  # b"\xc3\xa9"

    sub.evt_pipe_recv(pipe, [b"\xc3\xa9t\xc3\xa9", b"\xc3\xa8", b"\xc3"])

    assert ctx.delivered == [b"\xc3\xa9t\xc3\xa9"]


def test_sub_a_topic_longer_than_the_body_does_not_match(sub, ctx, pipe):
    sub.cmd_subscribe(b"abc")

    sub.evt_pipe_recv(pipe, [b"ab", b"", b"abc"])

    assert ctx.delivered == [b"abc"]


def test_sub_delivers_what_matches_any_of_its_topics_in_arrival_order(sub, ctx, pipe):
    sub.cmd_subscribe(b"b")
    sub.cmd_subscribe(b"a")

    sub.evt_pipe_recv(pipe, [b"a1", b"c1", b"b1", b"a2", b"c2"])

    assert ctx.delivered == [b"a1", b"b1", b"a2"]


def test_sub_a_message_matching_two_topics_is_delivered_once(sub, ctx, pipe):
    sub.cmd_subscribe(b"a")
    sub.cmd_subscribe(b"ab")

    sub.evt_pipe_recv(pipe, [b"abc"])

    assert ctx.delivered == [b"abc"]


def test_sub_the_empty_topic_matches_everything_even_an_empty_body(sub, ctx, pipe):
    sub.cmd_subscribe(b"")

    sub.evt_pipe_recv(pipe, [b"", b"x", b"\x00\xff"])

    assert ctx.delivered == [b"", b"x", b"\x00\xff"]
    assert ctx.stats.snapshot() == {}


def test_sub_delivers_nothing_and_counts_nothing_for_a_batch_with_no_match(sub, ctx, pipe):
    sub.cmd_subscribe(b"z")
    ctx.clear()

    sub.evt_pipe_recv(pipe, [b"a", b"b"])

    assert ctx.calls == [("stats.count", "dropped_unmatched", 2)]


def test_sub_delivers_with_the_receiving_pipe_priority(sub, ctx):
    pipe = FakePipe(recv_priority=3)
    sub.evt_pipe_added(pipe)
    sub.cmd_subscribe(b"")

    sub.evt_pipe_recv(pipe, [b"x"])

    assert ctx.delivered == [b"x"] and ctx.priorities == [3]


# ---------------------------------------------------------------- subscriptions


def test_sub_subscribing_twice_then_unsubscribing_once_removes_the_topic(sub, ctx, pipe):
    sub.cmd_subscribe(b"a")
    sub.cmd_subscribe(b"a")

    sub.cmd_unsubscribe(b"a")
    sub.evt_pipe_recv(pipe, [b"a1"])

    assert sub.state == "unsubscribed"
    assert ctx.delivered == []


def test_sub_unsubscribing_one_topic_keeps_the_others(sub, ctx, pipe):
    sub.cmd_subscribe(b"a")
    sub.cmd_subscribe(b"b")

    sub.cmd_unsubscribe(b"a")
    sub.evt_pipe_recv(pipe, [b"a1", b"b1"])

    assert sub.state == "subscribed"
    assert ctx.delivered == [b"b1"]


def test_sub_unsubscribing_the_empty_topic_filters_again(sub, ctx, pipe):
    sub.cmd_subscribe(b"")
    sub.cmd_subscribe(b"a")

    sub.cmd_unsubscribe(b"")
    sub.evt_pipe_recv(pipe, [b"a1", b"b1"])

    assert ctx.delivered == [b"a1"]


def test_sub_unsubscribing_the_last_topic_delivers_nothing_again(sub, ctx, pipe):
    sub.cmd_subscribe(b"a")
    sub.evt_pipe_recv(pipe, [b"a1"])

    sub.cmd_unsubscribe(b"a")
    sub.evt_pipe_recv(pipe, [b"a2"])

    assert sub.state == "unsubscribed"
    assert ctx.delivered == [b"a1"]


@pytest.mark.parametrize("subscribed", [[], [b"a"], [b"a", b"b"]])
def test_sub_unsubscribing_an_unknown_topic_raises_value_error_naming_it(sub, ctx, subscribed):
    for topic in subscribed:
        sub.cmd_subscribe(topic)
    state = sub.state

    with pytest.raises(ValueError, match=r"not subscribed to topic b'ab'"):
        sub.cmd_unsubscribe(b"ab")

    assert sub.state == state
    assert sub.topics == set(subscribed)


def test_sub_a_prefix_of_a_subscribed_topic_is_not_subscribed(sub):
    sub.cmd_subscribe(b"abc")

    with pytest.raises(ValueError):
        sub.cmd_unsubscribe(b"ab")


# ---------------------------------------------------------------- a SUB never writes


def test_sub_never_sends_anything_whatever_happens(sub, ctx):
    pipes = [FakePipe(free=100) for _ in range(3)]
    for pipe in pipes:
        sub.evt_pipe_added(pipe)
    sub.cmd_subscribe(b"a")
    for pipe in pipes:
        sub.evt_pipe_ready(pipe)
        sub.evt_pipe_recv(pipe, [b"a", b"b"])
    sub.cmd_unsubscribe(b"a")
    sub.evt_pipe_removed(pipes[0])
    sub.cmd_close()

    assert all(pipe.sent == [] for pipe in pipes)
    assert "set_send_capacity" not in ctx.names()
    assert ctx.rejected == []


def test_sub_has_no_send_event(sub):
    # The facade refuses send() on a SUB before anything reaches the machine.
    assert not hasattr(sub, "cmd_send")


@pytest.mark.parametrize("topics", [[], [b"x"]])
def test_sub_pipe_events_change_nothing(sub, ctx, topics):
    for topic in topics:
        sub.cmd_subscribe(topic)
    state = sub.state
    pipe = FakePipe(free=5)

    sub.evt_pipe_added(pipe)
    sub.evt_pipe_ready(pipe)
    sub.evt_pipe_removed(pipe)

    assert sub.state == state
    assert ctx.calls == []


# ---------------------------------------------------------------- raw SUB


def test_raw_sub_delivers_every_message_unfiltered():
    ctx = RecordingContext()
    raw = SubRaw(ctx)
    pipe = FakePipe(recv_priority=5)
    raw.evt_pipe_added(pipe)

    raw.evt_pipe_recv(pipe, [b"a", b"", b"anything"])

    assert ctx.calls == [("deliver", [b"a", b"", b"anything"])]
    assert ctx.priorities == [5]
    assert pipe.sent == []


def test_raw_sub_has_no_subscriptions_and_no_send():
    raw = SubRaw(RecordingContext())

    for event in ("cmd_subscribe", "cmd_unsubscribe", "cmd_send"):
        assert not hasattr(raw, event)


def test_raw_sub_close_is_final_and_refuses_late_messages():
    raw = SubRaw(RecordingContext())
    raw.cmd_close()
    raw.cmd_close()

    with pytest.raises(MachineError, match="sub_raw: Can't trigger event evt_pipe_recv from state closed!"):
        raw.evt_pipe_recv(FakePipe(), [b"late"])


# ---------------------------------------------------------------- close


@pytest.mark.parametrize("topics", [[], [b"a"]])
def test_sub_close_is_final_from_either_state_and_a_second_close_is_harmless(sub, ctx, topics):
    for topic in topics:
        sub.cmd_subscribe(topic)

    sub.cmd_close()
    sub.cmd_close()

    assert sub.state == "closed"


@pytest.mark.parametrize(
    ("event", "args"),
    [
        ("cmd_subscribe", (b"a",)),
        ("cmd_unsubscribe", (b"a",)),
        ("evt_pipe_added", (FakePipe(),)),
        ("evt_pipe_removed", (FakePipe(),)),
        ("evt_pipe_ready", (FakePipe(),)),
        ("evt_pipe_recv", (FakePipe(), [b"late"])),
    ],
)
def test_sub_refuses_events_once_closed_with_the_machine_error(sub, ctx, event, args):
    sub.cmd_subscribe(b"a")
    sub.cmd_close()

    with pytest.raises(MachineError) as err:
        getattr(sub, event)(*args)

    assert str(err.value) == f"sub: Can't trigger event {event} from state closed!"
    assert ctx.delivered == []


# ---------------------------------------------------------------- topics as the user gives them


@pytest.mark.parametrize(
    ("given_topic", "expected"),
    [
        (b"abc", b"abc"),
        ("abc", b"abc"),
        ("héllo", "héllo".encode()),
        ("", b""),
        (bytearray(b"ab"), b"ab"),
        (memoryview(b"xyz")[1:], b"yz"),
    ],
)
def test_a_topic_is_bytes_and_str_is_encoded_as_utf8(given_topic, expected):
    assert topic_bytes(given_topic) == expected
    assert type(topic_bytes(given_topic)) is bytes


@pytest.mark.parametrize("bad", [1, None, 2.5, ["a"]])
def test_a_topic_of_another_type_is_a_type_error_naming_the_type(bad):
    with pytest.raises(TypeError, match=f"a topic is bytes or str, not {type(bad).__name__}"):
        topic_bytes(bad)


# ---------------------------------------------------------------- the facade policy


def make_policy() -> SubPolicy:
    channel = Channel(wake_backend=lambda: None, resume_reading=lambda: None)
    return SubPolicy(channel, Options("sub"))


def test_sub_policy_passes_everything_until_the_first_unsubscribe():
    policy = make_policy()
    runs: list[bytes] = []
    policy.subscribe("a", runs.append)

    # Before any unsubscribe the I/O thread's filter is the only one needed.
    assert policy.incoming(b"b1") == b"b1"
    assert runs == [b"a"]


def test_sub_policy_purges_queued_messages_that_no_remaining_topic_matches():
    policy = make_policy()
    for topic in (b"a", b"b"):
        policy.subscribe(topic, lambda t: None)

    policy.unsubscribe(b"a", lambda t: None)

    assert policy.incoming(b"a1") is None
    assert policy.incoming(b"b1") == b"b1"
    assert policy.stats.snapshot() == {"purged_unmatched": 1}


def test_sub_policy_after_unsubscribing_everything_drops_everything():
    policy = make_policy()
    policy.subscribe(b"", lambda t: None)
    policy.unsubscribe(b"", lambda t: None)

    assert policy.incoming(b"") is None
    assert policy.incoming(b"x") is None


def test_sub_policy_adds_a_topic_before_the_io_thread_may_deliver_it():
    policy = make_policy()
    policy.subscribe(b"a", lambda t: None)
    policy.unsubscribe(b"a", lambda t: None)  # purging from now on
    seen_during_run = []

    policy.subscribe(b"b", lambda t: seen_during_run.append(policy.incoming(b"b1")))

    assert seen_during_run == [b"b1"]


def test_sub_policy_removes_a_topic_only_once_the_io_thread_accepted_it():
    policy = make_policy()
    policy.subscribe(b"a", lambda t: None)

    def refuse(topic):
        raise ValueError(f"not subscribed to topic {topic!r}")

    with pytest.raises(ValueError, match="not subscribed to topic b'b'"):
        policy.unsubscribe("b", refuse)

    assert policy.incoming(b"a1") == b"a1"


def test_sub_policy_runs_subscription_changes_one_at_a_time():
    policy = make_policy()
    held = []

    policy.subscribe(b"a", lambda t: held.append(policy.lock.locked()))
    policy.unsubscribe(b"a", lambda t: held.append(policy.lock.locked()))

    assert held == [True, True]


# ---------------------------------------------------------------- property

TOPICS = st.sampled_from([b"", b"a", b"ab", b"b", b"\xff"])
BODIES = st.lists(st.sampled_from([b"", b"a", b"ab", b"abc", b"b", b"ba", b"\xff\x00", b"c"]), max_size=4)
OPS = st.one_of(
    st.tuples(st.just("subscribe"), TOPICS),
    st.tuples(st.just("unsubscribe"), TOPICS),
    st.tuples(st.just("recv"), BODIES),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(OPS, max_size=30))
def test_sub_delivers_exactly_what_matches_the_topics_of_the_moment(ops):
    ctx = RecordingContext()
    sub = Sub(ctx)
    pipe = FakePipe()
    sub.evt_pipe_added(pipe)
    topics: set[bytes] = set()
    expected: list[bytes] = []
    for kind, arg in ops:
        if kind == "subscribe":
            sub.cmd_subscribe(arg)
            topics.add(arg)
        elif kind == "unsubscribe":
            if arg in topics:
                sub.cmd_unsubscribe(arg)
                topics.remove(arg)
            else:
                with pytest.raises(ValueError):
                    sub.cmd_unsubscribe(arg)
        else:
            sub.evt_pipe_recv(pipe, arg)
            expected += [body for body in arg if any(body.startswith(t) for t in topics)]
        assert sub.state == ("subscribed" if topics else "unsubscribed")

    assert ctx.delivered == expected
    assert pipe.sent == []
