"""Which pipe class drives a transport's connections: its ``PIPE_KIND``
(docs/TRANSPORTS.md, "What a transport provides")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scaproust.core.memory_pipe import MemoryPipe
from scaproust.core.pipe import Pipe
from scaproust.core.tls_pipe import TLSPipe
from scaproust.core.ws_pipe import WSPipe, WSSPipe

if TYPE_CHECKING:
    from scaproust.transports import Transport

#: The pipe class of each ``PIPE_KIND``: ``stream`` (the default: a socket), ``memory``
#: (inproc's message ends), ``tls`` (a TCP socket inside TLS), ``ws`` (a WebSocket),
#: ``wss`` (a WebSocket inside TLS).
PIPE_CLASSES: dict[str, type[Pipe]] = {"stream": Pipe, "memory": MemoryPipe, "tls": TLSPipe,
                                       "ws": WSPipe, "wss": WSSPipe}


def pipe_class(transport: Transport) -> type[Pipe]:
    """The pipe class for a transport (checked at bind()/connect(): core/socket.py)."""
    return PIPE_CLASSES[getattr(transport, "PIPE_KIND", "stream")]
