"""The message type: a protocol header (backtrace, hop count) and a body."""

from __future__ import annotations

import attrs


@attrs.define(slots=True)
class Message:
    """One SP message.

    ``header`` holds the protocol's header words (empty for pair v0 and push/pull);
    ``body`` is what the application sent. Both are ``bytes``.
    """

    body: bytes = b""
    header: bytes = b""

    @property
    def wire_size(self) -> int:
        """Size of the payload on the wire: header plus body."""
        return len(self.header) + len(self.body)
