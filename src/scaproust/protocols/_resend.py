"""The resend deadline of a REQ request (socket or context), kept lazily.

A REQ moves its deadline at every request and drops it at every reply: once per round
trip. Done with the loop's timers, that is a timer cancelled and another scheduled each
time, 2-3 µs of a 35 µs request/reply (measured with one side against an in-process bare
peer). Here moving the deadline writes a field: one loop timer stays armed at or before the
deadline; when it fires early (the deadline moved on since) it re-arms for what is left,
and when no request waits for it any more it lapses doing nothing. So a request answered
within ``resend_interval`` costs no timer operation at all, only a clock read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from scaproust.core.context import Context
    from scaproust.core.interfaces import Timer


class ResendTimer:
    """``start()`` sets the deadline ``resend_interval`` (the context's option) from now;
    setting ``due`` to None clears it (the machines do so inline, on the path of every
    reply); ``cancel()`` also drops the armed loop timer (the machine is closing: nothing
    of it may stay in the loop's heap); ``fire`` is called once a deadline is reached that
    neither moved nor was cleared since."""

    __slots__ = ("_ctx", "_fire", "due", "_armed")

    def __init__(self, ctx: Context, fire: Callable[[], object]) -> None:
        self._ctx = ctx
        self._fire = fire
        #: When the request is resent (the loop's clock), None when nothing waits to be.
        self.due: float | None = None
        self._armed: Timer | None = None

    def start(self) -> None:
        ctx = self._ctx
        interval = ctx.options.resend_interval
        self.due = due = ctx.time() + interval
        armed = self._armed
        if armed is None or armed.when > due:
            # None armed, or it would fire too late (resend_interval was shortened).
            if armed is not None:
                armed.cancel()
            self._armed = ctx.call_later(interval, self._expired)

    def cancel(self) -> None:
        self.due = None
        if self._armed is not None:
            self._armed.cancel()
            self._armed = None

    def _expired(self) -> None:
        self._armed = None
        due = self.due
        if due is None:
            return  # answered (or stopped) since: lapses
        left = due - self._ctx.time()
        if left > 0:
            # The deadline moved on since this timer was armed: wait for what is left.
            self._armed = self._ctx.call_later(left, self._expired)
            return
        self.due = None
        self._fire()
