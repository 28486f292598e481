"""pynng in a child process, so that an abort inside nng cannot end the pytest run.

Why
---
nng (nng 1.11 inside pynng 0.9) sometimes aborts while a WebSocket dialer is torn down: once
in about six CI runs the whole pytest run died with ``Fatal Python error: Aborted`` inside
pynng's ``Socket.close()`` in ``test_ws.py``, after that test's exchange had passed (nng's
tracker has such teardown aborts: nanomsg/nng#436, #2238). An abort cannot be caught, so
the sockets of such tests live in a child process (this file run as a script), driven over
a socketpair, one call at a time; the test asserts in the pytest process, as before.

What a death of the child means
-------------------------------
- It dies from a signal while closing a socket, or while exiting at the end (or hangs
  there, and is killed): the calls before it, and the test's assertions on them, have all
  returned, so this is nng's teardown abort. The test goes on and passes, with an
  ``NngTeardownAbort`` warning that carries the child's status and the tail of its stderr.
- It dies or hangs at any other moment (starting, opening a socket, dialing, sending,
  receiving), or exits with a non-zero status without a signal: the test fails with an
  ``AssertionError`` naming the call, the status and the tail of its stderr.

Every wait on the child is bounded (``CALL_DEADLINE``); ``close()`` (also the end of a
``with``) ends the child and reaps it, killing it if it does not exit in time. A child
whose pytest process vanished exits at EOF on the socketpair, and dies of SIGALRM after
``LIFETIME`` seconds at the latest even if a pynng call never returns. Loopback only, like
every peer of the interop tests.

Usage (the ``pynng_child`` fixture of conftest.py makes one per test)::

    with PynngChild(pynng) as child, child.socket("Req0", dial=url, recv_timeout=5000) as req:
        req.send(b"ping")
        assert req.recv() == b"pong"

``socket(kind, **options)`` takes pynng's constructor keywords; ``tls_config`` is a dict
of ``pynng.TLSConfig``'s keywords, with ``mode`` and ``auth_mode`` given by the name of
their ``TLSConfig`` constant (``{"mode": "MODE_CLIENT", "ca_string": ...}``). A pynng
exception in the child is raised again in the test as the same ``pynng.exceptions`` class.
``listen(url)`` returns the address bound, so a listener can take port 0 and say its port.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import tempfile
import traceback
import warnings
from multiprocessing.connection import Connection, Pipe
from types import ModuleType, TracebackType
from typing import Any

# No call to pynng takes longer in these tests than its own timeout (5 s) or a loopback
# dial; the margin is for a loaded CI machine.
CALL_DEADLINE = 30.0
# The child's own end, past the per-test watchdog of tests/conftest.py (180 s).
LIFETIME = 300
STDERR_TAIL = 4000


class NngTeardownAbort(UserWarning):
    """The pynng child died from a signal in its teardown, after the test's exchange."""


class ChildDied(AssertionError):
    """The pynng child died (or stopped answering) during a call."""

    def __init__(self, message: str, *, signalled: bool) -> None:
        super().__init__(message)
        self.signalled = signalled


class PynngChild:
    """A child process holding pynng sockets; see the module docstring."""

    def __init__(self, pynng: ModuleType) -> None:
        self._pynng = pynng  # the parent's pynng, only for its exception classes
        self._stderr = tempfile.TemporaryFile()
        ours, theirs = Pipe(duplex=True)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, __file__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=self._stderr,
                stderr=self._stderr,
            )
        finally:
            theirs.close()
        self._conn = ours
        self._serial = 0
        self._dead: str | None = None  # why the child is gone, once it is
        try:
            self._call("its start", ("start", 0, (), {}))  # pynng imported, ready
        except BaseException:
            self._release()
            raise

    def __enter__(self) -> PynngChild:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def socket(self, kind: str, **options: Any) -> RemoteSocket:
        """A new ``pynng.<kind>(**options)`` in the child."""
        self._serial += 1
        self._call(f"{kind}({_brief(options)})", ("open", self._serial, (kind,), options))
        return RemoteSocket(self, self._serial, kind)

    def close(self) -> None:
        """Close every socket still open, end the child and reap it (always, within bounds)."""
        try:
            self._teardown("the end of the pynng child", ("exit", 0, (), {}))
            if self._dead is None:  # it answered: now it exits, closing nng on the way
                killed = self._reap(grace=CALL_DEADLINE)
                what = f"its exit (not over in {CALL_DEADLINE} s)" if killed else "its exit"
                if self._proc.returncode < 0:
                    _warn_teardown_abort(self._died(what))
                elif self._proc.returncode != 0:
                    raise AssertionError(self._died(what))
        finally:
            self._release()

    def _release(self) -> None:
        self._reap(grace=0)
        self._conn.close()
        self._stderr.close()

    # ---------------------------------------------------------------- the calls

    def _call(self, what: str, request: tuple[str, int, tuple[Any, ...], dict[str, Any]]) -> Any:
        """Send one request and return its reply's value; a death or silence fails."""
        if self._dead is not None:
            raise AssertionError(f"{what}: the pynng child is gone ({self._dead})")
        try:
            self._conn.send(request)
            if not self._conn.poll(CALL_DEADLINE):
                self._reap(grace=0)
                raise ChildDied(self._died(f"{what} (no answer in {CALL_DEADLINE} s)"),
                                signalled=True)
            reply = self._conn.recv()
        except (EOFError, OSError):  # it is dying: let it finish, to report its signal
            self._reap(grace=5.0)
            raise ChildDied(self._died(what), signalled=self._proc.returncode < 0) from None
        status, *rest = reply
        if status == "ok":
            return rest[0]
        if status == "nng":  # a pynng exception: the same class here, for pytest.raises
            name, message, errno = rest
            raise getattr(self._pynng.exceptions, name)(message, errno)
        raise AssertionError(f"{what} failed in the pynng child:\n{rest[0]}")

    def _teardown(self, what: str, request: tuple[str, int, tuple[Any, ...], dict[str, Any]]) -> None:
        """A closing call: death from a signal (or no answer) here is nng's teardown, a warning.

        Nothing to do once the child is gone: its sockets went with it.
        """
        if self._dead is not None:
            return
        try:
            self._call(what, request)
        except ChildDied as died:
            if not died.signalled:
                raise
            _warn_teardown_abort(str(died))

    def _reap(self, grace: float) -> bool:
        """Wait ``grace`` seconds for the child to exit, then kill it; reap it either way.
        Whether it had to be killed."""
        try:
            self._proc.wait(timeout=grace)
            return False
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=CALL_DEADLINE)
            return True

    def _died(self, what: str) -> str:
        """Describe the child's end during ``what``; mark it gone."""
        rc = self._proc.poll()
        if rc is None:
            status = "still running"
        elif rc < 0:
            status = f"killed by {signal.Signals(-rc).name}"
        else:
            status = f"exited with status {rc}"
        self._dead = f"{status} during {what}"
        size = os.fstat(self._stderr.fileno()).st_size
        start = max(0, size - STDERR_TAIL)
        tail = os.pread(self._stderr.fileno(), size - start, start).decode(errors="replace")
        return f"the pynng child was {self._dead}; the end of its stderr:\n{tail}"


