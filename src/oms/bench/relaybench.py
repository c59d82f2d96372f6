"""The relay on its own: the real `oms.kernel.relay` process reading the WAL of a scratch database whose
outbox pgbench fills, publishing to a scratch stream of the same NATS server.

- steady: pgbench inserts outbox rows at a fixed rate; each row carries the time it was inserted (inside its
  one-statement transaction, so just before the commit) and JetStream stamps the time it stored the message:
  the difference is commit → publish (acknowledged), per event;
- drain: with the relay stopped, a backlog of rows is committed; the relay is started and the time until the
  stream holds all of them gives its maximum events/s.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg2
from nats.js.api import StorageType, StreamConfig

from oms.bench.jetstream import read_stream
from oms.bench.pgbench import SCRATCH_SERVER, drop_database, recreate_database, run_pgbench
from oms.bench.stats import latency_summary
from oms.bench.system import Target
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.outbox import OUTBOX_DDL, PUBLICATION_DDL, RELAY_SLOTS_DDL
from oms.kernel.topology import slot_name

SERVICE = "benchrelay"
DATABASE = "oms_bench_relay"
SLOT = slot_name(SERVICE)
SUBJECTS = "bench_relay.>"

STEADY_SCRIPT = """\\set n {per_tx}
INSERT INTO outbox (id, subject, payload)
  SELECT gen_random_uuid(), 'bench_relay.e', jsonb_build_object('t', extract(epoch FROM clock_timestamp()))
  FROM generate_series(1, :n);
