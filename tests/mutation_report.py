"""`make mutation`'s report: per mutated module, how many of mutmut's mutants the tests killed, and the names
of those that survived (`mutmut show NAME` prints one). Reads what `mutmut run` left under mutants/."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

KILLED = {1, 3}  # a test failed; pytest's internal error counts too (mutmut's own reading)
TIMEOUT = {-24, 24, 36, 152, 255}  # the mutant made the tests hang: caught, though not by an assertion
SURVIVED = {0}


def outcome(exit_code: int | None) -> str:
    if exit_code in KILLED:
        return "killed"
    if exit_code in TIMEOUT:
        return "timeout"
    if exit_code in SURVIVED:
        return "survived"
    return "not run" if exit_code is None else "no tests" if exit_code in {5, 33} else f"exit {exit_code}"


def report(mutants: Path) -> tuple[str, list[str]]:
    """A Markdown table of the scores, and the surviving mutants' names."""
    lines = [
        "| module | killed | timeout | survived | other | score | minutes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    survivors: list[str] = []
    everything: Counter[str] = Counter()
    for meta in sorted((mutants / "src").rglob("*.py.meta")):
        results: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        if all(code is None for code in results.values()):
            continue  # not among the modules of this run
        counts = Counter(outcome(code) for code in results.values())
        everything += counts
        survivors += sorted(name for name, code in results.items() if outcome(code) == "survived")
        caught = counts["killed"] + counts["timeout"]
        other = len(results) - caught - counts["survived"]
        module = meta.relative_to(mutants / "src").as_posix().removesuffix(".py.meta")
        timed = mutants / f"{module.replace('/', '.')}.seconds"  # written by `make mutation`
        minutes = f"{int(timed.read_text()) / 60:.1f}" if timed.exists() else "?"
        lines.append(
            f"| {module} | {counts['killed']} | {counts['timeout']} | {counts['survived']} | {other} "
            f"| {caught}/{len(results)} = {100 * caught / len(results):.1f} % | {minutes} |"
        )
    total, caught = sum(everything.values()), everything["killed"] + everything["timeout"]
    if total:
        lines.append(
            f"| all | | | {everything['survived']} | | {caught}/{total} = {100 * caught / total:.1f} % | |"
        )
    return "\n".join(lines), survivors


if __name__ == "__main__":
    table, survivors = report(Path(sys.argv[1] if len(sys.argv) > 1 else "mutants"))
    print(table)
    print(f"\n{len(survivors)} survived:" if survivors else "\nNone survived.")
    print("\n".join(survivors))
