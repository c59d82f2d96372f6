"""CPU and memory of every process of the system, grouped by role (all PostgreSQL processes are one role)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

MB = 1024 * 1024


def role_of(process: psutil.Process) -> str:
    """What a process of the system is: postgres, nats, supervisor, auth, order, relay-order, …"""
    try:
        argv = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if not argv:
        return "other"
    exe = os.path.basename(argv[0])
    if exe.startswith("postgres") or process.name().startswith("postgres"):
        return "postgres"
    if exe == "nats-server":
        return "nats"
    if "serve" in argv:
        rest = argv[argv.index("serve") + 1 :]
        if rest[:1] == ["relay"] and "--service" in rest:
            return f"relay-{rest[rest.index('--service') + 1]}"
        return rest[0] if rest else "serve"
    if "up" in argv:
        return "supervisor"
    return exe


def child_name(process: psutil.Process, replicas: dict[str, int], pg_ports: dict[str, int]) -> str:
    """Which of a cluster's children a process is (`order-2`, `relay-account-1`, `nats-3`, `postgres-order`:
    see `Target.replicas`); on a single node, its role."""
    role = role_of(process)
    if not replicas:
        return role
    try:
        argv = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if role == "nats" and "--config" in argv:
        return os.path.basename(os.path.dirname(argv[argv.index("--config") + 1]))
    if role == "postgres":
        database = {port: database for database, port in pg_ports.items()}.get(server_port(process) or 0)
        return f"postgres-{database}" if database else role
    by_port = {str(port): name for name, port in replicas.items()}
    for flag in ("--replica-port", "--port"):
        if flag in argv[:-1]:
            return by_port.get(argv[argv.index(flag) + 1], role)
    return role


def server_port(process: psutil.Process) -> int | None:
    """The port of the PostgreSQL server a postgres process belongs to: its postmaster's `-c port=N` (a
    backend's or worker's postmaster is its parent)."""
    try:
        parent = process.parent()
        postmaster = parent if parent is not None and role_of(parent) == "postgres" else process
        for arg in postmaster.cmdline():
            if arg.startswith("port="):
                return int(arg.removeprefix("port="))
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None
    return None


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


@dataclass
class ProcessSampler:
    """Samples `processes()` every `every` seconds: CPU seconds per role since the last sample, and RSS."""

    processes: Callable[[], list[psutil.Process]]
    every: float = 1.0
    include_self: bool = True
    # A cluster's PostgreSQL servers by port → service: its postgres processes are then counted by server
    # (`postgres-order`, …) rather than as one role.
    servers: dict[int, str] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    _last_cpu: dict[int, float] = field(default_factory=dict)
    _roles: dict[int, str] = field(default_factory=dict)  # by pid: a process keeps its role

    def role(self, process: psutil.Process) -> str:
        if (known := self._roles.get(process.pid)) is not None:
            return known
        role = role_of(process)
        if role == "postgres" and self.servers:
            service = self.servers.get(server_port(process) or 0)
            role = f"postgres-{service}" if service else role
        if role != "gone":
            self._roles[process.pid] = role
        return role

    def _all(self) -> list[psutil.Process]:
        found = self.processes()
        if self.include_self:
            found.append(psutil.Process())
        return found

    def sample(self) -> dict[str, Any]:
        cpu: dict[str, float] = defaultdict(float)
        rss: dict[str, int] = defaultdict(int)
        count: dict[str, int] = defaultdict(int)
        seen: dict[int, float] = {}
        me = os.getpid()
        for process in self._all():
            try:
                role = "bench client" if process.pid == me else self.role(process)
                used = _cpu_seconds(process)
                rss[role] += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            # A process first seen now counts from its start, except in the very first sample.
            baseline = self._last_cpu.get(process.pid, used if not self._last_cpu else 0.0)
            cpu[role] += max(0.0, used - baseline)
            count[role] += 1
            seen[process.pid] = used
        self._last_cpu = seen
        machine = psutil.cpu_times()
        busy = float(
            machine.user + machine.nice + machine.system + machine.irq + machine.softirq + machine.steal
        )
        point = {
            "t": time.time(),
            "cpu_s": dict(cpu),
            "rss": dict(rss),
            "procs": dict(count),
            "machine_busy_s": busy,
        }
        self.samples.append(point)
        return point

    async def run(self, stop: asyncio.Event) -> None:
        self.sample()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)
            await asyncio.to_thread(self.sample)

    def summary(self, since: float, until: float) -> dict[str, dict[str, float]]:
        """Per role: mean CPU (% of one core) and peak RSS (MB) over the window; and the whole machine's CPU,
        of which "others" is what processes outside the system and the bench used (noise in the figures)."""
        window = [s for s in self.samples if since < s["t"] <= until]
        if len(window) < 2:
            return {}
        elapsed = window[-1]["t"] - window[0]["t"]
        roles = {role for s in window for role in s["rss"]}
        summary = {}
        for role in sorted(roles):
            used = sum(s["cpu_s"].get(role, 0.0) for s in window[1:])
            summary[role] = {
                "cpu_pct": round(100 * used / elapsed, 1),
                "rss_mb_max": round(max(s["rss"].get(role, 0) for s in window) / MB, 1),
                "processes": max(s["procs"].get(role, 0) for s in window),
            }
        machine = 100 * (window[-1]["machine_busy_s"] - window[0]["machine_busy_s"]) / elapsed
        ours = sum(figures["cpu_pct"] for figures in summary.values())
        summary["whole machine"] = {"cpu_pct": round(machine, 1), "rss_mb_max": 0.0, "processes": 0}
        summary["others (not the system)"] = {
            "cpu_pct": round(max(0.0, machine - ours), 1),
            "rss_mb_max": 0.0,
            "processes": 0,
        }
        return summary


def memory_at_rest(processes: list[psutil.Process]) -> dict[str, Any]:
    """RSS and PSS per role now. RSS counts shared pages (PostgreSQL's shared buffers, libraries) once per
    process; PSS shares them out, so the PSS sum is the memory the system really occupies."""
    rss: dict[str, int] = defaultdict(int)
    pss: dict[str, int] = defaultdict(int)
    for process in processes:
        try:
            role = role_of(process)
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss[role] += info.rss
        pss[role] += getattr(info, "pss", info.rss)
    roles = {role: {"rss_mb": round(rss[role] / MB, 1), "pss_mb": round(pss[role] / MB, 1)} for role in rss}
    return {
        "roles": dict(sorted(roles.items())),
        "total_rss_mb": round(sum(rss.values()) / MB, 1),
        "total_pss_mb": round(sum(pss.values()) / MB, 1),
    }
