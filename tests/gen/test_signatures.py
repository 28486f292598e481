"""Events declare what they carry, and codegen holds every guard and action to it (issue 9,
item 1): each error with its exact text and its line in protocols.yaml."""

from __future__ import annotations

import inspect
import shutil
import typing
from pathlib import Path

import pytest

from codegen.schema import Param, SpecError, load

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "protocols.yaml"
REAL = SPEC.read_text()

PUB_SEND = "      - [open,   cmd_send,         [], open,   [send_to_all]]"
PROTOCOL_EVENTS = ("    events: {evt_pipe_added: [pipe], evt_pipe_removed: [pipe], evt_pipe_ready: [pipe],\n"
                   "             evt_pipe_recv: [pipe, msgs], cmd_send: [item], cmd_send_many: [items],\n"
                   "             cmd_close: []}\n")


def line_of(text: str, needle: str, machine: str) -> int:
    """1-based line of the first line containing ``needle`` inside ``machine``'s block."""
    first = text[:text.index(f"\n  {machine}:\n")].count("\n") + 1
    for number, line in enumerate(text.splitlines(), 1):
        if number > first and needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {machine}")


def edited(old: str, new: str, machine: str) -> str:
    """protocols.yaml with the first ``old`` inside ``machine``'s block replaced by ``new``."""
    at = REAL.index(old, REAL.index(f"\n  {machine}:\n"))
    return REAL[:at] + new + REAL[at + len(old):]


