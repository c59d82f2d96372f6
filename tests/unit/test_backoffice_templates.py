"""Every back-office template compiles: a filter or a macro that does not exist fails here, not on a page."""

from __future__ import annotations

from pathlib import Path

import pytest

from oms.backoffice.views import TEMPLATES

ROOT = Path(TEMPLATES.env.loader.searchpath[0])  # type: ignore[union-attr]
NAMES = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.html"))


@pytest.mark.parametrize("name", NAMES)
def test_the_template_compiles(name: str) -> None:
    TEMPLATES.env.get_template(name)
