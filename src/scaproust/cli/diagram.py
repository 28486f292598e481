"""``python -m scaproust diagram MACHINE [--png|--svg|--dot] [-o FILE]``: one machine's
diagram, drawn from the tables the installed package runs.

The DOT text is built here, from a machine's ``STATES`` and ``TRANSITIONS`` lists (those of
its ``_generated/<machine>_reference.py``, which codegen writes from protocols.yaml), by
``transitions``' own ``GraphMachine``; codegen/emit_diagrams.py calls ``dot_source`` too, so
``diagrams/<machine>.dot`` and this command draw the same picture
(*tests/cli/test_diagram.py::test_the_command_draws_what_make_diagrams_draws*). Edges are
labelled ``event [guard & !guard] / action, action``; internal transitions are rows of a
table inside their state.
Building the DOT needs the ``graphviz`` Python package (``pip install scaproust[diagram]``),
rendering it Graphviz's ``dot`` program (Debian's ``graphviz``).
"""

from __future__ import annotations

import argparse
import html
import importlib
import pkgutil
import shutil
import subprocess
import sys
from typing import Any

#: The package whose ``<machine>_reference`` modules hold every machine's lists.
GENERATED = "scaproust._generated"


def dot_source(name: str, initial: str, unlisted: str, states: list[dict[str, Any]],
               transitions: list[dict[str, Any]]) -> str:
    """The DOT text of a machine's diagram (deterministic: table order).

    Internal transitions (the table's rows whose source is their destination: no exit, no
    entry) are written as a table inside their state, one row per line, under its name and
    its entry and exit actions; every other transition is an edge, its rows one per line.
    """
    from transitions.extensions import GraphMachine
    from transitions.extensions.diagrams_graphviz import Graph

    loops: dict[str, list[str]] = {}
    edges = []
    for trans in transitions:
        if trans["dest"] is None:
            loops.setdefault(trans["source"], []).append(edge_label(trans))
        else:
            edges.append(dict(trans, label=edge_label(trans)))

    class ReadableGraph(Graph):
        """transitions joins the labels of parallel edges with " | " on one line and draws
        internal transitions as loops; a busy state then drowns in loop labels."""

        def _add_nodes(self, states: list[dict[str, Any]], container: Any) -> None:
            styles: dict[str, Any] = self.machine.style_attributes.get("node", {})  # type: ignore[assignment]
            for state in states:
                style: str = self.custom_styles["node"][state["name"]]  # type: ignore[assignment]
                container.node(state["name"], label=state_label(state, loops),
                               **styles.get(style, {}))

        def _add_edges(self, transitions: list[dict[str, Any]], container: Any) -> None:
            labels: dict[tuple[str, str], list[str]] = {}
            for trans in transitions:
                key = (trans["source"], trans.get("dest", trans["source"]))
                labels.setdefault(key, []).append(self._transition_label(trans))
            for (src, dst), rows in labels.items():
                container.edge(src, dst, label="".join(row + r"\l" for row in rows))

    class Drawer(GraphMachine):
        def _init_graphviz_engine(self, graph_engine: str) -> type[Graph]:
            return ReadableGraph

    class Model:
        """GraphMachine draws a model's graph; this one exists only to be drawn."""

    model = Model()
    machine = Drawer(model=model, states=states, transitions=edges, initial=initial,
                     auto_transitions=False, show_conditions=False,
                     show_state_attributes=True, graph_engine="graphviz",
                     title=f"{name} ({unlisted} on unlisted events)")
    # Top to bottom reads like the lifecycle it is; left to right grows too wide.
    machine.machine_attributes = dict(machine.machine_attributes, rankdir="TB")
    source: str = model.get_graph().source  # type: ignore[attr-defined]
    return source


def state_label(state: dict[str, Any], loops: dict[str, list[str]]) -> str:
    """A state as a Graphviz HTML-like label: its name in bold, its entry and exit actions,
    then a line and its internal transitions, one per row."""

    def row(text: str, font: str = "") -> str:
        text = html.escape(text, quote=False)
        if font:
            text = f"<{font}>{text}</{font}>"
        return f'<TR><TD ALIGN="LEFT">{text}</TD></TR>'

    rows = [row(state["name"], "B")]
    for key, word in (("on_enter", "enter"), ("on_exit", "exit")):
        if state.get(key):
            rows.append(row(f"{word}: {', '.join(state[key])}", "I"))
    internal = loops.get(state["name"], [])
    if internal:
        rows.append("<HR/>")
        rows += [row(label) for label in internal]
    return ('<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">'
            + "".join(rows) + "</TABLE>>")


def edge_label(trans: dict[str, Any]) -> str:
    label: str = trans["trigger"]
    guards = list(trans.get("conditions", [])) + ["!" + u for u in trans.get("unless", [])]
    if guards:
        label += " [" + " & ".join(guards) + "]"
    if trans.get("after"):
        label += " / " + ", ".join(trans["after"])
    return label


def machines() -> list[str]:
    """Every machine of the installed package, by name."""
    package = importlib.import_module(GENERATED)
    return sorted(info.name.removesuffix("_reference")
                  for info in pkgutil.iter_modules(package.__path__)
                  if info.name.endswith("_reference"))


def machine_dot(machine: str) -> str:
    """The DOT text of the named machine, from its reference module."""
    if machine not in machines():
        raise LookupError(f"no machine {machine!r}; the machines are: {', '.join(machines())}")
    ref = importlib.import_module(f"{GENERATED}.{machine}_reference")
    return dot_source(ref.NAME, ref.INITIAL, ref.UNLISTED, ref.STATES, ref.TRANSITIONS)


def render(dot: str, fmt: str) -> bytes:
    """``dot`` rendered by Graphviz's ``dot`` program to ``fmt`` (png, svg)."""
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError("Graphviz's `dot` program is needed (Debian: apt-get install "
                           "graphviz)")
    done = subprocess.run([program, f"-T{fmt}"], input=dot.encode(), capture_output=True,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def main(argv: list[str], prog: str = "python -m scaproust diagram") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Draw one machine of "
                                     "protocols.yaml, as the installed package runs it.")
    parser.add_argument("machine", help="its name (e.g. req, pipe); `list` lists them")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--png", dest="fmt", action="store_const", const="png",
                      help="PNG (the default)")
    kind.add_argument("--svg", dest="fmt", action="store_const", const="svg", help="SVG")
    kind.add_argument("--dot", dest="fmt", action="store_const", const="dot",
                      help="the DOT source")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="where to write it (default: MACHINE.png, .svg or .dot; "
                             "- for standard output)")
    args = parser.parse_args(argv)
    if args.machine == "list":
        print("\n".join(machines()))
        return 0
    fmt = args.fmt or "png"
    try:
        dot = machine_dot(args.machine)
        data = dot.encode() if fmt == "dot" else render(dot, fmt)
    except ImportError as error:
        print(f"{prog}: the graphviz Python package is needed (pip install "
              f"'scaproust[diagram]'): {error}", file=sys.stderr)
        return 1
    except (LookupError, RuntimeError) as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    output = args.output or f"{args.machine}.{fmt}"
    if output == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        with open(output, "wb") as file:
            file.write(data)
        print(f"wrote {output}", file=sys.stderr)
    return 0
