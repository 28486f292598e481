"""PUSH / PULL against real peers: pynng, nngcat and nanocat, over TCP and IPC, either side listening.

Test list:
- our push reaches their pull (short, zero-length, exactly 1 MiB)
- their push reaches our pull (short, zero-length, exactly 1 MiB)
- our pull refuses a pair peer, and a right peer then works on the same listener
- our push refuses a pair peer, and a right peer then works on the same listener
- our pull drops a connection that sends more than recv_max_size, and keeps listening
"""

import logging

import pytest

import scaproust as sp

from ._peers import (
    ONE_MIB,
    PEER_KINDS,
    REFUSAL_WINDOW,
    SIZES,
    THEY_LISTEN,
    TRANSPORTS,
    WE_LISTEN,
    body,
    interop_matrix,
    nothing_more,
    open_ours,
    our_listen_url,
    summaries,
    wait_until,
)


@pytest.mark.parametrize("size", SIZES)
@interop_matrix
def test_our_push_reaches_their_pull(link, size):
    message = body(size, "ours")
    push, pull, _ = link(sp.Push, "pull")

    push.send(message)

    assert summaries(pull.messages(1)) == summaries([message])


@pytest.mark.parametrize("size", SIZES)
@interop_matrix
def test_their_push_reaches_our_pull(link, size):
    message = body(size, "theirs")
    pull, _, _ = link(sp.Pull, "push", send=message)

    assert summaries([pull.recv()]) == summaries([message])
    nothing_more(pull)


@interop_matrix
def test_our_pull_refuses_a_pair_peer(link, session, their, side):
    """A PAIR peer gets no pipe to our PULL: its message never arrives, and it notices.

    Positive control on the same listener: when we listen, a PUSH peer then reaches our
    PULL; when they listen, our PAIR then exchanges messages with their PAIR, and receives
    the very message our PULL did not.
    """
    wrong = b"from a pair to a pull"
    if side == WE_LISTEN:
        pull, pair, url = link(sp.Pull, "pair", send=wrong, send_timeout=REFUSAL_WINDOW)
        with pytest.raises(sp.Timeout):
            pull.recv(timeout=REFUSAL_WINDOW)
        pair.wait_send_failed()

        their.start("push", dial=url, send=b"from their push")
        assert pull.recv() == b"from their push"
    else:
        assert side == THEY_LISTEN
        pull, pair, url = link(sp.Pull, "pair", send=wrong)
        with pytest.raises(sp.Timeout):
            pull.recv(timeout=REFUSAL_WINDOW)

        mate = open_ours(session, sp.Pair)
        mate.connect(url)
        mate.send(b"from our pair")
        assert mate.recv() == wrong
        assert pair.messages(1) == [b"from our pair"]
        nothing_more(mate)
    nothing_more(pull)


@interop_matrix
def test_our_push_refuses_a_pair_peer(link, session, their, side):
    """Our PUSH sees no pipe to a PAIR peer: its send times out and the peer gets nothing.

    Positive control on the same listener: when we listen, a PULL peer then gets our next
    message; when they listen, our PAIR then reaches their PAIR. Either way the message whose
    send timed out must never turn up.
    """
    push, pair, url = link(sp.Push, "pair")
    with pytest.raises(sp.Timeout):
        push.send(b"timed out", timeout=REFUSAL_WINDOW)
    assert pair.received() == []

    if side == WE_LISTEN:
        pull = their.start("pull", dial=url)
        push.send(b"for their pull")
        assert pull.messages(1) == [b"for their pull"]
        assert pair.received() == []
    else:
        assert side == THEY_LISTEN
        mate = open_ours(session, sp.Pair)
        mate.connect(url)
        mate.send(b"from our pair")
        assert pair.messages(1) == [b"from our pair"]


@pytest.mark.interop
@pytest.mark.parametrize("their", PEER_KINDS, indirect=True)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_our_pull_drops_a_connection_that_sends_more_than_recv_max_size(
    session, their, transport, tmp_path, caplog
):
    """One byte over the default 1 MiB closes that connection, loudly; the listener keeps accepting.

    WIRE.md, "Receive size limit": close the pipe as soon as the 8-byte size arrives, with a
    warning naming the size and the option. The boundary itself (exactly 1 MiB passes) is in
    the tests above.
    """
    caplog.set_level(logging.WARNING)
    oversize = ONE_MIB + 1
    pull = open_ours(session, sp.Pull)
    url = pull.bind(our_listen_url(transport, tmp_path)).url
    their.start("push", dial=url, send=b"x" * oversize)
    with pytest.raises(sp.Timeout):
        pull.recv(timeout=REFUSAL_WINDOW)

    def warned() -> bool:
        texts = [record.getMessage() for record in caplog.records]
        return any("recv_max_size" in text and str(oversize) in text for text in texts)

    wait_until(warned, f"a warning naming recv_max_size and the size {oversize}")

    their.start("push", dial=url, send=b"small")
    assert pull.recv() == b"small"
    nothing_more(pull)
