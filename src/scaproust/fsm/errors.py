"""The errors of the state machines.

Nothing here imports ``transitions``: the compiled backend raises these errors too, and
must not load the reference backend (fsm/reference.py translates its refusals).
"""

from __future__ import annotations


class MachineError(Exception):
    """A state machine could not run an event: a bug in whatever fired it."""


class RefusedEvent(MachineError):
    """An event with no row in the machine's current state (a machine whose unlisted
    policy is ``error``), raised the same by both backends.

    ``machine`` is the machine's name in protocols.yaml, ``state`` the state it is in (and
    stays in), ``event`` the event it refused.
    """

    def __init__(self, machine: str, state: str, event: str) -> None:
        super().__init__(f"{machine}: Can't trigger event {event} from state {state}!")
        self.machine = machine
        self.state = state
        self.event = event

    def __reduce__(self) -> tuple[type[RefusedEvent], tuple[str, str, str]]:
        # Exceptions pickle their args (here the message); rebuild from the three fields.
        return type(self), (self.machine, self.state, self.event)
