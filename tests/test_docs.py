"""The documentation stays true: the options table, the README's quickstart, the examples, and
every test a document cites."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scaproust.core.options import SPECS, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_options_table_lists_every_option():
    text = (ROOT / "docs" / "OPTIONS.md").read_text()
    documented = re.findall(r"^\| `(\w+)` \|", text, flags=re.M)
    assert documented == list(SPECS)
    assert markdown_table() in text, "docs/OPTIONS.md is stale; paste markdown_table() into it"


def test_the_readme_quickstart_runs(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    first = blocks[0].strip().splitlines()
    assert len(first) <= 10, "the README's first program is its ten-line quickstart"
    for number, code in enumerate(blocks, 1):
        code = code.replace("ipc:///tmp/pair.ipc", f"ipc://{tmp_path}/pair.ipc")
        exec(compile(code, f"README.md example {number}", "exec"), {})
    assert capsys.readouterr().out.startswith("b'ping pong'\n")


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


def test_every_test_any_document_cites_exists():
    # A claim names the test that proves it, as ``tests/path.py::test_name`` or, right after
    # one, as ``::test_name`` in the same file; each must still exist.
    from tests.test_wire_conformance_doc import NODE_ID, functions_in

    short = re.compile(r"(?<![\w/])::(test_\w+)")
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        path = None
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            cites = [(m.start(), m[1], m[2]) for m in NODE_ID.finditer(line)]
            cites += [(m.start(), None, m[1]) for m in short.finditer(line)]
            for _, file, name in sorted(cites):
                path = file or path
                if path is None or not (ROOT / path).is_file():
                    missing.append(f"{doc.name}:{number}: {path}::{name} (no such file)")
                elif name not in functions_in(path):
                    missing.append(f"{doc.name}:{number}: {path} defines no {name}")
    assert not missing, "documents cite tests that do not exist:\n" + "\n".join(missing)


#: A document named in the repository's text: ``WIRE.md``, ``docs/LIFECYCLE.md``, optionally
#: followed by the sections it points at: ``WIRE.md, "Framing"``, ``WIRE.md, "REQ" and "REP"``.
DOC_REF = re.compile(r"\b((?:docs/)?[A-Z][A-Z_]*\.md)\b((?:(?:,| and| or) \"[^\"\n]+\")*)")
SECTION = re.compile(r"\"([^\"\n]+)\"")
#: What must never be cited: a section by number (the documents have none), or a path on a
#: build machine or outside the repository.
FORBIDDEN = [
    (re.compile(r"\b[A-Z][A-Z_]*\.md,? section \d"), "a section by number (cite its title)"),
    (re.compile(r"\b[A-Z][A-Z_]*\.md, [A-Za-z]"), 'a section without quotes (WIRE.md, "Framing")'),
    # (spelled in pieces, so that this file does not itself name such a path)
    (re.compile("|".join(re.escape(p) for p in ("../" + "shared", "/" + "work/", "/root/"))
                + r"|/home/\w"), "a path outside the repository"),
]


def _tracked_text_files() -> list[Path]:
    import subprocess

    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    keep = (".py", ".md", ".yaml", ".toml", "Makefile", ".ci/run")
    return [ROOT / name for name in names
            if name.endswith(keep) and not name.startswith("bench/results/")
            and (ROOT / name).is_file()]


def _headings(doc: Path) -> set[str]:
    return {line.lstrip("#").strip().lower() for line in doc.read_text().splitlines()
            if line.startswith("#")}


def test_every_document_and_section_the_repository_cites_exists():
    # Code and documents point at the facts they rely on ("WIRE.md, "Framing""); a renamed
    # section or a document that is not in the repository must fail here, not mislead.
    this_file = Path(__file__).resolve()
    problems = []
    for path in _tracked_text_files():
        if path == this_file:
            continue  # the patterns above name what they look for
        rel = path.relative_to(ROOT)
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            for pattern, what in FORBIDDEN:
                if pattern.search(line):
                    problems.append(f"{rel}:{number}: cites {what}: {line.strip()}")
            for match in DOC_REF.finditer(line):
                name = match[1].removeprefix("docs/")
                doc = ROOT / "docs" / name if (ROOT / "docs" / name).is_file() else ROOT / name
                if not doc.is_file():
                    problems.append(f"{rel}:{number}: no document {match[1]}")
                    continue
                for section in SECTION.findall(match[2]):
                    if section.lower() not in _headings(doc):
                        problems.append(f"{rel}:{number}: {doc.name} has no section "
                                        f"{section!r}")
    assert not problems, "stale references:\n" + "\n".join(problems)


def test_the_observability_table_names_exactly_the_counters_of_the_registry():
    from scaproust.core.stats import COUNTERS

    text = (ROOT / "docs" / "OBSERVABILITY.md").read_text()
    table = text[text.index("| counter | counts |"):].split("\n\n", 1)[0]
    documented = {name for row in table.splitlines()[2:]
                  for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert documented == COUNTERS, (
        f"documented but not counted: {sorted(documented - COUNTERS)}; "
        f"counted but not documented: {sorted(COUNTERS - documented)}")


def test_the_code_counts_through_the_registrys_names_only():
    # stats.count("dropped_x") with a typo would make a counter nobody reads.
    import ast

    literal = []
    for path in sorted((ROOT / "src" / "scaproust").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("count", "count_from_caller") and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)):
                literal.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not literal, "counted by a literal name, not a core/stats.py constant: " + ", ".join(literal)


def test_the_tls_example_of_transports_md_runs(tmp_path, monkeypatch, capsys):
    trustme = pytest.importorskip("trustme", reason="pip install trustme (the dev extra)")
    [code] = [c for c in _examples("TRANSPORTS.md") if "tls+tcp://" in c]
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", common_name="example server")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/TRANSPORTS.md", "exec"), {})
    assert "CN=example server" in capsys.readouterr().out


@pytest.mark.parametrize("number", range(len(_examples("COMING_FROM.md"))))
def test_every_coming_from_example_runs(number, capsys):
    code = _examples("COMING_FROM.md")[number]
    exec(compile(code, f"docs/COMING_FROM.md example {number + 1}", "exec"), {})
    # the programs that show an error print a line only when it is raised
    printed = {1: ["nothing within 0.05 s"], 2: ["must be >= 0"],
               3: ["BadState, as NNG_ESTATE", "Closed, as NNG_ECLOSED"],
               5: ["cancelled after 0.05 s"]}.get(number, [])
    out = capsys.readouterr().out
    assert all(line in out for line in printed), out


def test_coming_from_md_has_a_program_per_topic():
    assert len(_examples("COMING_FROM.md")) == 6
