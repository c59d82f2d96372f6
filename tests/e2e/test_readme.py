"""The README as a new user reads it: `oms up` prints what it shows, and its "Trying it" and manual-mode
blocks, pasted into bash next to a started system, print what it promises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oms.runtime.ports import free_port_env
from tests.e2e.conftest import RunningSystem

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def block_after(marker: str) -> str:
    """The fenced block that follows `<!-- marker -->` in the README."""
    after = README.read_text().split(f"<!-- {marker} -->", 1)[1]
    found = re.match(r"\s*```[a-z]*\n(.*?)\n```", after, re.DOTALL)
    assert found, f"no fenced block after <!-- {marker} -->"
    return found.group(1)


@pytest.fixture(scope="module")
def readers_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """`make up` in a checkout, as the README runs it: data in `./.oms`, the admin's password generated;
    on free ports (the blocks read the OMS_*_PORT settings)."""
    checkout = tmp_path_factory.mktemp("checkout")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    running = RunningSystem(checkout / ".oms", {**env, **free_port_env()})
    running.start()
    yield running
    if running.process is not None:
        running.stop()


def paste(system: RunningSystem, script: str) -> subprocess.CompletedProcess[str]:
    """`script` run by bash in the checkout, stopping at the first command that fails."""
    return subprocess.run(
        ["bash", "-c", f"set -eo pipefail\n{script}"],
        cwd=system.data_dir.parent,
        env=system.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def step_names(output: str) -> list[str]:
    """What `oms up` shows: its steps, then the first word of every other line."""
    names = []
    for line in (line.strip() for line in output.splitlines()):
        if line.startswith("✓"):
            names.append(re.sub(r"\s+\d+:\d\d:\d\d$", "", line[1:]).strip())
        elif line:
            names.append(line.split()[0])
    return names


def test_up_prints_what_the_readme_shows(readers_system: RunningSystem) -> None:
    printed = "".join(readers_system.output)
    assert step_names(printed) == step_names(block_after("up-output"))
    shown = re.search(r"Admin login: admin / (\S+) \(the whole password is in (\S+)\)", printed)
    assert shown, printed
    kept = Path(shown.group(2))
    assert kept == readers_system.data_dir / "secrets" / "admin-password"
    password = kept.read_text().strip()
    assert shown.group(1) == f"{password[:3]}…{password[-2:]}"
    assert password not in printed
    for log in (readers_system.data_dir / "logs").glob("*.log"):
        assert password not in log.read_text(errors="replace"), log.name


def test_trying_it_prints_what_the_readme_promises(readers_system: RunningSystem) -> None:
    # The shell's variables are kept for the manual-mode block, which runs "in the same shell".
    keep = "{ declare -p AUTH ORDER ACCOUNT MARKET ME ALICE ADMIN; declare -f json post; } > shell-state.sh"
    result = paste(readers_system, f"{block_after('trying-it')}\n{keep}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == block_after("trying-it-output") + "\n"


def test_the_running_system_answers_audit_and_dlq_in_json(readers_system: RunningSystem) -> None:
    def oms(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "oms", *args],
            cwd=readers_system.data_dir.parent,  # the default data folder, ./.oms
            env=readers_system.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    audit = oms("audit", "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    assert report["clean"] is True and report["violations"] == []
    assert report["orders"] >= 1 and report["customers"] >= 1
    assert oms("dlq", "list").stdout == "no dead letters\n"
    assert json.loads(oms("dlq", "list", "--json").stdout) == {"deadLetters": []}


def test_manual_mode_prints_what_the_readme_promises(readers_system: RunningSystem) -> None:
    readers_system.stop()
    readers_system.start("--execution", "manual")  # as `make up ARGS="--execution manual"`
    result = paste(readers_system, f"source shell-state.sh\n{block_after('manual-mode')}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == block_after("manual-mode-output") + "\n"
