"""The relay with a confirm delay (JetStream acknowledges before its disk sync, decision 007): acknowledged
events keep their outbox rows and their WAL position until the delay is over, so a relay that dies within
it publishes them again; after it, rows are deleted and the position confirmed, even while all is idle."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from nats.js import JetStreamContext
from prometheus_client import REGISTRY

from oms.kernel.nats_access import NatsAccess
from oms.kernel.relay import STATUS_INTERVAL, run_relay
from oms.kernel.topology import slot_name
from oms.runtime.ports import free_port
from tests.conftest import execute
from tests.integration.conftest import RelayThread, ServiceDatabase, eventually, wait_until_streaming
from tests.integration.test_relay import (
    commit_events,
    outbox_rows,
    relayed_ids,
    start_relay_process,
    stop_relay_process,
    wait_for_messages,
)


@dataclass
class DelayedRelay(RelayThread):
    """A relay thread holding acknowledged events for `confirm_delay` seconds."""

    confirm_delay: float = 0.0

    def launch(self) -> DelayedRelay:
        """Start without waiting for the stream (the rows left from before the slot come first)."""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"relay-{self.db.service}", daemon=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            run_relay(self.db.service, self.db.url, self.nats, self.stop, confirm_delay=self.confirm_delay)
        except BaseException as exc:
            self.error = exc


def wal_position(url: str) -> int:
    [(lsn,)] = execute(url, "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
    return int(str(lsn))


def slot_confirmed(db: ServiceDatabase) -> int:
    [(lsn,)] = execute(
        db.url,
        "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots"
        f" WHERE slot_name = '{slot_name(db.service)}'",
    )
    return int(str(lsn))


def unconfirmed(db: ServiceDatabase) -> float | None:
    return REGISTRY.get_sample_value("oms_relay_unconfirmed_events", {"service": db.service})


def relayed_by(metrics_port: int, service: str) -> float:
    """Events the relay process serving metrics on `metrics_port` published (0 until it serves them)."""
    try:
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    except httpx.HTTPError:
        return 0.0
    prefix = f'oms_relay_events_total{{service="{service}"}}'
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(prefix))


async def test_a_relay_killed_within_the_confirm_delay_publishes_again_then_lets_go(
    service_db: ServiceDatabase, operator: NatsAccess, js: JetStreamContext, tmp_path: Path
) -> None:
    log = tmp_path / "relay.log"
    process = start_relay_process(service_db, operator, log, free_port(), confirm_delay=60)
    try:
        wait_until_streaming(service_db)
        [first] = await commit_events(service_db.url, 1)
        first_committed = wal_position(service_db.url)
        events = [first, *await commit_events(service_db.url, 19)]
        committed = wal_position(service_db.url)
        await wait_for_messages(js, 20)
        await asyncio.sleep(STATUS_INTERVAL + 1.0)  # a status message has gone out since the acks

        assert outbox_rows(service_db.url) == 20, "rows deleted before the broker surely synced them"
        assert slot_confirmed(service_db) < first_committed, "position confirmed before the delay"
        process.send_signal(signal.SIGKILL)  # a power cut, as far as the relay can tell
        process.wait()

        metrics_port = free_port()
        process = start_relay_process(service_db, operator, log, metrics_port, confirm_delay=1.0)

        async def published_again() -> bool:
            return relayed_by(metrics_port, service_db.service) >= 20

        await eventually(published_again, what="the unconfirmed events to be published again")
        assert await relayed_ids(js) == [str(e.id) for e in events]  # the broker dropped the duplicates

        async def let_go() -> bool:
            return outbox_rows(service_db.url) == 0 and slot_confirmed(service_db) >= committed

        await eventually(let_go, what="rows deleted and the position confirmed after the delay")
        stop_relay_process(process, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_acknowledged_events_are_held_for_the_delay_then_deleted_and_confirmed_while_idle(
    service_db: ServiceDatabase, operator: NatsAccess, js: JetStreamContext
) -> None:
    relay = DelayedRelay(service_db, operator, confirm_delay=2.0).start()
    try:
        await commit_events(service_db.url, 10)
        committed = wal_position(service_db.url)
        await wait_for_messages(js, 10)
        seen = time.monotonic()

        async def all_held() -> bool:
            return unconfirmed(service_db) == 10

        await eventually(all_held, within=2, what="10 events waiting for confirmation")
        assert outbox_rows(service_db.url) == 10

        async def rows_deleted() -> bool:
            return outbox_rows(service_db.url) == 0

        await eventually(rows_deleted, within=10, what="the held rows to be deleted")
        assert time.monotonic() - seen >= 1.5, "rows deleted before the confirm delay was over"

        async def position_confirmed() -> bool:  # nothing arrives any more: only idle feedback reports it
            return slot_confirmed(service_db) >= committed

        await eventually(
            position_confirmed, within=STATUS_INTERVAL + 4, what="the slot to advance while idle"
        )
        assert unconfirmed(service_db) == 0
    finally:
        relay.halt()


async def test_an_idle_relay_confirms_its_position_and_stops_promptly(
    service_db: ServiceDatabase, relay: RelayThread, js: JetStreamContext
) -> None:
    relay.start()
    await commit_events(service_db.url, 5)
    committed = wal_position(service_db.url)
    await wait_for_messages(js, 5)

    async def position_confirmed() -> bool:
        return slot_confirmed(service_db) >= committed

    await eventually(position_confirmed, within=STATUS_INTERVAL + 4, what="the slot to advance while idle")
    asked = time.monotonic()
    relay.halt()
    assert time.monotonic() - asked < 1.5


async def test_rows_left_from_before_the_slot_are_deleted_only_after_the_delay(
    service_db: ServiceDatabase, operator: NatsAccess, js: JetStreamContext
) -> None:
    left = await commit_events(service_db.url, 5)
    relay = DelayedRelay(service_db, operator, confirm_delay=1.5).launch()
    try:
        await wait_for_messages(js, 5)
        assert outbox_rows(service_db.url) == 5, "rows deleted before the broker surely synced them"
        wait_until_streaming(service_db)  # once the rows left are published and deleted
        assert outbox_rows(service_db.url) == 0
        later = await commit_events(service_db.url, 2)
        await wait_for_messages(js, 7)
        assert await relayed_ids(js) == [str(e.id) for e in [*left, *later]]
    finally:
        relay.halt()