class RemoteSocket:
    """A pynng socket in a ``PynngChild``: ``send``, ``recv``, ``dial``, ``listen``, ``close``."""

    def __init__(self, child: PynngChild, serial: int, kind: str) -> None:
        self._child, self._serial, self.kind = child, serial, kind
        self._closed = False

    def __enter__(self) -> RemoteSocket:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _do(self, method: str, *args: Any, **kwargs: Any) -> Any:
        what = f"{self.kind}.{method}({_brief(args)})"
        return self._child._call(what, (method, self._serial, args, kwargs))

    def send(self, data: bytes) -> None:
        self._do("send", bytes(data))

    def recv(self) -> bytes:
        return bytes(self._do("recv"))

    def dial(self, url: str, *, block: bool | None = None) -> None:
        self._do("dial", url, block=block)

    def listen(self, url: str) -> str:
        """Listen on ``url``; return the address bound, ``host:port`` over TCP and WebSocket."""
        return str(self._do("listen", url))

    def close(self) -> None:
        """Close the socket; nng aborting here (its teardown) is a warning, not a failure."""
        if not self._closed:
            self._closed = True
            self._child._teardown(f"{self.kind}.close()", ("close", self._serial, (), {}))


def _warn_teardown_abort(died: str) -> None:
    warnings.warn(
        NngTeardownAbort(
            "nng ended the pynng child in its teardown, after the test's exchange had passed "
            f"(nng's known teardown aborts, nanomsg/nng#436, #2238); the test passes: {died}"
        ),
        stacklevel=3,
    )


def _brief(values: Any) -> str:
    text = repr(values)
    return text if len(text) <= 120 else text[:117] + "..."


# ---------------------------------------------------------------- the child


def _child(fd: int) -> None:
    faulthandler.enable()  # a fatal signal prints the Python stack to stderr (the tail)
    signal.alarm(LIFETIME)
    conn = Connection(fd)
    import pynng

    sockets: dict[int, Any] = {}
    while True:
        try:
            method, serial, args, kwargs = conn.recv()
        except EOFError:  # the pytest process is gone
            return
        value = None
        try:
            if method == "open":
                if "tls_config" in kwargs:
                    kwargs["tls_config"] = _tls_config(pynng, kwargs["tls_config"])
                sockets[serial] = getattr(pynng, args[0])(**kwargs)
            elif method == "exit":
                for sock in sockets.values():
                    sock.close()
            elif method == "listen":
                # str(): "host:port"; pynng 0.9's InAddr.port is the raw big-endian number
                value = str(sockets[serial].listen(*args, **kwargs).local_address)
            elif method == "close":
                sockets.pop(serial).close()
            elif method in ("send", "recv", "dial"):
                result = getattr(sockets[serial], method)(*args, **kwargs)
                value = result if method == "recv" else None
            elif method != "start":
                raise ValueError(f"unknown request {method!r}")
        except pynng.exceptions.NNGException as error:
            conn.send(("nng", type(error).__name__, str(error), error.errno))
        except Exception:
            conn.send(("error", traceback.format_exc()))
        else:
            conn.send(("ok", value))
        if method == "exit":
            return


def _tls_config(pynng: Any, spec: dict[str, Any]) -> Any:
    spec = dict(spec)
    for key in ("mode", "auth_mode"):
        if key in spec:
            spec[key] = getattr(pynng.TLSConfig, spec[key])
    return pynng.TLSConfig(**spec)


if __name__ == "__main__":
    _child(int(sys.argv[1]))
