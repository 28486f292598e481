"""Read and validate protocols.yaml.

Every machine of the library is declared in one file with one schema::

    unlisted: error | ignore            # default policy for (state, event) pairs without a row
    parameters:                         # the type of each event parameter, by name
      msgs: list[bytes]
      pipe: Pipe
    types:                              # where the names those types use come from
      Pipe: scaproust.core.pipe
    machines:
      <name>:
        doc: <one paragraph>
        class: <module>:<Class>        # the hand-written class holding actions and guards
        unlisted: error | ignore        # this machine's policy, if not the file's (optional)
        events:                         # what each event carries: its parameters, in order
          evt_msgs: [msgs]
          evt_removed: [pipe]
          evt_bad: [pipe, msgs]
          cmd_send: [body, header=b'']  # a default (a Python literal) makes one optional
          evt_failed: [err: OSError]    # a type of its own, not the one under parameters:
          cmd_close: []
        initial: <state>
        states:
          <state>: {on_enter: [...], on_exit: [...], final: true, doc: ...}
        rows:
          #  source   event        guards          dest     actions
          - [active,  evt_msgs,    [],             active,  [deliver]]
          - [paired,  evt_removed, [is_peer],      unpaired, [forget_peer]]
          - ['*',     cmd_close,   [],             closed,  [close_all]]
          - row: [paired, evt_bad, [is_peer], unpaired]   # more than three actions: the
            actions:                                       # row as a mapping, its actions
              - deliver                                    # in block style
              - reject_pipe
              - forget_peer
              - grant_capacity
      <other>:
        doc: ...
        class: <module>:<Class>
        extends: <name>                 # <name>'s unlisted, events, initial, states, rows ...
        events: {evt_more: [pipe]}      # ... plus events of its own (optional) ...
        states: {more: }                # ... and states of its own (optional) ...
        rows:                           # ... except the rows replaced here (optional)
          - [open,    evt_msgs,    [],             open,    [deliver_plainly]]

Rules (each violation is reported as ``protocols.yaml:<line>: <what is wrong>``):

- ``unlisted`` at the top of the file is the policy of every machine that does not set its
  own (a machine that ``extends`` another has its base's);
- a row is the list ``[source, event, guards, dest, actions]``, or, when it has more than
  three actions, the mapping ``row: [source, event, guards, dest]`` with ``actions:`` in
  block style (one a line); both mean the same;
- events are named by kind: commands in start with ``cmd_``, events in with ``evt_``;
- every event a row names is declared under ``events:`` with the parameters it carries
  (names, in the order the event is fired with; ``name=<Python literal>`` gives a trailing
  one a default), and every declared event has a row. The generated event methods take
  exactly these parameters, and pass them all, by position, to every guard and action of
  the event's rows: the default is filled in there, so an action never needs one;
- every parameter has a type: its own (``[err: OSError]``), else the one ``parameters:``
  gives its name. A type is a Python type expression whose names are builtins or listed
  under ``types:`` with the module that defines them (imported by the generated modules
  for the type checker only). The generated methods are annotated with these types, and
  mypy checks the hand-written guards and actions against them;
- a source may be a state, a list of states, or ``'*'``: every state without an explicit
  row for that event (only non-final ones unless dest is ``'='``);
- a dest of ``'='`` means "stay in the source state" (handy with ``'*'``);
- guards are names of guard methods, ``!name`` negates one;
- a row whose dest equals its source is an *internal* transition: ``on_exit`` and
  ``on_enter`` do not run (``dest: None`` in ``transitions``' terms);
- rows with the same (source, event) are guarded alternatives tried in order; a row that
  can never fire (same guards as an earlier one, or after an unguarded one) is an error;
- every state is reachable from the initial one; a state with no row leaving it must be
  marked ``final``, and a final state has no row leaving it;
- a machine that ``extends`` another (declared before it) restates neither its policy, its
  initial state nor its states (it may add states of its own, as it may add events); each of its own rows replaces every row of the base with
  the same (source, event), guarded alternatives included, in place (a ``'*'`` row: that
  event in every state); rows for new pairs come after. How a cooked protocol says "the raw
  table, except...", and a protocol that behaves as another on most events says "that
  table, except...", without copying rows that would then have to be kept equal;
- every action and guard is a method of the hand-written class (or a hand-written base),
  every public method of that class is used by some row (unless marked ``@facade_call``:
  the facade calls it, not a row), and no method shadows an event;
- every guard and action accepts exactly what its event carries: its parameters after
  ``self`` are the event's, same names, same order; ``on_enter`` and ``on_exit`` actions
  run for whichever event enters or leaves the state and take no event arguments. A method
  serving events that carry different parameters (several events, or several machines
  sharing the method) names the parameters they all start with, then takes ``*args`` for
  the rest; ``*args`` anywhere else is an error, as are keyword-only parameters and
  ``**kwargs`` (events pass their parameters by position). Checked with ``ast`` on the
  definition the class really uses (its own, else the first base's, in order).
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import yaml

EVENT_RE = re.compile(r"^(cmd|evt)_[a-z][a-z0-9_]*$")
NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
MACHINE_KEYS = {"doc", "class", "extends", "unlisted", "events", "initial", "states", "rows"}
TOP_KEYS = {"unlisted", "parameters", "types", "machines"}
#: The keys of a row written as a mapping (block style).
ROW_KEYS = ("row", "actions")
#: What a machine with ``extends`` takes from its base and may not restate.
INHERITED_KEYS = ("unlisted", "initial")
STATE_KEYS = {"doc", "on_enter", "on_exit", "final"}
PARAM_RE = re.compile(r"^([a-z_][a-z0-9_]*)(?:=(.+))?$")
POLICIES = ("error", "ignore")


class SpecError(Exception):
    """A problem in protocols.yaml, formatted as ``<file>:<line>: <message>``."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


