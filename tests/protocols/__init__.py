"""Sans-IO unit tests of the protocol machines (pair, push, pull)."""
