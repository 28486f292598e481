"""The documentation stays true: the options table and the README's quickstart."""

from __future__ import annotations

import re
from pathlib import Path

from scaproust.core.options import SPECS, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_options_table_lists_every_option():
    text = (ROOT / "docs" / "OPTIONS.md").read_text()
    documented = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    assert documented == list(SPECS)
    assert markdown_table() in text, "docs/OPTIONS.md is stale; paste markdown_table() into it"


def test_the_readme_quickstart_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    code = re.findall(r"```python\n(.*?)```", readme, flags=re.S)[0]
    code = code.replace("ipc:///tmp/pair.ipc", f"ipc://{tmp_path}/pair.ipc")
    exec(compile(code, "README.md", "exec"), {})


def test_the_readme_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first_block = re.findall(r"```sh\n(.*?)```", readme, flags=re.S)[0]
    assert first_block.splitlines()[0].startswith("make run")
    assert first_block.splitlines()[1].startswith("make test")


def _examples(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / name).read_text(), flags=re.S)


def test_every_protocol_example_runs():
    examples = _examples("PROTOCOLS.md")
    assert len(examples) >= 8
    for number, code in enumerate(examples, 1):
        exec(compile(code, f"docs/PROTOCOLS.md example {number}", "exec"), {})
