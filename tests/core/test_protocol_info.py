"""Each protocol is declared once, in its own module (core/protocol_info.py), and everything
else comes from that declaration."""

from __future__ import annotations

import pytest

import scaproust as sp
from scaproust import protocols
from scaproust.core.options import SPECS, Options, protocols_with
from scaproust.core.protocol_info import ProtocolInfo, by_name, registered


def test_every_declared_protocol_is_exported_by_its_public_name():
    assert set(registered()) == set(protocols.ALL)
    for info in registered():
        assert getattr(sp, info.name.capitalize()) is info
        assert info.name.capitalize() in sp.__all__
        assert by_name(info.name) is info


def test_every_protocol_has_a_declared_peer_that_names_it_back():
    for info in registered():
        peer = info.peer()
        assert peer.name == info.peer_name and peer.peer_id == info.id


def test_a_protocol_declared_twice_is_refused():
    with pytest.raises(ValueError, match="'req' is declared twice"):
        ProtocolInfo("req", id=0x30, peer_id=0x31, peer_name="rep", can_send=True,
                     can_recv=True, machine=object, raw_machine=object)


def test_the_options_a_protocol_accepts_come_from_its_declaration():
    assert protocols_with(SPECS["resend_interval"]) == ["req"]
    assert protocols_with(SPECS["ttl"]) == ["pair1", "rep", "req", "respondent", "surveyor"]
    assert len(protocols_with(SPECS["linger"])) == len(registered())
    assert Options(sp.Req, resend_interval=2.0).resend_interval == 2.0
    with pytest.raises(TypeError, match="does not apply to a pull socket"):
        Options("pull", ttl=3)
