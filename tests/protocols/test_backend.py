"""The protocol machines run on the backend the environment names, so running this suite
with and without ``SCAPROUST_FSM=transitions`` really exercises both."""

from __future__ import annotations

import os

from scaproust._generated import pair, pull, push
from scaproust.protocols.pair import Pair
from scaproust.protocols.pull import Pull
from scaproust.protocols.push import Push


def test_the_protocol_machines_run_on_the_backend_the_environment_names():
    wanted = os.environ.get("SCAPROUST_FSM", "compiled").strip().lower() or "compiled"
    via_transitions = wanted == "transitions"

    assert issubclass(Pair, pair.PairTransitions if via_transitions else pair.PairCompiled)
    assert issubclass(Push, push.PushTransitions if via_transitions else push.PushCompiled)
    assert issubclass(Pull, pull.PullTransitions if via_transitions else pull.PullCompiled)
