"""The report: scores, a table per machine and per module, a diff of every survivor and
timeout, the equivalents with their reasons; and reading back the survivors of an earlier
report (``--from-report``).

Scores: yaml (killed + validator + timeout) / (total - equivalent); actions
(killed + timeout) / (total - equivalent).
"""

from __future__ import annotations

import difflib
from collections import Counter, defaultdict
from pathlib import Path

from .mutant import EQUIVALENT, KILLED, SAME_CODE, SURVIVED, TIMEOUT, VALIDATOR, Mutant
from .runner import INTEGRATION_TESTS, PYTEST, UNIT_TEST_DIRS


def _diff(original: str, mutated: str, path: str) -> str:
    lines = difflib.unified_diff(original.splitlines(), mutated.splitlines(), f"a/{path}",
                                 f"b/{path}", n=1, lineterm="")
    return "\n".join(list(lines)[2:])


def score(mutants: list[Mutant], family: str) -> tuple[int, int, float]:
    ms = [m for m in mutants if m.family == family]
    counted = [m for m in ms if m.status not in (EQUIVALENT, SAME_CODE)]
    good = [m for m in counted if m.status in (KILLED, TIMEOUT, VALIDATOR)]
    return len(good), len(counted), (100.0 * len(good) / len(counted) if counted else 100.0)


def report(mutants, originals, args, elapsed, sampling, baseline, stale_equivalents, command) -> str:
    out = ["# Mutation report", ""]
    out.append(f"- command: `{command}`")
    out.append(f"- tests per mutant: `pytest {' '.join(PYTEST[2:])}` over "
               f"{', '.join(d for d in UNIT_TEST_DIRS)} (those present), plus "
               f"{', '.join(INTEGRATION_TESTS)} for transport-level mutants; timeout {args.timeout:.0f}s")
    out.append(f"- baseline (unmutated) run: {baseline:.1f}s; {args.jobs} worker(s); "
               f"total time {elapsed / 60:.1f} min")
    out.append(f"- sampling: {sampling}")
    out.append("")
    out.append("## Scores")
    out.append("")
    for family, what in (("yaml", "(killed + validator + timeout) / (total - equivalent)"),
                         ("actions", "(killed + timeout) / (total - equivalent)")):
        if any(m.family == family for m in mutants):
            good, total, pct = score(mutants, family)
            out.append(f"- **{family}**: {good}/{total} = **{pct:.1f} %** {what}")
    out.append("")
    statuses = [KILLED, VALIDATOR, TIMEOUT, SURVIVED, EQUIVALENT, SAME_CODE]
    for family in ("yaml", "actions"):
        ms = [m for m in mutants if m.family == family]
        if not ms:
            continue
        out.append(f"## {family}: per {'machine' if family == 'yaml' else 'module'}")
        out.append("")
        out.append("| " + ("machine" if family == "yaml" else "module") + " | total | "
                   + " | ".join(statuses) + " | score |")
        out.append("|---" * (len(statuses) + 3) + "|")
        groups: dict[str, list[Mutant]] = defaultdict(list)
        for m in ms:
            groups[m.group].append(m)
        for group, gms in groups.items():
            counts = Counter(m.status for m in gms)
            _, _, pct = score(gms, family)
            out.append(f"| {group} | {len(gms)} | " + " | ".join(str(counts[s]) for s in statuses)
                       + f" | {pct:.0f} % |")
        counts = Counter(m.status for m in ms)
        out.append(f"| **all** | {len(ms)} | " + " | ".join(str(counts[s]) for s in statuses)
                   + f" | {score(ms, family)[2]:.1f} % |")
        out.append("")
    for status, title in ((SURVIVED, "Surviving mutants"), (TIMEOUT, "Timeouts (counted as killed)")):
        chosen = [m for m in mutants if m.status == status]
        out.append(f"## {title}: {len(chosen)}")
        out.append("")
        for m in chosen:
            out.append(f"### {m.label}")
            out.append("")
            out.append(f"key: `{m.key}`")
            out.append("")
            out.append("```diff")
            out.append(_diff(originals[m.path], m.text, m.path))
            out.append("```")
            out.append("")
    chosen = [m for m in mutants if m.status in (EQUIVALENT, SAME_CODE)]
    out.append(f"## Equivalent mutants: {len(chosen)}")
    out.append("")
    for m in chosen:
        out.append(f"- `{m.key}` ({m.label}): {m.detail}")
    if stale_equivalents:
        out.append("")
        out.append("Entries of tools/mutation_equivalents.yaml that match no mutant (stale?):")
        out.extend(f"- `{key}`" for key in stale_equivalents)
    out.append("")
    return "\n".join(out)


def keys_in_report(path: Path) -> set[str]:
    """The keys of the surviving and timed-out mutants of a report this tool wrote."""
    keys, section = set(), ""
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            section = line
        elif line.startswith("key: `") and section.startswith(("## Surviving", "## Timeouts")):
            keys.add(line[len("key: `"):-1])
    return keys

