"""docs/DEVELOPING.md, "Adding a protocol", followed word for word: its three snippets are
taken from the document itself and applied to a temporary copy of the repository, the code
is generated there, and two sockets of the new protocol talk over TCP while a PAIR may not
pair with them. So the walk-through cannot drift from what adding a protocol really takes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def walkthrough_snippets() -> list[str]:
    text = (ROOT / "docs" / "DEVELOPING.md").read_text()
    section = text.split("## Adding a protocol", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:yaml|python)\n(.*?)```", section, flags=re.S)
    return [textwrap.dedent(block) for block in blocks]


def copy_of_the_repository(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("src", "codegen", "diagrams"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy(ROOT / "protocols.yaml", dest / "protocols.yaml")
    return dest


def test_the_walkthrough_adds_a_protocol_that_works(tmp_path):
    table, module, declaration = walkthrough_snippets()
    repo = copy_of_the_repository(tmp_path)

    # 1. its table, at the end of machines: (one level in)
    with open(repo / "protocols.yaml", "a") as spec:
        spec.write("\n" + textwrap.indent(table, "  "))
    # 2. its module
    (repo / "src/scaproust/protocols/mirror.py").write_text(module)
    # 3. its declaration, under its public name, then that name in ALL and __all__
    names = repo / "src/scaproust/protocols/__init__.py"
    text = names.read_text()
    text = text.replace("\nALL = (", declaration + "\nALL = (", 1)
    text = re.sub(r"(ALL = \([^)]*)\)", r"\1, Mirror)", text, count=1)
    text = re.sub(r"(__all__ = \[[^\]]*)\]", r'\1, "Mirror"]', text, count=1)
    names.write_text(text)

    generated = subprocess.run([sys.executable, "-m", "codegen", "--no-svg"], cwd=repo,
                               capture_output=True, text=True, timeout=120)
    assert generated.returncode == 0, generated.stdout + generated.stderr
    assert (repo / "src/scaproust/_generated/mirror.py").is_file()

    script = textwrap.dedent("""
        import scaproust as sp
        assert "Mirror" in sp.__all__ and sp.Mirror.peer() is sp.Mirror
        with sp.Session() as session:
            a = session.socket(sp.Mirror, recv_timeout=5, send_timeout=5)
            b = session.socket(sp.Mirror, recv_timeout=5, send_timeout=5)
            url = a.bind("tcp://127.0.0.1:0").url
            b.connect(url)
            b.send(b"ping")
            assert a.recv() == b"ping"
            a.send(b"pong")
            assert b.recv() == b"pong"
            pair = session.socket(sp.Pair, reconnect_interval=0.01)
            pair.connect(url)
            deadline = __import__("time").monotonic() + 5
            while a.stats.get("dropped_malformed", 0) == 0:  # the header names PAIR
                assert __import__("time").monotonic() < deadline, "PAIR was not refused"
                __import__("time").sleep(0.01)
        print("mirror ok")
    """)
    ran = subprocess.run([sys.executable, "-c", script], cwd=repo, capture_output=True,
                         text=True, timeout=60, env={"PYTHONPATH": str(repo / "src"),
                                                     "PATH": "/usr/bin:/bin"})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "mirror ok"
