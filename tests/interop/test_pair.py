"""PAIR v0 against real peers: pynng, nngcat and nanocat, over TCP and IPC, either side listening.

Test list:
- our pair and their pair exchange messages (short, zero-length, exactly 1 MiB)
- our pair refuses a push peer, and a pair peer then works on the same listener
"""

import pytest

import scaproust as sp

from ._peers import (
    REFUSAL_WINDOW,
    SIZES,
    THEY_LISTEN,
    WE_LISTEN,
    body,
    interop_matrix,
    nothing_more,
    open_ours,
    summaries,
)


@pytest.mark.parametrize("size", SIZES)
@interop_matrix
def test_our_pair_and_their_pair_exchange_messages(link, size):
    ours, theirs = body(size, "ours"), body(size, "theirs")
    pair, peer, _ = link(sp.Pair, "pair", send=theirs)

    pair.send(ours)

    assert summaries([pair.recv()]) == summaries([theirs])
    assert summaries(peer.messages(1)) == summaries([ours])
    nothing_more(pair)


@interop_matrix
def test_our_pair_refuses_a_push_peer(link, session, their, side):
    """A PUSH peer gets no pipe to our PAIR: nothing passes either way, and the peer notices.

    Positive control on the same listener, so the test cannot pass because nothing ever
    connected: when we listen, a PAIR peer then talks to our PAIR; when they listen, our
    PULL then takes the very message the PUSH was holding, which proves our PAIR never got it.
    """
    wrong = b"pushed to a pair"
    if side == WE_LISTEN:
        pair, push, url = link(sp.Pair, "push", send=wrong, send_timeout=REFUSAL_WINDOW)
        with pytest.raises(sp.Timeout):
            pair.recv(timeout=REFUSAL_WINDOW)
        with pytest.raises(sp.WouldBlock):
            pair.send(b"to nobody", block=False)
        push.wait_send_failed()

        mate = their.start("pair", dial=url, send=b"from their pair")
        pair.send(b"from our pair")
        assert pair.recv() == b"from their pair"
        assert mate.messages(1) == [b"from our pair"]
    else:
        assert side == THEY_LISTEN
        pair, push, url = link(sp.Pair, "push", send=wrong)
        with pytest.raises(sp.Timeout):
            pair.recv(timeout=REFUSAL_WINDOW)
        with pytest.raises(sp.WouldBlock):
            pair.send(b"to nobody", block=False)

        pull = open_ours(session, sp.Pull)
        pull.connect(url)
        assert pull.recv() == wrong
        nothing_more(pull)
    nothing_more(pair)
