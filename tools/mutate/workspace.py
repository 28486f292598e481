"""The copies of the repository the mutants run in: a pristine snapshot of the working
tree, one private copy per worker (a mutant is written into it, then the files are put
back), and the real code generator run on the snapshot with a mutated table."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from .mutant import GENERATED, ROOT, SPEC

#: Modification times given to mutated files: each unique, and far from any real one. Python
#: trusts a cached .pyc whose recorded source mtime (whole seconds) and size match, and a
#: mutant often has the original's size and is written within the same second; a fresh
#: fake mtime for every write makes every stale .pyc miss, while the unmutated modules keep
#: their caches (compiling the whole package for every mutant would cost more).
_FAKE_MTIMES = itertools.count(3_000_000_000)
_FAKE_LOCK = threading.Lock()


class Workspace:
    """A private copy of the repository for one worker; restores files after each mutant."""

    def __init__(self, base: Path, dest: Path):
        shutil.copytree(base, dest, symlinks=True)
        self.root = dest
        self._saved: dict[str, tuple[bytes, int] | None] = {}

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        if rel not in self._saved:
            self._saved[rel] = (path.read_bytes(), path.stat().st_mtime_ns) if path.exists() else None
        path.write_text(text)
        with _FAKE_LOCK:
            fake = next(_FAKE_MTIMES) * 1_000_000_000
        os.utime(path, ns=(fake, fake))

    def restore(self) -> None:
        for rel, saved in self._saved.items():
            path = self.root / rel
            if saved is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(saved[0])
                os.utime(path, ns=(saved[1], saved[1]))
        self._saved.clear()
        shutil.rmtree(self.root / ".hypothesis", ignore_errors=True)


def snapshot(dest: Path) -> None:
    """Copy the working tree (tracked and untracked-not-ignored files) to ``dest``."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout
    for rel in sorted(set(listed.decode().split("\0")) - {""}):
        src = ROOT / rel
        if not src.is_file() or "__pycache__" in src.parts:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


class Generator:
    """The real codegen, run on the pristine snapshot with a mutated table."""

    def __init__(self, base: Path):
        sys.path.insert(0, str(base))
        from codegen.generate import generate_all
        from codegen.schema import SpecError

        self.base, self._generate, self.SpecError = base, generate_all, SpecError
        self.lock = threading.Lock()
        self.original = self.python_files((base / SPEC).read_text())

    def python_files(self, text: str) -> dict[str, str]:
        with self.lock:  # the generator is not meant to be re-entrant
            files = self._generate(self.base, svg=False, source=text)
        return {k: v for k, v in files.items() if k.startswith(GENERATED)}

    def changes(self, text: str) -> dict[str, str]:
        files = self.python_files(text)
        return {k: v for k, v in files.items() if self.original.get(k) != v}
