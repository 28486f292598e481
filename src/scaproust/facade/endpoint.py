"""The public endpoint: what bind() and connect() return."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from scaproust.facade.socket import Socket


class Endpoint:
    """A bound or connected address of a socket.

    ``url`` names the real address: after ``bind("tcp://127.0.0.1:0")`` it carries the
    port the system chose. ``close()`` stops this endpoint (its listener or its dialer and
    reconnects) and closes its pipes; the port or IPC path is released at once.
    """

    def __init__(self, socket: Socket, endpoint_id: int, url: str) -> None:
        self._socket = socket
        self.id = endpoint_id
        self.url = url
        self.closed = False

    def __repr__(self) -> str:
        return f"<scaproust.Endpoint {self.url}{' closed' if self.closed else ''}>"

    def close(self) -> None:
        """Stop this endpoint; harmless if already closed."""
        if self.closed:
            return
        self.closed = True
        self._socket._close_endpoint(self.id)
