"""The command line of scaproust-cat: nanocat's and nngcat's options, parsed by nanocat's
rules (src/scaproust/cli/options.py, docs/CLI.md)."""

from __future__ import annotations

import pytest

from scaproust.cli.options import Config, DataFileError, UsageError, help_text, parse


def test_defaults_print_nothing_and_wait_forever():
    c = parse(["--pull", "--bind", "tcp://127.0.0.1:0"])
    assert c == Config(socket_type="pull", endpoints=[("bind", "tcp://127.0.0.1:0")])
    assert c.fmt == "no" and c.recv_timeout is None and c.count == 0


@pytest.mark.parametrize("spelling, kind", [
    ("--push", "push"), ("--push0", "push"), ("--pul", "pull"), ("--pull0", "pull"),
    ("--pub", "pub"), ("--sub", "sub"), ("--sub0", "sub"), ("--req", "req"),
    ("--req0", "req"), ("--rep", "rep"), ("--rep0", "rep"), ("--surv", "surveyor"),
    ("--surveyor0", "surveyor"), ("--resp", "respondent"), ("--respondent0", "respondent"),
    ("--bus", "bus"), ("--bus0", "bus"), ("--pair", "pair0"), ("--pair0", "pair0"),
    ("--pair1", "pair1"),
])
def test_every_socket_type_of_both_tools_and_its_prefixes(spelling, kind):
    data = [] if kind in ("pull", "sub", "rep", "respondent", "bus", "pair0", "pair1") else [
        "-D", "x"]
    assert parse([spelling, "-l", "5555", *data]).socket_type == kind


def test_pair_is_pair1_under_nngcat_compat_as_nngcat_says():
    assert parse(["--pair", "-l", "1", "--compat", "nngcat"]).socket_type == "pair1"
    assert parse(["--compat=nngcat", "--pair0", "-l", "1"]).socket_type == "pair0"


def test_endpoints_are_repeatable_and_kept_in_order():
    c = parse(["--bus", "--bind", "tcp://127.0.0.1:1", "--listen=ipc:///tmp/a", "--dial",
               "tcp://h:2", "--connect:inproc://x", "-X", "rel/p", "-x/abs", "-L", "7",
               "-l8"])
    assert c.endpoints == [
        ("bind", "tcp://127.0.0.1:1"), ("bind", "ipc:///tmp/a"), ("connect", "tcp://h:2"),
        ("connect", "inproc://x"), ("bind", "ipc://rel/p"), ("connect", "ipc:///abs"),
        ("bind", "tcp://127.0.0.1:7"), ("connect", "tcp://127.0.0.1:8"),
    ]


def test_ipc_shorthand_is_rooted_under_nngcat_compat():
    # nngcat writes ipc:///PATH for -X PATH, nanocat ipc://PATH (relative).
    c = parse(["--pull", "-X", "sock", "-x", "/abs", "--compat", "nngcat"])
    assert c.endpoints == [("bind", "ipc:///sock"), ("connect", "ipc:////abs")]


def test_compat_alone_means_nanocat_as_nngcats_flag_does():
    assert parse(["--compat", "--pull", "-l", "1"]).compat == "nanocat"
    assert parse(["--pull", "-l", "1", "--compat"]).compat == "nanocat"
    with pytest.raises(UsageError, match="nanocat, nngcat"):
        parse(["--pull", "-l", "1", "--compat=zmq"])


def test_short_clusters_and_attached_arguments():
    c = parse(["-vvAD", "hello", "--req", "-l1", "-i0.25", "-C3"])
    assert (c.verbose, c.fmt, c.data, c.interval, c.count) == (2, "ascii", b"hello", 0.25, 3)
    c = parse(["--req", "-l1", "-QDhi"])
    assert (c.fmt, c.data) == ("quoted", b"hi")


def test_values_of_every_option():
    c = parse(["--sub", "--connect", "tcp://h:1", "--subscribe", "one", "--subscr=two",
               "--recv-timeout", "1.5", "--format", "msgpack", "--recv-maxsz=0",
               "-d", "0.5", "--socket-name", "n", "--async", "-q"])
    assert c.subscriptions == [b"one", b"two"]
    assert (c.recv_timeout, c.fmt, c.recv_max_size, c.delay, c.socket_name, c.verbose) == (
        1.5, "msgpack", 0, 0.5, "n", -1)
    c = parse(["--push", "-l1", "--send-timeout=0.1", "-D", "x", "-i", "2"])
    assert (c.send_timeout, c.interval) == (0.1, 2.0)


