"""One small adapter per contender measured by bench/run.py.

Each adapter opens sockets by role (``pull``, ``push``, ``req``, ``rep``, ``pair``, ``pub``,
``sub``) and hands back plain objects whose ``send(data)`` and ``recv() -> bytes`` methods
are called in the hot loops (timeouts are set as socket options so the loops pass no
keyword arguments). Everything is loopback only: 127.0.0.1, IPC paths under the run's
temporary directory, or inproc.

- ``scaproust``: this project (``SCAPROUST_FSM`` in the environment picks the backend; it is
  read at import, so each backend runs in its own process). One ``Session`` (one I/O thread)
  per process, shared by both ends when they live in the same process.
- ``pynng``: nng through pynng (Req0/Rep0/Pair0/Push0/Pull0/Pub0/Sub0).
- ``zmq``: pyzmq (one ``zmq.Context`` per process, so inproc works between two threads).
- ``bare``: the ceiling, plain Python sockets and no library: frames of an 8-byte big-endian
  size then the payload. A PUSH coalesces its frames (up to 256 KiB, one ``sendmsg`` of
  many buffers); a round trip sends one frame then reads one. Inproc is a
  ``socket.socketpair()`` between the two threads.

``ready(sock, n)`` is called by the listening side once its peer has been told the URL: it
returns the object to use (for ``bare``, the accepted connection(s); others return ``sock``).
``subs_drain(subs)`` returns a function ``drain(timeout) -> [(index, messages), ...]`` that
waits until one of many SUB sockets is readable and takes everything they hold without
blocking (each library's own poller).
"""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import socket
import tempfile

TIMEOUT_S = 10.0  # every blocking call is bounded; the parent also kills slow workers
TMP_ENV = "SCAPROUST_BENCH_TMP"  # set by run.py: one directory per run, removed at its end


def ipc_url(tag: str) -> tuple[str, str]:
    """A fresh IPC address in a private temporary directory: (url, directory)."""
    directory = tempfile.mkdtemp(prefix="ipc-", dir=os.environ.get(TMP_ENV) or None)
    return "ipc://" + os.path.join(directory, f"{tag}.ipc"), directory


_PKI: dict[str, str] = {}


def pki() -> dict[str, str]:
    """A CA and a certificate for 127.0.0.1 for the TLS benchmarks, PEM text. The two sides
    run in different processes and must agree (pynng's client always checks the server):
    the first process to need them makes them (trustme) and publishes them in one file of
    the run's temporary directory, by a hard link that only one process can make; every
    other process reads that file."""
    if not _PKI:
        directory = os.environ.get(TMP_ENV) or tempfile.gettempdir()
        path = os.path.join(directory, "scaproust-bench-pki.json")
        if not os.path.exists(path):
            import trustme

            ca = trustme.CA()
            cert = ca.issue_cert("127.0.0.1")
            made = {"ca": ca.cert_pem.bytes().decode(),
                    "cert": cert.cert_chain_pems[0].bytes().decode(),
                    "key": cert.private_key_pem.bytes().decode()}
            fd, tmp = tempfile.mkstemp(dir=directory)
            with os.fdopen(fd, "w") as out:
                json.dump(made, out)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process published first: use its
            finally:
                os.unlink(tmp)
        with open(path) as src:
            _PKI.update(json.load(src))
    return _PKI


