"""The socket's counters (core/stats.py): what the I/O thread and callers count, read back."""

from __future__ import annotations

from scaproust.core.stats import Stats


def test_a_counter_is_in_the_stats_once_it_counted_something():
    # ``in`` fell back to __getitem__ with 0, 1, 2, ... (every name reads 0): it never
    # ended, and a test asserting a counter's absence hung.
    stats = Stats()
    assert "dropped_ttl" not in stats and 0 not in stats
    stats.count("dropped_ttl")
    stats.count_from_caller("purged_stale", 2)
    assert "dropped_ttl" in stats and "purged_stale" in stats
    assert (stats["dropped_ttl"], stats["purged_stale"]) == (1, 2)
    assert stats.snapshot() == {"dropped_ttl": 1, "purged_stale": 2}
