"""The backend of a session: the reactor loop and the request/reply path of control calls."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar, TypeVarTuple, cast

from scaproust.errors import Closed, Error
from scaproust.reactor.loop import Loop

FORKED = ("this session was created before os.fork(): its I/O thread does not exist in this "
          "process; create a new Session")


T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _Call(Generic[T]):
    """One control request waiting for its reply from the I/O thread."""

    __slots__ = ("fn", "args", "done", "result", "error")

    def __init__(self, fn: Callable[..., T], args: tuple[object, ...]) -> None:
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as err:  # handed back to the caller's thread, not swallowed
            self.error = err
        finally:
            self.done.set()


class SessionCore:
    """Owns the loop; runs control requests on it and waits for their replies."""

    def __init__(self) -> None:
        self.loop = Loop()
        self.loop.start()

    def check_fork(self) -> None:
        """Raise a clear ``sp.Error`` in a forked child that uses its parent's session."""
        if self.loop.forked():
            raise Error(FORKED)

    def call(self, fn: Callable[[*Ts], T], *args: *Ts,
             timeout: float | None = 30.0) -> T:
        """Run ``fn(*args)`` on the I/O thread and return its result (or raise its error)."""
        self.check_fork()
        loop = self.loop
        if loop.owned():
            return fn(*args)  # this thread owns the machines already: waiting would deadlock
        if loop.closed:
            raise Closed("session is closed")
        call: _Call[T] = _Call(fn, args)
        try:
            loop.call_soon_threadsafe(call.run)
        except RuntimeError as err:
            raise Closed(f"session is closed ({err})") from None
        if not call.done.wait(timeout):
            raise Closed("the I/O thread did not answer; is the session closing?")
        if call.error is not None:
            raise call.error
        return cast(T, call.result)  # run without an error: the result is set

    def post(self, fn: Callable[[*Ts], object], *args: *Ts) -> None:
        """Run ``fn(*args)`` on the I/O thread without waiting."""
        self.check_fork()
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:
            raise Closed("session is closed") from None

    def stop(self, *, wait: bool = True) -> None:
        self.loop.stop(wait=wait)
