"""Mutation testing of the state machines: how much of protocols.yaml and of the hand-written
actions and guards do the fast tests really pin down? (``make mutate``; issue 5, "Test power".)

Two families of mutants, each applied alone to a private copy of the repository (never to
the tree this file lives in):

- **yaml**: protocols.yaml, for every row of every machine: remove the row; change its
  destination (to at most two other states, chosen deterministically: the states just after
  and just before it in declaration order, cyclically); drop each action; swap two adjacent
  actions; drop each guard; negate each guard. For every state: drop each ``on_enter`` /
  ``on_exit`` action and swap two adjacent ones. The real code generator then turns the
  mutated table into src/scaproust/_generated/ of the copy. A table the schema rejects is
  *killed by the validator*; one whose generated Python is byte for byte the original's is
  *equivalent* (same code, same behaviour) without running anything.
- **actions**: the hand-written modules (src/scaproust/protocols/*.py, core/pipe.py,
  core/dialer.py, core/listener.py), mutated with ``ast`` one site at a time, inside function bodies only:
  comparison swaps (``==``/``!=``, ``<``/``<=``, ``>``/``>=``, ``in``/``not in``,
  ``is``/``is not``), negated ``if`` and conditional-expression tests, integer constants
  (n -> n+1, n -> 0), ``True``/``False``, ``and``/``or``, and removal of a statement that is
  a call. Logging calls (``log.*``) and everything in them, and ``__repr__``, are left
  alone: log wording is not behaviour the tables promise, so those mutants would only be
  noise. Only the mutated expression (or statement) is rewritten, so the diff shows
  exactly the mutation.

Each mutant runs ``pytest -x -q -p no:cacheprovider --hypothesis-seed=0`` over tests/protocols,
tests/core and tests/models (when present), plus, for the transport-level machines and
modules (pipe, listener, dialer, socket), a few integration tests; tests/test_conformance.py
and tests/gen compare generated code with the table and are left out. The set runs in two
pytest processes under one ``--timeout``: first the test files about the mutated machine or
module (a small run that collects fast and makes most kills), then, if those all pass, the
rest; that is one run of the whole set, split for speed. A run that fails is *killed*, one
that passes *survived*, one that outlives ``--timeout`` *timeout* (a kill, reported
apart: an infinite loop, or a close that never completes). Runs use the compiled backend
(the default; both backends are generated from the same table). Mutants listed in
tools/mutation_equivalents.yaml, with the reason no test can tell them apart, are reported
as *equivalent* instead of survived; their keys hold no line numbers.

Scores: yaml (killed + validator + timeout) / (total - equivalent); actions
(killed + timeout) / (total - equivalent). The report is printed and written to
``--report`` (build/mutation-report.md by default). Every mutant runs by default (about
20 minutes with 2 jobs); ``--every N`` samples deterministically, ``--from-report`` reruns
only the survivors of an earlier report (the loop when writing tests that kill them).
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import difflib
import itertools
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "tools" / "mutation_equivalents.yaml"
GENERATED = "src/scaproust/_generated/"
SPEC = "protocols.yaml"

#: Hand-written modules whose functions are mutated (relative to the repository root).
ACTION_GLOBS = ("src/scaproust/protocols/*.py",)
ACTION_FILES = ("src/scaproust/core/pipe.py", "src/scaproust/core/dialer.py",
                "src/scaproust/core/listener.py")
#: Machines and modules that live at the transport level: their mutants also run these.
TRANSPORT = {"pipe", "listener", "dialer", "socket"}
INTEGRATION_TESTS = (
    "tests/integration/test_push_pull.py",
    "tests/integration/test_pair.py",
    "tests/integration/test_endpoints.py",
)
UNIT_TEST_DIRS = ("tests/protocols", "tests/core", "tests/models")
PYTEST = ("-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--hypothesis-seed=0")
#: Hand-written helpers shared by several protocols: the tests that exercise them most.
SHARED_MODULE_TESTS = {
    "_base": ("pair", "push", "pull"),
    "_balance": ("push", "req"),
    "_backtrace": ("rep", "respondent"),
    "_headers": ("headers", "req", "rep", "surveyor", "respondent"),
}

KILLED, SURVIVED, TIMEOUT, VALIDATOR, EQUIVALENT, SAME_CODE = (
    "killed", "survived", "timeout", "validator", "equivalent", "same-code")


@dataclasses.dataclass
class Mutant:
    family: str  # "yaml" or "actions"
    group: str  # machine (yaml) or module (actions)
    key: str  # stable, line-independent name: what mutation_equivalents.yaml refers to
    path: str  # the mutated file, relative to the root
    line: int
    what: str  # the mutation, for people
    text: str  # the whole mutated file
    transport: bool = False
    related: str = ""  # stem of the test files to run first

    status: str = ""
    detail: str = ""
    seconds: float = 0.0
    files: dict | None = None  # generated files that changed (yaml)

    @property
    def label(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


# ============================================================================ yaml mutants


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
        # A machine that extends another has the base's states and only the rows it
        # replaces: the base's rows are mutated once, in the base (the code of both
        # follows from them).
        table = fields
        while "extends" in table:
            table = {k.value: v for k, v in machines[table["extends"].value].value}
        states = [k.value for k, _ in table["states"].value]
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


# ============================================================================ action mutants

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
    out: list[Mutant] = []
    for rel in action_files(root):
        source = (root / rel).read_text()
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


# ============================================================================ running


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


def test_files(root: Path, transport: bool) -> list[str]:
    files = []
    for folder in UNIT_TEST_DIRS:
        files += sorted(str(p.relative_to(root)) for p in (root / folder).rglob("test_*.py"))
    if transport:
        files += [f for f in INTEGRATION_TESTS if (root / f).exists()]
    return files


def _stem(path: str) -> str:
    name = Path(path).stem
    for prefix in ("test_mutants_", "test_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def split_tests(files: list[str], related: str) -> tuple[list[str], list[str]]:
    """The test files about ``related`` (run first: most kills come from them, and a small
    run collects fast), and the rest."""
    wanted = set(SHARED_MODULE_TESTS.get(related, ())) | {related}
    first = [f for f in files if not f.startswith("tests/models/")
             and (_stem(f) in wanted or _stem(f).startswith(related + "_"))]
    return first, [f for f in files if f not in first]


def run_stages(root: Path, files: list[str], related: str, timeout: float) -> tuple[str, str, float]:
    """All of ``files`` under one time budget, in two pytest runs: the related files, then,
    if they all passed, the others. Killed iff some test fails, as one run would say."""
    spent = 0.0
    status, detail = SURVIVED, ""
    for stage in split_tests(files, related):
        if not stage:
            continue
        status, detail, seconds = run_tests(root, stage, timeout - spent)
        spent += seconds
        if status != SURVIVED:
            break
    return status, detail, spent


#: The pytest processes running now, killed (with their children) if the run is interrupted.
_RUNNING: set = set()
_STOP = threading.Event()


def _interrupt(signum, frame) -> None:
    _STOP.set()
    for proc in list(_RUNNING):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    raise KeyboardInterrupt


def run_tests(root: Path, tests: list[str], timeout: float) -> tuple[str, str, float]:
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]),
               SCAPROUST_FSM="compiled")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("CI", None)
    start = time.monotonic()
    timeout = max(timeout, 1.0)
    proc = subprocess.Popen([sys.executable, *PYTEST, *tests], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    _RUNNING.add(proc)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return TIMEOUT, f"no result after {timeout:.0f}s", time.monotonic() - start
    finally:
        _RUNNING.discard(proc)
    if _STOP.is_set():
        raise KeyboardInterrupt
    elapsed = time.monotonic() - start
    text = out.decode(errors="replace")
    if proc.returncode == 0:
        return SURVIVED, "", elapsed
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", text, re.M)
    detail = failed[0] if failed else (text.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return KILLED, detail, elapsed


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


def keys_in_report(path: Path) -> set[str]:
    """The keys of the surviving and timed-out mutants of a report this tool wrote."""
    keys, section = set(), ""
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            section = line
        elif line.startswith("key: `") and section.startswith(("## Surviving", "## Timeouts")):
            keys.add(line[len("key: `"):-1])
    return keys


def load_equivalents(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return {entry["mutant"]: entry["reason"] for entry in data.get("equivalents") or []}


# ============================================================================ report


def _diff(original: str, mutated: str, path: str) -> str:
    lines = difflib.unified_diff(original.splitlines(), mutated.splitlines(), f"a/{path}",
                                 f"b/{path}", n=1, lineterm="")
    return "\n".join(list(lines)[2:])


def score(mutants: list[Mutant], family: str) -> tuple[int, int, float]:
    ms = [m for m in mutants if m.family == family]
    counted = [m for m in ms if m.status not in (EQUIVALENT, SAME_CODE)]
    good = [m for m in counted if m.status in (KILLED, TIMEOUT, VALIDATOR)]
    return len(good), len(counted), (100.0 * len(good) / len(counted) if counted else 100.0)


def report(mutants, originals, args, elapsed, sampling, baseline, stale_equivalents, command) -> str:
    out = ["# Mutation report", ""]
    out.append(f"- command: `{command}`")
    out.append(f"- tests per mutant: `pytest {' '.join(PYTEST[2:])}` over "
               f"{', '.join(d for d in UNIT_TEST_DIRS)} (those present), plus "
               f"{', '.join(INTEGRATION_TESTS)} for transport-level mutants; timeout {args.timeout:.0f}s")
    out.append(f"- baseline (unmutated) run: {baseline:.1f}s; {args.jobs} worker(s); "
               f"total time {elapsed / 60:.1f} min")
    out.append(f"- sampling: {sampling}")
    out.append("")
    out.append("## Scores")
    out.append("")
    for family, what in (("yaml", "(killed + validator + timeout) / (total - equivalent)"),
                         ("actions", "(killed + timeout) / (total - equivalent)")):
        if any(m.family == family for m in mutants):
            good, total, pct = score(mutants, family)
            out.append(f"- **{family}**: {good}/{total} = **{pct:.1f} %** {what}")
    out.append("")
    statuses = [KILLED, VALIDATOR, TIMEOUT, SURVIVED, EQUIVALENT, SAME_CODE]
    for family in ("yaml", "actions"):
        ms = [m for m in mutants if m.family == family]
        if not ms:
            continue
        out.append(f"## {family}: per {'machine' if family == 'yaml' else 'module'}")
        out.append("")
        out.append("| " + ("machine" if family == "yaml" else "module") + " | total | "
                   + " | ".join(statuses) + " | score |")
        out.append("|---" * (len(statuses) + 3) + "|")
        groups: dict[str, list[Mutant]] = defaultdict(list)
        for m in ms:
            groups[m.group].append(m)
        for group, gms in groups.items():
            counts = Counter(m.status for m in gms)
            _, _, pct = score(gms, family)
            out.append(f"| {group} | {len(gms)} | " + " | ".join(str(counts[s]) for s in statuses)
                       + f" | {pct:.0f} % |")
        counts = Counter(m.status for m in ms)
        out.append(f"| **all** | {len(ms)} | " + " | ".join(str(counts[s]) for s in statuses)
                   + f" | {score(ms, family)[2]:.1f} % |")
        out.append("")
    for status, title in ((SURVIVED, "Surviving mutants"), (TIMEOUT, "Timeouts (counted as killed)")):
        chosen = [m for m in mutants if m.status == status]
        out.append(f"## {title}: {len(chosen)}")
        out.append("")
        for m in chosen:
            out.append(f"### {m.label}")
            out.append("")
            out.append(f"key: `{m.key}`")
            out.append("")
            out.append("```diff")
            out.append(_diff(originals[m.path], m.text, m.path))
            out.append("```")
            out.append("")
    chosen = [m for m in mutants if m.status in (EQUIVALENT, SAME_CODE)]
    out.append(f"## Equivalent mutants: {len(chosen)}")
    out.append("")
    for m in chosen:
        out.append(f"- `{m.key}` ({m.label}): {m.detail}")
    if stale_equivalents:
        out.append("")
        out.append("Entries of tools/mutation_equivalents.yaml that match no mutant (stale?):")
        out.extend(f"- `{key}`" for key in stale_equivalents)
    out.append("")
    return "\n".join(out)


# ============================================================================ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/mutate.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("yaml", "actions"), help="one family of mutants")
    parser.add_argument("--machine", action="append", help="yaml mutants of this machine only (repeatable)")
    parser.add_argument("--module", action="append",
                        help="action mutants of this module only, e.g. req or core/pipe.py (repeatable)")
    parser.add_argument("--limit", type=int, help="run at most N mutants (after filtering and sampling)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel workers (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds per mutant (default 60; the whole suite takes under 10)")
    parser.add_argument("--every", type=int, default=1,
                        help="run every Nth mutant only (deterministic sample; default 1: all)")
    parser.add_argument("--all", action="store_true", help="run every mutant (overrides --every)")
    parser.add_argument("--key", action="append", help="run only the mutant with this key (repeatable)")
    parser.add_argument("--from-report", metavar="REPORT",
                        help="run only the mutants that survived (or timed out) in this earlier report")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--report", default="build/mutation-report.md", help="where to write the report")
    parser.add_argument("--equivalents", default=str(EQUIVALENTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    command = "python tools/mutate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.monotonic()

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return _run(args, command, started)
    except KeyboardInterrupt:
        print("mutate: interrupted", file=sys.stderr)
        return 130


def _run(args, command: str, started: float) -> int:
    with tempfile.TemporaryDirectory(prefix="scaproust-mutate-") as tmp:
        base = Path(tmp) / "base"
        snapshot(base)
        originals = {SPEC: (base / SPEC).read_text()}
        mutants: list[Mutant] = []
        if args.only in (None, "yaml"):
            mutants += yaml_mutants(originals[SPEC])
        if args.only in (None, "actions"):
            for rel in action_files(base):
                originals[rel] = (base / rel).read_text()
            mutants += action_mutants(base)
        if args.machine or args.module:
            def chosen(m: Mutant) -> bool:
                if m.family == "yaml":
                    return bool(args.machine) and m.group in args.machine
                names = (m.group, m.path, Path(m.path).stem, m.group.split("/")[-1])
                return bool(args.module) and any(name in names for name in args.module)
            mutants = [m for m in mutants if chosen(m)]
        if args.key or args.from_report:
            wanted = set(args.key or ()) | (keys_in_report(Path(args.from_report)) if args.from_report else set())
            mutants = [m for m in mutants if m.key in wanted]
        total = len(mutants)
        every = 1 if args.all else max(1, args.every)
        if every > 1:
            mutants = mutants[::every]
        if args.limit:
            mutants = mutants[: args.limit]
        how = [f"every {every}th"] if every > 1 else []
        how += [f"the first {args.limit}"] if args.limit and len(mutants) == args.limit else []
        sampling = ("none: every mutant ran" if len(mutants) == total else
                    f"{len(mutants)} of {total} mutants ran ({', '.join(how)}); "
                    "`--all` runs them all")
        if args.list:
            for m in mutants:
                print(f"{m.family:7} {m.label}\n        key: {m.key}")
            print(f"{len(mutants)} mutants")
            return 0

        equivalents = load_equivalents(Path(args.equivalents))
        keys = {m.key for m in mutants}
        stale = [k for k in equivalents if k not in keys] if len(mutants) == total and not (
            args.only or args.machine or args.module or args.key or args.from_report) else []

        # The copy must be consistent and green before any mutant means anything.
        gen = Generator(base)
        for rel, text in gen.original.items():
            if (base / rel).read_text() != text:
                print(f"mutate: {rel} is stale in the working tree; regenerated in the copy",
                      file=sys.stderr)
                (base / rel).write_text(text)
        all_tests = {t: test_files(base, t) for t in (False, True)}
        status, detail, baseline = run_tests(base, all_tests[True], args.timeout * 2)
        if status != SURVIVED:
            print(f"mutate: the unmutated suite fails ({detail}); fix it first", file=sys.stderr)
            return 2
        shutil.rmtree(base / ".hypothesis", ignore_errors=True)
        print(f"baseline green in {baseline:.1f}s; {len(mutants)} mutants, {args.jobs} jobs",
              file=sys.stderr)

        workspaces: queue.Queue = queue.Queue()
        for j in range(args.jobs):
            workspaces.put(Workspace(base, Path(tmp) / f"w{j}"))
        done = [0]
        lock = threading.Lock()

        def run(m: Mutant) -> None:
            if _STOP.is_set():
                return
            if m.key in equivalents:
                m.status, m.detail = EQUIVALENT, equivalents[m.key]
            elif m.family == "yaml":
                try:
                    m.files = gen.changes(m.text)
                except gen.SpecError as exc:
                    m.status, m.detail = VALIDATOR, str(exc)
                except Exception as exc:  # the generator itself choked: the table is unusable
                    m.status, m.detail = VALIDATOR, f"codegen failed: {type(exc).__name__}: {exc}"
                else:
                    if not m.files:
                        m.status, m.detail = SAME_CODE, "the generated code is identical"
            if not m.status:
                ws = workspaces.get()
                try:
                    ws.write(m.path, m.text)
                    for rel, text in (m.files or {}).items():
                        ws.write(rel, text)
                    m.status, m.detail, m.seconds = run_stages(
                        ws.root, all_tests[m.transport], m.related, args.timeout)
                finally:
                    ws.restore()
                    workspaces.put(ws)
            with lock:
                done[0] += 1
                print(f"[{done[0]}/{len(mutants)}] {m.status:9} {m.label}"
                      f"{f' ({m.seconds:.1f}s)' if m.seconds else ''}", file=sys.stderr, flush=True)

        pool = ThreadPoolExecutor(max_workers=max(1, args.jobs))
        try:
            list(pool.map(run, mutants))
        except KeyboardInterrupt:
            print("mutate: interrupted; removing the temporary copies", file=sys.stderr)
            pool.shutdown(wait=True, cancel_futures=True)
            return 130
        pool.shutdown()

        text = report(mutants, originals, args, time.monotonic() - started, sampling, baseline,
                      stale, command)
    print(text)
    path = Path(args.report)
    if not path.is_absolute():
        path = ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"report written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
