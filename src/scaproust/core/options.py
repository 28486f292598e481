"""Socket options: one table of names, defaults, ranges and meanings.

Every option is a keyword argument of ``session.socket(...)`` and an attribute of the
socket, validated at once with a ``TypeError``/``ValueError`` naming the option and the
allowed range. The I/O thread reads the same ``Options`` object, so a change takes effect
for the next operation that uses it (a plain attribute store is atomic under the GIL).
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from scaproust.core.protocol_info import ProtocolInfo, by_name, registered
from scaproust.transports.tls_config import TLSConfig

if TYPE_CHECKING:
    import ssl

MiB = 1024 * 1024

T = TypeVar("T")


@attrs.frozen
class OptionSpec:
    name: str
    default: object
    kind: str  # "timeout" (None or seconds >= 0), "seconds" (> 0 or >= 0), "size" (int >= 0),
    #            "int" (minimum..maximum), "bool", "str", "mode" (None or 0o000..0o777),
    #            "tls" (None, a TLSConfig or an ssl.SSLContext)
    doc: str
    minimum: float = 0.0
    exclusive_minimum: bool = False
    maximum: int | None = None
    #: Only the protocols that list it in their declaration accept it (its ``options``:
    #: core/protocol_info.py); otherwise every socket has it.
    specific: bool = False


SPECS = {
    spec.name: spec
    for spec in (
        OptionSpec("send_timeout", None, "timeout",
                   "seconds send() waits for the protocol to accept a message; None = forever; "
                   "0 = never wait (sp.WouldBlock, as block=False)"),
        OptionSpec("recv_timeout", None, "timeout",
                   "seconds recv() waits for a message; None = forever; 0 = never wait "
                   "(sp.WouldBlock, as block=False)"),
        OptionSpec("recv_spin", 0.0002, "seconds",
                   "seconds a recv() that must wait polls its socket's pipes before it sleeps "
                   "(Linux, more than one CPU; a socket of at most 8 pipes, not in-process): "
                   "a message caught so saves a wake-up; spins that catch nothing, or mostly "
                   "late, are left out of the next waits, 1 then up to 64, and so cost no "
                   "CPU at equal rates (docs/ARCHITECTURE.md); 0 = sleep at once"),
        OptionSpec("recv_max_size", MiB, "size",
                   "largest message accepted from a peer, in bytes (header included); a larger "
                   "one closes that pipe; 0 = unlimited (WIRE.md: 1 MiB like nanomsg)"),
        OptionSpec("reconnect_interval", 0.1, "seconds",
                   "seconds a dialer waits before redialing after a failed attempt",
                   exclusive_minimum=True),
        OptionSpec("reconnect_interval_max", 0.0, "seconds",
                   "upper bound of the reconnect delay, which doubles after each failed attempt "
                   "from reconnect_interval; below reconnect_interval, every wait after the "
                   "first (as nng); 0 = no growth (nng and nanomsg's default)"),
        OptionSpec("handshake_timeout", 10.0, "seconds",
                   "seconds a new connection may take to send its 8-byte SP header (nng: 10 s)",
                   exclusive_minimum=True),
        OptionSpec("linger", 1.0, "seconds",
                   "seconds close() keeps flushing queued output to peers; 0 = drop at once"),
        OptionSpec("send_buffer", 512, "int",
                   "messages each pipe may hold queued for writing (also bounded by 4 MiB), "
                   "read as the pipe opens (a change applies to the pipes opened after it); "
                   "send() blocks when every pipe that could take a message is full",
                   minimum=1, maximum=1 << 20),
        OptionSpec("recv_buffer", 1024, "int",
                   "messages the socket queues for recv() (also bounded by 2 MiB) before it "
                   "stops reading from its peers, until recv() brings it down to half: a "
                   "high-water mark, not a strict depth as nng's: the reads under way when it "
                   "is reached are queued whole (one read a pipe: up to 256 KiB of frames, a "
                   "sender's whole send_buffer over inproc)",
                   minimum=1, maximum=1 << 20),
        OptionSpec("tcp_nodelay", True, "bool",
                   "TCP_NODELAY on TCP connections (frames are already coalesced per write)"),
        OptionSpec("tcp_keepalive", False, "bool",
                   "SO_KEEPALIVE on TCP connections: a peer that vanished (host down, network "
                   "cut) is noticed within tcp_keepalive_idle + tcp_keepalive_interval * "
                   "tcp_keepalive_count seconds of silence, and its pipe closed"),
        OptionSpec("tcp_keepalive_idle", 30, "int",
                   "whole seconds of silence before the first keepalive probe",
                   minimum=1, maximum=32767),
        OptionSpec("tcp_keepalive_interval", 5, "int",
                   "whole seconds between unanswered keepalive probes",
                   minimum=1, maximum=32767),
        OptionSpec("tcp_keepalive_count", 3, "int",
                   "unanswered keepalive probes after which the connection is dead",
                   minimum=1, maximum=127),
        OptionSpec("ipc_permissions", None, "mode",
                   "file mode of an IPC socket file bind() creates (e.g. 0o600: its owner "
                   "only), set before it accepts; None = what the umask gives"),
        OptionSpec("max_pipes", 0, "size",
                   "most pipes one bind() endpoint keeps at once; a connection beyond it is "
                   "closed as soon as it is accepted and counted (pipes_refused); 0 = no "
                   "limit; fixed per endpoint at bind(), which may also pass it"),
        OptionSpec("ipv4_only", False, "bool",
                   "resolve and use IPv4 addresses only (an IPv6 address is InvalidAddress)"),
        OptionSpec("socket_name", "", "str", "a name for this socket in logs and repr()"),
        OptionSpec("tls", None, "tls",
                   "TLS of tls+tcp:// endpoints: an sp.TLSConfig or a ready ssl.SSLContext "
                   "(docs/TRANSPORTS.md); None = a client trusts the system's CAs and a bind "
                   "is refused; fixed per endpoint at bind()/connect(), which may also pass "
                   "it"),
        OptionSpec("send_priority", 8, "int",
                   "priority of this socket's endpoints when sending, 1 (highest) to 16; fixed "
                   "per endpoint at bind()/connect(), which may also pass it",
                   minimum=1, maximum=16),
        OptionSpec("recv_priority", 8, "int",
                   "priority of this socket's endpoints when receiving, 1 (highest) to 16; fixed "
                   "per endpoint at bind()/connect(), which may also pass it",
                   minimum=1, maximum=16),
        OptionSpec("resend_interval", 60.0, "seconds",
                   "seconds a REQ waits for a reply before sending the request again",
                   exclusive_minimum=True, specific=True),
        OptionSpec("survey_deadline", 1.0, "seconds",
                   "seconds a SURVEYOR collects responses to a survey",
                   exclusive_minimum=True, specific=True),
        OptionSpec("ttl", 8, "int",
                   "most hops (header words) a message may carry; deeper ones are dropped "
                   "where requests and surveys arrive (REP, RESPONDENT) and on PAIR v1; a REQ "
                   "and a SURVEYOR take it, as nng's, and replies as deep as any ttl allows "
                   "(255 words) back (nng: 1..15)",
                   minimum=1, maximum=255, specific=True),
    )
}

def _default(name: str, kind: type[T]) -> T:
    """The default of option ``name``, from ``SPECS`` (the one table of defaults)."""
    value = SPECS[name].default
    if not isinstance(value, kind):
        raise TypeError(f"option {name}: default {value!r} is not a {kind.__name__}")
    return value


@attrs.frozen
class EndpointOptions:
    """The options an endpoint fixes for its pipes when it is made (``bind``/``connect``):
    the socket's values at that moment, or the keyword arguments given there."""

    send_priority: int = _default("send_priority", int)
    recv_priority: int = _default("recv_priority", int)
    recv_max_size: int = _default("recv_max_size", int)
    reconnect_interval: float = _default("reconnect_interval", float)
    reconnect_interval_max: float = _default("reconnect_interval_max", float)
    max_pipes: int = _default("max_pipes", int)
    tls: TLSConfig | ssl.SSLContext | None = None

    @classmethod
    def of(cls, options: Options, **overrides: object) -> EndpointOptions:
        """Resolve from a socket's options; ``overrides`` are validated (None = unset)."""
        values: dict[str, Any] = {}  # each of its option's type: validate() checked it
        for name in ENDPOINT_OPTIONS:
            value = overrides.pop(name, None)
            values[name] = getattr(options, name) if value is None else validate(name, value)
        if overrides:
            raise TypeError(f"unknown endpoint option(s) {', '.join(sorted(overrides))} "
                            f"(known: {', '.join(ENDPOINT_OPTIONS)})")
        return cls(**values)