@dataclass(frozen=True)
class Guard:
    name: str
    negated: bool = False

    def __str__(self) -> str:
        return ("!" if self.negated else "") + self.name


@dataclass(frozen=True)
class Param:
    """One parameter of an event: its name, its type (a Python type expression) and, if
    optional, its default (Python source)."""

    name: str
    default: str | None = None
    type: str = "object"

    def __str__(self) -> str:
        return self.name if self.default is None else f"{self.name}={self.default}"

    def annotated(self) -> str:
        """The parameter as a typed method declares it: ``name: type`` (``= default``)."""
        typed = f"{self.name}: {self.type}"
        return typed if self.default is None else f"{typed} = {self.default}"


@dataclass(frozen=True)
class Method:
    """The shape of a hand-written guard or action as the machine's rows call it: its
    parameters after ``self`` and whether it takes ``*args`` (the rest of what its events
    carry), with the type of each parameter from the events it serves in this machine."""

    name: str
    params: tuple[tuple[str, str], ...]
    star: bool
    guard: bool


@dataclass
class State:
    name: str
    line: int
    doc: str = ""
    on_enter: list[str] = field(default_factory=list)
    on_exit: list[str] = field(default_factory=list)
    final: bool = False


@dataclass
class Row:
    source: str
    event: str
    guards: tuple[Guard, ...]
    dest: str
    actions: tuple[str, ...]
    line: int
    #: For a row expanded from a ``'*'`` source: its dest as written (a state or ``'='``),
    #: so a machine that extends this one with states of its own expands it over those too.
    wildcard: str | None = None

    @property
    def internal(self) -> bool:
        return self.source == self.dest


