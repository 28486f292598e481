"""REQ and REP, cooked and raw, between our own sockets over TCP and IPC."""

from __future__ import annotations

import threading

import pytest

import scaproust as sp
from scaproust.protocols._headers import id_word, pipe_word
from tests.integration.conftest import (
    OVERLAP_TRANSPORTS,
    SEND_WAYS,
    bind_again,
    in_thread,
    send_overlapping,
    sending,
    wait_until,
)

T = 5.0  # every blocking call in these tests gives up after this long


def pair_up(session, url, *, req_raw=False, rep_raw=False, **req_options):
    rep = session.socket(sp.Rep, raw=rep_raw, recv_timeout=T, send_timeout=T)
    req = session.socket(sp.Req, raw=req_raw, recv_timeout=T, send_timeout=T, **req_options)
    req.connect(rep.bind(url).url)
    return req, rep


def second_url(url: str, tmp_path) -> str:
    return "tcp://127.0.0.1:0" if url.startswith("tcp") else f"ipc://{tmp_path}/second.ipc"


# ---------------------------------------------------------------- cooked both sides


def test_req_and_rep_exchange_requests_and_replies(session, url):
    req, rep = pair_up(session, url)
    for n in range(50):
        req.send(b"request %d" % n)
        assert rep.recv() == b"request %d" % n
        rep.send(b"reply %d" % n)
        assert req.recv() == b"reply %d" % n


def test_zero_length_and_one_mebibyte_bodies_go_both_ways(session, url):
    req, rep = pair_up(session, url)
    big = (bytes(range(256)) * 4096)[:-4]  # with the 4-byte id: exactly recv_max_size
    for body in (b"", big):
        req.send(body)
        assert rep.recv() == body
        rep.send(body)
        assert req.recv() == body


def test_recv_on_a_req_before_any_request_and_after_the_reply_is_a_bad_state(session, url):
    req, rep = pair_up(session, url)
    with pytest.raises(sp.BadState):
        req.recv()
    req.send(b"one")
    rep.send(rep.recv())
    assert req.recv() == b"one"
    with pytest.raises(sp.BadState):
        req.recv()


def test_send_on_a_rep_without_a_request_is_a_bad_state(session, url):
    req, rep = pair_up(session, url)
    with pytest.raises(sp.BadState):
        rep.send(b"unasked")
    req.send(b"q")
    msg = rep.recv_msg()  # a cooked REP shows the backtrace: our pipe word, then the id
    assert msg.body == b"q" and len(msg.header) == 8 and msg.header[4] & 0x80
    rep.send(b"a")
    with pytest.raises(sp.BadState):
        rep.send(b"a second answer")
    assert req.recv() == b"a"


def test_the_reply_carries_the_request_id_and_ids_go_up_by_one(session, url):
    req, rep = pair_up(session, url)
    words = []
    for n in range(3):
        req.send(b"%d" % n)
        rep.send(rep.recv())
        msg = req.recv_msg()
        assert msg.body == b"%d" % n
        words.append(int.from_bytes(msg.header, "big"))
    assert all(w & 0x80000000 for w in words)
    assert [(w - words[0]) & 0x7FFFFFFF for w in words] == [0, 1, 2]


def test_req_resends_an_unanswered_request_with_the_same_bytes(session, url):
    req, raw_rep = pair_up(session, url, rep_raw=True, resend_interval=0.05)
    req.send(b"again?")
    first = raw_rep.recv_msg()
    second = raw_rep.recv_msg()  # nobody answered: the REQ sent it again
    assert first == second
    assert first.body == b"again?"
    assert req.stats["requests_resent"] >= 1
    raw_rep.send_msg(sp.Message(b"at last", second.header))
    assert req.recv() == b"at last"


def test_req_resends_while_its_caller_is_blocked_in_recv(session, url):
    req, rep = pair_up(session, url, resend_interval=0.05)
    req.send(b"slow")
    got = []
    thread = threading.Thread(target=lambda: got.append(req.recv()))
    thread.start()
    assert rep.recv() == b"slow"
    assert rep.recv() == b"slow"  # the resend; the first request is abandoned
    rep.send(b"answered")
    thread.join(T)
    assert got == [b"answered"]


