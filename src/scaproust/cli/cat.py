"""``scaproust-cat`` (``python -m scaproust cat``): nanocat and nngcat, in scaproust.

It opens one socket, binds and connects it, waits ``--delay``, then runs the loop of its
socket type as nanocat does (docs/CLI.md, "What each socket type does"):

- PUSH, PUB: send ``--data`` once, or every ``--interval``, or ``--count`` times;
- PULL, SUB (and REP, RESPONDENT, PAIR, BUS without data): print every message received,
  until ``--count`` messages or a receive timeout;
- REQ, SURVEYOR (and PAIR, BUS with data): send, then print what comes back until the
  receive timeout or the end of the request or survey; again every ``--interval``;
- REP, RESPONDENT with data: print each request and answer it with ``--data``.

Exit status: 0 done, 1 usage error, 2 unreadable ``--file``, 3 socket error (nanocat's),
130 after Ctrl-C, which closes the socket at once (linger 0) and prints no traceback.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO, NoReturn

import scaproust as sp
from scaproust.cli import formats
from scaproust.cli.options import Config, DataFileError, UsageError, help_text, parse

EXIT_USAGE = 1
EXIT_FILE = 2
EXIT_SOCKET = 3
EXIT_INTERRUPTED = 130
#: After its last send, a loop that only sends waits this long before closing, as nngcat
#: does: nanomsg 1.1.5 can drop a message whose connection closes right behind it (seen
#: with nanocat as the receiver, from nanocat and from us alike; docs/CLI.md).
SETTLE = 0.2

_PROTOCOLS = {
    "push": sp.Push, "pull": sp.Pull, "pub": sp.Pub, "sub": sp.Sub, "req": sp.Req,
    "rep": sp.Rep, "surveyor": sp.Surveyor, "respondent": sp.Respondent, "bus": sp.Bus,
    "pair0": sp.Pair, "pair1": sp.Pair1,
}


class _Fatal(Exception):
    """A socket error: its message is printed and the exit status is 3."""


def _fail(what: str, error: BaseException) -> NoReturn:
    # A timeout reads as nanocat's (its strerror of ETIMEDOUT), not as our message with
    # the seconds waited.
    reason = ("Connection timed out" if isinstance(error, sp.Timeout)
              else str(error) or type(error).__name__)
    raise _Fatal(f"{what}: {reason}") from error


class _Cat:
    def __init__(self, config: Config, sock: sp.Socket, out: BinaryIO,
                 err: Callable[[str], None]) -> None:
        self.config = config
        self.sock = sock
        self.out = out
        self.err = err
        self.show = formats.formatter(config.fmt, nngcat=config.compat == "nngcat")
        self.data = config.data if config.data is not None else b""

    def run(self) -> None:
        kind = self.config.socket_type
        has_data = self.config.data is not None
        if kind in ("push", "pub"):
            self.send_loop()
        elif kind in ("req", "surveyor") or (kind in ("bus", "pair0", "pair1") and has_data):
            self.send_recv_loop()
        elif kind in ("rep", "respondent") and has_data:
            self.answer_loop()
        else:
            self.recv_loop()

    def print(self, body: bytes) -> None:
        text = self.show(body)
        if text:
            self.out.write(text)
            self.out.flush()

    def send(self) -> None:
        # As nanocat: a send timeout of 0 does not wait (its EAGAIN) and is reported, the
        # loop goes on; a send that timed out is fatal ("Can't send: Connection timed
        # out", status 3; nngcat: "Send error: Timed out", status 1).
        try:
            self.sock.send(self.data)
        except sp.WouldBlock:
            self.err("Message not sent (EAGAIN)")
        except sp.Error as error:
            _fail("Can't send", error)

    def recv(self, timeout: float | None) -> bytes | None:
        """The next message, or None when no more can come (timeout, end of request)."""
        try:
            return self.sock.recv(timeout=timeout)
        except (sp.Timeout, sp.WouldBlock, sp.BadState):  # WouldBlock: a timeout of 0
            return None
        except sp.Error as error:
            _fail("Can't recv", error)

    def rounds(self, between: Callable[[float | None, bool], None]) -> None:
        """Send, then ``between(deadline, last)``: once without --interval or --count;
        every interval (the time a round took counts towards it); --count times."""
        count, interval = self.config.count, self.config.interval
        done = 0
        while True:
            start = time.monotonic()
            self.send()
            done += 1
            last = bool(count and done >= count) or (interval is None and not count)
            between(None if interval is None else start + interval, last)
            if last:
                return

    def send_loop(self) -> None:
        def wait(deadline: float | None, last: bool) -> None:
            if last:
                time.sleep(SETTLE)
            elif deadline is not None:
                _sleep_until(deadline)

        self.rounds(wait)

    def recv_loop(self) -> None:
        count = self.config.count
        received = 0
        while not count or received < count:
            body = self.recv(self.config.recv_timeout)
            if body is None:
                return
            received += 1
            self.print(body)

    def send_recv_loop(self) -> None:
        self.rounds(self.collect)

    def collect(self, deadline: float | None, last: bool = False) -> None:
        """Print what comes until ``deadline`` (then wait for it, unless this is the
        ``last`` round: it ends with its reply, as nngcat's), the receive timeout or the
        end of the request or survey."""
        while True:
            timeout = self.config.recv_timeout
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                timeout = left if timeout is None else min(left, timeout)
            body = self.recv(timeout)
            if body is None:
                if deadline is not None and not last:
                    _sleep_until(deadline)
                return
            self.print(body)

    def answer_loop(self) -> None:
        count = self.config.count
        answered = 0
        while not count or answered < count:
            try:
                body = self.sock.recv()
            except sp.Error as error:  # a timeout too, as nanocat
                _fail("Can't recv", error)
            self.print(body)
            self.send()
            answered += 1
        time.sleep(SETTLE)


#: The longest single sleep: one of --delay 1e10 or --interval 1e10 raised OverflowError.
_LONGEST_SLEEP = 86400.0


def _sleep_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, _LONGEST_SLEEP))


#: One PEM block holding a private key (``PRIVATE KEY``, ``RSA PRIVATE KEY``, ``EC ...``).
_PEM_KEY = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----\n?",
                      re.S)


def tls_config(config: Config) -> sp.TLSConfig:
    """The TLS of the tls+tcp:// and wss:// endpoints, from nngcat's options: --cacert
    trusts its CAs, --cert (with its key, in the same file or from --key) is this side's
    certificate, --insecure checks no peer certificate (nngcat's auth mode "none").
    ValueError when --cert holds no key and --key is not given."""
    cert, key = config.tls_cert, config.tls_key
    if cert is not None and key is None:  # nngcat: the key is in the certificate's file
        key = "".join(block[0] for block in _PEM_KEY.finditer(cert))
        if not key:
            raise ValueError("the file of --cert holds no private key: give --key FILE")
        cert = _PEM_KEY.sub("", cert)
    return sp.TLSConfig(ca_string=config.tls_ca, own_cert_string=cert, own_key_string=key,
                        auth_mode="none" if config.tls_insecure else None)


def _open(config: Config, session: sp.Session, err: Callable[[str], None]) -> sp.Socket:
    options: dict[str, Any] = {"send_timeout": config.send_timeout,
                                  "recv_timeout": config.recv_timeout}
    if config.uses_tls:
        try:
            options["tls"] = tls_config(config)
        except ValueError as error:
            _fail("Can't configure TLS", error)
    if config.recv_max_size is not None:
        options["recv_max_size"] = config.recv_max_size
    if config.socket_name is not None:
        options["socket_name"] = config.socket_name
    try:
        sock = session.socket(_PROTOCOLS[config.socket_type], **options)
    except (sp.Error, ValueError, TypeError) as error:
        _fail("Can't create socket", error)
    if config.socket_type == "sub":
        for topic in config.subscriptions or [b""]:
            try:
                sock.subscribe(topic)
            except sp.Error as error:
                _fail("Can't subscribe", error)
    for how, url in config.endpoints:
        try:
            endpoint = sock.bind(url) if how == "bind" else sock.connect(url)
        except (sp.Error, OSError, ValueError) as error:
            _fail(f"Can't {how}", error)
        if config.verbose > 0:
            err(("Listening at: " if how == "bind" else "Connected to: ") + endpoint.url)
    return sock


def run(config: Config, out: BinaryIO, err: Callable[[str], None]) -> int:
    """Runs the socket ``config`` describes; returns the exit status."""
    session = sp.Session()
    sock: sp.Socket | None = None
    interrupted = False
    try:
        sock = _open(config, session, err)
        if config.delay:
            _sleep_until(time.monotonic() + config.delay)
        _Cat(config, sock, out, err).run()
        return 0
    except _Fatal as error:
        err(str(error))
        return EXIT_SOCKET
    except KeyboardInterrupt:
        interrupted = True
        if sock is not None and not sock.closed:  # a closed socket takes no option
            sock.linger = 0.0  # the user wants out: drop what is queued
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # whoever read our output went away: nothing more to do
        if sock is not None and not sock.closed:
            sock.linger = 0.0
        # What is left in the buffer can never be written: send it nowhere, so that the
        # interpreter's flush at exit does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
        return 0
    finally:
        _close(session, interrupted)


def _close(session: sp.Session, interrupted: bool) -> None:
    """Close the session; after a Ctrl-C with a second one ignored meanwhile (a second
    press, or the process group's copy of the first, as ``timeout -s INT`` sends): it
    raised out of the close, a traceback where docs/CLI.md promises none."""
    if not interrupted or threading.current_thread() is not threading.main_thread():
        session.close()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        session.close()
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: list[str] | None = None, prog: str = "scaproust-cat") -> int:
    """The command; returns its exit status (``argv`` without the program name)."""
    args = sys.argv[1:] if argv is None else argv

    def err(message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    try:
        config = parse(args)
    except UsageError as error:
        err(f"{prog}: {error}")
        return EXIT_USAGE
    except DataFileError as error:
        err(str(error))
        return EXIT_FILE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if config.help:
        sys.stdout.write(help_text(prog))
        sys.stdout.flush()
        return EXIT_USAGE if config.compat == "nngcat" else 0  # nngcat's help exits 1
    if config.version:
        sys.stdout.write(f"{sp.__version__}\n")
        return 0
    _library_log(config.verbose)
    return run(config, sys.stdout.buffer, err)


class _LibraryLog(logging.StreamHandler):  # type: ignore[type-arg]
    """Where the library's own warnings go with -v: standard error, as they are."""


def _library_log(verbose: int) -> None:
    """The library's warnings (a pipe refused or closed, a TLS handshake that failed) go
    to standard error with -v only. Without a handler, Python's last resort printed them
    always, where nanocat and nngcat print nothing of the kind, even with -q."""
    logger = logging.getLogger("scaproust")
    for handler in [h for h in logger.handlers if isinstance(h, _LibraryLog)]:
        logger.removeHandler(handler)  # main() run again in one process (the tests)
    handler = _LibraryLog(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING if verbose > 0 else logging.CRITICAL + 1)
    logger.addHandler(handler)


def console() -> NoReturn:
    """Entry point of the ``scaproust-cat`` console script."""
    sys.exit(main())
