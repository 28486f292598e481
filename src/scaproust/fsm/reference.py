"""The reference backend: a machine's table run by a real ``transitions.Machine``.

Only the generated ``_generated/<machine>_reference.py`` modules import this, and they are
imported only when ``SCAPROUST_FSM=transitions`` (fsm/__init__.py) and by the conformance test
(tests/test_conformance.py): under the compiled backend, the default, ``transitions`` is
never loaded. About 5 µs an event instead of 0.1 µs (docs/ARCHITECTURE.md, "Machines"); what it
is for is being a second, independent implementation of every table.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any, Protocol

from transitions import EventData, Machine, State
from transitions import MachineError as TransitionsRefusal

from scaproust.fsm.errors import RefusedEvent

# transitions logs every callback at INFO and ignored triggers at WARNING; keep it quiet
# unless the user asks for more (ARCHITECTURE.md: keep its logger at WARNING).
logging.getLogger("transitions").setLevel(logging.WARNING)


class _State(State):
    """A state whose ``on_enter`` and ``on_exit`` actions take no event arguments: they run
    for whichever event enters or leaves the state, so they cannot rely on what one event
    carries (protocols.yaml; the compiled backend calls them the same way). transitions
    itself passes every callback the event's arguments."""

    def enter(self, event_data: EventData) -> None:
        super().enter(_without_arguments(event_data))

    def exit(self, event_data: EventData) -> None:
        super().exit(_without_arguments(event_data))


def _without_arguments(event_data: EventData) -> EventData:
    bare = copy.copy(event_data)
    bare.args, bare.kwargs = (), {}
    return bare


class _Model(Protocol):
    """A generated reference mixin's instance, as a trigger runs it."""

    @property
    def state(self) -> str: ...


class _Machine(Machine):
    state_cls = _State


# A state's or a transition's keyword arguments for transitions (names, callbacks' names,
# conditions): what transitions' own stubs take, a dict of arbitrary values.
_Spec = dict[str, Any]


def reference_machine(name: str, states: list[_Spec], transitions: list[_Spec],
                      initial: str) -> Machine:
    """One class-level machine for every instance: ``model=None``, models are never added
    (each event passes its model to ``Event.trigger``), so it costs nothing per connection."""
    return _Machine(model=None, states=states, transitions=transitions, initial=initial,
                    auto_transitions=False, send_event=False, name=name)


def triggers(machine: Machine, name: str, events: tuple[str, ...]) -> dict[str, Callable[..., bool]]:
    """Each event's trigger, taking (model, *event arguments), with ``transitions``' refusal
    of an event that has no row in the current state raised as the ``RefusedEvent`` the
    compiled backend raises (same type, same attributes, same message)."""

    def trigger_of(event: str) -> Callable[..., bool]:
        trigger = machine.events[event].trigger

        # args: the event's arguments, whatever the event declares in protocols.yaml.
        def run(model: _Model, *args: Any) -> bool:
            try:
                return trigger(model, *args)
            except TransitionsRefusal:
                # Only this trigger can raise it: a nested reference machine raises
                # RefusedEvent already, and transitions checks nothing else at run time.
                raise RefusedEvent(name, model.state, event) from None

        return run

    return {event: trigger_of(event) for event in events}
