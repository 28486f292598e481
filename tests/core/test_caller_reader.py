"""The poll of a caller's thread that reads its socket's pipes (core/caller_reader.py):
kept from one wait to the next, and never answering with an object it no longer polls."""

from __future__ import annotations

import socket

from scaproust.core.caller_reader import _Poller
from scaproust.reactor.wakeup import Wakeup


def test_the_same_streams_polled_again_reuse_the_poll_and_find_what_is_readable():
    a, peer = socket.socketpair()
    wakeup = Wakeup()
    try:
        poller = _Poller()
        assert poller.readable([a], wakeup, 0.0) == set()
        kept = poller._poll

        peer.send(b"x")
        assert poller.readable([a], wakeup, 0.0) == {a}
        assert poller._poll is kept
        wakeup.wakeup()
        assert poller.readable([a], wakeup, 0.0) == {a, wakeup}
    finally:
        for obj in (a, peer, wakeup):
            obj.close()


def test_a_new_stream_on_a_reused_descriptor_number_is_the_one_answered():
    old, old_peer = socket.socketpair()
    wakeup = Wakeup()
    poller = _Poller()
    try:
        assert poller.readable([old], wakeup, 0.0) == set()
        old.close()
        old_peer.close()
        # The kernel hands out the lowest free numbers: the new pair usually gets the old
        # pair's, so a poll kept by descriptor number would still answer ``old``.
        new, new_peer = socket.socketpair()
        new_peer.send(b"x")

        assert poller.readable([new], wakeup, 0.0) == {new}
    finally:
        for obj in (new, new_peer, wakeup):
            obj.close()


def test_fewer_streams_than_last_time_are_polled_alone():
    a, a_peer = socket.socketpair()
    b, b_peer = socket.socketpair()
    wakeup = Wakeup()
    try:
        poller = _Poller()
        b_peer.send(b"x")
        assert poller.readable([a, b], wakeup, 0.0) == {b}

        assert poller.readable([a], wakeup, 0.0) == set()  # b is no longer lent
    finally:
        for obj in (a, a_peer, b, b_peer, wakeup):
            obj.close()