def test_a_prefix_unique_among_nanocats_options_means_what_it_means_there():
    # nngcat's extra names (--recv-maxsz, --async, --version, --pair0/1, --insecure) made
    # these ambiguous, though a nanocat command line with them ran there.
    c = parse(["--pull", "--connect", "tcp://h:1", "--rec", "1", "--as", "--ver"])
    assert (c.recv_timeout, c.fmt, c.verbose) == (1.0, "ascii", 1)
    c = parse(["--pa", "-l1", "--i", "0.5", "--recv-", "2", "-D", "x"])
    assert (c.socket_type, c.interval, c.recv_timeout) == ("pair0", 0.5, 2.0)


def test_the_last_format_wins_as_in_nanocat():
    assert parse(["--pull", "-l1", "--hex", "--raw"]).fmt == "raw"
    assert parse(["--pull", "-l1", "--raw", "--format=hex"]).fmt == "hex"


def test_data_keeps_the_bytes_of_the_argument():
    # A non-UTF-8 argument reaches Python as surrogate escapes; the bytes sent are the
    # original ones, as in C.
    arg = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert parse(["--push", "-l1", "-D", arg]).data == b"caf\xe9"


def test_file_reads_a_file_or_standard_input(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"\x00bytes\xff")
    assert parse(["--push", "-l1", "-F", str(path)]).data == b"\x00bytes\xff"
    assert parse(["--push", "-l1", "--file", "-"], stdin=lambda: b"piped").data == b"piped"
    with pytest.raises(DataFileError, match="Error opening file ``/nosuchfilehere''"):
        parse(["--push", "-l1", "--file=/nosuchfilehere"])


def test_help_and_version_stop_the_parse_at_once():
    assert parse(["--help", "--no-such-thing"]).help
    assert parse(["-V"]).version
    text = help_text("scaproust-cat")
    assert text.startswith("Usage:\n    scaproust-cat ")
    for option in ("--bind-ipc,-X PATH", "--recv-maxsz,-Z SIZE", "--req,--req0",
                   "--compat [nanocat|nngcat]", "--subscribe PREFIX", "--file,-F PATH"):
        assert option in text
    assert max(len(line) for line in text.splitlines()) <= 100


@pytest.mark.parametrize("argv, message", [
    (["--re", "--dial=tcp://127.0.0.1:27272"], "Option ``--re'' is ambiguous"),
    (["--p", "-l1"], "ambiguous"),
    (["--bind-", "x", "--pull"], "ambiguous"),
    (["--nosuch", "--pull", "-l1"], "Unknown option ``--nosuch''"),
    (["-b"], "Unknown option ``-b''"),
    (["--pull", "-l1", "extra"], "Unexpected argument ``extra''"),
    (["--pull", "--bind"], "Option --bind requires an argument"),
    (["--pull", "-l"], "Option -l (--connect-local) requires an argument"),
    (["--pull=x", "-l1"], "Option --pull does not accept an argument"),
    (["--pub0", "--sub0", "--dial=tcp://127.0.0.1:8989"], "conflicts with --pub0"),
    (["--pub", "--pub", "-l1"], "one socket type only"),
    (["--dial=tcp://127.0.0.1:8989"], "a socket type"),
    (["--pull"], "--bind, --connect"),
    (["--req0", "-x", "/tmp/bogus", "--subscribe=oops", "-D", "x"],
     "Option --subscribe needs --sub (not --req0)"),
    (["--interval", "1", "--pull", "-x", "/tmp/bogus"], "--interval needs a socket that sends"),
    (["--rep", "-l1", "-i1", "-D", "x"], "-i (--interval) needs a socket that sends on its own"),
    (["--pair", "-l1", "-i1"], "-i (--interval) needs --data or --file (not --pair)"),
    (["--count=xyz", "--pair0", "-x", "/tmp/bogus"], "integer from 0 to 2147483647"),
    (["--pull", "-l", "70000"], "integer from 0 to 65535"),
    (["--pull", "-l1", "--recv-timeout", "-1"], "seconds >= 0"),
    (["--pull", "-l1", "--recv-timeout", "nan"], "seconds >= 0"),
    (["--pull", "-l1", "--recv-timeout=abc"], "not ``abc''"),
    (["--push", "-l1"], "--push requires at least one of the following options: --data"),
    (["--req", "-l1", "-D", "a", "-F", "-"], "give the data once only"),
    (["--pull", "-l1", "-D", "x"], "Option -D (--data) needs a socket that sends"),
    (["--push", "-l1", "-D", "x", "-A"], "needs a socket that receives"),
    (["--pub", "-l1", "-D", "x", "--recv-timeout", "1"], "needs a socket that receives"),
    (["--sub", "-l1", "--send-timeout", "1"], "needs a socket that sends"),
    (["--pull", "-l1", "--format", "yaml"], "Invalid value ``yaml'' for --format"),
])
def test_a_bad_command_line_says_what_is_wrong(argv, message):
    with pytest.raises(UsageError) as caught:
        parse(argv, stdin=lambda: b"")
    assert message in str(caught.value)