#: Options fixed per endpoint: bind() and connect() take them as keyword arguments too.
ENDPOINT_OPTIONS = tuple(field.name for field in attrs.fields(EndpointOptions))


def validate(name: str, value: object) -> object:
    """Return ``value`` normalised for option ``name``, or raise TypeError/ValueError."""
    try:
        spec = SPECS[name]
    except KeyError:
        raise TypeError(f"unknown socket option {name!r} (known: {', '.join(sorted(SPECS))})") from None
    if spec.kind in ("timeout", "mode", "tls") and value is None:
        return None
    if spec.kind == "tls":
        # ssl loads with the first TLS endpoint (docs/ARCHITECTURE.md): a value can only
        # be an SSLContext if ssl is loaded already.
        ssl_module = sys.modules.get("ssl")
        if not isinstance(value, TLSConfig) and (
                ssl_module is None or not isinstance(value, ssl_module.SSLContext)):
            raise TypeError(f"option {name} must be None, an sp.TLSConfig or an "
                            f"ssl.SSLContext, not {value!r}")
        return value
    if spec.kind == "mode":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"option {name} must be None or a file mode such as 0o600, not {value!r}")
        if not 0 <= value <= 0o777:
            raise ValueError(f"option {name} must be from 0o000 to 0o777, not {oct(value)}")
        return value
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise TypeError(f"option {name} must be True or False, not {value!r}")
        return value
    if spec.kind == "str":
        if not isinstance(value, str):
            raise TypeError(f"option {name} must be a str, not {value!r}")
        return value
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"option {name} must be an int from {int(spec.minimum)} to {spec.maximum}, not {value!r}")
        assert spec.maximum is not None  # every "int" option has a maximum
        if not spec.minimum <= value <= spec.maximum:
            raise ValueError(f"option {name} must be from {int(spec.minimum)} to {spec.maximum}, not {value}")
        return value
    if spec.kind == "size":
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"option {name} must be an int >= 0, not {value!r}")
        if value < 0:
            raise ValueError(f"option {name} must be >= 0 (0 = unlimited), not {value}")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        allowed = "None or a number of seconds >= 0" if spec.kind == "timeout" else "a number of seconds"
        raise TypeError(f"option {name} must be {allowed}, not {value!r}")
    seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds) and spec.kind != "timeout":
        raise ValueError(f"option {name} must be a finite number of seconds, not {seconds}")
    if math.isinf(seconds):
        return None  # an infinite timeout is "forever"
    if seconds < spec.minimum or (spec.exclusive_minimum and seconds <= spec.minimum):
        bound = "> 0" if spec.exclusive_minimum else ">= 0"
        raise ValueError(f"option {name} must be {bound} seconds, not {seconds}")
    return seconds


