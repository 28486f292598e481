"""The command line of ``scaproust-cat``: the union of nanocat's and nngcat's options.

Parsing follows nanocat's rules (docs/CLI.md, "Options"): a long option may be shortened to
any prefix that names one option only (names that are aliases of one option, such as
``--respondent`` and ``--respondent0``, do not make a prefix ambiguous), takes its
argument as ``--opt=value`` (or nngcat's ``--opt:value``) or as the next argument; short
options cluster (``-AQ``), and the rest of a cluster, or else the next argument, is the
argument of a short option that takes one (``-Dhello``, ``-D hello``).
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

from scaproust.cli.formats import FORMATS


class UsageError(Exception):
    """A command line that cannot run: exit status 1."""


class DataFileError(Exception):
    """The file of ``--file`` cannot be read: exit status 2 (as nanocat)."""


@dataclass(frozen=True)
class Opt:
    """One option: every long name it answers to, its short letter, its argument."""

    key: str
    longs: tuple[str, ...]
    short: str = ""
    metavar: str = ""  # empty: a flag; otherwise it takes an argument
    help: str = ""
    group: str = ""


def _group(name: str, *opts: Opt) -> list[Opt]:
    return [Opt(o.key, o.longs, o.short, o.metavar, o.help, name) for o in opts]


#: Socket types, by option key: what the socket type options set.
SOCKET_TYPES = ("push", "pull", "pub", "sub", "req", "rep", "surveyor", "respondent", "bus",
                "pair", "pair0", "pair1")
#: Socket types that send / receive (nanocat's "writeable" and "readable" masks).
SENDERS = {"push", "pub", "req", "rep", "surveyor", "respondent", "bus", "pair", "pair0",
           "pair1"}
RECEIVERS = {"pull", "sub", "req", "rep", "surveyor", "respondent", "bus", "pair", "pair0",
             "pair1"}
#: Socket types that cannot run without something to send.
NEED_DATA = {"push", "pub", "req", "surveyor"}
#: Socket types whose loop never sends on its own: --interval means nothing to them.
NO_INTERVAL = {"pull", "sub", "rep", "respondent"}

OPTIONS: list[Opt] = [
    *_group(
        "Generic",
        Opt("help", ("help",), "h", help="This help text"),
        Opt("version", ("version",), "V", help="Print the version of scaproust and exit"),
        Opt("verbose", ("verbose",), "v",
            help="Say on standard error where the socket listens and connects"),
        Opt("silent", ("silent",), "q", help="Decrease verbosity"),
        Opt("compat", ("compat",), metavar="[nanocat|nngcat]",
            help="Behave as nanocat (the default; --compat alone, as nngcat's) or as nngcat: "
                 "--ascii without newline, --quoted with \\t, -X/-x PATH meaning "
                 "ipc:///PATH, --pair meaning --pair1"),
    ),
    *_group(
        "Socket Types",
        Opt("push", ("push", "push0"), help="Use a PUSH socket"),
        Opt("pull", ("pull", "pull0"), help="Use a PULL socket"),
        Opt("pub", ("pub", "pub0"), help="Use a PUB socket"),
        Opt("sub", ("sub", "sub0"), help="Use a SUB socket"),
        Opt("req", ("req", "req0"), help="Use a REQ socket"),
        Opt("rep", ("rep", "rep0"), help="Use a REP socket"),
        Opt("surveyor", ("surveyor", "surveyor0"), help="Use a SURVEYOR socket"),
        Opt("respondent", ("respondent", "respondent0"), help="Use a RESPONDENT socket"),
        Opt("bus", ("bus", "bus0"), help="Use a BUS socket"),
        Opt("pair", ("pair",), help="Use a PAIR socket (v0; v1 with --compat nngcat)"),
        Opt("pair0", ("pair0",), help="Use a PAIR v0 socket"),
        Opt("pair1", ("pair1",), help="Use a PAIR v1 socket"),
    ),
    *_group(
        "Socket Options",
        Opt("bind", ("bind", "listen"), metavar="ADDR",
            help="Bind socket to the address ADDR (repeatable)"),
        Opt("connect", ("connect", "dial"), metavar="ADDR",
            help="Connect socket to the address ADDR (repeatable)"),
        Opt("bind-ipc", ("bind-ipc",), "X", "PATH",
            help='Bind socket to the ipc address "ipc://PATH"'),
        Opt("connect-ipc", ("connect-ipc",), "x", "PATH",
            help='Connect socket to the ipc address "ipc://PATH"'),
        Opt("bind-local", ("bind-local",), "L", "PORT",
            help='Bind socket to the tcp address "tcp://127.0.0.1:PORT"'),
        Opt("connect-local", ("connect-local",), "l", "PORT",
            help='Connect socket to the tcp address "tcp://127.0.0.1:PORT"'),
        Opt("recv-timeout", ("recv-timeout",), metavar="SEC",
            help="Set timeout for receiving a message (fractional seconds)"),
        Opt("send-timeout", ("send-timeout",), metavar="SEC",
            help="Set timeout for sending a message (fractional seconds)"),
        Opt("recv-maxsz", ("recv-maxsz",), "Z", "SIZE",
            help="Largest message accepted, in bytes; 0 = unlimited"),
        Opt("socket-name", ("socket-name",), metavar="NAME",
            help="Name of the socket for logs"),
        Opt("async", ("async",),
            help="Connect in the background (always so: accepted for nngcat)"),
    ),
    *_group(
        "SUB Socket Options",
        Opt("subscribe", ("subscribe",), metavar="PREFIX",
            help="Subscribe to the prefix PREFIX (repeatable); to everything if none"),
    ),
    *_group(
        "TLS Options (tls+tcp:// and wss:// endpoints)",
        Opt("cacert", ("cacert",), metavar="FILE",
            help="Trust the CA certificates of the PEM file FILE to sign the peer's "
                 "(default: the system's)"),
        Opt("cert", ("cert",), "E", "FILE",
            help="This side's certificate, from the PEM file FILE, which also holds its "
                 "private key unless --key is given; a --bind needs one"),
        Opt("key", ("key",), metavar="FILE", help="The private key of --cert, from FILE"),
        Opt("insecure", ("insecure",), "k",
            help="Do not check the peer's certificate"),
    ),
    *_group(
        "Input Options",
        Opt("format", ("format",), metavar="FORMAT",
            help="Use echo format FORMAT: " + ", ".join(FORMATS)),
        Opt("raw", ("raw",), help="Dump message as is (no delimiters)"),
        Opt("ascii", ("ascii",), "A",
            help="Print ASCII part of message delimited by newline, others as dots"),
        Opt("quoted", ("quoted",), "Q",
            help="Print each message on a line in double quotes, C-like escaping"),
        Opt("msgpack", ("msgpack",), help="Print each message as a msgpack bin string"),
        Opt("hex", ("hex",), help="Print each message on a line in double quotes, as hex"),
    ),
    *_group(
        "Output Options",
        Opt("interval", ("interval",), "i", "SEC",
            help="Send message (or request) every SEC seconds"),
        Opt("delay", ("delay",), "d", "SEC",
            help="Wait SEC seconds after binding and connecting, before anything else"),
        Opt("count", ("count",), "C", "NUM",
            help="Stop after NUM messages sent or received (0 = no limit)"),
        Opt("data", ("data",), "D", "DATA",
            help="Send DATA (PUB, PUSH, PAIR, BUS); the reply of REP and RESPONDENT; "
                 "the request of REQ and SURVEYOR"),
        Opt("file", ("file",), "F", "PATH",
            help="Same as --data but read from file PATH (- for standard input)"),
    ),
]

_BY_LONG = {name: opt for opt in OPTIONS for name in opt.longs}
_BY_SHORT = {opt.short: opt for opt in OPTIONS if opt.short}
_FORMAT_FLAGS = {"raw", "ascii", "quoted", "msgpack", "hex"}
COMPATS = ("nanocat", "nngcat")


@dataclass
class Config:
    """What the command line asks for."""

    socket_type: str = ""
    endpoints: list[tuple[str, str]] = field(default_factory=list)  # (bind|connect, url)
    fmt: str = "no"
    data: bytes | None = None
    interval: float | None = None
    delay: float = 0.0
    send_timeout: float | None = None
    recv_timeout: float | None = None
    recv_max_size: int | None = None
    socket_name: str | None = None
    subscriptions: list[bytes] = field(default_factory=list)
    count: int = 0
    verbose: int = 0
    compat: str = "nanocat"
    help: bool = False
    version: bool = False
    #: TLS, as nngcat: the PEM text of --cacert, --cert and --key (read when parsed), and
    #: --insecure
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_insecure: bool = False

    @property
    def uses_tls(self) -> bool:
        """Whether any TLS option was given."""
        return self.tls_insecure or self.tls_ca is not None or self.tls_cert is not None


class _Parser:
    def __init__(self, argv: list[str], stdin: Callable[[], bytes]) -> None:
        self.argv = argv
        self.pos = 0
        self.stdin = stdin
        self.config = Config()
        self.seen: dict[str, str] = {}  # option key -> how the user spelt it
        self.raw_endpoints: list[tuple[str, str]] = []  # (option key, argument)

    def run(self) -> Config:
        while self.pos < len(self.argv) and not (self.config.help or self.config.version):
            arg = self.argv[self.pos]
            self.pos += 1
            if arg == "--":
                continue  # nanocat skips it too
            if arg.startswith("--"):
                self._long(arg)
            elif arg.startswith("-") and len(arg) > 1:
                self._shorts(arg)
            else:
                raise UsageError(f"Unexpected argument ``{arg}''")
        if not (self.config.help or self.config.version):
            self._finish()
        return self.config

    # ------------------------------------------------------------------ reading argv

    def _long(self, arg: str) -> None:
        body = arg[2:]
        cut = min((i for i in (body.find("="), body.find(":")) if i >= 0), default=-1)
        name, value = (body, None) if cut < 0 else (body[:cut], body[cut + 1:])
        opt = _find_long(name)
        usage = f"--{name}"
        if opt.key == "compat":
            if value is None and self.pos < len(self.argv) and self.argv[self.pos] in COMPATS:
                value = self.argv[self.pos]
                self.pos += 1
            self._apply(opt, usage, value if value is not None else "nanocat")
            return
        if not opt.metavar:
            if value is not None:
                raise UsageError(f"Option {usage} does not accept an argument")
            self._apply(opt, usage, None)
            return
        if value is None:
            value = self._next_argument(usage)
        self._apply(opt, usage, value)

    def _shorts(self, arg: str) -> None:
        letters = arg[1:]
        while letters:
            letter, letters = letters[0], letters[1:]
            opt = _BY_SHORT.get(letter)
            if opt is None:
                raise UsageError(f"Unknown option ``-{letter}''")
            usage = f"-{letter} (--{opt.longs[0]})"
            if not opt.metavar:
                self._apply(opt, usage, None)
                continue
            value = letters if letters else self._next_argument(usage)
            self._apply(opt, usage, value)
            return

    def _next_argument(self, usage: str) -> str:
        if self.pos >= len(self.argv):
            raise UsageError(f"Option {usage} requires an argument")
        self.pos += 1
        return self.argv[self.pos - 1]

    # ------------------------------------------------------------------ meaning

    def _apply(self, opt: Opt, usage: str, value: str | None) -> None:
        c = self.config
        key = opt.key
        if key in SOCKET_TYPES:
            if c.socket_type:
                raise UsageError(f"Option {usage} conflicts with {self.seen['socket']}: "
                                 "give one socket type only")
            c.socket_type = key
            self.seen["socket"] = usage
        elif key in ("data", "file"):
            if c.data is not None:
                raise UsageError(f"Option {usage} conflicts with {self.seen['data']}: "
                                 "give the data once only")
            assert value is not None
            c.data = os.fsencode(value) if key == "data" else self._read(value)
            self.seen["data"] = usage
        elif key in _FORMAT_FLAGS:
            c.fmt = key
            self.seen["format"] = usage
        elif key in ("bind", "connect", "bind-ipc", "connect-ipc", "bind-local",
                     "connect-local"):
            assert value is not None
            if key.endswith("-local"):
                _integer(value, usage, 65535)
            self.raw_endpoints.append((key, value))
        else:
            self._apply_value(key, usage, value)
        self.seen.setdefault(key, usage)

    def _apply_value(self, key: str, usage: str, value: str | None) -> None:
        c = self.config
        if key == "help":
            c.help = True
        elif key == "version":
            c.version = True
        elif key == "verbose":
            c.verbose += 1
        elif key == "silent":
            c.verbose -= 1
        elif key == "compat":
            if value not in COMPATS:
                raise UsageError(f"Option {usage} takes one of: {', '.join(COMPATS)}")
            c.compat = value
        elif key == "async":
            pass  # connecting is always in the background
        elif key == "insecure":
            c.tls_insecure = True
        elif key in ("cacert", "cert", "key"):
            assert value is not None
            if key in self.seen:
                raise UsageError(f"Option {usage} may be given only once")
            text = self._read(value).decode("utf-8", errors="replace")
            if key == "cacert":
                c.tls_ca = text
            elif key == "cert":
                c.tls_cert = text
            else:
                c.tls_key = text
        elif key == "format":
            if value not in FORMATS:
                raise UsageError(f"Invalid value ``{value}'' for {usage}. Options are: "
                                 + ", ".join(FORMATS))
            c.fmt = value
            self.seen["format"] = usage
        elif key == "subscribe":
            assert value is not None
            c.subscriptions.append(os.fsencode(value))
        elif key == "socket-name":
            c.socket_name = value
        elif key == "count":
            assert value is not None
            c.count = _integer(value, usage, 0x7FFFFFFF)
        elif key == "recv-maxsz":
            assert value is not None
            c.recv_max_size = _integer(value, usage, 0x7FFFFFFF)
        else:
            assert value is not None
            seconds = _seconds(value, usage)
            if key == "interval":
                c.interval = seconds
            elif key == "delay":
                c.delay = seconds
            elif key == "send-timeout":
                c.send_timeout = seconds
            else:
                assert key == "recv-timeout", key
                c.recv_timeout = seconds

    def _read(self, path: str) -> bytes:
        if path == "-":
            return self.stdin()
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as error:
            raise DataFileError(f"Error opening file ``{path}'': {error.strerror}") from error

    # ------------------------------------------------------------------ consistency

    def _finish(self) -> None:
        c = self.config
        kind = c.socket_type
        if not kind:
            raise UsageError("At least one of the following required: a socket type ("
                             + ", ".join(f"--{t}" for t in SOCKET_TYPES) + ")")
        if not self.raw_endpoints:
            raise UsageError("At least one of the following required: --bind, --connect, "
                             "--listen, --dial, -X, -x, -L, -l")
        if kind == "pair":
            kind = c.socket_type = "pair1" if c.compat == "nngcat" else "pair0"
        ipc = "ipc:///" if c.compat == "nngcat" else "ipc://"
        for key, value in self.raw_endpoints:
            how = "bind" if key.startswith("bind") else "connect"
            if key.endswith("-ipc"):
                value = ipc + value
            elif key.endswith("-local"):
                value = f"tcp://127.0.0.1:{int(value)}"
            c.endpoints.append((how, value))
        stype = self.seen["socket"]

        def refuse(key: str, why: str) -> None:
            if key in self.seen:
                raise UsageError(f"Option {self.seen[key]} {why} (not {stype})")

        if kind != "sub":
            refuse("subscribe", "needs --sub")
        if kind not in SENDERS:
            refuse("data", "needs a socket that sends")
            refuse("send-timeout", "needs a socket that sends")
        if kind not in RECEIVERS:
            refuse("format", "needs a socket that receives")
            refuse("recv-timeout", "needs a socket that receives")
        if kind in NO_INTERVAL:
            refuse("interval", "needs a socket that sends on its own")
        elif c.interval is not None and c.data is None:
            refuse("interval", "needs --data or --file")
        if c.tls_key is not None and c.tls_cert is None:
            raise UsageError(f"Option {self.seen['key']} needs --cert")
        if kind in NEED_DATA and c.data is None:
            raise UsageError(f"Option {stype} requires at least one of the following "
                             "options: --data, -D, --file, -F")


#: nanocat 1.1.5's long options. A prefix unique among them means the same here, though
#: nngcat's names (--async, --insecure, --pair0, --recv-maxsz, --version...) make it
#: ambiguous among all of ours: ``--rec``, ``--as``, ``--ver`` of a nanocat command line.
NANOCAT_LONGS = frozenset({
    "help", "verbose", "silent", "push", "pull", "pub", "sub", "req", "rep", "surveyor",
    "respondent", "bus", "pair", "bind", "connect", "bind-ipc", "connect-ipc", "bind-local",
    "connect-local", "recv-timeout", "send-timeout", "socket-name", "subscribe", "format",
    "raw", "ascii", "quoted", "msgpack", "hex", "interval", "delay", "data", "file"})


def _find_long(name: str) -> Opt:
    opt = _BY_LONG.get(name)
    if opt is not None:
        return opt
    names = [long for long in _BY_LONG if name and long.startswith(name)]
    keys = {_BY_LONG[long].key for long in names}
    if len(keys) == 1:
        return _BY_LONG[names[0]]
    nanocat = [long for long in names if long in NANOCAT_LONGS]
    if len(nanocat) == 1:
        return _BY_LONG[nanocat[0]]
    if not keys:
        raise UsageError(f"Unknown option ``--{name}''")
    raise UsageError(f"Option ``--{name}'' is ambiguous (specify more of it); it may be:\n"
                     + "\n".join(f"    --{long}" for long in names))


def _seconds(text: str, usage: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"Option {usage} requires a number of seconds >= 0, not ``{text}''")
    return value


def _integer(text: str, usage: str, top: int) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > top:
        raise UsageError(f"Option {usage} requires an integer from 0 to {top}, "
                         f"not ``{text}''")
    return int(text)


def parse(argv: list[str], stdin: Callable[[], bytes] | None = None) -> Config:
    """The configuration ``argv`` (without the program name) asks for.

    Raises UsageError (exit status 1) or DataFileError (2). ``stdin`` reads all of
    standard input for ``--file -`` (default: ``sys.stdin.buffer.read``).
    """
    return _Parser(argv, stdin or (lambda: sys.stdin.buffer.read())).run()


def help_text(prog: str) -> str:
    """The text of ``--help``, grouped as nanocat's."""
    lines = [
        "Usage:",
        f"    {prog} {{--push|--pull|--pub|--sub|--req|--rep|--surveyor|--respondent",
        "        |--bus|--pair|--pair0|--pair1}",
        "        {--bind|--connect|--listen|--dial ADDR | -X|-x PATH | -L|-l PORT}...",
        "        [-vqhVAQ] [-i SEC] [-d SEC] [-C NUM] [-Z SIZE] [-D DATA|-F PATH] [options]",
        "",
        "A command-line interface to scaproust, compatible with nanocat and nngcat.",
        "Long options may be shortened to any unambiguous prefix; --opt=value works.",
    ]
    group = ""
    for opt in OPTIONS:
        if opt.group != group:
            group = opt.group
            lines += ["", f"{group}:"]
        names = ",".join([*(f"--{n}" for n in opt.longs), *([f"-{opt.short}"] if opt.short
                                                            else [])])
        head = f" {names}" + (f" {opt.metavar}" if opt.metavar else "")
        text = textwrap.wrap(opt.help, 80 - 24) or [""]
        if len(head) < 24:
            lines.append(f"{head:<24}{text.pop(0)}")
        else:
            lines.append(head)
        lines += [f"{'':<24}{more}" for more in text]
    lines += ["", "Exit status: 0 done, 1 usage error, 2 unreadable --file, 3 socket error,",
              "130 interrupted (Ctrl-C)."]
    return "\n".join(lines) + "\n"
