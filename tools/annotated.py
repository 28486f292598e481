"""How many functions of a tree are fully annotated (issue 9, item 2: "Typed, and checked").

    .venv/bin/python tools/annotated.py [PATH ...] [--per-file] [--missing]

Counts every function definition (``def`` and ``async def``, methods, nested functions and
lambdas excluded, generated code included) under each PATH (default: ``src/scaproust``).
A function is annotated when it has a return annotation and every parameter but a leading
``self``/``cls`` of a method has one (``*args`` and ``**kwargs`` included). ``__init__``
needs its ``-> None`` too, as ``mypy --strict`` asks. Prints one line per PATH, and with
``--per-file`` one line per file, with ``--missing`` every function left.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def functions(tree: ast.Module) -> Iterator[tuple[FunctionNode, bool]]:
    """Every function of ``tree`` with whether it is a method (defined in a class body)."""

    def walk(node: ast.AST, in_class: bool) -> Iterator[tuple[FunctionNode, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield child, in_class
                yield from walk(child, False)
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, True)
            else:
                yield from walk(child, in_class)

    yield from walk(tree, False)


def is_annotated(fn: FunctionNode, method: bool) -> bool:
    if fn.returns is None:
        return False
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    if method and not static and positional and positional[0].arg in ("self", "cls"):
        positional = positional[1:]
    params = [*positional, *args.kwonlyargs]
    params += [a for a in (args.vararg, args.kwarg) if a is not None]
    return all(p.annotation is not None for p in params)


def count(path: Path) -> tuple[int, int, list[str]]:
    """(annotated, total, names of the others) for one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    done = total = 0
    missing = []
    for fn, method in functions(tree):
        total += 1
        if is_annotated(fn, method):
            done += 1
        else:
            missing.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
                           f":{fn.lineno}: {fn.name}")
    return done, total, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", default=[str(ROOT / "src" / "scaproust")])
    parser.add_argument("--per-file", action="store_true")
    parser.add_argument("--missing", action="store_true")
    opts = parser.parse_args(argv)
    for name in opts.paths:
        root = Path(name).resolve()
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        done = total = 0
        for path in files:
            d, t, missing = count(path)
            done += d
            total += t
            if opts.per_file and t:
                print(f"  {path.relative_to(root) if root.is_dir() else path.name}: {d}/{t}")
            if opts.missing:
                for line in missing:
                    print(f"    {line}")
        share = 100.0 * done / total if total else 100.0
        print(f"{name}: {done}/{total} functions annotated ({share:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
