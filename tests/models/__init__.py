"""Stateful property tests: each protocol machine against a small reference model (docs/TESTING.md)."""
