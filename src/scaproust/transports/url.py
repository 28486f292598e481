"""Endpoint URLs: ``tcp://host:port`` and ``ipc://path``.

Parsing is strict and happens before any socket exists, so a typo fails ``bind``/``connect``
at once with :class:`InvalidAddress` naming the URL and what is wrong, instead of a dialer
that retries forever.

Accepted forms::

    tcp://127.0.0.1:5555    tcp://localhost:5555    tcp://[::1]:5555    tcp://*:5555
    tcp://:5555             ipc:///absolute/path    ipc://relative/path

``*`` is the wildcard host (every IPv4 interface); an empty host means the same, as in nng
(``tcp://:5555`` is parsed as ``tcp://*:5555``). It is only meaningful for a listener, and
the TCP connect helper rejects it. Port 0 asks the listener for an ephemeral port.
"""

from __future__ import annotations

import ipaddress

import attrs

from scaproust.errors import InvalidAddress

__all__ = ["SCHEMES", "WILDCARD_HOST", "Address", "format_tcp_url", "parse_url"]

#: The schemes :func:`parse_url` understands.
SCHEMES = ("tcp", "ipc", "inproc")
#: The host that means "every IPv4 interface" in a TCP listener's URL.
WILDCARD_HOST = "*"


@attrs.frozen
class Address:
    """A parsed endpoint URL.

    ``scheme`` is ``'tcp'``, ``'ipc'`` or ``'inproc'`` (whose name is kept in ``path``).
    For TCP, ``host`` is a name, an IPv4 or IPv6 literal (without brackets) or ``'*'``, and
    ``port`` is 0..65535; ``path`` is None. For IPC, ``path`` is the file system path exactly
    as given (relative paths are relative to the working directory at bind/connect time);
    ``host`` and ``port`` are None.
    """

    scheme: str
    host: str | None = None
    port: int | None = None
    path: str | None = None

    @property
    def url(self) -> str:
        """The URL in canonical form (IPv6 hosts in brackets, port without leading zeros)."""
        if self.host is not None and self.port is not None:  # tcp, tls+tcp, ws (with a path)
            return format_tcp_url(self.host, self.port, self.scheme) + (self.path or "")
        return f"{self.scheme}://{self.path}"

    @property
    def is_wildcard(self) -> bool:
        """True for an address only a listener can use: a TCP host ``*``, an empty abstract
        name (the kernel picks one)."""
        return self.host == WILDCARD_HOST or (self.scheme == "abstract" and self.path == "")

    def __str__(self) -> str:
        return self.url


def format_tcp_url(host: str, port: int, scheme: str = "tcp") -> str:
    """Return ``tcp://host:port`` (or another scheme's), putting an IPv6 literal host in
    brackets."""
    if ":" in host:
        return f"{scheme}://[{host}]:{port}"
    return f"{scheme}://{host}:{port}"


def parse_url(url: str) -> Address:
    """Parse an endpoint URL into an :class:`Address`.

    Raises :class:`InvalidAddress` (a ``ValueError``), naming the URL and the problem, for a
    missing ``://``, an unknown scheme, a TCP URL without a port or with a bad port (not
    decimal digits, or over 65535), malformed IPv6 brackets, or an empty IPC
    path.
    """
    if not isinstance(url, str):
        raise InvalidAddress(f"endpoint URL must be a str, got {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidAddress(f"{url!r}: not a URL, expected scheme://address (e.g. tcp://127.0.0.1:5555)")
    if scheme == "tcp":
        host, port = _parse_host_port(url, rest)
        return Address("tcp", host=host, port=port)
    if scheme == "inproc":
        if not rest:
            raise InvalidAddress(f"{url!r}: empty inproc name")
        return Address("inproc", path=rest)
    if scheme == "ipc":
        if not rest:
            raise InvalidAddress(f"{url!r}: empty IPC path")
        if "\0" in rest:
            raise InvalidAddress(f"{url!r}: IPC path contains a NUL byte")
        return Address("ipc", path=rest)
    raise InvalidAddress(
        f"{url!r}: unknown scheme {scheme!r} (supported: {', '.join(SCHEMES)})"
    )


def _parse_host_port(url: str, rest: str) -> tuple[str, int]:
    if rest.startswith("["):
        # Bracketed IPv6 literal: [addr]:port, the only place a ':' may appear in the host.
        close = rest.find("]")
        if close < 0:
            raise InvalidAddress(f"{url!r}: '[' without a closing ']' around the IPv6 address")
        host = rest[1:close]
        after = rest[close + 1 :]
        if not host:
            raise InvalidAddress(f"{url!r}: empty host between brackets")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise InvalidAddress(f"{url!r}: {host!r} in brackets is not an IPv6 address") from None
        if not after:
            raise InvalidAddress(f"{url!r}: missing port (expected [host]:port)")
        if not after.startswith(":"):
            raise InvalidAddress(f"{url!r}: unexpected {after!r} after ']' (expected :port)")
        return host, _parse_port(url, after[1:])

    host, sep, port_text = rest.rpartition(":")
    if not sep:
        raise InvalidAddress(f"{url!r}: missing port (expected tcp://host:port)")
    if "[" in host or "]" in host:
        raise InvalidAddress(f"{url!r}: malformed brackets (expected tcp://[ipv6]:port)")
    if ":" in host:
        raise InvalidAddress(f"{url!r}: an IPv6 address must be in brackets, e.g. tcp://[::1]:5555")
    if not host:
        host = WILDCARD_HOST  # nng's reading of tcp://:5555
    if any(c.isspace() or c in "/?#@" for c in host):
        raise InvalidAddress(f"{url!r}: invalid character in host {host!r}")
    return host, _parse_port(url, port_text)


def _parse_port(url: str, text: str) -> int:
    # ASCII digits only: int() would also accept '+5', ' 5', '5_0' and non-ASCII digits.
    if not text:
        raise InvalidAddress(f"{url!r}: missing port after ':'")
    if not (text.isascii() and text.isdigit()):
        raise InvalidAddress(f"{url!r}: port {text!r} is not a decimal number")
    port = int(text)
    if port > 65535:
        raise InvalidAddress(f"{url!r}: port {port} is out of range (0..65535)")
    return port
