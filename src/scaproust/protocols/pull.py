"""PULL: fair-queue messages from PUSH peers (table: machine ``pull``).

Theory of operation: each pipe delivers what it read in one go, and the I/O thread serves
pipes in readiness order, so no peer starves another. PULL never sends (the facade raises
``NotSupported`` before anything reaches this machine) and keeps no state of its own.
"""

from __future__ import annotations

from scaproust._generated.pull import PullFSM
from scaproust.core.protocol_info import ProtocolInfo
from scaproust.protocols._base import ProtocolBase


class Pull(PullFSM, ProtocolBase):
    """PULL protocol machine."""


#: The protocol as users name it (sp.Pull): see core/protocol_info.py.
PULL = ProtocolInfo("pull", id=0x51, peer_id=0x50, peer_name="push", can_send=False,
                    can_recv=True, machine=Pull, raw_machine=Pull)
