"""Conformance of the two backends of every generated machine, and of both to the table.

For every machine, every state, every event and every combination of guard outcomes, the
compiled backend (``_generated/<machine>.py``) and the ``transitions`` backend
(``_generated/<machine>_reference.py``, imported here whatever ``SCAPROUST_FSM`` says) must
end in the same state, call the same callbacks in the same order with the same arguments
(guards and actions: every parameter the event declares, in order; ``on_enter`` and
``on_exit``: none),
and return or raise the same thing (a refused event: the same ``RefusedEvent``, with the
same machine, state and event). Both are also checked against an expectation computed
straight from the machine's ``STATES``/``TRANSITIONS`` lists (first row whose guards pass;
the declared policy when no row is listed). Finally an action that raises must surface the
same error from both.

The cases are generated from the generated modules at collection time, so a new machine
or row is covered without touching this file.
"""

from __future__ import annotations

import importlib
import itertools

import pytest

from scaproust._generated import MACHINES
from scaproust.fsm.errors import MachineError, RefusedEvent


class Arg:
    """One argument of an event, named after its parameter: callbacks must receive exactly it."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"<{self.name}>"


def event_args(mod, event):
    """The event's arguments, one per parameter protocols.yaml declares (``PARAMETERS``)."""
    return tuple(Arg(name) for name in mod.PARAMETERS[event])


def machine_module(name):
    """The compiled backend's module: what the library imports."""
    return importlib.import_module(f"scaproust._generated.{name}")


def reference_module(name):
    """The reference backend's module: the table in transitions' format, and its mixin."""
    return importlib.import_module(f"scaproust._generated.{name}_reference")


def prefix(name):
    return "".join(part.capitalize() for part in name.split("_"))


class Recorder:
    """Stands in for the hand-written class: guards answer from a script, every callback
    is recorded with its arguments (and ``fail`` names one that raises)."""

    def __init__(self, state, outcomes, fail=None):
        self.state = state
        self.calls = []
        self._outcomes = outcomes
        self._fail = fail

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)

        def callback(*args):
            self.calls.append((name, args))
            if name == self._fail:
                raise ValueError(f"{name} failed")
            if name in self._outcomes:
                return self._outcomes[name]
            return None

        return callback


def run(backend_cls, state, event, args, outcomes, fail=None):
    model = type("Model", (backend_cls, Recorder), {})(state, outcomes, fail)
    try:
        result = ("returned", getattr(model, event)(*args))
    except (MachineError, ValueError) as err:
        fields = (err.machine, err.state, err.event) if isinstance(err, RefusedEvent) else None
        result = ("raised", type(err).__name__, str(err), fields)
    return model.state, model.calls, result


def expected(mod, state, event, args, outcomes):
    """What the table says, computed from STATES/TRANSITIONS (the reference module) only."""
    states = {s["name"]: s for s in mod.STATES}
    calls = []
    for row in mod.TRANSITIONS:
        if row["trigger"] != event or row["source"] != state:
            continue
        passed = True
        for guard in row.get("conditions", []):
            calls.append((guard, args))
            if not outcomes[guard]:
                passed = False
                break
        if passed:
            for guard in row.get("unless", []):
                calls.append((guard, args))
                if outcomes[guard]:
                    passed = False
                    break
        if not passed:
            continue
        dest = state
        if row["dest"] is not None:
            calls += [(a, ()) for a in states[state].get("on_exit", [])]
            dest = row["dest"]
            calls += [(a, ()) for a in states[dest].get("on_enter", [])]
        calls += [(a, args) for a in row.get("after", [])]
        return dest, calls, ("returned", True)
    if not any(r["trigger"] == event and r["source"] == state for r in mod.TRANSITIONS):
        if mod.UNLISTED == "error":
            return state, calls, ("raised", "RefusedEvent",
                                  f"{mod.NAME}: Can't trigger event {event} from state {state}!",
                                  (mod.NAME, state, event))
        return state, calls, ("returned", False)
    return state, calls, ("returned", False)


def cases():
    for name in MACHINES:
        mod = reference_module(name)
        for state in (s["name"] for s in mod.STATES):
            for event in mod.EVENTS:
                rows = [r for r in mod.TRANSITIONS if r["trigger"] == event and r["source"] == state]
                guards = sorted({g for r in rows for g in r.get("conditions", []) + r.get("unless", [])})
                for values in itertools.product((True, False), repeat=len(guards)):
                    outcomes = dict(zip(guards, values, strict=True))
                    label = ",".join(f"{g}={v}" for g, v in outcomes.items()) or "-"
                    yield pytest.param(name, state, event, outcomes, id=f"{name}:{state}:{event}:{label}")


@pytest.mark.parametrize(("name", "state", "event", "outcomes"), list(cases()))
def test_both_backends_follow_the_table(name, state, event, outcomes):
    mod, ref = machine_module(name), reference_module(name)
    args = event_args(mod, event)
    compiled = run(getattr(mod, f"{prefix(name)}Compiled"), state, event, args, outcomes)
    via_transitions = run(getattr(ref, f"{prefix(name)}Transitions"), state, event, args, outcomes)
    assert compiled == via_transitions
    assert compiled == expected(ref, state, event, args, outcomes)


def failing_action_cases():
    for name in MACHINES:
        mod = reference_module(name)
        for row in mod.TRANSITIONS:
            if row.get("after"):
                yield pytest.param(name, row, id=f"{name}:{row['source']}:{row['trigger']}:{row['after'][0]}")


@pytest.mark.parametrize(("name", "row"), list(failing_action_cases()))
def test_an_action_that_raises_surfaces_the_same_error_from_both_backends(name, row):
    mod = reference_module(name)
    outcomes = {g: True for g in row.get("conditions", [])} | {g: False for g in row.get("unless", [])}
    # Earlier alternatives for the same (source, event) must not fire: fail their guards.
    for other in mod.TRANSITIONS:
        if other is row:
            break
        if other["trigger"] == row["trigger"] and other["source"] == row["source"]:
            for g in other.get("conditions", []):
                outcomes.setdefault(g, False)
            for g in other.get("unless", []):
                outcomes.setdefault(g, True)
    args = (row["source"], row["trigger"], event_args(machine_module(name), row["trigger"]), outcomes,
            row["after"][0])
    compiled = run(getattr(machine_module(name), f"{prefix(name)}Compiled"), *args)
    via_transitions = run(getattr(mod, f"{prefix(name)}Transitions"), *args)
    assert compiled == via_transitions
    assert compiled[2] == ("raised", "ValueError", f"{row['after'][0]} failed", None)


def test_the_conformance_cases_cover_every_state_event_pair():
    total = sum(len(reference_module(n).STATES) * len(machine_module(n).EVENTS) for n in MACHINES)
    pairs = {(p.values[0], p.values[1], p.values[2]) for p in cases()}
    assert len(pairs) == total


@pytest.mark.parametrize("name", MACHINES)
def test_both_modules_of_a_machine_describe_the_same_table(name):
    compiled, ref = machine_module(name), reference_module(name)
    facts = ("NAME", "INITIAL", "UNLISTED", "EVENTS")
    assert [getattr(compiled, f) for f in facts] == [getattr(ref, f) for f in facts]
    assert compiled.FINAL_STATES == tuple(s["name"] for s in ref.STATES if s.get("final"))
