"""scaproust: the nanomsg scalability protocols in pure Python, wire-compatible with nng
and nanomsg.

    import scaproust as sp

    with sp.Session() as session:
        pull = session.socket(sp.Pull)
        ep = pull.bind("tcp://127.0.0.1:0")
        push = session.socket(sp.Push, send_timeout=1.0)
        push.connect(ep.url)
        push.send(b"hello")
        assert pull.recv(timeout=1.0) == b"hello"
"""

from scaproust import protocols as _protocols
from scaproust.core.message import Message
from scaproust.core.socket import PipeEvent
from scaproust.errors import (
    AddressInUse,
    BadState,
    Closed,
    Error,
    InvalidAddress,
    NotSupported,
    Timeout,
    WouldBlock,
)
from scaproust.facade.context import SocketContext
from scaproust.facade.device import Device, device
from scaproust.facade.endpoint import Endpoint
from scaproust.facade.poll import POLLIN, POLLOUT, Poller, poll
from scaproust.facade.session import Session, socket
from scaproust.facade.socket import Socket
from scaproust.protocols import *  # noqa: F403  (every declared protocol: sp.Req, ...)
from scaproust.transports import register_transport, unregister_transport
from scaproust.transports.tls_config import TLSConfig

__version__ = "0.1.0"

__all__ = [
    "AddressInUse", "BadState", "Closed", "Error", "InvalidAddress", "NotSupported",
    "Timeout", "WouldBlock", "Message", "Endpoint", "Session", "Socket", "socket",
    "PipeEvent", "Device", "device", "POLLIN", "POLLOUT", "Poller", "poll", "SocketContext",
    "register_transport", "unregister_transport", "TLSConfig",
]
__all__ += _protocols.__all__
