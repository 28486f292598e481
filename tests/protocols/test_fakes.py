"""The test doubles behave like what they stand for: the other tests trust them."""

from __future__ import annotations

import pytest

from .fakes import FakeLoop, FakePipe, FakeStream, RecordingContext


def test_fake_loop_fires_due_timers_in_time_then_scheduling_order_with_the_clock_at_each():
    loop = FakeLoop()
    start = loop.time()
    fired = []
    loop.call_later(2.0, lambda: fired.append(("b", loop.time() - start)))
    loop.call_later(1.0, lambda: fired.append(("a", loop.time() - start)))
    loop.call_at(start + 2.0, lambda: fired.append(("c", loop.time() - start)))
    loop.call_later(5.0, lambda: fired.append(("late", loop.time() - start)))

    assert loop.advance(3.0) == 3

    assert fired == [("a", 1.0), ("b", 2.0), ("c", 2.0)]
    assert loop.time() - start == 3.0
    assert len(loop.pending_timers()) == 1


def test_fake_loop_skips_cancelled_timers():
    loop = FakeLoop()
    fired = []
    timer = loop.call_later(1.0, fired.append, "x")
    timer.cancel()
    timer.cancel()

    assert loop.advance(10) == 0
    assert fired == []
    assert loop.pending_timers() == []


def test_fake_loop_runs_call_soon_rounds_then_after_batch_callbacks_until_idle():
    loop = FakeLoop()
    order = []

    def first():
        order.append("first")
        loop.call_soon(order.append, "next round")

    loop.call_soon(first)
    loop.call_after_batch(order.append, "end of batch")
    loop.call_soon_threadsafe(order.append, "posted")

    assert loop.run_ready() == 4
    assert order == ["first", "posted", "end of batch", "next round"]
    assert loop.threadsafe_calls == 1


def test_fake_loop_run_ready_stops_a_callback_that_reschedules_itself_forever():
    loop = FakeLoop()

    def again():
        loop.call_soon(again)

    loop.call_soon(again)
    with pytest.raises(AssertionError, match="rescheduling itself"):
        loop.run_ready()


def test_fake_loop_tracks_reader_and_writer_interest():
    loop, stream, calls = FakeLoop(), FakeStream(), []
    loop.add_reader(stream, lambda: calls.append("read"))
    loop.add_writer(stream, lambda: calls.append("write"))

    loop.fire_reader(stream)
    loop.fire_writer(stream)
    assert loop.remove_writer(stream) is True
    assert loop.remove_writer(stream) is False

    assert calls == ["read", "write"]
    assert list(loop.readers) == [stream] and loop.writers == {}
    with pytest.raises(AssertionError):
        loop.fire_writer(stream)


def test_fake_stream_scripts_reads_splits_big_chunks_and_ends_with_eof():
    stream = FakeStream(b"abcdef")
    stream.feed(b"gh")

    assert stream.recv(4) == b"abcd"
    assert stream.recv(4) == b"ef"
    assert stream.recv(4) == b"gh"
    with pytest.raises(BlockingIOError):
        stream.recv(4)
    stream.feed_eof()
    assert stream.recv(4) == b""


def test_fake_stream_records_writes_and_takes_k_bytes_a_call_when_told():
    stream = FakeStream()
    body = b"0123456789"
    stream.accept_per_call = 4

    assert stream.sendmsg([b"ab", body]) == 4
    assert stream.sendmsg_calls[0][1] is body
    assert stream.written == b"ab01"

    stream.block_writes = True
    with pytest.raises(BlockingIOError):
        stream.sendmsg([b"x"])
    assert stream.written == b"ab01"


def test_recording_context_records_every_call_in_order():
    ctx = RecordingContext()
    pipe = FakePipe()

    ctx.set_send_capacity(2)
    ctx.deliver([b"a"])
    ctx.stats.count("dropped_unexpected", 3)
    ctx.reject_pipe(pipe)
    ctx.call_later(1.5, print)

    assert ctx.names() == ["set_send_capacity", "deliver", "stats.count", "reject_pipe",
                           "call_later"]
    assert ctx.stats["dropped_unexpected"] == 3
    assert ctx.capacity == 2 and ctx.delivered == [b"a"] and ctx.rejected == [pipe]
    assert len(ctx.loop.pending_timers()) == 1


def test_fake_pipe_takes_a_slot_per_message_and_refuses_to_overflow():
    pipe = FakePipe(free=1)

    pipe.cmd_send(b"a", b"h")
    assert pipe.sent == [(b"a", b"h")] and pipe.free == 0
    with pytest.raises(AssertionError, match="no free slot"):
        pipe.cmd_send(b"b")
