"""What a socket and a context derive from their ``recv`` (facade/socket.py,
``DataShortcuts``), with a scripted ``recv``: a batch never loses a message it took."""

from __future__ import annotations

import pytest

import scaproust as sp
from scaproust.facade.socket import DataShortcuts


class Scripted(DataShortcuts):
    """``recv(block=False)`` answers from a script: bytes, or an exception to raise."""

    def __init__(self, *script: bytes | BaseException) -> None:
        self.script = list(script)

    def recv(self, *, timeout=None, block=True):  # type: ignore[override]
        assert not block
        answer = self.script.pop(0) if self.script else sp.WouldBlock("nothing there")
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_a_batch_ends_at_the_first_would_block_or_at_its_limit():
    source = Scripted(b"a", b"b", b"c", sp.WouldBlock("empty"), b"d")
    assert source.try_recv_many(limit=2) == [b"a", b"b"]
    assert source.try_recv_many() == [b"c"]
    assert source.try_recv_many() == [b"d"]
    assert source.try_recv_many() == []


def test_an_error_after_the_first_message_ends_the_batch_and_the_next_call_raises_it():
    source = Scripted(b"a", sp.Closed("closed meanwhile"), sp.Closed("still closed"))
    assert source.try_recv_many() == [b"a"]  # what was taken is handed out, not lost
    with pytest.raises(sp.Closed, match="still closed"):
        source.try_recv_many()
