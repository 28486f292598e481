"""The ws and wss transports' URLs and ports, without a session (transports/ws.py)."""

from __future__ import annotations

import pytest

import scaproust as sp
from scaproust.transports import Address, lookup
from scaproust.transports.ws import route_key


@pytest.mark.parametrize(("url", "address"), [
    ("ws://127.0.0.1:5555/sp", Address("ws", "127.0.0.1", 5555, "/sp")),
    ("ws://127.0.0.1:5555", Address("ws", "127.0.0.1", 5555, "/")),
    ("ws://localhost/a/b", Address("ws", "localhost", 80, "/a/b")),
    ("wss://localhost/", Address("wss", "localhost", 443, "/")),
    ("ws://*:0/x", Address("ws", "*", 0, "/x")),
    ("ws://:7/x", Address("ws", "*", 7, "/x")),
    ("ws://", Address("ws", "*", 80, "/")),
    ("ws://[::1]:9/", Address("ws", "::1", 9, "/")),
    ("wss://[::1]/", Address("wss", "::1", 443, "/")),
])
def test_urls_parse_with_their_defaults(url, address):
    transport, parsed = lookup(url)
    assert parsed == address
    assert transport.SCHEME == address.scheme
    assert transport.PIPE_KIND == address.scheme


def test_the_canonical_url_keeps_the_path():
    assert Address("ws", "::1", 9, "/a").url == "ws://[::1]:9/a"
    assert Address("tcp", "::1", 9).url == "tcp://[::1]:9"


@pytest.mark.parametrize(("url", "why"), [
    ("ws://h:1/a?b=c", "query or fragment"),
    ("ws://h:1/a#b", "query or fragment"),
    ("ws://h:1/a b", "space or a control character"),
    ("ws://h:70000/", "ws://h:70000/"),
    ("ws://h:x/", "ws://h:x/"),
    ("ws://[::1/", "ws://\\[::1/"),
])
def test_bad_urls_name_what_is_wrong(url, why):
    with pytest.raises(sp.InvalidAddress, match=why):
        lookup(url)


def test_a_wildcard_is_for_binding_only():
    with sp.Session() as session, pytest.raises(sp.InvalidAddress, match="wildcard"):
        session.socket(sp.Req).connect("ws://*:5555/")


@pytest.mark.parametrize(("path", "key"), [
    ("", "/"), ("/", "/"), ("//", "/"), ("/a", "/a"), ("/a/", "/a"), ("/a/b/", "/a/b")])
def test_a_request_path_is_routed_without_its_trailing_slash_and_empty_is_root(path, key):
    # As nng: its dialer sends an empty target for ws://host:port, its listener serves
    # /a/ to a socket bound on /a.
    assert route_key(path) == key
