"""Fixtures for the interop tests: real peers and a scaproust session.

A peer that is missing skips its tests on a developer's machine, with the reason and the
package to install; with the environment variable CI set it fails them instead, because CI
must never pass by skipping interop.
"""

from __future__ import annotations

import importlib
import os
import shutil

import pytest

from . import _isolated, _peers


def _missing(what: str, remedy: str):
    message = f"{what} is not available ({remedy})"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{message}; CI must run every interop test", pytrace=False)
    pytest.skip(message)


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        _missing(name, f"apt-get install {package}")
    return path


@pytest.fixture(scope="session")
def nngcat() -> str:
    """Path of nngcat (nng 1.5.2 on Debian 12)."""
    return _binary("nngcat", "nng-utils")


@pytest.fixture(scope="session")
def nanocat() -> str:
    """Path of nanocat (nanomsg 1.1.5 on Debian 12)."""
    return _binary("nanocat", "nanomsg-utils")


@pytest.fixture(scope="session")
def pynng():
    """The pynng module (nng 1.11)."""
    try:
        return importlib.import_module("pynng")
    except ImportError as error:
        _missing("pynng", f"pip install pynng: {error}")


@pytest.fixture
def pynng_child(pynng):
    """pynng sockets in a child process (``_isolated.PynngChild``), for the tests where nng
    can abort (its WebSocket teardown): the abort ends the child, not the pytest run."""
    with _isolated.PynngChild(pynng) as child:
        yield child


@pytest.fixture
def their(request, tmp_path):
    """Starts peers of the implementation named by the test's ``their`` parameter.

    Use with ``@pytest.mark.parametrize("their", PEER_KINDS, indirect=True)``.
    """
    kind = request.param
    peers = _peers.Peers(kind, request.getfixturevalue(kind), tmp_path)
    yield peers
    peers.close()


@pytest.fixture
def session():
    """A scaproust session, closed (with every socket in it) after the test."""
    import scaproust as sp

    with sp.Session() as session:
        yield session


@pytest.fixture
def link(session, their, tmp_path, transport, side):
    """Joins one of our sockets to one of theirs, over the test's transport, ``side`` listening.

    ``link(our_kind, their_proto, **peer_args)`` returns ``(ours, theirs, url of the
    listener)``; see ``_peers.link``.
    """

    def join(our_kind, their_proto, **peer_args):
        return _peers.link(
            session, their, tmp_path, transport, side, our_kind, their_proto, **peer_args
        )

    return join
