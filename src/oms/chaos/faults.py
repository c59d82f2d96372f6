"""The faults: SIGKILL of the order, account and market services and of each relay at random moments
(the `oms up` supervisor restarts them), crashes of the NATS server and of the PostgreSQL server
(restarted by the supervisor too), and events delivered twice — copies of stream messages published
again under a new `Nats-Msg-Id`, so that the broker stores them and only the consumers' inbox can stop
a second effect.

On a cluster (`oms up --cluster`) the victims are replicas: one replica of a service at a time (its twin
ready), the active relay of a database (its standby alive: the time it takes to take over is measured), the
NATS servers in turn — every other time the one leading the events stream (the stall until the stream
stores again is measured) — and each service's PostgreSQL server in turn."""

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

import httpx
import nats
import nats.errors
import psutil
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from oms.bench.processes import child_name
from oms.bench.system import Target, component_of
from oms.kernel.nats_access import NatsAccess, connect_nats
from oms.kernel.topology import CONSUMERS, EVENTS_STREAM

KILLABLE = ("order", "account", "market", "relay-order", "relay-account")
REPLICATED = ("auth", "order", "account", "market")  # a cluster's services whose replicas are killed
NATS_NODES = ("nats-1", "nats-2", "nats-3")  # a cluster's (runtime/cluster.py)
DUPLICATE_HEADER = "Oms-Chaos-Duplicate-Of"
PROBE_EVERY = 0.05  # seconds between looks while a takeover or an election is timed
MEASURE_WITHIN = 120.0


