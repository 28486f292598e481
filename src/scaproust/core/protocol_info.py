"""What a protocol is, declared once.

Each protocol is declared once, in the table of protocols/__init__.py (``Req =
ProtocolInfo("req", ...)``), as nng's ``req0_proto``: its on-wire ids, its peer, the module
of its classes and the names there of its machines and of the policy of its cooked sockets,
and the protocol-specific options it accepts. Everything else is derived from it: the
public name (``sp.Req``, exported by ``scaproust``), the socket's machine and policy, which
options a socket accepts (core/options.py), the options table of docs/OPTIONS.md.
Declaring it registers it here, so core finds protocols by name and id without importing
protocols/ (layers point down: docs/ARCHITECTURE.md, "Layers").

The declaration names its classes rather than holding them: a protocol's module (and its
generated machines) is imported on the first socket of that protocol, not by ``import
scaproust`` (docs/ARCHITECTURE.md, "Machines").

Protocol ids are on-wire constants, frozen: ``protocol << 4 | role``, 16-bit big-endian in
the connection header (WIRE.md, "Protocol ids"). Never change them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

    from scaproust.core.policy import ContextPolicy, Policy

#: Every declared protocol by name, in declaration order.
_REGISTRY: dict[str, ProtocolInfo] = {}


def _names(names: Iterable[str]) -> frozenset[str]:
    """The options a protocol accepts, given as any iterable of names (typed for mypy:
    ``converter=frozenset`` leaves attrs' __init__ taking an unbound type variable)."""
    return frozenset(names)


@attrs.frozen(repr=False)
class ProtocolInfo:
    """A scalability protocol as the user names it: ``session.socket(sp.Pull)``."""

    name: str
    id: int
    peer_id: int
    peer_name: str
    can_send: bool
    can_recv: bool
    #: The module of its classes (``scaproust.protocols.req``), imported on first use.
    module: str
    #: The names in ``module`` of the protocol machine of a cooked socket and of a raw one
    #: (the same class for the protocols without a header: pair v0, push, pull, pub).
    machine: str
    raw_machine: str
    #: The name in ``module`` of the user-visible state a cooked socket checks in the
    #: caller's thread (REQ: recv before send; REP: send without a request, ...): a
    #: ``core.policy.Policy`` subclass, or None.
    policy: str | None = None
    #: The name in ``module`` of the caller-side state of a context of a cooked socket
    #: (``sock.context()``, a ``core.policy.ContextPolicy`` subclass), or None: the
    #: protocol has no contexts (``sp.NotSupported``).
    context_policy: str | None = None
    #: The protocol-specific options (core/options.py) this protocol accepts.
    options: frozenset[str] = attrs.field(default=frozenset(), converter=_names)

    def __attrs_post_init__(self) -> None:
        if self.name in _REGISTRY:
            raise ValueError(f"protocol {self.name!r} is declared twice")
        _REGISTRY[self.name] = self

    def __repr__(self) -> str:
        return f"sp.{self.name.capitalize()}"

    def peer(self) -> ProtocolInfo:
        """The protocol on the other end of this one's pipes."""
        return next(info for info in _REGISTRY.values() if info.id == self.peer_id)

    def machine_class(self, raw: bool = False) -> type:
        """The class of a cooked socket's protocol machine, or of a raw socket's."""
        return self._load(self.raw_machine if raw else self.machine)

    def policy_class(self) -> type[Policy] | None:
        """The policy class of a cooked socket, None if it has none."""
        if self.policy is None:
            return None
        policy: type[Policy] = self._load(self.policy)
        return policy

    def context_policy_class(self) -> type[ContextPolicy] | None:
        """The policy class of a context of a cooked socket, None if it has none."""
        if self.context_policy is None:
            return None
        policy: type[ContextPolicy] = self._load(self.context_policy)
        return policy

    def _load(self, name: str) -> type:
        # Imported once, then found in sys.modules: this runs once per socket.
        cls: type = getattr(importlib.import_module(self.module), name)
        return cls


def registered() -> tuple[ProtocolInfo, ...]:
    """Every declared protocol, in declaration order."""
    return tuple(_REGISTRY.values())


def by_name(name: str) -> ProtocolInfo:
    """The protocol declared as ``name``; ``KeyError`` if there is none."""
    return _REGISTRY[name]
