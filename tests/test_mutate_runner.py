"""Which tests ``make mutate`` runs against a mutant (tools/mutate/runner.py), on this
repository's own test tree: every sans-IO test file, and the files about the mutated
machine or module first."""

from __future__ import annotations

from pathlib import Path

from tools.mutate.runner import (
    CONTEXT_TESTS,
    INTEGRATION_TESTS,
    chosen_tests,
    files_for,
    split_tests,
)

ROOT = Path(__file__).resolve().parents[1]


def test_every_mutant_runs_every_test_file_of_the_protocols_the_core_and_the_models():
    expected = sorted(str(p.relative_to(ROOT)) for folder in ("protocols", "core", "models")
                      for p in (ROOT / "tests" / folder).glob("test_*.py"))

    assert sorted(chosen_tests(ROOT, transport=False)) == expected
    assert chosen_tests(ROOT, transport=True) == chosen_tests(ROOT, False) + list(INTEGRATION_TESTS)


def test_the_test_files_about_the_mutated_machine_or_module_run_first():
    files = chosen_tests(ROOT, transport=True)

    first = {related: split_tests(files, related)[0] for related in
             ("pipe", "socket", "listener", "dialer", "pair", "pair1", "_backtrace")}

    assert first == {
        "pipe": ["tests/core/test_pipe.py"],
        "socket": ["tests/core/test_socket.py", "tests/core/test_socket_calls.py"],
        "listener": ["tests/core/test_listener.py", "tests/core/test_listener_limits.py"],
        "dialer": ["tests/core/test_dialer.py"],
        "pair": ["tests/protocols/test_pair.py", "tests/integration/test_pair.py"],
        "pair1": ["tests/protocols/test_pair1.py"],
        "_backtrace": ["tests/protocols/test_rep.py", "tests/protocols/test_respondent.py"],
    }
    first, rest = split_tests(files, "req")
    assert sorted(first + rest) == sorted(files)


def test_a_mutant_of_a_protocol_with_contexts_runs_their_integration_tests_among_the_first():
    req = files_for(ROOT, False, "req")
    survey = files_for(ROOT, False, "respondent")

    assert req == chosen_tests(ROOT, False) + ["tests/integration/test_contexts_req.py"]
    assert survey[-1] == "tests/integration/test_contexts_survey.py"
    assert "tests/integration/test_contexts_req.py" in split_tests(req, "req")[0]
    assert "tests/integration/test_contexts_survey.py" in split_tests(survey, "respondent")[0]
    assert files_for(ROOT, True, "pipe") == chosen_tests(ROOT, True)  # no contexts there
    assert all((ROOT / f).exists() for f in CONTEXT_TESTS.values())
