"""PostgreSQL's own limit on this machine: the bundled `pgbench` (the embedded server's, never the one on
PATH) on the same server, running a script with the same four commits per order as the real flow — create
(order + outbox), reserve (inbox + balance + reservation + ledger + outbox), match (inbox + order + outbox),
settle (inbox + reservation + two balances + two ledger entries) — in a scratch database, dropped
afterwards. In a cluster (a server per service) the scratch databases live on the order service's server.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import psycopg2

from oms.bench.system import Target
from oms.runtime.postgres import bin_dir

DATABASE = "oms_bench_limits"
SCRATCH_SERVER = "order"  # whose PostgreSQL server holds the bench's scratch databases (a cluster has four)
COMMITS_PER_ORDER = 4
CUSTOMERS = 1000

SCHEMA = f"""
CREATE TABLE orders (id uuid PRIMARY KEY, customer_id int NOT NULL, asset_name text NOT NULL,
    side text NOT NULL, size numeric NOT NULL, price numeric NOT NULL, status text NOT NULL,
    reserved boolean NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
CREATE INDEX ON orders (customer_id, created_at DESC, id DESC);
CREATE INDEX ON orders (created_at DESC, id DESC);
CREATE INDEX ON orders (created_at) WHERE status = 'PENDING';
CREATE TABLE outbox (seq bigserial, id uuid PRIMARY KEY, subject text NOT NULL, payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE inbox (event_id uuid PRIMARY KEY, processed_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE assets (customer_id int, asset_name text, total_size numeric NOT NULL,
    usable_size numeric NOT NULL, updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, asset_name));
CREATE TABLE reservations (id uuid PRIMARY KEY, order_id uuid UNIQUE, customer_id int NOT NULL,
    asset_name text NOT NULL, amount numeric NOT NULL, status text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE ledger (seq bigserial PRIMARY KEY, customer_id int NOT NULL, asset_name text NOT NULL,
    kind text NOT NULL, delta_total numeric NOT NULL, delta_usable numeric NOT NULL, order_id uuid,
    created_at timestamptz NOT NULL DEFAULT now());
INSERT INTO assets (customer_id, asset_name, total_size, usable_size)
    SELECT c, a, 1e15, 1e15 FROM generate_series(1, {CUSTOMERS}) c, (VALUES ('TRY'), ('AAPL')) v(a);
"""

# One BUY of 2 AAPL at 10.5, as the four transactions of the real flow write it.
SCRIPT = f"""\\set c random(1, {CUSTOMERS})
BEGIN;
INSERT INTO orders VALUES (gen_random_uuid(), :c, 'AAPL', 'BUY', 2, 10.5, 'PENDING', false, now(), now())
  RETURNING id AS oid \\gset
INSERT INTO outbox (id, subject, payload) VALUES (gen_random_uuid(), 'oms.order.created', '{{"size": "2"}}');
COMMIT;
BEGIN;
INSERT INTO inbox (event_id) VALUES (gen_random_uuid());
SELECT usable_size FROM assets WHERE customer_id = :c AND asset_name = 'TRY' FOR UPDATE;
UPDATE assets SET usable_size = usable_size - 21, updated_at = now()
  WHERE customer_id = :c AND asset_name = 'TRY';
INSERT INTO reservations (id, order_id, customer_id, asset_name, amount, status)
  VALUES (gen_random_uuid(), ':oid', :c, 'TRY', 21, 'HELD');
INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable, order_id)
  VALUES (:c, 'TRY', 'RESERVE', 0, -21, ':oid');
INSERT INTO outbox (id, subject, payload)
  VALUES (gen_random_uuid(), 'oms.funds.reserved', '{{"amount": "21"}}');
COMMIT;
BEGIN;
INSERT INTO inbox (event_id) VALUES (gen_random_uuid());
SELECT status FROM orders WHERE id = ':oid' FOR UPDATE;
UPDATE orders SET status = 'MATCHED', reserved = true, updated_at = now()
  WHERE id = ':oid' AND status = 'PENDING';
INSERT INTO outbox (id, subject, payload) VALUES (gen_random_uuid(), 'oms.order.matched', '{{"size": "2"}}');
COMMIT;
BEGIN;
INSERT INTO inbox (event_id) VALUES (gen_random_uuid());
SELECT status FROM reservations WHERE order_id = ':oid' FOR UPDATE;
SELECT total_size FROM assets WHERE customer_id = :c AND asset_name IN ('AAPL', 'TRY')
  ORDER BY asset_name FOR UPDATE;
UPDATE reservations SET status = 'SETTLED', updated_at = now() WHERE order_id = ':oid';
UPDATE assets SET total_size = total_size - 21, updated_at = now()
  WHERE customer_id = :c AND asset_name = 'TRY';
UPDATE assets SET total_size = total_size + 2, usable_size = usable_size + 2, updated_at = now()
  WHERE customer_id = :c AND asset_name = 'AAPL';
INSERT INTO ledger (customer_id, asset_name, kind, delta_total, delta_usable, order_id)
  VALUES (:c, 'TRY', 'SETTLE_DEBIT', -21, 0, ':oid'), (:c, 'AAPL', 'SETTLE_CREDIT', 2, 2, ':oid');
COMMIT;
"""


def _admin(target: Target, database: str = "postgres") -> Any:
    url = target.database_url(database, server=SCRATCH_SERVER)
    assert url is not None, "pgbench needs the PostgreSQL server"
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def recreate_database(target: Target, name: str, schema: str | None = None) -> None:
    """A fresh scratch database `name` on the system's server, with `schema` applied."""
    conn = _admin(target)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    if schema:
        conn = _admin(target, name)
        try:
            with conn.cursor() as cur:
                cur.execute(schema)
        finally:
            conn.close()


def drop_database(target: Target, name: str) -> None:
    conn = _admin(target)
    try:
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        conn.close()


def run_pgbench(
    target: Target,
    database: str,
    script: str,
    *,
    clients: int,
    seconds: float,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """Run `script` with pgbench; returns transactions (script runs) per second, latency and failures."""
    port = target.port_of_database(SCRATCH_SERVER)
    assert target.pg_host and port and target.pg_password
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    try:
        argv = [
            str(bin_dir() / "pgbench"),
            *("-h", target.pg_host, "-p", str(port), "-U", target.pg_user),
            *("-n", "-f", f.name, "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(int(seconds))),
            *(extra or []),
            database,
        ]
        env = {**os.environ, "PGPASSWORD": target.pg_password}
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 120)
    finally:
        Path(f.name).unlink(missing_ok=True)
    if result.returncode != 0:
        raise RuntimeError(f"pgbench failed: {result.stderr.strip()[-500:]}")
    return parse_pgbench(result.stdout)


def parse_pgbench(output: str) -> dict[str, Any]:
    """The figures of pgbench's summary."""

    def number(pattern: str) -> float | None:
        found = re.search(pattern, output)
        return float(found.group(1)) if found else None

    return {
        "tps": number(r"tps = ([0-9.]+)"),
        "latency_avg_ms": number(r"latency average = ([0-9.]+) ms"),
        "transactions": number(r"number of transactions actually processed: ([0-9]+)"),
        "failed": number(r"number of failed transactions: ([0-9]+)"),
    }


def commit_limit(target: Target, *, clients: int = 16, seconds: float = 10.0) -> dict[str, Any]:
    """Orders/s PostgreSQL alone allows: pgbench of the four-commit order script on the system's server."""
    recreate_database(target, DATABASE, SCHEMA)
    try:
        figures = run_pgbench(target, DATABASE, SCRIPT, clients=clients, seconds=seconds)
    finally:
        drop_database(target, DATABASE)
    orders = figures["tps"] or 0.0
    return {
        "orders_per_s": round(orders, 1),
        "commits_per_s": round(orders * COMMITS_PER_ORDER, 1),
        "commits_per_order": COMMITS_PER_ORDER,
        "clients": clients,
        "seconds": seconds,
        "latency_per_order_ms": figures["latency_avg_ms"],
        "failed": figures["failed"],
    }
