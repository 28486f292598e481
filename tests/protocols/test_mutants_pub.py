"""More of PUB (protocols.yaml, machine ``pub``; protocols/pub.py): written to kill the
mutants of ``make mutate`` that survived test_pub.py.
"""

from __future__ import annotations

import gc
import weakref

from scaproust.protocols.pub import Pub

from .fakes import FakePipe, RecordingContext


def test_a_pub_keeps_nothing_of_a_pipe_it_rejected_once_that_pipe_is_removed():
    ctx = RecordingContext()
    pub = Pub(ctx)
    pipe = FakePipe(free=5)
    pub.evt_pipe_added(pipe)
    pub.evt_pipe_recv(pipe, [b"a SUB never writes"])  # rejected
    pub.evt_pipe_removed(pipe)
    ctx.clear()  # the recorded reject_pipe call holds the pipe too
    gone = weakref.ref(pipe)

    del pipe
    gc.collect()

    assert gone() is None  # no per-pipe memory left behind
