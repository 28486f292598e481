"""The duck types between layers, for type checkers only.

Nothing imports this module at run time (``if TYPE_CHECKING:`` only): the pipes, endpoints
and protocols are driven by the session's ``Loop`` and real sockets in the library, and by
a fake loop and fake streams in the sans-IO tests (tests/protocols/fakes.py); these
``Protocol`` classes name what both must provide.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol, TypeVarTuple

from scaproust.reactor.loop import HasFileno

if TYPE_CHECKING:
    from scaproust.core.message import Item
    from scaproust.core.pipe import Pipe
    from scaproust.reactor.loop import Loop

Ts = TypeVarTuple("Ts")


class Stream(HasFileno, Protocol):
    """One connection to a peer as a pipe uses it: a non-blocking ``socket.socket``."""

    def recv(self, bufsize: int, /) -> bytes: ...
    def recv_into(self, buffer: memoryview, /) -> int: ...
    def send(self, data: bytes | bytearray | memoryview, /) -> int: ...
    def sendmsg(self, buffers: Iterable[bytes | bytearray | memoryview], /) -> int: ...
    def close(self) -> None: ...


class Timer(Protocol):
    """A scheduled call (``reactor.timers.TimerHandle``)."""

    when: float  # when it is due, on the loop's clock

    def cancel(self) -> None: ...


class PipeLoop(Protocol):
    """What a pipe, an endpoint machine and a protocol's context ask of the session's loop
    (``reactor.loop.Loop``), all under the session lock."""

    #: A caller's lone send runs its protocol's event: a pipe's first frame goes at once.
    writing_at_once: bool

    def time(self) -> float: ...
    def call_soon(self, fn: Callable[[*Ts], object], *args: *Ts) -> None: ...
    def call_after_batch(self, fn: Callable[[*Ts], object],
                         *args: *Ts) -> None: ...
    def call_soon_threadsafe(self, fn: Callable[[*Ts], object],
                             *args: *Ts) -> None: ...
    def call_later(self, delay: float, fn: Callable[[*Ts], object],
                   *args: *Ts) -> Timer: ...
    def add_reader(self, fileobj: HasFileno, callback: Callable[[], object]) -> None: ...
    def remove_reader(self, fileobj: HasFileno) -> bool: ...
    def add_writer(self, fileobj: HasFileno, callback: Callable[[], object]) -> None: ...
    def remove_writer(self, fileobj: HasFileno) -> bool: ...
    def lend_reader(self, fileobj: HasFileno,
                    alarm: Callable[[], object] | None = None) -> bool: ...
    def return_reader(self, fileobj: HasFileno) -> None: ...


class Lender(Protocol):
    """How a caller's thread borrows a pipe's reading from the loop (``Lender`` in
    core/pipe.py, used by core/caller_reader.py)."""

    #: Called when the pipe stops reading (dies or pauses) while lent and kept lent
    #: between two receives (by an event loop, or by a thread's recv()).
    on_stop: Callable[[], object] | None
    #: False for a pipe that can never be lent (an in-process one: nothing to poll).
    LENDABLE: bool

    @property
    def stream(self) -> HasFileno | None: ...
    def lend(self, alarm: Callable[[], object] | None = None) -> bool: ...
    def keeps(self) -> bool: ...
    def read(self) -> None: ...
    def give_back(self) -> None: ...


class LendingPipe(Protocol):
    """A pipe whose reading a caller's thread may borrow (core/pipe.py, core/memory_pipe.py)."""

    @property
    def lender(self) -> Lender: ...


class Endpoint(Protocol):
    """A listener or a dialer (core/listener.py, core/dialer.py), as its socket drives it."""

    @property
    def endpoint_id(self) -> int: ...
    def cmd_start(self) -> object: ...
    def cmd_close(self) -> object: ...


class ProtocolMachine(Protocol):
    """A socket's protocol machine (``_generated/<protocol>.py`` and ``protocols/``), as
    the socket drives it (core/socket.py)."""

    #: The events of its table (protocols.yaml): the optional ones it offers, such as
    #: ``cmd_send_many``, are among them.
    EVENTS: tuple[str, ...]

    def evt_pipe_added(self, pipe: Pipe, /) -> object: ...
    def evt_pipe_removed(self, pipe: Pipe, /) -> object: ...
    def evt_pipe_ready(self, pipe: Pipe, /) -> object: ...
    def evt_pipe_recv(self, pipe: Pipe, msgs: list[bytes], /) -> object: ...
    def cmd_send(self, item: Item, /) -> object: ...
    def cmd_close(self) -> object: ...


class Batching(ProtocolMachine, Protocol):
    """A machine whose table has ``cmd_send_many`` (PUSH, raw REQ, PUB): a drained batch
    at once."""

    def cmd_send_many(self, items: list[Item], /) -> object: ...


class Subscribing(ProtocolMachine, Protocol):
    """SUB's machine: the one protocol with subscriptions."""

    def cmd_subscribe(self, topic: bytes, /) -> object: ...
    def cmd_unsubscribe(self, topic: bytes, /) -> object: ...


def _conforming(loop: Loop, sock: socket.socket) -> tuple[PipeLoop, Stream]:
    """Never called: mypy checks here that the session's loop and a real socket have the
    shapes above."""
    return loop, sock
