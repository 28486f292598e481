"""The mutant generators of ``make mutate`` (tools/mutate/yaml_mutants.py and
action_mutants.py), on a small table and a small module: exactly which mutants they make,
with which key, line and text. The keys are what tools/mutation_equivalents.yaml refers to,
so a change here is a change of every key there."""

from __future__ import annotations

import difflib

from tools.mutate.action_mutants import module_mutants
from tools.mutate.yaml_mutants import yaml_mutants

TABLE = """\
machines:
  door:
    class: toy.door:Door
    initial: shut
    states:
      shut:
      open:
        on_enter: [ring, light]
    rows:
      - [shut, evt_push, [is_unlocked, '!is_jammed'], open, [count, log_open]]
      - ['*',  evt_kick, [], '=', []]
  pipe:
    class: toy.pipe:Pipe
    extends: door
    rows:
      - [open, evt_push, [], shut, [close]]
"""

PUSH = "[shut, evt_push, [is_unlocked, '!is_jammed'], open, [count, log_open]]"
KICK = "['*', evt_kick, [], '=', []]"
ON_ENTER = "state open on_enter [ring, light]"
PIPE_PUSH = "[open, evt_push, [], shut, [close]]"


def changed_lines(original: str, mutated: str) -> list[tuple[str, str]]:
    """The lines a mutant changes, as (before, after) pairs; a removed line has no after."""
    diff = [line for line in difflib.ndiff(original.splitlines(), mutated.splitlines())
            if line[:1] in "-+"]
    before = [line[2:].strip() for line in diff if line[0] == "-"]
    after = [line[2:].strip() for line in diff if line[0] == "+"]
    return list(zip(before, after + [""] * (len(before) - len(after)), strict=True))


def test_the_yaml_generator_makes_these_mutants_of_a_small_table_in_file_order():
    mutants = yaml_mutants(TABLE)

    assert [(m.key, m.line) for m in mutants] == [
        (f"door | {ON_ENTER} | drop on_enter action ring of open", 8),
        (f"door | {ON_ENTER} | drop on_enter action light of open", 8),
        (f"door | {ON_ENTER} | swap on_enter actions ring, light of open", 8),
        (f"door | {PUSH} | remove row (shut, evt_push)", 10),
        (f"door | {PUSH} | dest open -> shut", 10),  # the state after open, cyclically
        (f"door | {PUSH} | drop action count", 10),
        (f"door | {PUSH} | drop action log_open", 10),
        (f"door | {PUSH} | swap actions count, log_open", 10),
        (f"door | {PUSH} | drop guard is_unlocked", 10),
        (f"door | {PUSH} | drop guard !is_jammed", 10),
        (f"door | {PUSH} | negate guard is_unlocked -> !is_unlocked", 10),
        (f"door | {PUSH} | negate guard !is_jammed -> is_jammed", 10),
        (f"door | {KICK} | remove row (*, evt_kick)", 11),
        (f"door | {KICK} | dest = -> shut", 11),  # '=' from '*': the first two states
        (f"door | {KICK} | dest = -> open", 11),
        # A machine that extends another: its own rows only, over the base's states.
        (f"pipe | {PIPE_PUSH} | remove row (open, evt_push)", 16),
        (f"pipe | {PIPE_PUSH} | dest shut -> open", 16),
        (f"pipe | {PIPE_PUSH} | drop action close", 16),
    ]
    assert {(m.family, m.path) for m in mutants} == {("yaml", "protocols.yaml")}
    assert [(m.group, m.related) for m in mutants[:1] + mutants[-1:]] == [
        ("door", "door"), ("pipe", "pipe")]


def test_each_yaml_mutant_rewrites_only_what_it_changes():
    changes = [changed_lines(TABLE, m.text) for m in yaml_mutants(TABLE)]

    row = "- " + PUSH
    assert changes == [
        [("on_enter: [ring, light]", "on_enter: [light]")],
        [("on_enter: [ring, light]", "on_enter: [ring]")],
        [("on_enter: [ring, light]", "on_enter: [light, ring]")],
        [(row, "")],
        [(row, row.replace("], open,", "], shut,"))],
        [(row, row.replace("[count, log_open]", "[log_open]"))],
        [(row, row.replace("[count, log_open]", "[count]"))],
        [(row, row.replace("[count, log_open]", "[log_open, count]"))],
        [(row, row.replace("[is_unlocked, '!is_jammed']", "['!is_jammed']"))],
        [(row, row.replace("[is_unlocked, '!is_jammed']", "[is_unlocked]"))],
        [(row, row.replace("[is_unlocked, '!is_jammed']", "['!is_unlocked', '!is_jammed']"))],
        [(row, row.replace("[is_unlocked, '!is_jammed']", "[is_unlocked, is_jammed]"))],
        [("- ['*',  evt_kick, [], '=', []]", "")],
        [("- ['*',  evt_kick, [], '=', []]", "- ['*',  evt_kick, [], shut, []]")],
        [("- ['*',  evt_kick, [], '=', []]", "- ['*',  evt_kick, [], open, []]")],
        [("- " + PIPE_PUSH, "")],
        [("- " + PIPE_PUSH, "- [open, evt_push, [], open, [close]]")],
        [("- " + PIPE_PUSH, "- [open, evt_push, [], shut, []]")],
    ]


