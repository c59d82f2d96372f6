"""The faults: SIGKILL of the order, account and market services and of each relay at random moments
(the `oms up` supervisor restarts them), crashes of the NATS server and of the PostgreSQL server
(restarted by the supervisor too), and events delivered twice — copies of stream messages published
again under a new `Nats-Msg-Id`, so that the broker stores them and only the consumers' inbox can stop
a second effect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import psutil
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from oms.bench.processes import role_of
from oms.bench.system import Target
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.topology import CONSUMERS, EVENTS_STREAM

KILLABLE = ("order", "account", "market", "relay-order", "relay-account")
DUPLICATE_HEADER = "Oms-Chaos-Duplicate-Of"


@dataclass
class FaultLog:
    kills: Counter[str] = field(default_factory=Counter)
    nats_restarts: int = 0
    pg_restarts: int = 0
    restart_seconds: dict[str, list[float]] = field(default_factory=dict)  # kill → new process running
    timeline: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # what was published twice, where
    duplicate_failures: int = 0
    busy_kills: int = 0  # service kills while its consumer held unacknowledged deliveries

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())


def schedule(kills: int, nats_restarts: int, pg_restarts: int, rng: random.Random) -> list[str]:
    """The order of the faults: server restarts spread evenly among the kills."""
    servers = ["nats"] * nats_restarts + ["postgres"] * pg_restarts
    rng.shuffle(servers)
    total = kills + len(servers)
    slots = {round((i + 0.5) * total / len(servers)) for i in range(len(servers))} if servers else set()
    plan, pending = [], list(servers)
    for position in range(total):
        plan.append(pending.pop() if position in slots and pending else "kill")
    plan += pending
    return plan


async def _ignore(_: Exception) -> None:
    """The server is down on purpose: its connection errors are expected."""


async def quiet_connection(access: NatsAccess) -> NatsClient:
    """The operator's connection that reconnects for ever and does not log the outages this suite causes."""
    return await connect_nats(access, error_cb=_ignore)


