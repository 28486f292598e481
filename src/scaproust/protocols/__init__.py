"""The protocols: one module each for their classes, and here one declaration each.

Each declaration (core/protocol_info.py) gives a protocol's on-wire ids and peer, the
module of its classes and their names there, and the options it accepts; declaring it
registers it. The module is imported on the first socket of that protocol, not by ``import
scaproust``. The names below are what ``scaproust`` exports (``sp.Req``), and ``ALL`` lists
them in the order the documentation uses. Protocol ids are on-wire constants, frozen.
"""

from scaproust.core.protocol_info import ProtocolInfo

Bus = ProtocolInfo("bus", id=0x70, peer_id=0x70, peer_name="bus", can_send=True,
                   can_recv=True, module="scaproust.protocols.bus", machine="Bus",
                   raw_machine="BusRaw")
Pair = ProtocolInfo("pair", id=0x10, peer_id=0x10, peer_name="pair", can_send=True,
                    can_recv=True, module="scaproust.protocols.pair", machine="Pair",
                    raw_machine="Pair")
Pair1 = ProtocolInfo("pair1", id=0x11, peer_id=0x11, peer_name="pair1", can_send=True,
                     can_recv=True, module="scaproust.protocols.pair1", machine="Pair1",
                     raw_machine="Pair1Raw", options={"ttl"})
Pub = ProtocolInfo("pub", id=0x20, peer_id=0x21, peer_name="sub", can_send=True,
                   can_recv=False, module="scaproust.protocols.pub", machine="Pub",
                   raw_machine="Pub")
Pull = ProtocolInfo("pull", id=0x51, peer_id=0x50, peer_name="push", can_send=False,
                    can_recv=True, module="scaproust.protocols.pull", machine="Pull",
                    raw_machine="Pull")
Push = ProtocolInfo("push", id=0x50, peer_id=0x51, peer_name="pull", can_send=True,
                    can_recv=False, module="scaproust.protocols.push", machine="Push",
                    raw_machine="Push")
Rep = ProtocolInfo("rep", id=0x31, peer_id=0x30, peer_name="req", can_send=True,
                   can_recv=True, module="scaproust.protocols.rep", machine="Rep",
                   raw_machine="RepRaw", policy="RepPolicy",
                   context_policy="RepContextPolicy", options={"ttl"})
Req = ProtocolInfo("req", id=0x30, peer_id=0x31, peer_name="rep", can_send=True,
                   can_recv=True, module="scaproust.protocols.req", machine="Req",
                   raw_machine="ReqRaw", policy="ReqPolicy",
                   context_policy="ReqContextPolicy", options={"resend_interval", "ttl"})
Respondent = ProtocolInfo("respondent", id=0x63, peer_id=0x62, peer_name="surveyor",
                          can_send=True, can_recv=True,
                          module="scaproust.protocols.respondent", machine="Respondent",
                          raw_machine="RespondentRaw", policy="RespondentPolicy",
                          context_policy="RespondentContextPolicy", options={"ttl"})
Sub = ProtocolInfo("sub", id=0x21, peer_id=0x20, peer_name="pub", can_send=False,
                   can_recv=True, module="scaproust.protocols.sub", machine="Sub",
                   raw_machine="SubRaw", policy="SubPolicy",
                   context_policy="SubContextPolicy")
Surveyor = ProtocolInfo("surveyor", id=0x62, peer_id=0x63, peer_name="respondent",
                        can_send=True, can_recv=True, module="scaproust.protocols.surveyor",
                        machine="Surveyor", raw_machine="SurveyorRaw",
                        policy="SurveyorPolicy", context_policy="SurveyorContextPolicy",
                        options={"survey_deadline", "ttl"})

ALL = (Pair, Pair1, Pub, Sub, Req, Rep, Push, Pull, Surveyor, Respondent, Bus)

__all__ = ["Bus", "Pair", "Pair1", "Pub", "Pull", "Push", "Rep", "Req", "Respondent",
           "Sub", "Surveyor"]
