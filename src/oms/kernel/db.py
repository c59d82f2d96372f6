"""Database plumbing shared by the services: schema migrations and asyncpg pools."""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config


def _alembic_config(service: str, url: str) -> Config:
    config = Config()
    config.set_main_option("path_separator", "os")
    config.set_main_option("script_location", str(Path(__file__).parent / "alembic"))
    config.set_main_option("version_locations", str(files(f"oms.{service}") / "migrations" / "versions"))
    config.attributes["url"] = url.replace("postgresql://", "postgresql+psycopg2://", 1)
    return config


def migrate(service: str, url: str, revision: str = "head") -> None:
    """Bring `service`'s database to the newest schema, or to `revision` (safe to run from several replicas at
    once)."""
    command.upgrade(_alembic_config(service, url), revision)


def downgrade(service: str, url: str, revision: str = "base") -> None:
    """Take `service`'s database back to `revision` (by default: before the first migration)."""
    command.downgrade(_alembic_config(service, url), revision)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection goes back to the pool: the services keep no session state (no SET,
    LISTEN, cursors or session advisory locks — transaction-level ones only), and asyncpg still rolls back a
    transaction left open. Its default reset query would be one more round trip on every release."""


async def create_pool(url: str, *, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, init=_init_connection, reset=_keep_session
    )
    assert pool is not None
    return pool
