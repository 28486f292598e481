import faulthandler
import gc
import os
import sys
from pathlib import Path

import pytest

# codegen/ lives at the top of the repository, beside src/.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# SCAPROUST_GC_STRESS=1 (make test-deep) runs the cyclic garbage collector after every
# hundred allocations, so that it fires inside every critical section sooner or later: how
# a socket collected under the session's lock was found to deadlock, and how counters that
# counted a purged reply twice showed up in the REQ/REP device model.
if os.environ.get("SCAPROUST_GC_STRESS"):
    gc.set_threshold(100, 5, 5)

# A hang must fail the run within minutes, with every thread's stack, and never eat CI's
# time limit. faulthandler's watchdog is a C thread: it fires even when every Python thread
# is stuck on a lock, and it covers a test's setup, call and teardown, also the teardown
# after a failure (pytest-timeout, tried first, cancels its timer when a test fails, so a
# deadlocked teardown hung forever). SCAPROUST_TEST_TIMEOUT: seconds per test, 0 = none.
TEST_TIMEOUT = float(os.environ.get("SCAPROUST_TEST_TIMEOUT", "180"))
_dump = sys.__stderr__  # replaced in pytest_configure by the terminal's own stderr


def pytest_configure(config):
    # fd 2 is captured while a test runs, and that capture is lost when the watchdog ends
    # the process: dump to the stderr that pytest saved before capturing (no public API for
    # it; without it the dump is lost but the run still ends).
    global _dump
    capture = getattr(config.pluginmanager.getplugin("capturemanager"), "_global_capturing", None)
    saved = getattr(getattr(capture, "err", None), "targetfd_save", None)
    if isinstance(saved, int):
        _dump = os.fdopen(os.dup(saved), "w")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if TEST_TIMEOUT > 0:
        faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True, file=_dump)
    try:
        yield
    finally:
        if TEST_TIMEOUT > 0:
            faulthandler.cancel_dump_traceback_later()


@pytest.hookimpl(trylast=True)
def pytest_exception_interact(node, call, report):
    # pytest's own faulthandler plugin cancels every pending dump here (meant for --pdb):
    # arm the watchdog again so that the teardown after a failure stays bounded.
    if TEST_TIMEOUT > 0 and not node.config.getoption("usepdb"):
        faulthandler.dump_traceback_later(TEST_TIMEOUT, exit=True, file=_dump)


@pytest.fixture
def procs(tmp_path):
    """Starts ``scaproust-cat`` and other programs (tests/cat_helpers.py); every one still
    running is killed in the teardown."""
    from cat_helpers import Procs

    started = Procs(tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def cores(monkeypatch):
    """``cores(n)``: from now on, every thread's next sleep on a channel sees itself on
    ``n`` cores (reactor/waker.py: on one, it sleeps on its own descriptor and is woken
    after its waker's section; on more, on a lock, woken at once). Each thread's earlier
    look is forgotten."""
    import threading

    from scaproust.reactor import waker

    def set_cores(n: int) -> None:
        monkeypatch.setattr(waker, "_on_one_core", lambda: n == 1)
        monkeypatch.setattr(waker, "_local", threading.local())

    return set_cores
