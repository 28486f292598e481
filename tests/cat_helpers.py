"""Running ``scaproust-cat``, nanocat and nngcat as subprocesses in tests.

Every process writes its standard output and error to files (no pipe can fill up and stall
it), runs in its own process group under ``timeout -s KILL`` (it dies even if the test
process is killed), and is killed by ``Procs.close()``, which the ``procs`` fixture runs in
its teardown whatever happened. Waits poll with a deadline, never a bare sleep.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from interop._peers import wait_until

#: Anything that should happen (a listener appearing, a message arriving, a process exiting)
#: gets this long; on loopback it takes milliseconds, the margin is for loaded machines.
DEADLINE = 10.0
#: A process is SIGKILLed after this long even if the teardown never runs.
LIFETIME = 60
#: How to run ours: the module, so that no installed console script is needed.
SCAPROUST_CAT = [sys.executable, "-m", "scaproust", "cat"]

_serial = itertools.count()


class Proc:
    """One process; see the module docstring."""

    def __init__(self, argv: list[str], workdir: Path, stdin: bytes | None = None) -> None:
        self.argv = argv
        n = next(_serial)
        name = Path(argv[0]).name if argv[0] != sys.executable else "scaproust-cat"
        self.out_path = workdir / f"{n}-{name}.out"
        self.err_path = workdir / f"{n}-{name}.err"
        stdin_file = None
        if stdin is not None:
            in_path = workdir / f"{n}-{name}.in"
            in_path.write_bytes(stdin)
            stdin_file = open(in_path, "rb")  # noqa: SIM115 (closed below)
        try:
            with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
                self.proc = subprocess.Popen(
                    ["timeout", "-s", "KILL", str(LIFETIME), *argv],
                    stdin=stdin_file if stdin_file is not None else subprocess.DEVNULL,
                    stdout=out, stderr=err, start_new_session=True, cwd=workdir)
        finally:
            if stdin_file is not None:
                stdin_file.close()

    def __str__(self) -> str:
        return " ".join(self.argv)

    def stdout(self) -> bytes:
        return self.out_path.read_bytes()

    def stderr(self) -> str:
        return self.err_path.read_bytes().decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_exit(self, timeout: float = DEADLINE) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self} still running after {timeout} s; "
                                 f"stdout {self.stdout()[:200]!r}, stderr {self.stderr()!r}"
                                 ) from None

    def wait_stdout(self, size: int, timeout: float = DEADLINE) -> bytes:
        """Wait until the process has written at least ``size`` bytes; return them all."""
        try:
            wait_until(lambda: len(self.stdout()) >= size, f"{size} bytes from {self}",
                       timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}; got {self.stdout()[:200]!r}, "
                                 f"rc {self.proc.poll()}, stderr {self.stderr()!r}") from None
        return self.stdout()

    def listening_url(self) -> str:
        """Our process's ``-v`` line: the real URL of its first bind (port 0 resolved)."""
        found: list[str] = []

        def seen() -> bool:
            match = re.search(r"^Listening at: (\S+)$", self.stderr(), re.M)
            if match:
                found.append(match.group(1))
            elif not self.alive():
                raise AssertionError(f"{self} exited with {self.proc.returncode} before "
                                     f"listening: {self.stderr()!r}")
            return bool(match)

        wait_until(seen, f"{self} to listen")
        return found[0]

    def signal(self, sig: int) -> None:
        # The tool itself, not `timeout` in front of it: timeout would pass the signal on,
        # but only SIGTERM-like ones.
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        wait_until(lambda: bool(children.read_text().split()), f"{self} to start")
        os.kill(int(children.read_text().split()[0]), sig)

    def kill(self) -> None:
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=DEADLINE)


class Procs:
    """Starts processes and kills those still running at ``close()``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Proc] = []

    def start(self, *argv: str, stdin: bytes | None = None) -> Proc:
        proc = Proc(list(argv), self.workdir, stdin)
        self.started.append(proc)
        return proc

    def cat(self, *args: str, stdin: bytes | None = None) -> Proc:
        """Starts ``scaproust-cat ARGS``."""
        return self.start(*SCAPROUST_CAT, *args, stdin=stdin)

    def close(self) -> None:
        for proc in self.started:
            proc.kill()


def write_tls_files(directory: Path, host: str = "localhost") -> dict[str, str]:
    """Certificates made by trustme for ``host`` (and 127.0.0.1), as PEM files in
    ``directory``: ``ca`` (the CA), ``cert`` and ``key`` (the server's, apart), ``both``
    (its key and certificate in one file), ``client`` (another of the CA's, key and
    certificate), ``stranger`` (a certificate and key from another CA). Paths by name."""
    import pytest

    trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")
    ca = trustme.CA()
    server = ca.issue_cert(host, "127.0.0.1")
    files = {name: str(directory / f"{name}.pem")
             for name in ("ca", "cert", "key", "both", "client", "stranger")}
    ca.cert_pem.write_to_path(files["ca"])
    server.cert_chain_pems[0].write_to_path(files["cert"])
    server.private_key_pem.write_to_path(files["key"])
    server.private_key_and_cert_chain_pem.write_to_path(files["both"])
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(
        files["client"])
    trustme.CA().issue_cert(host).private_key_and_cert_chain_pem.write_to_path(
        files["stranger"])
    return files
