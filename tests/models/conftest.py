"""Hypothesis profiles of the stateful model tests (docs/TESTING.md, "Profiles").

- ``models-default``: what ``make test`` runs; the whole of tests/models in well under 20 s.
- ``deep``: ``HYPOTHESIS_PROFILE=deep`` picks it: longer runs, many more of them.

Both print the blob of a failing example (``print_blob``), to paste into
``@reproduce_failure`` (docs/TESTING.md says how). The example database stays Hypothesis'
default, ``.hypothesis/`` (git-ignored): a failure found once is replayed first next time.

The models' default is registered under its own name rather than as Hypothesis'
``default`` profile: re-registering ``default`` would silently change every other @given
test of the session (tests/protocols, tests/reactor, ...). The model test cases get their
settings explicitly (``_harness.MODEL_SETTINGS``), so the profile chosen here applies to
them only, whatever else runs in the same session.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

COMMON = dict(deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])

settings.register_profile("models-default", max_examples=75, stateful_step_count=30, **COMMON)
settings.register_profile("deep", max_examples=2000, stateful_step_count=100, **COMMON)
