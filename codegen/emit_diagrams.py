"""Render diagrams/<machine>.dot and .svg from the same lists the runtime uses.

The diagram is drawn by ``transitions``' own ``GraphMachine`` (graphviz engine) from the
``states``/``transitions`` lists of codegen/emit_python.py, so what a reviewer sees is what
runs. Edges are labelled ``event [guard & !guard] / action, action``; internal transitions
are drawn as self-loops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from transitions.extensions import GraphMachine
from transitions.extensions.diagrams_graphviz import Graph

from .emit_python import transitions_lists
from .schema import Machine

if TYPE_CHECKING:
    from transitions.extensions.diagrams_base import BaseGraph


class _Model:
    """GraphMachine draws a model's graph; this one exists only to be drawn."""

    #: Set on the model by GraphMachine; returns graphviz's Digraph (no type stubs: Any).
    get_graph: Callable[[], Any]


class _OneRowPerLineGraph(Graph):
    """transitions joins the labels of parallel edges with " | " on one line; a state with
    many self-loops then gets a label wider than the page. Put each row on its own
    left-aligned line instead."""

    # container: graphviz's Digraph or a subgraph of it (graphviz has no type stubs).
    def _add_edges(self, transitions: list[dict[str, str]], container: Any) -> None:
        labels: dict[tuple[str, str], list[str]] = {}
        for trans in transitions:
            key = (trans["source"], trans.get("dest", trans["source"]))
            labels.setdefault(key, []).append(self._transition_label(trans))
        for (src, dst), rows in labels.items():
            container.edge(src, dst, label="".join(row + r"\l" for row in rows))


class _Drawer(GraphMachine):
    def _init_graphviz_engine(self, graph_engine: str) -> type[BaseGraph]:
        return _OneRowPerLineGraph


def edge_label(trans: dict[str, Any]) -> str:
    label: str = trans["trigger"]
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
    machine = _Drawer(
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
    # Top to bottom reads like the lifecycle it is; left to right grows too wide.
    machine.machine_attributes = dict(machine.machine_attributes, rankdir="TB")
    source: str = model.get_graph().source
    return source


def render_svg(dot_source: str) -> str:
    """Render DOT to SVG with the graphviz package (needs Debian's `dot`)."""
    import graphviz

    svg: str = graphviz.Source(dot_source).pipe(format="svg").decode()
    return svg