@dataclass
class FaultLog:
    kills: Counter[str] = field(default_factory=Counter)
    nats_restarts: int = 0
    pg_restarts: int = 0
    servers: Counter[str] = field(default_factory=Counter)  # crashes by server (`nats-2`, `postgres-order`)
    restart_seconds: dict[str, list[float]] = field(default_factory=dict)  # kill → new process running
    timeline: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # what was published twice, where
    duplicate_failures: int = 0
    busy_kills: int = 0  # service kills while its consumer held unacknowledged deliveries
    takeovers: list[float] = field(default_factory=list)  # active relay killed → a relay streams again (s)
    taken_back: int = 0  # … by the killed relay, restarted, before its standby took the slot
    leader_kills: list[dict[str, Any]] = field(default_factory=list)  # events stream leader killed: stalls

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
        self.waiting: set[asyncio.Task[None]] = set()  # restarts awaited
        self.timing: set[asyncio.Task[None]] = set()  # takeovers and elections being timed
        self.js: JetStreamContext | None = None
        self.http = httpx.AsyncClient(timeout=2)

    # -- who is who ----------------------------------------------------------------------------
    def victims(self) -> list[str]:
        """What `kill_one` chooses from: roles on a single node, replicas on a cluster."""
        if not self.target.cluster:
            return list(KILLABLE)
        return sorted(
            name
            for name in self.target.replicas
            if component_of(name) in REPLICATED or component_of(name).startswith("relay-")
        )

    def find(self, name: str) -> psutil.Process | None:
        """The running process `name` (a role, or a cluster's child: see `child_name`); for PostgreSQL, the
        postmaster (the supervisor's own child)."""
        for process in self.target.processes():
            try:
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                if name.startswith("postgres") and process.ppid() != self.target.root_pid:
                    continue
                if child_name(process, self.target.replicas, self.target.pg_ports) == name:
                    return process
            except psutil.NoSuchProcess:
                continue
        return None

    def _own_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.target.replicas[name]}"

    async def _answers(self, name: str, probe: str) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return (await self.http.get(f"{self._own_url(name)}/{probe}")).status_code == 200
        return False

    def _twins(self, name: str) -> list[str]:
        return [n for n in self.target.replicas if n != name and component_of(n) == component_of(name)]

    async def _may_kill(self, name: str) -> bool:
        """On a cluster, a service replica only while its twin is ready (the service stays up), and a relay
        only while it streams (active) and its standby is alive (to take over)."""
        if not self.target.cluster:
            return True
        if component_of(name).startswith("relay-"):
            alive = [await self._answers(twin, "livez") for twin in self._twins(name)]
            return all(alive) and await self._answers(name, "readyz")
        return all([await self._answers(twin, "readyz") for twin in self._twins(name)])

    # -- killing ---------------------------------------------------------------------------------
    async def _await_restart(self, name: str, old_pid: int, killed_at: float) -> None:
        while time.monotonic() - killed_at < MEASURE_WITHIN:
            process = self.find(name)
            if process is not None and process.pid != old_pid:
                seconds = round(time.monotonic() - killed_at, 2)
                self.log.restart_seconds.setdefault(component_of(name), []).append(seconds)
                return
            await asyncio.sleep(0.1)

    def _signal(self, name: str, sig: int) -> bool:
        """Send `sig` to the running `name`; False if it is not running (still being restarted)."""
        process = self.find(name)
        if process is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, sig)
            now = time.monotonic()
            self.log.timeline.append(
                {
                    "t": time.time(),
                    "fault": name,
                    "component": component_of(name),
                    "signal": signal.Signals(sig).name,
                }
            )
            self._track(self.waiting, self._await_restart(name, process.pid, now))
            return True
        return False

    @staticmethod
    def _track(tasks: set[asyncio.Task[None]], work: Any) -> None:
        task = asyncio.create_task(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _strike_when_busy(self, component: str, wait: float = 2.0) -> None:
        """A consumer killed while idle loses nothing: for the services, wait (a little) for a moment when
        their consumer holds unacknowledged deliveries, so that the kill forces redeliveries."""
        if component not in CONSUMERS or self.js is None:
            return
        deadline = time.monotonic() + wait
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            while time.monotonic() < deadline:
                if (await self.js.consumer_info(EVENTS_STREAM, component)).num_ack_pending:
                    self.log.busy_kills += 1
                    return
                await asyncio.sleep(0.01)

    async def kill_one(self, min_gap: float) -> str | None:
        """SIGKILL a service or relay that is running and was not killed in the last `min_gap` seconds
        (the supervisor backs off restarts of a child that keeps crashing)."""
        now = time.monotonic()
        choices = [n for n in self.victims() if now - self.last_kill.get(n, -1e9) >= min_gap and self.find(n)]
        self.rng.shuffle(choices)
        choices.sort(key=lambda n: self.log.kills[n])  # the least killed first: every one gets its kills
        for name in choices:
            if not await self._may_kill(name):
                continue
            await self._strike_when_busy(component_of(name))
            if self._signal(name, signal.SIGKILL):
                self.last_kill[name] = time.monotonic()
                self.log.kills[name] += 1
                if self.target.cluster and component_of(name).startswith("relay-"):
                    relays = [name, *self._twins(name)]
                    self._track(self.timing, self._time_takeover(relays, time.monotonic()))
                return name
        return None

    async def _time_takeover(self, relays: list[str], killed_at: float) -> None:
        """Seconds from the active relay's kill until a relay of its database streams the slot (ready) again:
        its standby, as a rule, or the killed one restarted if it took the slot first (counted apart)."""
        killed = relays[0]
        while time.monotonic() - killed_at < MEASURE_WITHIN:
            for relay in relays:
                if await self._answers(relay, "readyz"):
                    self.log.takeovers.append(round(time.monotonic() - killed_at, 2))
                    self.log.taken_back += relay == killed
                    return
            await asyncio.sleep(PROBE_EVERY)

    # -- servers ---------------------------------------------------------------------------------
    async def crash_server(self, which: str) -> bool:
        """Crash a NATS server (SIGKILL) or a PostgreSQL server (alternately SIGKILL and an immediate
        shutdown, which also skips the shutdown checkpoint: crash recovery at the next start)."""
        if which == "nats":
            return await self._crash_nats()
        name = self._next_postgres()
        sig = signal.SIGKILL if self.log.pg_restarts % 2 == 0 else signal.SIGQUIT
        done = self._signal(name, sig)
        self.log.pg_restarts += done
        self.log.servers[name] += done
        return done

    def _next_postgres(self) -> str:
        """A single node's server; on a cluster, each service's in turn."""
        names = [f"postgres-{database}" for database in self.target.pg_ports] or ["postgres"]
        return min(names, key=lambda n: (self.log.servers[n], names.index(n)))

    async def _crash_nats(self) -> bool:
        if not self.target.cluster:
            done = self._signal("nats", signal.SIGKILL)
            self.log.nats_restarts += done
            return done
        leader, last_seq = await self._events_stream_whole()
        if leader is None:
            return False  # a server is still catching up: crash none before the stream has its 3 copies
        others = [n for n in NATS_NODES if n != leader]
        victim = leader if self.log.nats_restarts % 2 == 0 else min(others, key=lambda n: self.log.servers[n])
        if not self._signal(victim, signal.SIGKILL):
            return False
        self.log.nats_restarts += 1
        self.log.servers[victim] += 1
        if victim == leader:
            self._track(self.timing, self._time_election(leader, last_seq, time.monotonic()))
        return True

    async def _events_stream_whole(self) -> tuple[str | None, int]:
        """The events stream's leader and last sequence if all its replicas are current; (None, 0) if not."""
        if self.js is None:
            return None, 0
        try:
            info = await self.js.stream_info(EVENTS_STREAM)
        except (nats.errors.Error, TimeoutError):
            return None, 0
        cluster = info.cluster
        if cluster is None or not cluster.leader or len(cluster.replicas or []) < len(NATS_NODES) - 1:
            return None, 0
        if any(not peer.current or peer.offline for peer in cluster.replicas or []):
            return None, 0
        return cluster.leader, info.state.last_seq

    async def _time_election(self, leader: str, last_seq: int, killed_at: float) -> None:
        """After the stream leader's kill: seconds until a server leads the stream again (the stream's API
        answers only then), and until the stream stores a message again (the relays' publishes stall
        meanwhile)."""
        found: dict[str, Any] = {"leader": leader, "new_leader": None, "election_s": None, "stall_s": None}
        self.log.leader_kills.append(found)
        while time.monotonic() - killed_at < MEASURE_WITHIN and self.js is not None:
            try:
                info = await self.js.stream_info(EVENTS_STREAM)
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(PROBE_EVERY)
                continue
            now = round(time.monotonic() - killed_at, 2)
            new_leader = info.cluster.leader if info.cluster else None
            if found["election_s"] is None and new_leader:  # the killed one, restarted, may win again
                found |= {"new_leader": new_leader, "election_s": now}
            if info.state.last_seq > last_seq:
                found["stall_s"] = now
                return
            await asyncio.sleep(PROBE_EVERY)

    # -- the run ---------------------------------------------------------------------------------
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
                        done = await self.crash_server(fault)
                    if done:
                        break
                    await asyncio.sleep(0.25)
            if self.timing:
                await asyncio.wait(self.timing)
        finally:
            self.js = None
            await nc.close()

    async def settle(self) -> None:
        """Wait until every killed process has been restarted (or given up on)."""
        if self.waiting:
            await asyncio.wait(self.waiting)
        await self.http.aclose()


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
