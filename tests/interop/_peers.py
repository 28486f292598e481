"""Real SP peers for the interop tests: pynng (nng 1.11), nngcat (nng 1.5.2), nanocat (nanomsg 1.1.5).

Theory of operation
-------------------
Every peer, whatever it is, is driven the same way, the way the two command-line tools work:
it is started with one role (listen or dial), one protocol, and at most one message to send
(``send=``), which it sends as soon as it has a peer. A peer of a receiving protocol (pair,
pull) records everything it receives; ``messages(n)`` waits for ``n`` of them and returns
all it has, so that a test comparing the result with ``n`` bodies also catches an extra one.

- nngcat and nanocat run as subprocesses with ``--msgpack`` output, so message boundaries
  are exact, including zero-length messages (``--raw`` cannot show an empty message, and
  nanocat's ``--ascii`` adds a newline). Each runs under ``timeout -s KILL`` so that it dies
  even if the test process is killed, and ``close()`` kills its whole process group.
- pynng runs in process; its one send runs on a thread so that it can block until a pipe
  exists, as the tools do. It receives with ``recv_msg()``, because pynng 0.9.0's ``recv()``
  raises on a zero-length message (WIRE.md, "Known peer bugs").

A peer that listens is ready only once its socket is in ``/proc/net/tcp{,6}`` or
``/proc/net/unix``: never probe an nng 1.5.2 listener by connect-and-close, it can break an
IPC listener (nng#1518, WIRE.md).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import pytest

import scaproust as sp

# Anything that should happen (a listener appearing, a message arriving, a process exiting)
# gets this long; on loopback it takes milliseconds, the margin is for loaded CI machines.
DEADLINE = 5.0
# How long a wrong-protocol peer is given to (wrongly) deliver before we call it refused.
# The header exchange on loopback takes well under a millisecond and every peer's first
# connect attempt is immediate, so half a second is generous without making the suite slow.
REFUSAL_WINDOW = 0.5
# A subprocess peer is SIGKILLed after this long even if the fixture finalizer never runs.
PEER_LIFETIME = 30
# Our default recv_max_size, and the size of the "large" payload: the limit is inclusive.
ONE_MIB = 1 << 20

_POLL = 0.01
_serial = itertools.count()


# --------------------------------------------------------------------------------------
# waiting


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(_POLL)


def _tcp_listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A":  # TCP_LISTEN
                ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def _unix_listening_paths() -> set[str]:
    paths = set()
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        # Num RefCount Protocol Flags Type St Inode [Path]; flag 0x10000 is __SO_ACCEPTCON,
        # set by listen(): the path alone shows up at bind(), before connections are taken.
        if len(fields) >= 8 and int(fields[3], 16) & 0x10000:
            paths.add(fields[7])
    return paths


def is_listening(url: str) -> bool:
    """Whether some process on this machine listens on ``url`` (tcp:// or ipc://)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "tcp":
        return parsed.port in _tcp_listening_ports()
    if parsed.scheme == "ipc":
        return ipc_path(url) in _unix_listening_paths()
    raise ValueError(f"no listener check for {url}")


# --------------------------------------------------------------------------------------
# addresses


def ipc_path(url: str) -> str:
    assert url.startswith("ipc://"), url
    return url[len("ipc://") :]


def _ephemeral_ports() -> range:
    """The ports the kernel hands out by itself (to a bind to port 0, to a connect)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(word) for word in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)


def free_tcp_port() -> int:
    """A port free now that another process (a peer we start) will listen on.

    Chosen below the kernel's ephemeral range: a port the kernel found free for a bind to
    port 0 is in that range, where any connection made meanwhile (by this suite, by a peer)
    may take it as its source port before the peer binds it, and the peer's listen fails.
    Ports outside the range are only ever taken by an explicit bind.
    """
    ephemeral = _ephemeral_ports()
    top = ephemeral.start if ephemeral.start > 20000 else 65536
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(10000, top)
        if port in ephemeral:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # taken: another one
            return port
    raise RuntimeError("no free TCP port outside the ephemeral range")


def listen_url(transport: str, directory: Path, name: str) -> str:
    """A URL for a listener: a free port over TCP, a socket file ``directory/name.ipc`` over IPC."""
    if transport == "tcp":
        return f"tcp://127.0.0.1:{free_tcp_port()}"
    if transport == "ipc":
        path = directory / f"{name}.ipc"
        # sun_path holds 108 bytes; fail clearly rather than let a peer truncate the path.
        assert len(os.fsencode(path)) < 100, f"IPC path too long for a unix socket: {path}"
        return f"ipc://{path}"
    raise ValueError(transport)


def our_listen_url(transport: str, directory: Path) -> str:
    """Like ``listen_url`` but with port 0 over TCP: our ``Endpoint.url`` tells the real one."""
    return "tcp://127.0.0.1:0" if transport == "tcp" else listen_url(transport, directory, "ours")


# --------------------------------------------------------------------------------------
# messages


def summary(body: bytes) -> str:
    """A short exact description of a body, so a 1 MiB mismatch prints one line, not 2 MiB."""
    digest = hashlib.sha256(body).hexdigest()[:16]
    return f"{len(body)} bytes sha256:{digest} {body[:12]!r}"


def summaries(bodies: list[bytes]) -> list[str]:
    return [summary(body) for body in bodies]


def parse_msgpack_strings(data: bytes) -> tuple[list[bytes], int]:
    """Split the output of ``--msgpack`` into messages; return them and the bytes consumed.

    nngcat and nanocat write each message as one msgpack bin (0xc4-0xc6) [seen]; str
    (fixstr, 0xd9-0xdb) is accepted too. A message cut short at the end of ``data`` is left
    unconsumed: the peer is still writing it.
    """
    messages, pos = [], 0
    while pos < len(data):
        tag = data[pos]
        if 0xA0 <= tag <= 0xBF:
            width, size = 0, tag & 0x1F
        elif tag in (0xC4, 0xD9):
            width = 1
        elif tag in (0xC5, 0xDA):
            width = 2
        elif tag in (0xC6, 0xDB):
            width = 4
        else:
            raise AssertionError(f"unexpected msgpack tag {tag:#x} at byte {pos} of peer output")
        if pos + 1 + width > len(data):
            break
        if width:
            size = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
        end = pos + 1 + width + size
        if end > len(data):
            break
        messages.append(data[pos + 1 + width : end])
        pos = end
    return messages, pos


# --------------------------------------------------------------------------------------
# peers


class Peer:
    """What every peer offers the tests; see the module docstring."""

    name: str

    def wait_listening(self) -> None:
        """Return once the peer accepts connections (a no-op for a dialer)."""
        raise NotImplementedError

    def received(self) -> list[bytes]:
        """Every message received so far, without waiting."""
        raise NotImplementedError

    def messages(self, count: int) -> list[bytes]:
        """Wait until ``count`` messages have arrived; return every message received."""
        wait_until(lambda: len(self.received()) >= count, f"{count} message(s) at {self}")
        return self.received()

    def wait_send_failed(self) -> None:
        """Wait until the peer's one send has failed with its send timeout."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def state(self) -> str:
        """How the peer is doing, for a failure's message."""
        return "running"


class CatPeer(Peer):
    """nngcat or nanocat as a subprocess; see the module docstring."""

    def __init__(self, argv: list[str], workdir: Path, name: str, url: str, listens: bool):
        self.name, self.url, self.listens, self.argv = name, url, listens, argv
        self._stdout_path = workdir / f"{name}.out"
        self._stderr_path = workdir / f"{name}.err"
        with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                ["timeout", "-s", "KILL", str(PEER_LIFETIME), *argv],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # its own process group, so close() reaches the tool
            )

    def __str__(self) -> str:
        return f"{self.name} ({' '.join(self.argv)})"

    def stderr(self) -> str:
        return self._stderr_path.read_bytes().decode(errors="replace")

    def _alive(self) -> bool:
        return self._proc.poll() is None

    def state(self) -> str:
        if self._alive():
            return f"running, stderr {self.stderr()!r}"
        return f"exited with {self._proc.returncode}, stderr {self.stderr()!r}"

    def wait_listening(self) -> None:
        if not self.listens:
            return

        def ready() -> bool:
            if not self._alive():
                raise AssertionError(
                    f"{self} exited with {self._proc.returncode} before listening: {self.stderr()!r}"
                )
            return is_listening(self.url)

        wait_until(ready, f"{self} to listen on {self.url}")

    def received(self) -> list[bytes]:
        messages, _ = parse_msgpack_strings(self._stdout_path.read_bytes())
        return messages

    def messages(self, count: int) -> list[bytes]:
        try:
            got = super().messages(count)
        except AssertionError as error:
            got = summaries(self.received())
            raise AssertionError(f"{error}; got {got}; stderr {self.stderr()!r}") from None
        data = self._stdout_path.read_bytes()
        _, consumed = parse_msgpack_strings(data)
        assert consumed == len(data), f"{self} wrote a partial message after {len(got)} messages"
        return got

    def wait_send_failed(self) -> None:
        try:
            rc = self._proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self} still running: its send did not time out") from None
        stderr = self.stderr()
        # nngcat: "Send error: Timed out" (exit 1); nanocat: "Can't send: Connection timed
        # out" (exit 3) [seen].
        assert rc != 0 and "timed out" in stderr.lower(), (
            f"{self} exited with {rc} and stderr {stderr!r}, not with a send timeout"
        )

    def close(self) -> None:
        for sig, grace in ((signal.SIGTERM, 2.0), (signal.SIGKILL, DEADLINE)):
            if not self._alive():
                break
            try:
                os.killpg(self._proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self._proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        if self._alive():
            raise AssertionError(f"{self} survived SIGKILL")


class PynngPeer(Peer):
    """A pynng socket in this process; see the module docstring."""

    def __init__(self, pynng, proto: str, url: str, listens: bool, send, send_timeout):
        self.name, self.url, self._pynng = f"pynng-{proto}", url, pynng
        factory = {"pair": pynng.Pair0, "push": pynng.Push0, "pull": pynng.Pull0}[proto]
        timeout_ms = round(1000 * (send_timeout if send_timeout is not None else DEADLINE))
        self._socket = factory(send_timeout=timeout_ms)
        self._received: list[bytes] = []
        self._send_outcome: list[BaseException | None] = []
        self._sender = None
        try:
            if listens:
                self._socket.listen(url)  # synchronous: listening when it returns
            else:
                self._socket.dial(url, block=False)  # retries in the background, like ours
        except BaseException:
            self._socket.close()
            raise
        if send is not None:
            self._sender = threading.Thread(target=self._send, args=(send,), daemon=True)
            self._sender.start()

    def __str__(self) -> str:
        return f"{self.name} on {self.url}"

    def _send(self, body: bytes) -> None:
        try:
            self._socket.send(body)
        except BaseException as error:  # reported by wait_send_failed / close
            self._send_outcome.append(error)
        else:
            self._send_outcome.append(None)

    def wait_listening(self) -> None:
        pass

    def received(self) -> list[bytes]:
        while True:
            try:
                self._received.append(self._socket.recv_msg(block=False).bytes)
            except self._pynng.TryAgain:
                return list(self._received)

    def wait_send_failed(self) -> None:
        assert self._sender is not None, f"{self} was given nothing to send"
        self._sender.join(DEADLINE)
        assert not self._sender.is_alive(), f"{self} still sending: its send did not time out"
        (outcome,) = self._send_outcome
        assert isinstance(outcome, self._pynng.Timeout), f"{self} send ended with {outcome!r}"

    def close(self) -> None:
        self._socket.close()  # also ends a send still blocked on the thread
        if self._sender is not None:
            self._sender.join(DEADLINE)
            assert not self._sender.is_alive(), f"{self} send thread outlived close()"


class Peers:
    """Starts peers of one implementation for one test, and closes them all at the end."""

    # command-line spellings: protocol flags, listen flag, dial flag
    _CAT_FLAGS = {
        "nngcat": ({"pair": "--pair0", "push": "--push0", "pull": "--pull0"}, "--listen", "--dial"),
        "nanocat": ({"pair": "--pair", "push": "--push", "pull": "--pull"}, "--bind", "--connect"),
    }

    def __init__(self, kind: str, implementation, workdir: Path):
        self.kind, self._impl, self._workdir = kind, implementation, workdir
        self._started: list[Peer] = []

    def __str__(self) -> str:
        return self.kind

    def start(
        self,
        proto: str,
        *,
        listen: str | None = None,
        dial: str | None = None,
        send: bytes | None = None,
        send_timeout: float | None = None,
    ) -> Peer:
        """Start a peer that listens on or dials one URL, and sends ``send`` once if given.

        A listening peer is returned ready: its socket is already accepting connections.
        """
        assert (listen is None) != (dial is None), "exactly one of listen= and dial="
        url = listen if listen is not None else dial
        if self.kind == "pynng":
            peer: Peer = PynngPeer(self._impl, proto, url, listen is not None, send, send_timeout)
        else:
            peer = self._start_cat(proto, url, listen is not None, send, send_timeout)
        self._started.append(peer)
        peer.wait_listening()
        return peer

    def _start_cat(self, proto, url, listens, send, send_timeout) -> CatPeer:
        protos, listen_flag, dial_flag = self._CAT_FLAGS[self.kind]
        name = f"{self.kind}-{proto}-{next(_serial)}"  # names the output files
        argv = [self._impl, protos[proto], listen_flag if listens else dial_flag, url]
        if proto in ("pair", "pull"):
            argv += ["--msgpack"]
        if send is not None:
            if send:
                payload = self._workdir / f"{name}.payload"
                payload.write_bytes(send)
                argv += ["--file", str(payload)]
            else:
                argv += ["--data", ""]  # nanocat asserts on an empty --file [seen]
            if proto == "push":
                # A one-shot push exits soon after its send and drops whatever the kernel
                # has not taken yet: nanocat loses a 1 MiB message even to a fast reader,
                # nngcat loses it over IPC to a slow one (219272 of 1048593 bytes) [seen].
                # Asked for a second message after the lifetime, the tool stays to flush
                # the first and never sends the second.
                later = ["--interval", str(2 * PEER_LIFETIME)]
                argv += later + (["--count", "2"] if self.kind == "nngcat" else [])
        if send_timeout is not None:
            # nngcat takes whole seconds only ("Integer argument expected") [seen].
            seconds = math.ceil(send_timeout) if self.kind == "nngcat" else send_timeout
            argv += ["--send-timeout", str(seconds)]
        return CatPeer(argv, self._workdir, name, url, listens)

    def close(self) -> None:
        errors = []
        for peer in reversed(self._started):
            try:
                peer.close()
            except AssertionError as error:
                errors.append(str(error))
        assert not errors, errors


# --------------------------------------------------------------------------------------
# the test matrix and our side of a link

PEER_KINDS = ["pynng", "nngcat", "nanocat"]
TRANSPORTS = ["tcp", "ipc"]
WE_LISTEN, THEY_LISTEN = "we-listen", "they-listen"
SIDES = [WE_LISTEN, THEY_LISTEN]
SIZES = ["short", "empty", "1MiB"]


def interop_matrix(test):
    """Run ``test`` for every transport x who listens x peer, with ids like ``tcp-we-listen-nngcat``."""
    # ids list the parameters in the order the marks are applied
    test = pytest.mark.parametrize("transport", TRANSPORTS)(test)
    test = pytest.mark.parametrize("side", SIDES)(test)
    test = pytest.mark.parametrize("their", PEER_KINDS, indirect=True)(test)
    return pytest.mark.interop(test)


def body(size: str, author: str) -> bytes:
    """A message body of the named size; ``author`` makes the two directions' bodies differ."""
    if size == "short":
        return f"hello from {author}".encode()
    if size == "empty":
        return b""
    if size == "1MiB":
        # Exactly our default recv_max_size: the limit is inclusive, so this must pass.
        return random.Random(author).randbytes(ONE_MIB)
    raise ValueError(size)


def open_ours(session, kind):
    """One of our sockets, with timeouts so that no call in a test can hang."""
    options = {}
    if kind in (sp.Pair, sp.Push):
        options["send_timeout"] = DEADLINE
    if kind in (sp.Pair, sp.Pull):
        options["recv_timeout"] = DEADLINE
    return session.socket(kind, **options)


def link(
    session,
    their: Peers,
    directory: Path,
    transport: str,
    side: str,
    our_kind,
    their_proto: str,
    **peer_args,
):
    """Join one of our sockets and one of theirs; return ``(ours, theirs, url of the listener)``.

    With ``WE_LISTEN`` ours binds and theirs dials; with ``THEY_LISTEN`` theirs listens (and
    is ready) before ours connects. ``peer_args`` go to ``Peers.start``.
    """
    ours = open_ours(session, our_kind)
    if side == WE_LISTEN:
        url = ours.bind(our_listen_url(transport, directory)).url
        peer = their.start(their_proto, dial=url, **peer_args)
    else:
        url = listen_url(transport, directory, "theirs")
        peer = their.start(their_proto, listen=url, **peer_args)
        ours.connect(url)
    return ours, peer, url


def nothing_more(ours) -> None:
    """Our socket holds no message beyond those the test has taken."""
    with pytest.raises(sp.WouldBlock):
        ours.recv(block=False)
