"""Render diagrams/<machine>.dot and .svg from the same lists the runtime uses.

The DOT text is built by ``scaproust.cli.diagram.dot_source`` (``transitions``' own
``GraphMachine``, graphviz engine) from the ``states``/``transitions`` lists of
codegen/emit_python.py, so what a reviewer sees is what runs, and
``python -m scaproust diagram MACHINE`` draws the same picture from an installed package.
"""

from __future__ import annotations

from scaproust.cli.diagram import dot_source

from .emit_python import transitions_lists
from .schema import Machine


def graph_source(m: Machine) -> str:
    """The DOT text of a machine's diagram (deterministic: table order)."""
    states, transitions = transitions_lists(m)
    return dot_source(m.name, m.initial, m.unlisted, states, transitions)


def render_svg(dot_source: str) -> str:
    """Render DOT to SVG with the graphviz package (needs Debian's `dot`)."""
    import graphviz

    return graphviz.Source(dot_source).pipe(format="svg").decode()
