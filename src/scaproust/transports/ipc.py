"""IPC transport: Unix-domain stream sockets for ``ipc://path`` endpoints.

Same interface as :mod:`scaproust.transports.tcp` (see its docstring); frames carry the
extra ``0x01`` type byte (``IPC_FRAMING = True``).

The socket file's life cycle (WIRE.md, "Framing"):

* **bind over an existing path**: if it is not a socket, refuse (:class:`AddressInUse`) and
  never touch it; if it is a socket, find out whether someone is listening on it: yes ->
  :class:`AddressInUse`; nobody (a stale file left by a crashed process) -> unlink it and
  bind.
* **close**: unlink the file only if it is still the one this listener created (same
  ``st_dev``/``st_ino``): another process may have taken the path over since.

Liveness check. On Linux, ``/proc/net/unix`` is read first: a listening socket bound to
this absolute path means the path is live, without touching it. Only otherwise is the path
probed with a connect (blocking, at most :data:`PROBE_TIMEOUT` seconds). The reason:
connecting and closing before the header exchange can break an nng 1.5.2 IPC listener
(nng#1518, WIRE.md "Known peer bugs"), so a live peer should not be probed when it can be
avoided. The table lists the path string the binder passed, so a peer that bound a
relative path is not recognised there and is probed instead.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from scaproust.errors import AddressInUse, InvalidAddress
from scaproust.transports.tcp import LISTEN_BACKLOG, ListeningSocket, finish_connect
from scaproust.transports.url import Address, parse_url

__all__ = [
    "IPC_FRAMING",
    "PROBE_TIMEOUT",
    "SCHEME",
    "ListeningSocket",
    "accept",
    "close_listener",
    "configure_stream",
    "connect",
    "connect_unix",
    "finish_connect",
    "listen",
    "parse_address",
]

SCHEME = "ipc"
#: IPC frames are ``0x01 | size u64 BE | payload`` (WIRE.md, "Framing").
IPC_FRAMING = True
#: Seconds a liveness probe of an existing socket file may wait. A local listener answers a
#: connect at once (or refuses it at once when stale); only one with a full backlog would
#: make us wait, and it is live.
PROBE_TIMEOUT = 0.5
#: The send buffer each IPC stream asks for (SO_SNDBUF). A Unix stream socket charges what
#: it has written and the peer has not read to its own send buffer, 208 KiB by default on
#: Linux, and does not grow it as TCP grows its own: a 1 MiB message then needed five
#: rounds of writable-read-readable between the two I/O threads. Linux doubles the value
#: asked (for its bookkeeping) and caps it at twice ``net.core.wmem_max``; the buffer is
#: a limit, not memory taken while the pipe idles.
SEND_BUFFER = 1 << 20

_ACCEPT_AGAIN = frozenset(
    {errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR, errno.ECONNABORTED, errno.EPROTO}
)
_SO_ACCEPTCON = 0x10000  # /proc/net/unix "Flags" bit of a listening socket
_PROC_NET_UNIX = "/proc/net/unix"


def _as_address(address: Address | str) -> Address:
    if isinstance(address, str):
        address = parse_url(address)
    if address.scheme != SCHEME:
        raise InvalidAddress(f"{address.url!r} is not an {SCHEME}:// address")
    assert address.path
    return address


def parse_address(url: str) -> Address:
    """A ``ipc://`` URL as an :class:`Address`; :class:`InvalidAddress` if it is not one."""
    return _as_address(url)


def _bad_path(address: Address, exc: OSError) -> InvalidAddress | None:
    """Map an OSError about the path itself to InvalidAddress; None for other errors."""
    if exc.errno is None:
        # Raised by Python before the system call, e.g. "AF_UNIX path too long" (sun_path
        # holds 108 bytes on Linux, 104 on the BSDs).
        return InvalidAddress(f"{address.url!r}: {exc}")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
        return InvalidAddress(f"{address.url!r}: {os.strerror(exc.errno)}")
    return None


def configure_stream(sock: socket.socket, *, nodelay: bool = True, keepalive: bool = False,
                     keepalive_timing: tuple[int, int, int] | None = None) -> None:
    """Make a connected IPC socket ready for a pipe: non-blocking, with a send buffer of
    :data:`SEND_BUFFER` bytes where the system allows it. The TCP options (``nodelay``,
    ``keepalive``) mean nothing on a Unix socket and are ignored."""
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except OSError:  # pragma: no cover  (Linux caps the size instead of refusing it)
        pass


