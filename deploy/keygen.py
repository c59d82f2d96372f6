"""The secrets of deploy/compose.yaml, made by the same code as `oms up`'s and kept in the same layout as
its `<data-dir>/secrets/` (docs/architecture.md, Trust), plus what only a deployment needs: a password file
(`pgpass-<component>`) per component that connects to PostgreSQL, so that no password is in an environment
variable; the NATS servers' authorization (the identities' public keys and permissions); and the cluster
block by which the three NATS servers find and authenticate each other (routes).

Run in the image, as its user, with `secrets/` mounted on the data folder's `secrets/`:
`docker compose run --rm keygen` (deploy/README.md). What exists is kept; what is missing is made.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from oms.auth.keys import SigningKey
from oms.backoffice.sessions import session_key
from oms.kernel.nats_access import identities_dir
from oms.kernel.secret_file import read_or_create, read_or_create_text
from oms.kernel.settings import SERVICES, Settings
from oms.kernel.topology import PRODUCERS
from oms.runtime.identities import authorization, ensure_identities
from oms.runtime.roles import connections, connections_of, passwords

PG_PORT = 5432
SUPERUSER = "postgres"  # the PostgreSQL image's, used only by `oms db provision`
SUPERUSER_SECRET = "pg-password"  # as `oms up`'s superuser's
# Everything in compose.yaml that connects to PostgreSQL, by the name of its pgpass-<name> file.
CLIENTS = (*SERVICES, "backoffice", *(p.relay for p in PRODUCERS.values()))
NATS_AUTHORIZATION = "nats-authorization.conf"
NATS_CLUSTER = "nats-cluster.conf"
NATS_SERVERS = ("nats-1", "nats-2", "nats-3")  # compose services: one JetStream cluster
NATS_ROUTE_PORT = 6222
GRAFANA_PASSWORD = "grafana-admin-password"


def pg_host(database: str) -> str:
    """The PostgreSQL server (a compose service) of `database`: one server per service."""
    return f"pg-{database}"


def _escaped(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def pgpass_line(server: str, database: str, user: str, password: str) -> str:
    """One line of a libpq password file (asyncpg and psycopg2 read it through PGPASSFILE) for `user` into
    `database` (`*`: any) on the server of service `server`."""
    fields = (pg_host(server), str(PG_PORT), database, user, password)
    return ":".join(f if f == "*" else _escaped(f) for f in fields) + "\n"


def pgpass_files(secrets_dir: Path) -> dict[str, str]:
    """Each client's password file: the lines of its own roles only (runtime/roles.py), and for the
    provisioning of each server the superuser's (into any of its databases)."""
    secret = passwords(secrets_dir, {c.role for c in connections()})
    by_name = {c.name: c for c in connections()}
    files = {}
    for client in CLIENTS:
        used = [by_name[name] for name in connections_of(client)]
        files[f"pgpass-{client}"] = "".join(
            pgpass_line(c.database, c.database, c.role.name, secret[c.role]) for c in used
        )
    superuser = read_or_create_text(secrets_dir / SUPERUSER_SECRET)
    for database in SERVICES:
        files[f"pgpass-provision-{database}"] = pgpass_line(database, "*", SUPERUSER, superuser)
    return files


def nats_cluster(route_password: str) -> str:
    """The `cluster` block of every NATS server: routes to the others, which must sign in as `route`."""
    routes = [f"nats-route://route:{route_password}@{server}:{NATS_ROUTE_PORT}" for server in NATS_SERVERS]
    return "\n".join(
        [
            "cluster {",
            f"  name: {json.dumps('oms')}",
            f"  listen: {json.dumps(f'0.0.0.0:{NATS_ROUTE_PORT}')}",
            f"  authorization: {json.dumps({'user': 'route', 'password': route_password})}",
            f"  routes: {json.dumps(routes)}",
            "}",
            "",
        ]
    )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)


def generate(settings: Settings) -> list[Path]:
    """Make what is missing in `settings.secrets_dir`; the files written, sorted."""
    secrets_dir = settings.secrets_dir
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    SigningKey.load_or_create(settings.key_file)
    read_or_create(settings.client_address_key)
    read_or_create(settings.service_key)
    session_key(settings)
    public_keys = ensure_identities(identities_dir(settings))
    _write_private(secrets_dir / NATS_AUTHORIZATION, authorization(public_keys) + "\n")
    _write_private(
        secrets_dir / NATS_CLUSTER, nats_cluster(read_or_create_text(secrets_dir / "nats-route-password"))
    )
    for name, text in pgpass_files(secrets_dir).items():
        _write_private(secrets_dir / name, text)
    read_or_create_text(secrets_dir / GRAFANA_PASSWORD)
    # Grafana reads it as its image's own user (472), not ours; the folder (0700) keeps others out.
    (secrets_dir / GRAFANA_PASSWORD).chmod(0o644)
    return sorted(p for p in secrets_dir.rglob("*") if p.is_file())


if __name__ == "__main__":
    made = generate(Settings())
    print(f"{len(made)} files in {Settings().secrets_dir}")