"""


def _connect(target: Target) -> Any:
    url = target.database_url(DATABASE, server=SCRATCH_SERVER)
    assert url is not None
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def _start_relay(target: Target, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    url, access = target.database_url(DATABASE, server=SCRATCH_SERVER), target.nats
    assert url and access
    argv = [sys.executable, "-m", "oms.kernel.relay", "--service", SERVICE, "--database-url", url]
    # The bench relay publishes its own scratch subjects: it runs as the operator.
    env = {**os.environ, **access.env(), **env}
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def _stop_relay(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_slot_active(target: Target, timeout: float = 60.0) -> None:
    conn = _connect(target)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with conn.cursor() as cur:
                cur.execute("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (SLOT,))
                row = cur.fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)
        raise RuntimeError(f"the bench relay did not start streaming slot {SLOT}")
    finally:
        conn.close()


async def _stream_count(access: NatsAccess, stream: str) -> int:
    nc = await connect_nats(access, once=True)
    try:
        return int((await nc.jetstream().stream_info(stream)).state.messages)
    finally:
        await nc.close()


async def _wait_count(access: NatsAccess, stream: str, count: int, within: float) -> float | None:
    """Seconds until `stream` holds `count` messages (None on timeout)."""
    started = time.perf_counter()
    while time.perf_counter() - started < within:
        if await _stream_count(access, stream) >= count:
            return time.perf_counter() - started
        await asyncio.sleep(0.05)
    return None


async def _latencies(access: NatsAccess, stream: str, after: int, until: int) -> tuple[list[float], float]:
    """(commit → stored latencies, events/s between the first and the last one stored)."""
    latencies: list[float] = []
    stored: list[float] = []

    def visit(payload: bytes, stored_at: datetime) -> None:
        latencies.append(stored_at.timestamp() - float(json.loads(payload)["t"]))
        stored.append(stored_at.timestamp())

    await read_stream(access, stream, SUBJECTS, after, until, visit)
    span = (max(stored) - min(stored)) if len(stored) > 1 else 0.0
    return latencies, (len(stored) / span if span else 0.0)


def _cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    try:
        times = psutil.Process(process.pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


async def _steady(
    target: Target,
    stream: str,
    seq: int,
    rate: int,
    per_tx: int,
    seconds: float,
    clients: int,
    relay: subprocess.Popen[bytes],
) -> tuple[dict[str, Any], int]:
    """pgbench offers `rate` events/s for `seconds`; returns the figures and the stream's new last seq."""
    assert target.nats
    cpu_before = _cpu_seconds(relay)
    pg = await asyncio.to_thread(
        run_pgbench,
        target,
        DATABASE,
        STEADY_SCRIPT.format(per_tx=per_tx),
        clients=clients,
        seconds=seconds,
        extra=["-R", str(max(1, rate // per_tx))],
    )
    inserted = int(pg["transactions"] or 0) * per_tx
    complete = await _wait_count(target.nats, stream, seq + inserted, 120)
    relay_cpu = _cpu_seconds(relay) - cpu_before
    latencies, relayed = await _latencies(target.nats, stream, seq, seq + inserted)
    figures = {
        "target_events_per_s": rate,
        "events_per_tx": per_tx,
        "offered_events_per_s": round((pg["tps"] or 0) * per_tx, 1),
        "relayed_events_per_s": round(relayed, 1),
        "events": inserted,
        "complete": complete is not None,
        "commit_to_stored": latency_summary(latencies),
        "relay_cpu_ms_per_event": round(1000 * relay_cpu / inserted, 3) if inserted else None,
    }
    return figures, seq + inserted


async def _drain(target: Target, stream: str, seq: int, backlog: int, start_relay: Any) -> dict[str, Any]:
    """A backlog committed while the relay is down; then how fast the started relay empties it (from the
    first to the last message stored, so the relay's own start-up is not counted)."""
    assert target.nats
    conn = await asyncio.to_thread(_connect, target)
    try:
        with conn.cursor() as cur:
            for _ in range(backlog // 1000):
                cur.execute(
                    "INSERT INTO outbox (id, subject, payload) "
                    "SELECT gen_random_uuid(), 'bench_relay.e', '{\"t\": 0}' "
                    "FROM generate_series(1, 1000)"
                )
    finally:
        conn.close()
    start_relay()
    events = backlog // 1000 * 1000
    drained = await _wait_count(target.nats, stream, seq + events, 300)
    _, rate = await _latencies(target.nats, stream, seq, seq + events)
    return {"events": events, "complete": drained is not None, "events_per_s": round(rate, 1)}


async def relay_bench(
    target: Target,
    work_dir: Path,
    *,
    rates: list[int],
    per_tx: int = 1,
    seconds: float = 10.0,
    clients: int = 8,
    backlog: int = 100_000,
    env: dict[str, str] | None = None,
    replicas: int = 1,
) -> dict[str, Any]:
    """Latency at each steady rate, then the backlog drain rate, of one relay process publishing to a stream
    of `replicas` replicas (the system's own streams' number: the cost of replication is in the figures);
    cleans up its database, slot and stream."""
    assert target.nats
    stream = f"BENCH_RELAY_{uuid.uuid4().hex[:8].upper()}"
    nc = await connect_nats(target.nats, once=True)
    await nc.jetstream().add_stream(
        StreamConfig(name=stream, subjects=[SUBJECTS], storage=StorageType.FILE, num_replicas=replicas)
    )
    await asyncio.to_thread(_drop, target)
    await asyncio.to_thread(
        recreate_database, target, DATABASE, OUTBOX_DDL + RELAY_SLOTS_DDL + PUBLICATION_DDL
    )
    log = work_dir / "bench-relay.log"
    relays = [_start_relay(target, log, env or {})]
    results: dict[str, Any] = {"steady": [], "stream_replicas": replicas}
    try:
        await asyncio.to_thread(_wait_slot_active, target)
        seq = 0
        for rate in rates:
            figures, seq = await _steady(target, stream, seq, rate, per_tx, seconds, clients, relays[-1])
            results["steady"].append(figures)
        await asyncio.to_thread(_stop_relay, relays[-1])
        results["drain"] = await _drain(
            target, stream, seq, backlog, lambda: relays.append(_start_relay(target, log, env or {}))
        )
    finally:
        await asyncio.to_thread(_stop_relay, relays[-1])
        await nc.jetstream().delete_stream(stream)
        await nc.close()
        await asyncio.to_thread(_drop, target)
    return results


def _drop(target: Target) -> None:
    """Remove the scratch slot (a database with a logical slot cannot be dropped), then the database."""
    url = target.database_url("postgres", server=SCRATCH_SERVER)
    assert url is not None
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (SLOT,),
            )
    finally:
        conn.close()
    drop_database(target, DATABASE)
