"""An event with no row in the current state is refused with a typed error, the same under
both backends (``make test`` runs this file under each): ``RefusedEvent``, carrying the
machine, the state and the event (fsm/errors.py)."""

from __future__ import annotations

import pickle

import pytest

from scaproust.fsm.errors import MachineError, RefusedEvent
from scaproust.protocols.pull import Pull
from scaproust.protocols.req import Req

from .fakes import FakePipe, RecordingContext


def test_a_closed_pull_refuses_a_pipe_with_the_machine_state_and_event():
    pull = Pull(RecordingContext())
    pull.cmd_close()

    with pytest.raises(RefusedEvent) as info:
        pull.evt_pipe_added(FakePipe())

    err = info.value
    assert type(err) is RefusedEvent and isinstance(err, MachineError)
    assert (err.machine, err.state, err.event) == ("pull", "closed", "evt_pipe_added")
    assert str(err) == "pull: Can't trigger event evt_pipe_added from state closed!"
    assert pull.state == "closed"


def test_the_refusal_names_the_machine_of_the_table_not_the_class():
    req = Req(RecordingContext())
    req.cmd_close()

    with pytest.raises(RefusedEvent) as info:
        req.cmd_send(b"late")

    assert (info.value.machine, info.value.state, info.value.event) == ("req", "closed", "cmd_send")


def test_a_refusal_survives_pickling_with_its_fields():
    err = pickle.loads(pickle.dumps(RefusedEvent("pipe", "dead", "cmd_send")))

    assert (err.machine, err.state, err.event) == ("pipe", "dead", "cmd_send")
    assert str(err) == "pipe: Can't trigger event cmd_send from state dead!"
