"""The exceptions the public API raises.

Every error of the library derives from :class:`Error`; the ones that have a natural
built-in counterpart also derive from it, so ``except TimeoutError`` works as users expect.
"""


class Error(Exception):
    """Base class of every scaproust error."""


class Timeout(Error, TimeoutError):
    """A blocking operation did not complete within its timeout."""


class WouldBlock(Error, BlockingIOError):
    """A non-blocking operation (``block=False``, ``try_send``, ``try_recv``) could not proceed."""


class Closed(Error):
    """The socket or session is closed (or was closed while the call waited)."""


class BadState(Error):
    """The operation is not valid in the protocol's current state (e.g. REP send before recv)."""


class NotSupported(Error):
    """The protocol does not support the operation (e.g. recv on a PUSH socket)."""


class AddressInUse(Error, OSError):
    """bind() found its address already taken."""


class InvalidAddress(Error, ValueError):
    """A URL that cannot be parsed, or whose scheme is unknown."""


class ProtocolError(Error):
    """A peer broke the wire protocol (bad header, bad frame, oversize message).

    Raised inside the I/O thread only: it closes the offending pipe and is logged; it never
    reaches the user's thread.
    """

    #: The frames decoded before the bad one in the same chunk (set by the frame decoder:
    #: the pipe delivers them before it closes), or None.
    frames: list[bytes] | None = None