def test_mutants_of_a_transport_level_machine_also_run_the_integration_tests():
    table = TABLE.replace("toy.pipe:Pipe", "scaproust.core.pipe:Pipe")

    assert {m.group: m.transport for m in yaml_mutants(table)} == {"door": False, "pipe": True}


SOURCE = '''\
import logging

log = logging.getLogger(__name__)
LIMIT = 3


class Door:
    def __repr__(self):
        return f"<Door {self.n == 1}>"

    def push(self, n):
        if n >= LIMIT and self.open:
            self.ring()
        log.debug("pushed %d", n + 1)

    def pull(self, item):
        self.count = 0 if item in self.seen else self.count + 2
        self.locked = True
        return item is None
'''


def test_the_action_generator_makes_these_mutants_of_a_small_module_in_site_order():
    # Nothing at module level, in __repr__ or in a logging call; one mutant per site.
    mutants = module_mutants("src/toy/door.py", SOURCE)

    assert [(m.key, m.line, changed_lines(SOURCE, m.text)) for m in mutants] == [
        ("src/toy/door.py | Door.push | negate the condition `n >= LIMIT and self.open`", 12,
         [("if n >= LIMIT and self.open:", "if not (n >= LIMIT and self.open):")]),
        ("src/toy/door.py | Door.push | 'and' -> 'or' in `n >= LIMIT and self.open`", 12,
         [("if n >= LIMIT and self.open:", "if n >= LIMIT or self.open:")]),
        ("src/toy/door.py | Door.push | '>=' -> '>' in `n >= LIMIT`", 12,
         [("if n >= LIMIT and self.open:", "if n > LIMIT and self.open:")]),
        ("src/toy/door.py | Door.push | remove the call `self.ring()`", 13,
         [("self.ring()", "pass")]),
        ("src/toy/door.py | Door.pull | negate the condition `item in self.seen`", 17,
         [("self.count = 0 if item in self.seen else self.count + 2",
           "self.count = 0 if not (item in self.seen) else self.count + 2")]),
        ("src/toy/door.py | Door.pull | 'in' -> 'not in' in `item in self.seen`", 17,
         [("self.count = 0 if item in self.seen else self.count + 2",
           "self.count = 0 if item not in self.seen else self.count + 2")]),
        ("src/toy/door.py | Door.pull | 0 -> 1 in `0 if item in self.seen else self.count + 2`", 17,
         [("self.count = 0 if item in self.seen else self.count + 2",
           "self.count = 1 if item in self.seen else self.count + 2")]),
        ("src/toy/door.py | Door.pull | 2 -> 3 in `self.count + 2`", 17,
         [("self.count = 0 if item in self.seen else self.count + 2",
           "self.count = 0 if item in self.seen else self.count + 3")]),
        ("src/toy/door.py | Door.pull | 2 -> 0 in `self.count + 2`", 17,
         [("self.count = 0 if item in self.seen else self.count + 2",
           "self.count = 0 if item in self.seen else self.count + 0")]),
        ("src/toy/door.py | Door.pull | True -> False in `self.locked = True`", 18,
         [("self.locked = True", "self.locked = False")]),
        ("src/toy/door.py | Door.pull | 'is' -> 'is not' in `item is None`", 19,
         [("return item is None", "return item is not None")]),
    ]
    assert {(m.family, m.group, m.path, m.related, m.transport) for m in mutants} == {
        ("actions", "toy/door.py", "src/toy/door.py", "door", False)}
    assert mutants[0].what == "Door.push: negate the condition `n >= LIMIT and self.open`"


def test_two_identical_sites_in_one_function_get_numbered_keys():
    source = "def close(pipe):\n    pipe.flush()\n    pipe.flush()\n"

    mutants = module_mutants("src/scaproust/core/pipe.py", source)

    assert [(m.key, m.line) for m in mutants] == [
        ("src/scaproust/core/pipe.py | close | remove the call `pipe.flush()`", 2),
        ("src/scaproust/core/pipe.py | close | remove the call `pipe.flush()` #2", 3),
    ]
    assert {(m.group, m.related, m.transport) for m in mutants} == {("core/pipe.py", "pipe", True)}


def test_a_row_of_a_state_that_an_extension_adds_has_its_destination_mutated():
    table = TABLE.replace('''    extends: door
    rows:''', '''    extends: door
    states:
      draining:
    rows:
      - [open, evt_drain, [], draining, []]''')
    keys = [m.key for m in yaml_mutants(table) if m.key.startswith("pipe | ")]
    drain = "[open, evt_drain, [], draining, []]"
    # The extension's states are the base's, then its own: shut, open, draining.
    assert f"pipe | {drain} | dest draining -> shut" in keys
    assert f"pipe | {drain} | dest draining -> open" in keys
