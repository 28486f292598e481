"""Hostile bytes against a whole pipe: the header exchange, then frames (issue 10,
"Fuzzing"). A PULL pipe (TCP or IPC framing) reads whatever the peer sends, in whatever
pieces; the outcome is always one of the two docs/WIRE.md names: the pipe stays up and
delivered exactly the frames sent, or it is closed with the bad input counted
(``dropped_malformed`` or ``dropped_oversize``) after delivering the frames before it. An
exception escaping into the I/O thread would show as ``pipe_errors``: never.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from protocols.fakes import FakeLoop, FakeOwner, FakeSocket, FakeStream, FakeTransport

from scaproust import protocols
from scaproust.core.options import Options
from scaproust.core.pipe import Pipe
from scaproust.transports.framing import encode_handshake
from tests.fuzz.test_fuzz_frames import LIMIT, cut, hostile_streams, reference

PUSH_HEADER = encode_handshake(0x50)  # what a PULL pipe expects from its peer


@settings(max_examples=300, deadline=None)
@given(data=st.data(), ipc=st.booleans(), good_header=st.booleans(),
       cuts=st.lists(st.integers(0, 10_000), max_size=40))
def test_a_pipe_fed_anything_delivers_the_good_frames_or_closes_and_counts(
        data, ipc, good_header, cuts):
    header = PUSH_HEADER if good_header else data.draw(st.binary(min_size=8, max_size=8))
    frames = data.draw(hostile_streams(ipc))
    stream = FakeStream()
    loop = FakeLoop()
    socket = FakeSocket(protocols.Pull, Options(recv_max_size=LIMIT))
    pipe = Pipe(loop=loop, stream=stream, transport=FakeTransport(ipc=ipc), socket=socket,
                owner=FakeOwner(), dialed=False, peer_addr="tcp://fuzz")
    pipe.cmd_open()
    loop.run_ready()
    for chunk in cut(header + frames, cuts):
        if pipe.state == "dead":
            break
        stream.feed(chunk)
        loop.fire_reader(stream)
        loop.run_ready()

    counts = socket.stats.snapshot()
    assert counts.get("pipe_errors", 0) == 0
    if header != PUSH_HEADER:
        assert pipe.state == "dead" and socket.proto.received == []
        assert counts == {"dropped_malformed": 1}
        return
    expected, ending = reference(frames, ipc, LIMIT)
    assert socket.proto.received == expected
    if ending is None:
        assert pipe.state == "active" and counts == {}
    else:
        assert pipe.state == "dead"
        assert counts == {"dropped_oversize" if ending == "oversize" else "dropped_malformed": 1}
