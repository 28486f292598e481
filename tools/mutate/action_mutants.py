"""Mutants of the hand-written actions and guards, made with ``ast`` one site at a time,
inside function bodies only: comparison swaps (``==``/``!=``, ``<``/``<=``, ``>``/``>=``,
``in``/``not in``, ``is``/``is not``), negated ``if`` and conditional-expression tests,
integer constants (n -> n+1, n -> 0), ``True``/``False``, ``and``/``or``, and removal of a
statement that is a call. Logging calls (``log.*``) and everything in them, and
``__repr__``, are left alone: log wording is not behaviour the tables promise. Only the
mutated expression (or statement) is rewritten, so the diff shows exactly the mutation.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
from collections import Counter
from pathlib import Path

from .mutant import TRANSPORT, Mutant

#: Hand-written modules whose functions are mutated (relative to the repository root).
ACTION_GLOBS = ("src/scaproust/protocols/*.py",)
ACTION_FILES = ("src/scaproust/core/pipe.py", "src/scaproust/core/dialer.py",
                "src/scaproust/core/listener.py")


_SWAPS = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt,
          ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.In: ast.NotIn, ast.NotIn: ast.In,
          ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_OP_TEXT = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
            ast.GtE: ">=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not"}


def _is_log_call(node) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id in ("log", "logging", "logger"))


@dataclasses.dataclass
class _Site:
    index: int  # position of the node in ast.walk order
    kind: str  # compare, negate, const, boolop, remove
    arg: object  # op index, new constant...
    func: str
    what: str


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sites(tree: ast.Module, source: str) -> list[_Site]:
    order = {id(n): i for i, n in enumerate(ast.walk(tree))}
    sites: list[_Site] = []

    def seg(node) -> str:
        return ast.get_source_segment(source, node) or ast.unparse(node)

    def visit(node, qual: list[str], in_func: bool) -> None:
        if _is_log_call(node):
            return
        if isinstance(node, ast.ClassDef):
            for child in node.body:
                visit(child, qual + [node.name], in_func)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.name == "__repr__":
                return
            for child in node.body:  # the body only: not defaults, decorators, annotations
                visit(child, qual + [node.name], True)
            return
        func = ".".join(qual) or "<module>"
        if in_func:
            i = order[id(node)]
            if isinstance(node, ast.Compare):
                for k, op in enumerate(node.ops):
                    new = _SWAPS.get(type(op))
                    if new:
                        sites.append(_Site(i, "compare", k, func,
                                           f"'{_OP_TEXT[type(op)]}' -> '{_OP_TEXT[new]}' in `{_short(seg(node))}`"))
            elif isinstance(node, ast.If | ast.IfExp):
                sites.append(_Site(i, "negate", None, func, f"negate the condition `{_short(seg(node.test))}`"))
            elif isinstance(node, ast.Constant) and type(node.value) in (int, bool):
                if type(node.value) is bool:
                    sites.append(_Site(i, "const", not node.value, func,
                                       f"{node.value} -> {not node.value} in `{_short(seg(parent_of[id(node)]))}`"))
                else:
                    for new in dict.fromkeys([node.value + 1, 0]):
                        if new != node.value:
                            sites.append(_Site(i, "const", new, func,
                                               f"{seg(node)} -> {new} in `{_short(seg(parent_of[id(node)]))}`"))
            elif isinstance(node, ast.BoolOp):
                new = "or" if isinstance(node.op, ast.And) else "and"
                old = "and" if new == "or" else "or"
                sites.append(_Site(i, "boolop", None, func, f"'{old}' -> '{new}' in `{_short(seg(node))}`"))
            elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and not _is_log_call(node.value):
                sites.append(_Site(i, "remove", None, func, f"remove the call `{_short(seg(node))}`"))
        for child in ast.iter_child_nodes(node):
            visit(child, qual, in_func)

    parent_of = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parent_of[id(child)] = parent
    for node in tree.body:
        visit(node, [], False)
    return sites


def _apply(tree: ast.Module, site: _Site):
    """Mutate a copy of ``tree`` at ``site``; return (new tree, node, replacement node)."""
    new_tree = copy.deepcopy(tree)
    nodes = list(ast.walk(new_tree))
    node = nodes[site.index]
    if site.kind == "compare":
        node.ops[site.arg] = _SWAPS[type(node.ops[site.arg])]()
        return new_tree, node, node
    if site.kind == "negate":
        old = node.test
        if isinstance(old, ast.UnaryOp) and isinstance(old.op, ast.Not):
            node.test = old.operand
        else:
            node.test = ast.UnaryOp(ast.Not(), old)
        return new_tree, old, node.test
    if site.kind == "const":
        node.value = site.arg
        return new_tree, node, node
    if site.kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return new_tree, node, node
    if site.kind == "remove":
        for parent in nodes:
            for _field, value in ast.iter_fields(parent):
                if isinstance(value, list) and any(v is node for v in value):
                    k = next(j for j, v in enumerate(value) if v is node)
                    value[k] = ast.copy_location(ast.Pass(), node)
                    return new_tree, node, value[k]
    raise AssertionError(site)


def _replace_span(source: str, node, new: str) -> str:
    data = source.encode()
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    a = starts[node.lineno - 1] + node.col_offset
    b = starts[node.end_lineno - 1] + node.end_col_offset
    return (data[:a] + new.encode() + data[b:]).decode()


def _render(source: str, site: _Site, old, new) -> str:
    if site.kind == "negate":
        text = ast.get_source_segment(source, old)
        if isinstance(new, ast.UnaryOp) and new.operand is old:
            return _replace_span(source, old, f"not ({text})")
        # removing a `not`: the operand's own text in place of `not operand`
        return _replace_span(source, old, ast.get_source_segment(source, new))
    if site.kind == "remove":
        return _replace_span(source, old, "pass")
    if site.kind == "const":
        return _replace_span(source, old, repr(new.value))
    return _replace_span(source, old, ast.unparse(new))


def action_files(root: Path) -> list[str]:
    files = []
    for pattern in ACTION_GLOBS:
        files += sorted(str(p.relative_to(root)) for p in root.glob(pattern) if p.name != "__init__.py")
    return files + [f for f in ACTION_FILES if (root / f).exists()]


def action_mutants(root: Path) -> list[Mutant]:
    """Every mutant of every hand-written module under ``root``, module by module."""
    out: list[Mutant] = []
    for rel in action_files(root):
        out += module_mutants(rel, (root / rel).read_text())
    return out


def module_mutants(rel: str, source: str) -> list[Mutant]:
    """Every mutant of one module, ``source`` being the text of ``rel``, in site order."""
    out: list[Mutant] = []
    tree = ast.parse(source)
    module = Path(rel).stem
    group = f"{Path(rel).parent.name}/{Path(rel).name}"
    seen: Counter = Counter()
    for site in _sites(tree, source):
        new_tree, old, new = _apply(tree, site)
        text = _render(source, site, old, new)
        expected = ast.dump(new_tree)
        try:
            ok = ast.dump(ast.parse(text)) == expected
        except SyntaxError:
            ok = False
        if not ok:  # the spliced text is not the intended tree: unparse the whole module
            text = ast.unparse(new_tree) + "\n"
        base = f"{rel} | {site.func} | {site.what}"
        seen[base] += 1
        key = base if seen[base] == 1 else f"{base} #{seen[base]}"
        line = getattr(old, "lineno", 0)
        out.append(Mutant("actions", group, key, rel, line, f"{site.func}: {site.what}", text,
                          module in TRANSPORT, module))
    return out
