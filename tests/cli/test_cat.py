"""scaproust-cat against itself, as separate processes: every socket type's loop, exit
statuses, Ctrl-C, and nngcat's own shell tests (nng's src/tools/nngcat/*_test.sh) ported,
with scaproust-cat in nngcat's place. The same against real nanocat and nngcat:
tests/interop/test_cat.py.

Our listeners bind port 0 (or a path under tmp_path) and ``-v`` reports the real URL.
"""

from __future__ import annotations

import os
import signal
import zlib

import pytest
from cat_helpers import DEADLINE

# --------------------------------------------------------------------------------------
# nngcat's shell tests


def test_help_prints_usage(procs):
    # nngcat_help_test.sh: nngcat's --help exits 1 (nanocat's 0, ours 0; 1 as nngcat).
    help_ = procs.cat("--help")
    assert help_.wait_exit() == 0
    assert help_.stdout().startswith(b"Usage:\n")
    as_nngcat = procs.cat("--compat", "nngcat", "--help")
    assert as_nngcat.wait_exit() == 1
    assert as_nngcat.stdout() == help_.stdout()


def test_an_ambiguous_option_fails(procs):
    # nngcat_ambiguous_test.sh
    cat = procs.cat("--re", "--dial=tcp://127.0.0.1:27272")
    assert cat.wait_exit() == 1
    assert "ambiguous" in cat.stderr()
    assert cat.stdout() == b""


@pytest.mark.parametrize("argv", [
    ["--pub0", "--sub0", "--dial=tcp://127.0.0.1:8989"],  # nngcat_dup_proto_test.sh
    ["--dial=tcp://127.0.0.1:8989"],  # nngcat_need_proto_test.sh
    # nngcat_incompat_test.sh
    ["--req0", "-x", "/tmp/bogusipc", "--subscribe=oops", "-D", "x"],
    ["--interval", "1", "--pull", "-x", "/tmp/bogusipc"],
    ["--count=xyz", "--pair0", "-x", "/tmp/bogusipc"],
])
def test_a_usage_error_exits_1_before_opening_anything(procs, argv):
    cat = procs.cat(*argv)
    assert cat.wait_exit() == 1
    assert cat.stderr().startswith("python -m scaproust cat: ")


def test_an_unreadable_file_exits_2_as_nanocat(procs):
    # nngcat_incompat_test.sh: "--file fails with non-existing file"
    cat = procs.cat("--async", "--file=/nosuchfilehere", "--push0", "-x", "/tmp/bogusipc")
    assert cat.wait_exit() == 2
    assert cat.stderr() == "Error opening file ``/nosuchfilehere'': No such file or directory\n"


def _listener(procs, tmp_path, *args: str) -> tuple[object, str]:
    cat = procs.cat("-v", "--listen", f"ipc://{tmp_path}/cat.ipc", *args)
    return cat, cat.listening_url()


def test_pub_sub_filtering(procs, tmp_path):
    # nngcat_pubsub_test.sh: five publishers one after the other, two subscriptions.
    sub, url = _listener(procs, tmp_path, "--count=3", "--recv-timeout=20", "--sub0",
                         "--subscribe=one", "--subscribe=two", "--quoted")
    # A publisher sends once, after --delay, to whoever is connected by then. As in the
    # original, the two filtered out run in the background, the others one after the other.
    others = [procs.cat("-d", "1", "--connect", url, "--pub0", "--data", data)
              for data in ("xyz", "none swam")]
    for data in ("one flew", "twofer test", "one more"):
        pub = procs.cat("-d", "1", "--connect", url, "--pub0", "--data", data)
        assert pub.wait_exit() == 0, pub.stderr()
    assert [pub.wait_exit() for pub in others] == [0, 0]
    assert sub.wait_exit() == 0
    assert sub.stdout() == b'"one flew"\n"twofer test"\n"one more"\n'
    assert zlib.crc32(sub.stdout()) == zlib.crc32(b'"one flew"\n"twofer test"\n"one more"\n')


def test_recv_max_size_drops_larger_messages(procs, tmp_path):
    # nngcat_recvmaxsz_test.sh: the limit is inclusive; a larger message closes its pipe.
    pull, url = _listener(procs, tmp_path, "--count=3", "--recv-maxsz=5", "--pull0",
                          "--quoted")
    for data in ("one", "55555", "666666", "7777777", "88888"):
        push = procs.cat("--connect", url, "--push0", "--data", data)
        assert push.wait_exit() == 0, push.stderr()
    assert pull.wait_exit() == 0
    assert pull.stdout() == b'"one"\n"55555"\n"88888"\n'


