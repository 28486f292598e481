"""What the public protocol names (``sp.Pair``, ``sp.Push``, ...) stand for.

Protocol ids are on-wire constants, frozen: ``protocol << 4 | role``, 16-bit big-endian in
the connection header (WIRE.md, "Protocol ids"). Never change them.
"""

from __future__ import annotations

import importlib

import attrs


@attrs.frozen(repr=False)
class ProtocolInfo:
    """A scalability protocol as the user names it: ``session.socket(sp.Pull)``."""

    name: str
    id: int
    peer_id: int
    peer_name: str
    can_send: bool
    can_recv: bool
    #: "module:Class" of the hand-written protocol machine; None while not implemented.
    machine: str | None = None
    #: The same for raw mode; None while not implemented. Protocols without a header
    #: (pair v0, push, pull) use one machine for both.
    raw_machine: str | None = None
    #: "module:Class" of the facade policy: the user-visible state a cooked socket checks in
    #: the caller's thread (REQ: recv before send; REP: send without a request, ...).
    policy: str | None = None

    def __repr__(self) -> str:
        return f"sp.{self.name.capitalize()}"

    def peer(self) -> ProtocolInfo:
        """The protocol on the other end of this one's pipes."""
        return next(info for info in ALL if info.id == self.peer_id)

    def implemented(self, raw: bool) -> bool:
        return (self.raw_machine if raw else self.machine) is not None

    def machine_class(self, raw: bool = False) -> type:
        return _load(self.raw_machine if raw else self.machine)

    def policy_class(self) -> type | None:
        return _load(self.policy) if self.policy else None


def _load(target: str) -> type:
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


Pair = ProtocolInfo("pair", 0x10, 0x10, "pair", True, True, "scaproust.protocols.pair:Pair",
                    "scaproust.protocols.pair:Pair")
Pair1 = ProtocolInfo("pair1", 0x11, 0x11, "pair1", True, True, "scaproust.protocols.pair1:Pair1",
                     "scaproust.protocols.pair1:Pair1Raw")
Pub = ProtocolInfo("pub", 0x20, 0x21, "sub", True, False, "scaproust.protocols.pub:Pub",
                   "scaproust.protocols.pub:Pub")
Sub = ProtocolInfo("sub", 0x21, 0x20, "pub", False, True, "scaproust.protocols.sub:Sub",
                   "scaproust.protocols.sub:SubRaw", "scaproust.protocols.sub:SubPolicy")
Req = ProtocolInfo("req", 0x30, 0x31, "rep", True, True, "scaproust.protocols.req:Req",
                   "scaproust.protocols.req:ReqRaw", "scaproust.protocols.req:ReqPolicy")
Rep = ProtocolInfo("rep", 0x31, 0x30, "req", True, True, "scaproust.protocols.rep:Rep",
                   "scaproust.protocols.rep:RepRaw", "scaproust.protocols.rep:RepPolicy")
Push = ProtocolInfo("push", 0x50, 0x51, "pull", True, False, "scaproust.protocols.push:Push",
                    "scaproust.protocols.push:Push")
Pull = ProtocolInfo("pull", 0x51, 0x50, "push", False, True, "scaproust.protocols.pull:Pull",
                    "scaproust.protocols.pull:Pull")
Surveyor = ProtocolInfo("surveyor", 0x62, 0x63, "respondent", True, True,
                        "scaproust.protocols.surveyor:Surveyor",
                        "scaproust.protocols.surveyor:SurveyorRaw",
                        "scaproust.protocols.surveyor:SurveyorPolicy")
Respondent = ProtocolInfo("respondent", 0x63, 0x62, "surveyor", True, True,
                          "scaproust.protocols.respondent:Respondent",
                          "scaproust.protocols.respondent:RespondentRaw",
                          "scaproust.protocols.respondent:RespondentPolicy")
Bus = ProtocolInfo("bus", 0x70, 0x70, "bus", True, True, "scaproust.protocols.bus:Bus",
                   "scaproust.protocols.bus:BusRaw")

ALL = (Pair, Pair1, Pub, Sub, Req, Rep, Push, Pull, Surveyor, Respondent, Bus)
