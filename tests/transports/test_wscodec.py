"""The WebSocket codec (transports/wscodec.py), byte for byte: the upgrade request and
answer, the frames we send, and what the decoder accepts and refuses (with its close code)."""

from __future__ import annotations

import random
import struct

import pytest

from scaproust.transports import wscodec as ws
from scaproust.transports.framing import OversizeFrame

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455, 1.3


@pytest.fixture
def fixed_mask(monkeypatch):
    """Every masking key is 37 fa 21 3d (RFC 6455, 5.7's example)."""
    monkeypatch.setattr(ws.os, "urandom", lambda n: b"\x37\xfa\x21\x3d"[:n])


# ---------------------------------------------------------------- the opening handshake


def test_accept_key_is_the_rfc_example():
    assert ws.accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_new_key_is_16_random_bytes_in_base64():
    import base64

    one, two = ws.new_key(), ws.new_key()
    assert len(base64.b64decode(one)) == 16 and one != two


def test_the_request_offers_the_peers_protocol():
    assert ws.subprotocol("rep") == "rep.sp.nanomsg.org"
    assert ws.build_request("127.0.0.1:5555", "/sp", KEY, "rep.sp.nanomsg.org") == (
        b"GET /sp HTTP/1.1\r\n"
        b"Host: 127.0.0.1:5555\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: rep.sp.nanomsg.org\r\n"
        b"\r\n")


def test_the_answer_accepts_the_key_and_names_the_protocol():
    assert ws.build_response(KEY, "pair1.sp.nanomsg.org") == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: pair1.sp.nanomsg.org\r\n"
        b"\r\n")


def test_an_error_answer_is_complete_and_closes():
    assert ws.build_error_response(404, "no socket listens on path '/x'") == (
        b"HTTP/1.1 404 Not Found\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 31\r\n"
        b"Connection: close\r\n"
        b"\r\n"
        b"no socket listens on path '/x'\n")


def _request(**changes: str | None) -> bytes:
    headers = {"Host": "h:1", "Upgrade": "websocket", "Connection": "keep-alive, Upgrade",
               "Sec-WebSocket-Key": KEY, "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Protocol": "x.sp.nanomsg.org, rep.sp.nanomsg.org"}
    line = changes.pop("line", None) or "GET /a?b=c HTTP/1.1"
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    text = line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return text.encode()


def test_a_request_is_parsed_and_checked():
    head = _request()
    assert ws.head_end(head + b"\x82\x00") == len(head)
    request = ws.parse_request(head)
    assert (request.method, request.target, request.path) == ("GET", "/a?b=c", "/a")
    assert request.headers["sec-websocket-key"] == KEY
    assert ws.check_request(request, "rep.sp.nanomsg.org") == KEY


@pytest.mark.parametrize(("changes", "why"), [
    ({"Sec-WebSocket-Protocol": "req.sp.nanomsg.org"}, "subprotocol 'rep.sp.nanomsg.org' not offered"),
    ({"Sec-WebSocket-Protocol": None}, "not offered"),
    ({"line": "POST / HTTP/1.1"}, "method 'POST'"),
    ({"line": "GET / HTTP/1.0"}, "HTTP/1.0, not HTTP/1.1"),
    ({"Upgrade": "h2c"}, "no 'Upgrade: websocket'"),
    ({"Connection": "close"}, "no 'Connection: Upgrade'"),
    ({"Sec-WebSocket-Version": "8"}, "version '8'"),
    ({"Sec-WebSocket-Key": "c2hvcnQ="}, "bad Sec-WebSocket-Key"),
])
def test_a_wrong_request_is_refused_with_400(changes, why):
    with pytest.raises(ws.HttpRefusal, match=why) as info:
        ws.check_request(ws.parse_request(_request(**changes)), "rep.sp.nanomsg.org")
    assert info.value.status == 400


def test_a_head_is_measured_only_once_complete_and_bounded():
    assert ws.head_end(b"GET / HTTP/1.1\r\nHost: x\r\n") == 0
    assert ws.head_end(b"GET / HTTP/1.1\r\n\r\n") == 18
    with pytest.raises(ws.HttpRefusal) as info:
        ws.head_end(b"GET / HTTP/1.1\r\nX: " + b"y" * ws.MAX_HEAD)
    assert info.value.status == 431


def test_what_is_not_http_is_refused():
    with pytest.raises(ws.HttpRefusal, match="malformed HTTP request line"):
        ws.parse_request(b"\x00SP\x00\x00\x10\x00\x00\r\n\r\n")
    with pytest.raises(ws.HttpRefusal, match="malformed HTTP header line"):
        ws.parse_request(b"GET / HTTP/1.1\r\nno colon here\r\n\r\n")


@pytest.mark.parametrize("line", ["HTTP/1.1 ¹²³ Odd", "HTTP/1.1 x101 Oops",
                                  "HTTP/1.1", "FTP/1.0 101 Nope"])