def test_a_late_reply_to_an_older_request_never_reaches_the_user(session, url):
    req, raw_rep = pair_up(session, url, rep_raw=True)
    req.send(b"first")
    old = raw_rep.recv_msg()
    req.send(b"second")
    new = raw_rep.recv_msg()
    raw_rep.send_msg(sp.Message(b"to the first", old.header))
    raw_rep.send_msg(sp.Message(b"to the second", new.header))
    assert req.recv() == b"to the second"
    wait_until(lambda: req.stats.get("dropped_stale", 0) == 1, what="the stale reply counted")


def test_a_reply_left_unread_when_the_next_request_goes_is_purged_and_counted(session, url):
    req, rep = pair_up(session, url)
    req.send(b"first")
    assert rep.recv() == b"first"
    rep.send(b"never read")
    wait_until(lambda: req.stats.get("msgs_received", 0) == 1, what="the reply queued at the REQ")

    req.send(b"second")
    assert rep.recv() == b"second"
    rep.send(b"read")

    assert req.recv() == b"read"
    # Two replies queued for recv(): one delivered, one purged by the new request; none
    # dropped by the I/O thread (docs/OBSERVABILITY.md: what each counter counts).
    assert (req.stats["msgs_received"], req.stats["purged_stale"], req.stats.get("dropped_stale", 0)) == (2, 1, 0)


def test_a_request_sent_before_any_rep_waits_for_one(session, url):
    req = session.socket(sp.Req, recv_timeout=T, send_timeout=T)
    if url.rstrip("/").endswith(":0"):  # tcp, tls+tcp, ws: a port of our own
        probe = session.socket(sp.Rep)
        url = probe.bind(url).url  # a port nobody will listen on until the REP below
        probe.close()
    req.connect(url)
    thread = threading.Thread(target=req.send, args=(b"early",))
    thread.start()
    rep = session.socket(sp.Rep, recv_timeout=T)
    rep.bind(url)
    assert rep.recv() == b"early"
    thread.join(T)
    rep.send(b"late")
    assert req.recv() == b"late"


def test_req_without_a_peer_blocks_until_the_send_timeout(session):
    req = session.socket(sp.Req, send_timeout=0.05)
    with pytest.raises(sp.Timeout):
        req.send(b"nobody")
    with pytest.raises(sp.WouldBlock):
        req.send(b"nobody", block=False)


def test_req_round_robins_over_two_reps(session, url, tmp_path):
    reps = [session.socket(sp.Rep, recv_timeout=T) for _ in range(2)]
    req = session.socket(sp.Req, recv_timeout=T, send_timeout=T)
    for rep, where in zip(reps, (url, second_url(url, tmp_path)), strict=True):
        req.connect(rep.bind(where).url)
    wait_until(lambda: req.stats.get("pipes_opened", 0) == 2, what="two pipes")
    served = []
    for n in range(4):
        req.send(b"%d" % n)
        got: list = []

        def arrived(got=got):
            got.extend((i, body) for i, rep in enumerate(reps) if (body := rep.try_recv()) is not None)
            return bool(got)

        wait_until(arrived, what=f"request {n}")
        ((i, body),) = got
        served.append(i)
        reps[i].send(body)
        assert req.recv() == body
    assert served in ([0, 1, 0, 1], [1, 0, 1, 0])


def test_req_resends_at_once_when_the_rep_holding_the_request_goes_away(session, url, tmp_path):
    reps = [session.socket(sp.Rep, recv_timeout=T) for _ in range(2)]
    req = session.socket(sp.Req, recv_timeout=T, send_timeout=T)  # resend_interval: 60 s
    for rep, where in zip(reps, (url, second_url(url, tmp_path)), strict=True):
        req.connect(rep.bind(where).url)
    wait_until(lambda: req.stats.get("pipes_opened", 0) == 2, what="two pipes")
    req.send(b"who has it?")
    holder = None

    def someone_has_it():
        nonlocal holder
        for rep in reps:
            if rep.try_recv() is not None:
                holder = rep
                return True
        return False

    wait_until(someone_has_it, what="the request")
    other = reps[1] if holder is reps[0] else reps[0]
    holder.close()
    assert other.recv() == b"who has it?"  # long before the 60 s resend interval
    other.send(b"me")
    assert req.recv() == b"me"


def test_rep_fair_queues_two_reqs_and_answers_each_on_its_own_pipe(session, url):
    rep = session.socket(sp.Rep, recv_timeout=T)
    ep = rep.bind(url)
    reqs = [session.socket(sp.Req, recv_timeout=T, send_timeout=T) for _ in range(2)]
    for n, req in enumerate(reqs):
        req.connect(ep.url)
        req.send(b"from %d" % n)
    for _ in reqs:
        body = rep.recv()
        rep.send(b"answer to " + body)
    assert [req.recv() for req in reqs] == [b"answer to from 0", b"answer to from 1"]


