"""`python -m codegen [--check] [--no-svg]`: generate, or check that nothing on disk is stale.

Exit status 1 with ``protocols.yaml:<line>: <problem>`` when the table is invalid, and with
the list of stale files under --check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .generate import generate_all
from .schema import SpecError

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codegen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if a generated file differs from disk")
    parser.add_argument("--no-svg", action="store_true", help="skip SVG rendering (no graphviz `dot`)")
    parser.add_argument("--spec", help="validate and generate from this file instead of protocols.yaml "
                        "(nothing is written: implies --check)")
    args = parser.parse_args(argv)
    source = None
    if args.spec:
        args.check = True
        source = Path(args.spec).read_text()
    try:
        files = generate_all(ROOT, svg=not args.no_svg, source=source)
    except SpecError as exc:
        print(exc, file=sys.stderr)
        return 1
    stale = []
    for rel, text in files.items():
        path = ROOT / rel
        current = path.read_text() if path.exists() else None
        if current != text:
            stale.append(rel)
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
    if args.check:
        for rel in stale:
            print(f"stale: {rel} (run `make regen`)", file=sys.stderr)
        extra = _orphans(files, svg=not args.no_svg)
        for rel in extra:
            print(f"orphan: {rel} (no machine generates it)", file=sys.stderr)
        return 1 if stale or extra else 0
    for rel in _orphans(files, svg=not args.no_svg):
        (ROOT / rel).unlink()
        print(f"removed {rel}")
    print(f"generated {len(files)} files ({len(stale)} changed)")
    return 0


def _orphans(files: dict[str, str], svg: bool = True) -> list[str]:
    found = []
    diagrams = ("*.dot", "*.svg") if svg else ("*.dot",)
    for folder, patterns in (("src/scaproust/_generated", ("*.py",)), ("diagrams", diagrams)):
        for pattern in patterns:
            for path in sorted((ROOT / folder).glob(pattern)):
                rel = str(path.relative_to(ROOT))
                if rel not in files:
                    found.append(rel)
    return found


if __name__ == "__main__":
    sys.exit(main())