def applies(spec: OptionSpec, protocol: ProtocolInfo | None) -> bool:
    """True if a socket of ``protocol`` (None: any) has the option."""
    return not spec.specific or protocol is None or spec.name in protocol.options


def protocols_with(spec: OptionSpec) -> list[str]:
    """The names of the protocols that accept ``spec`` (every one if it is not specific)."""
    return [info.name for info in registered() if applies(spec, info)]


class Options:
    """The option values of one socket (attributes named as in ``SPECS``)."""

    __slots__ = (*SPECS, "protocol")

    # One attribute per option of SPECS, typed for the checkers (tests/core/test_options.py
    # checks that these are exactly the options of SPECS, with the type of each one's kind).
    send_timeout: float | None
    recv_timeout: float | None
    recv_spin: float
    recv_max_size: int
    reconnect_interval: float
    reconnect_interval_max: float
    handshake_timeout: float
    linger: float
    send_buffer: int
    recv_buffer: int
    tcp_nodelay: bool
    tcp_keepalive: bool
    tcp_keepalive_idle: int
    tcp_keepalive_interval: int
    tcp_keepalive_count: int
    ipc_permissions: int | None
    max_pipes: int
    ipv4_only: bool
    socket_name: str
    tls: TLSConfig | ssl.SSLContext | None
    send_priority: int
    recv_priority: int
    resend_interval: float
    survey_deadline: float
    ttl: int

    def __init__(self, protocol: ProtocolInfo | str | None = None, **values: object) -> None:
        #: The socket's protocol (a name is looked up), or None: every option applies.
        self.protocol: ProtocolInfo | None = (
            by_name(protocol) if isinstance(protocol, str) else protocol)
        for name, spec in SPECS.items():
            setattr(self, name, spec.default)
        for name, value in values.items():
            self.set(name, value)

    def set(self, name: str, value: object) -> None:
        value = validate(name, value)
        spec = SPECS[name]
        if not applies(spec, self.protocol):
            assert self.protocol is not None  # every option applies to no protocol
            raise TypeError(f"option {name} does not apply to a {self.protocol.name} socket "
                            f"(it is for {', '.join(protocols_with(spec))})")
        setattr(self, name, value)


def markdown_table() -> str:
    """The options table of docs/OPTIONS.md (a test checks the document against it)."""
    rows = ["| option | default | allowed | sockets | meaning |", "|---|---|---|---|---|"]
    for spec in SPECS.values():
        if spec.kind == "timeout":
            allowed = "None or seconds >= 0"
        elif spec.kind == "size":
            allowed = "int >= 0"
        elif spec.kind == "int":
            allowed = f"int {int(spec.minimum)}..{spec.maximum}"
        elif spec.kind in ("bool", "str"):
            allowed = spec.kind
        elif spec.kind == "mode":
            allowed = "None or 0o000..0o777"
        elif spec.kind == "tls":
            allowed = "None, sp.TLSConfig or ssl.SSLContext"
        else:
            allowed = "seconds > 0" if spec.exclusive_minimum else "seconds >= 0"
        labels: dict[object, object] = {None: "None (forever)", MiB: "1 MiB (1048576)", "": '""'}
        default = labels.get(spec.default, spec.default)
        if spec.kind in ("mode", "tls") and spec.default is None:
            default = "None"
        if isinstance(spec.default, bool):
            default = str(spec.default)
        sockets = ", ".join(protocols_with(spec)) if spec.specific else "all"
        rows.append(f"| `{spec.name}` | {default} | {allowed} | {sockets} | {spec.doc} |")
    return "\n".join(rows) + "\n"
