"""Running the tests against each mutant: which test files, in which order, in parallel
workers, each pytest run under a timeout, and a clean stop on Ctrl-C or SIGTERM.

Each mutant runs ``pytest -x -q -p no:cacheprovider --hypothesis-seed=0`` over
tests/protocols, tests/core and tests/models (when present), plus, for the transport-level
machines and modules (pipe, listener, dialer, socket), a few integration tests, and for a
protocol with contexts (``sock.context()``), its contexts' integration tests;
tests/test_conformance.py and tests/gen compare generated code with the table and are
left out. The set runs in two pytest processes under one timeout: first the test files
about the mutated machine or module (a small run that collects fast and makes most
kills), then, if those all pass, the rest; that is one run of the whole set, split for
speed. A run that fails is *killed*, one that passes *survived*, one that outlives the
timeout *timeout*. Runs use the compiled backend (the default; both backends are
generated from the same table).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .mutant import EQUIVALENT, KILLED, SAME_CODE, SURVIVED, TIMEOUT, VALIDATOR, Mutant
from .workspace import Generator, Workspace

INTEGRATION_TESTS = (
    "tests/integration/test_push_pull.py",
    # Large bodies read whole (core/pipe.py): a plain TCP peer decides what is queued when.
    "tests/integration/test_whole_bodies.py",
    "tests/integration/test_pair.py",
    "tests/integration/test_endpoints.py",
    # The TLS and WebSocket pipes' phases (handshake, timers, close) are tested here only.
    "tests/integration/test_tls.py",
    "tests/integration/test_ws.py",
)
#: A protocol's contexts (their machines, their policies in the caller's thread) are pinned
#: down with real sockets: a mutant of a protocol module with contexts runs that file too,
#: among the first (it is keyed by the module of the mutated class: req_ctx's is req).
CONTEXT_TESTS = {
    "req": "tests/integration/test_contexts_req.py",
    "rep": "tests/integration/test_contexts_rep.py",
    "sub": "tests/integration/test_contexts_sub.py",
    "surveyor": "tests/integration/test_contexts_survey.py",
    "respondent": "tests/integration/test_contexts_survey.py",
}
UNIT_TEST_DIRS = ("tests/protocols", "tests/core", "tests/models")
PYTEST = ("-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--hypothesis-seed=0")
#: What a mutant of a module or machine runs first, when its tests are not named after it:
#: hand-written helpers shared by several protocols, and the TLS and WebSocket pipes.
SHARED_MODULE_TESTS = {
    "_base": ("pair", "push", "pull"),
    "_balance": ("push", "req"),
    "_backtrace": ("rep", "respondent"),
    "_headers": ("headers", "req", "rep", "surveyor", "respondent"),
    # Pipe modules, whose tests are also named after their transport. A machine's
    # mutants are keyed by the module of its class: core/ws_pipe.py holds WSPipe and
    # WSSPipe (machines ws_pipe and wss_pipe), and a wss pipe's TLS handshake is tested
    # beside the tls+tcp pipe's (tests/core/test_tls_pipe_handshake.py), whose quick
    # failures come before test_ws.py's (a broken wss dial there waits for its timeout).
    "tls_pipe": ("tls",),
    "ws_pipe": ("ws", "wss_pipe", "tls_pipe_handshake"),
}


def chosen_tests(root: Path, transport: bool) -> list[str]:
    """The test files every mutant runs (plus the integration tests for a transport-level
    one), relative to ``root``."""
    files = []
    for folder in UNIT_TEST_DIRS:
        files += sorted(str(p.relative_to(root)) for p in (root / folder).rglob("test_*.py"))
    if transport:
        files += [f for f in INTEGRATION_TESTS if (root / f).exists()]
    return files


def files_for(root: Path, transport: bool, related: str) -> list[str]:
    """What a mutant runs: ``chosen_tests``, and its protocol's contexts tests if any."""
    files = chosen_tests(root, transport)
    extra = CONTEXT_TESTS.get(related)
    if extra is not None and (root / extra).exists():
        files.append(extra)
    return files


def _stem(path: str) -> str:
    """What a test file is about: ``tests/core/test_pipe.py`` -> ``pipe``."""
    return Path(path).stem.removeprefix("test_")