class _Base:
    name = "?"

    def __init__(self) -> None:
        self._socks: list = []
        self._dirs: list[str] = []

    def _bind_url(self, transport: str, tag: str) -> str:
        if transport == "tcp":
            return "tcp://127.0.0.1:0"
        if transport == "ipc":
            url, directory = ipc_url(tag)
            self._dirs.append(directory)
            return url
        if transport == "inproc":
            return f"inproc://bench-{tag}-{os.getpid()}-{len(self._socks)}"
        if transport == "tls":
            return "tls+tcp://127.0.0.1:0"
        if transport == "ws":
            return "ws://127.0.0.1:0/bench"
        raise ValueError(f"unknown transport {transport!r}")

    def ready(self, sock, n: int = 1):
        return sock

    def context(self, sock):
        """A context of ``sock`` (its own send and recv), for the ``ctx`` case."""
        raise NotImplementedError(f"{self.name} has no contexts")

    def close(self) -> None:
        for sock in reversed(self._socks):
            try:
                sock.close()
            except Exception:  # closing is best effort once the numbers are taken
                pass
        self._socks.clear()
        for directory in self._dirs:
            for entry in os.listdir(directory):
                try:
                    os.unlink(os.path.join(directory, entry))
                except OSError:
                    pass
            try:
                os.rmdir(directory)
            except OSError:
                pass
        self._dirs.clear()

    def info(self) -> dict:
        return {}

    # asyncio, for libraries whose sockets have asend/arecv themselves (scaproust, pynng);
    # pyzmq and the bare ceiling override these.
    def alisten(self, role: str, transport: str):
        return self.listen(role, transport)

    async def aready(self, sock):
        return sock

    def adial(self, role: str, url: str):
        return self.dial(role, url)


# ---------------------------------------------------------------------------- scaproust


class Scaproust(_Base):
    name = "scaproust"

    def __init__(self) -> None:
        super().__init__()
        import scaproust as sp

        self.sp = sp
        self.session = sp.Session()
        self.roles = {"pull": sp.Pull, "push": sp.Push, "req": sp.Req, "rep": sp.Rep,
                      "pair": sp.Pair, "pub": sp.Pub, "sub": sp.Sub}

    def _socket(self, role: str):
        sock = self.session.socket(self.roles[role], send_timeout=TIMEOUT_S,
                                   recv_timeout=TIMEOUT_S, recv_max_size=0)
        self._socks.append(sock)
        return sock

    def listen(self, role: str, transport: str):
        sock = self._socket(role)
        tls = None
        if transport == "tls":
            pem = pki()
            tls = self.sp.TLSConfig(own_cert_string=pem["cert"], own_key_string=pem["key"])
        return sock, sock.bind(self._bind_url(transport, role), tls=tls).url

    def dial(self, role: str, url: str):
        sock = self._socket(role)
        if role == "sub":
            sock.subscribe(b"")
        tls = self.sp.TLSConfig(ca_string=pki()["ca"]) if url.startswith("tls+") else None
        sock.connect(url, tls=tls)
        return sock

    def context(self, sock):
        return sock.context()

    def pipes(self, sock) -> int:
        return sock.stats.get("pipes_opened", 0)

    def subs_drain(self, subs):
        sp = self.sp
        index = {id(s): i for i, s in enumerate(subs)}
        interest = {s: sp.POLLIN for s in subs}

        def drain(timeout: float):
            out = []
            for s in sp.poll(interest, timeout=timeout):
                # What a consumer of bursts calls: every queued message in one lock
                # section per batch rather than one per message.
                got = s.try_recv_many()
                batch = got
                while batch:
                    batch = s.try_recv_many()
                    got += batch
                out.append((index[id(s)], got))
            return out

        return drain

    def close(self) -> None:
        super().close()
        self.session.close()

    def info(self) -> dict:
        from scaproust import fsm

        return {"backend": fsm.BACKEND, "version": self.sp.__version__,
                "module": os.path.dirname(self.sp.__file__)}


# ---------------------------------------------------------------------------- pynng


