"""Every program in examples/ runs as a new user would run it, ``python examples/NAME.py``,
exits 0 within its time limit and prints the lines it promises.

Each file needs an entry in EXPECTED: a new example without one fails
test_every_example_has_an_entry."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TIMEOUT = 30.0  # seconds; each example takes well under 2 s on an idle machine

#: For each example, patterns that must each match a whole line of its output, in any order.
EXPECTED: dict[str, list[str]] = {
    "pair.py": [r"left got: hello from right", r"right got: hello from left"],
    "bus.py": [r"b got: hub says hi", r"c got: hub says hi", r"hub got: b says hi"],
    "reqrep.py": [r"1 \+ 1 = 2", r"2 \+ 2 = 4", r"3 \+ 3 = 6"],
    "pubsub.py": [r"weather got: weather\.paris sunny", r"everything got: news\.today quiet",
                  r"everything got: weather\.paris sunny"],
    "pipeline.py": [r"worker [01] got task 0", r"worker [01] got task 1",
                    r"worker [01] got task 2", r"worker [01] got task 3"],
    "survey.py": [r"respondent 0 heard 'who is there\?'", r"respondent 1 heard 'who is there\?'",
                  r"respondent 2 heard 'who is there\?'", r"3 answers"],
    "device.py": [r"client got: HELLO FROM ALICE", r"client got: HELLO FROM BOB"],
    "asyncio_server_client.py": [r"echo: client 0", r"echo: client 1", r"echo: client 2"],
    "threaded_rep_server.py": [rf"request {n} \(worker [0-2]\)" for n in range(6)],
    "rep_server_contexts.py": [r"40 requests answered by 8 workers in [\d.]+ s, 0 wrong"],
    "cross_process.py": [rf"{n} squared is {n * n} \(from pid \d+\)" for n in (1, 2, 3)]
                        + [r"worker exited with 0"],
}


def test_every_example_has_an_entry():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_example_runs(name, tmp_path):
    # Run from an unrelated directory, as a user would from anywhere.
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"{name} exited {done.returncode}:\n{done.stderr}"
    lines = done.stdout.splitlines()
    for pattern in EXPECTED[name]:
        assert any(re.fullmatch(pattern, line) for line in lines), \
            f"{name} did not print a line matching {pattern!r}; it printed:\n{done.stdout}"
    assert len(lines) == len(EXPECTED[name]), f"{name} printed more than expected:\n{done.stdout}"
