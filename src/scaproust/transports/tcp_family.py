"""TCP under another scheme, optionally held to one address family: ``tcp4://`` and
``tcp6://`` (nng's names for TCP over IPv4 only and IPv6 only), and the base of TLS's
``tls+tcp://``, ``tls+tcp4://`` and ``tls+tcp6://``.

The sockets, URLs and name resolution are TCP's (:mod:`scaproust.transports.tcp`); a
scheme ending in ``4`` or ``6`` adds its family's rules:

* an address literal of the other family is refused when the URL is parsed (``bind`` or
  ``connect`` raises ``InvalidAddress`` at once);
* a host name resolves to an address of the scheme's family only: a dual-stack name such
  as ``localhost`` gives its IPv6 address under a ``6`` scheme (plain TCP prefers IPv4);
* the wildcard ``*`` (or an empty host) listens on every interface of that family:
  ``0.0.0.0`` for ``4``, ``::`` for ``6`` (nng notes that the kernel may still let IPv4
  peers in through mapped addresses there; the socket is left as the system sets it).
"""

from __future__ import annotations

import ipaddress
import socket

from scaproust.errors import InvalidAddress
from scaproust.transports import tcp
from scaproust.transports.tcp import LISTEN_BACKLOG, ListeningSocket, Resolved
from scaproust.transports.url import WILDCARD_HOST, Address, format_tcp_url

__all__ = ["SCHEMES", "FamilyTCP", "TCPTransport"]

#: The schemes served by :class:`TCPTransport` (plain ``tcp`` is the module tcp itself).
SCHEMES = ("tcp4", "tcp6")


class FamilyTCP:
    """TCP's sockets, URLs and name resolution under the scheme ``scheme``, held to IPv4 if
    it ends in ``4`` and to IPv6 if it ends in ``6``. ``SCHEMES`` (a subclass's) lists the
    schemes one class serves."""

    SCHEMES: tuple[str, ...] = ()
    IPC_FRAMING = False

    def __init__(self, scheme: str) -> None:
        if scheme not in self.SCHEMES:
            raise ValueError(f"{type(self).__name__} serves {', '.join(self.SCHEMES)}, "
                             f"not {scheme!r}")
        self.SCHEME = scheme
        self._family = {"4": socket.AF_INET, "6": socket.AF_INET6}.get(scheme[-1])

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.SCHEME}>"

    def parse_address(self, url: str) -> Address:
        scheme, sep, rest = url.partition("://")
        if scheme != self.SCHEME or not sep:
            raise InvalidAddress(f"{url!r} is not a {self.SCHEME}:// address")
        try:
            inner = tcp.parse_address(f"tcp://{rest}")
        except InvalidAddress as err:
            raise InvalidAddress(str(err).replace(f"'tcp://{rest}'", repr(url))) from None
        assert inner.host is not None
        if self._family is not None and inner.host != WILDCARD_HOST:
            version: int
            try:
                version = ipaddress.ip_address(inner.host).version
            except ValueError:
                version = 0  # a name: resolve() checks its family
            if version and (version == 4) != (self._family == socket.AF_INET):
                raise InvalidAddress(f"{url!r}: {inner.host!r} is not an "
                                     f"IPv{6 if version == 4 else 4} address")
        return Address(self.SCHEME, host=inner.host, port=inner.port)

    def _tcp(self, address: Address) -> Address:
        return Address("tcp", host=address.host, port=address.port)

    def needs_resolution(self, address: Address) -> bool:
        return tcp.needs_resolution(self._tcp(address))

    def resolve(self, address: Address, *, passive: bool = False,
                ipv4_only: bool = False) -> Resolved:
        if self._family == socket.AF_INET6 and address.host == WILDCARD_HOST:
            assert address.port is not None
            return socket.AF_INET6, ("::", address.port, 0, 0)
        # A 6 scheme asks for the IPv6 address of a name that has both: resolving it as tcp
        # does (IPv4 preferred) would refuse a dual-stack name such as localhost.
        return tcp.resolve(self._tcp(address), passive=passive,
                           ipv4_only=ipv4_only or self._family == socket.AF_INET,
                           ipv6_only=self._family == socket.AF_INET6)

    def listen(self, address: Address, *, backlog: int = LISTEN_BACKLOG,
               ipv4_only: bool = False, resolved: Resolved | None = None,
               ) -> tuple[ListeningSocket, str]:
        if resolved is None:
            resolved = self.resolve(address, passive=True, ipv4_only=ipv4_only)
        listener, url = tcp.listen(self._tcp(address), backlog=backlog, resolved=resolved)
        assert address.host is not None
        url = format_tcp_url(address.host, int(url.rsplit(":", 1)[1]), self.SCHEME)
        listener.address, listener.url = address, url
        return listener, url

    def accept(self, listener: ListeningSocket) -> socket.socket | None:
        return tcp.accept(listener)

    def close_listener(self, listener: ListeningSocket) -> None:
        tcp.close_listener(listener)

    def connect(self, address: Address, *, ipv4_only: bool = False,
                resolved: Resolved | None = None) -> tuple[socket.socket | None, int]:
        if address.host == WILDCARD_HOST:
            raise InvalidAddress(f"{address.url!r}: cannot connect to the wildcard host '*'")
        if resolved is None:
            resolved = self.resolve(address, ipv4_only=ipv4_only)
        return tcp.connect(self._tcp(address), resolved=resolved)

    def finish_connect(self, sock: socket.socket) -> int:
        return tcp.finish_connect(sock)

    def configure_stream(self, sock: socket.socket, *, nodelay: bool = True,
                         keepalive: bool = False,
                         keepalive_timing: tuple[int, int, int] | None = None) -> None:
        tcp.configure_stream(sock, nodelay=nodelay, keepalive=keepalive,
                             keepalive_timing=keepalive_timing)


class TCPTransport(FamilyTCP):
    """The transport of ``tcp4://`` and ``tcp6://``: plain TCP pipes, as ``tcp://``'s."""

    SCHEMES = SCHEMES

    def set_read_low_water(self, sock: socket.socket, nbytes: int) -> bool | None:
        return tcp.set_read_low_water(sock, nbytes)
