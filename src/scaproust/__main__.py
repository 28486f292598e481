"""Command line: `python -m scaproust demo` runs the demo (see scaproust/demo.py)."""

from __future__ import annotations

import argparse

from scaproust import demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m scaproust")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="PAIR and PUSH/PULL between processes over TCP and IPC")
    child = sub.add_parser("demo-peer", help="(used by the demo) one peer process")
    child.add_argument("role", choices=("push", "pair"))
    child.add_argument("url")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo.demo()
    else:
        demo.peer(args.role, args.url)


if __name__ == "__main__":
    main()