class Pynng(_Base):
    name = "pynng"

    def __init__(self) -> None:
        super().__init__()
        import pynng

        self.pynng = pynng
        self._ms = int(TIMEOUT_S * 1000)
        self.roles = {"pull": pynng.Pull0, "push": pynng.Push0, "req": pynng.Req0,
                      "rep": pynng.Rep0, "pair": pynng.Pair0, "pub": pynng.Pub0,
                      "sub": pynng.Sub0}

    def _socket(self, role: str):
        sock = self.roles[role](recv_timeout=self._ms, send_timeout=self._ms, recv_max_size=0)
        self._socks.append(sock)
        return sock

    def listen(self, role: str, transport: str):
        sock = self._socket(role)
        url = self._bind_url(transport, role)
        if transport == "tls":
            pem = pki()
            sock.tls_config = self.pynng.TLSConfig(self.pynng.TLSConfig.MODE_SERVER,
                                                   own_cert_string=pem["cert"],
                                                   own_key_string=pem["key"])
        sock.listen(url)
        if transport in ("tcp", "tls", "ws"):
            scheme, _, rest = url.partition("://")
            path = rest.partition("/")[2]
            url = f"{scheme}://{sock.listeners[0].local_address}" + (f"/{path}" if path else "")
        return sock, url

    def dial(self, role: str, url: str):
        sock = self._socket(role)
        if role == "sub":
            sock.subscribe(b"")
        if url.startswith("tls+"):
            tls = self.pynng.TLSConfig
            sock.tls_config = tls(tls.MODE_CLIENT, ca_string=pki()["ca"], server_name="127.0.0.1")
        sock.dial(url, block=True)
        return sock

    def context(self, sock):
        return sock.new_context()

    def pipes(self, sock) -> int:
        return len(sock.pipes)

    def subs_drain(self, subs):
        # nng's recv_fd becomes readable while the socket holds a message.
        sel = selectors.DefaultSelector()
        for i, s in enumerate(subs):
            sel.register(s.recv_fd, selectors.EVENT_READ, i)
        try_again = self.pynng.TryAgain

        def drain(timeout: float):
            out = []
            for key, _ in sel.select(timeout):
                s, got = subs[key.data], []
                try:
                    while True:
                        got.append(s.recv(block=False))
                except try_again:
                    pass
                out.append((key.data, got))
            return out

        return drain

    def info(self) -> dict:
        return {"version": self.pynng.__version__}


# ---------------------------------------------------------------------------- pyzmq


class Zmq(_Base):
    name = "zmq"

    def __init__(self) -> None:
        super().__init__()
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()
        self.actx = None  # zmq.asyncio.Context, made on first use
        self.roles = {"pull": zmq.PULL, "push": zmq.PUSH, "req": zmq.REQ, "rep": zmq.REP,
                      "pair": zmq.PAIR, "pub": zmq.PUB, "sub": zmq.SUB}

    def _socket(self, role: str, ctx=None):
        zmq = self.zmq
        sock = (ctx or self.ctx).socket(self.roles[role])
        ms = int(TIMEOUT_S * 1000)
        sock.setsockopt(zmq.RCVTIMEO, ms)
        sock.setsockopt(zmq.SNDTIMEO, ms)
        sock.setsockopt(zmq.LINGER, ms)
        if role == "sub":
            sock.setsockopt(zmq.SUBSCRIBE, b"")
        self._socks.append(sock)
        return sock

    def listen(self, role: str, transport: str, ctx=None):
        sock = self._socket(role, ctx)
        url = self._bind_url(transport, role)
        if transport == "tcp":
            url = "tcp://127.0.0.1:*"
        sock.bind(url)
        return sock, sock.getsockopt(self.zmq.LAST_ENDPOINT).decode()

    def dial(self, role: str, url: str, ctx=None):
        sock = self._socket(role, ctx)
        sock.connect(url)
        return sock

    def _actx(self):
        if self.actx is None:
            import zmq.asyncio

            self.actx = zmq.asyncio.Context()
        return self.actx

    def alisten(self, role: str, transport: str):
        sock, url = self.listen(role, transport, self._actx())
        return _ZmqAsync(sock), url

    async def aready(self, sock):
        return sock

    def adial(self, role: str, url: str):
        return _ZmqAsync(self.dial(role, url, self._actx()))

    def subs_drain(self, subs):
        zmq = self.zmq
        poller = zmq.Poller()
        index = {}
        for i, s in enumerate(subs):
            poller.register(s, zmq.POLLIN)
            index[s] = i
        flags, again = zmq.NOBLOCK, zmq.Again

        def drain(timeout: float):
            out = []
            for s, _ in poller.poll(int(timeout * 1000)):
                got = []
                try:
                    while True:
                        got.append(s.recv(flags))
                except again:
                    pass
                out.append((index[s], got))
            return out

        return drain

    def close(self) -> None:
        super().close()
        self.ctx.term()
        if self.actx is not None:
            self.actx.term()

    def info(self) -> dict:
        return {"version": self.zmq.__version__, "libzmq": self.zmq.zmq_version()}


