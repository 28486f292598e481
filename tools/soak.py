"""The soak (issue 10): every protocol at once, with peers joining, leaving and being killed,
and every message accounted for.

    .venv/bin/python tools/soak.py [--seconds 60] [--seed N] [--verbose]
    make soak [SOAK_SECONDS=600]

This process (the *hub*) binds, for each transport (tcp on 127.0.0.1 port 0, ipc in a
temporary directory, inproc), one socket of each protocol's stable side and drives it from
its own threads:

============  ==========================================================================
REQ           sends requests one after the other (``resend_interval`` 0.2 s); REP peers
              answer each with its body. Every request gets exactly one reply, matched
              by its id, whatever happens to the REPs.
PUSH ... PULL the hub's PUSH feeds relay peers (a PULL and a PUSH each) that forward every
              message, tagged with their id, to the hub's PULL. Each message is received
              exactly once, and in order per relay, except those in flight through a relay
              that was killed or closed (PROTOCOLS.md: what is queued towards a PULL that
              goes away is lost with it). Those are counted apart, and each must be one
              that relay could have held: sent after it joined and after the last message
              it forwarded, and either not yet received when it left or sent before the
              hub closed its pipe to it; their number is bounded by what was in flight
              when it left plus what the hub sent it until it noticed.
PAIR          the hub's PAIR talks to one peer at a time, which echoes every message:
              between two live peers everything comes back in order, no gap, no
              duplicate; a gap is allowed only where the partner went away.
PUB / SUB     SUB peers forward what they get to a PULL of the hub: counted, per
              subscriber in order and without duplicates; losses allowed (PUB drops for
              slow subscribers by design).
SURVEYOR      a survey every 0.3 s (deadline 0.25 s); RESPONDENT peers answer: each
              response belongs to the current survey, one per respondent.
BUS           the hub's BUS sends; BUS peers echo: counted, per peer in order and without
              duplicates; losses allowed (BUS drops for full pipes by design).
============  ==========================================================================

Peers come in *groups*, one socket of each peer kind per transport: a child process
(``subprocess``, a fresh interpreter, as the spawn start method) for tcp and ipc, a set of
threads with its own ``sp.Session`` for inproc. A controller keeps three child processes and
two inproc groups alive, and about every second replaces one: a child is killed with SIGKILL
or asked to leave (it closes its relays' PULLs, stops its threads, closes its session), an
inproc group closes the same way. After a warm-up and at
the end, with the pools at their nominal size and every connection up, it measures the hub's
RSS, threads and file descriptors: they must not grow beyond the tolerances below.

It prints one summary line and exits 0 when every check holds, 1 naming the failed checks
otherwise, 2 on a hard deadline (with every thread's stack), 130 on Ctrl-C. Every wait is
bounded; every child is stopped on any exit (and dies with this process: PR_SET_PDEATHSIG).
Only public API (``import scaproust as sp``) is used.
"""

from __future__ import annotations

import argparse
import bisect
import ctypes
import faulthandler
import gc
import json
import logging
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from array import array
from pathlib import Path

import scaproust as sp

THIS = Path(__file__).resolve()
TRANSPORTS = ("tcp", "ipc", "inproc")
CHILD_TRANSPORTS = ("tcp", "ipc")

#: Tolerances of the resource checks, end minus warm-up (both taken with the same number of
#: peers, every connection up, after gc.collect()).
RSS_TOLERANCE_MIB = 24.0
THREADS_TOLERANCE = 0
FDS_TOLERANCE = 4

#: Small queues so that what a departed peer can take with it is small.
PIPE_SEND_BUFFER = 32
PEER_RECV_BUFFER = 32
RESEND_INTERVAL = 0.2
SURVEY_DEADLINE = 0.25
REQ_REPLY_DEADLINE = 10.0  # a request without its reply after this long is a failure
NOMINAL_CHILDREN = 3
NOMINAL_INPROC = 2

# --------------------------------------------------------------------------------------
# Peers: the same code in a child process (tcp, ipc) and in a thread group (inproc).


def _serve(stop: threading.Event, rx, tx, prefix: bytes) -> None:
    """Receive on ``rx`` and send ``prefix + message`` on ``tx`` until stopped or closed."""
    while not stop.is_set():
        try:
            msg = rx.recv(timeout=0.5)
        except (sp.Timeout, sp.BadState):
            continue
        except sp.Error:
            return  # closed
        while not stop.is_set():
            try:
                tx.send(prefix + msg, timeout=0.5)
                break
            except sp.Timeout:
                continue
            except sp.Error:
                return


