"""Endpoint URL parsing: a table of good URLs and one of bad ones."""

from __future__ import annotations

import pytest

from scaproust.errors import InvalidAddress
from scaproust.transports.url import Address, format_tcp_url, parse_url

GOOD = [
    ("tcp://127.0.0.1:5555", Address("tcp", host="127.0.0.1", port=5555)),
    ("tcp://localhost:5555", Address("tcp", host="localhost", port=5555)),
    ("tcp://[::1]:5555", Address("tcp", host="::1", port=5555)),
    ("tcp://[fe80::1%eth0]:80", Address("tcp", host="fe80::1%eth0", port=80)),
    ("tcp://*:5555", Address("tcp", host="*", port=5555)),
    ("tcp://:5555", Address("tcp", host="*", port=5555)),  # nng's wildcard too
    ("tcp://127.0.0.1:0", Address("tcp", host="127.0.0.1", port=0)),
    ("tcp://example.com:65535", Address("tcp", host="example.com", port=65535)),
    ("ipc:///tmp/sp.ipc", Address("ipc", path="/tmp/sp.ipc")),
    ("ipc://relative/path", Address("ipc", path="relative/path")),
    ("ipc://with space:and:colons", Address("ipc", path="with space:and:colons")),
]

BAD = [
    ("127.0.0.1:5555", "scheme://"),
    ("tcp:/127.0.0.1:5555", "scheme://"),
    ("", "scheme://"),
    ("udp://127.0.0.1:5555", "unknown scheme"),
    ("TCP://127.0.0.1:5555", "unknown scheme"),
    ("tcp://127.0.0.1", "missing port"),
    ("tcp://127.0.0.1:", "missing port"),
    ("tcp://127.0.0.1:http", "not a decimal"),
    ("tcp://127.0.0.1:+80", "not a decimal"),
    ("tcp://127.0.0.1:-1", "not a decimal"),
    ("tcp://127.0.0.1:80/path", "not a decimal"),
    ("tcp://127.0.0.1:65536", "out of range"),
    ("tcp://127.0.0.1:٥٥", "not a decimal"),  # Arabic-Indic digits: int() would accept them
    ("tcp://", "missing port"),
    ("tcp://[::1:5555", "closing ']'"),
    ("tcp://[::1]5555", "after ']'"),
    ("tcp://[::1]", "missing port"),
    ("tcp://[]:5555", "empty host"),
    ("tcp://[127.0.0.1]:5555", "not an IPv6"),
    ("tcp://::1]:5555", "brackets"),
    ("tcp://::1:5555", "in brackets"),
    ("tcp://a b:5555", "invalid character"),
    ("ipc://", "empty IPC path"),
    ("ipc://a\0b", "NUL"),
]


@pytest.mark.parametrize(("url", "expected"), GOOD, ids=[u for u, _ in GOOD])
def test_parse_url_accepts(url, expected):
    assert parse_url(url) == expected


@pytest.mark.parametrize(("url", "reason"), BAD, ids=[repr(u) for u, _ in BAD])
def test_parse_url_rejects_with_a_message_naming_the_url_and_the_problem(url, reason):
    with pytest.raises(InvalidAddress) as info:
        parse_url(url)
    assert repr(url) in str(info.value)
    assert reason in str(info.value)
    assert isinstance(info.value, ValueError)


def test_parse_url_rejects_non_strings():
    with pytest.raises(InvalidAddress):
        parse_url(b"tcp://127.0.0.1:5555")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "canonical"),
    [
        ("tcp://[::1]:5555", "tcp://[::1]:5555"),
        ("tcp://127.0.0.1:05555", "tcp://127.0.0.1:5555"),
        ("tcp://*:0", "tcp://*:0"),
        ("ipc://relative/path", "ipc://relative/path"),
    ],
)
def test_address_url_is_canonical(url, canonical):
    assert parse_url(url).url == canonical
    assert str(parse_url(url)) == canonical


def test_wildcard_is_flagged():
    assert parse_url("tcp://*:1").is_wildcard
    assert not parse_url("tcp://127.0.0.1:1").is_wildcard
    assert not parse_url("ipc:///x").is_wildcard


def test_addresses_are_frozen_and_hashable():
    address = parse_url("tcp://127.0.0.1:1")
    with pytest.raises(AttributeError):
        address.port = 2  # type: ignore[misc]
    assert {address: 1}[parse_url("tcp://127.0.0.1:1")] == 1


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 1, "tcp://127.0.0.1:1"),
        ("::1", 2, "tcp://[::1]:2"),
        ("localhost", 3, "tcp://localhost:3"),
        ("*", 4, "tcp://*:4"),
    ],
)
def test_format_tcp_url_brackets_ipv6_hosts(host, port, url):
    assert format_tcp_url(host, port) == url
    assert parse_url(url).host == host
