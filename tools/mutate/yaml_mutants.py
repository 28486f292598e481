"""Mutants of protocols.yaml, found on the composed YAML nodes so that each one rewrites
only the text it changes (the rest of the file, comments included, stays byte for byte).

For every row of every machine: remove the row; change its destination (to at most two
other states, chosen deterministically: the states just after and just before it in
declaration order, cyclically); drop each action; swap two adjacent actions; drop each
guard; negate each guard. For every state: drop each ``on_enter`` / ``on_exit`` action and
swap two adjacent ones. A machine that ``extends`` another is mutated in its own rows and
states only; the base's rows are mutated once, in the base.
"""

from __future__ import annotations

import yaml

from .mutant import SPEC, TRANSPORT, Mutant


def _flow(items: list[str]) -> str:
    return "[" + ", ".join(f"'{i}'" if i.startswith("!") else i for i in items) + "]"


def _names(node) -> list[str] | None:
    # Flow ([a, b]) or block style (one "- a" a line): a mutated list is written back flow.
    if isinstance(node, yaml.SequenceNode):
        if all(isinstance(n, yaml.ScalarNode) for n in node.value):
            return [n.value for n in node.value]
        return None
    if isinstance(node, yaml.ScalarNode):
        return [] if node.value in ("", "~", "null") else [node.value]
    return None


def _splice(text: str, start: int, end: int, new: str) -> str:
    return text[:start] + new + text[end:]


def _end(node) -> int:
    """Where a node's text ends: a block collection's end mark lies at the next token
    (past the newline and the next line's indentation), so take its last item's end."""
    while isinstance(node, yaml.SequenceNode | yaml.MappingNode) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    return node.end_mark.index


def _row_nodes(item) -> tuple:
    """A row's five nodes: ``[source, event, guards, dest, actions]``, or a row written as a
    mapping (``row: [source, event, guards, dest]`` and its ``actions:`` in block style)."""
    if isinstance(item, yaml.MappingNode):
        fields = {k.value: v for k, v in item.value}
        return (*fields["row"].value, fields["actions"])
    return tuple(item.value)


def yaml_mutants(text: str) -> list[Mutant]:
    """Every mutant of the table, in file order."""
    root = yaml.compose(text)
    top = {k.value: v for k, v in root.value}
    out: list[Mutant] = []
    machines = {k.value: v for k, v in top["machines"].value}
    for mkey, mnode in top["machines"].value:
        machine = mkey.value
        fields = {k.value: v for k, v in mnode.value}
        # A machine that extends another has the base's states, plus any it adds, and
        # only the rows it replaces or adds: the base's rows are mutated once, in the base
        # (the code of both follows from them).
        chain = [fields]
        while "extends" in chain[-1]:
            chain.append({k.value: v for k, v in machines[chain[-1]["extends"].value].value})
        states: list[str] = []
        for table in reversed(chain):  # the root's states first, then each extension's
            states += [k.value for k, _ in (table["states"].value if "states" in table else ())
                       if k.value not in states]
        cls = fields["class"].value.split(":")[0].rsplit(".", 1)[-1]
        transport = machine in TRANSPORT

        def add(line, key, what, new_text, machine=machine, cls=cls, transport=transport):
            out.append(Mutant("yaml", machine, f"{machine} | {key} | {what}", SPEC, line, what,
                              new_text, transport, cls))

        # ---- states: on_enter / on_exit drops and swaps
        for skey, snode in (fields["states"].value if "states" in fields else ()):
            if not isinstance(snode, yaml.MappingNode):
                continue
            for akey, anode in snode.value:
                if akey.value not in ("on_enter", "on_exit"):
                    continue
                names = _names(anode)
                if names is None:
                    continue
                a, b = anode.start_mark.index, anode.end_mark.index
                line = anode.start_mark.line + 1
                where = f"state {skey.value} {akey.value} {_flow(names)}"
                for i, name in enumerate(names):
                    add(line, where, f"drop {akey.value} action {name} of {skey.value}",
                        _splice(text, a, b, _flow(names[:i] + names[i + 1:])))
                for i in range(len(names) - 1):
                    swapped = names[:i] + [names[i + 1], names[i]] + names[i + 2:]
                    add(line, where, f"swap {akey.value} actions {names[i]}, {names[i + 1]} of {skey.value}",
                        _splice(text, a, b, _flow(swapped)))

        # ---- rows
        for item in (fields["rows"].value if "rows" in fields else ()):
            nodes = _row_nodes(item)
            src_node, evt_node, guard_node, dest_node, act_node = nodes
            line = item.start_mark.line + 1
            # The key names the row in its flow form, whichever way it is written.
            row_text = "[" + ", ".join(" ".join(text[n.start_mark.index:_end(n)].split()) if n is not act_node
                                       else _flow(_names(n) or []) for n in nodes) + "]"
            sources = _names(src_node) or []
            event = evt_node.value
            # remove the row: its whole line(s)
            start = text.rfind("\n", 0, item.start_mark.index) + 1
            end = text.find("\n", _end(item)) + 1
            add(line, row_text, f"remove row ({', '.join(sources)}, {event})", text[:start] + text[end:])
            # change the destination
            dest = dest_node.value
            current = dest if dest != "=" else (sources[0] if sources[0] != "*" else None)
            others = [s for s in states if s != current]
            if current is not None:
                k = states.index(current)
                after = [states[(k + j) % len(states)] for j in range(1, len(states))]
                picks = list(dict.fromkeys([after[0], after[-1]]))
            else:
                picks = others[:2]
            for new_dest in picks:
                add(line, row_text, f"dest {dest} -> {new_dest}",
                    _splice(text, dest_node.start_mark.index, dest_node.end_mark.index, new_dest))
            # actions: drop each, swap adjacent
            actions = _names(act_node) or []
            a, b = act_node.start_mark.index, _end(act_node)
            for i, name in enumerate(actions):
                add(line, row_text, f"drop action {name}",
                    _splice(text, a, b, _flow(actions[:i] + actions[i + 1:])))
            for i in range(len(actions) - 1):
                swapped = actions[:i] + [actions[i + 1], actions[i]] + actions[i + 2:]
                add(line, row_text, f"swap actions {actions[i]}, {actions[i + 1]}",
                    _splice(text, a, b, _flow(swapped)))
            # guards: drop each, negate each
            guards = _names(guard_node) or []
            a, b = guard_node.start_mark.index, guard_node.end_mark.index
            for i, name in enumerate(guards):
                add(line, row_text, f"drop guard {name}",
                    _splice(text, a, b, _flow(guards[:i] + guards[i + 1:])))
            for i, name in enumerate(guards):
                negated = name[1:] if name.startswith("!") else "!" + name
                add(line, row_text, f"negate guard {name} -> {negated}",
                    _splice(text, a, b, _flow(guards[:i] + [negated] + guards[i + 1:])))
    return out

