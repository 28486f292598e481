"""The diagrams a reviewer reads: internal transitions as a table inside their state, and
the page of all machines (diagrams/README.md): each grouped with its doc, its picture and
what it replaces."""

from __future__ import annotations

import re
from pathlib import Path

from scaproust.cli.diagram import machine_dot, machines

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "diagrams" / "README.md").read_text()


def test_internal_transitions_are_rows_inside_their_state_not_loops():
    dot = machine_dot("req")
    assert not re.search(r"^\s*(\w+) -> \1 ", dot, re.M), "a self-loop edge is left"
    sent = next(line for line in dot.splitlines() if line.strip().startswith("sent ["))
    assert "<B>sent</B>" in sent and "<I>exit: stop_resend_timer</I>" in sent
    assert ("evt_pipe_removed [is_carrier &amp; other_pipe_has_room] / remove_pipe, "
            "resend_request, reroute_contexts, grant_capacity") in sent
    # A transition that leaves the state is still an edge.
    assert re.search(r"^\s*sent -> waiting \[label=\"evt_pipe_removed \[is_carrier\]", dot,
                     re.M)


def test_the_readme_shows_every_machine_once_with_its_picture():
    for name in machines():
        assert README.count(f"![{name}]({name}.svg)") == 1, name
    transport = README.index("## Transport level")
    protocols = README.index("## Protocols")
    for name in ("pipe", "listener", "dialer", "socket"):
        assert transport < README.index(f"### {name}") < protocols
    # Raw beside cooked: one table row holds both pictures.
    assert "| ![req](req.svg) | ![req_raw](req_raw.svg) |" in README


def test_the_readme_lists_the_rows_an_extending_machine_replaces():
    assert ("| open | cmd_send | `cmd_send (internal) / send_to_all_but_sender` | "
            "`cmd_send (internal) / send_to_all` |") in README
    assert "`rep` is `rep_raw`'s table row for row: it replaces none" in README
