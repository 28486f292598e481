"""More backtrace word rules (protocols/_headers.py; WIRE.md, "Request / reply header"),
written to kill the mutants of ``make mutate`` that survived test_headers.py.
"""

from __future__ import annotations

import pytest

from scaproust.protocols._headers import TooManyHops, pipe_word, pop_word, split_backtrace


@pytest.mark.parametrize("ttl", [1, 2, 8])
def test_ttl_hops_with_no_id_after_them_are_too_many_not_malformed(ttl):
    # The id would be word ttl + 1: too deep, whatever follows (the pipe stays open).
    hops = b"".join(pipe_word(n) for n in range(ttl))
    with pytest.raises(TooManyHops):
        split_backtrace(hops, ttl=ttl)


def test_pop_word_takes_a_header_of_exactly_one_word():
    assert pop_word(pipe_word(3)) == (3, b"")
