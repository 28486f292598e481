"""Mutation testing of the state machines: how much of protocols.yaml and of the hand-written
actions and guards do the fast tests really pin down? (``make mutate``, that is
``python -m tools.mutate``; issue 5, "Test power".)

Two families of mutants, each applied alone to a private copy of the repository (never to
the tree this package lives in):

- **yaml** (``yaml_mutants``): protocols.yaml, row by row and state by state. The real code
  generator then turns the mutated table into src/scaproust/_generated/ of the copy. A
  table the schema rejects is *killed by the validator*; one whose generated Python is byte
  for byte the original's is *equivalent* (same code, same behaviour) without running
  anything.
- **actions** (``action_mutants``): the hand-written modules (src/scaproust/protocols/*.py,
  core/pipe.py, core/dialer.py, core/listener.py), mutated with ``ast`` one site at a time.

The modules:

- ``mutant``: the ``Mutant`` record, its statuses, the repository's paths;
- ``yaml_mutants``, ``action_mutants``: the generators (pure: text in, mutants out);
- ``workspace``: the snapshot of the working tree, the per-worker copies, the code
  generator run on the snapshot;
- ``runner``: which tests run for a mutant, parallel workers, timeouts, interruption;
- ``report``: scores and the Markdown report;
- ``cli``: the command line (``python -m tools.mutate --help``).

Mutants listed in tools/mutation_equivalents.yaml, with the reason no test can tell them
apart, are reported as *equivalent* instead of survived; their keys hold no line numbers.
Every mutant runs by default (about 20 minutes with 2 jobs); ``--every N`` samples
deterministically, ``--from-report`` reruns only the survivors of an earlier report (the
loop when writing tests that kill them).
"""
