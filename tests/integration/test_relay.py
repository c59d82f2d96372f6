"""The outbox relay against a real PostgreSQL (logical replication) and a real NATS JetStream server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from oms.kernel import outbox
from oms.kernel import relay as relay_module
from oms.kernel.broker import MSG_ID
from oms.kernel.events import Envelope, parse
from oms.kernel.nats_access import NatsAccess
from oms.kernel.outbox import outbox_rows as outbox_insert
from oms.kernel.relay import RelayConfigError, prepare_database, run_relay
from oms.kernel.sql import write_together
from oms.kernel.topology import slot_name
from oms.runtime.nats import EmbeddedNats
from oms.runtime.ports import free_port
from oms.runtime.postgres import EmbeddedPostgres
from tests.conftest import execute
from tests.integration.conftest import (
    RelayThread,
    ServiceDatabase,
    canceled_event,
    eventually,
    message_count,
    stream_messages,
    wait_until_streaming,
)


async def add_to_outbox(conn: asyncpg.Connection, *envelopes: Envelope[Any]) -> None:
    """Insert outbox rows as a unit of work does, in the caller's transaction."""
    await write_together(conn, [outbox_insert(envelopes)])


async def commit_events(url: str, count: int, per_transaction: int = 1) -> list[Envelope[Any]]:
    events: list[Envelope[Any]] = []
    conn = await asyncpg.connect(url)
    try:
        for _ in range(count):
            async with conn.transaction():
                for _ in range(per_transaction):
                    events.append(canceled_event())
                    await add_to_outbox(conn, events[-1])
    finally:
        await conn.close()
    return events


def outbox_rows(url: str) -> int:
    [(count,)] = execute(url, "SELECT count(*) FROM outbox")
    return int(str(count))


async def relayed_ids(js: JetStreamContext) -> list[str]:
    return [(m.headers or {})[MSG_ID] for m in await stream_messages(js)]


async def wait_for_messages(js: JetStreamContext, count: int, within: float = 15.0) -> None:
    async def arrived() -> bool:
        return await message_count(js) >= count

    await eventually(arrived, within, f"{count} messages on the stream")


async def test_relay_publishes_outbox_row_with_event_id_as_message_id(
    service_db: ServiceDatabase, relay: RelayThread, js: JetStreamContext
) -> None:
    relay.start()
    [event] = await commit_events(service_db.url, 1)

    await wait_for_messages(js, 1)
    [message] = await stream_messages(js)
    assert message.subject == "oms.order.canceled"
    assert (message.headers or {})[MSG_ID] == str(event.id)
    assert parse(message.data or b"") == event

    async def row_deleted() -> bool:
        return outbox_rows(service_db.url) == 0

    await eventually(row_deleted, what="the relayed row to be deleted")


async def test_relay_publishes_in_commit_order_not_insert_order(
    service_db: ServiceDatabase, relay: RelayThread, js: JetStreamContext
) -> None:
    relay.start()
    first_in, second_in = await asyncpg.connect(service_db.url), await asyncpg.connect(service_db.url)
    early, late = canceled_event("inserted first"), canceled_event("inserted second")
    try:
        slow = first_in.transaction()
        await slow.start()
        await add_to_outbox(first_in, early)
        async with second_in.transaction():
            await add_to_outbox(second_in, late)
        await slow.commit()
    finally:
        await first_in.close()
        await second_in.close()
    rest = await commit_events(service_db.url, 10, per_transaction=3)

    await wait_for_messages(js, 32)
    assert await relayed_ids(js) == [str(e.id) for e in [late, early, *rest]]


async def test_relay_never_publishes_a_rolled_back_transaction(
    service_db: ServiceDatabase, relay: RelayThread, js: JetStreamContext
) -> None:
    relay.start()
    conn = await asyncpg.connect(service_db.url)
    try:
        doomed = conn.transaction()
        await doomed.start()
        await add_to_outbox(conn, canceled_event("rolled back"))
        await doomed.rollback()
    finally:
        await conn.close()
    kept = await commit_events(service_db.url, 2)  # the second is the sentinel: committed after it all

    await wait_for_messages(js, 2)
    assert await relayed_ids(js) == [str(e.id) for e in kept]


async def test_relay_publishes_rows_left_when_its_slot_is_missing(
    service_db: ServiceDatabase, relay: RelayThread, js: JetStreamContext
) -> None:
    before_any_slot = await commit_events(service_db.url, 5)
    relay.start()
    await wait_for_messages(js, 5)
    relay.halt()

    left_behind = await commit_events(service_db.url, 3)
    execute(service_db.url, f"SELECT pg_drop_replication_slot('{slot_name(service_db.service)}')")
    relay.start()
    await wait_for_messages(js, 8)
    after = await commit_events(service_db.url, 2)
    await wait_for_messages(js, 10)

    assert await relayed_ids(js) == [str(e.id) for e in [*before_any_slot, *left_behind, *after]]

    async def rows_deleted() -> bool:  # relayed rows are deleted together, every FLUSH_INTERVAL
        return outbox_rows(service_db.url) == 0

    await eventually(rows_deleted, within=5, what="the relayed rows to be deleted")


