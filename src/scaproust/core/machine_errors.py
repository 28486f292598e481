"""Turn a state-machine refusal seen by a control call into the public error it means."""

from __future__ import annotations

import contextlib

from transitions import MachineError

from scaproust.errors import Closed


@contextlib.contextmanager
def translate_machine_errors(socket):
    """A command the socket's machine refuses because it is closing is ``sp.Closed``."""
    try:
        yield
    except MachineError as err:
        if socket.closed or socket._core.state != "open":
            raise Closed("socket is closed") from None
        raise RuntimeError(f"scaproust internal error: {err.value}") from err