@dataclass
class Machine:
    name: str
    line: int
    doc: str
    module: str
    class_name: str
    class_line: int
    unlisted: str
    initial: str
    states: dict[str, State]
    rows: list[Row]
    extends: str | None = None
    #: What each event carries, in declaration order (an extends machine: its base's first).
    params: dict[str, tuple[Param, ...]] = field(default_factory=dict)
    #: Where each event is declared (its line), for messages.
    param_lines: dict[str, int] = field(default_factory=dict)
    #: The module of each name the parameters' types use (``types:``), builtins excepted.
    imports: dict[str, str] = field(default_factory=dict)
    #: The guards and actions the rows and states call, in the order of ``guards`` then
    #: ``actions``, shaped as the hand-written class defines them (filled by ``load``).
    methods: dict[str, Method] = field(default_factory=dict)
    #: The type of the current ``state`` attribute: ``State`` (the Literal of its states),
    #: or ``str`` where a hand-written class completes this machine together with another
    #: whose states differ (both declarations must then agree; filled by ``load``).
    state_type: str = "State"

    @property
    def events(self) -> list[str]:
        """Event names in order of first appearance."""
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.setdefault(row.event, None)
        return list(seen)

    @property
    def guards(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            for guard in row.guards:
                seen.setdefault(guard.name, None)
        return list(seen)

    @property
    def actions(self) -> list[str]:
        seen: dict[str, None] = {}
        for state in self.states.values():
            for name in state.on_exit + state.on_enter:
                seen.setdefault(name, None)
        for row in self.rows:
            for name in row.actions:
                seen.setdefault(name, None)
        return list(seen)

    def rows_for(self, state: str, event: str) -> list[Row]:
        return [r for r in self.rows if r.source == state and r.event == event]


@dataclass
class Spec:
    path: str
    machines: dict[str, Machine]


# --------------------------------------------------------------------------- parsing


class _Reader:
    """Turns yaml nodes into values while keeping their line numbers for messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node_or_line: yaml.Node | int, message: str) -> NoReturn:
        line = node_or_line if isinstance(node_or_line, int) else node_or_line.start_mark.line + 1
        raise SpecError(self.path, line, message)

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping")
        out: list[tuple[str, yaml.Node, yaml.Node]] = []
        seen: set[str] = set()
        for key, value in node.value:
            name = self.scalar(key, f"a key of {what}")
            if name in seen:
                self.fail(key, f"duplicate key {name!r} in {what}")
            seen.add(name)
            out.append((name, key, value))
        return out

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode) or node.value == "":
            self.fail(node, f"{what} must be a non-empty string")
        value: str = node.value
        return value

    def names(self, node: yaml.Node, what: str) -> list[str]:
        """A name, a list of names, or null/[] for none."""
        if isinstance(node, yaml.ScalarNode):
            if node.tag.endswith(":null") or node.value in ("", "~", "null"):
                return []
            return [self.scalar(node, what)]
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, f"{what} must be a name or a list of names")
        return [self.scalar(item, f"an item of {what}") for item in node.value]

    def flag(self, node: yaml.Node, what: str) -> bool:
        if not isinstance(node, yaml.ScalarNode) or node.value not in ("true", "false"):
            self.fail(node, f"{what} must be true or false")
        return bool(node.value == "true")


def load(path: str | Path, source: str | None = None, src_root: Path | None = None) -> Spec:
    """Parse and validate protocols.yaml; raise SpecError on the first problem."""
    path = Path(path)
    text = source if source is not None else path.read_text()
    shown = path.name
    reader = _Reader(shown)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SpecError(shown, mark.line + 1 if mark else 1, f"not valid YAML: {exc}") from None
    if root is None:
        raise SpecError(shown, 1, "empty file")
    top = dict((k, (kn, v)) for k, kn, v in reader.mapping(root, "the file"))
    for k, (kn, _) in top.items():
        if k not in TOP_KEYS:
            reader.fail(kn, f"unknown top-level key {k!r} (allowed: {', '.join(sorted(TOP_KEYS))})")
    if "machines" not in top:
        reader.fail(root, "missing the top-level key 'machines'")
    default_unlisted = _policy(reader, top["unlisted"][1]) if "unlisted" in top else None
    types = _types(reader, top["types"][1]) if "types" in top else {}
    typing = _Typing(types, _parameter_types(reader, top["parameters"][1], types)
                     if "parameters" in top else {})
    machines: dict[str, Machine] = {}
    for name, key, node in reader.mapping(top["machines"][1], "machines"):
        if not NAME_RE.match(name):
            reader.fail(key, f"machine name {name!r} must be lower_snake_case")
        machines[name] = _machine(reader, name, key, node, machines, typing, default_unlisted)
    src_root = src_root or path.parent / "src"
    for machine in machines.values():
        _validate(reader, machine)
        _check_handwritten(reader, machine, src_root)
    _check_signatures(reader, list(machines.values()), src_root)
    _type_states(machines, src_root)
    return Spec(shown, machines)


def _type_states(machines: dict[str, Machine], src_root: Path) -> None:
    """``state: State`` on each generated class, unless one hand-written class inherits
    it with another machine whose states differ (a cooked REQ is ``Req(ReqFSM, ReqRaw)``):
    mypy refuses two bases that declare one attribute with different types, so every
    machine of such a class has ``state: str``."""
    for m in machines.values():
        together = {m.name} | _generated_bases(src_root, m.module, m.class_name)
        known = [machines[name] for name in sorted(together) if name in machines]
        if len({frozenset(k.states) for k in known}) > 1:
            for k in known:
                k.state_type = "str"


def _generated_bases(src_root: Path, module: str, class_name: str) -> set[str]:
    """The machines whose generated classes a hand-written class inherits, at any depth
    (``from scaproust._generated.<machine> import ...``)."""
    found = _find_class(src_root, module, class_name)
    if found is None:
        return set()
    tree, cls, _ = found
    imports = _imports(tree)
    out: set[str] = set()
    for base in cls.bases:
        if not isinstance(base, ast.Name):
            continue
        base_module = imports.get(base.id, module if _find_class(src_root, module, base.id) else None)
        if base_module is None:
            continue
        if "_generated" in base_module:
            out.add(base_module.rsplit(".", 1)[-1])
        else:
            out |= _generated_bases(src_root, base_module, base.id)
    return out


@dataclass(frozen=True)
class _Typing:
    """The file's ``types:`` (name -> module) and ``parameters:`` (name -> type)."""

    types: dict[str, str]
    parameters: dict[str, str]


def _types(reader: _Reader, node: yaml.Node) -> dict[str, str]:
    """``types:``: each name a parameter type may use, and the module that defines it."""
    out = {}
    for name, key, value in reader.mapping(node, "types"):
        if not name.isidentifier():
            reader.fail(key, f"type name {name!r} is not a Python name")
        module = reader.scalar(value, f"the module of {name}")
        if not all(part.isidentifier() for part in module.split(".")):
            reader.fail(value, f"the module of {name} must be a dotted module path, not {module!r}")
        out[name] = module
    return out


def _parameter_types(reader: _Reader, node: yaml.Node, types: dict[str, str]) -> dict[str, str]:
    """``parameters:``: the type of each event parameter, by its name."""
    out = {}
    for name, key, value in reader.mapping(node, "parameters"):
        if not PARAM_RE.match(name) or "=" in name:
            reader.fail(key, f"parameter name {name!r} is not a lower_snake_case name")
        out[name] = _type(reader, value, types, f"the type of {name}")
    return out


def _type(reader: _Reader, node: yaml.Node, types: dict[str, str], what: str) -> str:
    """A type expression, checked: it parses, and every name in it is a builtin or a key of
    ``types:`` (so the generated modules can import it)."""
    text = reader.scalar(node, what)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        reader.fail(node, f"{what} is not a Python type expression: {text!r}")
    for sub in ast.walk(tree):
        if isinstance(sub, ast.Name) and sub.id not in types and not hasattr(builtins, sub.id):
            reader.fail(node, f"{what} uses {sub.id!r}, which is neither a builtin nor listed under types:")
    return ast.unparse(tree)


def _names_in(type_text: str) -> list[str]:
    return [n.id for n in ast.walk(ast.parse(type_text, mode="eval")) if isinstance(n, ast.Name)]


def _policy(reader: _Reader, node: yaml.Node) -> str:
    policy = reader.scalar(node, "unlisted")
    if policy not in POLICIES:
        reader.fail(node, f"unlisted must be one of {POLICIES}, not {policy!r}")
    return policy


def _machine(reader: _Reader, name: str, key: yaml.Node, node: yaml.Node, earlier: dict[str, Machine],
             typing: _Typing, default_unlisted: str | None = None) -> Machine:
    fields = {k: (kn, v) for k, kn, v in reader.mapping(node, f"machine {name!r}")}
    for k, (kn, _) in fields.items():
        if k not in MACHINE_KEYS:
            reader.fail(kn, f"unknown key {k!r} in machine {name!r} (allowed: {', '.join(sorted(MACHINE_KEYS))})")
    base = None
    if "extends" in fields:
        base_node = fields["extends"][1]
        base_name = reader.scalar(base_node, "extends")
        base = earlier.get(base_name)
        if base is None:
            reader.fail(base_node, f"machine {name!r} extends {base_name!r}, which is not a machine declared before it")
        for inherited in INHERITED_KEYS:
            if inherited in fields:
                reader.fail(fields[inherited][0], f"machine {name!r} extends {base_name!r}: its {inherited!r} is {base_name!r}'s, not restated")
    required = ("class",) if base else ("class", "events", "initial", "states", "rows")
    for k in required:
        if k not in fields:
            reader.fail(key, f"machine {name!r} has no {k!r}")
    class_node = fields["class"][1]
    target = reader.scalar(class_node, "class")
    if ":" not in target:
        reader.fail(class_node, f"class must be 'package.module:Class', not {target!r}")
    module, class_name = target.split(":", 1)
    doc = reader.scalar(fields["doc"][1], "doc") if "doc" in fields else ""
    line, class_line = key.start_mark.line + 1, class_node.start_mark.line + 1

    if base is not None:
        states = dict(base.states)
        if "states" in fields:
            for sname, state in _states(reader, fields["states"][1], name).items():
                if sname in states:
                    reader.fail(state.line, f"machine {name!r} extends {base.name!r}: its state "
                                f"{sname!r} is {base.name!r}'s, not restated")
                states[sname] = state
        rows = _rows(reader, name, fields["rows"][1], states) if "rows" in fields else []
        params, param_lines = dict(base.params), dict(base.param_lines)
        if "events" in fields:
            own, own_lines = _events(reader, fields["events"][1], name, typing)
            for event, event_line in own_lines.items():
                if event in params:
                    reader.fail(event_line, f"machine {name!r} extends {base.name!r}: its event {event!r} is {base.name!r}'s, not restated")
            params.update(own)
            param_lines.update(own_lines)
        machine = Machine(name, line, doc.strip(), module, class_name, class_line, base.unlisted,
                          base.initial, states,
                          _override(base.rows + _wildcards_over(base, states, rows), rows),
                          extends=base.name,
                          params=params, param_lines=param_lines)
        _check_events(reader, machine)
        machine.imports = _imports_of(machine, typing)
        return machine

    if "unlisted" in fields:
        unlisted = _policy(reader, fields["unlisted"][1])
    elif default_unlisted is not None:
        unlisted = default_unlisted
    else:
        reader.fail(key, f"machine {name!r} has no 'unlisted' and the file sets no default")
    states = _states(reader, fields["states"][1], name)
    initial_node = fields["initial"][1]
    initial = reader.scalar(initial_node, "initial")
    if initial not in states:
        reader.fail(initial_node, f"initial state {initial!r} is not one of the states of {name!r}")
    rows = _rows(reader, name, fields["rows"][1], states)
    params, param_lines = _events(reader, fields["events"][1], name, typing)
    machine = Machine(name, line, doc.strip(), module, class_name, class_line, unlisted, initial,
                      states, rows, params=params, param_lines=param_lines)
    _check_events(reader, machine)
    machine.imports = _imports_of(machine, typing)
    return machine


def _imports_of(m: Machine, typing: _Typing) -> dict[str, str]:
    """{name: module} of the names its parameters' types use, sorted by name."""
    names = {n for params in m.params.values() for p in params for n in _names_in(p.type)}
    return {n: typing.types[n] for n in sorted(names) if n in typing.types}


def _events(reader: _Reader, node: yaml.Node, name: str,
            typing: _Typing) -> tuple[dict[str, tuple[Param, ...]], dict[str, int]]:
    """``events:``: each event's parameters, ``[a, b: <type>, c=<literal>]``."""
    params: dict[str, tuple[Param, ...]] = {}
    lines: dict[str, int] = {}
    for event, key, value in reader.mapping(node, f"the events of {name!r}"):
        if not EVENT_RE.match(event):
            reader.fail(key, f"event {event!r} must be named cmd_<verb> (a command in) or evt_<what> (an event in)")
        out: list[Param] = []
        for text, type_node in _parameter_nodes(reader, value, f"the parameters of {event}"):
            match = PARAM_RE.match(text)
            if match is None:
                reader.fail(value, f"parameter {text!r} of {event} is not a name (or name=<Python literal>)")
            pname, default = match.group(1), match.group(2)
            if pname == "self" or pname in {p.name for p in out}:
                reader.fail(value, f"parameter {pname!r} of {event} is repeated or reserved")
            if default is not None:
                try:
                    default = repr(ast.literal_eval(default))
                except (ValueError, SyntaxError):
                    reader.fail(value, f"the default of {pname!r} of {event} is not a Python literal: {default!r}")
            elif out and out[-1].default is not None:
                reader.fail(value, f"parameter {pname!r} of {event} has no default but follows one that has")
            if type_node is not None:
                if default is not None:
                    reader.fail(value, f"parameter {pname!r} of {event}: a parameter with a default takes its type from parameters:")
                ptype = _type(reader, type_node, typing.types, f"the type of {pname!r} of {event}")
            elif pname in typing.parameters:
                ptype = typing.parameters[pname]
            else:
                reader.fail(value, f"parameter {pname!r} of {event} has no type: give its name one under "
                            f"parameters: at the top of the file, or write [{pname}: <type>]")
            out.append(Param(pname, default, ptype))
        params[event] = tuple(out)
        lines[event] = key.start_mark.line + 1
    return params, lines


def _parameter_nodes(reader: _Reader, node: yaml.Node,
                     what: str) -> list[tuple[str, yaml.Node | None]]:
    """The items of an event's parameter list: ``name`` or ``name=<literal>`` (typed by
    ``parameters:``), or ``name: <type>`` (a one-key mapping), each with its type's node."""
    if isinstance(node, yaml.SequenceNode):
        out: list[tuple[str, yaml.Node | None]] = []
        for item in node.value:
            if isinstance(item, yaml.MappingNode) and len(item.value) == 1:
                key, value = item.value[0]
                out.append((reader.scalar(key, f"an item of {what}"), value))
            else:
                out.append((reader.scalar(item, f"an item of {what}"), None))
        return out
    return [(name, None) for name in reader.names(node, what)]


def _check_events(reader: _Reader, m: Machine) -> None:
    """Every event of a row is declared; every declared event has a row."""
    for row in m.rows:
        if row.event not in m.params:
            reader.fail(row.line, f"event {row.event!r} of {m.name!r} is not declared: add it under "
                        f"events: with the parameters it carries ({row.event}: [] for none)")
    used = {row.event for row in m.rows}
    for event, line in m.param_lines.items():
        if event not in used:
            reader.fail(line, f"event {event!r} is declared by {m.name!r} but no row of it uses it")


def _override(base_rows: list[Row], own: list[Row]) -> list[Row]:
    """A machine that extends another: its own rows replace every base row of the same
    (source, event) in place (guarded alternatives included); rows for new pairs follow."""
    own_pairs = {(r.source, r.event) for r in own}
    rows, placed = [], set()
    for row in base_rows:
        pair = (row.source, row.event)
        if pair not in own_pairs:
            rows.append(row)
        elif pair not in placed:
            placed.add(pair)
            rows.extend(r for r in own if (r.source, r.event) == pair)
    rows.extend(r for r in own if (r.source, r.event) not in placed)
    return rows


def _states(reader: _Reader, states_node: yaml.Node, name: str) -> dict[str, State]:
    states: dict[str, State] = {}
    for sname, skey, snode in reader.mapping(states_node, f"the states of {name!r}"):
        if not NAME_RE.match(sname):
            reader.fail(skey, f"state name {sname!r} must be lower_snake_case")
        state = State(sname, skey.start_mark.line + 1)
        if isinstance(snode, yaml.ScalarNode) and snode.value in ("", "~", "null"):
            states[sname] = state
            continue
        for k, kn, v in reader.mapping(snode, f"state {sname!r}"):
            if k not in STATE_KEYS:
                reader.fail(kn, f"unknown key {k!r} in state {sname!r} (allowed: {', '.join(sorted(STATE_KEYS))})")
            if k == "final":
                state.final = reader.flag(v, "final")
            elif k == "doc":
                state.doc = reader.scalar(v, "doc")
            else:
                setattr(state, k, reader.names(v, k))
        states[sname] = state
    return states


def _rows(reader: _Reader, name: str, rows_node: yaml.Node, states: dict[str, State]) -> list[Row]:
    rows: list[Row] = []
    if not isinstance(rows_node, yaml.SequenceNode) or not rows_node.value:
        reader.fail(rows_node, f"rows of {name!r} must be a non-empty list")
    explicit: list[tuple[list[str], str, tuple[Guard, ...], str, tuple[str, ...], int]] = []
    for item in rows_node.value:
        line = item.start_mark.line + 1
        src_node, evt_node, guard_node, dest_node, act_node = _row_nodes(reader, item)
        event = reader.scalar(evt_node, "event")
        if not EVENT_RE.match(event):
            reader.fail(evt_node, f"event {event!r} must be named cmd_<verb> (a command in) or evt_<what> (an event in)")
        guards = []
        for g in reader.names(guard_node, "guards"):
            guard = Guard(g[1:], True) if g.startswith("!") else Guard(g)
            if not NAME_RE.match(guard.name):
                reader.fail(guard_node, f"guard {g!r} is not a method name")
            guards.append(guard)
        dest = reader.scalar(dest_node, "dest")
        actions = reader.names(act_node, "actions")
        for a in actions:
            if not NAME_RE.match(a):
                reader.fail(act_node, f"action {a!r} is not a method name")
        sources = reader.names(src_node, "source")
        if not sources:
            reader.fail(src_node, "a row needs a source state")
        for s in sources:
            if s != "*" and s not in states:
                reader.fail(src_node, f"unknown state {s!r} in machine {name!r}")
        if dest != "=" and dest not in states:
            reader.fail(dest_node, f"unknown state {dest!r} in machine {name!r}")
        explicit.append((sources, event, tuple(guards), dest, tuple(actions), line))
    # Wildcard rows expand to every non-final state without an explicit row for the event.
    has_row = {(s, e) for sources, e, *_ in explicit for s in sources if s != "*"}
    for sources, event, row_guards, dest, row_actions, line in explicit:
        for source in sources:
            if source != "*":
                rows.append(Row(source, event, row_guards, source if dest == "=" else dest,
                                row_actions, line))
                continue
            for sname, state in states.items():
                if (sname, event) in has_row or (state.final and dest != "="):
                    continue
                rows.append(Row(sname, event, row_guards, sname if dest == "=" else dest,
                                row_actions, line, wildcard=dest))
    return rows


def _wildcards_over(base: Machine, states: dict[str, State], own: list[Row]) -> list[Row]:
    """The base's ``'*'`` rows expanded over the states an extending machine adds (those
    without a row of their own for the event; final ones only for a dest of ``'='``)."""
    own_pairs = {(r.source, r.event) for r in own}
    added = [name for name in states if name not in base.states]
    rows: list[Row] = []
    done: set[tuple[int, str]] = set()
    for row in base.rows:
        if row.wildcard is None or (row.line, row.event) in done:
            continue
        done.add((row.line, row.event))
        for sname in added:
            if (sname, row.event) in own_pairs or (states[sname].final and row.wildcard != "="):
                continue
            dest = sname if row.wildcard == "=" else row.wildcard
            rows.append(Row(sname, row.event, row.guards, dest, row.actions, row.line,
                            wildcard=row.wildcard))
    return rows


def _row_nodes(reader: _Reader, item: yaml.Node) -> tuple[yaml.Node, ...]:
    """The five nodes of a row, written ``[source, event, guards, dest, actions]`` or as the
    mapping ``{row: [source, event, guards, dest], actions: [...]}`` (block style)."""
    if isinstance(item, yaml.SequenceNode) and len(item.value) == 5:
        return tuple(item.value)
    if not isinstance(item, yaml.MappingNode):
        reader.fail(item, "a row is [source, event, guards, dest, actions], or row: [source, event, guards, dest] with actions:")
    fields = {k: v for k, _, v in reader.mapping(item, "a row")}
    if set(fields) != set(ROW_KEYS):
        reader.fail(item, f"a row written as a mapping has exactly the keys {' and '.join(ROW_KEYS)}, not {', '.join(fields)}")
    head = fields["row"]
    if not isinstance(head, yaml.SequenceNode) or len(head.value) != 4:
        reader.fail(head, "row: is [source, event, guards, dest] (the actions follow under actions:)")
    return (*head.value, fields["actions"])


# --------------------------------------------------------------------------- validation


def _validate(reader: _Reader, m: Machine) -> None:
    by_pair: dict[tuple[str, str], list[Row]] = {}
    for row in m.rows:
        by_pair.setdefault((row.source, row.event), []).append(row)
    for (source, event), rows in by_pair.items():
        for i, row in enumerate(rows):
            for earlier in rows[:i]:
                if not earlier.guards:
                    reader.fail(row.line, f"row ({source}, {event}) can never fire: the unguarded row at line {earlier.line} always takes it first")
                if set(earlier.guards) == set(row.guards):
                    reader.fail(row.line, f"duplicate row ({source}, {event}) with the same guards as line {earlier.line}")
    # Reachability from the initial state, ignoring guards.
    reached, todo = {m.initial}, [m.initial]
    while todo:
        here = todo.pop()
        for row in m.rows:
            if row.source == here and row.dest not in reached:
                reached.add(row.dest)
                todo.append(row.dest)
    for state in m.states.values():
        if state.name not in reached:
            reader.fail(state.line, f"state {state.name!r} of {m.name!r} is unreachable from {m.initial!r}")
    for state in m.states.values():
        leaving = [r for r in m.rows if r.source == state.name and r.dest != state.name]
        if state.final and leaving:
            reader.fail(leaving[0].line, f"final state {state.name!r} has a row leaving it")
        if not state.final and not leaving:
            reader.fail(state.line, f"state {state.name!r} of {m.name!r} is a dead end: no row leaves it and it is not marked final")


def _check_handwritten(reader: _Reader, m: Machine, src_root: Path) -> None:
    methods = handwritten_methods(src_root, m.module, m.class_name)
    if methods is None:
        reader.fail(m.class_line, f"class {m.class_name} not found in {m.module} (looked under {src_root})")
    own, inherited = methods
    available = {**inherited, **own}
    events = set(m.events)
    for row in m.rows:
        for guard in row.guards:
            if guard.name not in available:
                reader.fail(row.line, f"guard {guard.name!r} is not defined by {m.class_name} ({m.module})")
        for action in row.actions:
            if action not in available:
                reader.fail(row.line, f"action {action!r} is not defined by {m.class_name} ({m.module})")
    for state in m.states.values():
        for action in state.on_enter + state.on_exit:
            if action not in available:
                reader.fail(state.line, f"action {action!r} of state {state.name!r} is not defined by {m.class_name} ({m.module})")
    used = set(m.actions) | set(m.guards)
    for name, where in own.items():
        if name in events:
            reader.fail(m.class_line, f"{m.class_name}.{name} ({where}) shadows the event {name!r}")
        if name not in used and not name.startswith("_"):
            reader.fail(m.class_line, f"{m.class_name}.{name} ({where}) is public but no row or state uses it: use it, or make it private (_{name})")


#: Decorators of a machine's methods that are not actions or guards of its table.
NOT_ACTIONS = ("property", "staticmethod", "facade_call")


def handwritten_methods(src_root: Path, module: str,
                        class_name: str) -> tuple[dict[str, str], dict[str, str]] | None:
    """Return ({name: 'file:line'} defined by the class, {...} inherited from hand-written bases).

    Found by reading the source with ``ast`` rather than importing it: the hand-written
    module imports the generated one, which may not exist yet on a first generation.
    Bases imported from other hand-written modules of the package are followed; generated
    mixins and third-party bases are not.
    """
    found = _find_class(src_root, module, class_name)
    if found is None:
        return None
    tree, cls, file = found
    own = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # Properties, and methods the facade calls rather than a row (``@facade_call``).
            is_property = any(isinstance(d, ast.Name) and d.id in NOT_ACTIONS or
                              isinstance(d, ast.Attribute) for d in node.decorator_list)
            if not node.name.startswith("__") and not is_property:
                own[node.name] = f"{file}:{node.lineno}"
    inherited: dict[str, str] = {}
    imports = _imports(tree)
    for base in cls.bases:
        if not isinstance(base, ast.Name):
            continue
        base_module = imports.get(base.id, module if _find_class(src_root, module, base.id) else None)
        if base_module is None or "_generated" in base_module:
            continue
        sub = handwritten_methods(src_root, base_module, base.id)
        if sub is not None:
            inherited.update(sub[1])
            inherited.update(sub[0])
    return own, inherited


def _find_class(src_root: Path, module: str,
                class_name: str) -> tuple[ast.Module, ast.ClassDef, Path] | None:
    file = src_root.joinpath(*module.split(".")).with_suffix(".py")
    if not file.exists():
        return None
    tree = ast.parse(file.read_text(), str(file))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            rel = file.relative_to(src_root.parent) if src_root.parent in file.parents else file
            return tree, node, rel
    return None


def _imports(tree: ast.Module) -> dict[str, str]:
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                out[alias.asname or alias.name] = node.module
    return out


# --------------------------------------------------------------------------- signatures


@dataclass(frozen=True)
class _Use:
    """One place protocols.yaml calls a guard or action: with what, where."""

    kind: str  # "guard" or "action"
    params: tuple[str, ...]
    line: int
    event: str | None  # None: an on_enter / on_exit action of ``state``
    state: str = ""
    machine: str = ""

    def carries(self) -> str:
        if self.event is None:
            return "on_enter/on_exit actions take no event arguments"
        return f"event {self.event!r} of {self.machine!r} carries ({', '.join(self.params)})"


def _check_signatures(reader: _Reader, machines: list[Machine], src_root: Path) -> None:
    """Every guard and action accepts exactly what its events carry (the module docstring's
    last rule). A method shared by several machines is checked against all its uses."""
    uses: dict[tuple[str, int], tuple[str, ast.FunctionDef, list[_Use]]] = {}
    found: dict[str, dict[str, tuple[str, ast.FunctionDef]]] = {}
    for m in machines:
        functions = found[m.name] = handwritten_functions(src_root, m.module, m.class_name)

        def use(name: str, u: _Use,
                functions: dict[str, tuple[str, ast.FunctionDef]] = functions) -> None:
            where, node = functions[name]
            uses.setdefault((where, node.lineno), (where, node, []))[2].append(u)

        for state in m.states.values():
            for name in state.on_enter + state.on_exit:
                use(name, _Use("action", (), state.line, None, state.name, m.name))
        for row in m.rows:
            params = tuple(p.name for p in m.params[row.event])
            for guard in row.guards:
                use(guard.name, _Use("guard", params, row.line, row.event, machine=m.name))
            for action in row.actions:
                use(action, _Use("action", params, row.line, row.event, machine=m.name))
    for (where, lineno), (_, node, used) in sorted(uses.items(), key=lambda item: min(u.line for u in item[1][2])):
        _check_signature(reader, f"{where}:{lineno}", node, sorted(used, key=lambda u: u.line))
    for m in machines:
        m.methods = _methods(m, found[m.name])


def _methods(m: Machine, functions: dict[str, tuple[str, ast.FunctionDef]]) -> dict[str, Method]:
    """Each guard and action of ``m`` shaped as its hand-written definition (checked above
    against every event it serves), each parameter typed as the events of ``m`` that it
    serves declare it (their union where they differ)."""
    types: dict[str, dict[str, dict[str, None]]] = {}
    for row in m.rows:
        for name in [g.name for g in row.guards] + list(row.actions):
            for p in m.params[row.event]:
                types.setdefault(name, {}).setdefault(p.name, {})[p.type] = None
    out = {}
    for name in m.guards + [a for a in m.actions if a not in m.guards]:
        node = functions[name][1]
        names = [a.arg for a in node.args.posonlyargs + node.args.args][1:]
        typed = tuple((n, " | ".join(types[name][n])) for n in names)
        out[name] = Method(name, typed, node.args.vararg is not None, name in m.guards)
    return out


def _check_signature(reader: _Reader, where: str, node: ast.FunctionDef, uses: list[_Use]) -> None:
    args = node.args
    names = tuple(a.arg for a in args.posonlyargs + args.args)[1:]  # after self
    first = uses[0]
    what = f"{first.kind} {node.name!r} ({where})"
    if args.kwonlyargs or args.kwarg:
        reader.fail(first.line, f"{what} takes keyword-only parameters or **kwargs: events pass their parameters by position")
    takes = ", ".join(names)
    if args.vararg is None:
        for u in uses:
            if u.params != names:
                subject = f"{u.kind} {node.name!r} ({where})"
                if u.event is None:
                    subject += f" of state {u.state!r}"
                reader.fail(u.line, f"{subject} takes ({takes}) but {u.carries()}")
        return
    star = f"*{args.vararg.arg}"
    carried = list(dict.fromkeys(u.params for u in uses))
    if len(carried) == 1:
        reader.fail(first.line, f"{what} takes {star} but every event it serves carries "
                    f"({', '.join(carried[0])}): take exactly those")
    common = carried[0]
    for params in carried[1:]:
        common = common[:_prefix(common, params)]
    if names != common:
        listed = "; ".join(f"({', '.join(p)})" for p in carried)
        reader.fail(first.line, f"{what} takes ({', '.join(names + (star,))}) but the events it serves carry "
                    f"{listed}: name what they all start with, ({', '.join(common + (star,))})")


def _prefix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    while n < len(a) and n < len(b) and a[n] == b[n]:
        n += 1
    return n


def handwritten_functions(src_root: Path, module: str, class_name: str) -> dict[str, tuple[str, ast.FunctionDef]]:
    """{name: (file, definition)} of the methods a hand-written class really uses: its own,
    else the first hand-written base's that has one, bases in order, depth first (as
    Python's method order for these single-line hierarchies); generated mixins are skipped."""
    found = _find_class(src_root, module, class_name)
    if found is None:
        return {}
    tree, cls, file = found
    out: dict[str, tuple[str, ast.FunctionDef]] = {}
    for node in cls.body:
        # (a machine's guards and actions are plain methods: `async def` is not one)
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("__"):
            out[node.name] = (str(file), node)
    imports = _imports(tree)
    for base in cls.bases:
        if not isinstance(base, ast.Name):
            continue
        base_module = imports.get(base.id, module if _find_class(src_root, module, base.id) else None)
        if base_module is None or "_generated" in base_module:
            continue
        for name, value in handwritten_functions(src_root, base_module, base.id).items():
            out.setdefault(name, value)
    return out
