"""Which pipe class drives a transport's connections: its ``PIPE_KIND``
(docs/TRANSPORTS.md, "What a transport provides").

The stream and memory pipes load with the core; the TLS and WebSocket pipes (and ``ssl``,
their machines) only when a transport of their kind is first used, as the protocols'
machines do (docs/ARCHITECTURE.md, "What loads at import").
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from scaproust.core.memory_pipe import MemoryPipe
from scaproust.core.pipe import Pipe

if TYPE_CHECKING:
    from scaproust.transports import Transport

#: The pipe class of each ``PIPE_KIND``, as ``(module, class)``: ``stream`` (the default:
#: a socket), ``memory`` (inproc's message ends), ``tls`` (a TCP socket inside TLS),
#: ``ws`` (a WebSocket), ``wss`` (a WebSocket inside TLS).
PIPE_KINDS: dict[str, tuple[str, str]] = {
    "stream": ("scaproust.core.pipe", "Pipe"),
    "memory": ("scaproust.core.memory_pipe", "MemoryPipe"),
    "tls": ("scaproust.core.tls_pipe", "TLSPipe"),
    "ws": ("scaproust.core.ws_pipe", "WSPipe"),
    "wss": ("scaproust.core.ws_pipe", "WSSPipe"),
}


class _PipeClasses(Mapping[str, type[Pipe]]):
    """``PIPE_KIND`` -> pipe class, importing a class's module at its first lookup."""

    def __init__(self) -> None:
        self._loaded: dict[str, type[Pipe]] = {"stream": Pipe, "memory": MemoryPipe}

    def __getitem__(self, kind: str) -> type[Pipe]:
        cls = self._loaded.get(kind)
        if cls is None:
            module, name = PIPE_KINDS[kind]
            cls = getattr(importlib.import_module(module), name)
            assert isinstance(cls, type) and issubclass(cls, Pipe), (kind, cls)
            self._loaded[kind] = cls
        return cls

    def __iter__(self) -> Iterator[str]:
        return iter(PIPE_KINDS)

    def __len__(self) -> int:
        return len(PIPE_KINDS)

    def __contains__(self, kind: object) -> bool:
        return kind in PIPE_KINDS


#: The pipe class of each ``PIPE_KIND`` (the keys of :data:`PIPE_KINDS`), loaded on demand.
PIPE_CLASSES: Mapping[str, type[Pipe]] = _PipeClasses()


def pipe_class(transport: Transport) -> type[Pipe]:
    """The pipe class for a transport (checked at bind()/connect(): core/socket.py)."""
    return PIPE_CLASSES[getattr(transport, "PIPE_KIND", "stream")]
