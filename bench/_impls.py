"""One small adapter per implementation measured by bench/run.py.

Each adapter opens sockets and hands back plain objects whose ``send(data)`` and
``recv() -> bytes`` methods are called in the hot loops (timeouts are set as socket options
so the loops pass no keyword arguments). Everything is loopback only.

- ``scaproust``: this project (``SCAPROUST_FSM`` in the environment picks the backend; it is
  read at import, so each backend runs in its own process). One ``Session`` (one I/O thread)
  per process, shared by both ends when they live in the same process.
- ``pynng``: nng through pynng (Push0/Pull0/Pair0).
- ``zmq``: pyzmq, only when it is importable (it is never installed by the bench).
"""

from __future__ import annotations

import os
import tempfile

TIMEOUT_S = 30.0  # every blocking call is bounded; the parent also kills slow workers


TMP_ENV = "SCAPROUST_BENCH_TMP"  # set by run.py: one directory per run, removed at its end


def ipc_url(tag: str) -> tuple[str, str]:
    """A fresh IPC address in a private temporary directory: (url, directory)."""
    directory = tempfile.mkdtemp(prefix="ipc-", dir=os.environ.get(TMP_ENV) or None)
    return "ipc://" + os.path.join(directory, f"{tag}.ipc"), directory


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
        raise ValueError(f"unknown transport {transport!r}")

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


class Scaproust(_Base):
    name = "scaproust"

    def __init__(self) -> None:
        super().__init__()
        import scaproust as sp

        self.sp = sp
        self.session = sp.Session()

    def _socket(self, protocol, **options):
        sock = self.session.socket(protocol, send_timeout=TIMEOUT_S, recv_timeout=TIMEOUT_S,
                                   **options)
        self._socks.append(sock)
        return sock

    def pull(self, transport: str):
        sock = self._socket(self.sp.Pull, recv_max_size=0)
        return sock, sock.bind(self._bind_url(transport, "pull")).url

    def push(self, url: str):
        sock = self._socket(self.sp.Push)
        sock.connect(url)
        return sock

    def pair_listen(self, transport: str):
        sock = self._socket(self.sp.Pair, recv_max_size=0)
        return sock, sock.bind(self._bind_url(transport, "pair")).url

    def pair_dial(self, url: str):
        sock = self._socket(self.sp.Pair, recv_max_size=0)
        sock.connect(url)
        return sock

    def close(self) -> None:
        super().close()
        self.session.close()

    def info(self) -> dict:
        from scaproust.core import fsm

        return {"backend": fsm.BACKEND, "version": self.sp.__version__,
                "module": os.path.dirname(self.sp.__file__)}


class Pynng(_Base):
    name = "pynng"

    def __init__(self) -> None:
        super().__init__()
        import pynng

        self.pynng = pynng
        self._ms = int(TIMEOUT_S * 1000)

    def _listen(self, cls, transport: str, tag: str, **options):
        sock = cls(recv_timeout=self._ms, send_timeout=self._ms, **options)
        self._socks.append(sock)
        url = self._bind_url(transport, tag)
        sock.listen(url)
        if transport == "tcp":
            url = "tcp://" + str(sock.listeners[0].local_address)
        return sock, url

    def _dial(self, cls, url: str, **options):
        sock = cls(recv_timeout=self._ms, send_timeout=self._ms, **options)
        self._socks.append(sock)
        sock.dial(url, block=True)
        return sock

    def pull(self, transport: str):
        return self._listen(self.pynng.Pull0, transport, "pull", recv_max_size=0)

    def push(self, url: str):
        return self._dial(self.pynng.Push0, url)

    def pair_listen(self, transport: str):
        return self._listen(self.pynng.Pair0, transport, "pair", recv_max_size=0)

    def pair_dial(self, url: str):
        return self._dial(self.pynng.Pair0, url, recv_max_size=0)

    def info(self) -> dict:
        return {"version": self.pynng.__version__}


class Zmq(_Base):
    """pyzmq, if importable. Untested here when pyzmq is absent (the bench then skips it)."""

    name = "zmq"

    def __init__(self) -> None:
        super().__init__()
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()

    def _sock(self, kind):
        zmq = self.zmq
        sock = self.ctx.socket(kind)
        ms = int(TIMEOUT_S * 1000)
        sock.setsockopt(zmq.RCVTIMEO, ms)
        sock.setsockopt(zmq.SNDTIMEO, ms)
        sock.setsockopt(zmq.LINGER, ms)
        self._socks.append(sock)
        return sock

    def _listen(self, kind, transport: str, tag: str):
        sock = self._sock(kind)
        url = self._bind_url(transport, tag)
        if transport == "tcp":
            url = "tcp://127.0.0.1:*"
        sock.bind(url)
        return sock, sock.getsockopt(self.zmq.LAST_ENDPOINT).decode()

    def _dial(self, kind, url: str):
        sock = self._sock(kind)
        sock.connect(url)
        return sock

    def pull(self, transport: str):
        return self._listen(self.zmq.PULL, transport, "pull")

    def push(self, url: str):
        return self._dial(self.zmq.PUSH, url)

    def pair_listen(self, transport: str):
        return self._listen(self.zmq.PAIR, transport, "pair")

    def pair_dial(self, url: str):
        return self._dial(self.zmq.PAIR, url)

    def close(self) -> None:
        super().close()
        self.ctx.term()

    def info(self) -> dict:
        return {"version": self.zmq.__version__, "libzmq": self.zmq.zmq_version()}


IMPLS = {"scaproust": Scaproust, "pynng": Pynng, "zmq": Zmq}


def make(name: str) -> _Base:
    return IMPLS[name]()
