"""Render diagrams/<machine>.dot and .svg from the same lists the runtime uses.

The diagram is drawn by ``transitions``' own ``GraphMachine`` (graphviz engine) from the
``states``/``transitions`` lists of codegen/emit_python.py, so what a reviewer sees is what
runs. Edges are labelled ``event [guard & !guard] / action, action``; internal transitions
are drawn as self-loops.
"""

from __future__ import annotations

from transitions.extensions import GraphMachine

from .emit_python import transitions_lists
from .schema import Machine


class _Model:
    """GraphMachine draws a model's graph; this one exists only to be drawn."""


def edge_label(trans: dict) -> str:
    label = trans["trigger"]
    guards = list(trans.get("conditions", [])) + ["!" + u for u in trans.get("unless", [])]
    if guards:
        label += " [" + " & ".join(guards) + "]"
    if trans.get("after"):
        label += " / " + ", ".join(trans["after"])
    return label


def graph_source(m: Machine) -> str:
    """The DOT text of a machine's diagram (deterministic: table order)."""
    states, transitions = transitions_lists(m)
    drawn = []
    for trans in transitions:
        trans = dict(trans, label=edge_label(trans))
        if trans["dest"] is None:
            trans["dest"] = trans["source"]
        drawn.append(trans)
    model = _Model()
    GraphMachine(
        model=model,
        states=states,
        transitions=drawn,
        initial=m.initial,
        auto_transitions=False,
        show_conditions=False,
        show_state_attributes=True,
        graph_engine="graphviz",
        title=f"{m.name} ({m.unlisted} on unlisted events)",
    )
    return model.get_graph().source


def render_svg(dot_source: str) -> str:
    """Render DOT to SVG with the graphviz package (needs Debian's `dot`)."""
    import graphviz

    return graphviz.Source(dot_source).pipe(format="svg").decode()
