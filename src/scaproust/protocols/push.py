"""PUSH: load-balance messages over PULL peers (table: machine ``push``).

Theory of operation: the protocol has no state beyond its pipes, so its table has one
working state. Each message goes to one pipe, round-robin over the pipes that can take it
[seen in nng: 0,1,0,1], preferring the best send priority (a lower-priority pipe gets a
message only when no better one can take it); send credit is the sum of the pipes' free
slots, so send() blocks while no pipe can take a message.

Everything PUSH does is load balancing, shared with REQ: protocols/_balance.py.
"""

from __future__ import annotations

from scaproust._generated.push import PushFSM
from scaproust.protocols._balance import LoadBalancer


class Push(PushFSM, LoadBalancer):
    """PUSH protocol machine: the load balancer of _balance.py, sending bodies only."""
