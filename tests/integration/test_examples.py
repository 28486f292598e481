"""The examples of examples/ run, and do what they say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_threaded_rep_server_with_contexts_answers_every_request(tmp_path):
    url = f"ipc://{tmp_path}/server.ipc"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "rep_server_contexts.py"), url, "8", "40"],
        capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "40 requests answered by 8 workers" in done.stdout
    assert done.stdout.rstrip().endswith(", 0 wrong")
