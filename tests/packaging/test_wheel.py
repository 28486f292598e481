"""The package as users get it: a wheel built by ``python -m build``, installed in a fresh
virtual environment with its declared dependencies only.

The wheel test is slow (a build environment and a virtual environment, packages from the
index): it is one test. It runs in CI (``make test``) like every other.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "scaproust"

#: What a source tree holds that a build must not see (caches, environments, outputs).
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                     "__pycache__", ".pytest_cache", ".hypothesis",
                                     ".ruff_cache", ".mypy_cache", "bench")


def test_nothing_in_the_library_imports_yaml():
    # PyYAML is codegen's (a dev dependency): the installed library must not need it.
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for name in names
                      if name.split(".")[0] == "yaml"]
    assert not found


def _run(*argv: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_a_built_wheel_installs_and_runs_in_a_fresh_environment(tmp_path):
    # Built from a copy, so that the build's own files (egg-info, build/) stay out of the tree.
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=_NOT_SOURCE)
    _run(sys.executable, "-m", "build", "--wheel", "--outdir", tmp_path / "dist", tree,
         cwd=tmp_path)
    [wheel] = (tmp_path / "dist").glob("scaproust-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = Parser().parsestr(archive.read(
            next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
        entry_points = archive.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    generated = {n for n in names if n.startswith("scaproust/_generated/")}
    for machine in ("pipe", "req", "pair1_raw"):
        assert f"scaproust/_generated/{machine}.py" in generated
        assert f"scaproust/_generated/{machine}_reference.py" in generated
    assert "scaproust/py.typed" in names and "scaproust/cli/cat.py" in names
    assert not [n for n in names if n.startswith(("tests/", "codegen/", "bench/", "tools/"))
                or "/tests/" in n or Path(n).name.startswith("test_")]
    import scaproust

    assert metadata["Version"] == scaproust.__version__
    assert metadata["License-Expression"] == "MIT"
    runtime = sorted(r.split(">")[0].split("<")[0].strip()
                     for r in metadata.get_all("Requires-Dist") if "extra ==" not in r)
    assert runtime == ["attrs", "transitions"]
    assert "scaproust-cat = scaproust.cli.cat:console" in entry_points

    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    python, bin_ = env / "bin" / "python", env / "bin"
    _run(python, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    # Run from an empty directory: nothing of the source tree is importable from there.
    where = _run(python, "-c", "import scaproust; print(scaproust.__file__, "
                 "scaproust.__version__)", cwd=tmp_path)
    assert str(env) in where and scaproust.__version__ in where
    assert _run(python, "-c", "import importlib.util as u; print(u.find_spec('yaml'))",
                cwd=tmp_path).strip() == "None"  # it runs without PyYAML
    _run(python, "-c", "import scaproust as sp\n"
         "with sp.Session() as s:\n"
         "    pull = s.socket(sp.Pull, recv_timeout=5)\n"
         "    push = s.socket(sp.Push, send_timeout=5)\n"
         "    push.connect(pull.bind('tcp://127.0.0.1:0').url)\n"
         "    push.send(b'installed')\n"
         "    assert pull.recv() == b'installed'\n", cwd=tmp_path)
    help_ = _run(bin_ / "scaproust-cat", "--help", cwd=tmp_path)
    assert help_.startswith("Usage:\n    scaproust-cat ")