class FaultInjector:
    def __init__(self, target: Target, rng: random.Random, log: FaultLog | None = None) -> None:
        self.target = target
        self.rng = rng
        self.log = log or FaultLog()
        self.last_kill: dict[str, float] = {}
        self.waiting: set[asyncio.Task[None]] = set()
        self.js: JetStreamContext | None = None

    def find(self, role: str) -> psutil.Process | None:
        """The running process of `role` (for PostgreSQL, the postmaster: the supervisor's own child)."""
        for process in self.target.processes():
            try:
                if role_of(process) != role or process.status() == psutil.STATUS_ZOMBIE:
                    continue
                if role == "postgres" and process.ppid() != self.target.root_pid:
                    continue
                return process
            except psutil.NoSuchProcess:
                continue
        return None

    async def _await_restart(self, role: str, old_pid: int, killed_at: float, within: float = 120) -> None:
        while time.monotonic() - killed_at < within:
            process = self.find(role)
            if process is not None and process.pid != old_pid:
                self.log.restart_seconds.setdefault(role, []).append(round(time.monotonic() - killed_at, 2))
                return
            await asyncio.sleep(0.1)

    def _signal(self, role: str, sig: int) -> bool:
        """Send `sig` to the running `role`; False if it is not running (still being restarted)."""
        process = self.find(role)
        if process is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
            now = time.monotonic()
            self.log.timeline.append({"t": time.time(), "fault": role, "signal": signal.Signals(sig).name})
            task = asyncio.create_task(self._await_restart(role, process.pid, now))
            self.waiting.add(task)
            task.add_done_callback(self.waiting.discard)
            return True
        return False

    async def _strike_when_busy(self, role: str, wait: float = 2.0) -> None:
        """A consumer killed while idle loses nothing: for the services, wait (a little) for a moment when
        their consumer holds unacknowledged deliveries, so that the kill forces redeliveries."""
        if role not in CONSUMERS or self.js is None:
            return
        deadline = time.monotonic() + wait
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            while time.monotonic() < deadline:
                if (await self.js.consumer_info(EVENTS_STREAM, role)).num_ack_pending:
                    self.log.busy_kills += 1
                    return
                await asyncio.sleep(0.01)

    async def kill_one(self, min_gap: float) -> str | None:
        """SIGKILL a service or relay that is running and was not killed in the last `min_gap` seconds
        (the supervisor backs off restarts of a child that keeps crashing)."""
        now = time.monotonic()
        choices = [r for r in KILLABLE if now - self.last_kill.get(r, -1e9) >= min_gap and self.find(r)]
        self.rng.shuffle(choices)
        choices.sort(key=lambda r: self.log.kills[r])  # the least killed first: every role gets its kills
        for role in choices:
            await self._strike_when_busy(role)
            if self._signal(role, signal.SIGKILL):
                self.last_kill[role] = time.monotonic()
                self.log.kills[role] += 1
                return role
        return None

    def restart_server(self, which: str) -> bool:
        """Crash the NATS server (SIGKILL) or PostgreSQL (alternately SIGKILL and an immediate shutdown,
        which also skips the shutdown checkpoint: crash recovery at the next start)."""
        if which == "nats":
            done = self._signal("nats", signal.SIGKILL)
            self.log.nats_restarts += done
            return done
        sig = signal.SIGKILL if self.log.pg_restarts % 2 == 0 else signal.SIGQUIT
        done = self._signal("postgres", sig)
        self.log.pg_restarts += done
        return done

    async def run(self, plan: list[str], duration: float, min_gap: float) -> None:
        """Inject the faults of `plan` at random moments spread over `duration` seconds."""
        interval = duration / max(1, len(plan))
        start = time.monotonic()
        assert self.target.nats
        nc = await quiet_connection(self.target.nats)
        self.js = nc.jetstream(timeout=1)
        try:
            for index, fault in enumerate(plan):
                due = start + index * interval + self.rng.uniform(0, 0.8 * interval)
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                for _ in range(200):  # a target still restarting: try again shortly
                    if fault == "kill":
                        done = await self.kill_one(min_gap) is not None
                    else:
                        done = self.restart_server(fault)
                    if done:
                        break
                    await asyncio.sleep(0.25)
        finally:
            self.js = None
            await nc.close()

    async def settle(self) -> None:
        """Wait until every killed process has been restarted (or given up on)."""
        if self.waiting:
            await asyncio.wait(self.waiting)


async def duplicate_events(
    target: Target, log: FaultLog, count: int, duration: float, rng: random.Random
) -> None:
    """Publish `count` copies of recent stream messages, spread over `duration` seconds."""
    assert target.nats
    nc = await quiet_connection(target.nats)
    js = nc.jetstream(timeout=5)
    try:
        interval = duration / max(1, count)
        while len(log.duplicates) < count:
            await asyncio.sleep(interval * rng.uniform(0.5, 1.5))
            try:
                last = (await js.stream_info(EVENTS_STREAM)).state.last_seq
                if not last:
                    continue
                seq = rng.randint(max(1, last - 500), last)
                original = await js.get_msg(EVENTS_STREAM, seq)
                if not original.subject or original.data is None:
                    continue
                if (original.headers or {}).get(DUPLICATE_HEADER):
                    continue  # a copy of a copy proves nothing more
                headers = {"Nats-Msg-Id": f"chaos-dup-{uuid.uuid4()}", DUPLICATE_HEADER: str(seq)}
                ack = await js.publish(original.subject, original.data, headers=headers)
            except (nats.errors.Error, TimeoutError, OSError) as exc:
                log.duplicate_failures += 1
                log.timeline.append(
                    {"t": time.time(), "fault": "duplicate failed", "error": type(exc).__name__}
                )
                continue
            log.duplicates.append(
                {
                    "original_seq": seq,
                    "copy_seq": ack.seq,
                    "subject": original.subject,
                    "event_id": json.loads(original.data).get("id"),
                    "dropped_by_broker": bool(ack.duplicate),
                }
            )
    finally:
        await nc.close()
