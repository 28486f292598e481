"""The command line of ``python -m tools.mutate`` (``make mutate MUTATE_ARGS="..."``): which
mutants, how many workers, then the baseline run, the mutants, and the report."""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import yaml

from .action_mutants import action_files, action_mutants
from .mutant import EQUIVALENTS, ROOT, SPEC, SURVIVED, Mutant
from .report import keys_in_report, report
from .runner import CONTEXT_TESTS, chosen_tests, interrupt, run_all, run_tests
from .workspace import Generator, snapshot
from .yaml_mutants import yaml_mutants

DESCRIPTION = ("Mutation testing of the state machines: how much of protocols.yaml and of the "
               "hand-written actions and guards do the fast tests really pin down?")


def load_equivalents(path: Path) -> dict[str, str]:
    """The mutants no test can kill (tools/mutation_equivalents.yaml): key -> reason."""
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return {entry["mutant"]: entry["reason"] for entry in data.get("equivalents") or []}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.mutate", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("yaml", "actions"), help="one family of mutants")
    parser.add_argument("--machine", action="append", help="yaml mutants of this machine only (repeatable)")
    parser.add_argument("--module", action="append",
                        help="action mutants of this module only, e.g. req or core/pipe.py (repeatable)")
    parser.add_argument("--limit", type=int, help="run at most N mutants (after filtering and sampling)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel workers (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds per mutant (default 60; the whole suite takes under 10)")
    parser.add_argument("--every", type=int, default=1,
                        help="run every Nth mutant only (deterministic sample; default 1: all)")
    parser.add_argument("--all", action="store_true", help="run every mutant (overrides --every)")
    parser.add_argument("--key", action="append", help="run only the mutant with this key (repeatable)")
    parser.add_argument("--from-report", metavar="REPORT",
                        help="run only the mutants that survived (or timed out) in this earlier report")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--report", default="build/mutation-report.md", help="where to write the report")
    parser.add_argument("--equivalents", default=str(EQUIVALENTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    command = "python -m tools.mutate " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.monotonic()

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    try:
        return _run(args, command, started)
    except KeyboardInterrupt:
        print("mutate: interrupted", file=sys.stderr)
        return 130


def select(mutants: list[Mutant], args) -> tuple[list[Mutant], int, str]:
    """The mutants the options ask for (by machine, module, key or earlier report, then
    sampled and limited), how many there were before sampling, and the sampling, said."""
    if args.machine or args.module:
        def chosen(m: Mutant) -> bool:
            if m.family == "yaml":
                return bool(args.machine) and m.group in args.machine
            names = (m.group, m.path, Path(m.path).stem, m.group.split("/")[-1])
            return bool(args.module) and any(name in names for name in args.module)
        mutants = [m for m in mutants if chosen(m)]
    if args.key or args.from_report:
        wanted = set(args.key or ()) | (keys_in_report(Path(args.from_report)) if args.from_report else set())
        mutants = [m for m in mutants if m.key in wanted]
    total = len(mutants)
    every = 1 if args.all else max(1, args.every)
    if every > 1:
        mutants = mutants[::every]
    if args.limit:
        mutants = mutants[: args.limit]
    how = [f"every {every}th"] if every > 1 else []
    how += [f"the first {args.limit}"] if args.limit and len(mutants) == args.limit else []
    sampling = ("none: every mutant ran" if len(mutants) == total else
                f"{len(mutants)} of {total} mutants ran ({', '.join(how)}); "
                "`--all` runs them all")
    return mutants, total, sampling


def _run(args, command: str, started: float) -> int:
    with tempfile.TemporaryDirectory(prefix="scaproust-mutate-") as tmp:
        base = Path(tmp) / "base"
        snapshot(base)
        originals = {SPEC: (base / SPEC).read_text()}
        mutants: list[Mutant] = []
        if args.only in (None, "yaml"):
            mutants += yaml_mutants(originals[SPEC])
        if args.only in (None, "actions"):
            for rel in action_files(base):
                originals[rel] = (base / rel).read_text()
            mutants += action_mutants(base)
        mutants, total, sampling = select(mutants, args)
        if args.list:
            for m in mutants:
                print(f"{m.family:7} {m.label}\n        key: {m.key}")
            print(f"{len(mutants)} mutants")
            return 0

        equivalents = load_equivalents(Path(args.equivalents))
        keys = {m.key for m in mutants}
        stale = [k for k in equivalents if k not in keys] if len(mutants) == total and not (
            args.only or args.machine or args.module or args.key or args.from_report) else []

        # The copy must be consistent and green before any mutant means anything.
        gen = Generator(base)
        for rel, text in gen.original.items():
            if (base / rel).read_text() != text:
                print(f"mutate: {rel} is stale in the working tree; regenerated in the copy",
                      file=sys.stderr)
                (base / rel).write_text(text)
        every = chosen_tests(base, True) + sorted(set(CONTEXT_TESTS.values()))
        status, detail, baseline = run_tests(base, every, args.timeout * 2)
        if status != SURVIVED:
            print(f"mutate: the unmutated suite fails ({detail}); fix it first", file=sys.stderr)
            return 2
        shutil.rmtree(base / ".hypothesis", ignore_errors=True)
        print(f"baseline green in {baseline:.1f}s; {len(mutants)} mutants, {args.jobs} jobs",
              file=sys.stderr)

        try:
            run_all(mutants, base=base, tmp=Path(tmp), jobs=args.jobs, timeout=args.timeout,
                    equivalents=equivalents, gen=gen)
        except KeyboardInterrupt:
            print("mutate: interrupted; removing the temporary copies", file=sys.stderr)
            return 130

        text = report(mutants, originals, args, time.monotonic() - started, sampling, baseline,
                      stale, command)
    print(text)
    path = Path(args.report)
    if not path.is_absolute():
        path = ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"report written to {path}", file=sys.stderr)
    return 0