def test_a_malformed_status_line_is_a_refusal(line):
    # "¹²³".isdigit() holds, and int() refused it: a ValueError, logged as a bug of ours.
    with pytest.raises(ws.HttpRefusal, match="malformed HTTP status line"):
        ws.parse_response((line + "\r\n\r\n").encode("latin-1"))


def _answer(status: str = "101 Switching Protocols", **headers: str) -> ws.Response:
    base = {"Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Accept": ws.accept_key(KEY),
            "Sec-WebSocket-Protocol": "rep.sp.nanomsg.org"}
    base.update({k.replace("_", "-"): v for k, v in headers.items()})
    text = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in base.items() if v)
    return ws.parse_response((text + "\r\n").encode())


def test_the_client_accepts_a_right_answer():
    ws.check_response(_answer(), KEY, "rep.sp.nanomsg.org")


@pytest.mark.parametrize(("answer", "why"), [
    (_answer(Sec_WebSocket_Protocol=""), "101 without a subprotocol"),
    (_answer(Sec_WebSocket_Protocol="req.sp.nanomsg.org"), "server chose subprotocol"),
    (_answer(Sec_WebSocket_Accept="AAAA"), "wrong Sec-WebSocket-Accept"),
    (_answer("400 Bad Request"), "server answered 400 Bad Request"),
    (_answer("404 Not Found"), "server answered 404 Not Found"),
    (_answer(Upgrade=""), "Upgrade: websocket"),
])
def test_the_client_refuses_a_wrong_answer(answer, why):
    with pytest.raises(ws.HttpRefusal, match=why):
        ws.check_response(answer, KEY, "rep.sp.nanomsg.org")


# ---------------------------------------------------------------- frames we send


def test_masking_is_the_rfc_example():
    assert ws.mask(b"Hello", b"\x37\xfa\x21\x3d") == bytes.fromhex("7f9f4d5158")
    assert ws.mask(bytes.fromhex("7f9f4d5158"), b"\x37\xfa\x21\x3d") == b"Hello"
    assert ws.mask(b"", b"\x37\xfa\x21\x3d") == b""


@pytest.mark.parametrize("size", [ws.STRIDED_MIN - 1, ws.STRIDED_MIN, ws.STRIDED_MIN + 3,
                                  ws.MAX_FRAGMENT + 1])
@pytest.mark.parametrize("key", [b"\x37\xfa\x21\x3d", b"\x00\xff\x00\x01"])
def test_masking_either_side_of_the_strided_threshold_is_the_same_xor(size, key):
    data = random.Random(size).randbytes(size)
    expected = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    assert bytes(ws.mask(data, key)) == expected
    assert bytes(ws.mask(memoryview(data)[1:], key)) == bytes(
        b ^ key[i % 4] for i, b in enumerate(data[1:]))


def test_a_server_sends_a_small_message_as_one_unmasked_buffer():
    assert ws.encode_message([b"\x80\x00\x00\x01", b"Hello"], masked=False) == [
        b"\x82\x09\x80\x00\x00\x01Hello"]
    assert ws.encode_message([b""], masked=False) == [b"\x82\x00"]


def test_a_client_masks_every_frame(fixed_mask):
    assert ws.encode_message([b"Hello"], masked=True) == [
        b"\x82\x85\x37\xfa\x21\x3d" + bytes.fromhex("7f9f4d5158")]


def test_length_encodings_7_16_and_64_bits():
    assert ws.encode_message([b"x" * 125], masked=False)[0][:2] == b"\x82\x7d"
    assert ws.encode_message([b"x" * 126], masked=False)[0][:4] == b"\x82\x7e\x00\x7e"
    assert ws.encode_message([b"x" * 16384], masked=False)[0][:4] == b"\x82\x7e\x40\x00"
    bufs = ws.encode_message([b"x" * 65536], masked=False)
    assert bufs[0] == b"\x82\x7f" + struct.pack(">Q", 65536)


def test_a_large_message_leaves_in_fragments_of_64_kib_without_a_copy():
    body = bytes(range(256)) * 800  # 204,800 bytes
    bufs = ws.encode_message([b"\x80\x00\x00\x07", body], masked=False)
    assert bufs[0] == b"\x02\x7f" + struct.pack(">Q", 65536)  # binary, not final
    assert bytes(bufs[1]) == b"\x80\x00\x00\x07"
    assert bufs[2].obj is body and len(bufs[2]) == 65532  # a view of the body: no copy
    assert bufs[3] == b"\x00\x7f" + struct.pack(">Q", 65536)  # continuation
    assert bufs[5] == b"\x00\x7f" + struct.pack(">Q", 65536)
    assert bufs[7] == b"\x80\x7e" + struct.pack(">H", 204804 - 3 * 65536)  # final
    assert all(b.obj is body for b in bufs[4::2])
    assert b"".join(bytes(b) for b in bufs[1::2][:1] + bufs[2::2]) == b"\x80\x00\x00\x07" + body


def test_a_masked_fragment_spanning_two_parts_keeps_the_key_running(fixed_mask):
    header, body = b"\x80\x00\x00\x01", b"y" * 70000
    wire = b"".join(bytes(b) for b in ws.encode_message([header, body], masked=True))
    decoder = ws.WsDecoder(masked=True, max_size=0)
    assert decoder.feed(wire) == [header + body]


