"""A pytest plugin for `make mutation` (pyproject's [tool.mutmut]): every test run mutmut forks gets a
temporary folder of its own, removed when the run ends. Runs side by side may not share one (pytest empties
the folder it is given), and thousands of runs would otherwise leave thousands of database folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(tempfile.gettempdir()) / "oms-mutation"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    ROOT.mkdir(exist_ok=True)
    config.option.basetemp = str(ROOT / str(os.getpid()))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(config.option.basetemp, ignore_errors=True)
