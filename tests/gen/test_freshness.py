"""Generated code and diagrams on disk are exactly what protocols.yaml generates now."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codegen.generate import generate_all

ROOT = Path(__file__).resolve().parents[2]
HAVE_DOT = shutil.which("dot") is not None


def test_generated_python_and_dot_files_match_a_fresh_generation():
    files = generate_all(ROOT, svg=False)
    stale = [rel for rel, text in files.items() if (ROOT / rel).read_text() != text]
    assert stale == [], f"stale generated files (run `make regen`): {stale}"


@pytest.mark.skipif(not HAVE_DOT, reason="graphviz `dot` is not installed (make test installs it)")
def test_rendered_svg_diagrams_match_a_fresh_generation():
    files = generate_all(ROOT, svg=True)
    svgs = {rel: text for rel, text in files.items() if rel.endswith(".svg")}
    stale = [rel for rel, text in svgs.items() if (ROOT / rel).read_text() != text]
    assert stale == []


def test_every_machine_has_a_dot_and_an_svg_diagram():
    from scaproust._generated import MACHINES

    for name in MACHINES:
        assert (ROOT / "diagrams" / f"{name}.dot").is_file()
        assert (ROOT / "diagrams" / f"{name}.svg").is_file()


def test_generation_is_deterministic():
    assert generate_all(ROOT, svg=False) == generate_all(ROOT, svg=False)
