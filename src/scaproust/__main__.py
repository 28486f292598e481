"""Command line: ``python -m scaproust cat ...`` (nanocat/nngcat-compatible, as
``scaproust-cat``), ``python -m scaproust diagram MACHINE``, ``python -m scaproust demo`` (see scaproust/demo.py) and
``python -m scaproust --version``."""

from __future__ import annotations

import argparse
import sys

import scaproust
from scaproust import demo


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["cat"]:  # its own parser: nanocat's rules, not argparse's
        from scaproust.cli import cat

        return cat.main(args[1:], prog="python -m scaproust cat")
    if args[:1] == ["diagram"]:
        from scaproust.cli import diagram

        return diagram.main(args[1:])
    parser = argparse.ArgumentParser(prog="python -m scaproust")
    parser.add_argument("--version", action="version", version=scaproust.__version__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("cat", help="nanocat/nngcat-compatible command line (see cat --help)")
    sub.add_parser("diagram", help="draw one machine: diagram MACHINE [--png|--svg] [-o FILE]")
    sub.add_parser("demo", help="PAIR and PUSH/PULL between processes over TCP and IPC")
    child = sub.add_parser("demo-peer", help="(used by the demo) one peer process")
    child.add_argument("role", choices=("push", "pair"))
    child.add_argument("url")
    parsed = parser.parse_args(args)
    if parsed.command == "demo":
        demo.demo()
    else:
        demo.peer(parsed.role, parsed.url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