def source_with(tmp_path: Path, path: str, old: str, new: str) -> tuple[Path, int]:
    """A copy of src/ with one edit in ``path`` (under src/scaproust/); the edit's line."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "scaproust", src / "scaproust",
                    ignore=shutil.ignore_patterns("__pycache__"))
    file = src / "scaproust" / path
    text = file.read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {path}"
    file.write_text(text.replace(old, new))
    return src, text[:text.index(old)].count("\n") + 1


def error_of(text: str = REAL, src_root: Path = ROOT / "src") -> SpecError:
    with pytest.raises(SpecError) as info:
        load(SPEC, source=text, src_root=src_root)
    return info.value


# ------------------------------------------------------------------ actions against their events


@pytest.mark.parametrize(("signature", "takes"), [
    ("(self)", "()"),                                    # too few
    ("(self, item, extra)", "(item, extra)"),            # too many
    ("(self, message)", "(message)"),                    # misnamed
])
def test_an_action_that_does_not_take_what_its_event_carries_fails_on_its_row(tmp_path, signature, takes):
    src, line = source_with(tmp_path, "protocols/pub.py", "def send_to_all(self, item: Item)",
                            f"def send_to_all{signature}")
    err = error_of(src_root=src)
    assert str(err) == (f"protocols.yaml:{line_of(REAL, PUB_SEND, 'pub')}: action 'send_to_all' "
                        f"(src/scaproust/protocols/pub.py:{line}) takes {takes} but event 'cmd_send' "
                        "of 'pub' carries (item)")


def test_a_guard_is_held_to_its_event_too(tmp_path):
    src, line = source_with(tmp_path, "protocols/sub.py", "def is_last_topic(self, topic: bytes)",
                            "def is_last_topic(self, pipe)")
    err = error_of(src_root=src)
    row = "[subscribed,   cmd_unsubscribe, [is_last_topic]"
    assert str(err) == (f"protocols.yaml:{line_of(REAL, row, 'sub')}: guard 'is_last_topic' "
                        f"(src/scaproust/protocols/sub.py:{line}) takes (pipe) but event "
                        "'cmd_unsubscribe' of 'sub' carries (topic)")


def test_an_on_enter_action_with_a_parameter_fails_on_its_state(tmp_path):
    src, line = source_with(tmp_path, "core/listener.py", "def watch_accept(self)",
                            "def watch_accept(self, reason)")
    err = error_of(src_root=src)
    assert str(err) == (f"protocols.yaml:{line_of(REAL, 'listening:', 'listener')}: action "
                        f"'watch_accept' (src/scaproust/core/listener.py:{line}) of state 'listening' "
                        "takes (reason) but on_enter/on_exit actions take no event arguments")


def test_an_action_used_on_enter_and_on_a_row_must_take_the_row_s_arguments_as_star_args(tmp_path):
    # forget_request: on_enter of closed (nothing), cmd_recv (nothing), evt_sent (header).
    src, line = source_with(tmp_path, "protocols/rep.py", "def forget_request(self, *args: object)",
                            "def forget_request(self)")
    err = error_of(src_root=src)
    row = "[answering,         evt_sent,       [answers_request], idle, [forget_request]]"
    assert str(err) == (f"protocols.yaml:{line_of(REAL, row, 'rep_ctx')}: action 'forget_request' "
                        f"(src/scaproust/protocols/rep.py:{line}) takes () but event 'evt_sent' of "
                        "'rep_ctx' carries (header)")


def test_star_args_where_every_event_carries_the_same_fails(tmp_path):
    src, line = source_with(tmp_path, "protocols/pub.py", "def send_to_all(self, item: Item)",
                            "def send_to_all(self, *args)")
    err = error_of(src_root=src)
    assert str(err) == (f"protocols.yaml:{line_of(REAL, PUB_SEND, 'pub')}: action 'send_to_all' "
                        f"(src/scaproust/protocols/pub.py:{line}) takes *args but every event it "
                        "serves carries (item): take exactly those")


def test_star_args_must_follow_the_parameters_every_event_starts_with(tmp_path):
    # is_peer guards evt_pipe_removed and evt_pipe_ready (pipe) and evt_pipe_recv (pipe, msgs).
    src, line = source_with(tmp_path, "protocols/pair.py", "def is_peer(self, pipe: Pipe, *args: object)",
                            "def is_peer(self, *args)")
    err = error_of(src_root=src)
    row = "[paired,   evt_pipe_removed, [is_peer], unpaired"
    assert str(err) == (f"protocols.yaml:{line_of(REAL, row, 'pair')}: guard 'is_peer' "
                        f"(src/scaproust/protocols/pair.py:{line}) takes (*args) but the events it "
                        "serves carry (pipe); (pipe, msgs): name what they all start with, (pipe, *args)")


def test_keyword_only_parameters_fail(tmp_path):
    src, line = source_with(tmp_path, "protocols/pub.py", "def send_to_all(self, item: Item)",
                            "def send_to_all(self, *, item)")
    err = error_of(src_root=src)
    assert str(err) == (f"protocols.yaml:{line_of(REAL, PUB_SEND, 'pub')}: action 'send_to_all' "
                        f"(src/scaproust/protocols/pub.py:{line}) takes keyword-only parameters or "
                        "**kwargs: events pass their parameters by position")


# ------------------------------------------------------------------ the declarations


def test_an_undeclared_event_fails_on_its_row():
    text = edited(PROTOCOL_EVENTS, PROTOCOL_EVENTS.replace(" cmd_send: [item],", ""), "pub")
    err = error_of(text)
    assert str(err) == (f"protocols.yaml:{line_of(text, PUB_SEND, 'pub')}: event 'cmd_send' of 'pub' "
                        "is not declared: add it under events: with the parameters it carries "
                        "(cmd_send: [] for none)")


def test_a_declared_event_no_row_uses_fails_on_its_declaration():
    text = edited(PROTOCOL_EVENTS, PROTOCOL_EVENTS.replace("cmd_close: []}", "cmd_close: [],\n"
                                                           "             cmd_flush: []}"), "pub")
    err = error_of(text)
    assert str(err) == (f"protocols.yaml:{line_of(text, 'cmd_flush', 'pub')}: event 'cmd_flush' is "
                        "declared by 'pub' but no row of it uses it")


def test_a_machine_without_events_fails():
    text = edited(PROTOCOL_EVENTS, "", "pub")
    assert error_of(text).message == "machine 'pub' has no 'events'"


@pytest.mark.parametrize(("params", "message"), [
    ("[item, item]", "parameter 'item' of cmd_send is repeated or reserved"),
    ("[self]", "parameter 'self' of cmd_send is repeated or reserved"),
    ("['2nd']", "parameter '2nd' of cmd_send is not a name (or name=<Python literal>)"),
    ("[item=nothing]", "the default of 'item' of cmd_send is not a Python literal: 'nothing'"),
    ("[item=1, more]", "parameter 'more' of cmd_send has no default but follows one that has"),
])
def test_a_malformed_parameter_list_fails_on_its_line(params, message):
    text = edited("cmd_send: [item]", f"cmd_send: {params}", "pub")
    err = error_of(text)
    assert (err.line, err.message) == (line_of(text, f"cmd_send: {params}", "pub"), message)


def test_a_machine_that_extends_another_has_its_declarations_and_may_not_restate_them():
    spec = load(SPEC, src_root=ROOT / "src")
    assert spec.machines["pair1"].params == spec.machines["pair"].params
    assert spec.machines["pair"].params["evt_pipe_recv"] == (Param("pipe", type="Pipe"),
                                                             Param("msgs", type="list[bytes]"))
    text = edited("    extends: pair\n", "    extends: pair\n    events: {cmd_send: [item]}\n", "pair1")
    err = error_of(text)
    assert str(err) == (f"protocols.yaml:{line_of(text, 'events: {cmd_send', 'pair1')}: machine "
                        "'pair1' extends 'pair': its event 'cmd_send' is 'pair''s, not restated")


# ------------------------------------------------------------------ what is generated


def test_the_generated_event_methods_take_the_declared_parameters():
    from scaproust._generated import pipe, pipe_reference, req, req_reference

    for cls in (pipe.PipeCompiled, pipe_reference.PipeTransitions):
        assert str(inspect.signature(cls.cmd_send)) == (
            "(self, body: 'bytes', header: 'bytes' = b'') -> 'bool'")
        assert str(inspect.signature(cls.evt_flushed)) == "(self) -> 'bool'"
        assert str(inspect.signature(cls.evt_io_error)) == "(self, err: 'OSError') -> 'bool'"
    for cls in (req.ReqCompiled, req_reference.ReqTransitions):
        assert str(inspect.signature(cls.evt_pipe_recv)) == (
            "(self, pipe: 'Pipe', msgs: 'list[bytes]') -> 'bool'")
    assert req.PARAMETERS["evt_pipe_recv"] == ("pipe", "msgs")
    assert pipe.PARAMETERS["cmd_send"] == ("body", "header")


def test_a_default_reaches_every_action_under_both_backends():
    from scaproust._generated import pipe, pipe_reference

    for cls in (pipe.PipeCompiled, pipe_reference.PipeTransitions):
        calls = []

        class Model(cls):
            state = "active"

            def enqueue(self, body, header, calls=calls):
                calls.append((body, header))

        Model().cmd_send(b"x")
        assert calls == [(b"x", b"")]


# ------------------------------------------------------------------ types


def test_each_parameter_has_its_events_type_or_the_one_of_its_name():
    spec = load(SPEC, src_root=ROOT / "src")
    pipe = spec.machines["pipe"]
    assert pipe.params["evt_io_error"] == (Param("err", type="OSError"),)
    assert pipe.params["evt_bad_frame"] == (Param("err", type="Exception"),)
    assert pipe.params["cmd_send"] == (Param("body", type="bytes"),
                                       Param("header", "b''", type="bytes"))
    assert spec.machines["req"].imports == {"Item": "scaproust.core.message",
                                            "Pipe": "scaproust.core.pipe"}
    assert pipe.imports == {"Publication": "scaproust.core.pipe"}  # PUB's batch


def test_the_state_is_a_literal_unless_a_class_completes_two_machines_with_other_states():
    spec = load(SPEC, src_root=ROOT / "src")
    types = {name: m.state_type for name, m in spec.machines.items()}
    # Req(ReqFSM, ReqRaw), Surveyor(SurveyorFSM, SurveyorRaw), TLSPipe(TlsPipeFSM, Pipe),
    # WSPipe(WsPipeFSM, Pipe), WSSPipe(WssPipeFSM, WSPipe, TLSPipe): states differ.
    assert {name for name, t in types.items() if t == "str"} == {
        "req", "req_raw", "surveyor", "surveyor_raw", "pipe", "tls_pipe", "ws_pipe", "wss_pipe"}
    # Pair1(Pair1FSM, Pair1Raw(Pair1RawFSM, Pair)): three machines, the same states.
    assert types["pair1"] == types["pair1_raw"] == types["pair"] == types["listener"] == "State"
    from scaproust._generated import pair, req

    assert pair.PairCompiled.__annotations__["state"] == "State"
    assert typing.get_args(pair.State) == tuple(spec.machines["pair"].states)
    assert req.ReqCompiled.__annotations__["state"] == "str"


def test_a_parameter_without_a_type_fails_on_its_event():
    text = REAL.replace("  topic: bytes\n", "", 1)
    err = error_of(text)
    assert (err.line, err.message) == (
        line_of(text, "cmd_subscribe: [topic]", "sub"),
        "parameter 'topic' of cmd_subscribe has no type: give its name one under parameters: "
        "at the top of the file, or write [topic: <type>]")


@pytest.mark.parametrize(("type_", "message"), [
    ("list[Frame]", "the type of msgs uses 'Frame', which is neither a builtin nor listed under types:"),
    ("list[bytes", "the type of msgs is not a Python type expression: 'list[bytes'"),
])
def test_a_bad_type_fails_on_its_line(type_, message):
    text = REAL.replace("  msgs: list[bytes]\n", f"  msgs: {type_}\n", 1)
    err = error_of(text)
    assert (err.line, err.message) == (REAL[:REAL.index("  msgs: list[bytes]")].count("\n") + 1,
                                       message)


def test_an_events_own_type_fails_like_the_others():
    text = edited("evt_io_error: [err: OSError]", "evt_io_error: [err: IOErr]", "pipe")
    err = error_of(text)
    assert (err.line, err.message) == (
        line_of(text, "evt_io_error: [err: IOErr]", "pipe"),
        "the type of 'err' of evt_io_error uses 'IOErr', which is neither a builtin nor listed "
        "under types:")


def test_the_generated_class_declares_the_guards_and_actions_it_calls_for_the_type_checker():
    import ast

    from scaproust._generated import req

    tree = ast.parse((ROOT / "src/scaproust/_generated/req.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "ReqCompiled")
    block = next(n for n in cls.body if isinstance(n, ast.If))
    assert ast.unparse(block.test) == "TYPE_CHECKING"  # nothing of it runs
    stubs = {f.name: ast.unparse(f.args) + " -> " + ast.unparse(f.returns)
             for f in block.body if isinstance(f, ast.FunctionDef) and f.returns is not None}
    assert list(stubs) == list(req.GUARDS) + [a for a in req.ACTIONS if a not in req.GUARDS]
    assert stubs["has_reply"] == "self, pipe: Pipe, msgs: list[bytes] -> bool"
    assert stubs["take_request"] == "self, item: Item -> None"
    assert stubs["grant_capacity"] == "self, *args: object -> None"  # as Req defines it
    assert stubs["stop_resend_timer"] == "self -> None"
    assert not hasattr(req.ReqCompiled, "has_reply")
    assert req.ReqFSM is req.ReqCompiled or req.ReqFSM.__name__ == "ReqTransitions"
