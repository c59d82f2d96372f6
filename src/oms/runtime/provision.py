"""Provisioning a PostgreSQL server for OMS: what `oms up` does to its embedded server at every start, and
`oms db provision` to an external one. Each step is idempotent:

1. the roles (runtime/roles.py), with their passwords from `secrets/`;
2. the databases, each owned by its service's role and connectable by no one else but the relay and audit
   roles that need it;
3. whatever in a database is not owned by its service's role (an older version made everything as the
   superuser) is given to it, object by object (REASSIGN OWNED cannot move what the bootstrap superuser owns);
4. each service's migrations, run as its own role (so what they create is its own);
5. the relay's and the audit's privileges on the tables, which exist only now.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Final

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor
from psycopg2.extensions import encrypt_password

from oms.kernel.db import migrate
from oms.kernel.settings import SERVICES
from oms.kernel.topology import OUTBOX_TABLE, RELAY_SLOTS_TABLE, RELAYED
from oms.runtime.roles import (
    AUDIT,
    AUDITED,
    Role,
    connection_urls,
    connections,
    database_url,
    passwords,
    relay_role,
    service_role,
)

SCHEMA: Final = "public"  # where the migrations create everything

# Each query lists the statements (formatted by the server, which quotes every name) that give {owner} what
# others own in {schema}. Indexes and owned sequences follow their table; an extension's members stay with it.
ADOPT: Final = tuple(
    sql.SQL(query)
    for query in (
        """
        SELECT format('ALTER %s %s OWNER TO %I', CASE c.relkind WHEN 'v' THEN 'VIEW'
                      WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                      WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, c.oid::regclass, {owner})
        FROM pg_class c
        WHERE c.relnamespace = {schema}::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = {owner})
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                          AND d.objid = c.oid AND d.deptype IN ('a', 'i', 'e'))
        """,
        """
        SELECT format('ALTER ROUTINE %s OWNER TO %I', p.oid::regprocedure, {owner})
        FROM pg_proc p
        WHERE p.pronamespace = {schema}::regnamespace
          AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = {owner})
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                          AND d.objid = p.oid AND d.deptype = 'e')
        """,
        """
        SELECT format('ALTER PUBLICATION %I OWNER TO %I', pubname, {owner})
        FROM pg_publication
        WHERE pubowner <> (SELECT oid FROM pg_roles WHERE rolname = {owner})
        """,
    )
)


@contextmanager
def _transaction(url: str) -> Iterator[Cursor]:
    """A cursor in a transaction at `url`, committed at the end of the block (rolled back on an error)."""
    with closing(psycopg2.connect(url)) as conn, conn, conn.cursor() as cur:
        yield cur


def ensure_role(conn: Connection, role: Role, password: str) -> None:
    """Create `role` or bring it back to what it must be: a login with exactly its attributes and password."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role.name,))
        verb = "ALTER" if cur.fetchone() else "CREATE"
        # Only the SCRAM verifier travels (no password in the server's logs or statistics).
        verifier = encrypt_password(password, role.name, conn, "scram-sha-256")
        cur.execute(
            sql.SQL(
                "{} ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS {} PASSWORD {}"
            ).format(
                sql.SQL(verb),
                sql.Identifier(role.name),
                sql.SQL("REPLICATION" if role.replication else "NOREPLICATION"),
                sql.Literal(verifier),
            )
        )
        if role.read_only:
            cur.execute(
                sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(
                    sql.Identifier(role.name)
                )
            )


def ensure_database(cur: Cursor, service: str) -> None:
    """`service`'s database, owned by its role; only the relay and audit roles may connect besides."""
    name, owner = sql.Identifier(service), sql.Identifier(service_role(service).name)
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (service,))
    if cur.fetchone() is None:
        cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, owner))
    else:
        cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(name, owner))
    cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(name))
    for guest in {c.role for c in connections((service,))} - {service_role(service)}:
        cur.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(name, sql.Identifier(guest.name)))


def adopt_objects(cur: Cursor, service: str) -> int:
    """Give `service`'s role everything in its database's schema that another role owns; how many."""
    moved = 0
    names = {"owner": sql.Literal(service_role(service).name), "schema": sql.Literal(SCHEMA)}
    for query in ADOPT:
        cur.execute(query.format(**names))
        for (statement,) in cur.fetchall():
            cur.execute(statement)
            moved += 1
    return moved


def grant_readers(cur: Cursor, service: str) -> None:
    """The relay's and the audit's privileges in `service`'s database, and nothing more (kept up to date)."""
    schema, owner = sql.Identifier(SCHEMA), sql.Identifier(service_role(service).name)
    grants: list[sql.Composable] = []
    if service in RELAYED:
        relay = sql.Identifier(relay_role(service).name)
        grants += [
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(schema, relay),
            sql.SQL("GRANT SELECT, DELETE ON {} TO {}").format(sql.Identifier(OUTBOX_TABLE), relay),
            sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(
                sql.Identifier(RELAY_SLOTS_TABLE), relay
            ),
        ]
    if service in AUDITED:
        audit = sql.Identifier(AUDIT.name)
        grants += [
            sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(schema, audit),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(schema, audit),
            # Tables of later migrations, created by the service's role, too.
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
                owner, schema, audit
            ),
        ]
    for grant in grants:
        cur.execute(grant)


def provision(admin_url: str, secrets_dir: Path, services: tuple[str, ...] = SERVICES) -> dict[str, str]:
    """Provision the databases of `services` on the server of `admin_url` (a superuser's); returns the URL of
    every connection into them, by connection name (runtime/roles.py)."""
    wanted = connections(services)
    with closing(psycopg2.connect(admin_url)) as conn:
        conn.autocommit = True
        for role, password in passwords(secrets_dir, {c.role for c in wanted}).items():
            ensure_role(conn, role, password)
        with conn.cursor() as cur:
            for service in services:
                ensure_database(cur, service)
    for service in services:
        with _transaction(database_url(admin_url, service)) as cur:
            adopt_objects(cur, service)
    urls = connection_urls(admin_url, secrets_dir, wanted)
    for service in services:
        migrate(service, urls[service])
        with _transaction(database_url(admin_url, service)) as cur:
            grant_readers(cur, service)
    return urls