def test_file_dash_reads_standard_input(procs, tmp_path):
    # nngcat_stdin_pipe_test.sh
    pull, url = _listener(procs, tmp_path, "--count=1", "--recv-timeout=3",
                          "--recv-maxsz=0", "--pull0", "--raw")
    push = procs.cat("--connect", url, "--push0", "--file", "-",
                     stdin=b"hello world\n")
    assert push.wait_exit() == 0, push.stderr()
    assert pull.wait_exit() == 0
    assert pull.stdout() == b"hello world\n"


def test_four_mib_raw_with_no_size_limit(procs, tmp_path):
    # nngcat_unlimited_test.sh: 4 MiB of random bytes, --recv-maxsz=0, --raw.
    payload = os.urandom(4 << 20)
    path = tmp_path / "input"
    path.write_bytes(payload)
    pull, url = _listener(procs, tmp_path, "--count=1", "--recv-maxsz=0", "--pull0", "--raw")
    push = procs.cat("--connect", url, "--push0", "--file", str(path))
    assert push.wait_exit() == 0, push.stderr()
    assert pull.wait_exit() == 0
    assert pull.stdout() == payload


# --------------------------------------------------------------------------------------
# each socket type's loop


def test_req_sends_once_and_prints_the_one_reply_then_exits(procs):
    rep = procs.cat("--rep", "-v", "-L", "0", "-D", "pong", "-A")
    url = rep.listening_url()
    req = procs.cat("--req", "--connect", url, "-D", "ping", "-A")
    assert req.wait_exit() == 0, req.stderr()
    assert req.stdout() == b"pong\n"
    assert rep.wait_stdout(5) == b"ping\n"
    assert rep.alive()  # a REP answers forever


def test_rep_answers_count_requests_then_exits(procs):
    rep = procs.cat("--rep0", "-v", "-L", "0", "-D", "pong", "--quoted", "--count", "2")
    url = rep.listening_url()
    for n in (1, 2):
        req = procs.cat("--req0", "--dial", url, "-D", f"ping {n}", "--hex")
        assert req.wait_exit() == 0, req.stderr()
        assert req.stdout() == b'"\\x70\\x6f\\x6e\\x67"\n'
    assert rep.wait_exit() == 0
    assert rep.stdout() == b'"ping 1"\n"ping 2"\n'


def test_rep_without_data_only_prints_and_a_timeout_ends_it_cleanly(procs):
    rep = procs.cat("--rep", "-L", "0", "--recv-timeout", "0.2", "-A")
    assert rep.wait_exit() == 0
    assert (rep.stdout(), rep.stderr()) == (b"", "")


def test_rep_with_data_exits_3_on_a_receive_timeout_as_nanocat(procs):
    rep = procs.cat("--rep", "-L", "0", "--recv-timeout", "0.2", "-D", "x")
    assert rep.wait_exit() == 3
    assert rep.stderr().startswith("Can't recv: ")


def test_surveyor_collects_answers_every_interval(procs):
    resp = procs.cat("--respondent", "-v", "-L", "0", "-D", "here", "-A")
    url = resp.listening_url()
    surveyor = procs.cat("--surveyor", "-l", url.rsplit(":", 1)[1], "-D", "who?", "-A",
                         "-i", "0.2", "--count", "50")
    # Two answers at least, from successive surveys (one write per message).
    assert surveyor.wait_stdout(10)[:10] == b"here\nhere\n"
    assert set(resp.stdout().splitlines()) == {b"who?"}


def test_a_survey_without_answers_ends_at_its_deadline(procs):
    surveyor = procs.cat("--surveyor", "-L", "0", "-D", "anyone?", "-A")
    assert surveyor.wait_exit() == 0  # after the 1 s survey deadline
    assert surveyor.stdout() == b""


def test_pub_sends_every_interval_and_sub_stops_after_count(procs):
    pub = procs.cat("--pub", "-v", "-L", "0", "-D", "tick", "-i", "0.05")
    url = pub.listening_url()
    sub = procs.cat("--sub", "--connect", url, "-A", "-C", "3")
    assert sub.wait_exit() == 0, sub.stderr()
    assert sub.stdout() == b"tick\ntick\ntick\n"
    assert pub.alive()


def test_push_sends_count_times_then_exits(procs):
    pull = procs.cat("--pull", "-v", "-L", "0", "--msgpack")
    url = pull.listening_url()
    push = procs.cat("--push", "--connect", url, "-D", "", "-C", "3")
    assert push.wait_exit() == 0, push.stderr()
    assert pull.wait_stdout(6) == b"\xc4\x00" * 3  # three empty messages


