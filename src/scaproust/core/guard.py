"""Entry points from the reactor: a bug in an action fails that one machine, loudly.

The loop only logs an exception and carries on; left there, a machine that raised half way
through a transition could sit in a state nobody will ever move it out of, and a caller
could wait on it forever. So every callback a machine hands to the reactor is wrapped: an
exception fires the machine's ``evt_crashed`` (a row in protocols.yaml takes it to its
final state, logging the traceback), and if even that fails, the machine's ``_abandon``
drops its resources by hand.

Interrupts. A ``KeyboardInterrupt`` or ``SystemExit`` raised in the main thread while it
does a machine's work itself (docs/ARCHITECTURE.md, "One owner at a time") stops that work
wherever it is: after a ``recv()`` that took bytes from the kernel and before the frame
decoder saw them, say. A machine that talks to the kernel (a pipe: ``CLOSE_ON_INTERRUPT``)
can no longer trust its stream then, so it is closed as if it had crashed (a dialed pipe is
redialed), with a warning and no traceback, and the interrupt goes on to the caller.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar, TypeVarTuple

log = logging.getLogger("scaproust")

if TYPE_CHECKING:  # for type checkers only: nothing to build at import
    class Crashable(Protocol):
        """A machine that can be sent to its final state after an internal error: every
        machine of protocols.yaml has an ``evt_crashed`` row and an ``_abandon`` method."""

        def evt_crashed(self, err: Exception, /) -> object: ...
        def _abandon(self) -> None: ...


M = TypeVar("M", bound="Crashable")
Ts = TypeVarTuple("Ts")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., object])


def entry_point(
    method: Callable[[M, *Ts], R],
) -> Callable[[M, *Ts], R | None]:
    """Decorate a method the reactor calls (readiness, timer, deferred callback)."""

    @functools.wraps(method)
    def guarded(self: M, *args: *Ts) -> R | None:
        try:
            return method(self, *args)
        except Exception as err:
            crash(self, err)
        except BaseException as err:
            if getattr(self, "CLOSE_ON_INTERRUPT", False):
                crash(self, Interrupted(f"{type(err).__name__} in the middle of its work"))
            raise
        return None

    return guarded


class Interrupted(Exception):
    """Why a machine was closed when an interrupt stopped its work half way (see above)."""


def facade_call(method: F) -> F:
    """Mark a method of a machine's class that the facade calls (through ``Session.call``)
    rather than a row of its table: codegen then does not require a row to use it."""
    return method


def fire(machine: Crashable, event: str, *args: object) -> None:
    """Fire ``event`` on ``machine`` from a deferred callback (``loop.call_soon(fire, ...)``),
    guarded like an entry point."""
    try:
        getattr(machine, event)(*args)
    except Exception as err:
        crash(machine, err)


def crash(machine: Crashable, err: Exception) -> None:
    """Send ``machine`` to its final state after an internal error."""
    try:
        machine.evt_crashed(err)
    except Exception:
        log.exception("%r: leaving its state after an internal error failed too", machine)
        machine._abandon()


def log_crash(logger: logging.Logger, what: str, err: Exception) -> None:
    if isinstance(err, Interrupted):  # not a bug: the user interrupted the program
        logger.warning("%s closed: %s (what it had read or written is unknown)", what, err)
        return
    logger.error("%s closed by an internal error", what, exc_info=(type(err), err, err.__traceback__))
