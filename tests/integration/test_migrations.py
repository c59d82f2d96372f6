"""Each service's migration history, up and down against real PostgreSQL: every revision undoes exactly
what it did, so the histories stay consistent and a database can be rebuilt from any point."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from oms.kernel.db import downgrade, migrate
from oms.kernel.settings import SERVICES
from tests.conftest import execute

SCHEMA = (
    "SELECT c.relkind::text || ':' || c.relname FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = 'public' AND c.relname NOT LIKE 'alembic_version%' "
    "UNION ALL SELECT 'publication:' || pubname FROM pg_publication "
    "UNION ALL SELECT 'function:' || proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname = 'public' ORDER BY 1"
)


def schema(url: str) -> list[str]:
    return [str(row[0]) for row in execute(url, SCHEMA)]


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_down_to_nothing_and_up_again_give_the_same_schema(
    make_database: Callable[[str], str], service: str
) -> None:
    url = make_database(f"migrations_{service}")
    migrate(service, url)
    newest = schema(url)
    assert newest

    downgrade(service, url)
    assert schema(url) == []

    migrate(service, url)
    assert schema(url) == newest


@pytest.mark.parametrize("service", ["order", "account"])
def test_each_revision_undoes_only_what_it_did(make_database: Callable[[str], str], service: str) -> None:
    url = make_database(f"revisions_{service}")
    migrate(service, url)
    newest = schema(url)
    downgrade(service, url, "0001")
    first = schema(url)
    assert "r:relay_slots" in newest and "r:relay_slots" not in first
    assert "r:outbox" in first  # 0002 leaves 0001's tables alone
    migrate(service, url)
    assert schema(url) == newest
