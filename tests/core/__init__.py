"""Sans-IO unit tests of the core: the pipe machine and the user/I-O channel."""
