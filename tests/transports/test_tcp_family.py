"""tcp4:// and tcp6:// (transports/tcp_family.py): TCP held to one address family."""

from __future__ import annotations

import socket

import pytest

from scaproust.errors import InvalidAddress
from scaproust.transports import get_transport, lookup, tcp
from scaproust.transports.tcp_family import TCPTransport
from scaproust.transports.url import Address
from tests.ip_helpers import dual_stack


@pytest.mark.parametrize(("url", "address"), [
    ("tcp4://127.0.0.1:5555", Address("tcp4", host="127.0.0.1", port=5555)),
    ("tcp4://localhost:0", Address("tcp4", host="localhost", port=0)),
    ("tcp6://[::1]:5555", Address("tcp6", host="::1", port=5555)),
    ("tcp6://*:5555", Address("tcp6", host="*", port=5555)),
    ("tcp4://:5555", Address("tcp4", host="*", port=5555)),
])
def test_urls_parse_like_tcp_ones_and_print_with_their_scheme(url, address):
    transport, parsed = lookup(url)
    assert isinstance(transport, TCPTransport) and transport.SCHEME == url.split(":")[0]
    assert parsed == address
    assert parsed.url == url.replace("://:", "://*:")


@pytest.mark.parametrize(("url", "error"), [
    ("tcp4://[::1]:5555", "'tcp4://[::1]:5555': '::1' is not an IPv4 address"),
    ("tcp6://127.0.0.1:5555", "'tcp6://127.0.0.1:5555': '127.0.0.1' is not an IPv6 address"),
    ("tcp4://127.0.0.1", "'tcp4://127.0.0.1': missing port"),
])
def test_an_address_of_the_other_family_is_refused_when_parsed(url, error):
    with pytest.raises(InvalidAddress, match=error.replace("[", r"\[").replace("]", r"\]")):
        lookup(url)


def test_each_scheme_has_its_own_transport_object_with_plain_tcp_pipes():
    tcp4, tcp6 = get_transport("tcp4"), get_transport("tcp6")
    assert tcp4 is get_transport("tcp4") and tcp4 is not tcp6
    assert getattr(tcp4, "PIPE_KIND", "stream") == "stream" and tcp4.IPC_FRAMING is False
    assert tcp4.set_read_low_water is not None  # a large body is read whole, as tcp's
    with pytest.raises(ValueError, match="TCPTransport serves tcp4, tcp6, not 'tcp'"):
        TCPTransport("tcp")


@pytest.mark.parametrize(("scheme", "found"), [
    ("tcp4", (socket.AF_INET, ("127.0.0.1", 5555))),
    ("tcp6", (socket.AF_INET6, ("::1", 5555, 0, 0))),
])
def test_adual_stack_name_resolves_to_the_family_of_the_scheme(monkeypatch, scheme, found):
    monkeypatch.setattr(tcp, "getaddrinfo", dual_stack)
    transport = get_transport(scheme)
    assert transport.needs_resolution(transport.parse_address(f"{scheme}://dual.test:5555"))
    assert transport.resolve(transport.parse_address(f"{scheme}://dual.test:5555")) == found


@pytest.mark.parametrize(("scheme", "found"), [
    ("tcp4", (socket.AF_INET, ("0.0.0.0", 7))),
    ("tcp6", (socket.AF_INET6, ("::", 7, 0, 0))),
])
def test_the_wildcard_listens_on_every_interface_of_the_family(scheme, found):
    transport = get_transport(scheme)
    address = transport.parse_address(f"{scheme}://*:7")
    assert not transport.needs_resolution(address)
    assert transport.resolve(address, passive=True) == found


def test_a_name_without_an_address_of_the_family_is_refused(monkeypatch):
    def ipv4_only_name(host, port, *args):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", int(port)))]

    monkeypatch.setattr(tcp, "getaddrinfo", ipv4_only_name)
    transport = get_transport("tcp6")
    with pytest.raises(InvalidAddress, match="'v4.test' has no IPv6 address"):
        transport.resolve(transport.parse_address("tcp6://v4.test:5555"))


def test_the_wildcard_cannot_be_dialed():
    transport = get_transport("tcp4")
    with pytest.raises(InvalidAddress, match="cannot connect to the wildcard host"):
        transport.connect(transport.parse_address("tcp4://:5555"))


def test_a_listener_reports_its_port_under_its_own_scheme():
    transport = get_transport("tcp4")
    listener, url = transport.listen(transport.parse_address("tcp4://127.0.0.1:0"))
    try:
        port = listener.sock.getsockname()[1]
        assert url == listener.url == f"tcp4://127.0.0.1:{port}" and port > 0
        assert listener.sock.family == socket.AF_INET
    finally:
        transport.close_listener(listener)