def test_control_frames():
    assert ws.encode_control(ws.OP_PONG, b"abc", masked=False) == b"\x8a\x03abc"
    assert ws.encode_close(1002, "bad", masked=False) == b"\x88\x05\x03\xeabad"
    assert ws.encode_close(1000, "é" * 100, masked=False)[1] == 2 + 122  # cut whole
    with pytest.raises(ValueError, match="at most 125"):
        ws.encode_control(ws.OP_PING, b"x" * 126, masked=False)


# ---------------------------------------------------------------- frames we receive


def _server() -> ws.WsDecoder:
    return ws.WsDecoder(masked=True, max_size=0)


def _client(max_size: int = 0) -> ws.WsDecoder:
    return ws.WsDecoder(masked=False, max_size=max_size)


def test_a_fragmented_message_with_a_ping_between_its_fragments(fixed_mask):
    decoder = _client()
    assert decoder.feed(b"\x02\x03Hel" + b"\x89\x04ping") == []
    assert decoder.pings == [b"ping"]
    assert decoder.pending_bytes == 3
    assert decoder.feed(b"\x80\x02lo\x82\x00") == [b"Hello", b""]
    assert decoder.pending_bytes == 0


def test_every_split_of_the_input_decodes_the_same():
    wire = (b"\x82\x7e\x00\xc8" + b"a" * 200 + b"\x02\x01b" + b"\x8a\x00" + b"\x80\x01c"
            + b"\x82\x7f" + struct.pack(">Q", 70000) + b"d" * 70000)
    expected = [b"a" * 200, b"bc", b"d" * 70000]
    for step in (1, 2, 3, 7, 13, 4096):
        decoder = _client()
        out = []
        for i in range(0, len(wire), step):
            out += decoder.feed(wire[i:i + step])
        assert out == expected, step


def test_a_server_unmasks_what_a_client_sent(fixed_mask):
    decoder = _server()
    wire = b"".join(ws.encode_message([b"Hello"], masked=True))
    assert decoder.feed(wire[:4]) == [] and decoder.feed(wire[4:]) == [b"Hello"]


def test_the_peers_close_frame_is_kept_and_ends_reading():
    decoder = _client()
    assert decoder.feed(b"\x82\x01a\x88\x04\x03\xe8ok\x82\x01b") == [b"a"]
    assert decoder.close == (1000, "ok")
    empty = _client()
    empty.feed(b"\x88\x00")
    assert empty.close == (1005, "")


def _refused(decoder: ws.WsDecoder, data: bytes, code: int, why: str) -> ws.ProtocolError:
    with pytest.raises(ws.ProtocolError, match=why) as info:
        decoder.feed(data)
    assert info.value.code == code
    with pytest.raises(ws.WsError, match="already failed"):
        decoder.feed(b"\x82\x00")
    return info.value


def test_a_text_frame_is_refused_with_1003():
    _refused(_client(), b"\x81\x02hi", 1003, "text frame")


def test_an_oversize_message_is_refused_with_1009_from_its_header_alone():
    err = _refused(_client(max_size=10), b"\x82\x0b", 1009, "11 bytes exceeds")
    assert isinstance(err, OversizeFrame) and (err.size, err.limit) == (11, 10)
    assert _client(max_size=10).feed(b"\x82\x0a" + b"x" * 10) == [b"x" * 10]  # inclusive


def test_an_oversize_fragmented_message_is_refused_at_the_fragment_that_passes_the_limit():
    decoder = _client(max_size=10)
    assert decoder.feed(b"\x02\x06abcdef") == []
    _refused(decoder, b"\x80\x05", 1009, "11 bytes exceeds")


@pytest.mark.parametrize(("decoder", "data", "why"), [
    (_server, b"\x82\x01a", "unmasked frame from a client"),
    (_client, b"\x82\x81abcdz", "masked frame from a server"),
    (_client, b"\xc2\x00", "reserved bits"),
    (_client, b"\x80\x01a", "continuation frame with no message"),
    (_client, b"\x02\x01a\x82\x01b", "a new message before the last fragment"),
    (_client, b"\x89\x7e\x00\x7e", "longer than 125 bytes control frame"),
    (_client, b"\x09\x00", "fragmented"),
    (_client, b"\x8b\x00", "unknown control opcode 0xb"),
    (_client, b"\x83\x00", "unknown data opcode 0x3"),
    (_client, b"\x88\x01\x03", "1-byte payload"),
    (_client, b"\x82\x7f\x80" + b"\x00" * 7, "most significant bit"),
])
def test_protocol_errors_are_refused_with_1002(decoder, data, why):
    _refused(decoder(), data, 1002, why)


def test_messages_before_a_bad_frame_are_kept_with_the_error():
    err = _refused(_client(), b"\x82\x01a\x82\x01b\x81\x00", 1003, "text")
    assert err.frames == [b"a", b"b"]
