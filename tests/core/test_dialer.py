"""The dialer's reconnect schedule: jittered, growing up to the maximum, reset on success."""

from __future__ import annotations

import pytest

from scaproust.core.dialer import Dialer
from scaproust.core.options import Options
from scaproust.core.stats import Stats


class FakeSocket:
    def __init__(self, **options):
        self.options = Options("push", **options)
        self.stats = Stats()


class FakeLoop:
    now = 0.0

    def time(self) -> float:
        return self.now


def dialer(**options) -> Dialer:
    return Dialer(loop=FakeLoop(), socket=FakeSocket(**options), transport=None, address=None,
                  url="tcp://127.0.0.1:1", endpoint_id=1)


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_each_wait_is_a_random_half_to_whole_of_the_delay(draw):
    d = dialer(reconnect_interval=0.2)
    d._random = lambda: draw
    assert d._next_delay() == pytest.approx(0.2 * (0.5 + 0.5 * draw))


def test_without_a_maximum_the_delay_never_grows():
    d = dialer(reconnect_interval=0.1)
    d._random = lambda: 1.0
    assert [d._next_delay() for _ in range(4)] == [0.1, 0.1, 0.1, 0.1]


def test_the_delay_doubles_up_to_the_maximum_and_resets_after_a_connection():
    d = dialer(reconnect_interval=0.1, reconnect_interval_max=0.5)
    d._random = lambda: 1.0
    assert [round(d._next_delay(), 3) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    d.reset_backoff(object())  # the action of evt_pipe_opened
    assert d._next_delay() == 0.1


def test_a_hundred_dialers_do_not_retry_in_lockstep():
    delays = {round(dialer(reconnect_interval=0.1)._next_delay(), 6) for _ in range(100)}
    assert len(delays) > 50
    assert all(0.05 <= delay <= 0.1 for delay in delays)


def test_a_connection_that_lasted_the_interval_is_redialed_at_once_a_quick_drop_waits():
    d = dialer(reconnect_interval=0.1)
    d.reset_backoff(object())  # connected at t=0
    d.loop.now = 0.05
    assert not d.lasted(object())  # dropped after 50 ms: a refusing peer, wait
    d.loop.now = 0.1
    assert d.lasted(object())  # an established connection that dropped: redial at once
