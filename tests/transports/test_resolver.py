"""The resolver's worker threads: results and errors land in the Future, at most
MAX_WORKERS run at once, a cancelled lookup never runs, and idle workers go away."""

from __future__ import annotations

import threading
import time

import pytest

from scaproust.transports import resolver

DEADLINE = 5.0


def workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "scaproust-resolver"]


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def test_a_call_runs_in_a_daemon_worker_and_its_result_lands_in_the_future():
    future = resolver.submit(threading.current_thread)
    thread = future.result(DEADLINE)
    assert thread is not threading.current_thread()
    assert thread.daemon and thread.name == "scaproust-resolver"


def test_an_error_lands_in_the_future():
    def fail():
        raise OSError("Name or service not known")

    with pytest.raises(OSError, match="Name or service not known"):
        resolver.submit(fail).result(DEADLINE)


def test_at_most_max_workers_run_at_once_and_a_cancelled_call_never_runs():
    gate = threading.Event()
    started = []
    running = [resolver.submit(lambda i=i: started.append(i) or gate.wait(DEADLINE))
               for i in range(resolver.MAX_WORKERS)]
    try:
        wait_until(lambda: len(started) == resolver.MAX_WORKERS, "every worker to start")
        queued = resolver.submit(lambda: started.append("queued"))
        cancelled = resolver.submit(lambda: started.append("cancelled"))
        assert len(workers()) == resolver.MAX_WORKERS
        assert cancelled.cancel()
    finally:
        gate.set()
    queued.result(DEADLINE)
    assert all(f.result(DEADLINE) for f in running)
    assert "cancelled" not in started and started[-1] == "queued"


def test_idle_workers_go_away():
    resolver.submit(lambda: None).result(DEADLINE)
    wait_until(lambda: not workers(), "the workers to end")