def test_pair_with_data_sends_then_prints_what_comes(procs):
    a = procs.cat("--pair", "-v", "-L", "0", "-D", "from a", "-Q")
    url = a.listening_url()
    b = procs.cat("--pair", "--connect", url, "-D", "from b", "-Q")
    assert a.wait_stdout(9) == b'"from b"\n'
    assert b.wait_stdout(9) == b'"from a"\n'


def test_pair1_and_bus(procs):
    a = procs.cat("--pair1", "-v", "-L", "0", "-A")
    b = procs.cat("--compat", "nngcat", "--pair", "-l", a.listening_url().rsplit(":", 1)[1],
                  "-D", "v1")
    assert a.wait_stdout(3) == b"v1\n"
    hub = procs.cat("--bus", "-v", "-L", "0", "-A", "-C", "2")
    url = hub.listening_url()
    procs.cat("--bus0", "--connect", url, "-D", "bus", "-i", "0.05")
    assert hub.wait_exit() == 0
    assert hub.stdout() == b"bus\nbus\n"
    assert b.alive()


# --------------------------------------------------------------------------------------
# exit statuses and Ctrl-C


def test_a_socket_error_exits_3_as_nanocat(procs, tmp_path):
    first = procs.cat("--pull", "-v", "-L", "0")
    url = first.listening_url()
    second = procs.cat("--pull", "--bind", url)
    assert second.wait_exit() == 3
    assert second.stderr().startswith("Can't bind: ")
    bad = procs.cat("--pull", "--bind", "foo://x")
    assert bad.wait_exit() == 3
    assert bad.stderr().startswith("Can't bind: ")


@pytest.mark.parametrize("argv", [
    ["--pull", "-L", "0"],  # waiting in recv
    ["--push", "-D", "x", "-X", "nobody.ipc"],  # waiting in send for a peer
    ["--req", "-D", "x", "-X", "nobody.ipc"],  # waiting for a reply
    ["--pub", "-D", "x", "-L", "0", "-i", "60"],  # waiting for the next interval
    ["--rep", "-D", "x", "-L", "0"],  # waiting for a request
    ["--sub", "-L", "0", "-d", "60"],  # in --delay
    # One sleep that long raised OverflowError (a traceback, status 1): a day at a time.
    ["--sub", "-L", "0", "-d", "1e10"],
    ["--pub", "-D", "x", "-L", "0", "-i", "1e10"],
])
def test_ctrl_c_ends_it_at_once_with_status_130_and_no_traceback(procs, tmp_path, argv):
    cat = procs.cat("-v", *argv)
    cat.listening_url()  # up and running
    cat.signal(signal.SIGINT)
    assert cat.wait_exit(timeout=DEADLINE) == 130
    assert "Traceback" not in cat.stderr()


def test_a_second_ctrl_c_while_it_closes_after_the_first_is_no_traceback():
    # `timeout -s INT` signals the process, then its group: a second SIGINT raised out of
    # the session's close, a traceback (half the runs). It is ignored while the close runs.
    from scaproust.cli import cat as cat_module

    before = signal.getsignal(signal.SIGINT)
    closed = []

    class ClosingSession:
        def close(self):
            signal.raise_signal(signal.SIGINT)  # the second one, as the close runs
            closed.append(True)

    cat_module._close(ClosingSession(), interrupted=True)
    assert closed == [True]
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_a_send_that_times_out_is_fatal_as_nanocat(procs):
    # Nobody to push to. nanocat 1.1.5: "Can't send: Connection timed out", status 3 (this
    # printed "Message not sent (EAGAIN)", nanocat's line for a send that may not wait,
    # and went on).
    push = procs.cat("--push", "-v", "-L", "0", "-D", "x", "--send-timeout", "0.05", "-C", "2")
    assert push.wait_exit() == 3
    assert push.stderr().splitlines()[1:] == ["Can't send: Connection timed out"]


def test_a_send_that_may_not_wait_says_message_not_sent_and_goes_on_as_nanocat(procs):
    # A send timeout of 0: nanocat's nn_send fails with EAGAIN, reported, the loop goes on.
    push = procs.cat("--push", "-v", "-L", "0", "-D", "x", "--send-timeout", "0", "-C", "2")
    assert push.wait_exit() == 0
    assert push.stderr().splitlines()[1:] == ["Message not sent (EAGAIN)"] * 2
    dialer = procs.cat("--pull", "-v", "-l", "1", "--recv-timeout", "0")
    assert dialer.wait_exit() == 0
    assert dialer.stderr() == "Connected to: tcp://127.0.0.1:1\n"


