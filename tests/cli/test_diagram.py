"""``python -m scaproust diagram MACHINE`` and ``python -m scaproust --version``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import scaproust
from scaproust.cli.diagram import machine_dot, machines

ROOT = Path(__file__).resolve().parents[2]
MODULE = [sys.executable, "-m", "scaproust"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*MODULE, *args], capture_output=True, timeout=60, cwd=cwd,
                          check=False)


def test_the_command_draws_what_make_diagrams_draws():
    names = machines()
    assert names == sorted(p.stem for p in (ROOT / "diagrams").glob("*.dot"))
    for name in names:
        assert machine_dot(name) == (ROOT / "diagrams" / f"{name}.dot").read_text(), name


@pytest.mark.parametrize("flag, magic", [("--png", b"\x89PNG\r\n\x1a\n"), ("--svg", b"<?xml"),
                                         ("--dot", b"digraph")])
def test_it_writes_the_format_asked_for(tmp_path, flag, magic):
    out = tmp_path / "drawn"
    done = _run("diagram", "req", flag, "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith(magic)
    if flag == "--svg":
        assert b"sent" in out.read_bytes() and b"stop_resend_timer" in out.read_bytes()


def test_png_to_the_machine_name_by_default(tmp_path):
    done = _run("diagram", "pipe", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "pipe.png").read_bytes().startswith(b"\x89PNG")


def test_an_unknown_machine_is_named_with_the_known_ones():
    done = _run("diagram", "nosuch")
    assert done.returncode == 1
    assert b"no machine 'nosuch'; the machines are: bus, bus_raw," in done.stderr


def test_version():
    done = _run("--version")
    assert (done.returncode, done.stdout) == (0, f"{scaproust.__version__}\n".encode())
