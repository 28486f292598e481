"""What the tests of TCP-like transports share: whether this host can use IPv6 loopback,
and a fake ``getaddrinfo`` for a host name with both address families."""

from __future__ import annotations

import socket


def has_ipv6_loopback() -> bool:
    """True if a socket can bind ``::1`` here (some CI hosts have IPv6 off)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def dual_stack(host, port, family=0, type=0, proto=0, flags=0):
    """``getaddrinfo`` of the name ``dual.test``, which has both an IPv6 and an IPv4 address
    (as localhost has on most systems), the IPv6 one first."""
    assert host == "dual.test"
    return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", int(port), 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
