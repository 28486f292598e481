"""PULL: fair-queue messages from PUSH peers (table: machine ``pull``).

Theory of operation: each pipe delivers what it read in one go, and the I/O thread serves
pipes in readiness order, so no peer starves another. PULL never sends (the facade raises
``NotSupported`` before anything reaches this machine) and keeps no state of its own.
"""

from __future__ import annotations

from scaproust._generated.pull import PullFSM
from scaproust.protocols._base import ProtocolBase


class Pull(PullFSM, ProtocolBase):
    """PULL protocol machine."""
