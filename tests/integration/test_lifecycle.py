"""Lifecycle guarantees: close wakes blocked callers at once, garbage collection and
interpreter exit close quietly, fork is detected, Ctrl-C interrupts a blocking call."""

from __future__ import annotations

import asyncio
import gc
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import pytest

import scaproust as sp
from scaproust.core.session import FORKED
from tests.integration.conftest import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_python(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_close_wakes_a_blocked_recv_at_once_even_with_a_long_linger(session):
    pull = session.socket(sp.Pull, linger=30.0)
    push = session.socket(sp.Push)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    outcome = []
    thread = threading.Thread(target=lambda: outcome.append(_raised(pull.recv)))
    thread.start()
    # Blocked either way: waiting for the I/O thread's delivery (counted), or asleep on
    # the pipe it reads itself once the push's connection is up (Channel.recv_waiters).
    channel = pull._channel
    wait_until(lambda: channel.recv_waiters or channel.reader_waiting, what="recv to block")
    started = time.monotonic()
    threading.Thread(target=pull.close).start()
    thread.join(5.0)
    assert outcome == [sp.Closed] and time.monotonic() - started < 2.0


def test_many_threads_blocked_on_one_socket_all_wake_on_close(session):
    push = session.socket(sp.Push)  # no peer: every send blocks
    pull = session.socket(sp.Pull)
    outcomes = []
    threads = [threading.Thread(target=lambda s=s: outcomes.append(_raised(s)))
               for s in [lambda: push.send(b"x")] * 8 + [pull.recv] * 8]
    for thread in threads:
        thread.start()
    wait_until(lambda: push._channel.send_waiters == 8 and pull._channel.recv_waiters == 8,
               what="16 blocked threads")
    closers = [threading.Thread(target=s.close) for s in (push, pull, push, pull)]
    for closer in closers:
        closer.start()
    for thread in threads + closers:
        thread.join(5.0)
        assert not thread.is_alive()
    assert outcomes == [sp.Closed] * 16


def test_an_unreferenced_socket_is_garbage_collected_and_closed(session):
    pull = session.socket(sp.Pull)
    url = pull.bind("tcp://127.0.0.1:0").url  # an Endpoint would keep its socket alive
    core = pull._core
    ref = weakref.ref(pull)
    del pull
    gc.collect()
    assert ref() is None
    wait_until(lambda: core.state == "closed", what="the collected socket to close")
    session.socket(sp.Pull).bind(url)  # its port was released


def drop_in_a_cycle(session):
    """Create a socket and drop it inside a reference cycle: only the cyclic collector can
    free it, at a moment it chooses. Returns its channel and core (they outlive it)."""
    sock = session.socket(sp.Pull)
    sock._cycle = sock
    return sock._channel, sock._core


def collect_holding(lock) -> None:
    # The collector may run at any allocation, inside any critical section.
    with lock:
        gc.collect()


def test_collecting_a_socket_while_its_session_is_locked_does_not_deadlock(session):
    # Seen in CI: Session.close() held the session lock when the collector freed a dropped
    # socket whose __del__ took the same lock, and the run hung until CI's time limit.
    _, core = drop_in_a_cycle(session)

    collector = threading.Thread(target=collect_holding, args=(session._lock,), daemon=True)
    collector.start()
    collector.join(5.0)

    assert not collector.is_alive(), "the collector deadlocked closing the dropped socket"
    wait_until(lambda: core.state == "closed", what="the collected socket to close")


def test_collecting_a_socket_inside_the_io_thread_does_not_stall_it(session):
    # The I/O thread holds a channel's lock when it delivers; the collector may run then.
    channel, core = drop_in_a_cycle(session)

    session._core.call(collect_holding, channel._lock, timeout=5.0)

    wait_until(lambda: core.state == "closed", what="the collected socket to close")
    pull = session.socket(sp.Pull, recv_timeout=5.0)  # the I/O thread still serves others
    push = session.socket(sp.Push, send_timeout=5.0)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    push.send(b"alive")
    assert pull.recv() == b"alive"


def test_interpreter_exit_with_open_sockets_neither_hangs_nor_prints():
    result = run_python("""
        import scaproust as sp
        s = sp.Session()
        pull = s.socket(sp.Pull)
        push = s.socket(sp.Push)
        push.connect(pull.bind("tcp://127.0.0.1:0").url)
        push.send(b"x")
        dflt = sp.socket(sp.Pair)
        dflt.bind("tcp://127.0.0.1:0")
        print("done")
    """)
    assert result.returncode == 0
    assert result.stdout == "done\n"
    assert result.stderr == ""


def test_garbage_collecting_an_unclosed_session_is_quiet():
    result = run_python("""
        import gc, scaproust as sp
        s = sp.Session()
        s.socket(sp.Pull).bind("tcp://127.0.0.1:0")
        del s
        gc.collect()
        print("done")
    """)
    assert (result.returncode, result.stdout, result.stderr) == (0, "done\n", "")


@pytest.mark.parametrize("how", ["collected", "closed by another thread"])
def test_session_close_waits_for_the_linger_of_a_socket_closed_otherwise(how):
    # Such a socket had left the session's list as its close began: the session stopped
    # its loop under the lingering pipe, which stayed open for ever (its peer, in another
    # session, never saw it go, and was never free for another).
    with sp.Session() as other:
        peer = other.socket(sp.Pair, recv_buffer=4)
        url = peer.bind(f"inproc://linger-{how.replace(' ', '-')}").url
        session = sp.Session()
        sock = session.socket(sp.Pair, send_timeout=0.2, linger=0.3)
        sock.connect(url)
        wait_until(lambda: peer.stats.get("pipes_opened") == 1, what="the pipe")
        with pytest.raises(sp.Timeout):
            while True:  # the peer reads nothing: its queue, the link, then ours fill up
                sock.send(b"x" * 100)
        if how == "collected":
            del sock
            gc.collect()  # Socket.__del__ posts its close
        else:
            closer = threading.Thread(target=sock.close)
            closer.start()
            wait_until(lambda: not session._sockets, what="the close to begin")
        session.close()
        assert session._closing == {}
        with pytest.raises(sp.Timeout):
            while True:  # what reached the peer, then the end of the link
                peer.recv(timeout=0.5)
        wait_until(lambda: peer.stats.get("pipes_closed") == 1, what="the peer to see it go")
        if how != "collected":
            closer.join(5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_session_used_after_fork_raises_a_clear_error_and_a_new_one_works():
    result = run_python("""
        import os, sys, scaproust as sp
        s = sp.Session()
        pull = s.socket(sp.Pull)
        pid = os.fork()
        if pid == 0:
            try:
                pull.bind("tcp://127.0.0.1:0")
            except sp.Error as err:
                print("child error:", type(err).__name__, err)
            with sp.Session() as fresh:
                a = fresh.socket(sp.Pull, recv_timeout=5)
                b = fresh.socket(sp.Push, send_timeout=5)
                b.connect(a.bind("tcp://127.0.0.1:0").url)
                b.send(b"child ok")
                print(a.recv().decode())
            sys.stdout.flush()
            sys.exit(0)  # a normal exit: atexit must leave the parent's session alone
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
        s.close()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == ("child error: Error this session was created before os.fork(): "
                        "its I/O thread does not exist in this process; create a new Session")
    assert lines[1:] == ["child ok", "child exit 0"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_forked_child_binds_and_dials_the_inproc_names_of_its_parent_afresh():
    # The name registry is the process's: the child's must not be the parent's, whose
    # listener (and its bell) live on in the parent only.
    result = run_python("""
        import os, sys, scaproust as sp
        with sp.Session() as parent:
            parent.socket(sp.Pair).bind("inproc://svc")
            pid = os.fork()
            if pid == 0:
                with sp.Session() as fresh:
                    a = fresh.socket(sp.Pair, recv_timeout=5)
                    a.bind("inproc://svc")
                    b = fresh.socket(sp.Pair, send_timeout=5)
                    b.connect("inproc://svc")
                    b.send(b"child ok")
                    print(a.recv().decode())
                sys.stdout.flush()
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            print("child exit", os.waitstatus_to_exitcode(status))
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child ok", "child exit 0"], result.stderr


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_a_child_forked_while_a_parent_thread_held_the_session_lock_exits():
    # At exit the child closes the sessions it inherited: the parent's, which it leaves to
    # the parent, without the lock a parent thread held at the fork.
    result = run_python("""
        import os, sys, threading, scaproust as sp
        s = sp.Session()
        s.socket(sp.Pull)
        held, done = threading.Event(), threading.Event()
        def hold():
            with s._lock:
                held.set()
                done.wait(10)
        threading.Thread(target=hold).start()
        held.wait(10)
        pid = os.fork()
        if pid == 0:
            sys.exit(0)  # a normal exit: atexit closes the inherited session
        done.set()
        left = 10.0
        while left > 0 and not os.waitpid(pid, os.WNOHANG)[0]:
            threading.Event().wait(0.01)
            left -= 0.01
        if left <= 0:
            os.kill(pid, 9)
            print("child hung at exit")
        else:
            print("child exited")
        s.close()
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["child exited"], result.stderr


def _calls_on_inherited_sockets(session) -> dict:
    """Every call on sockets of ``session`` that a forked child must see fail at once; made
    in the parent, before the fork. The PULL has a message queued, the other PULL none (its
    recv() and poll() used to wait for ever in the child)."""
    pull = session.socket(sp.Pull)
    empty = session.socket(sp.Pull)
    push = session.socket(sp.Push, send_timeout=5)
    sub = session.socket(sp.Sub)
    rep = session.socket(sp.Rep)  # a policy's send: a fast path of its own, cleared too
    req = session.socket(sp.Req, send_timeout=5)
    endpoint = pull.bind("tcp://127.0.0.1:0")
    push.connect(endpoint.url)
    push.send(b"queued before the fork")
    wait_until(lambda: sp.poll({pull: sp.POLLIN}, 0), what="the message to be queued")
    poller = sp.Poller()
    poller.register(empty, sp.POLLIN)

    def set_option():
        empty.recv_timeout = 1.0

    return {
        "send": lambda: push.send(b"x"),
        "send_msg": lambda: push.send_msg(sp.Message(b"x")),
        "a REP's send": lambda: rep.send(b"x"),
        "a REQ's send": lambda: req.send(b"x"),
        "a REP's recv": rep.recv,  # a policy's receive: a fast path of its own, cleared too
        "a REQ's recv": req.recv,
        "try_send": lambda: push.try_send(b"x"),
        "try_recv with a queued message": pull.try_recv,  # the fast path's flag, cleared
        "recv with a queued message": pull.recv,
        "recv": empty.recv,
        "recv with a timeout": lambda: empty.recv(timeout=0.5),
        "recv_msg": empty.recv_msg,
        "try_recv": empty.try_recv,
        "poll": lambda: sp.poll({empty: sp.POLLIN}),
        "Poller.poll": poller.poll,
        "arecv": lambda: asyncio.run(empty.arecv()),
        "asend": lambda: asyncio.run(push.asend(b"x")),
        "bind": lambda: empty.bind("tcp://127.0.0.1:0"),
        "connect": lambda: empty.connect(endpoint.url),
        "reading an option": lambda: empty.recv_timeout,
        "setting an option": set_option,
        "stats": lambda: empty.stats,
        "subscribe": lambda: sub.subscribe(b""),
        "endpoint close": endpoint.close,
        "close": push.close,
        "a new socket": lambda: session.socket(sp.Pair),
    }


def _run_in_child(calls: dict, report: int) -> None:
    """Write each call's outcome in the child to ``report`` as soon as it is known, one
    line each (the child's whole run is bounded by an alarm, so a hang kills it, and the
    lines written so far say where)."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(10)
    for name, call in calls.items():
        started = time.monotonic()
        try:
            call()
            outcome = "returned"
        except sp.Error as err:
            forked = type(err) is sp.Error and str(err) == FORKED
            outcome = "fork error" if forked else f"{type(err).__name__}: {err}"
        except BaseException as err:
            outcome = f"{type(err).__name__}: {err}"
        slow = " (slow)" if time.monotonic() - started > 0.2 else ""
        os.write(report, f"{name}: {outcome}{slow}\n".encode())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_every_call_on_a_socket_inherited_across_fork_raises_the_fork_error_at_once(session):
    calls = _calls_on_inherited_sockets(session)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, and never return into pytest
        try:
            os.close(read_end)
            _run_in_child(calls, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    report = b""
    try:
        deadline = time.monotonic() + 30.0
        with os.fdopen(read_end, "rb") as pipe:
            while chunk := _read_before(pipe, deadline):
                report += chunk
        status = _wait_for_child(pid, deadline)
    finally:
        _kill_if_alive(pid)
    lines = report.decode().splitlines()
    assert os.waitstatus_to_exitcode(status) == 0, f"the child hung after {lines}"
    assert lines == [f"{name}: fork error" for name in calls]
    # The parent's sockets are untouched by the child's attempts.
    assert calls["recv with a queued message"]() == b"queued before the fork"


def _read_before(pipe, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([pipe], [], [], left)[0]:
        raise AssertionError("the forked child did not report in time")
    return os.read(pipe.fileno(), 65536)


def _wait_for_child(pid: int, deadline: float) -> int:
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    raise AssertionError("the forked child did not exit in time")


def _kill_if_alive(pid: int) -> None:
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # already reaped


@pytest.mark.parametrize(("url", "one_core"), [("tcp://127.0.0.1:0", False),
                                               ("inproc://ctrl-c", True),
                                               ("inproc://ctrl-c", False)],
                         ids=["tcp", "inproc-one-core", "inproc"])
def test_ctrl_c_interrupts_a_blocking_recv_in_the_main_thread_and_the_socket_stays_usable(
        url, one_core):
    # Over TCP the receive sleeps in poll() on its pipes; in-process, on one core, on its
    # thread's eventfd (reactor/waker.py), read with no timeout or polled with one; on
    # more, on a lock.
    pin = "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})" if one_core else ""
    result = run_python(f"""
        import os, signal, threading, scaproust as sp
        {pin}
        with sp.Session() as s:
            pull = s.socket(sp.Pull)
            push = s.socket(sp.Push, send_timeout=5)
            push.connect(pull.bind("{url}").url)
            for timeout in (None, 30):
                threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
                try:
                    pull.recv(timeout=timeout)
                except KeyboardInterrupt:
                    print("interrupted")
                push.send(b"still usable")
                print(pull.recv(timeout=5).decode())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["interrupted", "still usable"] * 2


def _raised(fn):
    try:
        fn()
    except Exception as err:
        return type(err)
    return None


def test_closing_a_connect_endpoint_stops_its_reconnects(session, tmp_path):
    push = session.socket(sp.Push, reconnect_interval=0.01)
    ep = push.connect(f"ipc://{tmp_path}/nobody.ipc")
    wait_until(lambda: push.stats.get("connect_failures", 0) >= 2, what="a few failed attempts")
    dialer = next(iter(push._core.endpoints.values()))
    ep.close()
    wait_until(lambda: dialer.state == "closed", what="the dialer to close")
    failures = push.stats["connect_failures"]
    # Bind the path now: a dialer still running would connect within a few attempts.
    pull = session.socket(sp.Pull)
    pull.bind(f"ipc://{tmp_path}/nobody.ipc")
    assert sp.poll({push: sp.POLLOUT}, timeout=0.2) == {}  # never connected
    assert push.stats["connect_failures"] == failures and push.endpoints == []


def test_linger_zero_drops_queued_output_at_close(session):
    pull = session.socket(sp.Pull, recv_buffer=1)  # reads almost nothing
    push = session.socket(sp.Push, linger=0.0, send_timeout=0.5)
    push.connect(pull.bind("tcp://127.0.0.1:0").url)
    body = b"z" * (256 * 1024)
    try:
        while True:
            push.send(body)  # until the pipe, the kernel and the receiver are all full
    except sp.Timeout:
        pass
    push.close()
    assert push.stats.get("dropped_linger", 0) >= 1


def test_a_req_whose_reply_is_too_large_resends_and_never_blocks_without_a_timeout(session):
    rep = session.socket(sp.Rep, recv_timeout=5)
    req = session.socket(sp.Req, recv_max_size=100, recv_timeout=0.5)
    req.connect(rep.bind("tcp://127.0.0.1:0").url)
    req.send(b"q")
    assert rep.recv() == b"q"
    rep.send(b"x" * 1000)  # over the REQ's limit: its pipe is closed, it redials and resends
    assert rep.recv() == b"q"  # the resent request
    with pytest.raises(sp.Timeout):
        req.recv()
    assert req.stats["dropped_oversize"] >= 1
