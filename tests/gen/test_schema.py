"""protocols.yaml validation: every rule fails with `protocols.yaml:<line>: <what is wrong>`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codegen.schema import Guard, Row, SpecError, _override, load

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "protocols.yaml"
REAL = SPEC.read_text()


def line_of(text: str, needle: str, machine: str | None = None) -> int:
    """1-based line of the first line containing needle (inside ``machine``'s block if given)."""
    first = text[:text.index(f"\n  {machine}:\n")].count("\n") + 1 if machine else 0
    for number, line in enumerate(text.splitlines(), 1):
        if number > first and needle in line:
            return number
    raise AssertionError(f"{needle!r} not in text")


def edited(old: str, new: str, machine: str | None = None) -> str:
    """protocols.yaml with ``old`` replaced by ``new``: its only occurrence, or the first
    inside ``machine``'s block (other machines may share a row's text)."""
    if machine is None:
        machine = {PUSH_SEND: "push"}.get(old)
    if machine is None:
        assert REAL.count(old) == 1, f"{old!r} must occur once in protocols.yaml"
        return REAL.replace(old, new)
    start = REAL.index(f"\n  {machine}:\n")
    at = REAL.index(old, start)
    return REAL[:at] + new + REAL[at + len(old):]


def error_of(text: str, src_root: Path = ROOT / "src") -> SpecError:
    with pytest.raises(SpecError) as info:
        load(SPEC, source=text, src_root=src_root)
    return info.value


PUSH_SEND = "      - [open,   cmd_send,         [], open,   [send_round_robin]]"


def test_the_real_table_is_valid():
    spec = load(SPEC, src_root=ROOT / "src")
    assert {"pipe", "listener", "dialer", "socket", "pair", "push", "pull"} <= set(spec.machines)


def test_a_row_naming_an_unknown_state_fails_on_its_line():
    text = edited(PUSH_SEND, PUSH_SEND.replace("open,   [send", "opne,   [send"))
    err = error_of(text)
    assert str(err) == f"protocols.yaml:{line_of(text, 'opne')}: unknown state 'opne' in machine 'push'"


def test_a_duplicate_row_fails_on_the_second_copy():
    text = edited(PUSH_SEND, PUSH_SEND + "\n" + PUSH_SEND.replace("[send_round_robin]", "[discard]"))
    err = error_of(text)
    assert err.line == line_of(text, PUSH_SEND, "push") + 1
    assert "can never fire" in err.message


def test_rows_with_the_same_guards_are_duplicates():
    row = "      - [paired,   evt_pipe_ready,   [is_peer], paired,   [send_backlog, grant_capacity]]"
    text = edited(row, row + "\n" + row.replace("[send_backlog, grant_capacity]", "[]"), "pair")
    err = error_of(text)
    assert err.line == line_of(text, row, "pair") + 1
    assert err.message.startswith("duplicate row (paired, evt_pipe_ready) with the same guards")


def test_guarded_alternatives_are_allowed():
    # The real pair table has [is_peer] then an unguarded row for the same pair.
    machine = load(SPEC, src_root=ROOT / "src").machines["pair"]
    rows = machine.rows_for("paired", "evt_pipe_removed")
    assert [str(g) for g in rows[0].guards] == ["is_peer"] and rows[1].guards == ()


def test_an_unreachable_state_fails_on_its_declaration():
    text = edited("      closed:\n        final: true\n    rows:\n      - [open,   evt_pipe_added,   [], open,   []]",
                  "      closed:\n        final: true\n      orphan:\n        final: true\n    rows:\n"
                  "      - [open,   evt_pipe_added,   [], open,   []]", "pull")
    err = error_of(text)
    assert str(err) == f"protocols.yaml:{line_of(text, 'orphan:')}: state 'orphan' of 'pull' is unreachable from 'open'"


def test_a_dead_end_not_marked_final_fails():
    text = edited("    initial: open\n    states:\n      open:\n      closed:\n        final: true\n    rows:\n"
                  "      - [open,   evt_pipe_added,   [], open,   []]",
                  "    initial: open\n    states:\n      open:\n      closed:\n    rows:\n"
                  "      - [open,   evt_pipe_added,   [], open,   []]", "pull")
    err = error_of(text)
    assert err.message == "state 'closed' of 'pull' is a dead end: no row leaves it and it is not marked final"


def test_a_missing_initial_state_fails():
    text = edited("    initial: open\n", "    initial: opened\n", "pull")
    err = error_of(text)
    assert str(err) == f"protocols.yaml:{line_of(text, 'initial: opened')}: initial state 'opened' is not one of the states of 'pull'"


def test_a_machine_without_initial_fails():
    text = edited("    initial: open\n", "", "pull")
    assert error_of(text).message == "machine 'pull' has no 'initial'"


def test_an_undefined_action_fails_on_its_row():
    text = edited(PUSH_SEND, PUSH_SEND.replace("send_round_robin", "send_randomly"))
    err = error_of(text)
    assert str(err) == (f"protocols.yaml:{line_of(text, 'send_randomly')}: action 'send_randomly' "
                        "is not defined by Push (scaproust.protocols.push)")


def test_an_undefined_guard_fails_on_its_row():
    text = edited(PUSH_SEND, PUSH_SEND.replace("cmd_send,         []", "cmd_send,         [has_room]"))
    err = error_of(text)
    assert err.line == line_of(text, "has_room")
    assert err.message == "guard 'has_room' is not defined by Push (scaproust.protocols.push)"


def test_a_public_method_that_no_row_uses_fails(tmp_path):
    package = tmp_path / "src" / "scaproust" / "protocols"
    shutil.copytree(ROOT / "src/scaproust/protocols", package)
    (tmp_path / "src" / "scaproust" / "core").symlink_to(ROOT / "src" / "scaproust" / "core")
    original = (package / "push.py").read_text()
    header = "class Push(PushFSM, LoadBalancer):\n"
    (package / "push.py").write_text(original.replace(
        header, header + "    def shuffle_pipes(self):\n        pass\n\n"))
    err = error_of(REAL, tmp_path / "src")
    assert err.line == line_of(REAL, "class: scaproust.protocols.push:Push")
    assert re.fullmatch(r"Push\.shuffle_pipes \(src/scaproust/protocols/push\.py:\d+\) is public but no row "
                        r"or state uses it: use it, or make it private \(_shuffle_pipes\)", err.message)


def test_an_event_must_say_whether_it_is_a_command_or_an_event():
    text = edited(PUSH_SEND, PUSH_SEND.replace("cmd_send", "send_msg"))
    err = error_of(text)
    assert err.line == line_of(text, "send_msg")
    assert "must be named cmd_<verb>" in err.message


def test_a_final_state_cannot_be_left():
    text = edited("      - [closed, cmd_close,        [], closed, []]\n\n  pull:",
                  "      - [closed, cmd_close,        [], open, []]\n\n  pull:")
    err = error_of(text)
    assert err.message == "final state 'closed' has a row leaving it"


def test_an_unknown_policy_fails():
    text = edited("\nunlisted: error\n", "\nunlisted: maybe\n")
    err = error_of(text)
    assert str(err) == f"protocols.yaml:{line_of(text, 'unlisted: maybe')}: unlisted must be one of ('error', 'ignore'), not 'maybe'"


def test_an_unknown_policy_of_one_machine_fails():
    text = edited("    class: scaproust.protocols.pull:Pull\n", "    class: scaproust.protocols.pull:Pull\n    unlisted: maybe\n")
    err = error_of(text)
    assert err.line == line_of(text, "unlisted: maybe")


def test_every_machine_takes_the_file_level_policy_unless_it_sets_its_own():
    spec = load(SPEC, src_root=ROOT / "src")
    assert {m.unlisted for m in spec.machines.values()} == {"error"}
    text = edited("    class: scaproust.protocols.pull:Pull\n", "    class: scaproust.protocols.pull:Pull\n    unlisted: ignore\n")
    spec = load(SPEC, source=text, src_root=ROOT / "src")
    assert spec.machines["pull"].unlisted == "ignore"
    assert spec.machines["sub_raw"].unlisted == "ignore"  # it extends pull
    assert spec.machines["push"].unlisted == "error"


def test_without_a_file_level_policy_a_machine_must_set_its_own():
    text = edited("\nunlisted: error\n", "\n")
    assert error_of(text).message == "machine 'pipe' has no 'unlisted' and the file sets no default"


def test_an_unknown_top_level_key_fails():
    text = edited("\nunlisted: error\n", "\nunlisted: error\nunlistd: ignore\n")
    err = error_of(text)
    assert str(err) == f"protocols.yaml:{line_of(text, 'unlistd')}: unknown top-level key 'unlistd' (allowed: machines, parameters, types, unlisted)"


def test_make_regen_cli_reports_a_broken_row_with_its_line(tmp_path):
    broken = edited(PUSH_SEND, PUSH_SEND.replace("open,   [send", "nowhere, [send"))
    spec = tmp_path / "protocols.yaml"
    spec.write_text(broken)
    proc = subprocess.run([sys.executable, "-m", "codegen", "--no-svg", "--spec", str(spec)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"protocols.yaml:{line_of(broken, 'nowhere')}: unknown state 'nowhere' in machine 'push'"


# ------------------------------------------------------------------ extends


BUS_EXTENDS = "    extends: bus_raw\n"


def test_a_machine_that_extends_another_has_its_table_with_its_own_rows_in_their_place():
    spec = load(SPEC, src_root=ROOT / "src")
    bus, raw = spec.machines["bus"], spec.machines["bus_raw"]
    assert (bus.extends, bus.initial, bus.unlisted, bus.states) == ("bus_raw", raw.initial, raw.unlisted, raw.states)
    assert [(r.source, r.event, r.dest) for r in bus.rows] == [(r.source, r.event, r.dest) for r in raw.rows]
    changed = [(r.event, r.actions) for r, b in zip(bus.rows, raw.rows, strict=True) if r.actions != b.actions]
    assert changed == [("evt_pipe_recv", ("deliver",)), ("cmd_send", ("send_to_all",))]
    assert [r.line for r in spec.machines["rep"].rows] == [r.line for r in spec.machines["rep_raw"].rows]


def test_an_own_row_replaces_every_guarded_alternative_in_place_and_a_new_pair_comes_last():
    def row(source, event, guards=(), actions=()):
        return Row(source, event, tuple(Guard(g) for g in guards), source, tuple(actions), 1)

    base = [row("a", "evt_x", ["ok"], ["one"]), row("a", "evt_x", [], ["two"]), row("a", "cmd_y")]
    own = [row("b", "cmd_z", [], ["new"]), row("a", "evt_x", [], ["mine"])]

    assert _override(base, own) == [own[1], base[2], own[0]]


def test_extending_an_unknown_or_later_machine_fails_on_the_extends_line():
    text = edited(BUS_EXTENDS, BUS_EXTENDS.replace("bus_raw", "pair1"), "bus")
    err = error_of(text)
    assert str(err) == (f"protocols.yaml:{line_of(text, 'extends: pair1', 'bus')}: machine 'bus' "
                        "extends 'pair1', which is not a machine declared before it")


def test_a_machine_that_extends_another_may_not_restate_its_states():
    text = edited(BUS_EXTENDS, BUS_EXTENDS + "    initial: open\n", "bus")
    err = error_of(text)
    assert str(err) == (f"protocols.yaml:{line_of(text, 'initial: open', 'bus')}: machine 'bus' "
                        "extends 'bus_raw': its 'initial' is 'bus_raw''s, not restated")


# ------------------------------------------------------------------ rows in block style


def test_a_row_written_as_a_mapping_is_the_same_row():
    flow = "      - [surveying,         evt_pipe_recv,    [], surveying, [deliver_current]]\n"
    block = "      - row: [surveying, evt_pipe_recv, [], surveying]\n        actions:\n          - deliver_current\n"
    before = load(SPEC, src_root=ROOT / "src").machines["surveyor"]
    after = load(SPEC, source=edited(flow, block, "surveyor"), src_root=ROOT / "src").machines["surveyor"]
    strip = [(r.source, r.event, r.guards, r.dest, r.actions) for r in before.rows]
    assert [(r.source, r.event, r.guards, r.dest, r.actions) for r in after.rows] == strip


def test_the_block_rows_of_the_real_table_read_as_their_flow_form():
    rows = load(SPEC, src_root=ROOT / "src").machines["pair1_raw"].rows_for("paired", "evt_pipe_recv")
    assert [r.actions for r in rows] == [
        ("deliver_with_hops",),
        ("deliver_with_hops", "reject_malformed_peer", "forget_peer", "grant_capacity"),
        ("discard",),
    ]
    assert rows[1].line == line_of(REAL, "- row: [paired, evt_pipe_recv, [is_peer], unpaired]", "pair1_raw")


@pytest.mark.parametrize(("block", "message"), [
    ("      - row: [surveying, evt_pipe_recv, [], surveying]\n",
     "a row written as a mapping has exactly the keys row and actions, not row"),
    ("      - row: [surveying, evt_pipe_recv, []]\n        actions: [deliver_current]\n",
     "row: is [source, event, guards, dest] (the actions follow under actions:)"),
    ("      - surveying\n",
     "a row is [source, event, guards, dest, actions], or row: [source, event, guards, dest] with actions:"),
])
def test_a_malformed_block_row_fails_on_its_line(block, message):
    flow = "      - [surveying,         evt_pipe_recv,    [], surveying, [deliver_current]]\n"
    text = edited(flow, block, "surveyor")
    err = error_of(text)
    assert (err.line, err.message) == (line_of(text, block.splitlines()[0].strip(), "surveyor"), message)


# ------------------------------------------------------------------ states added by extends


def test_a_machine_that_extends_another_may_add_states_and_the_bases_wildcards_cover_them():
    spec = load(SPEC, src_root=ROOT / "src")
    tls, pipe = spec.machines["tls_pipe"], spec.machines["pipe"]
    assert list(tls.states) == [*pipe.states, "tls_handshaking", "tls_closing"]
    assert tls.states["handshaking"] is pipe.states["handshaking"]
    rows = {(r.source, r.event, r.guards, r.dest) for r in tls.rows}
    # The base's '*' rows, expanded over the new states as over the base's own:
    for state in ("tls_handshaking", "tls_closing"):
        assert (state, "cmd_close", (), "dead") in rows
        assert (state, "evt_crashed", (), "dead") in rows
        assert (state, "cmd_pause", (), state) in rows  # '=' stays where it is
        assert (state, "cmd_resume", (), state) in rows
    # ... but not where the new machine has a row of its own for the event.
    assert ("tls_closing", "evt_msgs", (), "tls_closing") in rows
    assert [(r.source, r.dest) for r in tls.rows if r.event == "evt_connected"] == \
        [("connecting", "tls_handshaking")]


def test_a_machine_that_extends_another_may_not_restate_a_state_of_its_base():
    text = edited("    states:\n      tls_handshaking:\n",
                  "    states:\n      active:\n      tls_handshaking:\n", "tls_pipe")
    err = error_of(text)
    assert str(err) == (f"protocols.yaml:{line_of(text, '      active:', 'tls_pipe')}: machine "
                        "'tls_pipe' extends 'pipe': its state 'active' is 'pipe''s, not restated")
