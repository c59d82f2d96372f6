"""Commands that need the running system, run when there is none: one line on stderr, non-zero, within
2 s, and nothing created — no cluster, no folder (SPEC §7). And `oms dlq list` on a broker that runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from oms.runtime.identities import ensure_identities
from oms.runtime.nats import EmbeddedNats
from oms.runtime.ports import free_port, free_port_env

# What "within 2 s" allows on a loaded machine (other test sessions on 2 cores): the time `oms --version`
# takes now beyond what it takes on a quiet one is start-up, not the command's.
QUIET_START_SECONDS = 0.5
TRIES = 3  # the best of a few runs counts: a command that retries for 30 s fails them all


def oms(*args: str, cwd: Path, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "oms", *args],
        cwd=cwd,
        env={**clean, **free_port_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, time.monotonic() - started


def refused(*args: str, cwd: Path, expected: tuple[str, ...], within: float = 2.0, **env: str) -> None:
    """`oms ARGS` answers with one line on stderr naming `expected`, exit 1, `within` seconds."""
    for _ in range(TRIES):
        start_up = min(oms("--version", cwd=cwd)[1] for _ in range(2))
        allowed = within + max(0.0, start_up - QUIET_START_SECONDS)
        result, took = oms(*args, cwd=cwd, **env)
        if took < allowed:
            break
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"oms( bench)?: ", lines[0]), lines[0]
    for text in expected:
        assert text in lines[0]
    assert result.stdout == ""
    assert took < allowed, f"{took:.2f}s"


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_audit_on_a_missing_folder_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "does" / "not" / "exist"
    expected = (f"no running system on {missing}", "oms up")
    refused("audit", "--data-dir", str(missing), cwd=tmp_path, expected=expected)
    assert tree(tmp_path) == []


def test_audit_from_another_folder_creates_no_data_folder_there(tmp_path: Path) -> None:
    for args in (("audit",), ("audit", "--json")):
        refused(*args, cwd=tmp_path, expected=(f"no running system on {tmp_path / '.oms'}",))
    assert tree(tmp_path) == []


def stopped_system(data_dir: Path) -> None:
    """A data folder as `oms up` leaves it after a crash: its identities, and the state of a process that
    is gone."""
    ensure_identities(data_dir / "secrets" / "nats")
    (data_dir / "run").mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()
    state = {"pid": gone.pid, "nats_url": "nats://127.0.0.1:14222", "pg_port": 15432}
    (data_dir / "run" / "state.json").write_text(json.dumps(state))


@pytest.mark.parametrize(
    "command", [("dlq", "list"), ("dlq", "list", "--json"), ("dlq", "replay", "--all"), ("audit",)]
)
def test_with_the_system_stopped_answers_at_once(tmp_path: Path, command: tuple[str, ...]) -> None:
    data_dir = tmp_path / "data"
    stopped_system(data_dir)
    before = tree(tmp_path)
    where = ("--data-dir", str(data_dir))
    expected = (f"no running system on {data_dir}",)
    refused(*command, *where, cwd=tmp_path, expected=expected, OMS_NATS_PORT=str(free_port()))
    assert tree(tmp_path) == before


def test_dlq_on_a_configured_broker_that_does_not_answer_names_it_in_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stopped_system(data_dir)
    url = f"nats://127.0.0.1:{free_port()}"
    expected = (f"cannot reach NATS at {url}",)
    # It tries to connect (importing the broker's modules first): not the 2 s of "no system", but not the 30 s
    # of retries either.
    where = ("--data-dir", str(data_dir))
    refused("dlq", "list", *where, cwd=tmp_path, expected=expected, within=3.0, OMS_NATS_URL=url)


def test_dlq_follows_oms_nats_port(tmp_path: Path, nats_server: EmbeddedNats, js: JetStreamContext) -> None:
    """With OMS_NATS_PORT as the only broker setting, the broker is found there (external: no running
    system of this data folder to ask); an empty queue says so in one line, and in JSON."""
    env = {
        "OMS_EXTERNAL": "true",
        "OMS_NATS_PORT": str(nats_server.port),
        "OMS_NATS_IDENTITIES_DIR": str(nats_server.identities),
    }
    listed, _ = oms("dlq", "list", "--data-dir", str(tmp_path / "data"), cwd=tmp_path, **env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "no dead letters\n"
    as_json, _ = oms("dlq", "list", "--json", "--data-dir", str(tmp_path / "data"), cwd=tmp_path, **env)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {"deadLetters": []}
    assert tree(tmp_path) == []


@pytest.mark.parametrize("data_dir", [None, "missing"])
def test_bench_against_a_system_that_is_not_there_answers_in_one_line(
    tmp_path: Path, data_dir: str | None
) -> None:
    urls = [f"--{name}-url=http://127.0.0.1:{free_port()}" for name in ("auth", "order", "account", "market")]
    where = ["--data-dir", str(tmp_path / data_dir)] if data_dir else []
    login = ["--admin-username", "admin", "--admin-password", "admin-password"]
    expected = ("no running system" if data_dir else "cannot connect",)
    refused("bench", *urls, *login, *where, "--duration", "0", "--no-limits", cwd=tmp_path, expected=expected)
    assert tree(tmp_path) == []