def start_relay_process(
    db: ServiceDatabase, nats: NatsAccess, log: Path, metrics_port: int, confirm_delay: float | None = None
) -> subprocess.Popen[bytes]:
    """`python -m oms.kernel.relay` for `db` with `nats`'s credentials, its output appended to `log`."""
    argv = [sys.executable, "-m", "oms.kernel.relay", "--service", db.service]
    argv += ["--database-url", db.url, "--metrics-port", str(metrics_port)]
    if confirm_delay is not None:
        argv += ["--confirm-delay", str(confirm_delay)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMS_")} | nats.env()
    with open(log, "ab") as output:
        return subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=env)


def stop_relay_process(process: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, as a supervisor stops it: it must end cleanly."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0, log.read_text()


async def test_relay_killed_mid_stream_resumes_without_loss_or_duplicates(
    service_db: ServiceDatabase, operator: NatsAccess, js: JetStreamContext, tmp_path: Path
) -> None:
    log = tmp_path / "relay.log"
    process = start_relay_process(service_db, operator, log, free_port())
    try:
        wait_until_streaming(service_db)
        producing = asyncio.create_task(commit_events(service_db.url, 1000))
        await wait_for_messages(js, 150, within=30)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = await message_count(js)
        events = await producing
        assert killed_at < len(events), "the relay was not killed mid-stream"

        metrics_port = free_port()
        process = start_relay_process(service_db, operator, log, metrics_port)
        await wait_for_messages(js, 1000, within=30)
        await asyncio.sleep(0.5)  # time for duplicates, if any, to show
        ids = await relayed_ids(js)
        assert sorted(ids) == sorted(str(e.id) for e in events), log.read_text()
        assert len(ids) == len(set(ids)) == 1000
        assert relayed_count(metrics_port, service_db.service) >= 1000 - killed_at

        async def all_rows_deleted() -> bool:
            return outbox_rows(service_db.url) == 0

        await eventually(all_rows_deleted, what="relayed rows to be deleted")
        stop_relay_process(process, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def relayed_count(metrics_port: int, service: str) -> float:
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    [line] = [
        m for m in metrics.splitlines() if m.startswith(f'oms_relay_events_total{{service="{service}"}}')
    ]
    return float(line.split()[-1])


async def test_relay_restarted_before_confirming_republishes_and_the_broker_drops_duplicates(
    service_db: ServiceDatabase, relay: RelayThread, js: JetStreamContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def relayed() -> float:
        return REGISTRY.get_sample_value("oms_relay_events_total", {"service": service_db.service}) or 0.0

    before = relayed()
    with monkeypatch.context() as patch:
        patch.setattr(relay_module, "_send_feedback", lambda *args, **kwargs: None)
        relay.start()
        events = await commit_events(service_db.url, 50)
        await wait_for_messages(js, 50)
        relay.halt()
    relay.start()

    async def relayed_again() -> bool:
        return relayed() - before >= 100

    await eventually(relayed_again, what="the unconfirmed events to be published again")
    assert await relayed_ids(js) == [str(e.id) for e in events]


class ReplicaLevelPostgres(EmbeddedPostgres):
    """PostgreSQL as many servers run by default: wal_level=replica, no logical decoding."""

    def command(self, data: str | None = None) -> list[str]:
        return [arg.replace("wal_level=logical", "wal_level=replica") for arg in super().command(data)]


@pytest.fixture(scope="module")
def replica_level_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = ReplicaLevelPostgres(tmp_path_factory.mktemp("pg-replica"), free_port())
    server.start()
    yield server
    server.stop()


def test_relay_refuses_to_start_without_logical_wal_level(
    replica_level_server: EmbeddedPostgres, nats_server: EmbeddedNats
) -> None:
    replica_level_server.create_databases(["orders"])
    url = replica_level_server.url("orders")
    execute(url, outbox.OUTBOX_DDL + outbox.RELAY_SLOTS_DDL + outbox.PUBLICATION_DDL)

    with pytest.raises(RelayConfigError, match=r"wal_level=replica.*set wal_level=logical"):
        run_relay("order", url, nats_server.access("relay-order"), threading.Event())


def test_relay_command_exits_2_with_the_reason_without_logical_wal_level(
    replica_level_server: EmbeddedPostgres, nats_server: EmbeddedNats
) -> None:
    replica_level_server.create_databases(["orders"])
    argv = [sys.executable, "-m", "oms.kernel.relay", "--service", "order"]
    argv += ["--database-url", replica_level_server.url("orders"), "--nats-url", nats_server.url]
    env = {**os.environ, **nats_server.access("relay-order").env()}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
    assert result.returncode == 2
    assert "wal_level=logical" in result.stderr.splitlines()[-1]


async def test_rows_left_when_the_slot_was_created_are_published_even_if_that_relay_died_first(
    service_db: ServiceDatabase, relay: RelayThread, js: JetStreamContext
) -> None:
    """A relay that created its slot and died before it had published the rows already in the outbox: the
    next one publishes them, though the slot exists by then."""
    left = await commit_events(service_db.url, 4)
    conn = await asyncpg.connect(service_db.url)
    try:
        assert await prepare_database(conn, slot_name(service_db.service))  # then it died
        assert await prepare_database(conn, slot_name(service_db.service))  # still to be published
    finally:
        await conn.close()
    relay.start()
    await wait_for_messages(js, 4)
    assert await relayed_ids(js) == [str(e.id) for e in left]
    relay.halt()
    marker = f"SELECT leftovers_published FROM relay_slots WHERE slot = '{slot_name(service_db.service)}'"
    assert execute(service_db.url, marker) == [(True,)]