def split_tests(files: list[str], related: str) -> tuple[list[str], list[str]]:
    """The test files about ``related`` (run first: most kills come from them, and a small
    run collects fast), and the rest."""
    wanted = set(SHARED_MODULE_TESTS.get(related, ())) | {related}
    first = [f for f in files if not f.startswith("tests/models/")
             and (_stem(f) in wanted or _stem(f).startswith(related + "_")
                  or f == CONTEXT_TESTS.get(related))]
    return first, [f for f in files if f not in first]


def run_stages(root: Path, files: list[str], related: str, timeout: float) -> tuple[str, str, float]:
    """All of ``files`` under one time budget, in two pytest runs: the related files, then,
    if they all passed, the others. Killed iff some test fails, as one run would say."""
    spent = 0.0
    status, detail = SURVIVED, ""
    for stage in split_tests(files, related):
        if not stage:
            continue
        status, detail, seconds = run_tests(root, stage, timeout - spent)
        spent += seconds
        if status != SURVIVED:
            break
    return status, detail, spent


#: The pytest processes running now, killed (with their children) if the run is interrupted.
_RUNNING: set = set()
_STOP = threading.Event()


def interrupt(signum, frame) -> None:
    """The SIGINT / SIGTERM handler: kill every pytest running, stop the workers."""
    _STOP.set()
    for proc in list(_RUNNING):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise KeyboardInterrupt


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[str, str, float]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]),
               SCAPROUST_FSM="compiled")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("CI", None)
    start = time.monotonic()
    timeout = max(timeout, 1.0)
    proc = subprocess.Popen([sys.executable, *PYTEST, *tests], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    _RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return TIMEOUT, f"no result after {timeout:.0f}s", time.monotonic() - start
    finally:
        _RUNNING.discard(proc)
    if _STOP.is_set():
        raise KeyboardInterrupt
    elapsed = time.monotonic() - start
    text = out.decode(errors="replace")
    if proc.returncode == 0:
        return SURVIVED, "", elapsed
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
    detail = failed[0] if failed else (text.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return KILLED, detail, elapsed


def run_all(mutants: list[Mutant], *, base: Path, tmp: Path, jobs: int, timeout: float,
            equivalents: dict[str, str], gen: Generator) -> None:
    """Give every mutant its status: equivalent (listed), validator or same code (yaml,
    decided without running anything), else what its test run says, in ``jobs`` private
    copies of ``base`` made under ``tmp``. Raises KeyboardInterrupt when interrupted."""
    tests = {(t, r): files_for(base, t, r)
             for t, r in {(m.transport, m.related) for m in mutants}}
    workspaces: queue.Queue = queue.Queue()
    for j in range(jobs):
        workspaces.put(Workspace(base, tmp / f"w{j}"))
    done = [0]
    lock = threading.Lock()

    def run(m: Mutant) -> None:
        if _STOP.is_set():
            return
        if m.key in equivalents:
            m.status, m.detail = EQUIVALENT, equivalents[m.key]
        elif m.family == "yaml":
            try:
                m.files = gen.changes(m.text)
            except gen.SpecError as exc:
                m.status, m.detail = VALIDATOR, str(exc)
            except Exception as exc:  # the generator itself choked: the table is unusable
                m.status, m.detail = VALIDATOR, f"codegen failed: {type(exc).__name__}: {exc}"
            else:
                if not m.files:
                    m.status, m.detail = SAME_CODE, "the generated code is identical"
        if not m.status:
            ws = workspaces.get()
            try:
                ws.write(m.path, m.text)
                for rel, text in (m.files or {}).items():
                    ws.write(rel, text)
                m.status, m.detail, m.seconds = run_stages(
                    ws.root, tests[m.transport, m.related], m.related, timeout)
            finally:
                ws.restore()
                workspaces.put(ws)
        with lock:
            done[0] += 1
            print(f"[{done[0]}/{len(mutants)}] {m.status:9} {m.label}"
                  f"{f' ({m.seconds:.1f}s)' if m.seconds else ''}", file=sys.stderr, flush=True)

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        list(pool.map(run, mutants))
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