class PeerGroup:
    """One peer socket of each kind per transport, each served by a thread."""

    def __init__(self, peer_id: str, urls: dict[str, dict[str, str]]) -> None:
        self.peer_id = peer_id
        self.session = sp.Session()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.inputs = []  # the relays' PULLs, closed first on leaving
        prefix = peer_id.encode() + b" "
        s = self.session
        for transport, u in urls.items():
            name = f"{peer_id}-{transport}"
            rep = s.socket(sp.Rep, socket_name=f"{name}-rep")
            rep.connect(u["req"])
            pull = s.socket(sp.Pull, recv_buffer=PEER_RECV_BUFFER, socket_name=f"{name}-pull")
            pull.connect(u["push"])
            self.inputs.append(pull)
            push = s.socket(sp.Push, send_buffer=PIPE_SEND_BUFFER, socket_name=f"{name}-push")
            push.connect(u["pull"])
            pair = s.socket(sp.Pair, recv_buffer=PEER_RECV_BUFFER,
                            send_buffer=PIPE_SEND_BUFFER, socket_name=f"{name}-pair")
            pair.connect(u["pair"])
            sub = s.socket(sp.Sub, socket_name=f"{name}-sub")
            sub.subscribe(b"")
            sub.connect(u["pub"])
            back = s.socket(sp.Push, socket_name=f"{name}-back")
            back.connect(u["back"])
            respondent = s.socket(sp.Respondent, socket_name=f"{name}-respondent")
            respondent.connect(u["surveyor"])
            bus = s.socket(sp.Bus, socket_name=f"{name}-bus")
            bus.connect(u["bus"])
            for rx, tx, pre in ((rep, rep, prefix), (pull, push, prefix), (pair, pair, prefix),
                                (sub, back, prefix), (respondent, respondent, prefix),
                                (bus, bus, prefix)):
                thread = threading.Thread(target=_serve, args=(self.stop, rx, tx, pre),
                                          name=f"soak-{name}", daemon=True)
                thread.start()
                self.threads.append(thread)

    def close(self, timeout: float = 5.0) -> bool:
        """Leave cleanly: close the relays' PULLs (the hub stops sending them work at once;
        what they had queued is lost with them, PROTOCOLS.md), stop the threads (each
        within its 0.5 s recv or send timeout), then close the session (queued output,
        what the relays forwarded included, gets its linger).

        The threads stop before the close so that the messages in flight are only those the
        accounting can name; a send() racing close() (dropped and counted in dropped_closed)
        is pinned by tests/soak/test_close_race.py instead.
        """
        for pull in self.inputs:
            pull.close()
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic() - 2.0))
        self.session.close()
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(3)


def peer_main(peer_id: str, urls_json: str, parent: int) -> None:
    """A child process: serve until told to leave on stdin (or stdin closes), then close."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    errors = ErrorLog().install()
    group = PeerGroup(peer_id, json.loads(urls_json))
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()  # "leave", or EOF when the hub goes away
    clean = group.close()
    for text in errors.first:
        print(text, file=sys.stderr)
    sys.stderr.flush()
    os._exit(5 if errors.count else 0 if clean else 4)


# --------------------------------------------------------------------------------------
# The hub.


class ErrorLog(logging.Handler):
    """Counts what scaproust logs at ERROR and above: internal errors, never expected."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.first) < 3:
            self.first.append(self.format(record))

    def install(self) -> ErrorLog:
        logging.getLogger("scaproust").addHandler(self)
        return self


class Failures:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[str] = []
        self.event = threading.Event()

    def add(self, what: str) -> None:
        with self.lock:
            if len(self.items) < 50:
                self.items.append(what)
        self.event.set()


def _kernel_buffer_bytes(transport: str) -> int:
    """What the kernel's socket buffers of one connection can hold, both directions."""

    def read(path: str, field: int = 0) -> int:
        try:
            return int(Path(path).read_text().split()[field])
        except (OSError, ValueError, IndexError):
            return 8 << 20

    if transport == "tcp":
        return 2 * (read("/proc/sys/net/ipv4/tcp_wmem", 2) + read("/proc/sys/net/ipv4/tcp_rmem", 2))
    if transport == "ipc":
        return 2 * (read("/proc/sys/net/core/wmem_max") + read("/proc/sys/net/core/rmem_max"))
    return 0


def _link_messages(transport: str) -> int:
    """What an inproc link holds, both ways: 1,024 messages each way, as a kernel socket
    buffer would (core/memory_pipe.py, LINK_MSGS)."""
    return 2 * 1024 if transport == "inproc" else 0


