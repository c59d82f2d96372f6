"""The bench counts a cluster's PostgreSQL processes by server (its postmaster's port → the service)."""

from __future__ import annotations

import psutil
import psycopg2

from oms.bench.processes import ProcessSampler, server_port
from oms.runtime.postgres import EmbeddedPostgres


def test_postgres_processes_are_counted_by_their_servers_service(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.process is not None
    postmaster = psutil.Process(pg_server.process.pid)
    conn = psycopg2.connect(pg_server.url())  # a backend, a child of the postmaster
    try:
        backends = postmaster.children()
        assert backends
        assert {server_port(p) for p in [postmaster, *backends]} == {pg_server.port}

        def processes() -> list[psutil.Process]:
            return [postmaster, *postmaster.children()]

        by_server = ProcessSampler(processes, include_self=False, servers={pg_server.port: "order"})
        assert set(by_server.sample()["procs"]) == {"postgres-order"}
        assert set(ProcessSampler(processes, include_self=False).sample()["procs"]) == {"postgres"}
    finally:
        conn.close()