def test_a_reply_to_a_req_that_went_away_is_discarded_and_send_succeeds(session, url):
    req, rep = pair_up(session, url)
    req.send(b"then I leave")
    assert rep.recv() == b"then I leave"
    req.close()
    wait_until(lambda: rep.stats.get("pipes_closed", 0) == 1, what="the REQ's pipe gone")
    rep.send(b"into the void")
    wait_until(lambda: rep.stats.get("dropped_no_route", 0) == 1, what="the reply discarded")


# ---------------------------------------------------------------- raw sockets


def test_a_raw_rep_sees_the_pipe_word_and_request_id_and_routes_by_them(session, url):
    req, raw_rep = pair_up(session, url, rep_raw=True)
    req.send(b"q")
    msg = raw_rep.recv_msg()
    assert msg.body == b"q"
    assert len(msg.header) == 8
    assert not msg.header[0] & 0x80 and msg.header[4] & 0x80  # a hop, then the id
    raw_rep.send_msg(sp.Message(b"a", msg.header))
    assert req.recv_msg() == sp.Message(b"a", msg.header[4:])


def test_a_raw_req_sends_the_users_header_and_gets_the_reply_header_back(session, url):
    raw_req, rep = pair_up(session, url, req_raw=True)
    raw_req.send_msg(sp.Message(b"raw question", id_word(42)))
    assert rep.recv() == b"raw question"
    rep.send(b"raw answer")
    assert raw_req.recv_msg() == sp.Message(b"raw answer", id_word(42))


def test_a_raw_req_can_receive_without_sending_and_never_resends(session, url):
    raw_req, raw_rep = pair_up(session, url, req_raw=True, rep_raw=True)
    with pytest.raises(sp.Timeout):
        raw_req.recv(timeout=0.05)  # no BadState: raw mode keeps no state
    raw_req.send_msg(sp.Message(b"once", id_word(7)))
    assert raw_rep.recv_msg().body == b"once"
    with pytest.raises(sp.Timeout):
        raw_rep.recv(timeout=0.2)


def test_a_device_of_two_raw_sockets_grows_and_unwinds_the_backtrace(session, url, tmp_path):
    front = session.socket(sp.Rep, raw=True, recv_timeout=T)
    back = session.socket(sp.Req, raw=True, recv_timeout=T, send_timeout=T)
    server = session.socket(sp.Rep, raw=True, recv_timeout=T)
    client = session.socket(sp.Req, recv_timeout=T, send_timeout=T)
    client.connect(front.bind(url).url)
    back.connect(server.bind(second_url(url, tmp_path)).url)

    client.send(b"through a device")
    request = front.recv_msg()
    back.send_msg(request)
    at_server = server.recv_msg()
    assert at_server.body == b"through a device"
    assert len(at_server.header) == 12  # server's pipe word, device's pipe word, request id
    assert at_server.header[4:] == request.header

    server.send_msg(sp.Message(b"and back", at_server.header))
    reply = back.recv_msg()
    assert reply.header == request.header
    front.send_msg(reply)
    assert client.recv() == b"and back"


def test_rep_drops_a_request_with_nine_hops_and_keeps_the_pipe(session, url):
    raw_req, raw_rep = pair_up(session, url, req_raw=True, rep_raw=True)
    nine = b"".join(pipe_word(n) for n in range(8)) + id_word(1)
    raw_req.send_msg(sp.Message(b"nine", nine))
    raw_req.send_msg(sp.Message(b"eight", nine[4:]))
    msg = raw_rep.recv_msg()
    assert msg.body == b"eight"
    assert msg.header[4:] == nine[4:]
    assert raw_rep.stats["dropped_ttl"] == 1
    assert raw_rep.stats.get("pipes_closed", 0) == 0


def test_rep_closes_the_pipe_of_a_malformed_request_and_the_peer_comes_back(session, url):
    raw_req, rep = pair_up(session, url, req_raw=True, reconnect_interval=0.01)
    raw_req.send_msg(sp.Message(b"no id", pipe_word(1)))
    wait_until(lambda: rep.stats.get("dropped_malformed", 0) == 1, what="the malformed request")
    wait_until(lambda: raw_req.stats.get("pipes_opened", 0) == 2, what="the redial")
    raw_req.send_msg(sp.Message(b"well formed", id_word(3)))
    assert rep.recv() == b"well formed"


