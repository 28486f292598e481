"""Measure a listener that runs out of file descriptors: CPU and log lines while it lasts.

    .venv/bin/python tools/emfile_episode.py [--seconds 3] [--limit 64] [--clients 96]

A child process lowers its RLIMIT_NOFILE to ``--limit`` (so the limit never touches this
process), binds a PULL on tcp://127.0.0.1:0 and takes commands on stdin. This process then:

1. connects a scaproust PUSH and sends a message: the established pipe;
2. opens ``--clients`` raw TCP connections, more than the child has descriptors left, and
   waits until the child's listener counts a failed accept (``accept_errors``);
3. asks the child to measure ``--seconds``: CPU seconds of the whole child
   (``time.process_time``), log lines, WARNING lines of ``scaproust.listener``, failed accepts;
4. sends a second message over the established pipe (still served during the episode?),
   while the child waits in recv() (which needs a descriptor for its wake-up, and must
   fall back to the I/O thread's delivery when there is none);
5. closes all but a few raw connections, dials the child with a new PUSH and sends a third
   message (does the listener accept again once descriptors are free?).

It prints one JSON object; ``tests/integration/test_resource_limits.py`` runs ``episode()``
with a short window and asserts on it. Every wait has a deadline, and the child is killed
if it outlives them.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The child: PULL on a lowered descriptor limit, answering one JSON line per command.
CHILD = r"""
import json, logging, resource, sys, time
import scaproust as sp

class Counter(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.counts = {}
        self.kept = []

    def emit(self, record):
        key = f"{record.name}:{record.levelname}"
        self.counts[key] = self.counts.get(key, 0) + 1
        if len(self.kept) < 20:
            self.kept.append(f"{record.levelname} {record.name}: {record.getMessage()}")

counter = Counter()
logger = logging.getLogger("scaproust")
logger.addHandler(counter)
logger.setLevel(logging.INFO)
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))

def warnings():
    return counter.counts.get("scaproust.listener:WARNING", 0)

with sp.Session() as session:
    # Raw clients never send a header: keep them for the whole run.
    pull = session.socket(sp.Pull, handshake_timeout=600.0)
    print(json.dumps({"url": pull.bind("tcp://127.0.0.1:0").url}), flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "stats":
            reply = pull.stats
        elif cmd == "measure":
            errors, lines, warned = pull.stats.get("accept_errors", 0), sum(counter.counts.values()), warnings()
            cpu, start = time.process_time(), time.monotonic()
            time.sleep(float(args[0]))  # the measurement window itself
            reply = {"seconds": round(time.monotonic() - start, 3),
                     "cpu_seconds": round(time.process_time() - cpu, 3),
                     "log_lines": sum(counter.counts.values()) - lines,
                     "listener_warnings": warnings() - warned,
                     "failed_accepts": pull.stats.get("accept_errors", 0) - errors}
        elif cmd == "recv":
            try:
                reply = {"got": pull.recv(timeout=float(args[0])).decode()}
            except sp.Timeout:
                reply = {"got": None}
        elif cmd == "logs":
            reply = {"counts": counter.counts, "first_lines": counter.kept}
        else:
            break
        print(json.dumps(reply), flush=True)
"""


class Child:
    """The child process, asked one command at a time, each answer awaited with a deadline."""

    def __init__(self, limit: int) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(limit)], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._buffer = b""

    def read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"the child did not answer within {timeout} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"the child exited ({self.proc.wait(5)})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def tell(self, command: str) -> None:
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def ask(self, command: str, timeout: float = 10.0) -> dict:
        self.tell(command)
        return self.read(timeout)

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def episode(seconds: float = 3.0, limit: int = 64, clients: int = 96, keep: int = 4) -> dict:
    """Run the scenario of the module's docstring; return what was measured and seen."""
    import scaproust as sp

    child = Child(limit)
    raw: list[socket.socket] = []
    try:
        url = child.read(10.0)["url"]
        host, port = url.removeprefix("tcp://").rsplit(":", 1)
        with sp.Session() as session:
            established = session.socket(sp.Push, send_timeout=5.0)
            established.connect(url)
            established.send(b"before")
            before = child.ask("recv 5")["got"]
            for _ in range(clients):
                raw.append(socket.create_connection((host, int(port)), timeout=5.0))
            wait_until(lambda: child.ask("stats").get("accept_errors", 0) > 0, 10.0,
                       "the listener to run out of descriptors")
            during = child.ask(f"measure {seconds}", timeout=seconds + 10.0)
            child.tell("recv 5")  # usually waiting already when the message comes
            established.send(b"during")
            served = child.read(10.0)["got"]
            for sock in raw[keep:]:
                sock.close()
            fresh = session.socket(sp.Push, send_timeout=10.0)
            fresh.connect(url)
            started = time.monotonic()
            fresh.send(b"after")
            after = child.ask("recv 10", timeout=20.0)["got"]
            resumed_in = time.monotonic() - started
        logs = child.ask("logs")
        return {"measured": during,
                "messages": [before, served, after],
                "resumed_in_seconds": round(resumed_in, 3),
                "log_counts": logs["counts"],
                "first_log_lines": logs["first_lines"]}
    finally:
        for sock in raw:
            sock.close()
        child.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--limit", type=int, default=64, help="the child's RLIMIT_NOFILE")
    parser.add_argument("--clients", type=int, default=96, help="raw connections to open")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    print(json.dumps(episode(args.seconds, args.limit, args.clients), indent=2))


if __name__ == "__main__":
    main()
