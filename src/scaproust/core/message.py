"""What the queues carry: a bare body, or a ``Message`` with its protocol header.

Most messages have no header the user sees (PAIR v0, PUSH/PULL, PUB/SUB), and wrapping each
in an object would cost a fraction of a microsecond per message on the hot path, so the
channel and the protocols carry an ``Item``: the body as ``bytes`` when there is no header,
a ``Message`` when there is one. Everything that needs to tell them apart asks here:
``len(item)`` is the size on the wire of either, ``body_of``/``header_of`` split it,
``as_message`` gives the user a ``Message`` in every case.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs


@attrs.define(slots=True, repr=False)
class Message:
    """One SP message.

    ``header`` holds the protocol's header words (empty for pair v0 and push/pull);
    ``body`` is what the application sent. Both are ``bytes``. ``len(msg)`` is its size on
    the wire, header and body.
    """

    body: bytes = b""
    header: bytes = b""

    def __len__(self) -> int:
        return len(self.header) + len(self.body)

    def __repr__(self) -> str:
        # A 1 MiB body must not print 1 MiB: its size, and its start when long.
        body = (repr(self.body) if len(self.body) <= _REPR_BYTES else
                f"{self.body[:_REPR_BYTES]!r}... ({len(self.body)} bytes)")
        return f"Message(body={body}, header={self.header!r})"


_REPR_BYTES = 32


#: What the channel's queues and the protocol machines carry (see the module docstring).
Item: TypeAlias = "bytes | Message"


def body_of(item: Item) -> bytes:
    """The body: a bare item is all body."""
    return item.body if isinstance(item, Message) else item


def header_of(item: Item) -> bytes:
    """The protocol header: a bare item has none."""
    return item.header if isinstance(item, Message) else b""


def as_message(item: Item) -> Message:
    """The item as a ``Message`` (a bare body gets an empty header)."""
    return item if isinstance(item, Message) else Message(item)
