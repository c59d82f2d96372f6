"""Who connects to PostgreSQL as whom (docs/decisions/010).

- Each service (auth, order, account) logs in as its own role, the owner of its database and of everything in
  it: no superuser, no REPLICATION, and no CONNECT on the other databases.
- Each relay logs in as a replication role that may read and delete its outbox and keep its slot's
  bookkeeping (`relay_slots`), nothing else.
- The audit (`oms audit`, the back office's System page) logs in as a read-only role over the order and
  account databases.

A connection is one role into one database, named as its setting: `order` is OMS_ORDER_DATABASE_URL,
`order_relay` OMS_ORDER_RELAY_DATABASE_URL, `audit_order` OMS_AUDIT_ORDER_DATABASE_URL. Each role's password
is a file in the data folder's `secrets/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

from oms.kernel.secret_file import read_or_create_text
from oms.kernel.settings import SERVICES
from oms.kernel.topology import PRODUCERS, RELAYED

AUDITED: Final = ("order", "account")  # the audit compares these two databases with each other


@dataclass(frozen=True)
class Role:
    """A PostgreSQL login role of OMS and the file (in `secrets/`) that keeps its password."""

    name: str
    secret: str
    replication: bool = False
    read_only: bool = False


@dataclass(frozen=True)
class Connection:
    """One role into one database, named as its setting (OMS_<NAME>_DATABASE_URL)."""

    name: str
    database: str
    role: Role

    @property
    def setting(self) -> str:
        return env_name(self.name)


def service_role(service: str) -> Role:
    """The role of `service`: owner of its database."""
    return Role(f"oms_{service}", f"pg-{service}-password")


def relay_role(service: str) -> Role:
    """The replication role of the relay of `service`'s database."""
    return Role(f"oms_{service}_relay", f"pg-{service}-relay-password", replication=True)


AUDIT: Final = Role("oms_audit", "pg-audit-password", read_only=True)


def env_name(connection: str) -> str:
    return f"OMS_{connection.upper()}_DATABASE_URL"


def connections(services: tuple[str, ...] = SERVICES) -> list[Connection]:
    """Every connection into the databases of `services`: the services' own first."""
    found = [Connection(s, s, service_role(s)) for s in services]
    found += [Connection(f"{s}_relay", s, relay_role(s)) for s in services if s in RELAYED]
    found += [Connection(f"audit_{s}", s, AUDIT) for s in services if s in AUDITED]
    return found


def connections_of(component: str) -> list[str]:
    """The connections `oms up` gives one of its children: a service its own, a relay its replication
    role's, the back office the audit's (it runs the audit; it reads nothing else)."""
    if component == "backoffice":
        return [f"audit_{s}" for s in AUDITED]
    relayed = next((p.service for p in PRODUCERS.values() if p.relay == component), None)
    if relayed is not None:
        return [f"{relayed}_relay"]
    return [component] if component in SERVICES else []


def passwords(secrets_dir: Path, roles: set[Role]) -> dict[Role, str]:
    """Each role's password, from its file in `secrets_dir` (made on first use)."""
    return {role: read_or_create_text(secrets_dir / role.secret) for role in roles}


def database_url(server_url: str, database: str, *, role: str | None = None, password: str = "") -> str:
    """`server_url` into `database` instead of its own, as `role` if given (host, port and options kept)."""
    parts = urlsplit(server_url)
    netloc = parts.netloc
    if role is not None:
        netloc = f"{quote(role, safe='')}:{quote(password, safe='')}@{netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, f"/{quote(database, safe='')}", parts.query, ""))


def connection_urls(server_url: str, secrets_dir: Path, wanted: list[Connection]) -> dict[str, str]:
    """The URL of each connection in `wanted` on the server of `server_url`, by connection name."""
    secret = passwords(secrets_dir, {c.role for c in wanted})
    return {
        c.name: database_url(server_url, c.database, role=c.role.name, password=secret[c.role])
        for c in wanted
    }