def test_a_request_whose_send_times_out_leaves_the_previous_one_outstanding(session, url):
    rep = session.socket(sp.Rep, recv_timeout=T)
    ep = rep.bind(url)
    req = session.socket(sp.Req, recv_timeout=T, send_timeout=T)
    req.connect(ep.url)
    req.send(b"one")
    assert rep.recv() == b"one"  # received, never answered
    rep.close()  # REQ has no pipe any more: no credit
    wait_until(lambda: req.stats.get("pipes_closed", 0) == 1, what="REQ to see the pipe go")
    with pytest.raises(sp.Timeout):
        req.send(b"two", timeout=0.05)  # never accepted: "one" stays the request
    again = session.socket(sp.Rep, recv_timeout=T)
    bind_again(again, ep.url)
    assert again.recv() == b"one"  # resent at once on the new pipe
    again.send(b"answer to one")
    assert req.recv() == b"answer to one"


def test_a_recv_that_times_out_keeps_the_request_for_the_next_recv(session, url):
    # nng gives the request up there (its next receive: NNG_ESTATE); ours keeps it
    # (WIRE.md, "Known peer bugs", K3).
    req, rep = pair_up(session, url)
    req.send(b"slow question")
    assert rep.recv() == b"slow question"
    with pytest.raises(sp.Timeout):
        req.recv(timeout=0.01)
    rep.send(b"late answer")
    assert req.recv() == b"late answer"
    assert req.stats.get("dropped_stale", 0) == 0



@pytest.mark.transports(OVERLAP_TRANSPORTS)
@pytest.mark.parametrize("way", [*SEND_WAYS, "context"])
def test_two_threads_sending_at_once_leave_the_request_the_socket_last_sent_outstanding(
        session, url, way, monkeypatch):
    # Before each send was one step against the others (core/policy.py, send_in_order),
    # the second could queue and mark its request sent between the first's two steps:
    # the machine then waited for the second's reply and the policy for the first's, and
    # recv() got neither. The pipe is up first: the first send finds credit at once.
    req, rep = pair_up(session, url)
    wait_until(lambda: req.stats.get("pipes_opened", 0) == 1, what="the pipe")
    user = req.context() if way == "context" else req
    send = sending(user, "send" if way == "context" else way)
    assert send_overlapping(user._policy, send, b"first", b"second", monkeypatch) is None
    for expected in (b"first", b"second"):  # the machine sends both, in their order
        assert rep.recv() == expected
        rep.send(b"answer to " + expected)
    assert user.recv() == b"answer to second"
    with pytest.raises(sp.BadState):
        user.recv(timeout=0)


@pytest.mark.transports(OVERLAP_TRANSPORTS)
@pytest.mark.parametrize("way", SEND_WAYS)
def test_two_threads_answering_one_request_at_once_send_one_reply(session, url, way, monkeypatch):
    # nng's REP: the second reply to one request is NNG_ESTATE. Before each send was one
    # step (core/policy.py, send_in_order), both went out; the REQ dropped the second.
    req, rep = pair_up(session, url)
    req.send(b"question")
    assert rep.recv() == b"question"
    err = send_overlapping(rep._policy, sending(rep, way), b"answer", b"another answer",
                           monkeypatch)
    assert isinstance(err, sp.BadState), err
    assert req.recv() == b"answer"
    req.send(b"next")  # one more round trip: no second reply was on its way
    rep.send(rep.recv())
    assert req.recv() == b"next"
    assert req.stats.get("dropped_stale", 0) == 0


def test_a_send_waiting_for_credit_leaves_the_others_free_to_try(session):
    # A send through a policy waits for credit without its send lock (core/policy.py,
    # send_in_order): another thread's (or an event loop's) send that may not wait finds
    # no credit at once, instead of waiting behind it for the lock.
    req = session.socket(sp.Req, send_timeout=None)  # no peer: no credit, ever
    waiting, waiting_errors = in_thread(req.send, data=b"waits")
    wait_until(lambda: req._channel.send_waiters == 1, what="the first send to wait")
    tried = []
    trying, trying_errors = in_thread(lambda: tried.append(req.try_send(b"tries")))
    trying.join(T)
    stuck = trying.is_alive()
    req.close()  # ends the first send (and a stuck second one) with Closed
    waiting.join(T)
    trying.join(T)
    assert not stuck, "the second send waited for the first one's lock"
    assert tried == [False] and not trying_errors
    assert [type(err) for err in waiting_errors] == [sp.Closed]
