"""Generate every file from protocols.yaml, in memory (the CLI and a test write or compare)."""

from __future__ import annotations

from pathlib import Path

from . import emit_diagrams, emit_python
from .schema import load


def generate_all(root: Path, *, svg: bool = True, source: str | None = None) -> dict[str, str]:
    """Map each generated file's path (relative to root) to its content."""
    spec = load(root / "protocols.yaml", source=source, src_root=root / "src")
    files: dict[str, str] = {}
    machines = list(spec.machines.values())
    files["src/scaproust/_generated/__init__.py"] = emit_python.render_init(machines)
    for m in machines:
        files[f"src/scaproust/_generated/{m.name}.py"] = emit_python.render(m)
        files[f"src/scaproust/_generated/{m.name}_reference.py"] = emit_python.render_reference(m)
        dot = emit_diagrams.graph_source(m)
        files[f"diagrams/{m.name}.dot"] = dot
        if svg:
            files[f"diagrams/{m.name}.svg"] = emit_diagrams.render_svg(dot)
    files["diagrams/README.md"] = emit_diagrams.readme(machines)
    return files