def test_the_last_round_of_a_req_ends_with_its_reply_not_its_interval(procs):
    # As nngcat: --count rounds every --interval, the last one over with its reply. This
    # waited out the whole interval after it (here 60 s: wait_exit's bound fails it).
    rep = procs.cat("--rep", "-v", "-L", "0", "-D", "pong", "-A")
    port = rep.listening_url().rsplit(":", 1)[1]
    req = procs.cat("--req", "-l", port, "-D", "ping", "-A", "-i", "60", "-C", "1")
    assert req.wait_exit() == 0, req.stderr()
    assert req.stdout() == b"pong\n"


@pytest.mark.parametrize("verbose", [[], ["-v"]])
def test_the_librarys_warnings_reach_standard_error_with_v_only(procs, verbose):
    # A PULL dialing a PULL: each pipe is refused after the headers, which the library
    # logs as a warning. nanocat and nngcat print nothing of the kind, even without -q.
    pull = procs.cat("--pull", "-v", "-L", "0")
    port = pull.listening_url().rsplit(":", 1)[1]
    wrong = procs.cat("--pull", *verbose, "-l", port, "--recv-timeout", "0.5")
    assert wrong.wait_exit() == 0
    warned = "is not a valid peer for this socket" in wrong.stderr()
    assert warned == bool(verbose), wrong.stderr()


# --------------------------------------------------------------------------------------
# TLS: nngcat's --cacert, --cert/-E, --key, --insecure/-k (docs/CLI.md, "TLS")


@pytest.fixture
def tls(tmp_path):
    from cat_helpers import write_tls_files

    return write_tls_files(tmp_path)


@pytest.mark.parametrize("server_cert", [["--cert", "{both}"],
                                         ["-E", "{cert}", "--key", "{key}"]])
def test_a_req_rep_pair_over_tls(procs, tls, server_cert):
    # --cert alone: the file holds the key too; or --key beside it, as nngcat.
    argv = [a.format(**tls) for a in server_cert]
    rep = procs.cat("--rep", "-v", "--bind", "tls+tcp://127.0.0.1:0", *argv, "-D", "pong",
                    "-Q", "-C", "1")
    url = rep.listening_url()
    assert url.startswith("tls+tcp://127.0.0.1:")
    req = procs.cat("--req", "--connect", url, "--cacert", tls["ca"], "-D", "ping", "-Q")
    assert req.wait_exit() == 0, req.stderr()
    assert req.stdout() == b'"pong"\n'
    assert rep.wait_exit() == 0, rep.stderr()
    assert rep.stdout() == b'"ping"\n'


def test_insecure_connects_to_a_server_it_cannot_check(procs, tls):
    # Signed by a CA the client was not told of: refused without -k, accepted with it.
    pull = procs.cat("--pull", "-v", "--bind", "tls+tcp://127.0.0.1:0", "--cert",
                     tls["stranger"], "-Q", "-C", "1")
    url = pull.listening_url()
    refused = procs.cat("--push", "-v", "--connect", url, "--cacert", tls["ca"], "-D", "no",
                        "--send-timeout", "0.5")
    assert refused.wait_exit() == 3  # as nanocat: a send that timed out is fatal
    assert "Can't send: Connection timed out" in refused.stderr()
    assert "certificate verify failed" in refused.stderr()  # the library's warning, -v
    push = procs.cat("--push", "--connect", url, "-k", "-D", "yes")
    assert push.wait_exit() == 0, push.stderr()
    assert pull.wait_exit() == 0, pull.stderr()
    assert pull.stdout() == b'"yes"\n'


@pytest.mark.parametrize(("argv", "status", "says"), [
    (["--key", "{key}"], 1, "Option --key needs --cert"),
    (["--cacert", "{ca}", "--cacert", "{ca}"], 1, "may be given only once"),
    (["--cacert", "{tmp}/nosuchfile.pem"], 2, "Error opening file"),
    (["--cert", "{cert}"], 3, "holds no private key"),
    (["-k"], 3, "Can't bind: a TLS server needs its certificate"),
])
def test_tls_option_errors(procs, tls, tmp_path, argv, status, says):
    names = {**tls, "tmp": str(tmp_path)}
    cat = procs.cat("--pull", "--bind", "tls+tcp://127.0.0.1:0",
                    *(a.format(**names) for a in argv))
    assert cat.wait_exit() == status
    assert says in cat.stderr()
