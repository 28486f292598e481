"""A bound endpoint, driven by the generated ``listener`` machine.

Theory of operation: the listening socket is created by ``SocketCore.add_listener`` before
this machine exists, so that ``bind()`` reports ``AddressInUse`` at once in the caller's
thread. While ``listening`` the loop watches it for readability; each readiness accepts
every pending connection and opens one pipe per connection. ``closed`` closes the
listening socket (freeing the port or removing the IPC path at once) and every pipe.

Extra fields: ``pipes`` (live pipes accepted here, any state), ``handle`` (the transport's
listener, until ``closed``).
"""

from __future__ import annotations

import logging

from scaproust._generated.listener import ListenerFSM
from scaproust.core.guard import entry_point, log_crash
from scaproust.core.pipe import Pipe

log = logging.getLogger("scaproust.listener")

#: Connections accepted per readiness event, so one busy listener cannot monopolise the loop.
ACCEPT_BATCH = 64


class Listener(ListenerFSM):
    """The I/O-thread side of an endpoint made by ``bind()``."""

    def __init__(self, *, loop, socket, transport, handle, url: str, endpoint_id: int,
                 endpoint=None):
        self.endpoint = endpoint  # EndpointOptions for every pipe accepted here
        self.loop = loop
        self.socket = socket
        self.transport = transport
        self.handle = handle
        self.url = url
        self.endpoint_id = endpoint_id
        self.pipes: set[Pipe] = set()

    def __repr__(self) -> str:
        return f"<Listener {self.url} {self.state}>"

    def watch_accept(self, *args) -> None:
        log.debug("listening on %s", self.url)
        self.loop.add_reader(self.handle, self._on_acceptable)

    def unwatch_accept(self, *args) -> None:
        self.loop.remove_reader(self.handle)

    @entry_point
    def _on_acceptable(self) -> None:
        self.evt_acceptable()

    def log_crash(self, err) -> None:
        log_crash(log, f"listener {self.url}", err)

    def _abandon(self) -> None:
        self.state = "closed"
        self.loop.remove_reader(self.handle)
        self.transport.close_listener(self.handle)

    def accept_connections(self, *args) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                stream = self.transport.accept(self.handle)
            except OSError as err:
                # EMFILE and friends: keep listening, the next readiness retries.
                log.warning("accept on %s failed: %s", self.url, err)
                self.socket.stats.count("accept_errors")
                return
            if stream is None:
                return
            peer = self.url if self.transport.SCHEME == "inproc" else _peer_name(stream)
            pipe = Pipe(loop=self.loop, stream=stream, transport=self.transport,
                        socket=self.socket, owner=self, dialed=False, peer_addr=peer,
                        endpoint=self.endpoint)
            self.pipes.add(pipe)
            pipe.cmd_open()

    def forget_pipe(self, pipe) -> None:
        self.pipes.discard(pipe)

    def close_listening_socket(self, *args) -> None:
        log.debug("listener %s closed", self.url)
        self.transport.close_listener(self.handle)

    def close_pipes(self, *args) -> None:
        for pipe in list(self.pipes):
            pipe.cmd_close()


def _peer_name(stream) -> str:
    try:
        name = stream.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
    return f"ipc://{name}" if name else "ipc://(unnamed)"
