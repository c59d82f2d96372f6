"""`make mutation`'s report: per mutated module, how many of mutmut's mutants the tests killed, and the
mutants that survived with their diffs (also in mutants/survivors.md). Reads what `mutmut run` left under
mutants/; run from the repository's root.

A mutant that only changes the letter case of SQL text (`SELECT` -> `select`) cannot change what PostgreSQL
does: such survivors are counted apart, as equivalent, and the score without them is shown too."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant

MUTANTS = Path("mutants")
KILLED = {1, 3}  # a test failed; pytest's internal error counts too (mutmut's own reading)
TIMEOUT = {-24, 24, 36, 152, 255}  # the mutant made the tests hang: caught, though not by an assertion
_SQL = re.compile(r"\b(select|insert|update|delete|returning|order by|left join)\b", re.IGNORECASE)


def outcome(exit_code: int | None) -> str:
    if exit_code in KILLED:
        return "killed"
    if exit_code in TIMEOUT:
        return "timeout"
    if exit_code == 0:
        return "survived"
    return "not run" if exit_code is None else "no tests" if exit_code in {5, 33} else f"exit {exit_code}"


def changed_lines(diff: str) -> tuple[list[str], list[str]]:
    lines = diff.splitlines()
    removed = [line[1:] for line in lines if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def only_sql_case(diff: str) -> bool:
    removed, added = changed_lines(diff)
    return (
        bool(removed)
        and [line.lower() for line in removed] == [line.lower() for line in added]
        and all(_SQL.search(line) for line in removed)
    )


def report() -> tuple[str, str]:
    """A Markdown table of the scores, and the surviving mutants with their diffs."""
    lines = [
        "| module | mutants | killed | timeout | survived | SQL case | score | without SQL case | minutes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    survivors: list[str] = []
    everything: Counter[str] = Counter()
    for meta in sorted((MUTANTS / "src").rglob("*.py.meta")):
        results: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        if all(code is None for code in results.values()):
            continue  # not among the modules of this run
        source = meta.relative_to(MUTANTS).with_suffix("")
        counts = Counter(outcome(code) for code in results.values())
        for name in sorted(name for name, code in results.items() if outcome(code) == "survived"):
            diff = get_diff_for_mutant(name, path=source)
            if only_sql_case(diff):
                counts["sql case"] += 1
            removed, added = changed_lines(diff)
            survivors.append(f"### {name}\n```diff\n" + "".join(f"-{r}\n" for r in removed))
            survivors[-1] += "".join(f"+{a}\n" for a in added) + "```\n"
        everything += counts
        lines.append(_row(source.as_posix().removeprefix("src/").removesuffix(".py"), counts, len(results)))
    if everything:
        lines.append(_row("all", everything, sum(everything.values()) - everything["sql case"]))
    return "\n".join(lines), "\n".join(survivors)


def _row(module: str, counts: Counter[str], total: int) -> str:
    caught = counts["killed"] + counts["timeout"]
    timed = MUTANTS / f"{module.replace('/', '.')}.seconds"  # written by `make mutation`
    minutes = f"{int(timed.read_text()) / 60:.1f}" if timed.exists() else ""
    real = total - counts["sql case"]
    return (
        f"| {module} | {total} | {counts['killed']} | {counts['timeout']} | {counts['survived']} "
        f"| {counts['sql case']} | {100 * caught / total:.1f} % | {100 * caught / real:.1f} % | {minutes} |"
    )


if __name__ == "__main__":
    table, survivors = report()
    (MUTANTS / "survivors.md").write_text(survivors)
    print(table)
    print(f"\nSurvivors and their diffs: {MUTANTS / 'survivors.md'}")