class _ZmqAsync:
    """zmq.asyncio socket with the asend/arecv names the async loops call."""

    def __init__(self, sock) -> None:
        self.asend = sock.send
        self.arecv = sock.recv


# ---------------------------------------------------------------------------- bare sockets

HEADER = 8
FLUSH_BYTES = 256 * 1024
FLUSH_PARTS = 512  # sendmsg takes at most IOV_MAX (1024) buffers
CHUNK = 256 * 1024


class Framed:
    """One connected stream socket speaking 8-byte-size frames, with coalesced writes.

    ``send`` writes its frame at once (a round trip needs it on the wire); ``queue`` only
    appends it and writes when 256 KiB or 512 buffers are pending (throughput: one
    ``sendmsg`` for many frames); ``flush`` writes what is pending. ``recv`` returns one
    frame's payload, reading 256 KiB at a time, and a frame larger than that straight
    into its own buffer.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._parts: list = []
        self._pending = 0
        self._buf = b""
        self._pos = 0

    def send(self, data) -> None:
        self._sendmsg_all([len(data).to_bytes(HEADER, "big"), data])

    def queue(self, data) -> None:
        parts = self._parts
        parts.append(len(data).to_bytes(HEADER, "big"))
        parts.append(data)
        self._pending += HEADER + len(data)
        if self._pending >= FLUSH_BYTES or len(parts) >= FLUSH_PARTS:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._sendmsg_all(self._parts)
            self._parts = []
            self._pending = 0

    def _sendmsg_all(self, parts) -> None:
        sent = self.sock.sendmsg(parts)
        total = sum(map(len, parts))
        if sent < total:  # a partial write: the rest in one go (rare, large frames)
            self.sock.sendall(memoryview(b"".join(parts))[sent:])

    def recv(self) -> bytes:
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= HEADER:
            end = pos + HEADER + int.from_bytes(buf[pos:pos + HEADER], "big")
            if end <= len(buf):
                self._pos = end
                return buf[pos + HEADER:end]
        return self._recv_slow()

    def _read(self) -> bytes:
        chunk = self.sock.recv(CHUNK)
        if not chunk:
            raise EOFError("peer closed the connection")
        return chunk

    def _recv_slow(self) -> bytes:
        rest = self._buf[self._pos:]
        while len(rest) < HEADER:
            rest += self._read()
        n = int.from_bytes(rest[:HEADER], "big")
        if n <= CHUNK:
            while len(rest) < HEADER + n:
                rest += self._read()
            self._buf, self._pos = rest, HEADER + n
            return rest[HEADER:HEADER + n]
        body = bytearray(n)  # large: read the remainder in place, exactly up to its end
        have = len(rest) - HEADER
        body[:have] = rest[HEADER:]
        view = memoryview(body)
        while have < n:
            got = self.sock.recv_into(view[have:], n - have)
            if not got:
                raise EOFError("peer closed the connection")
            have += got
        self._buf, self._pos = b"", 0
        return body

    def recv_available(self) -> list:
        """Non-blocking socket: every whole frame after one read (fan-out drain)."""
        try:
            self._buf = self._buf[self._pos:] + self._read()
        except BlockingIOError:
            return []
        self._pos = 0
        out = []
        buf, pos = self._buf, 0
        while len(buf) - pos >= HEADER:
            end = pos + HEADER + int.from_bytes(buf[pos:pos + HEADER], "big")
            if end > len(buf):
                break
            out.append(buf[pos + HEADER:end])
            pos = end
        self._pos = pos
        return out

    def close(self) -> None:
        self.sock.close()


class _Coalescing:
    """A PUSH end of the bare ceiling: ``send`` queues, ``flush`` ends the batch."""

    def __init__(self, framed: Framed) -> None:
        self.send = framed.queue
        self.flush = framed.flush
        self.close = framed.close


class _FanOut:
    """The bare PUB: every frame to every subscriber, coalesced, blocking (no drop)."""

    def __init__(self, conns: list) -> None:
        self.conns = conns
        self._parts: list = []
        self._pending = 0

    def send(self, data) -> None:
        self._parts.append(len(data).to_bytes(HEADER, "big"))
        self._parts.append(data)
        self._pending += HEADER + len(data)
        if self._pending >= FLUSH_BYTES or len(self._parts) >= FLUSH_PARTS:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            data = b"".join(self._parts)
            for c in self.conns:
                c.sock.sendall(data)
            self._parts = []
            self._pending = 0


class _BareListener:
    def __init__(self, sock, role) -> None:
        self.sock, self.role = sock, role

    def close(self) -> None:
        self.sock.close()


class Bare(_Base):
    name = "bare"

    def __init__(self) -> None:
        super().__init__()
        self._inproc: dict = {}  # url -> the dialer's end of a socketpair

    def _setup(self, s: socket.socket) -> socket.socket:
        if s.family == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Blocking without a timeout: with one, CPython polls before every recv (one more
        # system call per frame); the parent kills a stuck worker anyway.
        s.settimeout(None)
        return s

    def _wrap(self, s: socket.socket, role: str):
        framed = Framed(self._setup(s))
        self._socks.append(framed)
        return _Coalescing(framed) if role == "push" else framed

    def listen(self, role: str, transport: str):
        url = self._bind_url(transport, role)
        if transport == "inproc":
            a, b = socket.socketpair()
            self._inproc[url] = b
            return self._wrap(a, role), url
        if transport == "tcp":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            url = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(url[len("ipc://"):])
        s.listen(1024)
        s.settimeout(TIMEOUT_S)
        lst = _BareListener(s, role)
        self._socks.append(lst)
        return lst, url

    def ready(self, sock, n: int = 1):
        if not isinstance(sock, _BareListener):
            return sock  # inproc: already connected
        conns = [self._wrap(sock.sock.accept()[0], sock.role) for _ in range(n)]
        return _FanOut(conns) if sock.role == "pub" else conns[0]

    def _connect(self, url: str) -> socket.socket:
        if url.startswith("inproc://"):
            return self._inproc.pop(url)
        if url.startswith("tcp://"):
            host, port = url[len("tcp://"):].rsplit(":", 1)
            return socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(url[len("ipc://"):])
        return s

    def dial(self, role: str, url: str):
        return self._wrap(self._connect(url), role)

    def subs_drain(self, subs):
        sel = selectors.DefaultSelector()
        for i, f in enumerate(subs):
            f.sock.setblocking(False)
            sel.register(f.sock, selectors.EVENT_READ, i)

        def drain(timeout: float):
            out = []
            for key, _ in sel.select(timeout):
                out.append((key.data, subs[key.data].recv_available()))
            return out

        return drain

    # asyncio: streams, same framing, one frame per write
    def alisten(self, role: str, transport: str):
        if transport != "tcp":
            raise ValueError("the bare asyncio contender is TCP only")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        self._socks.append(s)
        return s, f"tcp://127.0.0.1:{s.getsockname()[1]}"

    async def aready(self, lsock):
        loop = asyncio.get_running_loop()
        lsock.setblocking(False)
        conn, _ = await loop.sock_accept(lsock)
        return await _AsyncFramed.open(sock=self._setup(conn))

    async def adial(self, role: str, url: str):
        host, port = url[len("tcp://"):].rsplit(":", 1)
        return await _AsyncFramed.open(host=host, port=int(port))

    def info(self) -> dict:
        return {"framing": "8-byte big-endian size + payload", "coalesce_bytes": FLUSH_BYTES}


class _AsyncFramed:
    """asyncio streams with the bare framing (the asyncio round trip's ceiling)."""

    @classmethod
    async def open(cls, **kw):
        if "sock" in kw:
            kw["sock"].setblocking(False)
        reader, writer = await asyncio.open_connection(**kw)
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self = cls()
        self.reader, self.writer = reader, writer
        return self

    async def asend(self, data) -> None:
        self.writer.write(len(data).to_bytes(HEADER, "big") + data)
        await self.writer.drain()

    async def arecv(self) -> bytes:
        n = int.from_bytes(await self.reader.readexactly(HEADER), "big")
        return await self.reader.readexactly(n)


IMPLS = {"scaproust": Scaproust, "pynng": Pynng, "zmq": Zmq, "bare": Bare}


def make(name: str) -> _Base:
    return IMPLS[name]()
