"""The code itself: no dead code and no block written twice in src/ (CI runs these with the other tests)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Framework entry points (routes, commands, fixtures, handlers), pydantic's class settings, API schema fields
# in the original system's camelCase, asyncio protocol callbacks and the settings read from the environment.
IGNORED_DECORATORS = (
    "@*.get,@*.post,@*.delete,@*.put,@*.command,@*.callback,@*.exception_handler,@*.middleware,@*.fixture,"
    "@model_validator"
)
IGNORED_NAMES = (
    "model_config,connection_made,data_received,eof_received,connection_lost,autocommit,"
    "[a-z]*[A-Z]*,*_port,*_database_url,token_type,expires_in"
)


def test_src_has_no_dead_code() -> None:
    found = subprocess.run(
        [
            sys.executable,
            "-m",
            "vulture",
            "src",
            "tests",
            "tests/vulture_whitelist.py",
            "--min-confidence",
            "60",
            "--exclude",
            "*/migrations/*",
            "--ignore-decorators",
            IGNORED_DECORATORS,
            "--ignore-names",
            IGNORED_NAMES,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert [line for line in found.stdout.splitlines() if line.startswith("src/")] == []


_PAIR = re.compile(r"^D\d+ (\S+):(\d+)-(\d+) ~ (\S+):\d+-\d+(.*)$")
_IMPORT_LINE = re.compile(r"^\s*(from \S+ import|import \S|[A-Za-z_][\w.]*,?$|\)$)")


def _only_imports(path: str, first: int, last: int) -> bool:
    lines = (ROOT / "src" / path).read_text().splitlines()[first - 1 : last]
    return all(_IMPORT_LINE.match(line) or not line.strip() for line in lines)


@pytest.mark.skipif(
    shutil.which("duplicates") is None, reason="the `duplicates` command is not installed here"
)
def test_src_has_no_block_written_twice() -> None:
    """Identical runs of 6+ lines in Python code. Not counted: look-alikes of another shape, migrations (each
    keeps the DDL it ran with, on purpose), templates, and runs that are import lists."""
    report = subprocess.run(
        ["duplicates", "--repo", "src", "--most", "200", "--seconds", "60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    written_twice = []
    for line in report.splitlines():
        pair = _PAIR.match(line)
        if pair is None or " shape" in pair.group(5):
            continue
        a, a1, a2, b = pair.groups()[:4]
        if not (a.endswith(".py") and b.endswith(".py")) or "/migrations/" in a + b:
            continue
        if _only_imports(a, int(a1), int(a2)):
            continue
        written_twice.append(line)
    assert "incomplete" not in report
    assert written_twice == []
