"""Each protocol is declared once, in protocols/__init__.py (core/protocol_info.py), and
everything else comes from that declaration; its module loads on its first socket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import scaproust as sp
from scaproust import protocols
from scaproust.core.options import SPECS, Options, protocols_with
from scaproust.core.protocol_info import ProtocolInfo, by_name, registered


def test_every_declared_protocol_is_exported_by_its_public_name():
    assert set(registered()) == set(protocols.ALL)
    for info in registered():
        assert getattr(sp, info.name.capitalize()) is info
        assert info.name.capitalize() in sp.__all__
        assert by_name(info.name) is info


def test_every_protocol_has_a_declared_peer_that_names_it_back():
    for info in registered():
        peer = info.peer()
        assert peer.name == info.peer_name and peer.peer_id == info.id


def test_a_protocol_declared_twice_is_refused():
    with pytest.raises(ValueError, match="'req' is declared twice"):
        ProtocolInfo("req", id=0x30, peer_id=0x31, peer_name="rep", can_send=True,
                     can_recv=True, module="scaproust.protocols.req", machine="Req",
                     raw_machine="ReqRaw")


def test_a_declaration_names_the_classes_of_its_module():
    from scaproust.core.policy import Policy
    from scaproust.protocols.req import Req, ReqPolicy, ReqRaw
    from scaproust.protocols.sub import Sub, SubRaw

    assert (sp.Req.machine_class(), sp.Req.machine_class(raw=True)) == (Req, ReqRaw)
    assert sp.Req.policy_class() is ReqPolicy
    assert (sp.Sub.machine_class(), sp.Sub.machine_class(raw=True)) == (Sub, SubRaw)
    assert sp.Pull.policy_class() is None
    for info in registered():
        for raw in (False, True):
            assert info.machine_class(raw).__module__ == info.module
        policy = info.policy_class()
        assert policy is None or issubclass(policy, Policy)


ROOT = Path(__file__).resolve().parents[2]

LAZY = """
import json, sys
import scaproust as sp

def loaded():
    # (under SCAPROUST_FSM=transitions each machine also loads its _reference module)
    return sorted(m for m in sys.modules if m.startswith(("scaproust.protocols.",
                  "scaproust._generated.")) and not m.endswith("_reference"))

at_import = loaded()
asyncio_at_import = "asyncio" in sys.modules  # loaded by the coroutines of facade/aio.py
with sp.Session() as session:
    session.socket(sp.Req).close()
print(json.dumps({"at_import": at_import, "after_req": loaded(),
                  "asyncio_at_import": asyncio_at_import}))
"""


def test_import_scaproust_loads_no_protocol_until_its_first_socket():
    # What import time is made of (docs/ARCHITECTURE.md, "Machines"): no protocol module,
    # no generated protocol machine, and not asyncio.
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", LAZY], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    # The endpoint, socket and pipe machines are core's; no protocol's is loaded, nor the
    # TLS and WebSocket pipes' (test_import_scaproust_loads_no_tls_or_ws_until_used).
    machines = ["scaproust._generated." + m
                for m in ("dialer", "listener", "pipe", "socket")]
    assert got["at_import"] == machines
    assert got["asyncio_at_import"] is False
    assert set(got["after_req"]) - set(machines) == {
        "scaproust.protocols._backtrace", "scaproust.protocols._balance",
        "scaproust.protocols._base", "scaproust.protocols._headers",
        "scaproust.protocols._resend", "scaproust.protocols.req", "scaproust._generated.req",
        "scaproust._generated.req_raw", "scaproust._generated.req_ctx"}


TRANSPORTS = """
import json, sys
import scaproust as sp

OPTIONAL = ("ssl", "_ssl", "tempfile", "shutil", "hashlib", "base64", "urllib.parse",
            "scaproust.transports.tls", "scaproust.transports.ws",
            "scaproust.transports.wscodec", "scaproust.transports.abstract",
            "scaproust.core.tls_pipe", "scaproust.core.ws_pipe",
            "scaproust._generated.tls_pipe", "scaproust._generated.ws_pipe",
            "scaproust._generated.wss_pipe")

def loaded():
    return sorted(m for m in OPTIONAL if m in sys.modules)

at_import = loaded()
config = sp.TLSConfig(cert_key_file=sys.argv[1])  # an option value: still no ssl
after_config = loaded()
with sp.Session() as session:
    with session.socket(sp.Pair) as s:
        s.bind("tcp://127.0.0.1:0")
        after_tcp = loaded()
        s.bind("tls+tcp://127.0.0.1:0", tls=config)
        after_tls = loaded()
print(json.dumps({"at_import": at_import, "after_config": after_config,
                  "after_tcp": after_tcp, "after_tls": after_tls}))
"""


def test_import_scaproust_loads_no_tls_or_ws_until_used(tmp_path):
    # ssl, the TLS and WebSocket transports and their pipes load at the first endpoint that
    # needs them (docs/ARCHITECTURE.md, "What loads at import"); sp.TLSConfig does not.
    trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")
    pem = tmp_path / "server.pem"
    trustme.CA().issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([sys.executable, "-c", TRANSPORTS, str(pem)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["at_import"] == []
    assert got["after_config"] == []
    assert got["after_tcp"] == []
    assert {"ssl", "scaproust.transports.tls", "scaproust.core.tls_pipe",
            "scaproust._generated.tls_pipe"} <= set(got["after_tls"])
    # a tls+tcp endpoint needs none of the WebSocket modules
    assert not {m for m in got["after_tls"] if "ws" in m}


def test_the_options_a_protocol_accepts_come_from_its_declaration():
    assert protocols_with(SPECS["resend_interval"]) == ["req"]
    assert protocols_with(SPECS["ttl"]) == ["pair1", "rep", "req", "respondent", "surveyor"]
    assert len(protocols_with(SPECS["linger"])) == len(registered())
    assert Options(sp.Req, resend_interval=2.0).resend_interval == 2.0
    with pytest.raises(TypeError, match="does not apply to a pull socket"):
        Options("pull", ttl=3)
