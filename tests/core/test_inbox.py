"""The receive queue hands out the best priority first, arrival order within one."""

from __future__ import annotations

from collections import deque

import pytest

from scaproust.core.inbox import DEFAULT_PRIORITY, Inbox
from tests.core.interleave import RunsAStepOnce


def test_an_inbox_of_one_priority_is_a_fifo():
    inbox = Inbox()
    inbox.extend([b"a", b"b"])
    inbox.extend([b"c"])
    assert len(inbox) == 3
    assert [inbox.popleft() for _ in range(3)] == [b"a", b"b", b"c"]
    assert not inbox


def test_a_better_priority_is_served_first_whatever_the_arrival_order():
    inbox = Inbox()
    inbox.extend([b"low1", b"low2"], 16)
    inbox.extend([b"mid"], 8)
    inbox.extend([b"high"], 1)
    assert inbox.popleft() == b"high"
    inbox.extend([b"high again"], 1)
    assert [inbox.popleft() for _ in range(4)] == [b"high again", b"mid", b"low1", b"low2"]
    assert len(inbox) == 0


def test_drain_empties_the_inbox_best_priority_first():
    inbox = Inbox()
    inbox.extend([b"b"], 9)
    inbox.extend([b"a"], 2)
    assert inbox.drain() == [b"a", b"b"]
    inbox.extend([b"c"])
    assert inbox.popleft() == b"c"


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 5, 9])
def test_take_hands_out_what_popleft_would_up_to_its_limit(limit):
    def filled() -> Inbox:
        inbox = Inbox()
        inbox.extend([b"low1", b"low2"], 16)
        inbox.extend([b"mid1", b"mid2"], 8)
        inbox.extend([b"high"], 1)
        return inbox

    one_by_one = filled()
    expected = [one_by_one.popleft() for _ in range(min(limit, 5))]
    inbox = filled()
    assert inbox.take(limit) == expected
    assert len(inbox) == 5 - len(expected)
    assert inbox.drain() == [one_by_one.popleft() for _ in range(len(one_by_one))]
    inbox.extend([b"next"], 16)
    assert list(inbox.head) == [b"next"] and inbox.take(1) == [b"next"] and not inbox.head


def test_head_is_the_queue_of_the_best_priority_holding_a_message():
    # What Channel.take pops from without a call; advance() moves it on once emptied.
    inbox = Inbox()
    assert not inbox.head
    inbox.extend([b"low"], 16)
    inbox.extend([b"high"], 1)
    assert list(inbox.head) == [b"high"]
    assert inbox.popleft() == b"high"
    assert list(inbox.head) == [b"low"]
    assert inbox.popleft() == b"low"
    assert not inbox.head
    assert inbox.popleft() is None
    assert len(inbox) == 0


def test_push_front_makes_an_item_the_next_one_taken_whatever_its_priority():
    # Channel._uncatch: a message its receive caught but never returned goes back first.
    inbox = Inbox()
    inbox.push_front(b"alone")
    assert len(inbox) == 1 and list(inbox.head) == [b"alone"]
    inbox.extend([b"low"], 16)
    inbox.extend([b"high"], 1)
    inbox.push_front(b"first")
    assert len(inbox) == 4
    assert [inbox.popleft() for _ in range(4)] == [b"first", b"high", b"alone", b"low"]
    assert not inbox


def test_emptying_the_inbox_leaves_it_as_new():
    # advance() on the last item: head is the always-empty queue again, and the next item
    # of any priority becomes the head.
    inbox = Inbox()
    inbox.extend([b"a"], 3)
    assert inbox.popleft() == b"a"
    assert not inbox.head
    inbox.extend([b"b"], 12)
    assert list(inbox.head) == [b"b"] and inbox.popleft() == b"b"


# ------------------------------------------------------- takers without the channel's lock
# Channel.take pops from ``head`` without the lock, between any two calls of the code here
# (the interpreter switches threads there). Each test runs such a taker's step at a call.


class Hooked(RunsAStepOnce, list):
    """Items whose ``len()`` runs ``step`` once first."""

    def __init__(self, items, step) -> None:
        super().__init__(items)
        self.step = step

    def __len__(self) -> int:
        self.run_step()
        return super().__len__()


def test_a_push_sizing_its_items_loses_no_pop_from_its_count():
    inbox = Inbox()
    inbox.extend([b"a"])
    taken: list[bytes | None] = []
    inbox.extend(Hooked([b"b", b"c"], lambda: taken.append(inbox.popleft())))
    assert taken == [b"a"] and len(inbox) == 2
    assert inbox.drain() == [b"b", b"c"] and len(inbox) == 0


class PoppedWhileCopied(RunsAStepOnce, deque):
    """A queue whose copying (``list.extend``) first runs ``step`` once."""

    def __iter__(self):
        self.run_step()
        return super().__iter__()


def test_a_whole_queue_taken_is_no_longer_the_one_takers_pop_from():
    inbox = Inbox()
    queue = inbox._queues[DEFAULT_PRIORITY] = PoppedWhileCopied()
    inbox.extend([b"a", b"b"])
    assert inbox.head is queue
    taken: list[bytes | None] = []
    queue.step = lambda: taken.append(inbox.popleft())
    assert inbox.take(5) == [b"a", b"b"]  # swapped for an empty queue before its copy
    assert taken == [None] and len(inbox) == 0
    inbox.extend([b"c"])
    assert inbox.popleft() == b"c" and len(inbox) == 0


def test_one_priority_keeps_its_head_when_emptied_and_a_second_one_mixes_until_empty():
    inbox = Inbox()
    inbox.extend([b"a"], 12)
    head = inbox.head
    assert inbox.popleft() == b"a" and inbox.head is head and not inbox.mixed
    inbox.extend([b"b"], 12)
    inbox.extend([b"c"], 3)  # a second priority while one is queued
    assert inbox.mixed and list(inbox.head) == [b"c"]
    assert [inbox.popleft(), inbox.popleft()] == [b"c", b"b"]
    inbox.extend([b"d"], 5)  # nothing was queued: one priority again
    assert not inbox.mixed and list(inbox.head) == [b"d"]
