"""Ports picked for a system's servers (tests, benchmarks) are free and below the kernel's range for outgoing
connections, where no connection can take one before its server binds it."""

from __future__ import annotations

import os

import pytest

from oms.runtime.ports import (
    FREE_PORTS_VARIABLE,
    _ephemeral_low,
    check_bindable,
    free_port,
    free_port_env,
    split_pick_range,
)


def test_a_free_port_is_bindable_and_below_the_ephemeral_range() -> None:
    ports = {free_port() for _ in range(20)}
    for port in ports:
        assert 20_000 <= port < _ephemeral_low()
        check_bindable("127.0.0.1", port, "a test", "OMS_TEST_PORT")
    assert len(ports) > 1  # spread, so that systems started at once rarely pick the same


def test_every_port_setting_of_a_test_system_gets_one() -> None:
    env = free_port_env()
    assert {"OMS_ORDER_PORT", "OMS_ORDER_RELAY_PORT", "OMS_PG_PORT", "OMS_NATS_PORT"} <= env.keys()
    assert all(int(port) < _ephemeral_low() for port in env.values())


def test_processes_picking_at_once_each_pick_in_their_own_range(monkeypatch: pytest.MonkeyPatch) -> None:
    ranges = [split_pick_range(part, 3) for part in range(3)]
    bounds = [tuple(map(int, r.split("-"))) for r in ranges]
    assert bounds[0][0] == 20_000 and bounds[0][1] == bounds[1][0] and bounds[1][1] == bounds[2][0]
    assert bounds[2][1] <= _ephemeral_low()
    for value, (low, high) in zip(ranges, bounds, strict=True):
        monkeypatch.setenv(FREE_PORTS_VARIABLE, value)
        assert all(low <= free_port() < high for _ in range(20))


def test_each_parallel_test_worker_has_its_range() -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        pytest.skip("not a parallel run")
    parts = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    assert os.environ[FREE_PORTS_VARIABLE] == split_pick_range(int(worker.removeprefix("gw")), parts)
