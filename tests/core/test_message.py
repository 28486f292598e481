"""The queues' vocabulary (core/message.py): a bare body or a Message, told apart in one place."""

from __future__ import annotations

from scaproust.core.message import Message, as_message, body_of, header_of


def test_the_size_of_either_kind_of_item_is_its_size_on_the_wire():
    assert len(b"body") == 4
    assert len(Message(b"body", b"\x80\x00\x00\x01")) == 8
    assert len(Message()) == 0


def test_a_bare_body_has_no_header_and_a_message_keeps_both_parts():
    assert (body_of(b"abc"), header_of(b"abc")) == (b"abc", b"")
    msg = Message(b"abc", b"\x00\x00\x00\x07")
    assert (body_of(msg), header_of(msg)) == (b"abc", b"\x00\x00\x00\x07")


def test_as_message_wraps_a_bare_body_and_returns_a_message_itself():
    assert as_message(b"abc") == Message(b"abc", b"")
    msg = Message(b"abc", b"h")
    assert as_message(msg) is msg


def test_the_repr_of_a_long_body_shows_its_start_and_its_size():
    from scaproust.core.message import Message

    assert repr(Message(b"abc", b"\x80\x00\x00\x01")) == (
        "Message(body=b'abc', header=b'\\x80\\x00\\x00\\x01')")
    assert repr(Message(b"x" * 1000)) == f"Message(body={b'x' * 32!r}... (1000 bytes), header=b'')"
