"""A short soak (tools/soak.py) in a subprocess: every protocol over tcp, ipc and inproc, peers
joining, closing and killed, every message accounted for, resources flat. ``make soak`` runs
the long one; docs/RELIABILITY.md says what each check proves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SUMMARY = re.compile(
    r"^soak 5 s: sent (\d+) received (\d+) lost-with-killed-peer (\d+) \(bound \d+\) "
    r"lost-with-closed-peer (\d+) \(bound \d+\) duplicates 0 req (\d+)/(\d+) replies \(stale dropped \d+\) "
    r"pub \d+ sub-deliveries \d+ surveys \d+ responses \d+ bus \d+ echoes \d+ "
    r"joins \d+ kills ([1-9]\d*) closes \d+ rss [+-]\d+\.\d MiB threads [+-]\d+ fds [+-]\d+: OK$")


def test_a_five_second_soak_accounts_for_every_message_and_exits_0():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "soak.py"), "--seconds", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=90)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(lines) == 1, proc.stdout
    match = SUMMARY.match(lines[0])
    assert match, lines[0]
    sent, received, killed, closed, replied, requests, kills = map(int, match.groups())
    assert sent == received + killed + closed and received > 0
    assert replied == requests > 0