def listen(address: Address | str, *, backlog: int = LISTEN_BACKLOG, ipv4_only: bool = False,
           permissions: int | None = None) -> tuple[ListeningSocket, str]:
    """Bind and listen on an IPC path; return ``(listener, resolved_url)``.

    ``address`` is an :class:`Address` or an ``ipc://`` URL; ``resolved_url`` is the URL as
    given. An existing path is handled as the module docstring says: a live socket or a
    non-socket -> :class:`AddressInUse` (the file is left alone); a stale socket file is
    unlinked first. The returned listener records the absolute path and identity of the file
    it created, for :func:`close_listener`.

    Raises :class:`InvalidAddress` when the path cannot be bound as such (missing directory,
    too long); other ``OSError`` (e.g. ``PermissionError``) propagates. May block for up to
    :data:`PROBE_TIMEOUT` seconds while probing an existing socket file.

    ``permissions`` (e.g. ``0o600``) is the socket file's mode, set after bind and before
    listen: no peer can connect before the file has it.
    """
    address = _as_address(address)
    path = address.path
    assert path is not None
    _clear_stale_socket_file(address, path)

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(path)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                # Someone created the path between our check and our bind.
                raise AddressInUse(f"{address.url!r}: {path!r} already exists") from None
            bad = _bad_path(address, exc)
            if bad is not None:
                raise bad from None
            raise
        # Record which file is ours, before anyone can replace it.
        st = os.stat(path)
        abs_path = os.path.abspath(path)
        try:
            if permissions is not None:
                # Before listen(): a connect to this path is refused until then, so no
                # peer gets in under the umask's looser mode.
                os.chmod(path, permissions)
            sock.listen(backlog)
        except BaseException:
            os.unlink(path)  # ours (just bound): leave no file behind
            raise
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    url = address.url
    listener = ListeningSocket(
        sock=sock, address=address, url=url, path=abs_path, identity=(st.st_dev, st.st_ino)
    )
    return listener, url


def _clear_stale_socket_file(address: Address, path: str) -> None:
    """Unlink ``path`` if it is a socket file nobody listens on; refuse any other file."""
    try:
        st = os.lstat(path)  # lstat: a symlink is "not a socket" and is never followed
    except FileNotFoundError:
        return
    except OSError as exc:
        bad = _bad_path(address, exc)
        if bad is not None:
            raise bad from None
        raise
    if not stat.S_ISSOCK(st.st_mode):
        raise AddressInUse(
            f"{address.url!r}: {path!r} exists and is not a socket; refusing to remove it"
        )
    if _is_listening(path):
        raise AddressInUse(f"{address.url!r}: a listener is already bound to {path!r}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass  # someone else cleaned it up first


def _is_listening(path: str) -> bool:
    """Whether a live listener answers on the socket file at ``path``."""
    if _listed_in_proc_net_unix(os.path.abspath(path)):
        return True
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return False  # stale file (or it vanished meanwhile): safe to replace
    except OSError:
        # Timed out (backlog full), no permission, ...: we cannot prove it is dead, so it is
        # not ours to remove.
        return True
    finally:
        probe.close()
    return True


def _listed_in_proc_net_unix(abs_path: str) -> bool:
    """Whether Linux lists a listening Unix socket bound to ``abs_path`` (False if unknown)."""
    try:
        with open(_PROC_NET_UNIX, "rb") as table:
            lines = table.read().splitlines()[1:]
    except OSError:
        return False  # not Linux, or no /proc: the connect probe decides
    target = os.fsencode(abs_path)
    for line in lines:
        # Num RefCount Protocol Flags Type St Inode Path (the path may contain spaces)
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == target:
            try:
                if int(fields[3], 16) & _SO_ACCEPTCON:
                    return True
            except ValueError:
                continue
    return False


def accept(listener: ListeningSocket) -> socket.socket | None:
    """Accept one pending connection without blocking.

    Returns the new socket, non-blocking (:func:`configure_stream`), or None if no connection
    is waiting (EAGAIN) or it was aborted. Other errors (EMFILE, ...) propagate.
    """
    try:
        conn, _peer = listener.sock.accept()
    except OSError as exc:
        if exc.errno in _ACCEPT_AGAIN:
            return None
        raise
    configure_stream(conn)
    return conn


def close_listener(listener: ListeningSocket) -> None:
    """Unlink the listener's socket file if it is still ours, then close the socket.

    The file is removed only if the path still names the file this listener created (same
    ``st_dev`` and ``st_ino``); a file put there since by someone else is left alone.
    Unlinking before closing means that, while the file exists, a new listener's probe still
    finds it live. Idempotent.
    """
    path, identity = listener.path, listener.identity
    if path is not None and identity is not None and listener.sock.fileno() != -1:
        try:
            st = os.lstat(path)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) == identity:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
    listener.sock.close()


def connect(address: Address | str, *, ipv4_only: bool = False) -> tuple[socket.socket | None, int]:
    """Connect to an IPC path without blocking; return ``(sock, err)``.

    Same contract as :func:`scaproust.transports.tcp.connect`: ``err == 0`` connected;
    ``err == errno.EINPROGRESS`` pending (wait for writable, then :func:`finish_connect`);
    any other errno: failed, ``sock`` is None and already closed. On Linux a Unix-socket
    connect never pends: it succeeds at once or fails with ECONNREFUSED (stale file),
    ENOENT (no file yet) or EAGAIN (the listener's backlog is full: retry later).

    Raises :class:`InvalidAddress` for a path that cannot be a socket address (too long).
    """
    address = _as_address(address)
    assert address.path is not None
    return connect_unix(address, address.path)


def connect_unix(address: Address, target: str | bytes) -> tuple[socket.socket | None, int]:
    """Connect a new Unix stream socket to ``target`` (a path, or an abstract name: NUL then
    the name) without blocking: :func:`connect`'s contract, for ``address``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        configure_stream(sock)
        try:
            err = sock.connect_ex(target)
        except OSError as exc:
            bad = _bad_path(address, exc)
            if bad is not None:
                raise bad from None
            raise
    except BaseException:
        sock.close()
        raise
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        return None, err
    return sock, err
