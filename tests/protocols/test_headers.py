"""Backtrace words (WIRE.md, "Request / reply header")."""

from __future__ import annotations

import pytest

from scaproust.protocols._headers import (
    MalformedHeader,
    TooManyHops,
    id_word,
    pipe_word,
    split_backtrace,
)


def test_an_id_word_has_the_high_bit_and_a_pipe_word_has_not():
    assert id_word(5) == b"\x80\x00\x00\x05"
    assert id_word(0xFFFFFFFF) == b"\xff\xff\xff\xff"
    assert pipe_word(0x80000001) == b"\x00\x00\x00\x01"


def test_split_backtrace_keeps_every_word_up_to_the_request_id():
    payload = pipe_word(7) + pipe_word(9) + id_word(1) + b"body"
    assert split_backtrace(payload, ttl=8) == (payload[:12], b"body")


def test_eight_words_pass_and_nine_are_too_many():
    eight = b"".join(pipe_word(n) for n in range(7)) + id_word(1)
    assert split_backtrace(eight + b"x", ttl=8)[1] == b"x"
    with pytest.raises(TooManyHops):
        split_backtrace(pipe_word(99) + eight + b"x", ttl=8)


@pytest.mark.parametrize("ttl", [1, 2, 8])
def test_ttl_hops_with_no_id_after_them_are_too_many_not_malformed(ttl):
    # The id would be word ttl + 1: too deep, whatever follows (the pipe stays open).
    hops = b"".join(pipe_word(n) for n in range(ttl))
    with pytest.raises(TooManyHops):
        split_backtrace(hops, ttl=ttl)


def test_a_backtrace_without_a_request_id_or_with_a_partial_word_is_malformed():
    with pytest.raises(MalformedHeader):
        split_backtrace(pipe_word(1) + pipe_word(2), ttl=8)
    with pytest.raises(MalformedHeader):
        split_backtrace(b"\x80\x00", ttl=8)
    with pytest.raises(MalformedHeader):
        split_backtrace(b"", ttl=8)