class Hub:
    """The stable side of every protocol on one transport, and its accounting."""

    def __init__(self, transport: str, tmpdir: str, failures: Failures, stop_sending,
                 stop_all) -> None:
        self.t = transport
        self.failures = failures
        self.stop_sending = stop_sending
        self.stop_all = stop_all
        self.session = sp.Session()
        s = self.session
        self.req = s.socket(sp.Req, resend_interval=RESEND_INTERVAL, socket_name=f"hub-{transport}-req")
        self.push = s.socket(sp.Push, send_buffer=PIPE_SEND_BUFFER, socket_name=f"hub-{transport}-push")
        self.pull = s.socket(sp.Pull, socket_name=f"hub-{transport}-pull")
        self.pair = s.socket(sp.Pair, send_buffer=PIPE_SEND_BUFFER, recv_buffer=PEER_RECV_BUFFER,
                             socket_name=f"hub-{transport}-pair")
        self.pub = s.socket(sp.Pub, socket_name=f"hub-{transport}-pub")
        self.back = s.socket(sp.Pull, socket_name=f"hub-{transport}-back")
        self.surveyor = s.socket(sp.Surveyor, survey_deadline=SURVEY_DEADLINE, recv_timeout=2.0,
                                 socket_name=f"hub-{transport}-surveyor")
        self.bus = s.socket(sp.Bus, socket_name=f"hub-{transport}-bus")
        self.sockets = {"req": self.req, "push": self.push, "pull": self.pull, "pair": self.pair,
                        "pub": self.pub, "back": self.back, "surveyor": self.surveyor,
                        "bus": self.bus}
        self.urls = {}
        for name, sock in self.sockets.items():
            if transport == "tcp":
                url = "tcp://127.0.0.1:0"
            elif transport == "ipc":
                url = f"ipc://{tmpdir}/{name}.ipc"
            else:
                url = f"inproc://soak-{os.getpid()}-{name}"
            self.urls[name] = sock.bind(url).url
        # Accounting. Messages carry "<sender> <flow>.<transport>:<seq>".
        self.lock = threading.Lock()
        self.req_sent = self.req_replied = 0
        self.push_sent = 0
        self.push_received_n = 0  # distinct sequence numbers received
        self.push_low_water = 1  # every sequence number below it was received
        self.push_last: dict[bytes, int] = {}  # the last sequence number each relay forwarded
        self.push_counts = bytearray(1 << 16)  # receptions per sequence number
        self.push_last_rx = time.monotonic()
        self.pair_sent = 0
        self.pair_last = (None, 0, time.monotonic())  # (peer, seq, time) of the last echo
        self.pair_gaps: list[tuple[float, float, int]] = []  # (after, before, count)
        self.pair_received = 0
        self.pub_sent = self.pub_delivered = self.pub_skipped = 0
        self.pub_last: dict[bytes, int] = {}
        self.surveys = self.responses = 0
        self.bus_sent = self.bus_echoed = 0
        self.bus_last: dict[bytes, int] = {}
        self.duplicates = 0
        self.last_rx = time.monotonic()
        self.threads: list[threading.Thread] = []

    # -- threads ------------------------------------------------------------------------

    def start(self) -> None:
        for target in (self._req_loop, self._push_loop, self._pull_loop, self._pair_send_loop,
                       self._pair_recv_loop, self._pub_loop, self._back_loop,
                       self._survey_loop, self._bus_send_loop, self._bus_recv_loop):
            name = f"hub-{self.t}-{target.__name__.strip('_')}"
            thread = threading.Thread(target=self._guard, args=(target,), name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _guard(self, target) -> None:
        try:
            target()
        except sp.Closed:
            if not self.stop_all.is_set():
                self.failures.add(f"{self.t}: {target.__name__}: socket closed under it")
        except Exception as exc:  # noqa: BLE001 - any crash is a failed check, named
            self.failures.add(f"{self.t}: {target.__name__} crashed: {exc!r}")

    def _send(self, sock, data: bytes) -> bool:
        """Send, retrying on timeout until it is accepted; False if the soak stops first."""
        while not self.stop_all.is_set():
            try:
                sock.send(data, timeout=0.5)
                return True
            except sp.Timeout:
                continue
        return False

    def _recv(self, sock):
        """A message, or None after 0.5 s without one."""
        try:
            msg = sock.recv(timeout=0.5)
        except sp.Timeout:
            return None
        self.last_rx = time.monotonic()
        return msg

    @staticmethod
    def _pace(n: int, every: int, seconds: float) -> None:
        if n % every == 0:
            time.sleep(seconds)

    def _req_loop(self) -> None:
        tag = f"hub req.{self.t}:".encode()
        while not self.stop_sending.is_set():
            body = tag + b"%d" % (self.req_sent + 1)
            self.req.send(body, timeout=5.0)
            self.req_sent += 1
            deadline = time.monotonic() + REQ_REPLY_DEADLINE
            while True:
                try:
                    reply = self.req.recv(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
                    break
                except sp.Timeout:
                    if self.stop_all.is_set():
                        return
                    if time.monotonic() >= deadline:
                        self.failures.add(f"{self.t}: req: no reply to {body.decode()} within "
                                          f"{REQ_REPLY_DEADLINE:g} s")
                        return
            if reply.split(b" ", 1)[-1] != body:
                self.failures.add(f"{self.t}: req: reply {reply[:60]!r} to {body.decode()}")
                return
            self.req_replied += 1
            self._pace(self.req_replied, 10, 0.005)

    def _push_loop(self) -> None:
        tag = f"hub push.{self.t}:".encode()
        while not self.stop_sending.is_set():
            if not self._send(self.push, tag + b"%d" % (self.push_sent + 1)):
                return
            self.push_sent += 1
            self._pace(self.push_sent, 10, 0.02)

    def _pull_loop(self) -> None:
        while not self.stop_all.is_set():
            msg = self._recv(self.pull)
            if msg is None:
                continue
            peer, rest = msg.split(b" ", 1)
            seq = int(rest.rsplit(b":", 1)[1])
            last = self.push_last.get(peer, 0)
            if seq <= last:
                self.failures.add(f"{self.t}: push: relay {peer.decode()} forwarded {seq} after "
                                  f"{last} (duplicate or out of order)")
            self.push_last[peer] = seq
            with self.lock:
                if seq >= len(self.push_counts):
                    self.push_counts.extend(bytes(max(seq + 1, 2 * len(self.push_counts))
                                                  - len(self.push_counts)))
                if self.push_counts[seq]:
                    self.duplicates += 1
                else:
                    self.push_received_n += 1
                if self.push_counts[seq] < 255:
                    self.push_counts[seq] += 1

    def _pair_send_loop(self) -> None:
        tag = f"hub pair.{self.t}:".encode()
        while not self.stop_sending.is_set():
            if not self._send(self.pair, tag + b"%d" % (self.pair_sent + 1)):
                return
            self.pair_sent += 1
            self._pace(self.pair_sent, 10, 0.02)

    def _pair_recv_loop(self) -> None:
        while not self.stop_all.is_set():
            msg = self._recv(self.pair)
            if msg is None:
                continue
            now = time.monotonic()
            peer, rest = msg.split(b" ", 1)
            seq = int(rest.rsplit(b":", 1)[1])
            last_peer, last_seq, last_time = self.pair_last
            if seq <= last_seq:
                self.duplicates += 1
                self.failures.add(f"{self.t}: pair: {seq} after {last_seq} (duplicate or out of order)")
                continue
            if seq > last_seq + 1:
                if peer == last_peer:
                    self.failures.add(f"{self.t}: pair: {seq - last_seq - 1} messages lost "
                                      f"between live peers ({peer.decode()}: {last_seq} then {seq})")
                self.pair_gaps.append((last_time, now, seq - last_seq - 1))
            self.pair_last = (peer, seq, now)
            self.pair_received += 1

    def _pub_loop(self) -> None:
        tag = f"hub pub.{self.t}:".encode()
        while not self.stop_sending.is_set():
            self.pub.send(tag + b"%d" % (self.pub_sent + 1), timeout=1.0)
            self.pub_sent += 1
            self._pace(self.pub_sent, 10, 0.02)

    def _back_loop(self) -> None:
        while not self.stop_all.is_set():
            msg = self._recv(self.back)
            if msg is None:
                continue
            peer, rest = msg.split(b" ", 1)
            seq = int(rest.rsplit(b":", 1)[1])
            last = self.pub_last.get(peer, 0)
            if seq <= last:
                self.duplicates += 1
                self.failures.add(f"{self.t}: sub {peer.decode()}: {seq} after {last}")
            else:
                self.pub_skipped += seq - last - 1 if last else 0
                self.pub_last[peer] = seq
            self.pub_delivered += 1

    def _survey_loop(self) -> None:
        while not self.stop_sending.is_set():
            self.surveys += 1
            body = f"hub survey.{self.t}:{self.surveys}".encode()
            self.surveyor.send(body, timeout=1.0)
            seen: set[bytes] = set()
            while True:
                try:
                    msg = self.surveyor.recv()
                except (sp.Timeout, sp.BadState):
                    break
                peer, rest = msg.split(b" ", 1)
                if rest != body:
                    self.failures.add(f"{self.t}: surveyor: {rest!r} during {body!r}")
                if peer in seen:
                    self.duplicates += 1
                    self.failures.add(f"{self.t}: surveyor: {peer.decode()} answered twice")
                seen.add(peer)
                self.responses += 1
            time.sleep(0.05)

    def _bus_send_loop(self) -> None:
        tag = f"hub bus.{self.t}:".encode()
        while not self.stop_sending.is_set():
            self.bus.send(tag + b"%d" % (self.bus_sent + 1), timeout=1.0)
            self.bus_sent += 1
            self._pace(self.bus_sent, 10, 0.02)

    def _bus_recv_loop(self) -> None:
        while not self.stop_all.is_set():
            msg = self._recv(self.bus)
            if msg is None:
                continue
            peer, rest = msg.split(b" ", 1)
            seq = int(rest.rsplit(b":", 1)[1])
            last = self.bus_last.get(peer, 0)
            if seq <= last:
                self.duplicates += 1
                self.failures.add(f"{self.t}: bus {peer.decode()}: {seq} after {last}")
            else:
                self.bus_last[peer] = seq
            self.bus_echoed += 1

    # -- helpers for the controller ----------------------------------------------------

    def live_pipes(self) -> dict[str, int]:
        out = {}
        for name, sock in self.sockets.items():
            st = sock.stats
            out[name] = st.get("pipes_opened", 0) - st.get("pipes_closed", 0)
        return out

    def push_lost(self) -> list[int]:
        with self.lock:
            counts = self.push_counts
            return [seq for seq in range(1, self.push_sent + 1)
                    if seq >= len(counts) or not counts[seq]]

    def push_unreceived(self) -> tuple[array, int]:
        """The sequence numbers sent and not (yet) received, and how many were sent."""
        with self.lock:
            sent, counts = self.push_sent, self.push_counts
            end = min(sent + 1, len(counts))
            low = self.push_low_water
            while low < end and counts[low]:
                low += 1
            self.push_low_water = low
            out = array("I")
            pos = counts.find(0, low, end)
            while pos >= 0:
                out.append(pos)
                pos = counts.find(0, pos + 1, end)
            out.extend(range(end, sent + 1))
            return out, sent

    def close(self) -> None:
        self.session.close()


class Departure:
    """A peer that went away, and what it may have taken with it."""

    def __init__(self, peer_id: str, kind: str, transports, hubs, join_seqs) -> None:
        self.peer_id = peer_id
        self.join_seqs = join_seqs  # transport -> the hub's push_sent when the peer joined
        self.kind = kind  # "killed" or "closed"
        self.transports = transports
        self.left_at = time.monotonic()
        # What was in flight when it left (sent, not yet received): all it can take with
        # it, but for what the hub sends it afterwards, before its pipe is closed.
        self.push_unreceived: dict[str, array] = {}
        self.push_seq: dict[str, int] = {}
        for t in transports:
            self.push_unreceived[t], self.push_seq[t] = hubs[t].push_unreceived()
        self.pair_in_flight = {t: hubs[t].pair_sent - hubs[t].pair_last[1] for t in transports}
        self.pair_seq = {t: hubs[t].pair_sent for t in transports}
        self.pair_leave: dict[str, int] = {}
        # How many pipes each hub's PUSH had closed before; then push_sent once the hub's
        # PUSH has closed its pipe to this peer: nothing sent later can have gone to it.
        self.push_closed = {t: hubs[t].push.stats.get("pipes_closed", 0) for t in transports}
        self.leave_seqs: dict[str, int] = {}

    def may_hold(self, t: str, seq: int, hub: Hub) -> bool:
        """Whether push message ``seq`` may have been in flight through this peer's relay:
        sent after it joined (less one pipe queue), after the last message it forwarded (a
        relay forwards in order, over one pipe each way), and either after it left and
        before its pipes were closed, or before it left and not received then."""
        if seq <= self.join_seqs[t] - 2 * PIPE_SEND_BUFFER:
            return False
        if seq <= hub.push_last.get(self.peer_id.encode(), 0):
            return False
        if self.push_seq[t] < seq <= self.leave_seqs[t]:
            return True
        unreceived = self.push_unreceived[t]
        i = bisect.bisect_left(unreceived, seq)
        return i < len(unreceived) and unreceived[i] == seq


class Child:
    def __init__(self, peer_id: str, urls: dict, logdir: str, hubs) -> None:
        self.peer_id = peer_id
        self.join_seqs = {t: hubs[t].push_sent for t in CHILD_TRANSPORTS}
        self.log_path = os.path.join(logdir, f"{peer_id}.log")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(THIS), "--peer", peer_id, json.dumps(urls), str(os.getpid())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                start_new_session=True, close_fds=True)

    def wait_ready(self, deadline: float) -> bool:
        fd = self.proc.stdout.fileno()
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False
            chunk = os.read(fd, 100)
            if not chunk:
                return False
            buf += chunk
        self.proc.stdout.close()
        return buf.startswith(b"ready")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._close_pipes()

    def leave(self, timeout: float = 8.0) -> bool:
        """Ask it to close; True if it exited 0 in time (killed otherwise)."""
        try:
            self.proc.stdin.write(b"leave\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        self._close_pipes()
        return code == 0

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except (OSError, ValueError):
                pass

    def log_tail(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def _resources() -> dict:
    gc.collect()
    rss = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return {"rss": rss, "threads": threading.active_count(),
            "fds": len(os.listdir("/proc/self/fd"))}


class Soak:
    def __init__(self, seconds: float, seed: int, verbose: bool,
                 rss_tolerance: float = RSS_TOLERANCE_MIB) -> None:
        self.seconds = seconds
        self.rss_tolerance = rss_tolerance
        self.rng = random.Random(seed)
        self.seed = seed
        self.verbose = verbose
        self.failures = Failures()
        self.stop_sending = threading.Event()
        self.stop_all = threading.Event()
        self.abort = threading.Event()
        self.tmpdir = tempfile.mkdtemp(prefix="scaproust-soak-")
        self.hubs: dict[str, Hub] = {}
        self.children: list[Child] = []
        self.all_children: list[Child] = []
        self.groups: list[tuple[str, PeerGroup, dict]] = []
        self.departures: list[Departure] = []
        self.joined = 0
        self.child_events = 0
        self.snapshots: dict[str, tracemalloc.Snapshot] = {}
        self.next_id = 0
        self.samples: dict[str, dict] = {}
        self.start_time = time.monotonic()
        self.errors = ErrorLog().install()

    def log(self, what: str) -> None:
        if self.verbose:
            print(f"[{time.monotonic() - self.start_time:7.2f}] {what}", file=sys.stderr, flush=True)

    # -- the pools -------------------------------------------------------------------------

    def _urls(self, transports) -> dict:
        return {t: self.hubs[t].urls for t in transports}

    def spawn_children(self, n: int) -> None:
        new = []
        for _ in range(n):
            self.next_id += 1
            child = Child(f"p{self.next_id}", self._urls(CHILD_TRANSPORTS), self.tmpdir, self.hubs)
            self.all_children.append(child)
            new.append(child)
        deadline = time.monotonic() + 30.0
        for child in new:
            if not child.wait_ready(deadline):
                self.failures.add(f"peer {child.peer_id} not ready within 30 s: {child.log_tail()!r}")
                child.kill()
                continue
            self.children.append(child)
            self.joined += 1
            self.log(f"joined {child.peer_id}")

    def start_group(self) -> None:
        self.next_id += 1
        peer_id = f"i{self.next_id}"
        join_seqs = {"inproc": self.hubs["inproc"].push_sent}
        self.groups.append((peer_id, PeerGroup(peer_id, self._urls(["inproc"])), join_seqs))
        self.joined += 1
        self.log(f"joined {peer_id}")

    def depart_child(self, child: Child, kind: str) -> None:
        self.children.remove(child)
        dep = Departure(child.peer_id, kind, CHILD_TRANSPORTS, self.hubs, child.join_seqs)
        self.departures.append(dep)
        if kind == "killed":
            child.kill()
        elif not child.leave():
            self.failures.add(f"peer {child.peer_id} did not close cleanly: {child.log_tail()!r}")
        if child.proc.poll() is not None:  # reaped: nothing left to stop
            self.all_children.remove(child)
        self._wait_gone(dep)
        self.log(f"{kind} {child.peer_id}")

    def close_group(self, index: int) -> None:
        peer_id, group, join_seqs = self.groups.pop(index)
        dep = Departure(peer_id, "closed", ["inproc"], self.hubs, join_seqs)
        self.departures.append(dep)
        if not group.close():
            self.failures.add(f"inproc group {peer_id}: threads still running after close")
        self._wait_gone(dep)
        self.log(f"closed {peer_id}")

    def _wait_gone(self, dep: Departure) -> None:
        """Wait until each hub's PUSH has closed its pipe to the departed peer (5 s at most),
        then note how many messages it had sent."""
        deadline = time.monotonic() + 5.0
        for t in dep.transports:
            push = self.hubs[t].push
            while push.stats.get("pipes_closed", 0) <= dep.push_closed[t]:
                if time.monotonic() >= deadline:
                    self.failures.add(f"{t}: the hub's PUSH kept its pipe to {dep.peer_id} "
                                      "5 s after it was gone")
                    break
                time.sleep(0.002)
            dep.leave_seqs[t] = self.hubs[t].push_sent
            dep.pair_leave[t] = self.hubs[t].pair_sent

    def settle(self, what: str) -> bool:
        """Wait until every hub socket has one pipe per live peer (PAIR: one partner)."""
        deadline = time.monotonic() + 15.0
        while True:
            wrong = {}
            for t, hub in self.hubs.items():
                peers = len(self.groups) if t == "inproc" else len(self.children)
                for name, n in hub.live_pipes().items():
                    if n != (1 if name == "pair" else peers):
                        wrong[f"{t}-{name}"] = f"{n}/{1 if name == 'pair' else peers}"
            if not wrong:
                return True
            if time.monotonic() >= deadline or self.abort.is_set():
                self.failures.add(f"settle ({what}): live pipes not one per peer after 15 s: {wrong}")
                return False
            time.sleep(0.05)

    def measure(self, what: str) -> None:
        self.settle(what)
        self.samples[what] = _resources()
        if tracemalloc.is_tracing():
            self.snapshots[what] = tracemalloc.take_snapshot()
        self.log(f"measured {what}: {self.samples[what]}")

    # -- the controller thread -------------------------------------------------------------

    def control(self) -> None:
        try:
            self._control()
        except Exception as exc:  # noqa: BLE001 - named in the summary
            self.failures.add(f"controller crashed: {exc!r}")
        finally:
            # Stop every peer (and in this thread: PR_SET_PDEATHSIG follows the thread that
            # started a child).
            self._stop_peers(clean=not self.abort.is_set())

    def _control(self) -> None:
        self.spawn_children(NOMINAL_CHILDREN)
        for _ in range(NOMINAL_INPROC):
            self.start_group()
        end = self.start_time + self.seconds
        warmup_at = self.start_time + min(10.0, max(1.0, 0.2 * self.seconds))
        next_child = time.monotonic() + self.rng.uniform(0.5, 1.5)
        next_group = time.monotonic() + self.rng.uniform(0.5, 1.5)
        warmed = False
        while time.monotonic() < end and not self.abort.is_set() and not self.failures.event.is_set():
            now = time.monotonic()
            if not warmed and now >= warmup_at:
                self.measure("warm-up")
                warmed = True
            if now >= next_child:
                child = self.rng.choice(self.children)
                # Killed, closed, killed, killed, closed, ...: the shortest run kills one.
                self.depart_child(child, "closed" if self.child_events % 3 == 1 else "killed")
                self.child_events += 1
                self.spawn_children(1)
                next_child = time.monotonic() + self.rng.uniform(0.5, 1.5)
            if now >= next_group:
                self.close_group(self.rng.randrange(len(self.groups)))
                self.start_group()
                next_group = time.monotonic() + self.rng.uniform(0.5, 1.5)
            time.sleep(0.02)
        if self.abort.is_set() or self.failures.event.is_set():
            return
        if not warmed:
            self.measure("warm-up")
        self.measure("end")
        self._drain()

    def _drain(self) -> None:
        """Stop sending, and wait until nothing has arrived for a second (at most 20 s)."""
        self.stop_sending.set()
        deadline = time.monotonic() + 20.0
        for hub in self.hubs.values():
            for thread in hub.threads:
                if "recv" not in thread.name and "pull" not in thread.name and "back" not in thread.name:
                    thread.join(max(0.0, deadline - time.monotonic()))
        while time.monotonic() < deadline:
            quiet = time.monotonic() - max(h.last_rx for h in self.hubs.values())
            if quiet >= 1.0:
                break
            time.sleep(0.1)
        else:
            self.failures.add("drain: messages still arriving 20 s after the senders stopped")

    def _stop_peers(self, clean: bool) -> None:
        """The end: every peer closes (not a departure: the flows have drained)."""
        for child in self.children:
            try:
                child.proc.stdin.write(b"leave\n")
                child.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass
        while self.groups:
            peer_id, group, _ = self.groups.pop()
            if not group.close(timeout=5.0 if clean else 1.0) and clean:
                self.failures.add(f"inproc group {peer_id}: threads still running after close")
        for child in self.children:
            if clean and not child.leave():
                self.failures.add(f"peer {child.peer_id} did not close cleanly at the end: "
                                  f"{child.log_tail()!r}")
        for child in self.all_children:
            if child.proc.poll() is None:
                child.kill()
        self.children.clear()

    # -- the whole run -------------------------------------------------------------------------

    def run(self) -> int:
        for t in TRANSPORTS:
            self.hubs[t] = Hub(t, self.tmpdir, self.failures, self.stop_sending, self.stop_all)
        for hub in self.hubs.values():
            hub.start()
        controller = threading.Thread(target=self.control, name="soak-controller", daemon=True)
        controller.start()
        try:
            controller.join(self.seconds + 120.0)
            if controller.is_alive():
                self.failures.add("controller: still running 120 s after the end")
        except KeyboardInterrupt:
            self.abort.set()
            controller.join(15.0)
            self._kill_all()
            self.stop_all.set()
            print("soak: interrupted", file=sys.stderr)
            return 130
        finally:
            self._kill_all()
            self.stop_all.set()
            for hub in self.hubs.values():
                hub.close()
                for thread in hub.threads:
                    thread.join(2.0)
        line, ok = self.summary()
        for text in self.errors.first:
            print(text, file=sys.stderr)
        if len(self.snapshots) == 2:
            diff = self.snapshots["end"].compare_to(self.snapshots["warm-up"], "lineno")
            print("tracemalloc, end minus warm-up, top 15:", file=sys.stderr)
            for stat in diff[:15]:
                print(f"  {stat}", file=sys.stderr)
        print(line, flush=True)
        if ok:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        return 0 if ok else 1

    def _kill_all(self) -> None:
        for child in self.all_children:
            if child.proc.poll() is None:
                child.proc.kill()
                try:
                    child.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass

    # -- the checks ----------------------------------------------------------------------------

    def _capacity(self, transport: str, frame_bytes: int) -> int:
        """What one peer can hold of a flow: the hub's pipe queue, the peer's queues, one in
        hand, and the kernel's buffers both ways."""
        return (PIPE_SEND_BUFFER + PEER_RECV_BUFFER + 1 + PIPE_SEND_BUFFER + 4
                + _kernel_buffer_bytes(transport) // frame_bytes + _link_messages(transport))

    def _bound(self, dep: Departure, in_flight: int, cap: int, sent_after: int | None) -> int:
        """The most one departure can lose of a flow: what was in flight when it left, plus
        what the hub sent until it closed its pipe to it (``sent_after``, when known),
        which is at most, killed, what the hub queued for the dead pipe before noticing
        (one pipe queue and a margin), and, closed, all the peer can hold (it reads no
        more while it closes)."""
        later = 2 * PIPE_SEND_BUFFER if dep.kind == "killed" else cap
        if sent_after is not None:
            later = min(later, sent_after)
        return in_flight + later

    def summary(self) -> tuple[str, bool]:
        failed = list(self.failures.items)
        sent = received = duplicates = 0
        lost = {"killed": 0, "closed": 0}
        bounds = {"killed": 0, "closed": 0}
        req_sent = req_replied = stale = 0
        pub = delivered = surveys = responses = bus = echoed = 0
        for t, hub in self.hubs.items():
            frame = len(f"hub push.{t}:{hub.push_sent}") + 8
            cap = self._capacity(t, frame)
            deps = [d for d in self.departures if t in d.transports]
            # PUSH through the relays.
            push_lost = hub.push_lost()
            here = {"killed": 0, "closed": 0}
            for seq in push_lost:
                kinds = {d.kind for d in deps if d.may_hold(t, seq, hub)}
                if not kinds:
                    failed.append(f"{t}: push: message {seq} lost, and no peer that went away "
                                  "could have held it")
                    break
                here["killed" if "killed" in kinds else "closed"] += 1
            for kind in here:
                bound = sum(self._bound(d, len(d.push_unreceived[t]), cap,
                                        d.leave_seqs[t] - d.push_seq[t])
                            for d in deps if d.kind == kind)
                bounds[kind] += bound
                if here[kind] > bound:
                    failed.append(f"{t}: push: {here[kind]} lost with {kind} peers, more than "
                                  f"they could hold ({bound})")
                lost[kind] += here[kind]
            sent += hub.push_sent
            received += hub.push_received_n
            # PAIR: gaps only where a partner went away.
            gaps = list(hub.pair_gaps)
            tail = hub.pair_sent - hub.pair_last[1]
            if tail:
                gaps.append((hub.pair_last[2], time.monotonic(), tail))
            for after, before, count in gaps:
                gone = [d for d in deps if after - 0.5 <= d.left_at <= before]
                if not gone:
                    failed.append(f"{t}: pair: {count} messages lost with no partner gone")
                    continue
                # The PAIR pipe closes with the PUSH pipe; one pipe queue of margin.
                bound = sum(self._bound(d, d.pair_in_flight[t], cap, d.pair_leave[t]
                                        - d.pair_seq[t] + PIPE_SEND_BUFFER) for d in gone)
                if count > bound:
                    failed.append(f"{t}: pair: {count} lost, more than {len(gone)} partner(s) "
                                  f"could hold ({bound})")
                kind = "killed" if any(d.kind == "killed" for d in gone) else "closed"
                lost[kind] += count
                bounds[kind] += bound
            sent += hub.pair_sent
            received += hub.pair_received
            duplicates += hub.duplicates
            req_sent += hub.req_sent
            req_replied += hub.req_replied
            stale += hub.req.stats.get("dropped_stale", 0)
            pub += hub.pub_sent
            delivered += hub.pub_delivered
            surveys += hub.surveys
            responses += hub.responses
            bus += hub.bus_sent
            echoed += hub.bus_echoed
            if hub.req_replied != hub.req_sent:
                failed.append(f"{t}: req: {hub.req_replied} replies to {hub.req_sent} requests")
        if sent != received + lost["killed"] + lost["closed"]:
            failed.append(f"accounting: sent {sent} != received {received} + lost "
                          f"{lost['killed'] + lost['closed']}")
        if duplicates:
            failed.append(f"duplicates: {duplicates}")
        kills = sum(1 for d in self.departures if d.kind == "killed")
        closes = sum(1 for d in self.departures if d.kind == "closed")
        warm, end = self.samples.get("warm-up"), self.samples.get("end")
        if warm and end:
            drss = (end["rss"] - warm["rss"]) / (1 << 20)
            dthreads = end["threads"] - warm["threads"]
            dfds = end["fds"] - warm["fds"]
            resources = f"rss {drss:+.1f} MiB threads {dthreads:+d} fds {dfds:+d}"
            if drss > self.rss_tolerance:
                failed.append(f"memory: rss grew {drss:.1f} MiB (tolerance {self.rss_tolerance:g})")
            if abs(dthreads) > THREADS_TOLERANCE:
                failed.append(f"threads: {warm['threads']} -> {end['threads']}")
            if abs(dfds) > FDS_TOLERANCE:
                failed.append(f"descriptors: {warm['fds']} -> {end['fds']} (tolerance {FDS_TOLERANCE})")
        else:
            resources = "rss ? threads ? fds ?"
            if not failed:
                failed.append("resources: not measured")
        if self.errors.count:
            failed.append(f"internal errors: scaproust logged {self.errors.count} at ERROR or "
                          f"above (on stderr), the first: "
                          f"{self.errors.first[0].splitlines()[0]!r}")
        if kills == 0:
            failed.append("no peer was killed")
        line = (f"soak {self.seconds:g} s: sent {sent} received {received} "
                f"lost-with-killed-peer {lost['killed']} (bound {bounds['killed']}) "
                f"lost-with-closed-peer {lost['closed']} (bound {bounds['closed']}) "
                f"duplicates {duplicates} req {req_replied}/{req_sent} replies "
                f"(stale dropped {stale}) pub {pub} sub-deliveries {delivered} "
                f"surveys {surveys} responses {responses} bus {bus} echoes {echoed} "
                f"joins {self.joined} kills {kills} closes {closes} {resources}: ")
        if failed:
            return line + "FAILED: " + "; ".join(failed), False
        return line + "OK", True


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--verbose", action="store_true", help="log joins, departures, samples")
    parser.add_argument("--rss-tolerance", type=float, default=RSS_TOLERANCE_MIB, metavar="MIB",
                        help="most the RSS may grow from warm-up to end (default %(default)s; "
                        "the soak's own accounting adds about 1 MiB per million PUSH messages)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="print the top allocation differences between warm-up and end")
    parser.add_argument("--peer", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peer:
        peer_main(args.peer[0], args.peer[1], int(args.peer[2]))
        return 0
    if args.tracemalloc:
        tracemalloc.start(5)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    # The hard deadline: every thread's stack, then exit (children die with us).
    faulthandler.dump_traceback_later(args.seconds + 180.0, exit=True)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # even where it was inherited ignored
    soak = Soak(args.seconds, seed, args.verbose, args.rss_tolerance)
    soak.log(f"seed {seed}")
    code = soak.run()
    if code == 130:
        shutil.rmtree(soak.tmpdir, ignore_errors=True)
    elif code != 0:
        print(f"soak: seed {seed}; peer logs in {soak.tmpdir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
